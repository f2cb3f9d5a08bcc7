"""The GAN as a task of the engine: two optimiser parts on every batch (the discriminator's step, then the
generator's), a fixed noise batch kept in the task's state, and a diagnosis of the two classic failures.

Losses (Goodfellow et al. 2014, section 3; Radford et al. 2015 train the same way):

- discriminator: −log D(x) − log(1 − D(G(z))), as two binary cross-entropies on logits, one on a batch of real
  images and one on a batch of generated ones (two forward passes, so batch norm never mixes real and generated
  images in one batch: the authors' code does the same);
- generator: the *non-saturating* loss −log D(G(z)) (section 3: "rather than training G to minimize
  log(1 − D(G(z))) we can train G to maximize log D(G(z))", which gives strong gradients early in learning).

Failure modes named in the epoch line and recorded as columns (metrics.csv, summary.json, the checkpoint's history):

- ``train_d_wins`` = 1 when the epoch's mean D loss is below :data:`D_LOSS_FLOOR` while its mean G loss is above
  :data:`G_LOSS_CEILING`: the discriminator tells every image apart and the generator's gradient has vanished;
- NaN/inf in either loss: the engine stops at its next sync point (``NonFiniteLossError``), and
  :func:`cnnlab.generative.train_gan` names which of the two losses diverged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.train import Part, Task

if TYPE_CHECKING:
    from cnnlab.train.setup import TrainingRun

FIXED_SAMPLES = 64  # the fixed-noise grid: 8 × 8 images, the same z every epoch
# The "discriminator wins" rule. D loss 0.05 = both cross-entropies at ~0.025: D(x) ≈ 0.975 and D(G(z)) ≈ 0.025 on
# average; G loss 4 = D(G(z)) ≈ e⁻⁴ ≈ 1.8 %. Chosen from those meanings, not tuned over many runs (docs/gan.md
# gives the losses of the measured MNIST run).
D_LOSS_FLOOR = 0.05
G_LOSS_CEILING = 4.0


class GANTask(Task):
    """A generator and a discriminator trained by the engine (:class:`~cnnlab.train.Trainer`).

    Args:
        generator: maps noise (B, z_dim) to images (B, C, H, W) in the data's range; has ``z_dim``.
        discriminator: maps images to one logit each, (B, 1) ("real").
        seed: seed of the fixed noise of the sample grid.
        options: per-part optimiser overrides (``{"discriminator": {"lr": ...}}``); default: the run's config.
    """

    name = "gan"
    main = "generator"
    sums: ClassVar[Mapping[str, torch.dtype]] = {
        "d_loss": torch.float64,
        "g_loss": torch.float64,
        "d_real": torch.float64,  # Σ D(x), the discriminator's probability "real" on real images
        "d_fake": torch.float64,  # Σ D(G(z)) on generated images, in the discriminator's step
    }
    selection = None  # no "best" epoch: a GAN's losses do not rank its samples
    resume_command = "cnnlab gan train --resume"

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        seed: int = 0,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ):
        self.models = {"generator": generator, "discriminator": discriminator}
        self.z_dim = int(generator.z_dim)
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        # The grid's noise: drawn once from its own generator (not the global RNG, which the run's seed drives)
        self.fixed_noise = torch.randn(FIXED_SAMPLES, self.z_dim, generator=torch.Generator().manual_seed(seed))

    def parts(self) -> list[Part]:
        return [
            Part("discriminator", ("discriminator",), self.options.get("discriminator", {})),
            Part("generator", ("generator",), self.options.get("generator", {})),
        ]

    def noise(self, count: int, device: torch.device) -> torch.Tensor:
        """z ~ N(0, I), (count, z_dim), from the global RNG (saved and restored by the engine on resume)."""
        return torch.randn(count, self.z_dim, device=device)

    def loss(self, part: str, nets: Mapping[str, Any], batch: tuple[torch.Tensor, Any]) -> tuple[torch.Tensor, dict]:
        real, _ = batch
        n = len(real)
        z = self.noise(n, real.device)
        if part == "discriminator":
            with torch.no_grad():  # no graph into the generator (and DDP expects no backward there)
                fake = nets["generator"](z)
            real_logits = nets["discriminator"](real).reshape(n)
            fake_logits = nets["discriminator"](fake).reshape(n)
            loss = F.binary_cross_entropy_with_logits(
                real_logits, torch.ones_like(real_logits)
            ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
            with torch.no_grad():
                return loss, {
                    "d_loss": loss.detach().double() * n,
                    "d_real": torch.sigmoid(real_logits.float()).sum().double(),
                    "d_fake": torch.sigmoid(fake_logits.float()).sum().double(),
                }
        logits = nets["discriminator"](nets["generator"](z)).reshape(n)
        loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))  # non-saturating: −log D(G(z))
        return loss, {"g_loss": loss.detach().double() * n}

    # ---- what is reported ------------------------------------------------------------------------------
    def train_metrics(self, sums: Mapping[str, float], seen: int) -> dict[str, float]:
        means = {f"train_{name}": value / max(seen, 1) for name, value in sums.items()}
        means["train_d_wins"] = float(diagnose(means["train_d_loss"], means["train_g_loss"]) is not None)
        return means

    def progress_text(self, sums: Mapping[str, float], seen: int) -> str:
        n = max(seen, 1)
        return (
            f"D {sums['d_loss'] / n:.3f} G {sums['g_loss'] / n:.3f} "
            f"D(x) {sums['d_real'] / n:.2f} D(G(z)) {sums['d_fake'] / n:.2f}"
        )

    def epoch_text(self, row: Mapping[str, float]) -> str:
        text = (
            f"D loss {row['train_d_loss']:.3f}  G loss {row['train_g_loss']:.3f}  "
            f"D(x) {row['train_d_real']:.2f}  D(G(z)) {row['train_d_fake']:.2f}"
        )
        problem = diagnose(row["train_d_loss"], row["train_g_loss"])
        return f"{text}  [{problem}]" if problem else text

    def samples(self, generator: nn.Module | None = None) -> torch.Tensor:
        """The fixed noise's images (64, C, H, W), in the generator's output range, from the generator in eval mode
        (batch norm's running statistics: sampling leaves the training state untouched)."""
        generator = generator if generator is not None else self.models["generator"]
        was_training = generator.training
        generator.eval()
        try:
            with torch.no_grad():
                device = next(generator.parameters()).device
                return generator(self.fixed_noise.to(device)).float().cpu()
        finally:
            generator.train(was_training)

    def log_images(self, tensorboard: Any, step: int, nets: Mapping[str, nn.Module], run: TrainingRun) -> None:
        low, high = getattr(self.models["generator"], "output_range", (-1.0, 1.0))
        images = (self.samples(nets["generator"]) - low) / (high - low)
        writer = getattr(tensorboard, "writer", None)
        if writer is not None:  # the grid as one image; the engine's wrapper may not offer raw images
            from torchvision.utils import make_grid

            writer.add_image("samples/fixed_noise", make_grid(images.clamp(0, 1), nrow=8), step)

    # ---- what is saved ---------------------------------------------------------------------------------
    def record(self, run: TrainingRun) -> dict:
        generator = self.models["generator"]
        return {
            "gan": {
                "arch": getattr(generator, "arch", ""),
                "size": int(generator.image_size),
                "channels": int(generator.channels),
                "z_dim": self.z_dim,
            },
            "preprocessing": run.preprocessing.to_dict(),
            "classes": list(run.dataset.classes),
            "data": run.config.data,
        }

    def state_dict(self) -> dict:
        return {"fixed_noise": self.fixed_noise.clone()}

    def load_state_dict(self, state: dict) -> None:
        if "fixed_noise" in state:
            self.fixed_noise = state["fixed_noise"].clone()


def diagnose(d_loss: float, g_loss: float) -> str | None:
    """The failure an epoch's mean losses show, in words, or None.

    >>> diagnose(0.01, 7.5)
    'discriminator wins: D loss 0.010 ≈ 0 while G loss 7.50 is high (vanishing generator gradient)'
    """
    if d_loss != d_loss or g_loss != g_loss:  # NaN
        return f"non-finite loss: D {d_loss}, G {g_loss}"
    if d_loss < D_LOSS_FLOOR and g_loss > G_LOSS_CEILING:
        return (
            f"discriminator wins: D loss {d_loss:.3f} ≈ 0 while G loss {g_loss:.2f} is high "
            "(vanishing generator gradient)"
        )
    return None
