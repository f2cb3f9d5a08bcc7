"""``mnist-detection`` and ``fashion-detection``: detection canvases made from the local MNIST / Fashion-MNIST.

Each canvas is a black square (128×128 uint8 grey by default) holding 1–6 digits (or clothes), each resized
from 28×28 to a side of 14–56 px (4× range, drawn log-uniformly: as many objects per octave) with an antialiased
bilinear filter, at places where no two boxes overlap by more than ``max_overlap`` of the smaller one (so
IoU ≤ 0.081 by default), and optionally clutter: 8×8 fragments cut from other random digits of the same split,
placed outside every box (as cluttered MNIST, Mnih et al. 2014, "Recurrent models of visual attention"). Each
box is tight around the visible ink of its own digit (pixels ≥ ``ink``), not the resized 28×28 cell. Train
canvases are made from train digits only, test canvases from test digits only; :class:`CanvasProvenance`
records which digit is in which box.

How, in steps (all batched over canvases; Python loops only over the ≤ 6 object slots and the 43 sizes):

1. Draw each canvas's object count, and for every slot a source digit and a side (from an integer table).
2. Resize the digits of each side at once (:func:`resize_digits`) and find each one's ink box in its cell.
3. Place slot j of every canvas at once: ``tries`` candidate positions each, keep the first whose ink box
   overlaps no box already placed on its canvas by more than ``max_overlap`` (integer arithmetic), or drop the
   object when none does (3 of the 42,049 objects of the default dataset, seed 0).
4. Place clutter fragments the same way, away from every box; paste everything with one ``scatter_reduce``
   (maximum) per size, so touching strokes merge as ink does and no box loses ink.

Determinism: every random number is an integer from a seeded CPU ``torch.Generator`` and every computation on
pixels and boxes is integer arithmetic (resize weights are fixed-point, computed with Python floats), so a seed
gives identical tensors on every machine (for a given torch version's generator).

Speed (measured on this project's 2-core CPU machine, torch 2.14.1, ``make_canvases`` on MNIST's train split):
10,000 canvases take 1.8 s when the cores were nearly free (profiled run); with the machine shared by other
jobs (load average 6 on 2 cores) 8.6 s, and 13.9 s with ``clutter=8`` (best of 3). Reading MNIST adds ≈ 0.5 s.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from cnnlab.data.datasets import load_dataset
from cnnlab.data.detection import DetectionDataset, DetectionSplit, register_detection_dataset
from cnnlab.data.targets import PADDING_LABEL, BoxTargets
from cnnlab.errors import ConfigError


@dataclass(frozen=True)
class CanvasConfig:
    """How canvases are made; every field is an option of ``load_detection_dataset("mnist-detection", ...)``."""

    train_size: int = 10_000  # canvases made from the 60,000 train digits
    test_size: int = 2_000  # canvases made from the 10,000 test digits
    canvas_size: int = 128  # px, square: room for 6 objects of up to 56 px with little overlap
    min_objects: int = 1  # per canvas, drawn uniformly in [min_objects, max_objects]
    max_objects: int = 6
    min_side: int = 14  # px: the 28×28 digit cell resized to half its size (ink ≈ 10 px high) ...
    max_side: int = 56  # ... to twice (ink ≈ 40 px): a 4× range of object sizes, as detectors face across scales
    max_overlap: float = 0.15  # of the smaller box's area another box may cover; bounds IoU ≤ 0.15/1.85 ≈ 0.081
    clutter: int = 0  # fragments of other digits per canvas, placed outside every box (8 makes cluttered canvases)
    fragment: int = 8  # px, side of a clutter fragment (cluttered MNIST's 8×8)
    tries: int = 64  # candidate positions per object; an object with no free one is dropped (3 in 42,049)
    ink: int = 32  # of 255: a pixel this bright is ink; boxes are tight around it (fainter antialiasing is not)

    def __post_init__(self) -> None:
        checks = (
            (self.train_size >= 1 and self.test_size >= 1, "train_size and test_size must be at least 1"),
            (1 <= self.min_objects <= self.max_objects, "need 1 ≤ min_objects ≤ max_objects"),
            (4 <= self.min_side <= self.max_side, "need 4 ≤ min_side ≤ max_side"),
            (self.max_side <= self.canvas_size, "max_side must fit in the canvas (≤ canvas_size)"),
            (0 <= self.max_overlap < 1, "max_overlap is a fraction of a box's area, in [0, 1)"),
            (self.clutter >= 0 and 1 <= self.fragment <= 28, "clutter ≥ 0 fragments of side 1 … 28"),
            (self.tries >= 1 and 1 <= self.ink <= 255, "tries ≥ 1 and ink in 1 … 255"),
        )
        for ok, why in checks:
            if not ok:
                raise ConfigError(f"Canvas options: {why} (got {self}).")


@dataclass
class CanvasProvenance:
    """Where each object of a generated split came from (index into the source split's images).

    Attributes:
        split: "train" or "test": the source split the indices refer to.
        digits: int64 (N, M): the source image of box j of canvas i (−1 for padding), slot-aligned with the
            split's ``targets``.
        cells: int64 (N, M, 3): (left, top, side) of the square the resized digit was pasted into.
        clutter: int64 (N, K): the source images clutter fragments were cut from (−1: not placed).
    """

    split: str
    digits: torch.Tensor
    cells: torch.Tensor
    clutter: torch.Tensor


# ---- resizing, integer and batched -----------------------------------------------------------------------------------
_FIXED_BITS = 10  # fixed-point weights: each output pixel's weights sum to exactly 2^10


@functools.lru_cache(maxsize=256)
def _taps(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The triangle filter, widened by the scale when shrinking (antialiased bilinear, as Pillow's and
    torchvision's ``antialias=True``; pixel centres at i + 0.5), as (n_out, T) input indices and int32 weights
    (zero on unused taps) summing to exactly 2^10 per output pixel. Python floats, then integers: the same
    everywhere."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    rows = []
    for i in range(n_out):
        centre = (i + 0.5) * scale
        raw = {j: 1.0 - abs((j + 0.5 - centre) / support) for j in range(n_in)}
        raw = {j: v for j, v in raw.items() if v > 0}
        total = sum(raw.values())
        fixed = {j: round(v / total * (1 << _FIXED_BITS)) for j, v in raw.items()}
        heaviest = max(fixed, key=fixed.get)
        fixed[heaviest] += (1 << _FIXED_BITS) - sum(fixed.values())  # rounding residue: sums are exact
        rows.append(sorted(fixed.items()))
    taps = max(len(r) for r in rows)
    index = [[j for j, _ in r] + [r[0][0]] * (taps - len(r)) for r in rows]
    weight = [[w for _, w in r] + [0] * (taps - len(r)) for r in rows]
    return torch.tensor(index), torch.tensor(weight, dtype=torch.int32)


def resize_digits(images: torch.Tensor, side: int) -> torch.Tensor:
    """Resize uint8 (K, h, w) or (K, 1, h, w) images to (K, side, side) with an antialiased bilinear filter.

    Integer arithmetic throughout, two separable passes over the filter's few taps (≤ 5 here), so identical on
    every machine; within 1 grey level of Pillow's ``Image.resize(..., BILINEAR)`` (tested).
    """
    x = images.reshape(-1, *images.shape[-2:]).int()  # (K, h, w)
    ix, wx = _taps(x.shape[2], side)  # (side, T)
    iy, wy = _taps(x.shape[1], side)
    rows = (x[:, :, ix] * wx).sum(-1)  # (K, h, side, T) -> (K, h, side): ≤ 255 · 2^10
    total = (rows[:, iy, :] * wy[:, :, None]).sum(2)  # (K, side, T, side) -> (K, side, side): ≤ 255 · 2^20
    return ((total + (1 << (2 * _FIXED_BITS - 1))) >> (2 * _FIXED_BITS)).to(torch.uint8)  # rounded; ≤ 255


def ink_boxes(cells: torch.Tensor, ink: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The box around the pixels ≥ ``ink`` of each (K, s, s) cell: int64 (K, 4) XYXY on pixel edges, and a
    (K,) bool that is False for a cell with no ink (its box is meaningless)."""
    mask = cells >= ink
    rows, cols = mask.any(2), mask.any(1)  # (K, s) each
    s = cells.shape[-1]
    y1, y2 = rows.int().argmax(1), s - rows.flip(1).int().argmax(1)
    x1, x2 = cols.int().argmax(1), s - cols.flip(1).int().argmax(1)
    return torch.stack([x1, y1, x2, y2], 1).long(), rows.any(1)


# ---- placement -------------------------------------------------------------------------------------------------------
def _uniform(generator: torch.Generator, shape: tuple[int, ...], high: torch.Tensor) -> torch.Tensor:
    """Integers uniform in [0, high] (inclusive, ``high`` broadcast over ``shape``), from 24 random bits each."""
    bits = torch.randint(0, 1 << 24, shape, generator=generator)
    return (bits * (high + 1)) >> 24


def _side_table(low: int, high: int) -> torch.Tensor:
    """Sides ``low`` … ``high``, each repeated ∝ 1/side: a uniform index into it draws sides log-uniformly."""
    return torch.tensor([s for s in range(low, high + 1) for _ in range(round(4 * high / s))])


def _covered(candidates: torch.Tensor, placed: torch.Tensor, present: torch.Tensor, limit: tuple[int, int]):
    """(A, R) bool: candidate boxes (A, R, 4) that no present placed box (A, P, 4) covers more than
    ``limit`` = (num, den) of the smaller one's area, nor the reverse (integer arithmetic)."""
    c, p = candidates[:, :, None, :], placed[:, None, :, :]  # (A, R, 1, 4), (A, 1, P, 4)
    w = (torch.minimum(c[..., 2], p[..., 2]) - torch.maximum(c[..., 0], p[..., 0])).clamp(min=0)
    h = (torch.minimum(c[..., 3], p[..., 3]) - torch.maximum(c[..., 1], p[..., 1])).clamp(min=0)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    smaller = torch.minimum(area(c), area(p))  # (A, R, P)
    num, den = limit
    clash = (w * h * den > num * smaller) & present[:, None, :]
    return ~clash.any(2)


def _place(
    generator: torch.Generator,
    boxes: torch.Tensor,
    sides: torch.Tensor,
    active: torch.Tensor,
    obstacles: torch.Tensor,
    obstacle_present: torch.Tensor,
    canvas: int,
    tries: int,
    limit: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Place one item per canvas: (A, 4) boxes relative to an (A,) ``sides`` cell, for the ``active`` canvases.
    Returns the cells' top-left corners (n, 2) as (left, top) and a (n,) bool of those placed."""
    n = active.shape[0]
    corner, placed = torch.zeros(n, 2, dtype=torch.int64), torch.zeros(n, dtype=torch.bool)
    rows = active.nonzero().flatten()
    shape = (len(rows), tries)
    span = (canvas - sides[rows])[:, None]  # (A, 1)
    left, top = _uniform(generator, shape, span), _uniform(generator, shape, span)  # (A, R) each
    moved = boxes[rows][:, None, :] + torch.stack([left, top, left, top], -1)  # (A, R, 4)
    free = _covered(moved, obstacles[rows], obstacle_present[rows], limit)  # (A, R)
    found = free.any(1)
    first = free.int().argmax(1)  # the first free candidate (a reject-and-retry loop, all tries at once)
    pick = torch.arange(len(rows))
    corner[rows] = torch.stack([left[pick, first], top[pick, first]], 1)
    placed[rows] = found
    return corner, placed


def _paste(flat: torch.Tensor, pixels: torch.Tensor, canvas_index: torch.Tensor, corner: torch.Tensor, size: int):
    """Paste (K, s, s) uint8 pixels at (left, top) ``corner`` (K, 2) of canvases ``canvas_index`` (K,) of the
    flat (N·size·size,) canvases, keeping the brighter pixel where strokes meet."""
    s = pixels.shape[-1]
    offsets = torch.arange(s)
    y = corner[:, 1, None, None] + offsets[None, :, None]  # (K, s, 1)
    x = corner[:, 0, None, None] + offsets[None, None, :]  # (K, 1, s)
    index = canvas_index[:, None, None] * size * size + y * size + x  # (K, s, s)
    flat.scatter_reduce_(0, index.flatten(), pixels.flatten(), "amax")


def make_canvases(
    images: torch.Tensor, labels: torch.Tensor, count: int, config: CanvasConfig, seed: int, split: str = "train"
) -> DetectionSplit:
    """``count`` canvases from the uint8 (S, 1, 28, 28) ``images`` and their (S,) ``labels``.

    Returns:
        a :class:`DetectionSplit`: uint8 (count, 1, canvas, canvas), tight ink boxes with the digits' labels
        (padded to ``max_objects``, objects first), and its :class:`CanvasProvenance` (indices into ``images``).
    """
    cfg, n, size, m = config, count, config.canvas_size, config.max_objects
    generator = torch.Generator().manual_seed(seed)
    # 1. counts, source digits, sides: drawn for every slot, so the stream does not depend on the digits
    counts = cfg.min_objects + _uniform(generator, (n,), torch.tensor(cfg.max_objects - cfg.min_objects))
    active = torch.arange(m)[None, :] < counts[:, None]  # (n, m)
    digits = torch.randint(0, len(images), (n, m), generator=generator)
    table = _side_table(cfg.min_side, cfg.max_side)
    sides = table[torch.randint(0, len(table), (n, m), generator=generator)]  # (n, m)
    # 2. resize each side's digits at once; ink boxes relative to the cell
    relative = torch.zeros(n, m, 4, dtype=torch.int64)
    resized: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # side -> (slot numbers, (K, s, s) pixels)
    for side in sides[active].unique().tolist():
        slots = (active & (sides == side)).flatten().nonzero().flatten()
        pixels = resize_digits(images[digits.flatten()[slots]], side)
        box, has_ink = ink_boxes(pixels, cfg.ink)
        relative.view(-1, 4)[slots] = box
        active.view(-1)[slots[~has_ink]] = False
        resized[side] = (slots, pixels)
    # 3. objects, one slot of every canvas at a time
    limit = (round(cfg.max_overlap * 1000), 1000)
    corners = torch.zeros(n, m, 2, dtype=torch.int64)
    placed = torch.zeros(n, m, dtype=torch.bool)
    absolute = torch.zeros(n, m, 4, dtype=torch.int64)
    for j in range(m):
        corners[:, j], placed[:, j] = _place(
            generator, relative[:, j], sides[:, j], active[:, j], absolute, placed, size, cfg.tries, limit
        )
        absolute[:, j] = relative[:, j] + corners[:, j].repeat(1, 2)
    # 4. clutter, outside every box (no overlap at all), then paste everything
    flat = torch.zeros(n * size * size, dtype=torch.uint8)
    f, k = cfg.fragment, cfg.clutter
    clutter_source = torch.full((n, k), -1, dtype=torch.int64)
    if k:
        source = torch.randint(0, len(images), (n, k), generator=generator)
        inner = 28 - f  # fragments from the middle of the digit, where its ink is
        at = inner // 4 + _uniform(generator, (n, k, 2), torch.tensor(inner - 2 * (inner // 4)))  # (n, k, 2) x, y
        square = torch.tensor([[0, 0, f, f]]).expand(n, 4)
        for c in range(k):
            corner, ok = _place(
                generator, square, torch.full((n,), f), torch.ones(n, dtype=torch.bool), absolute, placed, size,
                cfg.tries, (0, 1),
            )  # fmt: skip
            ys = at[ok, c, 1, None] + torch.arange(f)  # (K, f)
            xs = at[ok, c, 0, None] + torch.arange(f)
            pieces = images[source[ok, c]][:, 0][
                torch.arange(int(ok.sum()))[:, None, None], ys[:, :, None], xs[:, None]
            ]
            _paste(flat, pieces, ok.nonzero().flatten(), corner[ok], size)
            clutter_source[ok, c] = source[ok, c]
    for slots, pixels in resized.values():
        keep = placed.view(-1)[slots]
        canvas_index = slots[keep] // m
        _paste(flat, pixels[keep], canvas_index, corners.view(-1, 2)[slots[keep]], size)
    # objects first in each canvas's slots, padding after (stable: slot order kept)
    order = (~placed).int().argsort(dim=1, stable=True)  # (n, m)
    placed = placed.gather(1, order)
    take = lambda t: t.gather(1, order.view(n, m, *([1] * (t.ndim - 2))).expand_as(t))  # noqa: E731
    absolute, corners, sides, digits = take(absolute), take(corners), take(sides), take(digits)
    box_labels = torch.where(placed, labels[digits], torch.full_like(digits, PADDING_LABEL))
    boxes = torch.where(placed[..., None], absolute, torch.zeros_like(absolute)).float()
    most = int(placed.sum(1).max())  # trim slots no canvas uses
    provenance = CanvasProvenance(
        split,
        torch.where(placed, digits, torch.full_like(digits, -1))[:, :most],
        torch.where(placed[..., None], torch.cat([corners, sides[..., None]], -1), -1)[:, :most],
        clutter_source,
    )
    targets = BoxTargets(boxes[:, :most].contiguous(), box_labels[:, :most].contiguous())
    return DetectionSplit(flat.view(n, 1, size, size), targets, provenance=provenance)


def canvas_dataset(name: str, source: str, root: Path, seed: int, config: CanvasConfig) -> DetectionDataset:
    """The canvases of ``config`` from the registered classification dataset ``source`` (train canvases from
    its train split, test canvases from its test split, with independent random streams)."""
    digits = load_dataset(source, root)
    train = make_canvases(digits.train.images, digits.train.labels, config.train_size, config, 2 * seed, "train")
    test = make_canvases(digits.test.images, digits.test.labels, config.test_size, config, 2 * seed + 1, "test")
    wanted = sum(int(s.provenance.digits.ne(-1).sum()) for s in (train, test))
    per_image = torch.cat([train.boxes_per_image(), test.boxes_per_image()]).float().mean()
    note = (
        f"{per_image:.2f} objects per canvas on average; {wanted:,} objects placed "
        f"(an object with no free place among {config.tries} tries is left out)"
    )
    changed = {f.name: getattr(config, f.name) for f in fields(config) if getattr(config, f.name) != f.default}
    options = ", ".join(f"{key}={value}" for key, value in changed.items())
    return DetectionDataset(
        name,
        train,
        test,
        list(digits.classes),
        source=f"generated from {source} in {digits.source} (seed {seed}{', ' + options if options else ''})",
        notes=[note],
    )


@register_detection_dataset(
    "mnist-detection",
    "1–6 MNIST digits of 14–56 px on 128×128 canvases, tight ink boxes, 10 classes (generated; 10,000 / 2,000)",
    augment="pad-crop",  # digits: no flips
    options=CanvasConfig,
)
def _mnist_detection(root: Path, *, seed: int = 0, **options) -> DetectionDataset:
    return canvas_dataset("mnist-detection", "mnist", root, seed, CanvasConfig(**options))


@register_detection_dataset(
    "fashion-detection",
    "1–6 Fashion-MNIST items of 14–56 px on 128×128 canvases, tight boxes, 10 classes (generated; 10,000 / 2,000)",
    augment="pad-crop-flip",
    options=CanvasConfig,
)
def _fashion_detection(root: Path, *, seed: int = 0, **options) -> DetectionDataset:
    return canvas_dataset("fashion-detection", "fashion-mnist", root, seed, CanvasConfig(**options))
