"""Convolution whose output maps see only chosen input maps (LeNet-5's C3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError


class ConnectionTableConv2d(nn.Module):
    """A convolution with a connection table: output map j is computed from input maps ``table[j]`` only.

    Only the connected K×K kernels are parameters (``weight`` has one kernel per connection, output map by
    output map, in table order), so LeNet's C3 has 1,516 parameters as in the paper, not the 2,416 of a dense
    6→16 convolution. Written by hand because torch has no connection tables and its grouped convolution needs
    groups of equal size.

    The forward pass scatters the kernels into a dense (out, in, K, K) kernel with zeros elsewhere and runs one
    dense convolution. That executes the zero taps too (C3: 240,000 MACs instead of the 150,000 useful ones)
    but is 6× faster on the CPU than one grouped convolution per fan-in (oneDNN's grouped backward is slow),
    so FLOP counters report the dense count.

    Args:
        in_channels: number of input maps.
        table: for each output map, the indices of the input maps it is connected to.
        kernel_size: square kernel width.
        stride: stride.
        padding: zero padding.
        bias: one bias per output map.

    Shape: (B, in_channels, H, W) -> (B, len(table), H', W') with H' = (H − K + 2P)/S + 1.
    """

    def __init__(
        self,
        in_channels: int,
        table: Sequence[Sequence[int]],
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ):
        super().__init__()
        for out_map, inputs in enumerate(table):
            if not inputs or len(set(inputs)) != len(inputs) or not all(0 <= i < in_channels for i in inputs):
                raise ConfigError(
                    f"Connection table row {out_map} is {list(inputs)}: each output map needs distinct input "
                    f"indices in [0, {in_channels})."
                )
        self.in_channels, self.out_channels = in_channels, len(table)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.table = tuple(tuple(int(i) for i in row) for row in table)
        connections = [(j, i) for j, row in enumerate(self.table) for i in row]
        # Row of each connection's kernel in the dense kernel viewed as (out·in, K, K).
        self.register_buffer(
            "dense_index", torch.tensor([j * in_channels + i for j, i in connections]), persistent=False
        )
        self.weight = nn.Parameter(torch.empty(len(connections), kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None
        self.reset_parameters()

    def fan_in_per_connection(self) -> torch.Tensor:
        """(connections,) fan-in (connected maps × K²) of the output map each kernel belongs to."""
        return torch.tensor([len(row) * self.kernel_size**2 for row in self.table for _ in row], dtype=torch.float32)

    def reset_parameters(self) -> None:
        """Uniform in ±1/sqrt(fan_in) per output map, as torch initialises nn.Conv2d; biases zero."""
        with torch.no_grad():
            bound = self.fan_in_per_connection().to(self.weight.device).rsqrt().view(-1, 1, 1)
            self.weight.uniform_(-1, 1).mul_(bound)
            if self.bias is not None:
                self.bias.zero_()

    def connection_mask(self) -> torch.Tensor:
        """Boolean (out_channels, in_channels) mask: True where output map j reads input map i."""
        mask = torch.zeros(self.out_channels, self.in_channels, dtype=torch.bool)
        for j, row in enumerate(self.table):
            mask[j, list(row)] = True
        return mask

    def dense_weight(self) -> torch.Tensor:
        """The equivalent dense kernel (out, in, K, K), zero where the table has no connection."""
        k = self.kernel_size
        dense = self.weight.new_zeros(self.out_channels * self.in_channels, k, k)
        return dense.index_copy(0, self.dense_index, self.weight).view(self.out_channels, self.in_channels, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.dense_weight(), self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, connections={self.weight.shape[0]}"
        )
