"""R-CNN's post-hoc learners (Girshick et al. 2014, "Rich feature hierarchies for accurate object detection and
semantic segmentation", section 2.3 and appendices B–C): one linear SVM per class with hard-negative mining, and
a class-specific ridge regression from a proposal's features to its box correction. scikit-learn does the
fitting (``LinearSVC``: liblinear, as the paper; ``Ridge``); what is written here is the sample selection,
the mining loop and the box encoding around them.

**Samples.** Every sample is a box with its CNN features: a ground-truth box (``labels`` = its class) or a
proposal (``labels`` = −1), and ``max_ious`` (N, K): its IoU with the most-overlapping object of each class
in its image (1 for a ground-truth box and its own class). For the SVM of class k:

- positives: the ground-truth boxes of class k only (section 2.3; not the proposals near them, which the
  fine-tuning stage counts as positives at IoU ≥ 0.5);
- negatives: every box with IoU < 0.3 with all objects of class k (``max_ious[:, k] < 0.3``), including
  ground-truth boxes of other classes; boxes in between are ignored. The paper chose 0.3 by a grid search over
  0, 0.1, …, 0.5 and reports that 0.5 cost 5 mAP points and 0 cost 4 (section 2.3).

**Streaming, and what is in memory.** R-CNN cached the features of every proposal of every training image
(~200 GB for VOC 2007). Here the features come as a *stream*: an iterable of :class:`FeatureBatch` (e.g. one
image, or a few, at a time from the CNN) that is read once to start and once per mining round, in the same order
each time (sample ids are positions in the stream). In memory at any time: one batch, all positive features
(P × D), and per class a bounded cache of at most ``max_negatives`` negative features (K × max_negatives × D
float32: 10 classes × 5,000 × 256 features = 51 MB), plus the K SVMs. The features of the other negatives are
computed again on each pass (the CNN forward pass is the price of not caching them).

**Hard-negative mining** (the standard method the paper cites: Felzenszwalb et al. 2010; Sung & Poggio
1994), in steps:

1. Read the stream once: keep all positives and, per class, ``initial_negatives`` negatives chosen
   uniformly at random (a reservoir sample, seeded); train each class's SVM on them.
2. Each round, read the stream again; per class, score every negative not in the cache; those inside the margin
   or misclassified (score > −1: "hard") join the cache. When a cache overflows, the easiest cached negatives
   (lowest score) are evicted. Retrain on positives + cache. (The released R-CNN code retrains within a pass,
   whenever enough new hard negatives have accumulated, and evicts those scoring below −1.2; here the SVM is
   refitted once per pass, so a round's choices depend only on the previous round's SVM.)
3. Stop after ``rounds`` rounds, or earlier when a round finds no new hard negative for any class (the mining
   has converged: every negative is outside the margin of the current SVM).

The SVM is liblinear's L2-regularised hinge loss (``LinearSVC(loss="hinge")``, the paper's choice) with
C = 10⁻³, positives weighted 2 and a bias feature of scale 10 (the released R-CNN code's ``-w1 2 -B 10``),
on features rescaled to a mean L2 norm of 20 (the code's ``feat_norm_mean``) so C means the same for any
backbone; the scale is folded into the returned weights, which apply to the raw features.

**Box regression** (appendix C): per class, ridge regression (λ = 1000) from the features of proposals with
IoU ≥ 0.6 with their ground-truth box to the R-CNN box encoding of that box relative to the proposal,
t = ((x* − x)/w, (y* − y)/h, log(w*/w), log(h*/h)) of centres and sizes (torchvision's ``BoxCoder`` with
weights (1, 1, 1, 1)), on the same rescaled features.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torchvision.models.detection._utils import BoxCoder  # torchvision's own R-CNN box encoding (no public path)
from torchvision.ops import box_iou

from cnnlab.errors import ConfigError, DataError

NEGATIVE_IOU = 0.3  # a box overlapping every object of the class less than this is a negative (R-CNN's grid search)
HARD_SCORE = -1.0  # a negative scoring above this is inside the margin (or wrong): a hard negative
REGRESSION_IOU = 0.6  # proposals this close to their ground-truth box train the box regressor (appendix C)
FEATURE_NORM = 20.0  # features are rescaled to this mean L2 norm before fitting (R-CNN's feat_norm_mean)


def box_coder() -> BoxCoder:
    """The R-CNN box encoding: centre offsets in box sizes, log size ratios (weights 1, 1, 1, 1)."""
    return BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))


def encode_boxes(targets: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
    """(N, 4) XYXY ground truth relative to (N, 4) XYXY proposals -> (N, 4) (t_x, t_y, t_w, t_h)."""
    return box_coder().encode_single(targets.float(), proposals.float())


def decode_boxes(deltas: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
    """(N, 4) (t_x, t_y, t_w, t_h) applied to (N, 4) XYXY proposals -> (N, 4) XYXY boxes."""
    return box_coder().decode_single(deltas.float(), proposals.float())


@dataclass
class FeatureBatch:
    """Features of some boxes and what they are (see the module docstring).

    Attributes:
        features: float (B, D).
        labels: int64 (B,): the class of a ground-truth box, −1 for a proposal.
        max_ious: float (B, K): IoU with the most-overlapping object of each class in the box's image.
    """

    features: torch.Tensor
    labels: torch.Tensor
    max_ious: torch.Tensor

    def check(self, num_classes: int | None = None) -> None:
        b = self.features.shape[0]
        if self.features.ndim != 2 or self.labels.shape != (b,) or self.max_ious.ndim != 2 or len(self.max_ious) != b:
            raise DataError(
                f"A feature batch needs features (B, D), labels (B,) and max_ious (B, K); got "
                f"{tuple(self.features.shape)}, {tuple(self.labels.shape)}, {tuple(self.max_ious.shape)}."
            )
        k = self.max_ious.shape[1] if num_classes is None else num_classes
        if self.max_ious.shape[1] != k:
            raise DataError(f"max_ious has {self.max_ious.shape[1]} columns but there are {k} classes.")
        if len(self.labels) and (int(self.labels.min()) < -1 or int(self.labels.max()) >= k):
            raise DataError(
                f"labels must be −1 (a proposal) or a class 0…{k - 1}, got {self.labels.unique().tolist()}."
            )


def max_ious_per_class(boxes: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor, num_classes: int):
    """IoU of each of an image's boxes (N, 4) with the most-overlapping object of each class -> (N, K) (0 for a
    class absent from the image): the ``max_ious`` of :class:`FeatureBatch`."""
    out = torch.zeros(len(boxes), num_classes)
    if len(gt_boxes) and len(boxes):
        ious = box_iou(boxes.float(), gt_boxes.float())  # (N, G)
        out.scatter_reduce_(1, gt_labels.long()[None].expand(len(boxes), -1), ious, reduce="amax")
    return out


Stream = Iterable[FeatureBatch] | Callable[[], Iterable[FeatureBatch]]


def _batches(stream: Stream | FeatureBatch, num_classes: int | None = None) -> Iterable[FeatureBatch]:
    if isinstance(stream, FeatureBatch):  # everything in memory at once: a stream of one batch
        stream = [stream]
    for batch in stream() if callable(stream) else stream:
        batch.check(num_classes)
        yield batch


@dataclass
class ClassSVMs:
    """One linear SVM per class: ``score = features @ weights.T + biases``.

    Attributes:
        weights: float32 (K, D), for raw (not rescaled) features.
        biases: float32 (K,).
        feature_scale: the factor the features were multiplied by when fitting (folded into ``weights``).
        added: per class, per mining round, the int64 ids (positions in the stream) of the negatives added to
            the cache (round 0: the initial random sample).
        cache_sizes: per class, the cache size after each round.
        positives: int64 (K,), ground-truth boxes per class.
    """

    weights: torch.Tensor
    biases: torch.Tensor
    feature_scale: float
    added: list[list[torch.Tensor]] = field(default_factory=list)
    cache_sizes: list[list[int]] = field(default_factory=list)
    positives: torch.Tensor | None = None

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N, K) SVM scores (> 0: the class)."""
        return features.float() @ self.weights.T + self.biases


@dataclass
class _NegativeCache:
    """At most ``capacity`` negative features of one class and their stream ids."""

    capacity: int
    features: torch.Tensor
    ids: torch.Tensor

    def add(self, features: torch.Tensor, ids: torch.Tensor, scores: torch.Tensor | None, weights, bias) -> None:
        self.features = torch.cat([self.features, features])
        self.ids = torch.cat([self.ids, ids])
        if len(self.ids) > self.capacity:  # evict the easiest: lowest score under the current SVM
            everyone = self.features @ weights + bias
            keep = torch.argsort(everyone, descending=True, stable=True)[: self.capacity]
            keep = keep.sort().values
            self.features, self.ids = self.features[keep], self.ids[keep]


def _fit_svm(positives: torch.Tensor, negatives: torch.Tensor, c: float, positive_weight: float, seed: int):
    """One LinearSVC on rescaled features -> (weights (D,), bias), float32 tensors."""
    from sklearn.svm import LinearSVC

    if len(positives) == 0 or len(negatives) == 0:  # nothing to separate: score everything as the class is absent
        return torch.zeros(positives.shape[1] if len(positives) else negatives.shape[1]), torch.tensor(-1.0)
    x = torch.cat([positives, negatives]).double().numpy()
    y = torch.cat([torch.ones(len(positives)), -torch.ones(len(negatives))]).numpy()
    svm = LinearSVC(
        C=c,
        loss="hinge",  # liblinear's L2-regularised L1-loss SVM, as R-CNN
        dual=True,
        class_weight={1: positive_weight, -1: 1.0},
        intercept_scaling=10.0,  # R-CNN's bias feature -B 10: the bias is regularised 100× less
        max_iter=10_000,
        random_state=seed,
    )
    svm.fit(x, y)
    return torch.from_numpy(svm.coef_[0]).float(), torch.tensor(float(svm.intercept_[0]))


def train_class_svms(
    stream: Stream | FeatureBatch,
    num_classes: int,
    rounds: int = 3,
    initial_negatives: int = 1000,
    max_negatives: int = 5000,
    c: float = 1e-3,
    positive_weight: float = 2.0,
    feature_scale: float | None = None,
    seed: int = 0,
) -> ClassSVMs:
    """Per-class linear SVMs with hard-negative mining, from a stream of feature batches (module docstring).

    Args:
        stream: an iterable of :class:`FeatureBatch` that can be iterated again (a list, a DataLoader-like
            object), or a function returning a fresh iterator; same batches in the same order each time. One
            :class:`FeatureBatch` holding every sample works too (small data, all in memory).
        num_classes: K.
        rounds: mining rounds after the initial fit (the paper converged in one pass; more cost more passes).
        initial_negatives: per class, the random negatives of the first fit.
        max_negatives: per class, the most negatives held in memory.
        c: the SVM's C (on features rescaled to mean norm 20).
        positive_weight: weight of a positive's loss relative to a negative's.
        feature_scale: multiply features by this before fitting; default: 20 / (mean L2 norm of the positives
            and initial negatives).
        seed: of the initial sample and liblinear.

    Returns:
        :class:`ClassSVMs` with (K, D) weights and (K,) biases as float32 tensors (checkpoint-ready).

    Raises:
        DataError: malformed batches, an empty stream.
        ConfigError: a non-positive count or C.
    """
    if num_classes < 1 or rounds < 0 or initial_negatives < 1 or max_negatives < initial_negatives or c <= 0:
        raise ConfigError(
            "train_class_svms needs num_classes ≥ 1, rounds ≥ 0, 1 ≤ initial_negatives ≤ max_negatives and c > 0; "
            f"got {num_classes}, {rounds}, {initial_negatives}, {max_negatives}, {c}."
        )
    generator = torch.Generator().manual_seed(seed)

    # step 1: positives and a reservoir sample of negatives per class (one pass)
    positive_features: list[torch.Tensor] = []
    positive_labels: list[torch.Tensor] = []
    reservoir = [[torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0] for _ in range(num_classes)]  # feats, ids, seen
    offset = 0
    for batch in _batches(stream, num_classes):
        features = batch.features.float()
        ids = torch.arange(offset, offset + len(features))
        offset += len(features)
        gt = batch.labels >= 0
        positive_features.append(features[gt])
        positive_labels.append(batch.labels[gt])
        for k in range(num_classes):
            negative = (batch.max_ious[:, k] < NEGATIVE_IOU) & (batch.labels != k)
            _reservoir_add(reservoir[k], features[negative], ids[negative], initial_negatives, generator)
    if offset == 0:
        raise DataError("train_class_svms got an empty feature stream.")
    positives_all = torch.cat(positive_features)  # (P, D)
    positive_classes = torch.cat(positive_labels)
    dimension = positives_all.shape[1]
    if feature_scale is None:
        sample = torch.cat([positives_all, *[r[0].reshape(-1, dimension) for r in reservoir]])
        mean_norm = float(sample.norm(dim=1).mean()) if len(sample) else 0.0
        feature_scale = FEATURE_NORM / mean_norm if mean_norm > 0 else 1.0

    caches = []
    weights = torch.zeros(num_classes, dimension)
    biases = torch.zeros(num_classes)
    added: list[list[torch.Tensor]] = [[] for _ in range(num_classes)]
    sizes: list[list[int]] = [[] for _ in range(num_classes)]
    for k in range(num_classes):
        feats = reservoir[k][0].reshape(-1, dimension)
        caches.append(_NegativeCache(max_negatives, feats * feature_scale, reservoir[k][1]))
        added[k].append(reservoir[k][1].sort().values)
        sizes[k].append(len(feats))
        weights[k], biases[k] = _fit_svm(
            positives_all[positive_classes == k] * feature_scale, caches[k].features, c, positive_weight, seed
        )

    # step 2: mining rounds
    for _ in range(rounds):
        new = [[] for _ in range(num_classes)]
        offset = 0
        for batch in _batches(stream, num_classes):
            features = batch.features.float() * feature_scale
            ids = torch.arange(offset, offset + len(features))
            offset += len(features)
            scores = features @ weights.T + biases  # (B, K)
            for k in range(num_classes):
                hard = (batch.max_ious[:, k] < NEGATIVE_IOU) & (batch.labels != k) & (scores[:, k] > HARD_SCORE)
                hard &= ~torch.isin(ids, caches[k].ids)
                if hard.any():
                    caches[k].add(features[hard], ids[hard], scores[hard, k], weights[k], biases[k])
                    new[k].append(ids[hard])
        for k in range(num_classes):
            found = torch.cat(new[k]) if new[k] else torch.zeros(0, dtype=torch.int64)
            added[k].append(found)
            sizes[k].append(len(caches[k].ids))
            if len(found):
                weights[k], biases[k] = _fit_svm(
                    positives_all[positive_classes == k] * feature_scale, caches[k].features, c, positive_weight, seed
                )
        if not any(len(a[-1]) for a in added):
            break  # step 3: converged

    positives = torch.bincount(positive_classes, minlength=num_classes)
    return ClassSVMs(weights * feature_scale, biases.clone(), feature_scale, added, sizes, positives)


def _reservoir_add(state: list, features: torch.Tensor, ids: torch.Tensor, capacity: int, generator) -> None:
    """Reservoir sampling (Vitter's algorithm R), vectorised over a batch: after any number of calls, ``state``
    holds a uniform random sample of ``capacity`` of all the rows offered. ``state`` = [features, ids, seen]."""
    held, held_ids, seen = state
    if held.numel() == 0:
        held = features.new_zeros(0, features.shape[1])
    take = min(capacity - len(held), len(features))  # fill the reservoir first
    if take > 0:
        held, held_ids = torch.cat([held, features[:take]]), torch.cat([held_ids, ids[:take]])
        features, ids, seen = features[take:], ids[take:], seen + take
    if len(features):
        # row r (the (seen + r + 1)-th offered) replaces slot s ~ U{0 … seen + r} when s < capacity
        counts = torch.arange(seen + 1, seen + len(features) + 1, dtype=torch.float64)
        slots = (torch.rand(len(features), generator=generator, dtype=torch.float64) * counts).long()
        accepted = torch.nonzero(slots < capacity).squeeze(1)
        # a slot replaced twice in the batch keeps the later row, as the sequential algorithm does
        last = {int(s): int(r) for s, r in zip(slots[accepted], accepted, strict=True)}
        if last:
            slot_index, row_index = torch.tensor(list(last)), torch.tensor(list(last.values()))
            held[slot_index], held_ids[slot_index] = features[row_index], ids[row_index]
        seen += len(features)
    state[:] = [held, held_ids, seen]


# ---- box regression ------------------------------------------------------------------------------------------------
@dataclass
class BoxRegressor:
    """Per-class linear maps from features to box encodings: ``t = features @ weights[k] + biases[k]``.

    Attributes:
        weights: float32 (K, D, 4), for raw features.
        biases: float32 (K, 4).
        samples: int64 (K,): the proposals each class was fitted on (0: identity, no correction).
    """

    weights: torch.Tensor
    biases: torch.Tensor
    samples: torch.Tensor


def fit_box_regressor(
    features: torch.Tensor,
    proposals: torch.Tensor,
    gt_boxes: torch.Tensor,
    classes: torch.Tensor,
    num_classes: int | None = None,
    lam: float = 1000.0,
    min_iou: float = REGRESSION_IOU,
    feature_scale: float | None = None,
) -> BoxRegressor:
    """R-CNN's class-specific bounding-box regression (appendix C), fitted by ``sklearn.linear_model.Ridge``.

    Args:
        features: float (N, D), the proposals' features.
        proposals: (N, 4) XYXY.
        gt_boxes: (N, 4) XYXY, each proposal's most-overlapping ground-truth box.
        classes: int64 (N,), that box's class.
        num_classes: K (default: the largest class + 1).
        lam: ridge penalty λ (the paper: 1000, on features of mean norm 20).
        min_iou: only proposals with IoU ≥ this with their box train (the paper: 0.6).
        feature_scale: multiply features by this before fitting (default: 20 / their mean L2 norm).

    Only the proposals with IoU ≥ ``min_iou`` are held (their features are gathered here); for a stream,
    gather those from each batch and call this once.

    Returns:
        :class:`BoxRegressor` with (K, D, 4) weights and (K, 4) biases (zeros for a class with no sample).

    Raises:
        DataError: shapes that disagree.
    """
    from sklearn.linear_model import Ridge

    n = len(features)
    if features.ndim != 2 or proposals.shape != (n, 4) or gt_boxes.shape != (n, 4) or classes.shape != (n,):
        raise DataError(
            f"fit_box_regressor needs features (N, D), proposals (N, 4), gt_boxes (N, 4) and classes (N,); got "
            f"{tuple(features.shape)}, {tuple(proposals.shape)}, {tuple(gt_boxes.shape)}, {tuple(classes.shape)}."
        )
    if lam < 0:
        raise ConfigError(f"fit_box_regressor: lam (the ridge penalty) must be ≥ 0, got {lam}.")
    k_total = num_classes if num_classes is not None else (int(classes.max()) + 1 if n else 0)
    ious = box_iou(proposals.float(), gt_boxes.float()).diagonal() if n else torch.zeros(0)
    chosen = ious >= min_iou
    if feature_scale is None:
        norms = features[chosen].float().norm(dim=1)
        feature_scale = FEATURE_NORM / float(norms.mean()) if len(norms) and float(norms.mean()) > 0 else 1.0
    dimension = features.shape[1]
    weights = torch.zeros(k_total, dimension, 4)
    biases = torch.zeros(k_total, 4)
    samples = torch.zeros(k_total, dtype=torch.int64)
    targets = encode_boxes(gt_boxes, proposals)  # (N, 4)
    for k in range(k_total):
        mine = chosen & (classes == k)
        samples[k] = int(mine.sum())
        if samples[k] == 0:
            continue
        ridge = Ridge(alpha=lam, fit_intercept=True)
        ridge.fit((features[mine].double() * feature_scale).numpy(), targets[mine].double().numpy())
        weights[k] = torch.from_numpy(ridge.coef_.T).float() * feature_scale  # (D, 4) for raw features
        biases[k] = torch.from_numpy(ridge.intercept_).float()
    return BoxRegressor(weights, biases, samples)


def apply_box_regressor(
    regressor: BoxRegressor, features: torch.Tensor, proposals: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """Move each proposal by its class's regressor: (N, D) features, (N, 4) proposals, (N,) classes -> (N, 4)
    XYXY boxes."""
    if len(features) == 0:
        return proposals.new_zeros(0, 4)
    deltas = torch.einsum("nd,ndc->nc", features.float(), regressor.weights[classes]) + regressor.biases[classes]
    return decode_boxes(deltas, proposals)
