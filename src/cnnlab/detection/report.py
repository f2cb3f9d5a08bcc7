"""Pictures of a detector's work: boxes drawn on images, precision–recall curves per class, the worst misses (the
pieces of a run's report, :func:`cnnlab.detection.runs.write_report`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from cnnlab.errors import DataError

PREDICTED = (230, 40, 40)  # red: what the detector found
TRUE = (40, 180, 60)  # green: the ground truth
UPSCALE = 3  # 128 px canvases drawn at 384 px so labels are readable


def read_image(path: str | Path, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (C, H, W) of an image file, converted to ``channels`` and resized to ``size`` (H, W).

    Raises:
        DataError: missing or undecodable file.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    except FileNotFoundError:
        raise DataError(f"No image at {path}.") from None
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"Cannot read {path} as an image ({error}).") from None
    return data.view(size[0], size[1], -1).permute(2, 0, 1).contiguous()


def _canvas(image: torch.Tensor):
    from PIL import Image

    array = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    picture = Image.fromarray(array.permute(1, 2, 0).contiguous().numpy())
    return picture.resize((picture.width * UPSCALE, picture.height * UPSCALE), Image.Resampling.NEAREST)


def _draw_boxes(picture, boxes: torch.Tensor, texts: Sequence[str], colour: tuple[int, int, int]) -> None:
    from PIL import ImageDraw

    draw = ImageDraw.Draw(picture)
    for box, text in zip(boxes.tolist(), texts, strict=True):
        x1, y1, x2, y2 = (v * UPSCALE for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=2)
        if text:
            draw.text((x1 + 2, max(y1 - 11, 0)), text, fill=colour)


def render(image: torch.Tensor, found: dict, classes: Sequence[str], truth: dict | None = None):
    """A PIL image of ``image`` (uint8 C, H, W) with the ground truth (green) and detections (red, class and score)."""
    picture = _canvas(image)
    if truth is not None:
        _draw_boxes(picture, truth["boxes"], [""] * len(truth["boxes"]), TRUE)
    texts = [f"{classes[int(c)]} {float(s):.2f}" for c, s in zip(found["labels"], found["scores"], strict=True)]
    _draw_boxes(picture, found["boxes"], texts, PREDICTED)
    return picture


def draw_detections(
    image: torch.Tensor, found: dict, classes: Sequence[str], path: str | Path, truth: dict | None = None
) -> Path:
    """Write :func:`render` as a PNG."""
    from cnnlab.outputs import output_file

    path = output_file(path, "--out", (".png",), "image")
    render(image, found, classes, truth).save(path)
    return path


def grid(pictures: list, columns: int, path: Path) -> Path:
    from PIL import Image

    width, height = pictures[0].size
    rows = -(-len(pictures) // columns)
    sheet = Image.new("RGB", (columns * (width + 4), rows * (height + 4)), (255, 255, 255))
    for i, picture in enumerate(pictures):
        sheet.paste(picture, ((i % columns) * (width + 4), (i // columns) * (height + 4)))
    sheet.save(path)
    return path


def misses(found: list[dict], truth: list[dict], threshold: float = 0.5, iou: float = 0.5) -> torch.Tensor:
    """Per image, the true boxes no detection with score ≥ ``threshold`` covers at IoU ≥ ``iou`` with its class."""
    from torchvision.ops import box_iou

    counts = []
    for d, t in zip(found, truth, strict=True):
        keep = d["scores"] >= threshold
        boxes, labels = d["boxes"][keep], d["labels"][keep]
        if len(t["boxes"]) == 0:
            counts.append(0)
            continue
        if len(boxes) == 0:
            counts.append(len(t["boxes"]))
            continue
        overlap = box_iou(t["boxes"], boxes) * (t["labels"][:, None] == labels[None, :])
        counts.append(int((overlap.max(1).values < iou).sum()))
    return torch.tensor(counts)


def plot_pr_curves(
    curves: Sequence[tuple[torch.Tensor, torch.Tensor]],
    classes: Sequence[str],
    ap: Sequence[float],
    path: Path,
    title: str,
) -> Path:
    """One precision–recall curve per class (VOC matching at IoU 0.5), its AP in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 5))
    for (recall, precision), name, value in zip(curves, classes, ap, strict=True):
        axes.plot(recall.numpy(), precision.numpy(), label=f"{name}: AP {value:.3f}", linewidth=1.2)
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02), title=title)
    axes.legend(fontsize=7, loc="lower left", ncol=2)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
