"""Adversarial training objectives for the trainer (which takes an objective and never imports this)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.adversarial.attacks import check_epsilon, pgd


class AdversarialObjective:
    """Goodfellow et al. (2014): J̃(θ, x, y) = α·J(θ, x, y) + (1 − α)·J(θ, x + ε·sign(∇ₓJ(θ, x, y)), y).

    ``method="pgd"`` uses a PGD example instead (Madry et al. 2017; with α = 0 that is their objective). The
    adversarial example is built in pixel space [0, 1] — the trainer's batches are normalised, so they are
    mapped back with the run's mean/std — and is treated as a constant (no gradient through its construction).

    Args:
        mean, std: the run's per-channel normalisation.
        eps: ε, in pixel units (0.25 = a quarter of the range).
        alpha: weight of the clean loss (0.5 in the paper).
        method: "fgsm" or "pgd".
        pgd_steps: PGD iterations.
    """

    def __init__(
        self,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        eps: float = 0.25,
        alpha: float = 0.5,
        method: str = "fgsm",
        pgd_steps: int = 7,
    ):
        from cnnlab.errors import ConfigError

        if method not in ("fgsm", "pgd"):
            raise ConfigError(f"--adversarial must be fgsm or pgd, got {method!r}.")
        if not 0 <= alpha <= 1:
            raise ConfigError(f"--adv-alpha must be in [0, 1], got {alpha}.")
        self.eps, self.alpha, self.method, self.pgd_steps = check_epsilon(eps), alpha, method, pgd_steps
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not torch.is_grad_enabled():  # evaluation: test metrics are the clean loss and predictions
            logits = model(images)
            return F.cross_entropy(logits, labels), logits
        mean, std = self.mean.to(images.device, images.dtype), self.std.to(images.device, images.dtype)
        pixels = (images * std + mean).detach().requires_grad_(True)  # (B, C, H, W) in [0, 1]
        logits = model((pixels - mean) / std)
        clean = F.cross_entropy(logits, labels)
        if self.method == "fgsm":
            # One backward pass through the clean graph for ∇ₓJ; the graph is kept for the parameters' gradient.
            (grad,) = torch.autograd.grad(clean, pixels, retain_graph=True)
            adversarial = (pixels + self.eps * grad.sign()).clamp(0, 1).detach()
        else:

            def pixel_model(x: torch.Tensor) -> torch.Tensor:
                return model((x - mean) / std)

            adversarial = pgd(pixel_model, pixels.detach().clamp(0, 1), labels, self.eps, steps=self.pgd_steps)
        adv_loss = F.cross_entropy(model((adversarial - mean) / std), labels)
        return self.alpha * clean + (1 - self.alpha) * adv_loss, logits
