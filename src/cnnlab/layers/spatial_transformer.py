"""Spatial transformers (Jaderberg, Simonyan, Zisserman & Kavukcuoglu, "Spatial transformer networks", 2015).

A spatial transformer is three parts (section 3 of the paper):

1. a *localisation network* regresses the transformation's parameters θ from the input U;
2. a *grid generator* maps each pixel of the output V (target coordinates, normalised to [−1, 1]) to a point of
   the input (source coordinates): x_s = T_θ(x_t);
3. a *sampler* reads U at those points with a sampling kernel k:
   V_i = Σ_n Σ_m U_nm · k(x_s,i − m) · k(y_s,i − n)      (the paper's eq. 3, m, n over the input's pixels).

Coordinates follow PyTorch's ``align_corners=False`` convention: −1 and +1 are the outer *edges* of the image and
pixel i of W has its centre at (2i + 1)/W − 1. With it, the identity transformation puts every output pixel on the
centre of the input pixel it came from, so θ = identity reproduces the input to float32 rounding (bit for bit with
the nearest kernel). Building the grid under one ``align_corners`` convention and sampling under the other, a
classic bug, shifts and blurs the image by half a pixel.

Transformations (the parameters the regressor outputs, initialised to the identity as the paper does: zero
weights, identity bias):

- ``affine``: 6 numbers, A = [[a, b, tx], [c, d, ty]]; grid by :func:`torch.nn.functional.affine_grid`.
- ``projective``: 8 numbers, the homography H = [[a, b, c], [d, e, f], [g, h, 1]]; x_s = (H x_t)_{xy} / (H x_t)_z.
- ``tps``: thin-plate spline with an n×n grid of control points (n = 3 or 4: 9 or 16 points) spread evenly over
  the output; the 2·n² numbers are how far each point moves in the input. The spline through the moved points
  minimises bending energy (U(r) = r² log r²), so zero offsets give the identity exactly (see :func:`tps_grid`).

Sampling kernels: ``bilinear`` (k(d) = max(0, 1 − |d|), eq. 5: sub-differentiable in U and in the coordinates)
and ``nearest``, the paper's integer kernel (eq. 4: V_i = U at the nearest pixel). The integer kernel is piecewise
constant in the coordinates, so its gradient with respect to x_s, and hence to θ and the localisation network, is
zero almost everywhere: with it the transformer cannot learn where to look (only the layers after it train). The
paper's "sub-gradient" caveat is exactly that. Both run on :func:`torch.nn.functional.grid_sample` (fast, fused);
:func:`separable_sample` is eq. 3 written out for any separable kernel with a small support, checked against it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError, InputSizeError

TRANSFORMS = {"affine": 6, "projective": 8}  # parameters per transformation ("tps": 2·n² for n×n control points)
SAMPLING = ("bilinear", "nearest", "bicubic")
PADDING = ("zeros", "border", "reflection")


# ---- grid generators ----------------------------------------------------------------------------------------------
def base_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Target coordinates of an output of ``height``×``width``: (H, W, 2) of (x, y) pixel centres in [−1, 1]."""
    xs = (torch.arange(width, device=device, dtype=dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=device, dtype=dtype) * 2 + 1) / height - 1
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
        raise ConfigError(f"The output size must be two positive integers (height, width), got {tuple(size)!r}.")
    return int(size[0]), int(size[1])


def affine_grid(theta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 2, 3) affine matrices -> the (B, H, W, 2) source coordinates of an H×W output."""
    if theta.ndim != 3 or theta.shape[1:] != (2, 3):
        raise ConfigError(f"An affine θ must be (B, 2, 3) (or 6 numbers per image), got shape {tuple(theta.shape)}.")
    height, width = _check_size(size)
    return F.affine_grid(theta, [theta.shape[0], 1, height, width], align_corners=False)


def projective_grid(theta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 3, 3) homographies -> (B, H, W, 2) source coordinates: (H·[x, y, 1]ᵀ)_xy / (H·[x, y, 1]ᵀ)_z.

    A point that the homography sends to infinity (z ≈ 0) is clamped to |z| ≥ 1e-6 (keeping its sign), which puts
    it far outside the image: the sampler reads zeros there rather than NaN.
    """
    if theta.ndim != 3 or theta.shape[1:] != (3, 3):
        raise ConfigError(f"A projective θ must be (B, 3, 3) (or 8 numbers per image), got {tuple(theta.shape)}.")
    height, width = _check_size(size)
    target = base_grid(height, width, theta.device, theta.dtype)
    homogeneous = torch.cat([target, torch.ones_like(target[..., :1])], dim=-1)  # (H, W, 3)
    source = torch.einsum("hwj,bij->bhwi", homogeneous, theta)  # (B, H, W, 3)
    z = source[..., 2:]
    z = torch.where(z >= 0, z.clamp(min=1e-6), z.clamp(max=-1e-6))
    return source[..., :2] / z


def control_points(per_side: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """An evenly spaced ``per_side``×``per_side`` grid of TPS control points over [−1, 1]²: (n², 2) as (x, y)."""
    if per_side < 2:
        raise ConfigError(f"A thin-plate spline needs at least 2×2 control points, got {per_side}×{per_side}.")
    axis = torch.linspace(-1, 1, per_side, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1).reshape(-1, 2)


def _tps_radial(squared_distance: torch.Tensor) -> torch.Tensor:
    """U(r) = r² log r², with U(0) = 0 (its limit)."""
    return squared_distance * torch.log(squared_distance.clamp(min=1e-12))


@lru_cache(maxsize=32)
def _tps_solution(per_side: int, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(H·W, n²) float64: maps control-point displacements (n², 2) to grid displacements (H·W, 2).

    The spline through points Y placed at controls C is f(p) = Σ_k w_k U(|p − c_k|) + a₀ + a₁x + a₂y, with
    [w; a] = L⁻¹ [Y; 0] and L = [[K, P], [Pᵀ, 0]] (K_jk = U(|c_j − c_k|), P_k = [1, x_k, y_k]). f is linear in Y and
    reproduces C itself exactly (the affine part absorbs it), so f(p) = p + A L⁻¹ [Y − C; 0] with A = [U(|p − c_k|),
    1, x, y]: computing only the displacement keeps the identity exact instead of equal to within L⁻¹'s rounding.
    Cached per (size, device, dtype): the same for every image and every step, so it is built and copied to the
    device once, not at every forward.
    """
    controls = control_points(per_side, dtype=torch.float64)  # (K, 2)
    count = len(controls)
    affine = torch.cat([torch.ones(count, 1, dtype=torch.float64), controls], dim=1)  # (K, 3)
    system = torch.zeros(count + 3, count + 3, dtype=torch.float64)
    system[:count, :count] = _tps_radial(torch.cdist(controls, controls).square())
    system[:count, count:], system[count:, :count] = affine, affine.T
    points = base_grid(height, width, dtype=torch.float64).reshape(-1, 2)  # (H·W, 2)
    basis = torch.cat(
        [_tps_radial(torch.cdist(points, controls).square()), torch.ones(len(points), 1, dtype=torch.float64), points],
        dim=1,
    )  # (H·W, K + 3)
    solution = (basis @ torch.linalg.inv(system))[:, :count]  # only Y's rows matter: the rest multiply zeros
    return solution.to(device, dtype)


def tps_grid(offsets: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, n², 2) control-point displacements -> (B, H, W, 2) source coordinates (see :func:`_tps_solution`)."""
    if offsets.ndim != 3 or offsets.shape[2] != 2 or math.isqrt(offsets.shape[1]) ** 2 != offsets.shape[1]:
        raise ConfigError(
            f"TPS θ must be (B, n², 2): displacements of an n×n grid of control points, got {tuple(offsets.shape)}."
        )
    height, width = _check_size(size)
    solution = _tps_solution(math.isqrt(offsets.shape[1]), height, width, offsets.device, offsets.dtype)
    moved = torch.einsum("pk,bkj->bpj", solution, offsets).reshape(-1, height, width, 2)
    return base_grid(height, width, offsets.device, offsets.dtype) + moved


# ---- samplers -----------------------------------------------------------------------------------------------------
def sample(images: torch.Tensor, grid: torch.Tensor, kernel: str = "bilinear", padding: str = "zeros") -> torch.Tensor:
    """Read (B, C, H_in, W_in) ``images`` at the (B, H, W, 2) source coordinates -> (B, C, H, W).

    ``kernel``: ``"bilinear"`` (eq. 5), ``"nearest"`` (the integer kernel, eq. 4: no gradient reaches the
    coordinates) or ``"bicubic"``. ``padding``: what points outside the input read: ``"zeros"`` (the paper's),
    ``"border"`` (the nearest edge pixel) or ``"reflection"``. On mean/std-normalised inputs zero is the data's
    mean (grey for MNIST), not its black background; ``"border"`` keeps a black border black.
    """
    if kernel not in SAMPLING:
        raise ConfigError(f"Unknown sampling kernel {kernel!r}; choose one of {', '.join(SAMPLING)}.")
    if padding not in PADDING:
        raise ConfigError(f"Unknown padding {padding!r}; choose one of {', '.join(PADDING)}.")
    return F.grid_sample(images, grid, mode=kernel, padding_mode=padding, align_corners=False)


def bilinear_kernel(distance: torch.Tensor) -> torch.Tensor:
    """k(d) = max(0, 1 − |d|): the paper's bilinear kernel (support: one pixel each side)."""
    return (1 - distance.abs()).clamp(min=0)


def separable_sample(
    images: torch.Tensor,
    grid: torch.Tensor,
    kernel: Callable[[torch.Tensor], torch.Tensor] = bilinear_kernel,
    support: int = 1,
) -> torch.Tensor:
    """The paper's eq. 3 for any separable kernel k with ``k(d) = 0`` for |d| ≥ ``support`` pixels.

    V_i = Σ_n Σ_m U_nm k(x_i − m) k(y_i − n), summed over the (2·support)² input pixels around each point (the
    others contribute zero), with zero padding outside the image. Differentiable wherever k is, through autograd.
    It is the readable reference; :func:`sample` (``grid_sample``) is the fast path for the built-in kernels.

    Args:
        images: (B, C, H_in, W_in).
        grid: (B, H, W, 2) normalised source coordinates (``align_corners=False``).
        kernel: k as a function of the signed distance in pixels.
        support: half-width of k's support in pixels (1 for bilinear, 2 for cubic kernels).
    """
    batch, channels, in_h, in_w = images.shape
    x = ((grid[..., 0] + 1) * in_w - 1) / 2  # (B, H, W) source x in pixels
    y = ((grid[..., 1] + 1) * in_h - 1) / 2
    x0, y0 = x.floor(), y.floor()
    flat = images.reshape(batch, channels, in_h * in_w)
    out = images.new_zeros(batch, channels, *x.shape[1:])
    for dy in range(1 - support, support + 1):
        row = y0 + dy
        weight_y = kernel(y - row)
        for dx in range(1 - support, support + 1):
            col = x0 + dx
            inside = (col >= 0) & (col < in_w) & (row >= 0) & (row < in_h)
            index = (row.clamp(0, in_h - 1) * in_w + col.clamp(0, in_w - 1)).long().reshape(batch, 1, -1)
            values = flat.gather(2, index.expand(-1, channels, -1)).reshape(out.shape)  # (B, C, H, W)
            weight = (kernel(x - col) * weight_y * inside).unsqueeze(1)  # (B, 1, H, W)
            out = out + values * weight
    return out


# ---- the module ---------------------------------------------------------------------------------------------------
def _full_precision(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast switched off where it is on (CUDA, CPU, MPS); nothing to do elsewhere (meta tensors, shape probes)."""
    if device_type in ("cuda", "cpu", "mps", "xpu") and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _last_linear_width(module: nn.Module) -> int | None:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


class SpatialTransformer(nn.Module):
    """Localisation network + grid generator + sampler, initialised to the identity transformation.

    Args:
        localisation: any module mapping the input (B, C, H, W) to a feature vector (B, F).
        transform: ``"affine"`` (6 parameters), ``"projective"`` (8) or ``"tps"`` (2·n² for n×n control points).
        output_size: (H, W) of the output (default: the input's size). Smaller than the input, it samples a
            zoomed window (the paper's RTS and cluttered experiments halve it).
        features: F, the localisation network's output width (default: the out_features of its last
            ``nn.Linear``).
        sampling: ``"bilinear"`` (learns), ``"nearest"`` (the integer kernel: θ gets no gradient) or ``"bicubic"``.
        padding: what the output shows where it reads outside the input: ``"zeros"`` (the paper's; the mean of
            normalised data), ``"border"`` or ``"reflection"`` (see :func:`sample`).
        tps_points: n, control points per side for ``"tps"`` (3 or 4 in the paper: 9 or 16 points).

    The regressor (``self.regressor``, a Linear F -> parameters) starts with zero weights and the identity as its
    bias, so an untrained transformer passes its input through unchanged. ``transform_params(x)`` gives θ as the
    regressor outputs it; ``grid(params, size)`` its sampling grid; the module works on any number of channels,
    anywhere in a network, several in a row or side by side.

    Example:
        >>> loc = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 32), nn.ReLU())
        >>> st = SpatialTransformer(loc, "affine")
        >>> x = torch.rand(2, 1, 28, 28)
        >>> torch.allclose(st(x), x, atol=1e-5)  # the identity at initialisation (to float32 rounding)
        True
    """

    def __init__(
        self,
        localisation: nn.Module,
        transform: str = "affine",
        output_size: tuple[int, int] | int | None = None,
        *,
        features: int | None = None,
        sampling: str = "bilinear",
        tps_points: int = 4,
        padding: str = "zeros",
    ):
        super().__init__()
        if padding not in PADDING:
            raise ConfigError(f"Unknown padding {padding!r}; choose one of {', '.join(PADDING)}.")
        self.padding = padding
        if transform not in (*TRANSFORMS, "tps"):
            raise ConfigError(f"Unknown transform {transform!r}; choose affine, projective or tps.")
        if sampling not in SAMPLING:
            raise ConfigError(f"Unknown sampling kernel {sampling!r}; choose one of {', '.join(SAMPLING)}.")
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        self.output_size = None if output_size is None else _check_size(tuple(output_size))
        features = features if features is not None else _last_linear_width(localisation)
        if features is None:
            raise ConfigError(
                "Cannot tell the localisation network's output width (it has no nn.Linear): pass features=F."
            )
        self.transform, self.sampling, self.tps_points = transform, sampling, tps_points
        identity = self.identity_params()
        self.localisation = localisation
        self.regressor = nn.Linear(features, len(identity))
        with torch.no_grad():
            self.regressor.weight.zero_()
            self.regressor.bias.copy_(identity)

    def identity_params(self) -> torch.Tensor:
        """(P,) the parameters of the identity transformation (what the regressor's bias starts at)."""
        if self.transform == "tps":
            return torch.zeros(2 * len(control_points(self.tps_points)))  # no control point moves
        return torch.eye(3)[: 2 if self.transform == "affine" else 3].flatten()[: TRANSFORMS[self.transform]]

    @property
    def num_params(self) -> int:
        return self.regressor.out_features

    def transform_params(self, x: torch.Tensor) -> torch.Tensor:
        """θ for each image: (B, C, H, W) -> (B, num_params), in float32 whatever autocast says."""
        features = self.localisation(x)  # under autocast, in its precision: it only has to point
        with _full_precision(x.device.type):
            return self.regressor(features.to(self.regressor.weight.dtype))

    def grid(self, params: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, num_params) -> (B, H, W, 2) source coordinates of an output of ``size``."""
        if params.ndim != 2 or params.shape[1] != self.num_params:
            raise ConfigError(
                f"A {self.transform} transformer takes {self.num_params} parameters per image, "
                f"got {tuple(params.shape)}."
            )
        if self.transform == "affine":
            return affine_grid(params.view(-1, 2, 3), size)
        if self.transform == "projective":
            matrix = torch.cat([params, torch.ones_like(params[:, :1])], dim=1).view(-1, 3, 3)  # h33 = 1
            return projective_grid(matrix, size)
        return tps_grid(params.view(len(params), -1, 2), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise InputSizeError(f"A spatial transformer takes (B, C, H, W) images, got shape {tuple(x.shape)}.")
        size = self.output_size or (x.shape[2], x.shape[3])
        params = self.transform_params(x)
        # θ, the grid and the sampling in float32 even under mixed precision: in bfloat16 the coordinates are
        # quantised to ~0.1 px and the identity is off by up to 6% of the pixel range.
        with _full_precision(x.device.type):
            wide = x.to(torch.promote_types(x.dtype, torch.float32))  # float16/bfloat16 -> float32; float64 stays
            out = sample(wide, self.grid(params.to(wide.dtype), size), self.sampling, self.padding)  # (B, C, h, w)
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        size = "input" if self.output_size is None else f"{self.output_size[0]}×{self.output_size[1]}"
        return f"transform={self.transform}, output={size}, sampling={self.sampling}, padding={self.padding}"
