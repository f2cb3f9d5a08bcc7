"""The mlpconv layer of Network In Network (Lin, Chen & Yan 2013, section 3.1)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.errors import ConfigError


class MLPConv(nn.Sequential):
    """A small multilayer perceptron slid over the image: a k×k convolution, then 1×1 convolutions, each + ReLU.

    The paper's "cascaded cross channel parametric pooling": every position's k×k patch goes through an MLP
    whose first layer is the k×k convolution and whose further layers are 1×1 convolutions. Children are named
    ``conv0, relu0, conv1, relu1, ...`` (Caffe's NIN calls the 1×1 layers ``cccp``).

    Args:
        in_channels: input channels.
        channels: output width of each layer, the first being the k×k convolution (NIN uses three).
        kernel_size: the first convolution's square kernel width.
        stride: its stride.
        padding: its zero padding.
        final_relu: apply a ReLU after the last layer too (NIN does, even on the class maps).

    Shape: (B, in_channels, H, W) -> (B, channels[-1], H', W').
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        final_relu: bool = True,
    ):
        if not channels:
            raise ConfigError("MLPConv needs at least one layer width.")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = in_channels
        for i, out in enumerate(channels):
            k, s, p = (kernel_size, stride, padding) if i == 0 else (1, 1, 0)
            layers[f"conv{i}"] = nn.Conv2d(width, out, k, stride=s, padding=p)
            if final_relu or i < len(channels) - 1:
                layers[f"relu{i}"] = nn.ReLU()
            width = out
        super().__init__(layers)
        self.out_channels = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)
