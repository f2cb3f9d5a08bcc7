"""Pooling layers not in torch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TrainableSubsampling(nn.Module):
    """LeNet-5's subsampling layer (S2, S4): each map's k×k sums times one trainable coefficient, plus one bias.

    Written by hand because torch has no pooling with learned per-channel gain; it has 2·C parameters, as the
    paper counts them (S2: 12, S4: 32). The squashing non-linearity is a separate module.

    Shape: (B, C, H, W) -> (B, C, H/k, W/k).
    """

    def __init__(self, channels: int, kernel_size: int = 2):
        super().__init__()
        self.channels = channels
        # Read by the receptive-field arithmetic, as for nn.AvgPool2d.
        self.kernel_size, self.stride, self.padding = kernel_size, kernel_size, 0
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window_sum = F.avg_pool2d(x, self.kernel_size) * (self.kernel_size**2)
        return window_sum * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}"
