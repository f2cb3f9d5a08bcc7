"""An exponential moving average (EMA) of a model's weights, evaluated instead of the raw weights when on."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """ema ← d·ema + (1 − d)·w after every optimisation step, over every floating-point tensor of the state
    (parameters and BatchNorm running statistics); integer buffers (BatchNorm's step count) are copied.

    d ramps up as min(decay, (1 + n)/(10 + n)) over the first n updates (TensorFlow's ExponentialMovingAverage
    with ``num_updates``), so a short run is not dominated by the random initial weights.

    Args:
        model: the model being trained (not a DDP or compiled wrapper).
        decay: d in (0, 1); 0.999 averages about the last 1,000 steps.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0  # optimisation steps averaged so far
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        self._pairs(model)

    def _pairs(self, model: nn.Module) -> None:
        ours, theirs = self.module.state_dict(keep_vars=True), model.state_dict(keep_vars=True)
        floating = [k for k, v in ours.items() if v.is_floating_point()]
        self._float = ([ours[k].data for k in floating], [theirs[k].data for k in floating])
        other = [k for k, v in ours.items() if not v.is_floating_point()]
        self._other = ([ours[k].data for k in other], [theirs[k].data for k in other])

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Average in the model's current weights (foreach: a few kernels, no host sync)."""
        d = self.current_decay()
        self.updates += 1
        ema, live = self._float
        torch._foreach_lerp_(ema, live, 1 - d)  # ema + (1 − d)·(w − ema) = d·ema + (1 − d)·w
        for mine, source in zip(*self._other, strict=True):
            mine.copy_(source)

    @torch.no_grad()
    def update_with_tensor_decay(self, decay: torch.Tensor) -> None:
        """The same update with d read from a device tensor (inside a captured CUDA graph); see graphs.py."""
        ema, live = self._float
        torch._foreach_mul_(ema, decay)
        torch._foreach_add_(ema, torch._foreach_mul(live, 1 - decay))
        for mine, source in zip(*self._other, strict=True):
            mine.copy_(source)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["module"])
