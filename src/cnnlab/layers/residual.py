"""Residual blocks (He, Zhang, Ren & Sun 2015, "Deep residual learning for image recognition").

Children are named as in torchvision (``conv1``, ``bn1``, ..., ``downsample``) so its ResNet weights load
without a translation table. Unlike torchvision, every ReLU is its own module (``relu1``, ``relu2``, ...):
torchvision calls one ``relu`` module twice per block, which attribution hooks cannot tell apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError


class ZeroPadShortcut(nn.Module):
    """The paper's option A shortcut: identity with stride, extra channels filled with zeros. No parameters.

    Section 3.3: "the shortcut still performs identity mapping, with extra zero entries padded for increasing
    dimensions"; across feature maps of two sizes it is "performed with a stride of 2", i.e. it keeps every
    second pixel. The new channels are appended after the old ones (the paper does not say where; the
    choice does not change what the network can represent).

    Shape: (B, C_in, H, W) -> (B, C_out, ceil(H/stride), ceil(W/stride)).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def projection_shortcut(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """Option B: a strided 1×1 convolution + batch norm (torchvision's ``downsample``: children ``0`` and ``1``)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
    )


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm and a shortcut: relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x)).

    Args:
        in_channels: input channels.
        channels: output channels.
        stride: the first convolution's stride (2 where a stage halves the resolution).
        downsample: the shortcut when shapes change (:class:`ZeroPadShortcut` or :func:`projection_shortcut`);
            None for the identity.
        residual: False drops the shortcut: relu(bn2(conv2(...))), the "plain" block of He et al.'s
            comparison (figure 6), same layers and parameters.

    Shape: (B, in_channels, H, W) -> (B, channels, H/stride, W/stride).
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        residual: bool = True,
    ):
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if not self.residual:
            return self.relu2(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + shortcut)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3, 1×1 expand (×4), each with batch norm, plus a shortcut (the paper's figure 5, right).

    Args:
        in_channels: input channels.
        channels: the bottleneck width; the block outputs ``4 × channels``.
        stride: the stride of the block.
        downsample: the shortcut when shapes change; None for the identity.
        stride_on: which convolution carries the stride: ``"1x1"`` as in the paper (and Caffe's released
            models), ``"3x3"`` as in torchvision ("ResNet v1.5"), whose weights need it.

    Shape: (B, in_channels, H, W) -> (B, 4 · channels, H/stride, W/stride).
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        stride_on: str = "3x3",
    ):
        super().__init__()
        if stride_on not in ("1x1", "3x3"):
            raise ConfigError(f"stride_on must be '1x1' (the paper's) or '3x3' (torchvision's), got {stride_on!r}.")
        s1, s3 = (stride, 1) if stride_on == "1x1" else (1, stride)
        out = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, stride=s1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=s3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(channels, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu3 = nn.ReLU()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + shortcut)
