"""Maxout units (Goodfellow, Warde-Farley, Mirza, Courville & Bengio 2013)."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.errors import ConfigError


class Maxout(nn.Module):
    """The maximum over groups of ``num_pieces`` consecutive features: h_i = max_j z_{i·k + j}, j < k.

    Put it after any linear map with ``k × units`` outputs (``nn.Linear``, ``nn.Conv2d``) to make a maxout
    layer of ``units`` units with k pieces each; a convolutional maxout layer is a convolution with k × C
    output channels followed by ``Maxout(k)`` (the max runs across channels, at every position). It has no
    parameters. The gradient flows to the winning piece only (``torch.max``'s sub-gradient).

    Args:
        num_pieces: k, the pieces per unit.
        dim: the feature dimension to group (1 for (B, C, ...) tensors).

    Shape: (B, k·C, ...) -> (B, C, ...).
    """

    def __init__(self, num_pieces: int, dim: int = 1):
        super().__init__()
        if num_pieces < 1:
            raise ConfigError(f"Maxout needs at least one piece per unit, got num_pieces={num_pieces}.")
        self.num_pieces, self.dim = num_pieces, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = self.dim % x.dim()
        if x.shape[dim] % self.num_pieces:
            raise ConfigError(
                f"Maxout with {self.num_pieces} pieces needs a multiple of {self.num_pieces} features in dimension "
                f"{dim}, got {x.shape[dim]}."
            )
        # (B, k·C, ...) -> (B, C, k, ...) -> (B, C, ...)
        return x.unflatten(dim, (-1, self.num_pieces)).max(dim=dim + 1).values

    def extra_repr(self) -> str:
        return f"num_pieces={self.num_pieces}, dim={self.dim}"
