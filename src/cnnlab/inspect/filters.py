"""The ``filters`` view: a layer's convolution kernels, exactly as they are.

First-layer kernels (1 or 3 input channels) are pictures in input space: each becomes one tile, grey or RGB,
min–max scaled (per kernel by default, so each tile uses the full range; ``scale="all"`` shares one range so
tiles compare). Deeper kernels mix many input maps and have no picture; the view shows the L2 norm of every
(output map, input map) kernel as a heat map instead, which also makes connection tables (LeNet-5's C3) and
dead maps visible. Every figure is titled (model, layer), numbers the filters on its axes and has a colour bar
that says what the colours mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.inspect.grid import minmax, new_figure, tile
from cnnlab.inspect.hooks import resolve_layer

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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


def render_filters(view: FilterView, max_side: int = 600, title: str | None = None) -> Figure:
    """A titled figure of the kernels: tiles (or the norms heat map) with filter indices on the axes and a colour
    bar that says what the colours mean.

    Tiles are drawn with nearest-neighbour interpolation from ``view.grid`` itself (each kernel tap a square
    block), so the picture shows exactly the scaled weights; ``view.tiles`` holds the same values as numbers.

    Args:
        view: what :func:`filters` returned.
        max_side: about the picture's width in pixels (at 100 dpi).
        title: the figure's title (default: the layer name); callers prefix the model's name.
    """
    o, i, kh, kw = view.kernels.shape
    heading = title or view.qualified
    if view.grid is None:
        return _render_norms(view, heading)
    grid = view.grid
    c, height, width = grid.shape
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    grid_w = max(3.0, max_side / 100)
    grid_h = grid_w * height / width
    if grid_h > 9:  # a tall grid (one row per output map): keep the page readable
        grid_w, grid_h = grid_w * 9 / grid_h, 9.0
    fig = new_figure(grid_w + 1.6, max(2.4, grid_h + 1.0))
    ax = fig.add_subplot()
    if c == 1:  # NaN between tiles: drawn as the white background
        ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(torch.nan_to_num(grid, nan=1.0).permute(1, 2, 0).numpy(), interpolation="nearest")
    # Filter indices: tile centres on the axes; the tile in row r, column c is filter r·ncols + c.
    rows = -(-(view.tiles.shape[0]) // view.ncols)  # type: ignore[union-attr]
    step_x, step_y = kw + 1, kh + 1
    xs = [1 + col * step_x + (kw - 1) / 2 for col in range(view.ncols)]
    ys = [1 + row * step_y + (kh - 1) / 2 for row in range(rows)]
    every_x = max(1, -(-view.ncols // 16))  # at most ~16 labels per axis
    every_y = max(1, -(-rows // 16))
    ax.set_xticks(xs[::every_x], [str(col) for col in range(0, view.ncols, every_x)], fontsize=7)
    ax.set_yticks(ys[::every_y], [str(row * view.ncols) for row in range(0, rows, every_y)], fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if view.kernels.shape[1] > 1 and view.mode == "grey":  # "tiles" mode: one row per output map
        ax.set(xlabel="input map", ylabel="output map")
        ax.set_yticks(ys[::every_y], [str(row) for row in range(0, rows, every_y)], fontsize=7)
    else:
        ax.set(xlabel="filter index = row label + column label")
    channel = "each colour channel's " if view.mode == "rgb" else ""
    if view.scale == "all":  # one range for the layer: the bar reads in weight units
        low, high = float(view.kernels.min()), float(view.kernels.max())
        bar = fig.colorbar(ScalarMappable(Normalize(low, high), cmap="gray"), ax=ax, shrink=0.8)
        bar.set_label(f"{channel}weight (one scale for the layer)", fontsize=8)
    else:  # every kernel stretched to its own range: black is its smallest weight, white its largest
        bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap="gray"), ax=ax, shrink=0.8, ticks=[0, 0.5, 1])
        bar.ax.set_yticklabels(["min", "mid", "max"])
        bar.set_label(f"{channel}weight, scaled per kernel: its min to its max", fontsize=8)
    fig.suptitle(f"{heading}: {o} kernels of {i}×{kh}×{kw}", fontsize=10)
    return fig


def _render_norms(view: FilterView, heading: str) -> Figure:
    out_maps, in_maps = view.norms.shape
    fig = new_figure(min(10, 2.5 + 0.25 * in_maps), min(7, 1.5 + 0.22 * out_maps))
    ax = fig.add_subplot()
    im = ax.imshow(view.norms.numpy(), cmap="viridis", interpolation="nearest", aspect="auto")
    k = view.kernels.shape[-1]
    ax.set(xlabel="input map (index)", ylabel="output map (filter index)")
    ax.set_title(f"{heading}\nL2 norm of each {k}×{k} kernel ({out_maps}×{in_maps})", fontsize=9)
    bar = fig.colorbar(im, ax=ax, shrink=0.8)
    bar.set_label(f"L2 norm of the {k}×{k} kernel (0 = no connection)", fontsize=7)
    return fig
