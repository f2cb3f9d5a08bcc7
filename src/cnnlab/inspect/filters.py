"""The ``filters`` view: a layer's convolution kernels, exactly as they are.

First-layer kernels (1 or 3 input channels) are pictures in input space: each becomes one tile, grey or RGB,
min–max scaled (per kernel by default, so each tile uses the full range; ``scale="all"`` shares one range so
tiles compare). Deeper kernels mix many input maps and have no picture; the view shows the L2 norm of every
(output map, input map) kernel as a heat map instead, which also makes connection tables (LeNet-5's C3) and
dead maps visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.inspect.grid import minmax, new_figure, tile, to_pil
from cnnlab.inspect.hooks import resolve_layer

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL.Image import Image

SCALES = ("each", "all")
MODES = ("auto", "tiles", "norms")


@dataclass
class FilterView:
    """A layer's kernels and how the view draws them.

    Attributes:
        layer: the layer's name as asked for; ``qualified``: its module name.
        kernels: (O, I, k, k) kernels, exact values on the CPU (dense for connection-table convolutions).
        norms: (O, I) L2 norm of each k×k kernel.
        mode: "rgb" or "grey" (tiles in input space) or "norms" (heat map of ``norms``).
        scale: "each" (each tile min–max scaled on its own) or "all" (one min–max over the layer).
        tiles: (N, C, k, k) in [0, 1], what each tile shows (None in "norms" mode).
        grid: (C, H, W) the tiles laid out by :func:`cnnlab.inspect.grid.tile` (NaN between tiles).
        ncols: tiles per grid row.
    """

    layer: str
    qualified: str
    kernels: torch.Tensor
    norms: torch.Tensor
    mode: str
    scale: str
    tiles: torch.Tensor | None
    grid: torch.Tensor | None
    ncols: int


def conv_kernels(module: nn.Module) -> torch.Tensor | None:
    """(O, I, k, k) kernels of a convolution-like module, or None. Grouped convolutions give (O, I/groups, k, k)."""
    dense = getattr(module, "dense_weight", None)  # ConnectionTableConv2d and other sparse convolutions
    if callable(dense):
        return dense().detach()
    if isinstance(module, nn.Conv2d):
        return module.weight.detach()
    return None


def kernel_layers(model: nn.Module) -> list[str]:
    """Qualified names of the layers with 2-D kernels, in registration order."""
    return [name for name, module in model.named_modules() if name and conv_kernels(module) is not None]


@torch.no_grad()
def filters(model: nn.Module, layer: str | None = None, *, scale: str = "each", mode: str = "auto") -> FilterView:
    """The kernels of ``layer`` (default: the first convolution) prepared for display.

    Args:
        model: any module.
        layer: qualified or stage name; a stage means its first convolution.
        scale: "each" or "all" (see :class:`FilterView`).
        mode: "auto" (tiles for 1 or 3 input channels, else norms), "tiles" (one grey tile per (output, input)
            kernel, a row per output map) or "norms".

    Raises:
        UnknownNameError: no such layer. ConfigError: the layer has no kernels, or a bad ``scale``/``mode``.
    """
    if scale not in SCALES:
        raise ConfigError(f"Filter scale {scale!r} is not one of {', '.join(SCALES)}.")
    if mode not in MODES:
        raise ConfigError(f"Filter mode {mode!r} is not one of {', '.join(MODES)}.")
    candidates = kernel_layers(model)
    if not candidates:
        raise ConfigError("The model has no convolution layers, so there are no kernels to show.")
    if layer is None:
        qualified, module = candidates[0], dict(model.named_modules())[candidates[0]]
        layer = qualified
    else:
        qualified, module = resolve_layer(model, layer)
        if conv_kernels(module) is None:
            inside = [c for c in candidates if c.startswith(qualified + ".")]
            if not inside:
                raise ConfigError(
                    f"Layer {layer!r} ({type(module).__name__}) has no convolution kernels. Layers with kernels: "
                    f"{', '.join(candidates)}."
                )
            qualified, module = inside[0], dict(model.named_modules())[inside[0]]
    kernels = conv_kernels(module).float().cpu()  # type: ignore[union-attr]
    out_maps, in_maps, kh, kw = kernels.shape
    norms = kernels.flatten(2).norm(dim=2)  # (O, I)
    if mode == "norms" or (mode == "auto" and in_maps not in (1, 3)):
        return FilterView(layer, qualified, kernels, norms, "norms", scale, None, None, in_maps)
    if in_maps in (1, 3) and mode == "auto":
        tiles, shown, ncols = kernels, ("rgb" if in_maps == 3 else "grey"), None
    else:  # every (output, input) kernel on its own, one output map per row
        tiles, shown, ncols = kernels.reshape(out_maps * in_maps, 1, kh, kw), "grey", in_maps
    tiles = minmax(tiles, dims=(1, 2, 3)) if scale == "each" else minmax(tiles)
    ncols = ncols or max(1, math.ceil(math.sqrt(tiles.shape[0])))
    return FilterView(layer, qualified, kernels, norms, shown, scale, tiles, tile(tiles, ncols), ncols)


def render_filters(view: FilterView, max_side: int = 600) -> Figure | Image:
    """Tiles: a pixel-exact Pillow image (each kernel tap a square block); norms: a matplotlib heat map."""
    if view.grid is not None:
        upscale = max(1, max_side // max(view.grid.shape[1:]))
        return to_pil(view.grid, upscale=upscale)
    out_maps, in_maps = view.norms.shape
    fig = new_figure(min(10, 2.5 + 0.25 * in_maps), min(7, 1.5 + 0.22 * out_maps))
    ax = fig.add_subplot()
    im = ax.imshow(view.norms.numpy(), cmap="viridis", interpolation="nearest", aspect="auto")
    k = view.kernels.shape[-1]
    ax.set(xlabel="input map", ylabel="output map")
    ax.set_title(f"{view.qualified}: L2 norm of each {k}×{k} kernel ({out_maps}×{in_maps})", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig
