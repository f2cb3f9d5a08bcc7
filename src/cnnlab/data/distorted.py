"""Distorted MNIST: the datasets of the spatial transformer paper (Jaderberg et al. 2015, section 4.1), generated
deterministically from the local MNIST files.

Each image of MNIST's train split gives one training image and each image of its test split one test image (labels
kept), distorted with draws from a fixed seed, so the same torch build gives the same tensors every time (other
versions or processors may differ in the last bit of an interpolation); nothing is downloaded or cached. Generation
runs in batches through ``grid_sample`` (2 CPU cores: about 1–3 s per set). The training split is a
:class:`RedrawableImageSet`: it keeps the undistorted digits, so ``cnnlab train --redraw`` can distort them afresh
every epoch.

- ``mnist-rotated`` (R): rotated by an angle uniform in ±90°; 28×28.
- ``mnist-rts`` (RTS): rotated ±45°, scaled by a factor uniform in 0.7–1.2, and placed at a random position of a
  42×42 canvas such that the scaled 28×28 box, before rotation, stays inside (the rotation can push a corner of
  the ink out: 0.8% of the test images touch the canvas's edge).
- ``mnist-projective`` (P): a projective distortion: the digit is scaled by 0.75 and its four corners moved by
  Gaussian noise (σ = 0.1 of the half-width, as we read the paper's "random Gaussian noise"); 28×28.
- ``mnist-elastic`` (E): Simard et al.'s elastic distortion (2003): a displacement field uniform in ±1 px,
  smoothed by a Gaussian of σ = 4 px and scaled by α = 34 px (Simard's values); 28×28.
- ``mnist-cluttered`` (translated and cluttered): the digit at a random position of a 60×60 canvas with six 6×6
  crops of other digits of the same split at random positions (the paper's TC set: "clutter"), each crop taken
  where it overlaps its donor's ink (not from the empty margin).

The transformations are the spatial transformer's own grid generators (:mod:`cnnlab.layers.spatial_transformer`),
so a distortion and the transformer that learns to undo it use one definition of coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnlab.data.datasets import ImageDataset, ImageSet, load_dataset, register_dataset
from cnnlab.layers.spatial_transformer import affine_grid, projective_grid, sample

GENERATION_SEED = 2015  # the paper's year; the dataset never depends on a training run's --seed
CHUNK = 8192  # images per grid_sample call: bounds the float32 working memory (~60 MB at 42×42)


def _to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255)


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.mul(255).round_().clamp_(0, 255).to(torch.uint8)


def _pad_to(images: torch.Tensor, side: int) -> torch.Tensor:
    """Centre (N, 1, 28, 28) digits on a zero canvas of ``side``×``side``."""
    margin = side - images.shape[-1]
    before = margin // 2
    return F.pad(images, (before, margin - before, before, margin - before))


def _rotation_scale(angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """θ (N, 2, 3) sampling a digit rotated by ``angle`` (radians), scaled by ``scale`` and moved by ``shift``
    (N, 2) in normalised units: the inverse map, output coordinates -> source coordinates."""
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    inverse = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # R(−a)/s, (N, 2, 2)
    return torch.cat([inverse, -(inverse @ shift.unsqueeze(-1))], dim=-1)


def _warp(images: torch.Tensor, grids) -> torch.Tensor:
    """Sample float images chunk by chunk; ``grids(start, stop)`` gives the chunk's (n, H, W, 2) grid."""
    out = [
        sample(images[i : i + CHUNK], grids(i, i + len(images[i : i + CHUNK]))) for i in range(0, len(images), CHUNK)
    ]
    return torch.cat(out)


def rotated(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """R: uint8 (N, 1, 28, 28) -> rotated by U(−90°, 90°), same size."""
    count = len(images)
    angle = (torch.rand(count, generator=generator) * 2 - 1) * math.pi / 2
    theta = _rotation_scale(angle, torch.ones(count), torch.zeros(count, 2))
    source = _to_float(images)
    return _to_uint8(_warp(source, lambda a, b: affine_grid(theta[a:b], source.shape[-2:])))


def rotated_translated_scaled(images: torch.Tensor, generator: torch.Generator, side: int = 42) -> torch.Tensor:
    """RTS: uint8 (N, 1, 28, 28) -> (N, 1, side, side): rotated U(±45°), scaled U(0.7, 1.2), placed at random."""
    count = len(images)
    angle = (torch.rand(count, generator=generator) * 2 - 1) * math.pi / 4
    scale = 0.7 + 0.5 * torch.rand(count, generator=generator)
    room = (side - 28 * scale) / side  # how far (normalised) the scaled 28-px box can move and stay inside
    shift = (torch.rand(count, 2, generator=generator) * 2 - 1) * room.unsqueeze(1)
    theta = _rotation_scale(angle, scale, shift)
    source = _pad_to(_to_float(images), side)
    return _to_uint8(_warp(source, lambda a, b: affine_grid(theta[a:b], (side, side))))


def _homography(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) H with H·target_k ∝ source_k for four point pairs (N, 4, 2) each (the direct linear transform)."""
    x, y = target[..., 0], target[..., 1]
    u, v = source[..., 0], source[..., 1]
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)  # (N, 4, 8)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    system = torch.cat([rows_u, rows_v], dim=1)  # (N, 8, 8)
    solution = torch.linalg.solve(system.double(), torch.cat([u, v], dim=1).double()).float()  # (N, 8)
    return torch.cat([solution, torch.ones(len(solution), 1)], dim=1).view(-1, 3, 3)


def projective(images: torch.Tensor, generator: torch.Generator, scale: float = 0.75, noise: float = 0.1):
    """P: uint8 (N, 1, 28, 28) -> same size: the corners scaled by ``scale`` and moved by N(0, ``noise``²)."""
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    moved = corners * scale + noise * torch.randn(len(images), 4, 2, generator=generator)
    homographies = _homography(corners.expand(len(images), 4, 2), moved)  # output (moved) -> source (corners)
    source = _to_float(images)
    return _to_uint8(_warp(source, lambda a, b: projective_grid(homographies[a:b], source.shape[-2:])))


def elastic(images: torch.Tensor, generator: torch.Generator, alpha: float = 34.0, sigma: float = 4.0):
    """E: uint8 (N, 1, 28, 28) -> same size, Simard et al.'s elastic distortion (α, σ in pixels)."""
    _, _, height, width = images.shape
    radius = int(3 * sigma)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    gauss = torch.exp(-(taps**2) / (2 * sigma**2))
    gauss /= gauss.sum()
    source = _to_float(images)
    base = torch.stack(
        torch.meshgrid(
            (torch.arange(width) * 2 + 1) / width - 1, (torch.arange(height) * 2 + 1) / height - 1, indexing="xy"
        ),
        dim=-1,
    )  # (H, W, 2) pixel centres

    def grids(a: int, b: int) -> torch.Tensor:
        # The noise is drawn on a canvas larger by the kernel's radius on each side and smoothed without padding,
        # so the field near the border is as strong as in the middle (zero padding would weaken it there).
        big_h, big_w = height + 2 * radius, width + 2 * radius
        field = torch.rand(b - a, 2, big_h, big_w, generator=generator) * 2 - 1  # (n, 2, H + 2r, W + 2r), pixels
        field = F.conv2d(field.view(-1, 1, big_h, big_w), gauss.view(1, 1, 1, -1))  # (n·2, 1, H + 2r, W)
        field = F.conv2d(field, gauss.view(1, 1, -1, 1)).view(b - a, 2, height, width)
        pixels = alpha * field.permute(0, 2, 3, 1)  # (n, H, W, 2) displacement in pixels
        return base + pixels * torch.tensor([2 / width, 2 / height])

    return _to_uint8(_warp(source, grids))


def cluttered(images: torch.Tensor, generator: torch.Generator, side: int = 60, pieces: int = 6, piece: int = 6):
    """Translated and cluttered: (N, 1, 28, 28) -> (N, 1, side, side): each digit at a random position, plus
    ``pieces`` crops of ``piece``×``piece`` px from other random digits of the same set; pixel-wise maximum."""
    count = len(images)
    canvas = torch.zeros(count, 1, side, side, dtype=torch.uint8)
    ink = images[:, 0] > 64  # (N, 28, 28)
    ink_rows, ink_cols = ink.any(2), ink.any(1)  # (N, 28) each: which rows / columns of each digit have ink

    def span(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """First and last index with ink (the whole range for a blank image)."""
        first = torch.where(mask.any(1), mask.float().argmax(1), torch.zeros(len(mask), dtype=torch.long))
        last = torch.where(mask.any(1), 27 - mask.flip(1).float().argmax(1), torch.full((len(mask),), 27))
        return first, last

    def inside(first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """A crop start uniform over the positions whose window overlaps the ink span, within the image."""
        low = (first - piece + 1).clamp(min=0)
        high = last.clamp(max=28 - piece)
        return low + (torch.rand(len(first), generator=generator) * (high - low + 1)).long().clamp(max=high - low)

    for _ in range(pieces):  # clutter first, digit last: the maximum keeps both
        donor = torch.randint(count, (count,), generator=generator)
        # crops that overlap the donor's ink: uniform positions over the whole 28×28 would often cut empty margin
        top, left = inside(*span(ink_rows[donor])), inside(*span(ink_cols[donor]))
        at_y, at_x = torch.randint(side - piece + 1, (2, count), generator=generator)
        rows = torch.arange(piece)
        crop = images[donor[:, None, None], 0, (top[:, None] + rows)[:, :, None], (left[:, None] + rows)[:, None, :]]
        target_rows = (at_y[:, None] + rows)[:, :, None]
        target_cols = (at_x[:, None] + rows)[:, None, :]
        index = torch.arange(count)[:, None, None]
        canvas[index, 0, target_rows, target_cols] = torch.maximum(canvas[index, 0, target_rows, target_cols], crop)
    at_y, at_x = torch.randint(side - 28 + 1, (2, count), generator=generator)
    rows = torch.arange(28)
    index = torch.arange(count)[:, None, None]
    target_rows, target_cols = (at_y[:, None] + rows)[:, :, None], (at_x[:, None] + rows)[:, None, :]
    canvas[index, 0, target_rows, target_cols] = torch.maximum(canvas[index, 0, target_rows, target_cols], images[:, 0])
    return canvas


DISTORTIONS = {
    "mnist-rotated": (rotated, "R: MNIST rotated by U(±90°), 28×28 (Jaderberg et al. 2015)"),
    "mnist-rts": (rotated_translated_scaled, "RTS: MNIST rotated ±45°, scaled 0.7–1.2, placed at random in 42×42"),
    "mnist-projective": (projective, "P: MNIST under random projective distortions, 28×28"),
    "mnist-elastic": (elastic, "E: MNIST under elastic distortions (Simard 2003: α 34 px, σ 4 px), 28×28"),
    "mnist-cluttered": (cluttered, "translated MNIST in 60×60 with six 6×6 digit fragments as clutter"),
}


REDRAWABLE = (*DISTORTIONS, "mnist-addition")  # the datasets whose training split `--redraw` draws afresh
REDRAW_NOTE = (
    "one fixed draw; `cnnlab train --redraw` distorts the training digits afresh every epoch after the first "
    "(validation and test stay this draw)"
)


def addition_pairs(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator):
    """MNIST addition (the paper's section 4.1, last experiment): each image with a random partner from the same
    split, both RTS-distorted independently, as the two channels of one 42×42 image; the label is the sum (0–18).

    Returns:
        uint8 (N, 2, 42, 42) and int64 (N,) sums.
    """
    partner = torch.randint(len(images), (len(images),), generator=generator)
    first = rotated_translated_scaled(images, generator)
    second = rotated_translated_scaled(images[partner], generator)
    return torch.cat([first, second], dim=1), labels + labels[partner]


@dataclass(kw_only=True)
class RedrawableImageSet(ImageSet):
    """A generated training split that can draw its distortions afresh (``cnnlab train --redraw``).

    ``images``/``labels`` are the dataset's fixed draw; ``sources`` are the MNIST digits they were made from, in
    the same order, so a subset (the validation hold-out, ``--labels-per-class``) keeps its own digits, and
    :meth:`redrawn` distorts exactly those again. Addition pairs each digit with a new partner from the same
    subset, so a redraw never borrows a held-out digit.
    """

    sources: torch.Tensor  # uint8 (N, 1, 28, 28): the undistorted digits
    source_labels: torch.Tensor  # int64 (N,): their digit labels (for addition: the first digit's)
    distortion: str  # a DISTORTIONS name, or "mnist-addition"

    def select(self, index: torch.Tensor) -> RedrawableImageSet:
        return RedrawableImageSet(
            self.images[index],
            self.labels[index],
            sources=self.sources[index],
            source_labels=self.source_labels[index],
            distortion=self.distortion,
        )

    def redrawn(self, seed: int, epoch: int) -> ImageSet:
        """A new draw of the same digits, a pure function of (seed, epoch): a resumed run draws the same images.

        The streams never meet the fixed draws' (seeds 2015–2026): epoch ≥ 1 puts them above 3,000.
        """
        generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_009 + GENERATION_SEED)
        if self.distortion == "mnist-addition":
            return ImageSet(*addition_pairs(self.sources, self.source_labels, generator))
        function = DISTORTIONS[self.distortion][0]
        return ImageSet(function(self.sources, generator), self.labels.clone())


def _redrawable(drawn: ImageSet, digits: ImageSet, distortion: str) -> RedrawableImageSet:
    """The training split ``drawn`` made from ``digits``, able to draw again (--redraw); test stays one draw."""
    return RedrawableImageSet(
        drawn.images, drawn.labels, sources=digits.images, source_labels=digits.labels, distortion=distortion
    )


def _addition(mnist: ImageDataset) -> ImageDataset:
    splits = []
    for offset, split in enumerate((mnist.train, mnist.test)):
        generator = torch.Generator().manual_seed(GENERATION_SEED + 10 + offset)
        splits.append(ImageSet(*addition_pairs(split.images, split.labels, generator)))
    return ImageDataset(
        "mnist-addition",
        _redrawable(splits[0], mnist.train, "mnist-addition"),
        splits[1],
        [str(total) for total in range(19)],
        fit_mode="pad",
        source=f"generated from {mnist.source} (seed {GENERATION_SEED + 10}): two RTS digits in two channels, "
        "labelled with their sum",
        notes=[REDRAW_NOTE],
    )


@register_dataset(
    "mnist-addition",
    "two RTS-distorted MNIST digits as the two channels of 42×42, labelled with their sum (19 classes); "
    "generated from the local MNIST",
    augment="none",
)
def _load_addition(root: Path, fetch: bool = False) -> ImageDataset:
    return _addition(load_dataset("mnist", root, fetch=fetch))


def distort(name: str, mnist: ImageDataset) -> ImageDataset:
    """The distorted version ``name`` of a loaded MNIST: each split distorted with its own seeded stream."""
    function, description = DISTORTIONS[name]
    splits = []
    for offset, split in enumerate((mnist.train, mnist.test)):
        generator = torch.Generator().manual_seed(GENERATION_SEED + offset)
        splits.append(ImageSet(function(split.images, generator), split.labels.clone()))
    return ImageDataset(
        name,
        _redrawable(splits[0], mnist.train, name),
        splits[1],
        list(mnist.classes),
        fit_mode="pad",
        source=f"generated from {mnist.source} (seed {GENERATION_SEED}): {description}",
        notes=[REDRAW_NOTE],
    )


def _register(name: str, description: str) -> None:
    @register_dataset(name, description + "; generated from the local MNIST", augment="none")
    def _load(root: Path, fetch: bool = False) -> ImageDataset:
        return distort(name, load_dataset("mnist", root, fetch=fetch))


for _name, (_, _description) in DISTORTIONS.items():
    _register(_name, _description)
