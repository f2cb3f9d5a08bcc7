"""Detection as a task of the engine: a batch is images and their boxes (and, for the detectors that take them,
each image's proposals); the loss is the detector's multi-task loss; each epoch scores mAP on the validation split
(which chooses ``best.pt``) and on the test split (only reported).

mAP is torchmetrics' :class:`~torchmetrics.detection.MeanAveragePrecision` (pycocotools underneath): COCO's mAP
averaged over IoU 0.50:0.05:0.95 and mAP at IoU 0.5 (the VOC criterion, 101-point interpolated as COCO does;
:mod:`cnnlab.detection.ap` gives VOC's 11-point and all-point AP).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cnnlab.data.targets import BoxTargets
from cnnlab.train import Task

if TYPE_CHECKING:
    from cnnlab.train.setup import TrainingRun


@dataclass
class ProposalTargets(BoxTargets):
    """Boxes and classes, plus each image's region proposals (padded), batched together by the same indexing.

    Attributes:
        proposals: float32 (N, P, 4) XYXY pixels, the first ``counts[i]`` rows of image i are real.
        counts: int64 (N,) proposals per image.
    """

    proposals: torch.Tensor = None  # type: ignore[assignment]
    counts: torch.Tensor = None  # type: ignore[assignment]

    def __getitem__(self, index) -> ProposalTargets:
        return ProposalTargets(self.boxes[index], self.labels[index], self.proposals[index], self.counts[index])

    def to(self, device, non_blocking: bool = False) -> ProposalTargets:
        move = {"device": device, "non_blocking": non_blocking}
        return ProposalTargets(
            self.boxes.to(**move), self.labels.to(**move), self.proposals.to(**move), self.counts.to(**move)
        )

    def tensor_split(self, pieces: int) -> list[ProposalTargets]:
        parts = (t.tensor_split(pieces) for t in (self.boxes, self.labels, self.proposals, self.counts))
        return [ProposalTargets(*p) for p in zip(*parts, strict=True)]

    def with_boxes(self, boxes: torch.Tensor) -> ProposalTargets:
        return ProposalTargets(boxes, self.labels, self.proposals, self.counts)

    def proposal_lists(self) -> list[torch.Tensor]:
        """One (P_i, 4) tensor per image."""
        return [p[: int(n)] for p, n in zip(self.proposals, self.counts, strict=True)]

    @classmethod
    def attach(cls, targets: BoxTargets, proposals: list[torch.Tensor]) -> ProposalTargets:
        """``targets`` with one (P_i, 4) proposal tensor per image."""
        most = max((len(p) for p in proposals), default=0)
        padded = torch.zeros(len(proposals), max(most, 1), 4)
        for i, p in enumerate(proposals):
            padded[i, : len(p)] = p
        counts = torch.tensor([len(p) for p in proposals], dtype=torch.int64)
        return cls(targets.boxes, targets.labels, padded, counts)


def proposals_of(targets: BoxTargets) -> list[torch.Tensor] | None:
    return targets.proposal_lists() if isinstance(targets, ProposalTargets) else None


def unwrap(model: nn.Module) -> nn.Module:
    """The detector inside a DDP, EMA or torch.compile wrapper."""
    for wrapper in ("module", "_orig_mod"):
        model = getattr(model, wrapper, model)
    return model


def collect_detections(detector: nn.Module, loader: Any, timer=None) -> tuple[list[dict], list[dict]]:
    """(detections, ground truth) of every image of ``loader``, on the CPU: ``detector`` in eval mode, no autograd.
    Detections have boxes, scores and labels (0 … K − 1); ground truth has boxes and labels."""
    detector = unwrap(detector)
    found, truth = [], []
    with torch.no_grad():
        for images, targets in loader.batches():
            batch = detector.detect(images, proposals_of(targets), timer=timer)
            found += [{k: v.detach().float().cpu() if k != "labels" else v.cpu() for k, v in d.items()} for d in batch]
            truth += [{"boxes": b.cpu(), "labels": c.cpu()} for b, c in targets.to_lists()]
    return found, truth


def map_scores(found: list[dict], truth: list[dict], class_metrics: bool = False) -> dict[str, Any]:
    """torchmetrics' COCO mAP (``map``), mAP@0.5 (``map_50``) and, with ``class_metrics``, per-class values."""
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=class_metrics)
    metric.update(found, truth)
    return metric.compute()


def score_detections(detector: nn.Module, loader: Any, class_metrics: bool = False, timer=None) -> dict[str, Any]:
    """mAP of ``detector`` over ``loader`` (:func:`collect_detections`, then :func:`map_scores`)."""
    return map_scores(*collect_detections(detector, loader, timer), class_metrics=class_metrics)


class DetectionTask(Task):
    """A detector trained by the engine. The detector's ``forward(images, targets, proposals)`` returns its losses
    (a dict) in training mode; ``detect(images, proposals)`` finds boxes in eval mode."""

    name = "detection"
    main = "detector"
    resume_command = "cnnlab detect train --resume"

    def __init__(self, detector: nn.Module, loss_names: tuple[str, ...], validation: bool = True):
        self.models = {"detector": detector}
        self.loss_names = loss_names
        self.sums = {"loss": torch.float64, **{name: torch.float64 for name in loss_names}}
        self.selection = "val_miss" if validation else None  # 1 − validation mAP@0.5: lower is better

    def loss(self, part: str, nets: Mapping[str, Any], batch) -> tuple[torch.Tensor, dict]:
        images, targets = batch
        losses = nets["detector"](images, targets.to_lists(), proposals_of(targets))
        total = sum(losses.values())
        n = images.shape[0]
        with torch.no_grad():
            sums = {"loss": total.detach().double() * n}
            sums |= {
                name: losses[name].detach().double() * n if name in losses else total.new_zeros((), dtype=torch.float64)
                for name in self.loss_names
            }
        return total, sums

    def count(self, batch) -> int:
        return int(batch[0].shape[0])

    def split(self, batch, pieces: int):
        images, targets = batch
        if pieces == 1:
            return [batch]
        return [
            (x, y) for x, y in zip(images.tensor_split(pieces), targets.tensor_split(pieces), strict=True) if len(x)
        ]

    def progress_text(self, sums: Mapping[str, float], seen: int) -> str:
        return f"loss {sums['loss'] / max(seen, 1):.4f}"

    def evaluate(self, nets: Mapping[str, nn.Module], run: TrainingRun, distributed: bool) -> dict[str, float]:
        row = {}
        detector = nets["detector"]
        fit = getattr(unwrap(detector), "fit_post_hoc", None)
        if fit is not None:  # R-CNN: SVMs and box regressors on this epoch's fine-tuned features
            fit(run.train_loader)
        for split, loader in (("val", getattr(run, "val_loader", None)), ("test", run.test_loader)):
            if loader is None:
                continue
            scores = score_detections(detector, loader)
            row[f"{split}_map50"] = float(scores["map_50"])
            row[f"{split}_map"] = float(scores["map"])
            if split == "val":
                row["val_miss"] = 1.0 - row["val_map50"]
        return row

    def epoch_text(self, row: Mapping[str, float]) -> str:
        validation = f"val mAP@0.5 {row['val_map50']:.3f}  " if "val_map50" in row else ""
        return f"{validation}test mAP@0.5 {row['test_map50']:.3f}  test mAP@[.5:.95] {row['test_map']:.3f}"

    def record(self, run: TrainingRun) -> dict:
        detector = unwrap(self.models["detector"])
        return {
            "detector": detector.spec,
            "preprocessing": run.preprocessing.to_dict(),
            "classes": list(run.dataset.classes),
            "data": run.config.data,
        }
