"""``captioned-scenes`` and ``captioned-fashion-scenes``: scenes that need language, generated from the local
MNIST / Fashion-MNIST.

Each scene is a black square (96×96, RGB by default) divided into four 48×48 quadrants; 2–4 of them hold one
object each: a digit (or a piece of clothing) resized from 28×28 to a *small* (22–28 px) or *large* (40–46 px)
cell with :func:`~cnnlab.data.detection_canvas.resize_digits`, tinted one of five colours, placed at a random
offset inside its quadrant (objects never overlap). Its box is tight around the ink
(:func:`~cnnlab.data.detection_canvas.ink_boxes`). Captions come from a small grammar:

- object: ``a {small|large} {red|green|blue|yellow|white} {3|sneaker|...}`` (no colour word for grey scenes);
- the listing, objects in reading order (top-left, top-right, bottom-left, bottom-right):
  ``a small red 3, a large blue 7 and a small green 1``;
- relations between two objects by their quadrants: same row: ``to the left of`` / ``to the right of``, else
  ``above`` / ``below``: ``a small red 3 to the left of a large blue 7``.

Every scene has the listing plus ``references − 1`` relation captions over distinct ordered pairs (as many as
there are: 2 for two objects), so 3–5 references. A caption is right only if the model saw what is where, how big
and which colour: the vocabulary is 30–40 words but the scenes are combinatorially many.

Splits: train scenes from the first 90 % of the source's train images, validation scenes from the last 10 %
(held out: choose hyperparameters and checkpoints on them), test scenes from the test images only. Each split
has its own random stream; every random number comes from a seeded CPU ``torch.Generator`` and pixels are integer
arithmetic, so a seed gives identical images and captions on every machine (for a given torch version).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from cnnlab.data.captions import CaptionDataset, CaptionSplit, register_caption_dataset
from cnnlab.data.datasets import load_dataset
from cnnlab.data.detection_canvas import ink_boxes, resize_digits
from cnnlab.errors import ConfigError

COLOURS = {"red": (255, 60, 60), "green": (60, 220, 60), "blue": (80, 110, 255), "yellow": (250, 230, 40),
           "white": (255, 255, 255)}  # fmt: skip
DIGIT_NOUNS = tuple(str(d) for d in range(10))
FASHION_NOUNS = ("t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
HELD_OUT = 0.1  # of the source's train images: the validation scenes' digits


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are made; every field is an option of ``load_caption_dataset("captioned-scenes", ...)``."""

    train_size: int = 8_000  # scenes from the first 90 % of the source's train images
    val_size: int = 1_000  # scenes from the held-out 10 %
    test_size: int = 1_000  # scenes from the test images
    canvas_size: int = 96  # px, square, four quadrants of canvas_size / 2
    min_objects: int = 2  # per scene, uniform in [min_objects, max_objects], one per quadrant
    max_objects: int = 4
    small: tuple[int, int] = (22, 28)  # px, side range of a "small" object's 28×28 cell after resizing
    large: tuple[int, int] = (40, 46)  # px, a "large" one's: clearly apart from small (ink ≈ 0.7 × side)
    colour: bool = True  # RGB scenes with a colour word per object; False: grey scenes, no colour words
    references: int = 5  # the listing + up to references − 1 relation captions
    ink: int = 32  # of 255: boxes are tight around pixels this bright

    def __post_init__(self) -> None:
        half = self.canvas_size // 2
        checks = (
            (min(self.train_size, self.val_size, self.test_size) >= 1, "train_size, val_size, test_size ≥ 1"),
            (2 <= self.min_objects <= self.max_objects <= 4, "need 2 ≤ min_objects ≤ max_objects ≤ 4 (quadrants)"),
            (4 <= self.small[0] <= self.small[1] < self.large[0] <= self.large[1], "need small < large side ranges"),
            (self.large[1] <= half, f"a large object must fit in a quadrant (≤ {half} px)"),
            (2 <= self.references <= 13, "references in 2 … 13 (the listing + 12 ordered pairs at most)"),
            (1 <= self.ink <= 255, "ink in 1 … 255"),
        )
        for ok, why in checks:
            if not ok:
                raise ConfigError(f"Scene options: {why} (got {self}).")


def _relation(qa: int, qb: int) -> str:
    """How quadrant ``qa``'s object stands to quadrant ``qb``'s (0 top-left, 1 top-right, 2 bottom-left, 3
    bottom-right)."""
    if qa // 2 == qb // 2:
        return "to the left of" if qa % 2 < qb % 2 else "to the right of"
    return "above" if qa // 2 < qb // 2 else "below"


def describe(size: str, colour: str | None, noun: str) -> str:
    """``a small red 3`` (``a small 3`` without a colour)."""
    return f"a {size} {colour + ' ' if colour else ''}{noun}"


def scene_captions(objects: list[tuple[int, str, str | None, str]], pairs: list[tuple[int, int]]) -> list[str]:
    """The listing and one relation caption per ordered pair (indices into ``objects``), for objects given as
    (quadrant, size, colour or None, noun) in reading order."""
    words = [describe(size, colour, noun) for _, size, colour, noun in objects]
    listing = ", ".join(words[:-1]) + " and " + words[-1]
    relations = [f"{words[a]} {_relation(objects[a][0], objects[b][0])} {words[b]}" for a, b in pairs]
    return [listing, *relations]


ATTRIBUTES = {"size": (0,), "colour": (1,), "noun": (2,), "size+colour": (0, 1), "all": (0, 1, 2)}  # fields


def named_object_accuracy(captions: Sequence[str], listings: Sequence[str]) -> dict[str, tuple[float, float]]:
    """How often the objects a caption names ("a small red 3") are in its scene: for each attribute (``size``,
    ``colour``, ``noun``, ``size+colour``, ``all`` three), the percentage of named objects whose attribute some
    object of the scene has, and that percentage for a random guess (uniform over the sizes, colours, nouns).

    Args:
        captions: generated captions (grammar of :func:`scene_captions`; other text names no object).
        listings: each scene's listing caption (its first reference): every object of the scene.

    Returns:
        ``{attribute: (percent right, percent by chance)}``; empty when no caption names an object. Grey scenes
        (no colour words) count colour as always right.
    """
    nouns = sorted({*DIGIT_NOUNS, *FASHION_NOUNS}, key=len, reverse=True)  # longest first: "t-shirt" before "shirt"
    pattern = re.compile(rf"\ba (small|large) (?:({'|'.join(COLOURS)}) )?({'|'.join(map(re.escape, nouns))})\b")
    hits, chance, named = dict.fromkeys(ATTRIBUTES, 0.0), dict.fromkeys(ATTRIBUTES, 0.0), 0
    for caption, listing in zip(captions, listings, strict=True):
        scene = set(pattern.findall(listing))  # (size, colour or "", noun) of every object
        choices = (2, len(COLOURS) if any(o[1] for o in scene) else 1,
                   len(DIGIT_NOUNS if any(o[2] in DIGIT_NOUNS for o in scene) else FASHION_NOUNS))  # fmt: skip
        for thing in pattern.findall(caption):
            named += 1
            for attribute, where in ATTRIBUTES.items():
                project = lambda o, where=where: tuple(o[i] for i in where)  # noqa: E731
                seen = {project(o) for o in scene}
                hits[attribute] += project(thing) in seen
                chance[attribute] += len(seen) / math.prod(choices[i] for i in where)
    if not named:
        return {}
    return {a: (100 * hits[a] / named, 100 * chance[a] / named) for a in ATTRIBUTES}


def _uniform(generator: torch.Generator, low: torch.Tensor | int, high: torch.Tensor | int, shape) -> torch.Tensor:
    """Integers uniform in [low, high] (inclusive, broadcast), from 24 random bits each."""
    bits = torch.randint(0, 1 << 24, shape, generator=generator)
    return low + ((bits * (torch.as_tensor(high) - low + 1)) >> 24)


def make_scenes(
    images: torch.Tensor, labels: torch.Tensor, count: int, config: SceneConfig, seed: int, nouns: tuple[str, ...]
) -> CaptionSplit:
    """``count`` scenes from uint8 (S, 1, 28, 28) ``images`` with (S,) ``labels``; ``nouns[label]`` names an object.

    Returns:
        a :class:`CaptionSplit`: uint8 (count, 3 or 1, canvas, canvas), 3–5 captions each, ink boxes (count, 4, 4)
        and labels (count, 4) in reading order, −1 / zero boxes for empty quadrants.
    """
    cfg, n, half = config, count, config.canvas_size // 2
    g = torch.Generator().manual_seed(seed)
    # every draw is made for all 4 slots, so the stream does not depend on the digits drawn
    counts = _uniform(g, cfg.min_objects, cfg.max_objects, (n,))
    quadrant = torch.rand(n, 4, generator=g).argsort(1)  # slot j of scene i goes to quadrant[i, j]
    active = torch.arange(4)[None, :] < counts[:, None]  # (n, 4)
    order = torch.where(active, quadrant, quadrant + 4).argsort(1)  # used quadrants first, in reading order
    quadrant, active = quadrant.gather(1, order), active.gather(1, order)
    digit = torch.randint(0, len(images), (n, 4), generator=g)
    large = torch.randint(0, 2, (n, 4), generator=g).bool()
    side = torch.where(large, _uniform(g, cfg.large[0], cfg.large[1], (n, 4)),
                       _uniform(g, cfg.small[0], cfg.small[1], (n, 4)))  # fmt: skip
    colour = torch.randint(0, len(COLOURS), (n, 4), generator=g)
    offset = _uniform(g, 0, (half - side)[..., None], (n, 4, 2))  # (n, 4, 2) x, y inside the quadrant
    corner = offset + torch.stack([quadrant % 2, quadrant // 2], -1) * half  # (n, 4, 2) left, top
    pair_keys = torch.rand(n, 12, generator=g)  # the order relation captions pick ordered pairs in

    channels = 3 if cfg.colour else 1
    canvas = torch.zeros(n, channels, cfg.canvas_size, cfg.canvas_size, dtype=torch.uint8)
    boxes = torch.zeros(n, 4, 4)
    palette = torch.tensor(list(COLOURS.values()))  # (5, 3)
    for s in side[active].unique().tolist():
        where = (active & (side == s)).nonzero()  # (K, 2): scene, slot
        pixels = resize_digits(images[digit[where[:, 0], where[:, 1]]], s)  # (K, s, s)
        box, has_ink = ink_boxes(pixels, cfg.ink)
        box[~has_ink] = torch.tensor([0, 0, s, s])  # no ink (never for MNIST): the cell
        at = corner[where[:, 0], where[:, 1]]  # (K, 2)
        boxes[where[:, 0], where[:, 1]] = (box + at.repeat(1, 2)).float()
        if cfg.colour:  # tint: ink × colour / 255, rounded (integers)
            rgb = palette[colour[where[:, 0], where[:, 1]]]  # (K, 3)
            tinted = ((pixels[:, None].int() * rgb[:, :, None, None] + 127) // 255).to(torch.uint8)  # (K, 3, s, s)
        else:
            tinted = pixels[:, None]  # (K, 1, s, s)
        span = torch.arange(s)
        ys = (at[:, 1, None] + span)[:, None, :, None]  # (K, 1, s, 1)
        xs = (at[:, 0, None] + span)[:, None, None, :]  # (K, 1, 1, s)
        canvas[where[:, 0, None, None, None], torch.arange(channels)[None, :, None, None], ys, xs] = tinted
    object_labels = torch.where(active, labels[digit], torch.full_like(digit, -1))

    names = list(COLOURS)
    all_pairs = [(a, b) for a in range(4) for b in range(4) if a != b]  # 12 ordered pairs
    captions = []
    rows = zip(counts.tolist(), quadrant.tolist(), large.tolist(), colour.tolist(), object_labels.tolist(),
               pair_keys.argsort(1).tolist(), strict=True)  # fmt: skip
    for c, quads, bigs, cols, labs, pair_order in rows:
        objects = [(quads[j], "large" if bigs[j] else "small", names[cols[j]] if cfg.colour else None, nouns[labs[j]])
                   for j in range(c)]  # fmt: skip
        pairs = [all_pairs[p] for p in pair_order if max(all_pairs[p]) < c][: cfg.references - 1]
        captions.append(scene_captions(objects, pairs))
    return CaptionSplit(canvas, captions, boxes, object_labels)


def scene_dataset(name: str, source: str, root: Path, seed: int, config: SceneConfig, nouns) -> CaptionDataset:
    """The scenes of ``config`` from the registered classification dataset ``source``."""
    digits = load_dataset(source, root)
    images, labels = digits.train.images, digits.train.labels
    cut = round(len(images) * (1 - HELD_OUT))
    train = make_scenes(images[:cut], labels[:cut], config.train_size, config, 3 * seed, nouns)
    val = make_scenes(images[cut:], labels[cut:], config.val_size, config, 3 * seed + 1, nouns)
    test = make_scenes(digits.test.images, digits.test.labels, config.test_size, config, 3 * seed + 2, nouns)
    changed = {f.name: getattr(config, f.name) for f in fields(config) if getattr(config, f.name) != f.default}
    options = ", ".join(f"{key}={value}" for key, value in changed.items())
    return CaptionDataset(
        name, train, val, test, list(nouns),
        source=f"generated from {source} in {digits.source} (seed {seed}{', ' + options if options else ''})",
        notes=[f"{sum(len(r) for r in train.captions) / len(train):.2f} reference captions per train scene"],
    )  # fmt: skip


@register_caption_dataset(
    "captioned-scenes",
    "2–4 coloured MNIST digits (small/large) in the quadrants of 96×96 scenes, 3–5 captions each (generated)",
    options=SceneConfig,
)
def _captioned_scenes(root: Path, *, seed: int = 0, **options) -> CaptionDataset:
    return scene_dataset("captioned-scenes", "mnist", root, seed, SceneConfig(**options), DIGIT_NOUNS)


@register_caption_dataset(
    "captioned-fashion-scenes",
    "2–4 coloured Fashion-MNIST items (small/large) in the quadrants of 96×96 scenes, 3–5 captions each (generated)",
    options=SceneConfig,
)
def _captioned_fashion_scenes(root: Path, *, seed: int = 0, **options) -> CaptionDataset:
    return scene_dataset("captioned-fashion-scenes", "fashion-mnist", root, seed, SceneConfig(**options), FASHION_NOUNS)
