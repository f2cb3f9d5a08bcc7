"""OverFeat's greedy merging of predicted boxes (Sermanet et al. 2014, "OverFeat: integrated recognition,
localization and detection using convolutional networks", section 4.3 "Combining predictions"), the step that
turns the many boxes a sliding-window regressor predicts (every location, every scale) into a few detections by
*accumulating* them rather than suppressing all but one (NMS).

The paper's algorithm, per class, on the set B of predicted boxes:

1. (b₁*, b₂*) = argmin over pairs b₁ ≠ b₂ of B of ``match_score(b₁, b₂)``;
2. if ``match_score(b₁*, b₂*) > t``, stop;
3. otherwise replace b₁* and b₂* in B by ``box_merge(b₁*, b₂*)``, and repeat.

The paper gives the two functions in one sentence each: match_score is "the sum of the distance between centers
of the two bounding boxes and the intersection area of the boxes", box_merge "the average of the bounding
boxes' coordinates", and a merged box's score "cumulatively adding the detection class outputs associated with
the input windows from which each bounding box was predicted". Read literally the match score adds a length to
an area and *grows* with the overlap, so it cannot be what makes overlapping boxes merge first; this module
reads it as a dissimilarity made of the same two ingredients, in units that do not depend on the image size
(our reading, stated so it can be changed):

    match_score(b₁, b₂) = ‖c₁ − c₂‖ / s  +  (1 − |b₁ ∩ b₂| / min(|b₁|, |b₂|))

with c the centres, s = the mean of the two boxes' mean sides ((w + h) / 2), |·| areas. It is 0 for identical
boxes, 0.5 for two equal squares shifted by a quarter side, 1 for a half-side shift, and ≥ 1 for disjoint boxes;
the default threshold ``t = 1`` merges boxes that overlap by about half or more.

box_merge: the coordinates' average weighted by confidence, and the merged box carries the *sum* of the scores
(the paper's accumulation) and the sum of the weights, so a box merged from many is the confidence-weighted mean
of all its members whatever the order of merging (``weighting="count"``: the plain mean of the members, the
paper's "average"). ``score="max"`` keeps the largest member score instead of the sum (an NMS-like score).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cnnlab.errors import ConfigError, DataError

WEIGHTINGS = ("confidence", "count")
SCORES = ("sum", "max")


def _match_score(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """:func:`match_score` on float64 arrays (NumPy: the merging loop makes hundreds of tiny calls, where a
    NumPy call costs ~1 µs and a torch call ~10 µs)."""
    centres1 = (boxes1[:, :2] + boxes1[:, 2:]) / 2  # (N, 2)
    centres2 = (boxes2[:, :2] + boxes2[:, 2:]) / 2  # (M, 2)
    size1 = boxes1[:, 2:] - boxes1[:, :2]  # (N, 2) w, h
    size2 = boxes2[:, 2:] - boxes2[:, :2]
    scale = (size1.mean(1)[:, None] + size2.mean(1)[None, :]) / 2  # (N, M) px: the mean side of the pair
    distance = np.sqrt(((centres1[:, None, :] - centres2[None, :, :]) ** 2).sum(2))  # (N, M) px
    top_left = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    bottom_right = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(2)  # (N, M) px²
    smaller = np.minimum(size1.prod(1)[:, None], size2.prod(1)[None, :])  # (N, M) px²
    return distance / np.maximum(scale, 1e-9) + 1 - intersection / np.maximum(smaller, 1e-9)


def match_score(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """The dissimilarity of every pair: (N, 4) and (M, 4) XYXY boxes -> float64 (N, M) (formula in the module
    docstring; 0 for identical boxes, smaller merges first)."""
    return torch.from_numpy(_match_score(boxes1.double().numpy(), boxes2.double().numpy()))


@dataclass
class MergedBoxes:
    """The result of :func:`greedy_merge`.

    Attributes:
        boxes: float (R, 4) XYXY, the merged boxes (a box merged with none is itself).
        scores: (R,) accumulated scores (sum of members', or their max).
        labels: int64 (R,) classes.
        members: int64 (N,): for each input box, the index of the merged box it went into.
        counts: int64 (R,): how many input boxes each merged box holds.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    members: torch.Tensor
    counts: torch.Tensor


def _merge_one_class(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, weighting: str, score: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Greedy merging of one class's float64 boxes (n, 4) and scores (n,): returns the n slots' boxes and
    scores, for each input the slot it ended in, and which slots are still alive (the merged boxes)."""
    n = len(boxes)
    boxes, scores = boxes.copy(), scores.copy()
    weights = scores.copy() if weighting == "confidence" else np.ones_like(scores)
    owner = np.arange(n)  # input i lives in slot owner[i]
    alive = np.ones(n, dtype=bool)
    dissimilarity = _match_score(boxes, boxes)  # (n, n)
    np.fill_diagonal(dissimilarity, np.inf)
    # each row's minimum and its first column, kept up to date: a merge changes two columns, so finding the best
    # pair costs O(n) instead of an O(n²) search of the matrix
    row_min, row_arg = dissimilarity.min(1), dissimilarity.argmin(1)
    for _ in range(n - 1):
        i = int(np.argmin(row_min))  # ties: the first pair in row-major order
        j = int(row_arg[i])
        if not row_min[i] <= threshold:  # also stops on inf (a single box left) and NaN
            break
        i, j = min(i, j), max(i, j)  # slot i takes the merged box, slot j dies
        total = weights[i] + weights[j]
        if total > 0:
            boxes[i] = (weights[i] * boxes[i] + weights[j] * boxes[j]) / total
        else:  # zero confidences: a plain mean
            boxes[i] = (boxes[i] + boxes[j]) / 2
        weights[i] = total
        scores[i] = scores[i] + scores[j] if score == "sum" else max(scores[i], scores[j])
        alive[j] = False
        owner[owner == j] = i
        row = _match_score(boxes[i : i + 1], boxes)[0]  # (n,): the merged box against every slot
        row[~alive] = np.inf
        row[i] = np.inf
        dissimilarity[i], dissimilarity[:, i] = row, row
        dissimilarity[j], dissimilarity[:, j] = np.inf, np.inf
        # rows whose minimum was at column i or j: search again; the others: column i may be their new minimum
        stale = (row_arg == i) | (row_arg == j)
        stale[i] = True
        fresh = ~stale & ((row < row_min) | ((row == row_min) & (i < row_arg)))
        row_min[fresh], row_arg[fresh] = row[fresh], i
        stale_rows = np.flatnonzero(stale)
        row_min[stale_rows] = dissimilarity[stale_rows].min(1)
        row_arg[stale_rows] = dissimilarity[stale_rows].argmin(1)
        row_min[j] = np.inf
    return boxes, scores, owner, alive


def greedy_merge(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    threshold: float = 1.0,
    weighting: str = "confidence",
    score: str = "sum",
) -> MergedBoxes:
    """OverFeat's greedy merging, class by class (boxes of different classes never merge).

    Args:
        boxes: (N, 4) XYXY boxes (pixels), positive width and height.
        scores: (N,) confidences ≥ 0 (class probabilities or scores).
        labels: (N,) int classes.
        threshold: stop when the best pair's :func:`match_score` exceeds this (dimensionless; 1 ≈ boxes
            overlapping by half).
        weighting: ``"confidence"`` (coordinates averaged weighted by score) or ``"count"`` (plain mean).
        score: ``"sum"`` (the paper's accumulation) or ``"max"``.

    Returns:
        :class:`MergedBoxes`, merged boxes grouped by class (ascending), in the order of their first member
        within a class. Costs O(N²) memory per class and about O(N) work per merge. Measured (2026-11-29, the
        2-core VM at load average ~9.5, best of 5): 400 boxes in 4 classes 0.05–0.07 s, 300 boxes of one class
        (216 merges) 0.11 s.

    Raises:
        DataError: shapes that do not match, boxes with no area, negative scores.
        ConfigError: an unknown weighting or score, a negative threshold.
    """
    if weighting not in WEIGHTINGS or score not in SCORES:
        raise ConfigError(
            f"greedy_merge: weighting must be one of {', '.join(WEIGHTINGS)} and score one of {', '.join(SCORES)}; "
            f"got {weighting!r}, {score!r}."
        )
    if not threshold >= 0:
        raise ConfigError(f"greedy_merge: threshold must be ≥ 0, got {threshold}.")
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != (len(boxes),) or labels.shape != (len(boxes),):
        raise DataError(
            f"greedy_merge takes boxes (N, 4), scores (N,) and labels (N,); got {tuple(boxes.shape)}, "
            f"{tuple(scores.shape)}, {tuple(labels.shape)}."
        )
    if len(boxes) and ((boxes[:, 2:] <= boxes[:, :2]).any() or (scores < 0).any()):
        raise DataError("greedy_merge needs boxes with positive width and height and scores ≥ 0.")

    out_boxes, out_scores, out_labels, out_counts = [], [], [], []
    members = torch.empty(len(boxes), dtype=torch.int64)
    merged_so_far = 0
    for k in labels.unique().tolist():  # sorted
        mine = torch.nonzero(labels == k).squeeze(1)
        merged, merged_scores, owner, alive = (
            torch.from_numpy(a)
            for a in _merge_one_class(
                boxes[mine].double().numpy(), scores[mine].double().numpy(), threshold, weighting, score
            )
        )
        slots = torch.nonzero(alive).squeeze(1)
        new_index = torch.full((len(mine),), -1, dtype=torch.int64)
        new_index[slots] = torch.arange(len(slots)) + merged_so_far
        members[mine] = new_index[owner]
        out_boxes.append(merged[slots].to(boxes.dtype))
        out_scores.append(merged_scores[slots].to(scores.dtype))
        out_labels.append(torch.full((len(slots),), k, dtype=torch.int64))
        out_counts.append(torch.bincount(owner, minlength=len(mine))[slots])
        merged_so_far += len(slots)
    if not out_boxes:
        return MergedBoxes(
            boxes.new_zeros(0, 4), scores.new_zeros(0), torch.zeros(0, dtype=torch.int64), members, members.clone()
        )
    return MergedBoxes(
        torch.cat(out_boxes), torch.cat(out_scores), torch.cat(out_labels), members, torch.cat(out_counts)
    )
