"""Optimisers (the 2012 paper's SGD and torch's, fused on CUDA), parameter groups, and learning-rate schedules."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn


class AlexNetSGD(torch.optim.Optimizer):
    """Δw ← μ·Δw − wd·η·w − η·∂E/∂w;  w ← w + Δw   (Krizhevsky, Sutskever & Hinton 2012, section 5).

    Written by hand because ``torch.optim.SGD`` keeps the velocity *before* the learning rate
    (b ← μ·b + g + wd·w; w ← w − η·b). The two agree while η is constant (Δw = −η·b) but differ once a
    schedule changes η: here a new η only scales new gradients, as in the paper, instead of rescaling the
    whole accumulated velocity at once.

    Args:
        params: parameters or parameter groups.
        lr: η, the learning rate: a number, or a 0-d tensor on the parameters' device, which the update reads
            on the device (no host sync), so the step can be captured in a CUDA graph while a schedule changes η.
        momentum: μ (the paper: 0.9).
        weight_decay: wd (the paper: 0.0005).
    """

    def __init__(self, params: Iterable, lr: float | torch.Tensor, momentum: float = 0.9, weight_decay: float = 0.0):
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
            if isinstance(lr, torch.Tensor):  # Δw += −η·(∂E/∂w + wd·w) with η read on the device
                update = torch._foreach_add(grads, params, alpha=weight_decay) if weight_decay else grads
                torch._foreach_add_(velocities, torch._foreach_mul(update, -lr))
            else:
                torch._foreach_add_(velocities, grads, alpha=-lr)
                if weight_decay:
                    torch._foreach_add_(velocities, params, alpha=-weight_decay * lr)
            torch._foreach_add_(params, velocities)
        return loss


# Layers whose parameters are scales and shifts of normalised activations: decaying them towards 0 fights the
# normalisation instead of regularising the model (Goyal et al. 2017, section 5.2; common practice since).
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def _is_norm_layer(module: nn.Module) -> bool:
    return isinstance(module, NORM_LAYERS) or "Norm" in type(module).__name__


def _no_decay_ids(model: nn.Module) -> set[int]:
    """ids of the biases and of every parameter of a normalisation layer."""
    ids = set()
    for module in model.modules():
        norm = _is_norm_layer(module)
        for name, p in module.named_parameters(recurse=False):
            if norm or name.endswith("bias"):
                ids.add(id(p))
    return ids


def parameter_groups(
    model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = True, groups: list[dict] | None = None
) -> list[dict]:
    """Optimiser groups over ``model``'s parameters.

    Without ``groups``: the trainable parameters, in one group. With ``groups`` (e.g. a fine-tuned head and
    body at their own learning rates): those, each keeping its keys, ``weight_decay`` filled in where missing.
    With ``decay_norm_and_bias`` False, every group is split in two and the biases (every parameter whose name
    ends in ``bias``) and all parameters of normalisation layers (BatchNorm, GroupNorm, LayerNorm,
    InstanceNorm, and any layer with ``Norm`` in its class name) go to the half without weight decay.
    """
    if groups is None:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    groups = [{"weight_decay": weight_decay, **g, "params": list(g["params"])} for g in groups]
    if decay_norm_and_bias:
        return groups
    exempt = _no_decay_ids(model)
    split = []
    for group in groups:
        decay = [p for p in group["params"] if id(p) not in exempt]
        no_decay = [p for p in group["params"] if id(p) in exempt]
        split += [{**group, "params": decay}, {**group, "params": no_decay, "weight_decay": 0.0}]
    return [g for g in split if g["params"]]


def multiplier_groups(model: nn.Module, lr: float) -> list[dict] | None:
    """Parameter groups for a model's ``lr_multipliers`` (name prefix -> factor on η), or None when it has none:
    one group per prefix at ``lr × factor``, the rest at ``lr``. The schedule scales every group alike."""
    multipliers = getattr(model, "lr_multipliers", None) or {}
    if not multipliers:
        return None
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    groups, taken = [], set()
    for prefix, factor in multipliers.items():
        params = [p for name, p in trainable if name.startswith(prefix) and id(p) not in taken]
        taken |= {id(p) for p in params}
        if params:
            groups.append({"params": params, "lr": lr * factor})
    if not groups:  # the prefixes name nothing in this model (e.g. a baseline without a transformer)
        return None
    rest = [p for _, p in trainable if id(p) not in taken]
    return [{"params": rest}, *groups] if rest else groups


def make_optimizer(
    model: nn.Module,
    kind: str,
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    decay_norm_and_bias: bool = True,
    device: torch.device | str = "cpu",
    capturable: bool = False,
    groups: list[dict] | None = None,
) -> torch.optim.Optimizer:
    """One of ``alexnet-sgd``, ``sgd``, ``adam``, ``adamw`` over ``model``'s trainable parameters, or ``groups``.

    torch's optimisers run fused (one kernel for the whole update) on CUDA and foreach elsewhere. ``momentum``
    is μ for the SGDs and β1 for Adam/AdamW (β2 = 0.999); AdamW's decay is decoupled (Loshchilov & Hutter).
    ``capturable`` puts η in a device tensor so a CUDA graph can replay the step while a schedule changes η.
    ``groups``: parameter groups with their own keys (``lr`` ...), see :func:`parameter_groups`.
    """
    device = torch.device(device)
    groups = parameter_groups(model, weight_decay, decay_norm_and_bias, groups)
    rate = torch.tensor(float(lr), device=device) if capturable else lr
    if capturable:
        for group in groups:
            if "lr" in group:
                group["lr"] = torch.tensor(float(group["lr"]), device=device)
    if kind == "alexnet-sgd":
        return AlexNetSGD(groups, lr=rate, momentum=momentum, weight_decay=weight_decay)
    fused = True if device.type == "cuda" else None  # CPU/MPS: torch picks (foreach where supported)
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=rate, momentum=momentum, weight_decay=weight_decay, fused=fused)
    if kind in ("adam", "adamw"):
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        extra = {} if fused else {"capturable": capturable}
        return cls(groups, lr=rate, betas=(momentum, 0.999), weight_decay=weight_decay, fused=fused, **extra)
    raise ValueError(f"unknown optimizer {kind!r}")


def lr_factor(
    step: int,
    kind: str,
    *,
    total_steps: int,
    steps_per_epoch: int,
    step_epochs: int = 10,
    gamma: float = 0.1,
    milestones: Sequence[int] = (),
    warmup_steps: int = 0,
) -> float:
    """η(step) / η; ``step`` counts optimisation steps from 0.

    Warm-up is linear, (step + 1)/warmup_steps, so the first step already moves; it multiplies the step and
    multistep schedules (whose decays count from step 0) and precedes the cosine, which anneals over the rest.
    onecycle is torch's ``OneCycleLR`` (two phases, cosine, no momentum cycling; tested against it): from 1/25
    up to 1 over ``warmup_steps`` (30% of the run if 0), then down to 1/25·10⁻⁴ at the last step, and held there.
    """
    if kind == "onecycle":
        step = min(step, total_steps - 1)
        peak = (warmup_steps if warmup_steps else 0.3 * total_steps) - 1  # torch: float(pct_start·total) − 1
        start, top, end = 1 / 25, 1.0, 1 / 25 / 1e4
        if peak > 0 and step <= peak:
            low, high, pct = start, top, step / peak
        else:
            low, high, pct = top, end, (step - peak) / (total_steps - 1 - peak)
        return high + (low - high) / 2 * (math.cos(math.pi * pct) + 1)
    warm = (step + 1) / warmup_steps if step < warmup_steps else 1.0
    if kind == "constant":
        return warm
    if kind == "step":
        return warm * gamma ** (step // (step_epochs * steps_per_epoch))
    if kind == "multistep":
        return warm * gamma ** bisect.bisect_right(list(milestones), step)
    if kind == "cosine":
        if step < warmup_steps:
            return warm
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {kind!r}")


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    kind: str,
    *,
    total_steps: int,
    steps_per_epoch: int,
    step_epochs: int = 10,
    gamma: float = 0.1,
    milestones: Sequence[int] = (),
    warmup_steps: int = 0,
    momentum_start: float | None = None,
    momentum_ramp_steps: int = 0,
) -> torch.optim.lr_scheduler.LRScheduler:
    """A schedule stepped once per optimisation step, following :func:`lr_factor`.

    constant; step (×gamma every step_epochs); multistep (×gamma at each of ``milestones`` steps); cosine (to 0
    at ``total_steps``); onecycle (up from η/25 to η over ``warmup_steps``, or 30% of the run if 0, then cosine
    down to η/25·10⁻⁴). Any of them after a linear warm-up of ``warmup_steps``.

    With ``momentum_ramp_steps``, SGD's μ also moves: from ``momentum_start`` at step 0 linearly to each group's
    own μ at step ``momentum_ramp_steps``, then stays there (Hinton et al. 2012, Srivastava et al. 2014 and
    pylearn2's MomentumAdjustor ramp μ per epoch; here per step, the same line). μ is a function of the step
    count, so a resumed run's μ is the uninterrupted run's.
    """
    from torch.optim import lr_scheduler

    total_steps = max(total_steps, 2)
    if kind not in ("constant", "step", "multistep", "cosine", "onecycle"):
        raise ValueError(f"unknown schedule {kind!r}")
    milestones = tuple(milestones)

    def factor(step: int) -> float:  # a closure, not a callable object: LambdaLR then saves no copy of it
        return lr_factor(
            step,
            kind,
            total_steps=total_steps,
            steps_per_epoch=steps_per_epoch,
            step_epochs=step_epochs,
            gamma=gamma,
            milestones=milestones,
            warmup_steps=warmup_steps,
        )

    if momentum_ramp_steps <= 0:
        return lr_scheduler.LambdaLR(optimizer, factor)
    if momentum_start is None:
        raise ValueError("momentum_ramp_steps needs momentum_start")
    return _LambdaLRWithMomentumRamp(optimizer, factor, momentum_start, momentum_ramp_steps)


def momentum_at(step: int, start: float, end: float, ramp_steps: int) -> float:
    """μ after ``step`` optimisation steps of a linear ramp from ``start`` (step 0) to ``end`` (``ramp_steps``)."""
    return start + (end - start) * min(step / ramp_steps, 1.0)


class _LambdaLRWithMomentumRamp(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR that also sets each group's ``momentum`` from the step count (torch's schedulers cycle momentum
    only inside OneCycleLR/CyclicLR, tied to their own η shapes; none ramps it on its own)."""

    def __init__(self, optimizer: torch.optim.Optimizer, factor, start: float, ramp_steps: int):
        if any("momentum" not in group for group in optimizer.param_groups):
            raise ValueError(f"a momentum ramp needs SGD's μ; {type(optimizer).__name__} has no 'momentum' setting")
        self.momentum_start, self.momentum_ramp_steps = start, ramp_steps
        self.final_momenta = [float(group["momentum"]) for group in optimizer.param_groups]
        super().__init__(optimizer, factor)  # steps once: μ at step 0 is set by step() below

    def step(self, epoch: int | None = None) -> None:
        super().step(epoch)
        for group, end in zip(self.optimizer.param_groups, self.final_momenta, strict=True):
            group["momentum"] = momentum_at(self.last_epoch, self.momentum_start, end, self.momentum_ramp_steps)
