"""A PNG grid of augmented samples: `cnnlab data preview`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torchvision.utils import make_grid

from cnnlab.data.augment import AugmentContext, build_augmentation, pca_lighting_from
from cnnlab.data.datasets import ImageDataset
from cnnlab.data.loader import apply_augmentation
from cnnlab.data.preprocessing import Preprocessing
from cnnlab.outputs import write_picture

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
    for d in range(draws):
        out = (
            images
            if augment is None
            else apply_augmentation(augment, images, torch.Generator().manual_seed(seed * 1000 + d))
        )
        out = pre.center_crop(out)
        rows.append((out.float() / 255 if not out.is_floating_point() else out).clamp(0, 1))
    grid = torch.cat(rows)  # (count·(draws+1), C, h, w)
    scale = max(1, 96 // grid.shape[-1])
    if scale > 1:
        grid = torch.nn.functional.interpolate(grid, scale_factor=scale, mode="nearest")
    pad = 2
    picture = make_grid(grid, nrow=count, padding=pad, pad_value=1.0)  # (C, H, W): rows of `count` tiles
    labels = ["as stored"] + [f"augmented draw {d + 1}" for d in range(draws)]
    title = f"{dataset.name}: {count} training image{'s' if count > 1 else ''}\n--augment {spec}"
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
