"""SGD with momentum and weight decay in the form of Krizhevsky et al. (2012)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class AlexNetSGD(torch.optim.Optimizer):
    """Δw ← μ·Δw − wd·η·w − η·∂E/∂w;  w ← w + Δw   (Krizhevsky, Sutskever & Hinton 2012, section 5).

    Written by hand because ``torch.optim.SGD`` keeps the velocity *before* the learning rate
    (b ← μ·b + g + wd·w; w ← w − η·b). The two agree while η is constant (Δw = −η·b) but differ once a
    schedule changes η: here a new η only scales new gradients, as in the paper, instead of rescaling the
    whole accumulated velocity at once.

    Args:
        params: parameters or parameter groups.
        lr: η, the learning rate.
        momentum: μ (the paper: 0.9).
        weight_decay: wd (the paper: 0.0005).
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            velocities = []
            for p in params:
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                velocities.append(state["velocity"])
            # One fused kernel per line over all tensors of the group (foreach), not one per parameter.
            torch._foreach_mul_(velocities, momentum)
            torch._foreach_add_(velocities, grads, alpha=-lr)
            if weight_decay:
                torch._foreach_add_(velocities, params, alpha=-weight_decay * lr)
            torch._foreach_add_(params, velocities)
        return loss


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    kind: str,
    *,
    total_steps: int,
    steps_per_epoch: int,
    step_epochs: int = 10,
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LRScheduler:
    """torch's schedulers, stepped once per optimisation step: constant, step (×gamma every step_epochs), cosine."""
    from torch.optim import lr_scheduler

    if kind == "constant":
        return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if kind == "step":
        return lr_scheduler.StepLR(optimizer, step_size=step_epochs * steps_per_epoch, gamma=gamma)
    if kind == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    raise ValueError(f"unknown schedule {kind!r}")
