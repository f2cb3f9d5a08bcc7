"""Batched data augmentation on the device, with per-sample randomness from a seeded generator.

Each augmentation is a callable ``aug(images, generator) -> images`` on float images in [0, 1] of shape
(B, C, H, W), applied before mean/std normalisation. Random parameters are drawn on the CPU from
``generator`` (one small (B,) draw per parameter) and the pixel work runs on the images' device, so there is
no per-sample Python and the result is the same on every device for the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnlab.errors import UnknownNameError

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(generator: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (high - low) + low


@dataclass(frozen=True)
class RandomAffine:
    """LeCun et al.'s "distortions" (1998, section V.B): random planar affine maps, one per image.

    Attributes:
        translate: largest shift, as a fraction of the image side (0.0625 = 2 px of 32), each axis.
        scale: largest relative change of size (0.1 = ×0.9 to ×1.1).
        squeeze: largest relative horizontal compression with equal vertical elongation, or the reverse.
        shear: largest horizontal shear (x += shear·y).
        rotate: largest rotation in degrees (0 in the paper's list).

    The ranges are ours: the paper lists the kinds of transformation but not their ranges.
    Pixels moved in from outside the image are 0 (black).
    """

    translate: float = 0.0625
    scale: float = 0.1
    squeeze: float = 0.1
    shear: float = 0.15
    rotate: float = 0.0

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = images.shape[0]
        scale = _uniform(generator, n, 1 - self.scale, 1 + self.scale)
        squeeze = _uniform(generator, n, 1 - self.squeeze, 1 + self.squeeze)
        shear = _uniform(generator, n, -self.shear, self.shear)
        angle = _uniform(generator, n, -self.rotate, self.rotate) * (math.pi / 180)
        shift = _uniform(generator, 2 * n, -self.translate, self.translate).view(n, 2) * 2  # grid units: side = 2
        sx, sy = scale * squeeze, scale / squeeze
        cos, sin = torch.cos(angle), torch.sin(angle)
        # Forward map A = R·Sh·S (output = A·input + t); grid_sample wants the inverse, output -> input.
        forward = torch.stack(
            [
                torch.stack([cos * sx, (cos * shear - sin) * sy], 1),
                torch.stack([sin * sx, (sin * shear + cos) * sy], 1),
            ],
            1,
        )  # (n, 2, 2)
        inverse = torch.linalg.inv(forward)
        theta = torch.cat([inverse, -(inverse @ shift.unsqueeze(2))], dim=2)  # (n, 2, 3)
        theta = theta.to(images.device, images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


PRESETS: dict[str, Augmentation | None] = {
    "none": None,
    "lenet-distortions": RandomAffine(),
}


def get_augmentation(name: str) -> Augmentation | None:
    """An augmentation preset by name (``none``, ``lenet-distortions``)."""
    if name not in PRESETS:
        raise UnknownNameError("augmentation preset", name, PRESETS)
    return PRESETS[name]
