"""Global average pooling (Lin, Chen & Yan 2013, "Network In Network", section 3.2)."""

from __future__ import annotations

import torch
from torch import nn


class GlobalAvgPool2d(nn.Module):
    """The mean of each feature map over all positions, for any input size.

    NIN replaces the fully connected classifier with it: the last layer makes one map per class and its mean
    is the class score, with no parameters to overfit.

    Args:
        flatten: return (B, C) if True, else (B, C, 1, 1).

    Shape: (B, C, H, W) -> (B, C) or (B, C, 1, 1).
    """

    def __init__(self, flatten: bool = True):
        super().__init__()
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=not self.flatten)

    def extra_repr(self) -> str:
        return f"flatten={self.flatten}"
