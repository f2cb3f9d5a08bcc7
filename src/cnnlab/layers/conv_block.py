"""Convolution, optional batch normalisation, ReLU: the unit most CNNs of 2012–2015 are built from."""

from __future__ import annotations

import torch
from torch import nn


class ConvReLU(nn.Module):
    """``conv`` → (``bn``) → ``relu``, with the children named as torchvision names them (``BasicConv2d``).

    The ReLU is a module of its own (not in-place, not functional) so attribution hooks see it.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel width.
        stride: stride.
        padding: zero padding.
        groups: grouped convolution (AlexNet's two-GPU split).
        batch_norm: insert ``nn.BatchNorm2d`` after the convolution (the convolution then has no bias).
        bn_eps: the batch norm's epsilon (torchvision's GoogLeNet uses 1e-3).

    Shape: (B, in_channels, H, W) -> (B, out_channels, H', W').
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        batch_norm: bool = False,
        bn_eps: float = 1e-5,
    ):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups, bias=not batch_norm
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps) if batch_norm else None
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.relu(x)
