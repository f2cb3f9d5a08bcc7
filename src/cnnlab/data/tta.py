"""Test-time augmentation: average softmax outputs over views of each image.

- ``flip``: the image and its mirror.
- ``10crop``: four corners and the centre, and their mirrors (Krizhevsky et al. 2012, section 4.1), taken with
  torchvision's ``ten_crop``. From the stored images when they are larger than the model input (256 -> 224);
  small images (stored = input size) are zero-padded by 1/8 of their side first, as in pad-and-crop training.
- ``multiscale``: the image resized to 0.875, 1 and 1.125 times the input side, centre-cropped or zero-padded
  back to the input size (for fixed-size models; fully convolutional dense evaluation is the models' job).

Data knows no models: the model enters as a ``forward`` callable returning logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from cnnlab.data.preprocessing import Preprocessing
from cnnlab.errors import UnknownNameError

TTA_KINDS = ("flip", "10crop", "multiscale")
SCALES = (0.875, 1.0, 1.125)


def ten_crop_boxes(height: int, width: int, size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(top, left, h, w) of the five crops of ``ten_crop`` (each also mirrored): corners, then centre."""
    h, w = size
    centre = (round((height - h) / 2), round((width - w) / 2))
    return [(0, 0, h, w), (0, width - w, h, w), (height - h, 0, h, w), (height - h, width - w, h, w), (*centre, h, w)]


def views(images: torch.Tensor, kind: str, input_size: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) float images at the stored size -> (V, B, C, h, w) views at the model's input size."""
    if kind == "flip":
        base = TF.center_crop(images, list(input_size))
        return torch.stack([base, base.flip(-1)])
    if kind == "10crop":
        if tuple(images.shape[-2:]) == tuple(input_size):
            images = F.pad(images, [max(1, round(min(input_size) / 8))] * 4)
        return torch.stack(TF.ten_crop(images, list(input_size)))  # (10, B, C, h, w)
    if kind == "multiscale":
        out = []
        for scale in SCALES:
            side = [max(1, round(s * scale)) for s in input_size]
            resized = TF.resize(TF.center_crop(images, list(input_size)), side, antialias=True)
            out.append(TF.center_crop(resized, list(input_size)))  # crops when larger, zero-pads when smaller
        return torch.stack(out)
    raise UnknownNameError("test-time augmentation", kind, TTA_KINDS)


@torch.no_grad()
def tta_probabilities(
    forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, preprocessing: Preprocessing, kind: str
) -> torch.Tensor:
    """Mean softmax over the views of uint8 images (B, C, H, W) at the stored size -> (B, num_classes)."""
    stack = views(images.float() / 255, kind, preprocessing.input_size[1:])  # (V, B, C, h, w)
    v, b = stack.shape[:2]
    logits = forward(preprocessing.standardize(stack.flatten(0, 1)))  # all views in one pass
    return logits.softmax(dim=1).view(v, b, -1).mean(dim=0)


@torch.no_grad()
def evaluate_tta(
    forward: Callable[[torch.Tensor], torch.Tensor], loader, preprocessing: Preprocessing, kind: str, topk: int = 5
) -> dict[str, float]:
    """Loss (NLL of the averaged probabilities), top-1 and top-k error over ``loader.raw_batches()``."""
    nll = correct1 = correctk = 0.0
    seen = 0
    for images, labels in loader.raw_batches():
        probs = tta_probabilities(forward, images, preprocessing, kind)  # (B, K)
        top = probs.topk(min(topk, probs.shape[1]), dim=1).indices
        hits = top == labels.unsqueeze(1)
        nll += float(-probs.gather(1, labels.unsqueeze(1)).clamp_min(1e-12).log().sum())
        correct1 += float(hits[:, 0].sum())
        correctk += float(hits.any(dim=1).sum())
        seen += labels.shape[0]
    return {"loss": nll / seen, "top1_error": 1 - correct1 / seen, "top5_error": 1 - correctk / seen, "samples": seen}
