"""A PNG grid of augmented samples, with their boxes for detection datasets: `cnnlab data preview`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torchvision.utils import make_grid

from cnnlab.data.augment import AugmentContext, build_augmentation, pca_lighting_from
from cnnlab.data.datasets import ImageDataset
from cnnlab.data.detection import DetectionDataset
from cnnlab.data.loader import apply_augmentation
from cnnlab.data.preprocessing import Preprocessing
from cnnlab.outputs import write_picture

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def shows_redraws(dataset: ImageDataset, spec: str) -> bool:
    """True where the preview's rows 2.. are ``--redraw`` draws: a generated set with nothing to augment."""
    return spec == "none" and hasattr(dataset.train, "redrawn")


def preview_grid(
    dataset: ImageDataset,
    spec: str,
    path: str | Path,
    *,
    count: int = 8,
    draws: int = 3,
    seed: int = 0,
    size: int | None = None,
) -> Path:
    """Write :func:`preview_figure` to ``path`` (any image format Pillow writes); returns the path."""
    return write_picture(preview_figure(dataset, spec, count=count, draws=draws, seed=seed, size=size), path)


def preview_figure(
    dataset: ImageDataset, spec: str, *, count: int = 8, draws: int = 3, seed: int = 0, size: int | None = None
) -> Figure:
    """Row 1: ``count`` training images as stored; rows 2..: ``draws`` augmented versions of each. Each row is
    labelled ("as stored", "augmented draw 1"...) and the figure is titled with the dataset and the augmentation.

    Photo collections are shown at a stored side of 256 cropped to 224 (or ``size``); small images are
    enlarged (nearest neighbour) so a 28×28 digit stays visible.
    """
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(dataset.train), generator=generator)[:count]
    c = dataset.image_shape[0]
    if dataset.streaming:
        crop = (size or 224, size or 224)
        side = round(crop[0] * 256 / 224)
        pre = Preprocessing(c, (side, side), 0, (0.0,) * c, (1.0,) * c, keep_aspect=True, crop=crop)
        decoded = [pre.decode_file(dataset.train.paths[i]).unsqueeze(0) for i in pick.tolist()]
        images = torch.stack([pre.to_stored_size(image)[0] for image in decoded])
    else:
        images = dataset.train.images[pick]
        h, w = images.shape[-2:]
        pre = Preprocessing(c, (h, w), 0, (0.0,) * c, (1.0,) * c)
    ctx = AugmentContext(pre.stored_size, pre.input_size[1:], c, lambda: pca_lighting_from(images))
    augment = build_augmentation(spec, ctx)
    rows = [pre.center_crop(images).float() / 255]
    redraws = shows_redraws(dataset, spec)  # then the rows show what `--redraw` trains on: the same digits redrawn
    for d in range(draws):
        if redraws:
            out = dataset.train.select(pick).redrawn(seed, d + 1).images
        elif augment is None:
            out = images
        else:
            out = apply_augmentation(augment, images, torch.Generator().manual_seed(seed * 1000 + d))
        out = pre.center_crop(out)
        rows.append((out.float() / 255 if not out.is_floating_point() else out).clamp(0, 1))
    grid = torch.cat(rows)  # (count·(draws+1), C, h, w)
    if c not in (1, 3):  # neither grey nor colour (MNIST addition's two digits): the channels side by side
        separator = torch.full((grid.shape[0], 1, grid.shape[2], 1), 0.5)  # grey: the grid between images is white
        parts = [part for i in range(c) for part in (grid[:, i : i + 1], separator)]
        grid = torch.cat(parts[:-1], dim=3)  # (n, 1, h, c·w + c − 1)
    scale = max(1, 96 // grid.shape[-1])
    if scale > 1:
        grid = torch.nn.functional.interpolate(grid, scale_factor=scale, mode="nearest")
    pad = 2
    picture = make_grid(grid, nrow=count, padding=pad, pad_value=1.0)  # (C, H, W): rows of `count` tiles
    if redraws:
        labels = ["as stored (epoch 1)"] + [f"--redraw, epoch {d + 2}" for d in range(draws)]
    else:
        labels = ["as stored"] + [f"augmented draw {d + 1}" for d in range(draws)]
    title = f"{dataset.name}: {count} training image{'s' if count > 1 else ''}\n--augment {spec}"
    if redraws:
        title = f"{dataset.name}: {count} training digits, as stored and drawn afresh (cnnlab train --redraw)"
    return _labelled(picture, labels, grid.shape[-2] + pad, pad, title)


def _labelled(picture: torch.Tensor, labels: list[str], row_step: int, pad: int, title: str) -> Figure:
    """The grid ``picture`` (C, H, W) at one figure pixel per image pixel, each row named on the left."""
    from matplotlib.figure import Figure

    _, height, width = picture.shape
    dpi = 100
    margin_left, margin_top = 1.5, 0.6  # inches: the row labels, the title
    fig = Figure(figsize=(width / dpi + margin_left + 0.3, height / dpi + margin_top + 0.1), dpi=dpi)
    ax = fig.add_axes(
        (margin_left / fig.get_figwidth(), 0.1 / fig.get_figheight(), width / dpi / fig.get_figwidth(),
         height / dpi / fig.get_figheight())
    )  # fmt: skip
    image = picture.permute(1, 2, 0).numpy()
    ax.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([pad + row_step * i + (row_step - pad) / 2 for i in range(len(labels))], labels, fontsize=9)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.suptitle(title, x=0.5, y=1 - 0.05 / fig.get_figheight(), va="top", fontsize=10)
    return fig


def detection_preview_grid(
    dataset: DetectionDataset, spec: str, path: str | Path, *, count: int = 8, draws: int = 3, seed: int = 0
) -> Path:
    """Write :func:`detection_preview_figure` to ``path`` (any image format Pillow writes); returns the path."""
    return write_picture(detection_preview_figure(dataset, spec, count=count, draws=draws, seed=seed), path)


def detection_preview_figure(
    dataset: DetectionDataset, spec: str = "none", *, count: int = 8, draws: int = 3, seed: int = 0
) -> Figure:
    """Row 1: ``count`` training images with their boxes and class names; rows 2..: ``draws`` augmented
    versions (``spec``, the boxes moved with the pixels; boxes pushed out are gone), none when ``spec`` is
    "none". One colour per class."""
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    pick = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(seed))[:count]
    images, targets = dataset.train.images[pick], dataset.train.targets[pick]
    c, h, w = images.shape[1:]
    augment = build_augmentation(spec, AugmentContext((h, w), (h, w), c, lambda: pca_lighting_from(images)))
    rows, boxes = [images.float() / 255], [targets]
    for d in range(draws if augment is not None else 0):
        out, moved = apply_augmentation(augment, images, torch.Generator().manual_seed(seed * 1000 + d), targets)
        rows.append((out.float() / 255 if not out.is_floating_point() else out).clamp(0, 1))
        boxes.append(moved)
    grid = torch.cat(rows)  # (count·rows, C, H, W)
    scale = max(1, 96 // max(h, w))  # small images enlarged so their boxes and names stay readable
    if scale > 1:
        grid = torch.nn.functional.interpolate(grid, scale_factor=scale, mode="nearest")
    pad = 2
    picture = make_grid(grid, nrow=len(pick), padding=pad, pad_value=1.0)
    labels = ["as stored"] + [f"augmented draw {d + 1}" for d in range(len(rows) - 1)]
    plural = "s" if len(pick) > 1 else ""
    title = f"{dataset.name}: {len(pick)} training image{plural} with their boxes" + (
        f"\n--augment {spec}" if augment is not None else ""
    )
    fig = _labelled(picture, labels, h * scale + pad, pad, title)
    ax, colours = fig.axes[0], colormaps["tab10"]
    for r, row_targets in enumerate(boxes):
        for i, (box, label) in enumerate(row_targets.to_lists()):
            left, top = pad + i * (w * scale + pad), pad + r * (h * scale + pad)  # the tile's corner in the grid
            for (x1, y1, x2, y2), k in zip((box * scale).tolist(), label.tolist(), strict=True):
                colour = colours(k % 10)
                ax.add_patch(Rectangle((left + x1 - 0.5, top + y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                       edgecolor=colour, linewidth=1))  # fmt: skip  # edges: imshow's pixel centres
                ax.text(left + x1, top + y1 - 1, dataset.classes[k], color=colour, fontsize=6, va="bottom")
    return fig
