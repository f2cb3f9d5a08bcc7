"""Pascal VOC average precision, computed here (torchmetrics' ``MeanAveragePrecision`` is COCO's: 101-point
interpolation and a different matching rule), with the precision–recall curves for plotting.

The VOC protocol (Everingham et al. 2010, "The PASCAL Visual Object Classes (VOC) challenge", section 4.2), per
class, in steps:

1. Pool the class's detections over all images and sort them by score, highest first (a stable sort: ties keep
   the order given, image by image).
2. Walk down the list: a detection is matched to the ground-truth box of its image and class that it overlaps
   most (IoU, ``torchvision.ops.box_iou``). It is a true positive when that IoU ≥ ``iou_threshold`` and the box
   was not matched before; a second detection of a matched box is a false positive (duplicates count against the
   detector: it must suppress them). Boxes marked *difficult* are neither: a detection matched to one is ignored,
   and they are not counted among the positives.
3. Precision and recall after each detection: cumulative TP / (TP + FP), and TP / (number of positives).
4. AP from the curve (:func:`voc_ap`): ``"all-point"`` (VOC 2010 on) is the area under the precision envelope
   (precision made non-increasing from the right), summed where recall changes; ``"11-point"`` (VOC 2007) is the
   mean of the envelope's value at recall 0, 0.1, …, 1 (0 beyond the highest recall reached).

Where this differs from other tools, on purpose:

- The devkit's MATLAB code accepts IoU ≥ the threshold; its Python port (``voc_eval.py``) IoU > it. Here ≥,
  as the devkit and COCO.
- IoU is on continuous pixel edges (a box [0, W] spans W pixels), not the devkit's "+1" pixel-index convention.
- COCO (pycocotools, torchmetrics) matches a detection to the best *unmatched* box above the threshold; VOC to
  the best-overlapping box, matched or not (step 2). They differ only when a detection overlaps two boxes of its
  class above the threshold.
- A class without positives has AP = NaN (VOC would divide by zero; torchmetrics reports −1), and the mean AP
  is over the classes that have positives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

from cnnlab.errors import ConfigError, DataError

AP_METHODS = ("all-point", "11-point")


def voc_ap(recall: torch.Tensor, precision: torch.Tensor, method: str = "all-point") -> float:
    """Average precision from a precision–recall curve (one point per ranked detection).

    Args:
        recall: (D,) non-decreasing, in [0, 1].
        precision: (D,) in [0, 1].
        method: ``"all-point"`` (VOC 2010–2012) or ``"11-point"`` (VOC 2007).

    Returns:
        AP in [0, 1]; 0 for an empty curve.

    Raises:
        ConfigError: an unknown method.
        DataError: curves of different lengths or not 1-D.
    """
    if method not in AP_METHODS:
        raise ConfigError(f"Unknown AP method {method!r}; use one of {', '.join(AP_METHODS)}.")
    recall = torch.as_tensor(recall, dtype=torch.float64)
    precision = torch.as_tensor(precision, dtype=torch.float64)
    if recall.ndim != 1 or recall.shape != precision.shape:
        raise DataError(f"recall and precision must be 1-D and equally long, got {recall.shape}, {precision.shape}.")
    if len(recall) == 0:
        return 0.0
    if method == "11-point":
        # at recall r: the best precision at any recall ≥ r; t = i/10 exactly (np.arange(0, 1.1, 0.1) gives
        # 0.30000000000000004, which would skip a point reached at recall 0.3)
        total = 0.0
        for i in range(11):
            reached = precision[recall >= i / 10]
            total += float(reached.max()) if len(reached) else 0.0
        return total / 11
    zero, one = recall.new_zeros(1), recall.new_ones(1)
    recall_ends = torch.cat([zero, recall, one])  # (D + 2,)
    envelope = torch.cat([zero, precision, zero])
    envelope = envelope.flip(0).cummax(0).values.flip(0)  # non-increasing: the best precision to the right
    steps = torch.nonzero(recall_ends[1:] != recall_ends[:-1]).squeeze(1)  # where recall changes
    return float(((recall_ends[steps + 1] - recall_ends[steps]) * envelope[steps + 1]).sum())


@dataclass
class ClassAP:
    """VOC AP of every class, with the curves.

    Attributes:
        ap: float64 (K,): AP per class; NaN for a class without positives.
        precision: K float64 (D_k,) tensors: precision after each of class k's detections, by score.
        recall: K float64 (D_k,) tensors: recall after each.
        scores: K (D_k,) tensors: the detections' scores, highest first (the curve's thresholds).
        true_positive: K bool (D_k,) tensors: which detections were true positives.
        positives: int64 (K,): ground-truth boxes per class (difficult ones excluded).
        method: the interpolation, ``"all-point"`` or ``"11-point"``.
        iou_threshold: the IoU a true positive needs.
    """

    ap: torch.Tensor
    precision: list[torch.Tensor]
    recall: list[torch.Tensor]
    scores: list[torch.Tensor]
    true_positive: list[torch.Tensor]
    positives: torch.Tensor
    method: str
    iou_threshold: float

    @property
    def mean_ap(self) -> float:
        """The mean of AP over the classes that have positives (NaN when none has)."""
        return float(self.ap.nanmean())


def _check(entries: Sequence[dict], keys: tuple[str, ...], what: str, num_classes: int) -> None:
    for i, entry in enumerate(entries):
        missing = [k for k in keys if k not in entry]
        if missing:
            raise DataError(f"{what} of image {i} lacks {', '.join(missing)}; give a dict with {', '.join(keys)}.")
        boxes, labels = entry["boxes"], entry["labels"]
        if boxes.ndim != 2 or boxes.shape[1] != 4 or len(labels) != len(boxes):
            raise DataError(
                f"{what} of image {i}: boxes must be (n, 4) XYXY with one label each, got boxes "
                f"{tuple(boxes.shape)} and {len(labels)} labels."
            )
        if "scores" in keys and len(entry["scores"]) != len(boxes):
            raise DataError(f"{what} of image {i}: {len(boxes)} boxes but {len(entry['scores'])} scores.")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise DataError(
                f"{what} of image {i} has label {int(labels.min() if labels.min() < 0 else labels.max())}, outside "
                f"0…{num_classes - 1} (object classes only, no background)."
            )


def average_precision_per_class(
    detections: Sequence[dict],
    ground_truths: Sequence[dict],
    iou_threshold: float = 0.5,
    num_classes: int | None = None,
    method: str = "all-point",
) -> ClassAP:
    """VOC AP of every class over a set of images (the protocol in the module docstring).

    Args:
        detections: per image, ``{"boxes": (D, 4) XYXY, "scores": (D,), "labels": (D,) in 0…K−1}`` (the format
            of torchmetrics' ``MeanAveragePrecision``).
        ground_truths: per image, ``{"boxes": (G, 4), "labels": (G,)}``, optionally ``"difficult": (G,) bool``.
        iou_threshold: IoU a detection needs with a box to be a true positive (VOC: 0.5).
        num_classes: K, the object classes (labels 0…K−1, no background); default: the largest label + 1.
        method: ``"all-point"`` or ``"11-point"`` (:func:`voc_ap`).

    Returns:
        :class:`ClassAP`: AP, precision and recall per class.

    Raises:
        DataError: different numbers of images, malformed entries, labels outside 0…K−1.
        ConfigError: an IoU threshold outside (0, 1], or an unknown method.
    """
    if len(detections) != len(ground_truths):
        raise DataError(f"Detections for {len(detections)} images but ground truth for {len(ground_truths)}.")
    if not 0 < iou_threshold <= 1:
        raise ConfigError(f"iou_threshold must be in (0, 1], got {iou_threshold}.")
    if method not in AP_METHODS:
        raise ConfigError(f"Unknown AP method {method!r}; use one of {', '.join(AP_METHODS)}.")
    if num_classes is None:
        labels = [e["labels"] for e in (*detections, *ground_truths) if len(e["labels"])]
        num_classes = int(torch.cat(labels).max()) + 1 if labels else 0
    _check(detections, ("boxes", "scores", "labels"), "Detections", num_classes)
    _check(ground_truths, ("boxes", "labels"), "Ground truth", num_classes)

    aps, precisions, recalls, scores_out, hits_out = [], [], [], [], []
    positives = torch.zeros(num_classes, dtype=torch.int64)
    for k in range(num_classes):
        # each detection's most-overlapping box of its class in its image (IoU, index), image by image
        det_image, det_score, det_iou, det_box, gt_difficult = [], [], [], [], []
        for i, (det, gt) in enumerate(zip(detections, ground_truths, strict=True)):
            mine, theirs = det["labels"] == k, gt["labels"] == k
            boxes, truth = det["boxes"][mine].double(), gt["boxes"][theirs].double()
            best_iou = torch.zeros(len(boxes), dtype=torch.float64)
            best_box = torch.full((len(boxes),), -1, dtype=torch.int64)
            if len(truth) and len(boxes):
                best_iou, best_box = box_iou(boxes, truth).max(1)
            det_iou.append(best_iou)
            det_box.append(best_box)
            det_score.append(det["scores"][mine].double())
            det_image.append(torch.full((len(boxes),), i, dtype=torch.int64))
            difficult = gt.get("difficult")
            gt_difficult.append(
                difficult[theirs].bool() if difficult is not None else torch.zeros(int(theirs.sum()), dtype=torch.bool)
            )
            positives[k] += int((~gt_difficult[-1]).sum())
        if not det_score:  # no images at all: empty curves
            det_score = det_iou = [torch.zeros(0, dtype=torch.float64)]
            det_image = det_box = [torch.zeros(0, dtype=torch.int64)]
        # step 1: the class's detections of all images, by score (stable: ties keep image order)
        scores = torch.cat(det_score)
        order = torch.argsort(scores, descending=True, stable=True)
        scores, images = scores[order], torch.cat(det_image)[order]
        best_iou, best_box = torch.cat(det_iou)[order], torch.cat(det_box)[order]

        # step 2: greedy matching, in score order (sequential: a box once matched turns later hits into FPs)
        hit = torch.zeros(len(scores), dtype=torch.bool)
        ignored = torch.zeros(len(scores), dtype=torch.bool)
        matched = [torch.zeros(len(g), dtype=torch.bool) for g in gt_difficult]
        for d, (i, j, iou) in enumerate(zip(images.tolist(), best_box.tolist(), best_iou.tolist(), strict=True)):
            if j < 0 or iou < iou_threshold:
                continue  # false positive: overlaps no box of its class enough
            if gt_difficult[i][j]:
                ignored[d] = True
            elif not matched[i][j]:
                hit[d] = matched[i][j] = True
        hit, kept_scores = hit[~ignored], scores[~ignored]

        # step 3: the curve; step 4: its AP
        true_positives = hit.cumsum(0).double()  # (D_k,)
        precision = true_positives / torch.arange(1, len(hit) + 1, dtype=torch.float64)
        recall = true_positives / positives[k] if positives[k] else torch.full_like(precision, float("nan"))
        aps.append(voc_ap(recall, precision, method) if positives[k] else float("nan"))
        precisions.append(precision)
        recalls.append(recall)
        scores_out.append(kept_scores)
        hits_out.append(hit)
    return ClassAP(
        torch.tensor(aps, dtype=torch.float64),
        precisions,
        recalls,
        scores_out,
        hits_out,
        positives,
        method,
        iou_threshold,
    )
