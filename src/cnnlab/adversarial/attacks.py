"""Adversarial examples: FGSM, iterative FGSM / PGD (L∞, L2), targeted attacks, Szegedy's box-constrained
L-BFGS, and "fooling images" grown from noise.

Every attack takes a model that maps *pixels in [0, 1]* to logits — wrap a trained network with
:class:`PixelModel`, which applies the checkpoint's own normalisation inside — works on batches on any
device, and never leaves the valid pixel range.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError, InputSizeError


class PixelModel(nn.Module):
    """``model`` behind its input normalisation: forward takes images in [0, 1], (B, C, H, W)."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model((pixels - self.mean) / self.std)


def check_epsilon(eps: float, norm: str = "linf") -> float:
    """ε must be ≥ 0, and for L∞ at most 1 (the whole pixel range)."""
    if not isinstance(eps, int | float) or eps != eps or eps < 0:
        raise ConfigError(f"ε must be a number ≥ 0, got {eps!r}.")
    if norm == "linf" and eps > 1:
        raise ConfigError(f"ε = {eps} is beyond the pixel range [0, 1]: an L∞ perturbation that large can be anything.")
    return float(eps)


def _check_pixels(images: torch.Tensor) -> None:
    if images.ndim != 4:
        raise InputSizeError(f"Attacks take a batch (B, C, H, W) of images; got shape {tuple(images.shape)}.")
    if images.min() < 0 or images.max() > 1:
        raise ConfigError(
            f"Attack inputs must be pixels in [0, 1] (got values in [{float(images.min()):.3g}, "
            f"{float(images.max()):.3g}]); pass unnormalised images and wrap the model with PixelModel."
        )


def _check_targets(target: torch.Tensor, num_classes: int) -> None:
    if int(target.min()) < 0 or int(target.max()) >= num_classes:
        raise ConfigError(
            f"Target class {int(target.max())} is out of range: the model has classes 0..{num_classes - 1}."
        )


def input_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(∇ₓ J(θ, x, y) with J the mean cross-entropy, logits), without touching parameter gradients."""
    x = images.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        if not logits.requires_grad:
            raise ConfigError("The model gives no gradient with respect to its input (is it wrapped in no_grad?).")
        _check_targets(labels, logits.shape[1])
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, labels, reduction="sum"), x)
    return grad, logits.detach()


def fgsm(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, target: torch.Tensor | None = None
) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2014): x + ε·sign(∇ₓ J(θ, x, y)), clipped to [0, 1].

    With ``target`` it steps *down* the loss of the target class instead: x − ε·sign(∇ₓ J(θ, x, t)).
    """
    eps = check_epsilon(eps)
    _check_pixels(images)
    if eps == 0:
        return images.detach().clone()
    if target is not None:
        grad, logits = input_gradient(model, images, target)
        _check_targets(target, logits.shape[1])
        return (images - eps * grad.sign()).clamp(0, 1).detach()
    grad, _ = input_gradient(model, images, labels)
    return (images + eps * grad.sign()).clamp(0, 1).detach()


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return delta * (eps / norms).clamp(max=1.0)


def pgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    norm: str = "linf",
    random_start: bool = True,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2017); iterative FGSM (Kurakin et al. 2016) without the random
    start. Stays inside the ε-ball (L∞ or L2) around ``images`` and inside [0, 1].

    Args:
        steps: iterations.
        step_size: per step (default 2.5·ε/steps, as Madry et al.).
        norm: "linf" (sign steps) or "l2" (normalised-gradient steps).
        random_start: begin at a uniform random point of the ball (L∞) / a random direction (L2).
        target: drive the prediction to these classes instead of away from ``labels``.
    """
    if norm not in ("linf", "l2"):
        raise ConfigError(f"norm must be 'linf' or 'l2', got {norm!r}.")
    eps = check_epsilon(eps, norm)
    _check_pixels(images)
    if steps < 1:
        raise ConfigError(f"PGD needs at least one step, got {steps}.")
    step = step_size if step_size is not None else 2.5 * eps / steps
    x0 = images.detach()
    delta = torch.zeros_like(x0)
    if random_start and eps > 0:
        noise = torch.rand(x0.shape, generator=generator).to(x0.device) * 2 - 1
        delta = _project(noise * eps, eps, norm) if norm == "linf" else _project(noise, eps * 0.5, norm)
    goal, sign = (target, -1.0) if target is not None else (labels, 1.0)
    for _ in range(steps):
        grad, logits = input_gradient(model, (x0 + delta).clamp(0, 1), goal)
        if target is not None:
            _check_targets(target, logits.shape[1])
        if norm == "linf":
            delta = delta + sign * step * grad.sign()
        else:
            unit = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            delta = delta + sign * step * unit
        delta = _project(delta, eps, norm)
        delta = (x0 + delta).clamp(0, 1) - x0  # the pixel range binds too
    return (x0 + delta).detach()


def lbfgs_attack(
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    *,
    c_init: float = 1.0,
    search_steps: int = 6,
    max_iter: int = 50,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Szegedy et al. (2013): the smallest r with f(x + r) = target and x + r ∈ [0, 1], found by minimising
    c·‖r‖² + J(θ, x + r, target) with box-constrained L-BFGS (scipy's L-BFGS-B) and searching c per image for
    the largest c (smallest perturbation) that still reaches the target.

    Returns:
        (adversarial images, success mask). Where no c succeeded the image is returned unchanged.
    """
    import numpy as np
    from scipy.optimize import minimize

    _check_pixels(images)
    x0 = images.detach()
    with torch.no_grad():
        _check_targets(target, model(x0[:1]).shape[1])
    b = x0.shape[0]
    c = torch.full((b,), float(c_init))
    low = torch.zeros(b)
    high = torch.full((b,), float("inf"))
    best = x0.clone()
    best_norm = torch.full((b,), float("inf"))
    shape = x0.shape

    def objective(flat: np.ndarray, weights: torch.Tensor) -> tuple[float, np.ndarray]:
        x = torch.from_numpy(flat).to(x0.device, x0.dtype).view(shape).requires_grad_(True)
        with torch.enable_grad():
            r2 = (x - x0).pow(2).flatten(1).sum(1)
            loss = (weights.to(x.device) * r2).sum() + F.cross_entropy(model(x), target, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
        return float(loss.detach()), grad.detach().cpu().double().numpy().ravel()

    for _ in range(search_steps):
        result = minimize(
            objective,
            x0.cpu().double().numpy().ravel(),
            args=(c,),
            jac=True,
            method="L-BFGS-B",
            bounds=[(0.0, 1.0)] * x0.numel(),
            options={"maxiter": max_iter},
        )
        candidate = torch.from_numpy(result.x).to(x0.device, x0.dtype).view(shape)
        with torch.no_grad():
            hit = (model(candidate).argmax(1) == target).cpu()
        norms = (candidate - x0).flatten(1).norm(dim=1).cpu()
        improve = hit & (norms < best_norm)
        best[improve.to(best.device)] = candidate[improve.to(best.device)]
        best_norm = torch.where(improve, norms, best_norm)
        low = torch.where(hit, c, low)  # success: try a larger penalty (smaller perturbation)
        high = torch.where(hit, high, c)
        c = torch.where(torch.isinf(high), c * 10, (low + high) / 2)
    return best, torch.isfinite(best_norm)


def fooling_images(
    model: nn.Module,
    target_class: int,
    shape: tuple[int, int, int],
    *,
    count: int = 8,
    steps: int = 200,
    step_size: float = 0.01,
    confidence: float = 0.99,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images that are basically noise but the network calls ``target_class`` with high confidence
    (Nguyen, Yosinski & Clune 2015, their gradient-ascent variant): start from uniform noise around grey and
    climb the log-probability of the class with sign-gradient steps, staying in [0, 1].

    Returns:
        (images (count, *shape), confidence of ``target_class`` for each).
    """
    x = (0.5 + (torch.rand(count, *shape, generator=generator) - 0.5) * 0.2).to(device)
    labels = torch.full((count,), int(target_class), device=device)
    for _ in range(steps):
        grad, logits = input_gradient(model, x, labels)
        if int(target_class) < 0 or int(target_class) >= logits.shape[1]:
            raise ConfigError(f"Class {target_class} is out of range: the model has classes 0..{logits.shape[1] - 1}.")
        if bool((logits.softmax(1)[:, target_class] >= confidence).all()):
            break
        x = (x - step_size * grad.sign()).clamp(0, 1)  # down the loss of the target = up its probability
    with torch.no_grad():
        probs = model(x).softmax(1)[:, target_class]
    return x.detach(), probs


FOOLING_BATCH = 64  # images grown at once: memory stays bounded whatever the count asked for


def fooling_image_batches(
    model: nn.Module,
    target_class: int,
    shape: tuple[int, int, int],
    *,
    count: int,
    batch_size: int = FOOLING_BATCH,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    **options: float,
):
    """:func:`fooling_images` for any ``count``, ``batch_size`` images at a time: yields (images, confidence)
    per batch (moved to the CPU), so memory does not grow with ``count``. ``options``: steps, step_size,
    confidence.

    Raises:
        ConfigError: ``count`` or ``batch_size`` below 1.
    """
    if count < 1 or batch_size < 1:
        raise ConfigError(f"The number of fooling images must be at least 1, got {count}.")
    for start in range(0, count, batch_size):
        n = min(batch_size, count - start)
        images, confidence = fooling_images(
            model, target_class, shape, count=n, generator=generator, device=device, **options
        )
        yield images.cpu(), confidence.cpu()
