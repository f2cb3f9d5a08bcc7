"""A PNG grid of augmented samples: `cnnlab data preview`."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from cnnlab.data.augment import AugmentContext, build_augmentation, pca_lighting_from
from cnnlab.data.datasets import ImageDataset
from cnnlab.data.loader import apply_augmentation
from cnnlab.data.preprocessing import Preprocessing


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
    """Row 1: ``count`` training images as stored; rows 2..: ``draws`` augmented versions of each.

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(grid, nrow=count, padding=2, pad_value=1.0), path)
    return path
