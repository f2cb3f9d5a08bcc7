"""Targets beyond labels: per-image boxes and classes, batched by indexing (no per-sample Python), and the
geometry that moves boxes with the pixels they frame.

A loader's targets are any tensor whose first axis is the sample (int labels (N,), clean images (N, C, H, W),
token ids (N, T)), or :class:`BoxTargets`: a variable number of boxes per image, padded to the most any image
has, so ``targets[index]`` gathers a batch in one indexing operation, on the device, like the images.

Coordinates are pixels of the image as the loader holds it, XYXY (left, top, right, bottom), edges on pixel
boundaries: pixel column c spans [c, c + 1), so a box around the whole W-wide image is [0, W]. The box
operations take per-image parameters ((B,) tensors), as the batched augmentations draw them, and agree with
``torchvision.transforms.v2.functional`` on ``tv_tensors.BoundingBoxes`` (tested), which transforms one image
at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cnnlab.errors import DataError

PADDING_LABEL = -1  # the class of a padding slot (and of a box that left the image)


@dataclass
class BoxTargets:
    """Boxes and their classes for N images, padded to M boxes each.

    Attributes:
        boxes: float32 (N, M, 4) XYXY in pixels; padding slots hold zeros.
        labels: int64 (N, M); :data:`PADDING_LABEL` marks a padding slot.
    """

    boxes: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_lists(cls, boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor]) -> BoxTargets:
        """From one (n_i, 4) box tensor and one (n_i,) class tensor per image (n_i may be 0: background)."""
        if len(boxes) != len(labels):
            raise DataError(f"{len(boxes)} box lists but {len(labels)} label lists; give one of each per image.")
        most = max((len(b) for b in boxes), default=0)
        padded = torch.zeros(len(boxes), most, 4)
        classes = torch.full((len(boxes), most), PADDING_LABEL, dtype=torch.int64)
        for i, (b, c) in enumerate(zip(boxes, labels, strict=True)):
            b, c = torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4), torch.as_tensor(c, dtype=torch.int64)
            if len(b) != len(c):
                raise DataError(f"Image {i} has {len(b)} boxes but {len(c)} labels; give one label per box.")
            padded[i, : len(b)], classes[i, : len(c)] = b, c
        return cls(padded, classes)

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def __getitem__(self, index) -> BoxTargets:
        return BoxTargets(self.boxes[index], self.labels[index])

    @property
    def shape(self) -> torch.Size:
        """(N, M): images, box slots (so code that reads ``targets.shape[0]`` works as for label tensors)."""
        return self.labels.shape

    @property
    def device(self) -> torch.device:
        return self.boxes.device

    @property
    def valid(self) -> torch.Tensor:
        """(N, M) bool: the slots that hold a box."""
        return self.labels != PADDING_LABEL

    def to(self, device: torch.device | str, non_blocking: bool = False) -> BoxTargets:
        return BoxTargets(
            self.boxes.to(device, non_blocking=non_blocking), self.labels.to(device, non_blocking=non_blocking)
        )

    def tensor_split(self, pieces: int) -> list[BoxTargets]:
        return [
            BoxTargets(b, c)
            for b, c in zip(self.boxes.tensor_split(pieces), self.labels.tensor_split(pieces), strict=True)
        ]

    def to_lists(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One (boxes (n_i, 4), labels (n_i,)) pair per image: what torchvision's detection models take."""
        return [(b[v], c[v]) for b, c, v in zip(self.boxes, self.labels, self.valid, strict=True)]

    def with_boxes(self, boxes: torch.Tensor) -> BoxTargets:
        return BoxTargets(boxes, self.labels)

    def validate(self, image_size: tuple[int, int], num_classes: int, names: Sequence[str] | None = None) -> None:
        """Refuse boxes a detector cannot learn from, naming the image and the box.

        Args:
            image_size: (H, W) of the images the boxes are in.
            num_classes: object classes, *without* background: labels must be 0 … num_classes − 1.
            names: image names for the messages (default: their indices).

        Raises:
            DataError: a zero-width, negative or out-of-image box, or a label out of range.
        """
        h, w = image_size
        x1, y1, x2, y2 = self.boxes.unbind(-1)
        checks = (
            (~torch.isfinite(self.boxes).all(-1), "has a coordinate that is not a finite number"),
            ((x2 <= x1) | (y2 <= y1), "has zero or negative width or height (XYXY: right > left, bottom > top)"),
            ((x1 < 0) | (y1 < 0) | (x2 > w) | (y2 > h), f"reaches outside the {w}×{h} image"),
            ((self.labels < 0) | (self.labels >= num_classes), None),
        )
        for bad, why in checks:
            hits = (bad & self.valid).nonzero()
            if len(hits):
                i, j = (int(v) for v in hits[0])
                name = names[i] if names is not None else f"image {i}"
                box = [round(float(v), 2) for v in self.boxes[i, j]]
                if why is None:
                    why = (
                        f"has label {int(self.labels[i, j])}, outside 0…{num_classes - 1}: labels count object "
                        f"classes from 0 without a background class ({num_classes} classes here); the detector adds "
                        "background itself"
                    )
                raise DataError(f"{name}: box {j} {box} {why}.")


# ---- box geometry, batched: boxes (B, M, 4) XYXY, one parameter per image -------------------------------------------
def flip_boxes(boxes: torch.Tensor, width: float, mirrored: torch.Tensor | None = None) -> torch.Tensor:
    """Mirror left-right in a ``width``-wide image (x → W − x), where ``mirrored`` (B,) is True (default: all)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    flipped = torch.stack([width - x2, y1, width - x1, y2], -1)
    if mirrored is None:
        return flipped
    return torch.where(mirrored.view(-1, 1, 1).to(boxes.device), flipped, boxes)


def flip_boxes_vertically(boxes: torch.Tensor, height: float, mirrored: torch.Tensor | None = None) -> torch.Tensor:
    """Mirror upside-down (y → H − y), where ``mirrored`` (B,) is True (default: all)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    flipped = torch.stack([x1, height - y2, x2, height - y1], -1)
    if mirrored is None:
        return flipped
    return torch.where(mirrored.view(-1, 1, 1).to(boxes.device), flipped, boxes)


def clamp_boxes(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Clip to the (H, W) image."""
    h, w = size
    limit = boxes.new_tensor([w, h, w, h])
    return torch.minimum(boxes.clamp(min=0), limit)


def crop_boxes(boxes: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Into the (H, W) window whose corner is at (``top``, ``left``) (per image, (B,) or scalars), clipped."""
    top = torch.as_tensor(top, dtype=boxes.dtype, device=boxes.device).reshape(-1, 1)
    left = torch.as_tensor(left, dtype=boxes.dtype, device=boxes.device).reshape(-1, 1)
    shift = torch.stack([left, top, left, top], -1)  # (B or 1, 1, 4)
    return clamp_boxes(boxes - shift, size)


def pad_boxes(boxes: torch.Tensor, padding: int) -> torch.Tensor:
    """After padding every side of the image by ``padding`` pixels."""
    return boxes + padding


def resize_boxes(boxes: torch.Tensor, scale_y: torch.Tensor | float, scale_x: torch.Tensor | float) -> torch.Tensor:
    """After resizing the image by (``scale_y``, ``scale_x``) (per image (B,), or scalars)."""
    sy = torch.as_tensor(scale_y, dtype=boxes.dtype, device=boxes.device).reshape(-1, 1)
    sx = torch.as_tensor(scale_x, dtype=boxes.dtype, device=boxes.device).reshape(-1, 1)
    return boxes * torch.stack([sx, sy, sx, sy], -1)


def affine_boxes(boxes: torch.Tensor, matrix: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Under the pixel-coordinate map p' = A·p + b (``matrix`` (B, 2, 3) = [A | b]): each box becomes the
    smallest box around its four moved corners, clipped to the (H, W) image (as torchvision does)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    corners = torch.stack([torch.stack(c, -1) for c in ((x1, y1), (x2, y1), (x1, y2), (x2, y2))], -2)  # (B,M,4,2)
    matrix = matrix.to(boxes.device, boxes.dtype)
    moved = corners @ matrix[:, None, :, :2].transpose(-1, -2) + matrix[:, None, None, :, 2]  # (B, M, 4, 2)
    low, high = moved.amin(-2), moved.amax(-2)  # (B, M, 2)
    return clamp_boxes(torch.cat([low, high], -1), size)


def normalized_to_pixels(
    forward: torch.Tensor, shift: torch.Tensor, in_size: tuple[int, int], out_size: tuple[int, int]
) -> torch.Tensor:
    """The pixel-coordinate matrix (B, 2, 3) of ``u' = forward·u + shift`` in grid_sample's normalised coordinates
    (``align_corners=False``: u = 2x/W − 1, v = 2y/H − 1), the convention of the batched image warps, from an
    ``in_size`` (H, W) image to an ``out_size`` one."""
    (h, w), (out_h, out_w) = in_size, out_size
    to_norm = forward.new_tensor([[2 / w, 0, -1], [0, 2 / h, -1], [0, 0, 1]])
    to_pixels = forward.new_tensor([[out_w / 2, 0, out_w / 2], [0, out_h / 2, out_h / 2], [0, 0, 1]])
    b = forward.shape[0]
    affine = torch.eye(3, dtype=forward.dtype).repeat(b, 1, 1)
    affine[:, :2, :2], affine[:, :2, 2] = forward, shift
    return (to_pixels @ affine @ to_norm)[:, :2]


def drop_degenerate(targets: BoxTargets, min_size: float = 1.0) -> BoxTargets:
    """Mark boxes narrower or lower than ``min_size`` pixels (e.g. cropped away) as padding, as torchvision's
    ``SanitizeBoundingBoxes`` removes them; the batch keeps its shape."""
    x1, y1, x2, y2 = targets.boxes.unbind(-1)
    keep = targets.valid & (x2 - x1 >= min_size) & (y2 - y1 >= min_size)
    labels = torch.where(keep, targets.labels, torch.full_like(targets.labels, PADDING_LABEL))
    return BoxTargets(torch.where(keep.unsqueeze(-1), targets.boxes, torch.zeros_like(targets.boxes)), labels)
