"""Norm constraints on weights, applied after every optimiser step, and a record of whether they ever act.

A max-norm ball (Srivastava et al. 2014, section 5.1; Goodfellow et al. 2013) or ZF Net's filter RMS radius changes
training only when some unit's weights actually reach the bound. At a small learning rate they may never do, and
then the constrained run is the unconstrained one, step for step (our dropout-mnist reproduction ran 40 epochs
like that before anyone noticed). :class:`ConstraintActivity` counts, on the weights' device and without a host
sync per step, how many rows were rescaled and the largest norm/bound ratio seen; the trainer reads it once an epoch.
"""

from __future__ import annotations

import torch

__all__ = ["ConstraintActivity", "clip_row_norms_"]


class ConstraintActivity:
    """Running counts for one model's constraints: rows checked, rows rescaled, the largest norm/bound ratio.

    The counters are tensors updated in place (no host sync, and no new allocation after the first step, so a
    captured CUDA graph keeps updating them); :meth:`read_and_reset` is the one sync, made at the end of an epoch.
    Not part of any state dict: a run resumed mid-epoch counts that epoch from the step it resumed at.
    """

    def __init__(self) -> None:
        self._checked: torch.Tensor | None = None
        self._acted: torch.Tensor | None = None
        self._peak: torch.Tensor | None = None

    def add(self, ratio: torch.Tensor) -> None:
        """Record one constraint check: ``ratio`` is each row's norm over its bound (> 1: the row was rescaled)."""
        if self._checked is None or self._checked.device != ratio.device:
            self._checked = torch.zeros((), dtype=torch.float64, device=ratio.device)
            self._acted = torch.zeros((), dtype=torch.float64, device=ratio.device)
            self._peak = torch.zeros((), dtype=torch.float32, device=ratio.device)
        assert self._acted is not None and self._peak is not None
        self._checked.add_(ratio.numel())
        self._acted.add_((ratio > 1).sum())
        torch.maximum(self._peak, ratio.detach().max().float(), out=self._peak)

    def read_and_reset(self) -> dict[str, float] | None:
        """``{"constraint_acted": share of checked rows that were rescaled, "constraint_peak": largest norm/bound}``
        since the last call (None when nothing was checked), and the counters back to zero."""
        if self._checked is None or self._acted is None or self._peak is None:
            return None
        checked = float(self._checked)
        if checked == 0:
            return None
        result = {"constraint_acted": float(self._acted) / checked, "constraint_peak": float(self._peak)}
        for counter in (self._checked, self._acted, self._peak):
            counter.zero_()
        return result


@torch.no_grad()
def clip_row_norms_(weight: torch.Tensor, bound: float, activity: ConstraintActivity | None = None) -> None:
    """Rescale every row of ``weight`` (dim 0: one unit's incoming weights, or one conv filter) to L2 norm ≤ ``bound``.

    In place, tensor operations only. ``torch.renorm`` does the same projection but cannot report the ratios, which
    :class:`ConstraintActivity` records; hence the few lines here.
    """
    ratio = weight.flatten(1).norm(dim=1) / bound  # (rows,)
    weight.mul_(ratio.clamp(min=1.0).reciprocal().view(-1, *[1] * (weight.dim() - 1)))
    if activity is not None:
        activity.add(ratio)
