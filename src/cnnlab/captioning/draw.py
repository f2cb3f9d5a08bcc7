"""Pictures of captions: an image with its caption (and references) under it, a grid of those, and an image with
each word's best region boxed (the alignment model's picture)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

SCALE = 3  # scene pixels are small: 96 px scenes drawn at 288 px
LINE = 12  # px per text line (Pillow's default bitmap font)
WRAP = 48  # characters per line under a 288 px image
BOX_COLOURS = ("#ff4040", "#40c0ff", "#ffd000", "#40ff60", "#ff60ff", "#ffffff")


def _pil(image: torch.Tensor, scale: int) -> Image.Image:
    """uint8 (C, H, W) -> RGB Pillow image, ``scale`` times larger (nearest: pixels stay visible)."""
    array = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    pil = Image.fromarray(array.permute(1, 2, 0).contiguous().numpy(), "RGB")
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


def captioned(image: torch.Tensor, lines: Sequence[str], scale: int = SCALE) -> Image.Image:
    """The image with ``lines`` of text under it (each wrapped), on white."""
    picture = _pil(image, scale)
    wrapped = [part for line in lines for part in (textwrap.wrap(line, WRAP) or [""])]
    out = Image.new("RGB", (picture.width, picture.height + LINE * len(wrapped) + 6), "white")
    out.paste(picture, (0, 0))
    draw, font = ImageDraw.Draw(out), ImageFont.load_default()
    for i, line in enumerate(wrapped):
        draw.text((3, picture.height + 3 + LINE * i), line, fill="black", font=font)
    return out


def grid(pictures: Sequence[Image.Image], columns: int = 4, gap: int = 6) -> Image.Image:
    """Pictures side by side, ``columns`` per row, top-aligned."""
    columns = max(1, min(columns, len(pictures)))
    rows = [pictures[i : i + columns] for i in range(0, len(pictures), columns)]
    width = max(p.width for p in pictures)
    heights = [max(p.height for p in row) for row in rows]
    out = Image.new("RGB", (columns * (width + gap) - gap, sum(heights) + gap * (len(rows) - 1)), "white")
    y = 0
    for row, height in zip(rows, heights, strict=True):
        for j, picture in enumerate(row):
            out.paste(picture, (j * (width + gap), y))
        y += height + gap
    return out


def aligned(image: torch.Tensor, boxes: torch.Tensor, words: Sequence[str], regions: Sequence[int],
            scale: int = SCALE) -> Image.Image:  # fmt: skip
    """Each word's best region: the regions (R, 4) XYXY pixel boxes (region 0: the whole image) that some word
    chose, boxed in a colour, and under the image every word in the colour of its region ("*" for the whole
    image)."""
    picture = _pil(image, scale)
    draw, font = ImageDraw.Draw(picture), ImageFont.load_default()
    used = sorted(set(regions))
    colour = {r: BOX_COLOURS[i % len(BOX_COLOURS)] for i, r in enumerate(used)}
    for r in used:
        if r == 0:
            continue
        x1, y1, x2, y2 = (float(v) * scale for v in boxes[r])
        draw.rectangle((x1, y1, x2, y2), outline=colour[r], width=2)
        draw.text((x1 + 2, y1 + 1), str(r), fill=colour[r], font=font)
    lines: list[list[tuple[str, int]]] = [[]]
    for word, r in zip(words, regions, strict=True):
        if sum(len(w) + 4 for w, _ in lines[-1]) + len(word) > WRAP:
            lines.append([])
        lines[-1].append((word, r))
    out = Image.new("RGB", (picture.width, picture.height + LINE * len(lines) + 6), (40, 40, 40))
    out.paste(picture, (0, 0))
    text = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        x = 3
        for word, r in line:
            label = f"{word}[{'*' if r == 0 else r}] "
            text.text((x, picture.height + 3 + LINE * i), label, fill=colour[r], font=font)
            x += int(text.textlength(label, font=font))
    return out
