"""Activation functions not in torch."""

from __future__ import annotations

import torch
from torch import nn


class ScaledTanh(nn.Module):
    """LeCun's squashing function f(a) = A·tanh(S·a), with A = 1.7159 and S = 2/3 (LeCun et al. 1998, appendix A).

    The constants make f(±1) = ±1 and put the maximum of the second derivative at a = 1, so targets of ±1 sit
    in the function's most non-linear region without saturating it.
    """

    def __init__(self, amplitude: float = 1.7159, slope: float = 2.0 / 3.0):
        super().__init__()
        self.amplitude, self.slope = amplitude, slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.tanh(self.slope * x)

    def extra_repr(self) -> str:
        return f"amplitude={self.amplitude}, slope={self.slope:.4g}"
