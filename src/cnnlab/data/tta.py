"""Test-time augmentation: average softmax outputs over views of each image.

- ``flip``: the image and its mirror.
- ``10crop``: four corners and the centre, and their mirrors (Krizhevsky et al. 2012, section 4.1), taken with
  torchvision's ``ten_crop``. From the stored images when they are larger than the model input (256 -> 224);
  small images (stored = input size) are zero-padded by 1/8 of their side first, as in pad-and-crop training.
- ``multiscale``: the image resized to 0.875, 1 and 1.125 times the input side, centre-cropped or zero-padded
  back to the input size (for fixed-size models; fully convolutional dense evaluation is the models' job).

Views only help a model that saw their like in training. A LeNet-5 trained on the digits with LeNet's
distortions (±2 px shifts, no flips) errs on 3.6% of the test set, but on 59–89% of the 4-px corner crops
and mirrors of ``10crop`` (measured, 10 epochs): averaging over them took its error to 35%. So
:func:`plan_tta` keeps mirrors only when training flipped (the ``flip`` atom) and corner crops only when it
cropped at random (``crop``, ``pad-crop``, ``scale-jitter``), and says what it left out.

Data knows no models: the model enters as a ``forward`` callable returning logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class TTAPlan:
    """The views of one test-time augmentation that fit a model's training (see :func:`plan_tta`).

    Attributes:
        kind: ``flip``, ``10crop`` or ``multiscale``.
        mirror: include left-right mirrors (training flipped).
        corners: include the four corner crops of ``10crop`` (training cropped at random).
        note: what was left out and why, for the user; None when nothing was.
    """

    kind: str
    mirror: bool = True
    corners: bool = True
    note: str | None = None


_RANDOM_CROPS = ("crop", "pad-crop", "scale-jitter")


def plan_tta(kind: str, augment: str | None) -> TTAPlan:
    """The views of ``kind`` that a model trained with the ``augment`` spec has seen the like of.

    Mirrors need the ``flip`` atom in training, corner crops a random crop. An unknown augmentation (None, a
    checkpoint that did not record it) keeps every view, as asked.
    """
    from cnnlab.data.augment import augmentation_atoms

    if kind not in TTA_KINDS:
        raise UnknownNameError("test-time augmentation", kind, TTA_KINDS)
    if kind == "multiscale" or augment is None:
        return TTAPlan(kind)
    atoms = augmentation_atoms(augment)
    mirror = "flip" in atoms
    corners = kind == "10crop" and any(a in atoms for a in _RANDOM_CROPS)
    missing = [what for what, seen in (("flips", mirror), ("random crops", corners or kind == "flip")) if not seen]
    if not missing:
        return TTAPlan(kind)
    if kind == "flip":
        kept = "the image alone (as without --tta)"
    elif corners:
        kept = "5 crops without mirrors"
    elif mirror:
        kept = "the centre crop and its mirror, without the corner crops"
    else:
        kept = "the centre crop alone (as without --tta)"
    note = f"--tta {kind}: {kept}: training used no {' and no '.join(missing)} (augmentation {augment!r})."
    return TTAPlan(kind, mirror, corners, note)


def views(
    images: torch.Tensor, kind: str, input_size: tuple[int, int], mirror: bool = True, corners: bool = True
) -> torch.Tensor:
    """(B, C, H, W) float images at the stored size -> (V, B, C, h, w) views at the model's input size.

    ``mirror=False`` leaves out the mirrored views, ``corners=False`` the corner crops of ``10crop`` (centre
    first, then its mirror): for models trained without flips or random crops, see :func:`plan_tta`.
    """
    if kind == "flip" or (kind == "10crop" and not corners):
        base = TF.center_crop(images, list(input_size))
        return torch.stack([base, base.flip(-1)] if mirror else [base])
    if kind == "10crop":
        if tuple(images.shape[-2:]) == tuple(input_size):
            images = F.pad(images, [max(1, round(min(input_size) / 8))] * 4)
        crops = TF.ten_crop(images, list(input_size)) if mirror else TF.five_crop(images, list(input_size))
        return torch.stack(crops)  # (10 or 5, B, C, h, w)
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
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    preprocessing: Preprocessing,
    kind: str | TTAPlan,
) -> torch.Tensor:
    """Mean softmax over the views (``kind``, or a :class:`TTAPlan` of it) of uint8 images (B, C, H, W) at the
    stored size -> (B, num_classes)."""
    plan = kind if isinstance(kind, TTAPlan) else TTAPlan(kind)
    stack = views(images.float() / 255, plan.kind, preprocessing.input_size[1:], plan.mirror, plan.corners)
    v, b = stack.shape[:2]
    logits = forward(preprocessing.standardize(stack.flatten(0, 1)))  # all views in one pass
    return logits.softmax(dim=1).view(v, b, -1).mean(dim=0)


@torch.no_grad()
def evaluate_tta(
    forward: Callable[[torch.Tensor], torch.Tensor],
    loader,
    preprocessing: Preprocessing,
    kind: str | TTAPlan,
    topk: int = 5,
) -> dict[str, float]:
    """Loss (NLL of the averaged probabilities), top-1 and top-k error over ``loader.raw_batches()``.

    ``kind``: every view of a kind, or a :class:`TTAPlan` from :func:`plan_tta` (the views training covered).
    """
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
