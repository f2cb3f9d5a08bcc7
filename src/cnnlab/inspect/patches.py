"""The ``top-patches`` view (Zeiler & Fergus 2013, figure 2): for a unit, the dataset patches that excite it most.

Each image counts once per channel, with its strongest position in that channel's map; the patch is the
receptive field of that position (``ReceptiveField`` arithmetic along the layers), cropped from the image the
model saw (resized and padded; zero outside the image where the layers pad).

The dataset is streamed through the model in batches on the device, only up to the chosen layer, and a
running top-k per channel is kept with ``torch.topk`` on the device: no per-sample Python and one host sync
at the end. LeNet-5 on MNIST's 60,000 training images takes a few seconds on two CPU cores
(``cnnlab.bench.viz``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnlab.errors import ConfigError, DataError
from cnnlab.inspect.grid import new_figure, show_image, tile
from cnnlab.inspect.hooks import (
    check_channel,
    crop,
    field_notes,
    layer_geometry,
    resolve_layer,
    spatial_output,
    unit_box,
)
from cnnlab.layers import ReceptiveField

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cnnlab.data import Preprocessing


@dataclass
class TopPatches:
    """The k images (and their patches) that activate each chosen channel of a layer most.

    Attributes:
        layer: name as asked for; ``qualified``: module name.
        channels: the channels, one row each in the tensors below.
        values: (n, k) the activation (best position in the image), descending along k.
        indices: (n, k) index of the image in the dataset.
        positions: (n, k, 2) (row, column) of the unit in the layer's map.
        boxes: (n, k, 4) (top, left, bottom, right) of its receptive field in input pixels (bottom/right exclusive).
        patches: (n, k, C, s, s) uint8 crops of the model's input images (zero outside the image).
        receptive_field: the layer's field.
        images_seen: how many images were streamed; ``seconds``: how long it took.
        notes: caveats about the receptive field (see :func:`cnnlab.inspect.hooks.field_notes`).
    """

    layer: str
    qualified: str
    channels: list[int]
    values: torch.Tensor
    indices: torch.Tensor
    positions: torch.Tensor
    boxes: torch.Tensor
    patches: torch.Tensor
    receptive_field: ReceptiveField
    images_seen: int
    seconds: float
    notes: list[str] = field(default_factory=list)


@torch.inference_mode()
def top_patches(
    model: nn.Module,
    images: torch.Tensor,
    preprocessing: Preprocessing,
    layer: str,
    channels: Sequence[int] | None = None,
    *,
    k: int = 9,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> TopPatches:
    """Stream ``images`` through ``model`` up to ``layer`` and keep, per channel, the ``k`` strongest images.

    Args:
        model: a model in eval mode.
        images: uint8 (N, C, H, W) already fitted to the model's input (``preprocessing.fit``).
        preprocessing: normalisation applied per batch on the device.
        layer: qualified or stage name of a layer with a feature-map output.
        channels: channels to rank images for (default: all of the layer's channels).
        k: images per channel (fewer if the dataset is smaller).
        batch_size: images per forward pass (on 2 busy CPU threads 1024 was 1.5–2.5× faster than 256 for
            LeNet-5: fewer thread synchronisations per image; on 1 thread 256 was faster).
        device: where to run (default: the model's device).

    Raises:
        UnknownNameError, ConfigError: bad layer, channels, k or batch size. DataError: images that are not uint8
        (N, C, H, W) or that do not have the preprocessing's size.
    """
    from cnnlab.data import DeviceTensorLoader  # late: torchvision's import is slow and most commands skip it

    if images.dtype != torch.uint8 or images.ndim != 4 or len(images) == 0:
        raise DataError(
            f"Images must be a non-empty uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}."
        )
    if tuple(images.shape[1:]) != tuple(preprocessing.input_size):
        raise DataError(
            f"Images are {tuple(images.shape[1:])} but the model takes {preprocessing.input_size}; fit them first "
            "with preprocessing.to_stored_size(images)."
        )
    if k < 1:
        raise ConfigError(f"k (images per unit) must be a positive integer, got {k}.")
    qualified, _ = resolve_layer(model, layer)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    started = time.perf_counter()
    k = min(k, len(images))
    labels = torch.zeros(len(images), dtype=torch.long)  # the loader wants labels; patches need none
    loader = DeviceTensorLoader(images, labels, preprocessing, batch_size, device=device)
    best_vals = best_idx = best_pos = None
    chosen: torch.Tensor | None = None
    offset = 0
    for batch, _ in loader.batches():
        maps = spatial_output(model, batch, layer)  # (B, C, h, w), only the layers up to `layer` run
        if chosen is None:  # first batch: validate channels, allocate the running top-k
            channels = list(range(maps.shape[1])) if channels is None else [int(c) for c in channels]
            for channel in channels:
                check_channel(layer, channel, maps.shape[1])
            chosen = torch.tensor(channels, device=device)
            n = len(channels)
            best_vals = torch.full((n, k), float("-inf"), device=device)
            best_idx = torch.full((n, k), -1, dtype=torch.long, device=device)
            best_pos = torch.full((n, k), -1, dtype=torch.long, device=device)
        strongest, where = maps.index_select(1, chosen).flatten(2).max(dim=2)  # (B, n) value and flat position
        b = strongest.shape[0]
        ids = torch.arange(offset, offset + b, device=device).expand(len(channels), b)
        cand_vals = torch.cat([best_vals, strongest.T.float()], dim=1)  # (n, k + B)
        top = cand_vals.topk(k, dim=1)
        best_vals = top.values
        best_idx = torch.cat([best_idx, ids], dim=1).gather(1, top.indices)
        best_pos = torch.cat([best_pos, where.T], dim=1).gather(1, top.indices)
        offset += b
    map_width = maps.shape[3]
    values, indices, flat = best_vals.cpu(), best_idx.cpu(), best_pos.cpu()  # the one sync
    geometry = layer_geometry(model, tuple(images.shape[1:]), layer)
    rf = geometry.receptive_field
    if rf is None:
        from cnnlab.layers import SpatialTransformer

        if any(isinstance(m, SpatialTransformer) for m in model.modules()):
            raise ConfigError(
                f"Layer {layer!r} sits behind a spatial transformer, so its units have no fixed receptive field in "
                "the input (the pixels they read move with θ, image by image): top patches cannot be cut out. Use "
                "`cnnlab viz transformer` to see where the transformer looks, or deconv / occlusion for one image."
            )
        raise ConfigError(f"Layer {layer!r} has no receptive field (its input was flattened); choose an earlier layer.")
    positions = torch.stack([flat // map_width, flat % map_width], dim=-1)  # (n, k, 2)
    boxes = torch.tensor(
        [[unit_box(rf, int(r), int(c)) for r, c in row.tolist()] for row in positions], dtype=torch.long
    ).view(len(channels), k, 4)
    patches = torch.stack(
        [
            torch.stack([crop(images[int(i)], tuple(box.tolist())) for i, box in zip(idx_row, box_row, strict=True)])
            for idx_row, box_row in zip(indices, boxes, strict=True)
        ]
    )  # (n, k, C, s, s): n·k crops, a small Python loop after the streaming
    return TopPatches(
        layer,
        qualified,
        list(channels),
        values,
        indices,
        positions,
        boxes,
        patches,
        rf,
        offset,
        time.perf_counter() - started,
        field_notes(geometry),
    )


def render_top_patches(result: TopPatches, max_units: int = 16, ncols: int = 4, title: str = "") -> Figure:
    """One 3×3 block of patches per unit (strongest first, row by row), up to ``max_units`` units."""
    units = min(max_units, len(result.channels))
    nrows = -(-units // ncols)
    fig = new_figure(2.4 * min(ncols, units), 2.5 * nrows + 0.4)
    axes = fig.subplots(nrows, min(ncols, units), squeeze=False)
    side = max(1, round(result.patches.shape[1] ** 0.5))
    for i, ax in enumerate(axes.flat):
        if i >= units:
            ax.axis("off")
            continue
        block = tile(result.patches[i].float() / 255, ncols=side, pad=1, fill=1.0)
        best, last = float(result.values[i, 0]), float(result.values[i, -1])
        tied = " (never active: order arbitrary)" if best == last and best <= 0 else ""
        show_image(ax, block, f"ch {result.channels[i]}: max {best:.3g}{tied}")
    size = result.receptive_field.size
    fig.suptitle(
        title
        or f"top {result.patches.shape[1]} patches ({size}×{size} receptive field) of {result.qualified}, "
        f"{result.images_seen:,} images in {result.seconds:.1f} s",
        fontsize=10,
    )
    return fig
