"""Local response normalisation with the paper's constants (Krizhevsky, Sutskever & Hinton 2012, section 3.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError


class LocalResponseNorm(nn.Module):
    """Normalisation across ``size`` adjacent channels, written with the AlexNet paper's ``alpha``.

    The paper defines, for the activity a_i of channel i at one position among N channels,

        b_i = a_i / (k + alpha · Σ_{j = max(0, i − n/2)}^{min(N − 1, i + n/2)} a_j²)^beta

    with k = 2, n = 5, alpha = 1e-4, beta = 0.75: ``alpha`` multiplies the plain *sum* of squares.
    ``torch.nn.LocalResponseNorm`` (like Caffe) multiplies the *mean* over the window, i.e. divides alpha by
    n, so this wrapper passes ``alpha · size`` to torch. Channels beyond the edges count as zeros and torch
    always divides by ``size``, so the product is exactly the paper's clipped sum.

    Caffe models (GoogLeNet, NIN) state alpha in the mean convention: pass ``alpha = caffe_alpha / size``.

    Args:
        size: n, the number of channels in the window; odd, so the window is centred on the channel.
        alpha: the paper's alpha (multiplies the sum of squares).
        beta: exponent.
        k: additive constant.

    Shape: (B, C, ...) -> same shape.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        super().__init__()
        if size < 1 or size % 2 == 0:
            raise ConfigError(f"LocalResponseNorm size must be a positive odd number (a centred window), got {size}.")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.local_response_norm(x, self.size, alpha=self.alpha * self.size, beta=self.beta, k=self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha:g} (per sum), beta={self.beta:g}, k={self.k:g}"
