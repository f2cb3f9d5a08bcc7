"""The ``activations`` view: what chosen layers output for one input, every channel as a tile.

All channels of a layer share one colour scale (its min and max are in the caption), so a weak or dead
channel looks weak or dead instead of being stretched to full contrast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.inspect.grid import new_figure, show_image, tile
from cnnlab.inspect.hooks import layer_outputs, model_stages, resolve_layer

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class ActivationMap:
    """One layer's output for one image.

    Attributes:
        layer: name as asked for; ``qualified``: module name.
        values: (C, h, w) feature maps, or (n,) for a layer without spatial layout; on the CPU.
    """

    layer: str
    qualified: str
    values: torch.Tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)


def default_layers(model: nn.Module) -> list[str]:
    """The model's stages (cnnlab contract); without stages, there is no good default."""
    stages = list(model_stages(model))
    if not stages:
        raise ConfigError("This model has no named stages; choose layers explicitly (qualified module names).")
    return stages


@torch.no_grad()
def activations(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None) -> list[ActivationMap]:
    """Outputs of ``layers`` (default: every stage) for one normalised input ``x`` (C, H, W).

    Raises:
        UnknownNameError: a name that is not a layer (the valid names are listed).
    """
    layers = list(layers) if layers else default_layers(model)
    outputs = layer_outputs(model, x.unsqueeze(0), layers)
    return [
        ActivationMap(name, resolve_layer(model, name)[0], outputs[name][0].detach().float().cpu()) for name in layers
    ]


def render_activations(
    maps: Sequence[ActivationMap], image: torch.Tensor | None = None, max_channels: int = 64, title: str = ""
) -> Figure:
    """One row per layer: its channels tiled (at most ``max_channels``), shape and value range in the caption.

    Args:
        maps: from :func:`activations`.
        image: the input in [0, 1] (C, H, W), drawn first if given.
        max_channels: channels shown per layer (the first ones); the caption says how many were left out.
        title: figure title.
    """
    panels = []  # (grid (H, W) with NaN gaps, caption, value range)
    for amap in maps:
        values = amap.values
        if values.ndim == 1:  # a vector (fully connected layer): one cell per unit
            values = values.view(-1, 1, 1)
        elif values.ndim != 3:
            values = values.reshape(values.shape[0], 1, -1)
        shown = values[:max_channels]
        low, high = float(values.min()), float(values.max())
        ncols = min(shown.shape[0], 64 if values.shape[1:] == (1, 1) else 16)
        grid = tile(shown.unsqueeze(1), ncols=ncols, pad=1)[0]
        left_out = f", first {shown.shape[0]} of {values.shape[0]} channels" if shown.shape[0] < values.shape[0] else ""
        name = amap.layer if amap.layer == amap.qualified else f"{amap.layer} ({amap.qualified})"
        caption = f"{name}: {'×'.join(map(str, amap.shape))}{left_out}; range [{low:.3g}, {high:.3g}]"
        panels.append((grid, caption, low, high))
    width = 7.0
    heights = [width * g.shape[0] / g.shape[1] for g, *_ in panels]
    if image is not None:
        heights.insert(0, 2.0)
    fig = new_figure(width, sum(heights) + 0.35 * len(heights) + (0.3 if title else 0))
    axes = fig.subplots(len(heights), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    if image is not None:
        show_image(axes[0], image, "input " + "×".join(map(str, image.shape)))
        axes = axes[1:]
    cmap = _grey_with_white_gaps()
    for ax, (grid, caption, low, high) in zip(axes, panels, strict=True):
        ax.imshow(grid.numpy(), cmap=cmap, vmin=low, vmax=high if high > low else low + 1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(caption, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _grey_with_white_gaps():
    import matplotlib

    return matplotlib.colormaps["gray"].with_extremes(bad="white")  # the NaN gaps between tiles are white
