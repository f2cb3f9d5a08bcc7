"""Fast R-CNN (Girshick 2015) and Faster R-CNN (Ren et al. 2015) on any zoo backbone, from torchvision's parts.

Both share one detection head, torchvision's :class:`~torchvision.models.detection.roi_heads.RoIHeads`:

- **RoI max pooling** (Fast R-CNN section 2.1): each proposal's window of the feature map max-pooled to a fixed
  7×7 grid (``torchvision.ops.roi_pool``, through :class:`RoIMaxPool`: torchvision's own detectors use RoIAlign,
  which came later (Mask R-CNN, 2017));
- two fully connected layers (:class:`BoxHead`, as torchvision's ``TwoMLPHead``), then a softmax over K + 1
  classes and a class-specific box regression (``FastRCNNPredictor``); the multi-task loss is cross-entropy +
  smooth L1 (section 2.3);
- **hierarchical sampling** (section 2.3): the batch's images (2 in the paper) × ``rois_per_image`` RoIs (64), 25 %
  foreground (IoU ≥ 0.5 with a ground-truth box; the ground-truth boxes themselves are added to the proposals, as
  in the paper's code); every other RoI is background. The paper's background lower bound (IoU ≥ 0.1, "a
  heuristic for hard example mining") is not offered by torchvision's sampler: here every RoI below 0.5 may be
  drawn as background;
- at test time the class-specific boxes, a score threshold and per-class NMS (``torchvision.ops.batched_nms``).

Fast R-CNN takes proposals from outside (selective search, :mod:`cnnlab.detection.selective_search`); Faster
R-CNN makes them with a region proposal network on the same features (torchvision's ``AnchorGenerator``,
``RPNHead`` and ``RegionProposalNetwork``), trained jointly with the head ("approximate joint training", section
3.2: the RoI pooling's gradient with respect to the proposal coordinates is ignored).

Labels: cnnlab's data label objects 0 … K − 1; torchvision's heads reserve 0 for background, so the detectors add
one on the way in and subtract it on the way out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import RoIPool

from cnnlab.detection.backbone import DetectorBackbone
from cnnlab.errors import ConfigError

Detections = list[dict[str, torch.Tensor]]  # per image: boxes (n, 4) XYXY px, scores (n,), labels (n,) in 0 … K − 1


class StageTimer:
    """Wall seconds per stage of inference (proposals / cnn / heads / nms), summed over calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started


@contextmanager
def _no_timer(stage: str):
    yield


class RoIMaxPool(nn.Module):
    """``torchvision.ops.roi_pool`` behind the interface ``RoIHeads`` calls (features dict, proposals, sizes)."""

    def __init__(self, output_size: int, spatial_scale: float):
        super().__init__()
        self.pool = RoIPool((output_size, output_size), spatial_scale)

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor], image_shapes) -> torch.Tensor:
        return self.pool(features["0"].float(), [p.float() for p in proposals])  # (R, C, size, size); no bf16 kernel


class BoxHead(nn.Module):
    """The two fully connected layers of the Fast R-CNN head (torchvision's ``TwoMLPHead``, with ``nn.ReLU``
    modules instead of functional ReLUs, so that deconvnet and guided backpropagation hooks reach them when a
    detection is explained)."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.fc6, self.relu6 = nn.Linear(in_channels, width), nn.ReLU()
        self.fc7, self.relu7 = nn.Linear(width, width), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu7(self.fc7(self.relu6(self.fc6(x.flatten(1)))))  # (R, C·7·7) -> (R, width)


def make_roi_heads(
    backbone: DetectorBackbone,
    num_classes: int,
    pool_size: int = 7,
    head_width: int = 256,
    rois_per_image: int = 64,
    foreground_fraction: float = 0.25,
    score_threshold: float = 0.05,
    nms_threshold: float = 0.3,
    detections_per_image: int = 100,
) -> RoIHeads:
    """The Fast R-CNN head on ``backbone``'s features for ``num_classes`` object classes (+ background)."""
    pool = RoIMaxPool(pool_size, 1.0 / backbone.stride)
    head = BoxHead(backbone.out_channels * pool_size * pool_size, head_width)
    predictor = FastRCNNPredictor(head_width, num_classes + 1)
    return RoIHeads(
        pool,
        head,
        predictor,
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=rois_per_image,
        positive_fraction=foreground_fraction,
        bbox_reg_weights=None,  # torchvision's (10, 10, 5, 5): targets scaled to unit variance, as the paper does
        score_thresh=score_threshold,
        nms_thresh=nms_threshold,
        detections_per_img=detections_per_image,
    )


def compress_fc(roi_heads: RoIHeads, rank: int) -> None:
    """Fast R-CNN section 3.1: replace each fully connected layer W (u × v) of the head by two, Σ_t V_tᵀ then U_t,
    from its truncated SVD W ≈ U_t Σ_t V_tᵀ: u·v parameters become t·(u + v), fewer when t < uv / (u + v).

    Raises:
        ConfigError: ``rank`` is not a positive whole number below the layers' smaller side.
    """
    head = roi_heads.box_head
    for name in ("fc6", "fc7"):
        layer = getattr(head, name)
        if not isinstance(layer, nn.Linear):
            continue  # compressed already
        u, v = layer.weight.shape
        if not isinstance(rank, int) or not 1 <= rank < min(u, v):
            raise ConfigError(f"--svd-rank must be a whole number from 1 to {min(u, v) - 1} for {name} ({u}×{v}).")
        with torch.no_grad():
            left, sigma, right_t = torch.linalg.svd(layer.weight.float(), full_matrices=False)
            first = nn.Linear(v, rank, bias=False)
            second = nn.Linear(rank, u)
            first.weight.copy_(sigma[:rank, None] * right_t[:rank])  # (t, v)
            second.weight.copy_(left[:, :rank])  # (u, t)
            second.bias.copy_(layer.bias)
        setattr(head, name, nn.Sequential(first, second).to(layer.weight.device))


def _to_torchvision(targets: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    return [{"boxes": boxes, "labels": labels + 1} for boxes, labels in targets]


def _from_torchvision(detections: list[dict[str, torch.Tensor]]) -> Detections:
    return [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - 1} for d in detections]


class _RoIDetector(nn.Module):
    """What Fast and Faster R-CNN share: the backbone, the RoI head, training losses and detection."""

    method = ""
    needs_proposals = False
    loss_names: tuple[str, ...] = ("loss_classifier", "loss_box_reg")

    def __init__(self, backbone: DetectorBackbone, roi_heads: RoIHeads, num_classes: int):
        super().__init__()
        self.backbone, self.roi_heads, self.num_classes = backbone, roi_heads, num_classes

    def _proposals(self, images: ImageList, features: dict, targets, proposals) -> tuple[list[torch.Tensor], dict]:
        raise NotImplementedError

    def forward(self, images: torch.Tensor, targets, proposals: list[torch.Tensor] | None = None) -> dict:
        """The training losses of a batch (a dict): ``targets`` one (boxes, labels 0 … K − 1) pair per image."""
        tv_targets = _to_torchvision(targets)
        image_list = ImageList(images, [tuple(images.shape[-2:])] * images.shape[0])
        features = {"0": self.backbone(images).float()}  # boxes, RoI pooling and NMS in float32 (see detect)
        boxes, losses = self._proposals(image_list, features, tv_targets, proposals)
        _, head_losses = self.roi_heads(features, boxes, image_list.image_sizes, tv_targets)
        return {**losses, **head_losses}

    def detect(self, images: torch.Tensor, proposals: list[torch.Tensor] | None = None, timer=None) -> Detections:
        """Boxes, scores and labels (0 … K − 1) for each image (in eval mode)."""
        timer = timer or _no_timer
        sizes = [tuple(images.shape[-2:])] * images.shape[0]
        with timer("cnn"):
            # float32 from here on: under bf16 autocast box coordinates would be quantised (8 px steps at 128 px,
            # and batched_nms's class offsets), and torchvision's roi_pool has no bf16 CPU kernel
            features = {"0": self.backbone(images).float()}
        with timer("proposals"):
            boxes, _ = self._proposals(ImageList(images, sizes), features, None, proposals)
        heads = self.roi_heads
        with timer("heads"):
            pooled = heads.box_head(heads.box_roi_pool(features, boxes, sizes))
            class_logits, box_regression = (t.float() for t in heads.box_predictor(pooled))
        with timer("nms"):  # box decoding, score threshold, per-class NMS
            found, scores, labels = heads.postprocess_detections(class_logits, box_regression, boxes, sizes)
        return [{"boxes": b, "scores": s, "labels": c - 1} for b, s, c in zip(found, scores, labels, strict=True)]


class FastRCNN(_RoIDetector):
    """Fast R-CNN: external proposals (one (P, 4) tensor per image), RoI max pooling, the two-layer head."""

    method = "fast-rcnn"
    needs_proposals = True

    def _proposals(self, images, features, targets, proposals):
        if proposals is None:
            raise ConfigError("Fast R-CNN needs proposals for every image (selective search).")
        return [p.to(device=features["0"].device, dtype=torch.float32) for p in proposals], {}


class FasterRCNN(_RoIDetector):
    """Faster R-CNN: a region proposal network on the backbone's features feeds the same RoI head.

    Args:
        anchor_sizes: anchor sides in pixels (sqrt of area), chosen for the data (:func:`anchors_for`).
        aspect_ratios: anchor height / width.
        rpn_train_proposals, rpn_test_proposals: proposals kept after the RPN's NMS (paper: 2000 / 300 for photos).
    """

    method = "faster-rcnn"
    loss_names = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg")

    def __init__(
        self,
        backbone: DetectorBackbone,
        roi_heads: RoIHeads,
        num_classes: int,
        anchor_sizes: Sequence[float],
        aspect_ratios: Sequence[float],
        rpn_train_proposals: int = 300,
        rpn_test_proposals: int = 100,
    ):
        super().__init__(backbone, roi_heads, num_classes)
        anchors = AnchorGenerator((tuple(float(s) for s in anchor_sizes),), (tuple(float(r) for r in aspect_ratios),))
        head = RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0])
        # Paper section 3.1.2 / 3.3: 256 anchors per image, half positive (IoU ≥ 0.7 or the best for a box),
        # negative below 0.3; NMS at 0.7 on the proposals.
        self.rpn = RegionProposalNetwork(
            anchors,
            head,
            fg_iou_thresh=0.7,
            bg_iou_thresh=0.3,
            batch_size_per_image=256,
            positive_fraction=0.5,
            pre_nms_top_n={"training": 2 * rpn_train_proposals, "testing": 2 * rpn_test_proposals},
            post_nms_top_n={"training": rpn_train_proposals, "testing": rpn_test_proposals},
            nms_thresh=0.7,
        )

    def _proposals(self, images, features, targets, proposals):
        return self.rpn(images, features, targets)


def anchors_for(boxes: torch.Tensor, count: int = 3) -> tuple[list[float], list[float]]:
    """Anchor sizes and aspect ratios for a dataset's training boxes (N, 4): ``count`` sizes (√area) at evenly
    spaced quantiles and ``count`` height/width ratios likewise (Faster R-CNN's 3 scales × 3 ratios, placed where
    this data's objects are rather than at the paper's 128–512 px photos)."""
    if len(boxes) == 0:
        raise ConfigError("The training split has no boxes to choose anchors from.")
    sides = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp_min(1).sqrt()
    ratios = (boxes[:, 3] - boxes[:, 1]).clamp_min(1) / (boxes[:, 2] - boxes[:, 0]).clamp_min(1)
    q = torch.linspace(0.5 / count, 1 - 0.5 / count, count)
    return [round(float(s), 1) for s in sides.quantile(q)], [round(float(r), 2) for r in ratios.quantile(q)]
