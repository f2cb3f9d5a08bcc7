"""Detection building blocks: selective search (synthetic and real canvases, cache, errors), VOC AP (known answers,
torchmetrics), OverFeat's greedy merging (hand-made boxes) and R-CNN's SVMs and box regressor (toy features)."""

import math
import time

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_iou

from cnnlab.detection.ap import average_precision_per_class, voc_ap
from cnnlab.detection.merge import greedy_merge, match_score
from cnnlab.detection.selective_search import (
    SelectiveSearchSettings,
    cache_key,
    propose_all,
    recall_at,
    selective_search,
)
from cnnlab.detection.svm import (
    FeatureBatch,
    apply_box_regressor,
    decode_boxes,
    encode_boxes,
    fit_box_regressor,
    max_ious_per_class,
    train_class_svms,
)
from cnnlab.errors import ConfigError, DataError
from conftest import SHARED_DATASETS, needs_mnist


# ---- selective search ---------------------------------------------------------------------------------------------
def _synthetic_canvas() -> tuple[torch.Tensor, torch.Tensor]:
    """A 96×96 grey canvas with three bright filled rectangles on black, and their boxes."""
    image = torch.zeros(1, 96, 96, dtype=torch.uint8)
    boxes = torch.tensor([[8.0, 10.0, 38.0, 30.0], [50.0, 8.0, 70.0, 50.0], [20.0, 60.0, 80.0, 88.0]])
    for value, (x1, y1, x2, y2) in zip((200, 255, 140), boxes.int().tolist(), strict=True):
        image[0, y1:y2, x1:x2] = value
    return image, boxes


def test_selective_search_finds_the_rectangles_of_a_synthetic_canvas():
    image, truth = _synthetic_canvas()
    boxes = selective_search(image)
    assert boxes.dtype == torch.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert (boxes[:, 2:] > boxes[:, :2]).all() and (boxes >= 0).all() and (boxes <= 96).all()
    assert len(torch.unique(boxes, dim=0)) == len(boxes)  # no duplicates
    assert box_iou(truth, boxes).amax(1).min() >= 0.9  # every rectangle is (nearly) exactly proposed
    assert torch.equal(boxes, selective_search(image))  # the seeded ranking: same list, same order
    rgb = selective_search(image.expand(3, -1, -1).contiguous())
    assert torch.equal(rgb, boxes)  # grey is the same image as its 3-channel copy


def test_selective_search_options_cap_filter_and_upscale():
    image, truth = _synthetic_canvas()
    every = selective_search(image, max_proposals=10_000, min_size=0)
    capped = selective_search(image, max_proposals=3, min_size=0)
    assert torch.equal(capped, every[:3])  # the cap keeps the best-ranked, in order
    big = selective_search(image, min_size=25, max_proposals=10_000)
    assert ((big[:, 2:] - big[:, :2]) >= 25).all() and len(big) < len(every)
    quality = selective_search(image, mode="quality", upscale=2.0)
    assert box_iou(truth, quality).amax(1).min() >= 0.9


def test_selective_search_refuses_bad_input():
    image, _ = _synthetic_canvas()
    with pytest.raises(DataError, match="uint8"):
        selective_search(image.float())
    with pytest.raises(DataError, match=r"\(C, H, W\)"):
        selective_search(image[0])
    with pytest.raises(DataError, match="C = 1"):
        selective_search(torch.zeros(2, 32, 32, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="mode"):
        selective_search(image, mode="slow")
    with pytest.raises(ConfigError, match="max_proposals"):
        selective_search(image, max_proposals=0)
    with pytest.raises(ConfigError, match="does not take upscal"):
        propose_all(image[None], upscal=2)
    with pytest.raises(DataError, match=r"\(N, C, H, W\)"):
        propose_all(image)


def test_selective_search_without_opencv_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cv2(name, *args, **kwargs):
        if name == "cv2":
            raise ImportError("No module named 'cv2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cv2)
    with pytest.raises(ConfigError, match="pip install opencv-contrib-python-headless"):
        selective_search(_synthetic_canvas()[0])


def test_propose_all_caches_atomically_and_times_each_image(tmp_path):
    image, _ = _synthetic_canvas()
    images = torch.stack([image, image.flip(-1), image.flip(-2)])
    first = propose_all(images, cache=tmp_path, workers=0, upscale=1.5)
    assert len(first) == 3 and not first.from_cache and first.seconds.shape == (3,) and (first.seconds > 0).all()
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [f"ss-{cache_key(images, SelectiveSearchSettings(upscale=1.5))}.pt"]
    again = propose_all(images, cache=tmp_path, workers=0, upscale=1.5)
    assert again.from_cache and all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert torch.equal(again.seconds, first.seconds)
    assert torch.equal(first[0], selective_search(image, upscale=1.5))  # the same as one image at a time
    other = propose_all(images, cache=tmp_path, workers=0, upscale=2.0)  # other settings: another file
    assert not other.from_cache and len(list(tmp_path.iterdir())) == 2
    files[0].write_bytes(b"torn")  # a damaged file is recomputed and rewritten, not an error
    repaired = propose_all(images, cache=tmp_path, workers=0, upscale=1.5)
    assert not repaired.from_cache and all(torch.equal(a, b) for a, b in zip(first, repaired, strict=True))


@pytest.mark.slow
def test_propose_all_in_worker_processes_matches_one_process():
    image, _ = _synthetic_canvas()
    images = torch.stack([image, image.flip(-1)] * 4)
    here = propose_all(images, workers=0, chunk=2)
    pooled = propose_all(images, workers=2, chunk=2)  # 8 images ≥ 2 × chunk: two spawned workers
    assert all(torch.equal(a, b) for a, b in zip(here, pooled, strict=True))


@needs_mnist
def test_selective_search_covers_the_digits_of_real_canvases():
    from cnnlab.data.detection import load_detection_dataset

    test = load_detection_dataset("mnist-detection", SHARED_DATASETS, train_size=1, test_size=4, clutter=8).test
    proposals = propose_all(test.images, workers=0)
    truth = [boxes for boxes, _ in test.targets.to_lists()]
    assert recall_at(proposals, truth, 0.5) >= 0.9  # measured: 1.0 on 100 canvases (module docstring)
    assert all(len(p) <= SelectiveSearchSettings.max_proposals for p in proposals)


# ---- VOC average precision ----------------------------------------------------------------------------------------
# Padilla et al.'s worked example (github.com/rafaelpadilla/Object-Detection-Metrics, README): 24 detections of
# 15 objects, ranked by score, true (1) or false (0) positives; AP 24.56 % all-point, 26.84 % 11-point.
PADILLA_HITS = [1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]


def test_voc_ap_known_answers_all_point_and_11_point():
    hits = torch.tensor(PADILLA_HITS, dtype=torch.float64)
    tp = hits.cumsum(0)
    precision, recall = tp / torch.arange(1, 25), tp / 15
    # all-point: the envelope is 1 to recall 1/15, 2/3 to 2/15, 3/7 to 6/15, 7/23 to 7/15
    exact = 1 / 15 + (1 / 15) * (2 / 3) + (4 / 15) * (3 / 7) + (1 / 15) * (7 / 23)
    assert voc_ap(recall, precision) == pytest.approx(exact, abs=1e-12)
    assert voc_ap(recall, precision) == pytest.approx(0.2456, abs=1e-4)
    assert voc_ap(recall, precision, "11-point") == pytest.approx((1 + 2 / 3 + 3 * 3 / 7) / 11, abs=1e-12)
    assert voc_ap(recall, precision, "11-point") == pytest.approx(0.2684, abs=1e-4)
    assert voc_ap(torch.ones(1), torch.ones(1)) == 1.0 and voc_ap(torch.zeros(0), torch.zeros(0)) == 0.0
    with pytest.raises(ConfigError, match="11-point"):
        voc_ap(recall, precision, "101-point")


def _det(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels, dtype=torch.int64)}  # fmt: skip


def _gt(boxes, labels, difficult=None):
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}
    if difficult is not None:
        out["difficult"] = torch.tensor(difficult)
    return out


def test_average_precision_matching_duplicates_and_difficult():
    a, b, c = [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]
    ground_truths = [_gt([a, b], [0, 0]), _gt([c], [1], difficult=[True])]
    detections = [
        _det([a, a, [0, 0, 10, 30], b], [0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0]),  # TP, duplicate FP, IoU 1/3 FP, TP
        _det([c], [0.95], [1]),  # matches a difficult box: ignored
    ]
    result = average_precision_per_class(detections, ground_truths, num_classes=3)
    assert result.true_positive[0].tolist() == [True, False, False, True]
    assert torch.allclose(result.precision[0], torch.tensor([1, 1 / 2, 1 / 3, 1 / 2], dtype=torch.float64))
    assert torch.allclose(result.recall[0], torch.tensor([0.5, 0.5, 0.5, 1.0], dtype=torch.float64))
    assert result.ap[0].item() == pytest.approx(0.5 * 1 + 0.5 * 0.5)  # all-point: 0.75
    eleven = average_precision_per_class(detections, ground_truths, num_classes=3, method="11-point")
    assert eleven.ap[0].item() == pytest.approx((6 * 1 + 5 * 0.5) / 11)
    assert result.positives.tolist() == [2, 0, 0] and len(result.scores[1]) == 0
    assert math.isnan(result.ap[1]) and math.isnan(result.ap[2]) and result.mean_ap == pytest.approx(0.75)
    # a box as large as the IoU threshold allows: IoU exactly 0.5 counts (≥, as the devkit)
    half = average_precision_per_class([_det([[0, 0, 10, 20]], [1.0], [0])], [_gt([a], [0])])
    assert half.ap.tolist() == [1.0]


def _random_fixture(seed: int, images: int = 12, classes: int = 3):
    """Objects on a grid of well-separated cells (a detection never overlaps two objects, where VOC and COCO
    matching would differ), detections jittered around them, duplicates and false alarms, distinct scores."""
    g = torch.Generator().manual_seed(seed)
    detections, ground_truths = [], []
    for _ in range(images):
        cells = torch.randperm(16, generator=g)[: int(torch.randint(1, 6, (1,), generator=g))]
        corners = torch.stack([cells % 4, cells // 4], 1).float() * 60  # 60 px cells, 40 px objects
        gt_boxes = torch.cat([corners + 5, corners + 45], 1)
        gt_labels = torch.randint(0, classes, (len(cells),), generator=g)
        ground_truths.append({"boxes": gt_boxes, "labels": gt_labels})
        jitter = (torch.rand(len(cells) * 2, 4, generator=g) - 0.5) * 30  # some fall below IoU 0.5
        det_boxes = gt_boxes.repeat(2, 1) + jitter
        det_labels = gt_labels.repeat(2)
        det_labels[torch.rand(len(det_labels), generator=g) < 0.2] = torch.randint(0, classes, (1,), generator=g)
        alarm = torch.rand(2, 2, generator=g) * 200
        det_boxes = torch.cat([det_boxes, torch.cat([alarm, alarm + 20], 1)])
        det_labels = torch.cat([det_labels, torch.randint(0, classes, (2,), generator=g)])
        det_boxes[:, 2:] = torch.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 1)
        detections.append({"boxes": det_boxes, "scores": torch.rand(len(det_boxes), generator=g),
                           "labels": det_labels})  # fmt: skip
    return detections, ground_truths


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_agrees_with_torchmetrics(seed):
    from torchmetrics.detection import MeanAveragePrecision

    detections, ground_truths = _random_fixture(seed)
    ours = average_precision_per_class(detections, ground_truths, num_classes=3)
    metric = MeanAveragePrecision(iou_thresholds=[0.5], class_metrics=True)
    metric.update(detections, ground_truths)
    theirs = metric.compute()
    assert theirs["classes"].tolist() == [0, 1, 2]
    # COCO interpolates at 101 recall points, VOC integrates the envelope: they differ by ≤ ~1/101 of the
    # precision range; the matching (well-separated objects) and the curves are the same
    assert torch.allclose(ours.ap.float(), theirs["map_per_class"], atol=0.012)
    assert ours.mean_ap == pytest.approx(float(theirs["map_50"]), abs=0.012)


def test_average_precision_equals_torchmetrics_where_interpolations_agree():
    """Curves whose precision envelope is constant up to recall 1 give the same AP under every interpolation."""
    from torchmetrics.detection import MeanAveragePrecision

    a, b = [0, 0, 10, 10], [50, 50, 70, 70]
    ground_truths = [_gt([a], [0]), _gt([b], [0]), _gt([a, b], [1, 1])]
    detections = [
        _det([[80, 80, 90, 90], a], [0.9, 0.8], [0, 0]),  # class 0: FP, TP, TP -> precision 0, 1/2, 2/3
        _det([b], [0.7], [0]),
        _det([a, b], [0.6, 0.5], [1, 1]),  # class 1: perfect
    ]
    ours = average_precision_per_class(detections, ground_truths)
    eleven = average_precision_per_class(detections, ground_truths, method="11-point")
    metric = MeanAveragePrecision(iou_thresholds=[0.5], class_metrics=True)
    metric.update(detections, ground_truths)
    theirs = metric.compute()
    assert ours.ap.tolist() == pytest.approx([2 / 3, 1.0])
    assert eleven.ap.tolist() == pytest.approx([2 / 3, 1.0])
    assert theirs["map_per_class"].tolist() == pytest.approx([2 / 3, 1.0], abs=1e-6)
    assert float(theirs["map_50"]) == pytest.approx(ours.mean_ap, abs=1e-6)


def test_average_precision_refuses_bad_input():
    with pytest.raises(DataError, match="2 images but ground truth for 1"):
        average_precision_per_class([_det([], [], []), _det([], [], [])], [_gt([], [])])
    with pytest.raises(DataError, match="lacks scores"):
        average_precision_per_class([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}], [_gt([], [])])
    with pytest.raises(DataError, match="label 3, outside 0…2"):
        average_precision_per_class([_det([[0, 0, 1, 1]], [0.5], [3])], [_gt([], [])], num_classes=3)
    with pytest.raises(ConfigError, match="iou_threshold"):
        average_precision_per_class([], [], iou_threshold=0)
    nothing = average_precision_per_class([], [], num_classes=2)
    assert math.isnan(nothing.ap[0]) and len(nothing.precision[1]) == 0


# ---- OverFeat's greedy merging ------------------------------------------------------------------------------------
def test_match_score_values():
    square = torch.tensor([[0.0, 0.0, 8.0, 8.0]])
    shifted = torch.tensor([[0.0, 0.0, 8.0, 8.0], [2.0, 0.0, 10.0, 8.0], [4.0, 0.0, 12.0, 8.0], [20.0, 0, 28, 8]])
    assert match_score(square, shifted)[0].tolist() == pytest.approx([0.0, 0.5, 1.0, 3.5])


def test_greedy_merge_hand_made_boxes():
    boxes = torch.tensor(
        [
            [10.0, 10.0, 30.0, 30.0],  # three boxes around one object ...
            [12.0, 10.0, 32.0, 30.0],
            [10.0, 12.0, 30.0, 32.0],
            [60.0, 60.0, 80.0, 80.0],  # ... one far away ...
            [11.0, 11.0, 31.0, 31.0],  # ... and one on the first object, but of another class
        ]
    )
    scores = torch.tensor([0.5, 0.3, 0.2, 0.9, 0.4])
    labels = torch.tensor([0, 0, 0, 0, 1])
    merged = greedy_merge(boxes, scores, labels)
    assert merged.labels.tolist() == [0, 0, 1] and merged.counts.tolist() == [3, 1, 1]
    assert merged.members.tolist() == [0, 0, 0, 1, 2]
    expected = (0.5 * boxes[0] + 0.3 * boxes[1] + 0.2 * boxes[2]) / 1.0  # confidence-weighted mean of all three
    assert torch.allclose(merged.boxes[0], expected)
    assert merged.scores.tolist() == pytest.approx([1.0, 0.9, 0.4])  # accumulated (summed) confidences
    assert torch.equal(merged.boxes[1:], boxes[3:])
    plain = greedy_merge(boxes, scores, labels, weighting="count", score="max")
    assert torch.allclose(plain.boxes[0], boxes[:3].mean(0)) and plain.scores[0].item() == pytest.approx(0.5)
    none = greedy_merge(boxes, scores, labels, threshold=0.0)  # nothing is identical: nothing merges
    assert len(none.boxes) == 5
    everything = greedy_merge(boxes, scores, torch.zeros(5, dtype=torch.int64), threshold=100.0)
    assert len(everything.boxes) == 1 and everything.scores.item() == pytest.approx(2.3)


def _naive_merge(boxes, scores, threshold):
    """The paper's loop written plainly (one class): the full matrix searched again after every merge."""
    members = [[i] for i in range(len(boxes))]
    current = [(boxes[i].double(), float(scores[i]), float(scores[i])) for i in range(len(boxes))]  # box, weight, score
    while len(current) > 1:
        stacked = torch.stack([c[0] for c in current])
        dissimilarity = match_score(stacked, stacked)
        dissimilarity.fill_diagonal_(float("inf"))
        flat = int(torch.argmin(dissimilarity))
        i, j = divmod(flat, len(current))
        if dissimilarity[i, j] > threshold:
            break
        i, j = min(i, j), max(i, j)
        (bi, wi, si), (bj, wj, sj) = current[i], current[j]
        current[i] = ((wi * bi + wj * bj) / (wi + wj), wi + wj, si + sj)
        members[i] += members.pop(j)
        del current[j]
    return torch.stack([c[0] for c in current]).float(), torch.tensor([c[2] for c in current]), members


@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_merge_equals_the_plain_loop(seed):
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(60, 2, generator=g) * 100
    boxes = torch.cat([corner, corner + 10 + torch.rand(60, 2, generator=g) * 30], 1)
    scores = torch.rand(60, generator=g) + 0.1
    merged = greedy_merge(boxes, scores, torch.zeros(60, dtype=torch.int64), threshold=1.2)
    expected_boxes, expected_scores, members = _naive_merge(boxes, scores, 1.2)
    assert 5 < len(merged.boxes) < 50 and torch.allclose(merged.boxes, expected_boxes, atol=1e-4)
    assert torch.allclose(merged.scores, expected_scores, atol=1e-5)
    assert [sorted(torch.nonzero(merged.members == r).squeeze(1).tolist()) for r in range(len(members))] == [
        sorted(m) for m in members
    ]


def test_greedy_merge_is_fast_on_hundreds_of_boxes_and_refuses_bad_input():
    g = torch.Generator().manual_seed(0)
    corner = torch.rand(400, 2, generator=g) * 200
    boxes = torch.cat([corner, corner + 10 + torch.rand(400, 2, generator=g) * 40], 1)
    labels = torch.randint(0, 4, (400,), generator=g)
    start = time.perf_counter()
    merged = greedy_merge(boxes, torch.rand(400, generator=g), labels)
    assert time.perf_counter() - start < 2.0  # measured 0.05–0.17 s on the loaded 2-core machine
    assert merged.counts.sum() == 400 and len(merged.boxes) < 400
    assert torch.equal(merged.members.bincount(), merged.counts)
    empty = greedy_merge(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    assert empty.boxes.shape == (0, 4)
    with pytest.raises(DataError, match="positive width"):
        greedy_merge(torch.tensor([[5.0, 5, 5, 9]]), torch.ones(1), torch.zeros(1, dtype=torch.int64))
    with pytest.raises(ConfigError, match="weighting"):
        greedy_merge(boxes, torch.ones(400), labels, weighting="area")


# ---- R-CNN's SVMs and box regression ------------------------------------------------------------------------------
def _toy_stream(seed=0, per_batch=50, batches=8, classes=2, dimension=6):
    """Separable toy features: class k's ground-truth boxes at +3 on axis k, background proposals near 0 with
    a few 'hard' ones pushed towards class 0 (+1.2 on axis 0), proposals near an object ignored (IoU 0.5)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        features = torch.randn(per_batch, dimension, generator=g) * 0.3
        labels = torch.full((per_batch,), -1, dtype=torch.int64)
        max_ious = torch.rand(per_batch, classes, generator=g) * 0.25  # background: IoU < 0.3 with everything
        for k in range(classes):
            features[k * 3 : k * 3 + 3, k] += 3.0
            labels[k * 3 : k * 3 + 3] = k
            max_ious[k * 3 : k * 3 + 3, k] = 1.0
        near = slice(classes * 3, classes * 3 + 2)  # IoU 0.5 with class 0: ignored for it
        features[near, 0] += 2.0
        max_ious[near, 0] = 0.5
        hard = slice(per_batch - 3, per_batch)
        features[hard, 0] += 1.2
        out.append(FeatureBatch(features, labels, max_ious))
    return out


def test_svms_separate_toy_features_perfectly():
    stream = _toy_stream()
    svms = train_class_svms(stream, num_classes=2, initial_negatives=40, c=1.0)
    assert svms.weights.shape == (2, 6) and svms.biases.shape == (2,) and svms.weights.dtype == torch.float32
    assert svms.positives.tolist() == [24, 24]
    for batch in stream:
        scores = svms.scores(batch.features)  # raw features: the scale is folded in
        for k in range(2):
            positive = batch.labels == k
            negative = (batch.max_ious[:, k] < 0.3) & ~positive
            assert (scores[positive, k] > 0).all() and (scores[negative, k] < 0).all()


def test_hard_negative_mining_adds_the_hard_ones():
    stream = _toy_stream()
    features = torch.cat([b.features for b in stream])
    labels = torch.cat([b.labels for b in stream])
    max_ious = torch.cat([b.max_ious for b in stream])
    negative = (max_ious[:, 0] < 0.3) & (labels != 0)  # class 0's negatives (ids = positions in the stream)
    options = {"num_classes": 2, "initial_negatives": 5, "max_negatives": 200, "c": 1.0}
    # the SVM before mining (same seed: same random sample, same fit) says which negatives are hard
    start = train_class_svms(stream, rounds=0, **options)
    scores = start.scores(features)[:, 0]
    expected = torch.nonzero(negative & (scores > -1) & ~torch.isin(torch.arange(len(labels)), start.added[0][0]))
    mined = train_class_svms(stream, rounds=3, **options)
    assert torch.equal(mined.added[0][0], start.added[0][0])
    assert negative[start.added[0][0]].all() and start.added[0][0].max() >= 100  # a random sample of the stream
    assert len(expected) > 0 and torch.equal(mined.added[0][1], expected.squeeze(1))  # exactly the hard ones
    pushed = (torch.arange(8)[:, None] * 50 + torch.arange(47, 50)).flatten()  # negatives placed towards class 0
    assert torch.isin(pushed, torch.cat(mined.added[0])).float().mean() > 0.5  # mostly mined
    ignored = (torch.arange(8)[:, None] * 50 + torch.tensor([6, 7])).flatten()  # IoU 0.5 with a class-0 object
    assert not torch.isin(ignored, torch.cat(mined.added[0])).any()
    assert mined.cache_sizes[0][:2] == [5, 5 + len(expected)]
    if len(mined.added[0][-1]) == 0:  # converged: every negative outside the cache is outside the margin
        outside = negative & ~torch.isin(torch.arange(len(labels)), torch.cat(mined.added[0]))
        assert (mined.scores(features)[outside, 0] <= -1 + 1e-4).all()
    # a bounded cache: never more than max_negatives held
    small = train_class_svms(stream, num_classes=2, initial_negatives=5, max_negatives=10, rounds=2, c=1.0)
    assert max(max(s) for s in small.cache_sizes) <= 10


def test_svm_stream_can_be_a_function_and_bad_input_is_refused():
    stream = _toy_stream(batches=3)
    calls = []

    def again():
        calls.append(1)
        return iter(stream)

    svms = train_class_svms(again, num_classes=2, initial_negatives=10, rounds=1, c=1.0)
    assert len(calls) == 2 and svms.weights.shape == (2, 6)
    whole = FeatureBatch(*(torch.cat([getattr(b, f) for b in stream]) for f in ("features", "labels", "max_ious")))
    one = train_class_svms(whole, num_classes=2, initial_negatives=10, rounds=1, c=1.0)  # all in memory at once
    assert one.weights.shape == (2, 6) and one.positives.tolist() == [9, 9]
    with pytest.raises(DataError, match="empty"):
        train_class_svms([], num_classes=2)
    bad = FeatureBatch(torch.zeros(4, 6), torch.tensor([0, 5, -1, -1]), torch.zeros(4, 2))
    with pytest.raises(DataError, match="labels must be −1"):
        train_class_svms([bad], num_classes=2)
    with pytest.raises(ConfigError, match="num_classes"):
        train_class_svms(stream, num_classes=0)


def test_max_ious_per_class():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 20], [50, 50, 60, 60]])
    gt = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 20]])
    out = max_ious_per_class(boxes, gt, torch.tensor([2, 0]), 3)
    assert torch.allclose(out, torch.tensor([[0.5, 0, 1.0], [1.0, 0, 0.5], [0, 0, 0]]))


def test_box_encoding_round_trip_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    corner = torch.rand(50, 2, generator=g) * 100
    proposals = torch.cat([corner, corner + 5 + torch.rand(50, 2, generator=g) * 50], 1)
    targets = proposals + torch.randn(50, 4, generator=g) * 2
    coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
    deltas = encode_boxes(targets, proposals)
    assert torch.allclose(deltas, coder.encode_single(targets, proposals))
    assert torch.allclose(decode_boxes(deltas, proposals), targets, atol=1e-3)
    # the R-CNN formulas by hand: centre offsets in box sizes, log size ratios
    w, h = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    tw, th = targets[:, 2] - targets[:, 0], targets[:, 3] - targets[:, 1]
    ty = (targets[:, 1] + th / 2 - proposals[:, 1] - h / 2) / h
    assert torch.allclose(deltas[:, 1], ty, atol=1e-5) and torch.allclose(deltas[:, 3], torch.log(th / h), atol=1e-5)
    tx = (targets[:, 0] + tw / 2 - proposals[:, 0] - w / 2) / w
    assert torch.allclose(deltas[:, 0], tx, atol=1e-5) and torch.allclose(deltas[:, 2], torch.log(tw / w), atol=1e-5)


def test_ridge_box_regressor_recovers_a_known_linear_map():
    g = torch.Generator().manual_seed(0)
    n, dimension = 600, 8
    features = torch.randn(n, dimension, generator=g)
    true_w = torch.randn(2, dimension, 4, generator=g) * 0.05
    true_b = torch.tensor([[0.01, -0.02, 0.03, 0.0], [0.0, 0.02, -0.01, 0.02]])
    classes = torch.randint(0, 2, (n,), generator=g)
    corner = torch.rand(n, 2, generator=g) * 100
    proposals = torch.cat([corner, corner + 20 + torch.rand(n, 2, generator=g) * 30], 1)
    deltas = torch.einsum("nd,ndc->nc", features, true_w[classes]) + true_b[classes]
    gt_boxes = decode_boxes(deltas, proposals)
    gt_boxes[:50] += 40  # these proposals are far (IoU < 0.6) from their box: excluded from the fit
    regressor = fit_box_regressor(features, proposals, gt_boxes, classes, lam=1e-3)
    assert regressor.weights.shape == (2, dimension, 4) and regressor.biases.shape == (2, 4)
    assert torch.allclose(regressor.weights, true_w, atol=2e-3) and torch.allclose(regressor.biases, true_b, atol=2e-3)
    assert regressor.samples.sum() <= n - 50
    moved = apply_box_regressor(regressor, features[50:], proposals[50:], classes[50:])
    assert torch.allclose(moved, gt_boxes[50:], atol=0.05)
    # the paper's λ = 1000 shrinks the map towards the identity but still moves boxes the right way
    shrunk = fit_box_regressor(features, proposals, gt_boxes, classes)
    before = (proposals[50:] - gt_boxes[50:]).abs().mean()
    after = (apply_box_regressor(shrunk, features[50:], proposals[50:], classes[50:]) - gt_boxes[50:]).abs().mean()
    assert after < before
    # a class without samples keeps its proposals where they are
    empty = fit_box_regressor(features, proposals, gt_boxes, classes, num_classes=3)
    assert empty.samples[2] == 0
    assert torch.allclose(
        apply_box_regressor(empty, features[:3], proposals[:3], torch.tensor([2, 2, 2])), proposals[:3]
    )
