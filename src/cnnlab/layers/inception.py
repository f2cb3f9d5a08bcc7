"""The inception module of GoogLeNet (Szegedy et al. 2014, "Going deeper with convolutions", figure 2b)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cnnlab.layers.conv_block import ConvReLU


class Inception(nn.Module):
    """Four parallel branches concatenated along channels: 1×1; 1×1 → 3×3; 1×1 → k×k; 3×3 max pool → 1×1.

    The 1×1 convolutions before the 3×3 and k×k ones are the paper's dimension reductions; the one after the
    pooling is its "pool proj". Children are named as in torchvision (``branch1`` .. ``branch4``) so its
    weights load without a translation table.

    Args:
        in_channels: input channels.
        ch1x1: width of the 1×1 branch.
        ch3x3red: width of the 1×1 reduction before the 3×3 convolution.
        ch3x3: width of the 3×3 convolution.
        ch5x5red: width of the 1×1 reduction before the "5×5" convolution.
        ch5x5: width of the "5×5" convolution.
        pool_proj: width of the 1×1 projection after the max pooling.
        conv_block: builds one convolution + non-linearity as ``conv_block(in, out, kernel_size, padding=p)``;
            default: :class:`ConvReLU` with biases (the paper's).
        large_kernel: the kernel of the "5×5" branch: 5 in the paper; torchvision's GoogLeNet uses 3
            (pytorch/vision#906), which its weights need.

    Shape: (B, in_channels, H, W) -> (B, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        conv_block: Callable[..., nn.Module] = ConvReLU,
        large_kernel: int = 5,
    ):
        super().__init__()
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj
        self.branch1 = conv_block(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            conv_block(in_channels, ch3x3red, kernel_size=1),
            conv_block(ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            conv_block(in_channels, ch5x5red, kernel_size=1),
            conv_block(ch5x5red, ch5x5, kernel_size=large_kernel, padding=large_kernel // 2),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            conv_block(in_channels, pool_proj, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> 4 × (B, C_i, H, W) -> (B, ΣC_i, H, W)
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)
