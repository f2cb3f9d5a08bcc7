"""DropConnect (Wan, Zeiler, Zhang, LeCun & Fergus 2013, "Regularization of neural networks using DropConnect")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError

INFERENCES = ("gaussian", "gaussian-exact", "mean")


class DropConnectLinear(nn.Module):
    """A fully connected layer whose *weights* are dropped at random in training: r = a((M ∗ W) v).

    Training (the paper's equation 4): every weight and every bias is kept with probability ``p`` (M_ij ~
    Bernoulli(p)), with a fresh mask for each example (``per_example=True``, as in the paper) or one mask per
    batch (``per_example=False``: far less memory, a common shortcut), or, between the two, one mask for each of
    ``mask_groups`` contiguous groups of the batch (``per_example=False, mask_groups=8``: eight masks a step, eight
    times the masking work of one, where the paper's per-example masks cost the batch size times). Unlike dropout,
    which zeroes whole units, each output unit sees its own random subset of the inputs. This is not drop-path
    either.

    Inference (section 3.1), chosen by ``inference``:

    - ``"gaussian"``, the paper's Algorithm 2: each unit's pre-activation over masks is approximated by moment
      matching with u ~ N(p·W v, p(1 − p)·(W ∗ W)(v ∗ v)) (the bias counted as a weight with input 1); the
      output is the average of a(u) over ``num_samples`` draws. Random, unless a ``generator`` is set.
    - ``"gaussian-exact"``: the same Gaussian, but E[a(u)] in closed form instead of by sampling, which is
      Algorithm 2's limit as Z → ∞: for ReLU, E[max(0, u)] = μ Φ(μ/σ) + σ φ(μ/σ) (Φ, φ: the standard normal's
      distribution and density); for the identity, μ. Deterministic and as cheap as one forward pass, where
      sampling costs Z of them (measured: docs/reproductions.md). Only for ReLU or no activation, where the
      expectation has a closed form; sigmoid and tanh have none, so they are refused.
    - ``"mean"``, mean-field ("mean inference"): r = a(p·(W v + b)), deterministic; what dropout does.

    The activation is part of the layer because the Gaussian inference averages *after* it. Pass it as a
    module (e.g. ``nn.ReLU()``) so hooks see it; None means the identity.

    Args:
        in_features: input width.
        out_features: output width.
        p: probability of *keeping* a connection (the paper's p; 0.5 in its experiments).
        activation: the non-linearity a; None for the identity.
        inference: ``"gaussian"``, ``"gaussian-exact"`` or ``"mean"``.
        num_samples: Z, the Gaussian samples per unit at inference.
        per_example: one mask per example (paper) or per batch.
        mask_groups: with ``per_example=False``, the number of masks a batch: its examples are cut into this many
            contiguous groups of near-equal size (``torch.tensor_split``), each through its own masked weights;
            1 is one mask per batch. A batch smaller than this uses one mask per example.
        bias: learn a bias (masked like the weights).

    Shape: (B, in_features) -> (B, out_features).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        p: float = 0.5,
        activation: nn.Module | None = None,
        inference: str = "gaussian",
        num_samples: int = 1000,
        per_example: bool = True,
        bias: bool = True,
        mask_groups: int = 1,
    ):
        super().__init__()
        if not 0.0 < p <= 1.0:
            raise ConfigError(f"DropConnect keep probability p must be in (0, 1], got {p}.")
        if inference not in INFERENCES:
            raise ConfigError(
                "DropConnect inference must be 'gaussian' (the paper's), 'gaussian-exact' or 'mean', "
                f"got {inference!r}."
            )
        if inference == "gaussian-exact" and not isinstance(activation, nn.ReLU | nn.Identity | None):
            raise ConfigError(
                f"DropConnect inference 'gaussian-exact' needs a ReLU or no activation (the expectation has a closed "
                f"form only there), got {type(activation).__name__}; use inference='gaussian' (sampling) instead."
            )
        if num_samples < 1:
            raise ConfigError(f"DropConnect needs at least one inference sample, got num_samples={num_samples}.")
        if isinstance(mask_groups, bool) or not isinstance(mask_groups, int) or mask_groups < 1:
            raise ConfigError(
                f"DropConnect mask_groups must be a whole number ≥ 1 (masks a batch), got {mask_groups!r}."
            )
        if per_example and mask_groups != 1:
            raise ConfigError(
                f"DropConnect mask_groups={mask_groups} needs per_example=False: per-example masks already give "
                "every example its own mask."
            )
        self.in_features, self.out_features = in_features, out_features
        self.p, self.inference, self.num_samples, self.per_example = p, inference, num_samples, per_example
        self.mask_groups = mask_groups
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.activation = activation if activation is not None else nn.Identity()
        self.generator: torch.Generator | None = None  # set to make masks and inference samples reproducible
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's ``nn.Linear`` initialisation."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def _bernoulli(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Bernoulli(p) masks, drawn the cheap way, since the masks are most of a DropConnect layer's training step
        on a CPU. For the papers' p = 0.5, the bits of uniform random bytes (eight fair coins a byte): 8×800×784
        masks in 10 ms against 30 for uniform floats below p (one thread, 2026-12-02). Other p: uniform draws
        below p, about 3× faster than ``torch.bernoulli`` (an 800×784 mask: 6 ms against 17). The same
        distribution either way."""
        if self.p == 0.5:
            count = math.prod(shape)
            raw = torch.randint(0, 256, ((count + 7) // 8, 1), device=like.device, dtype=torch.uint8,
                                generator=self.generator)  # fmt: skip
            shifts = torch.arange(8, device=like.device, dtype=torch.uint8)  # made on the device: no host copy
            return ((raw >> shifts) & 1).view(-1)[:count].view(shape).to(like.dtype)  # byte k's bits, lowest first
        uniform = torch.rand(shape, device=like.device, dtype=torch.float32, generator=self.generator)
        return (uniform < self.p).to(like.dtype)

    def masked_preactivation(self, x: torch.Tensor) -> torch.Tensor:
        """(M ∗ W) v (+ m_b ∗ b) for fresh random masks: the training-time pre-activation."""
        if self.per_example:
            mask = self._bernoulli((x.shape[0], *self.weight.shape), self.weight)  # (B, out, in)
            u = torch.einsum("boi,oi,bi->bo", mask, self.weight, x)  # each example through its own (M ∗ W)
            if self.bias is not None:
                u = u + self._bernoulli((x.shape[0], self.out_features), self.bias) * self.bias
            return u
        groups = min(self.mask_groups, max(x.shape[0], 1))
        if groups == 1:
            weight = self.weight * self._bernoulli(tuple(self.weight.shape), self.weight)
            bias = None if self.bias is None else self.bias * self._bernoulli(tuple(self.bias.shape), self.bias)
            return F.linear(x, weight, bias)
        masks = self._bernoulli((groups, *self.weight.shape), self.weight)  # (G, out, in), drawn in one call
        bias_masks = None if self.bias is None else self._bernoulli((groups, self.out_features), self.bias)  # (G, out)
        parts = [  # each group of examples (B/G, in) through its own (M_g ∗ W): (B/G, out)
            F.linear(chunk, self.weight * masks[g], None if bias_masks is None else self.bias * bias_masks[g])
            for g, chunk in enumerate(torch.tensor_split(x, groups))
        ]
        return torch.cat(parts)

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of the pre-activation over masks: (p·(W v + b), p(1 − p)·((W ∗ W)(v ∗ v) + b²))."""
        mean = self.p * F.linear(x, self.weight, self.bias)
        var = F.linear(x * x, self.weight * self.weight, None if self.bias is None else self.bias * self.bias)
        return mean, self.p * (1 - self.p) * var

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.activation(self.masked_preactivation(x))
        mean, var = self.moments(x)
        if self.inference == "mean" or self.p == 1.0:
            return self.activation(mean)
        if self.inference == "gaussian-exact":
            if isinstance(self.activation, nn.ReLU):
                return _expected_relu(mean, var)
            if isinstance(self.activation, nn.Identity):
                return mean
            raise ConfigError(  # the rule or the activation was changed after construction
                f"DropConnect inference 'gaussian-exact' needs a ReLU or no activation, not "
                f"{type(self.activation).__name__}; use inference='gaussian'."
            )
        # Algorithm 2: u ~ N(mean, var), Z draws per unit; average a(u). (Z, B, out) -> (B, out)
        noise = torch.randn((self.num_samples, *mean.shape), device=x.device, dtype=x.dtype, generator=self.generator)
        return self.activation(mean + var.sqrt() * noise).mean(0)

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, p={self.p}, inference={self.inference!r}, "
            f"num_samples={self.num_samples}, per_example={self.per_example}, "
            f"{f'mask_groups={self.mask_groups}, ' if self.mask_groups != 1 else ''}bias={self.bias is not None}"
        )


def _expected_relu(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """E[max(0, u)] for u ~ N(mean, var), elementwise: μ Φ(μ/σ) + σ φ(μ/σ); max(0, μ) where σ = 0."""
    degenerate = var <= 0
    std = torch.where(degenerate, torch.ones_like(var), var).sqrt()  # no 0/0, and no infinite gradient of √0
    z = mean / std
    density = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    expected = mean * torch.special.ndtr(z) + std * density
    return torch.where(degenerate, mean.clamp(min=0), expected)
