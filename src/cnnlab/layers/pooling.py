"""Pooling layers not in torch: LeNet-5's trainable subsampling, and fractional max pooling as Graham 2014
wrote it."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError


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


def fractional_boundaries(
    input_size: int,
    output_size: int,
    overlapping: bool,
    pseudo_random: bool,
    generator: torch.Generator | None,
    u: float | None = None,
) -> torch.Tensor:
    """Graham 2014's boundary sequence 0 = a_0 < a_1 < ... < a_N = L with increments of 1 or 2 (int64, N + 1).

    L is the input size for disjoint regions [a_{i−1}, a_i − 1] and one less for overlapping ones [a_{i−1}, a_i].
    Pseudo-random: a_i = ⌈α(i + u)⌉ − ⌈αu⌉ with α = L / N and u ~ U(0, 1) (section 2, which then ends exactly at
    L); random: the L − N increments of 2 placed among the N at random. ``u`` fixes the pseudo-random offset
    (eval mode uses 0.5) instead of drawing it.
    """
    length = input_size - 1 if overlapping else input_size
    if not output_size <= length <= 2 * output_size:
        raise ConfigError(
            f"Fractional max pooling maps {input_size} → {output_size} px: the ratio must lie in [1, 2] "
            f"({'overlapping' if overlapping else 'disjoint'} regions need an output size between "
            f"{-(-length // 2)} and {length})."
        )
    if pseudo_random:
        u = float(torch.rand((), generator=generator)) if u is None else u
        alpha = length / output_size
        index = torch.arange(output_size + 1, dtype=torch.float64)
        boundaries = torch.ceil(alpha * (index + u)) - math.ceil(alpha * u)
        boundaries[-1] = length  # exact in real arithmetic; guards float rounding
        return boundaries.long()
    increments = torch.ones(output_size, dtype=torch.long)
    increments[torch.randperm(output_size, generator=generator)[: length - output_size]] = 2
    return torch.cat([torch.zeros(1, dtype=torch.long), increments.cumsum(0)])


def _pool_along(x: torch.Tensor, boundaries: torch.Tensor, overlapping: bool, dim: int) -> torch.Tensor:
    """Max over each region along ``dim`` (-2: rows, -1: columns) of a (B, C, H, W) map.

    Regions hold 1–3 positions, so each is picked out as three (first, second clamped to the last, last): the
    picked map is three times as long along ``dim``, and ``F.max_pool2d`` with a 3×1 (or 1×3) window and the
    same stride takes each region's max, exactly. Its backward sends the gradient to one arg-max (the first at a
    tie, as ``nn.MaxPool2d`` does). Why not the max of three ``index_select``s: autograd's backward of
    ``torch.maximum`` makes several full-size passes per call, and on a CPU ``max_pool2d`` is fast only on
    channels-last maps, so a batch is picked out as (B, H, W, C), where ``index_select`` copies whole rows and the
    result is channels-last (whatever the input's layout): 3× faster per training step of ``fmp-cnn`` and 3× per
    forward pass of a contiguous batch (measured on the 2-core CPU; ``tests/test_reproduce.py`` checks values and
    gradients against the plain max). :class:`FractionalMaxPool2d` gives its output the input's layout back.
    """
    starts = boundaries[:-1]
    ends = boundaries[1:] - (0 if overlapping else 1)
    picks = torch.stack([starts, torch.minimum(starts + 1, ends), ends], dim=1).flatten().to(x.device)  # (3·N,)
    window = (3, 1) if dim == -2 else (1, 3)
    if x.dim() == 4:
        picked = x.permute(0, 2, 3, 1).index_select(1 if dim == -2 else 2, picks).permute(0, 3, 1, 2)
    else:
        picked = x.index_select(dim, picks)
    return F.max_pool2d(picked, window, stride=window)


class FractionalMaxPool2d(nn.Module):
    """Fractional max pooling (Graham 2014): max pooling that shrinks a map by a non-integer ratio α ∈ (1, 2],
    e.g. √2, with pooling regions placed at random (random or pseudo-random sequences; disjoint or overlapping).

    Why by hand: ``nn.FractionalMaxPool2d`` implements one variant only — pseudo-random starts with a fixed
    k×k window — so neither the paper's disjoint regions (1 or 2 wide) nor its overlapping ones (2 or 3 wide)
    nor its random sequences. Here regions are the paper's exactly; ``backend="torch"`` uses torch's kernel
    (2×2 windows) instead. Max is separable, so rows and columns are pooled one after the other.

    Training draws new regions on every call (one draw for the whole batch, separate for rows and columns).
    In eval mode the layer is deterministic (u = 0.5 pseudo-random, or a fixed-seed random draw) unless
    ``resample_in_eval`` is set — which :func:`average_over_pooling_draws` does for the paper's test-time
    averaging over several draws ("repeated testing", section 3).

    Args:
        output_ratio: output side / input side, in [0.5, 1) (the paper's 1/α; e.g. 1/√2 ≈ 0.7071).
        overlapping: regions [a_{i−1}, a_i] (overlap by one) instead of disjoint [a_{i−1}, a_i − 1].
        pseudo_random: the paper's pseudo-random sequences instead of random ones.
        backend: "paper" (the regions above) or "torch" (``F.fractional_max_pool2d`` with 2×2 windows).

    Shape: (B, C, H, W) -> (B, C, round(H·ratio), round(W·ratio)).
    """

    def __init__(
        self,
        output_ratio: float = 2**-0.5,
        overlapping: bool = True,
        pseudo_random: bool = True,
        backend: str = "paper",
    ):
        super().__init__()
        if not 0.5 <= output_ratio < 1.0:
            raise ConfigError(f"output_ratio must be in [0.5, 1) (α = 1/ratio in (1, 2]); got {output_ratio!r}.")
        if backend not in ("paper", "torch"):
            raise ConfigError(f"backend must be 'paper' or 'torch', got {backend!r}.")
        self.output_ratio, self.overlapping, self.pseudo_random, self.backend = (
            output_ratio,
            overlapping,
            pseudo_random,
            backend,
        )
        self.resample_in_eval = False
        self.generator: torch.Generator | None = None  # set for reproducible draws

    def output_size(self, size: int) -> int:
        return max(1, round(size * self.output_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        out_h, out_w = self.output_size(height), self.output_size(width)
        draw = self.training or self.resample_in_eval
        if self.backend == "torch":
            samples = None if draw else torch.full((x.shape[0], x.shape[1], 2), 0.5, dtype=x.dtype, device=x.device)
            return F.fractional_max_pool2d(x, 2, output_size=(out_h, out_w), _random_samples=samples)
        # eval mode: fixed regions (u = 0.5 pseudo-random, or a seed-0 random draw)
        generator = self.generator if draw else torch.Generator().manual_seed(0)
        u = None if draw else 0.5
        rows = fractional_boundaries(height, out_h, self.overlapping, self.pseudo_random, generator, u)
        cols = fractional_boundaries(width, out_w, self.overlapping, self.pseudo_random, generator, u)
        pooled = _pool_along(x, rows, self.overlapping, dim=-2)  # (B, C, out_h, W), channels-last
        out = _pool_along(pooled, cols, self.overlapping, dim=-1)  # (B, C, out_h, out_w), channels-last
        return out if x.dim() != 4 or x.is_contiguous(memory_format=torch.channels_last) else out.contiguous()

    def extra_repr(self) -> str:
        kind = ("overlapping" if self.overlapping else "disjoint") + (", pseudo-random" if self.pseudo_random else "")
        return f"output_ratio={self.output_ratio:.4f}, {kind}, backend={self.backend!r}"


@torch.no_grad()
def average_over_pooling_draws(model: nn.Module, images: torch.Tensor, draws: int = 12, seed: int = 0) -> torch.Tensor:
    """Softmax probabilities averaged over ``draws`` random pooling-region draws of every
    :class:`FractionalMaxPool2d` in ``model`` (Graham 2014's repeated testing; the model is in eval mode
    otherwise: dropout off, batch norm's running statistics). Returns (B, classes) probabilities.
    """
    if draws < 1:
        raise ConfigError(f"draws must be at least 1, got {draws}.")
    layers = [m for m in model.modules() if isinstance(m, FractionalMaxPool2d)]
    was_training = model.training
    model.eval()
    saved = [(layer.resample_in_eval, layer.generator) for layer in layers]
    generator = torch.Generator().manual_seed(seed)
    try:
        for layer in layers:
            layer.resample_in_eval, layer.generator = True, generator
        total = None
        for _ in range(draws):
            probs = model(images).float().softmax(dim=1)
            total = probs if total is None else total + probs
        return total / draws
    finally:
        for layer, (resample, gen) in zip(layers, saved, strict=True):
            layer.resample_in_eval, layer.generator = resample, gen
        model.train(was_training)
