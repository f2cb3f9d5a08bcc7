"""R-CNN (Girshick et al. 2014): region proposals, each warped through the whole CNN, one linear SVM per class.

1. **Proposals**: selective search, class-agnostic (:mod:`cnnlab.detection.selective_search`).
2. **Warping** (appendix A): each proposal is dilated so that, at the warped size, a border of context surrounds the
   original box (the paper: 16 px of 227, a fraction 0.07 of each side; the ``context`` option), then warped
   anisotropically to the CNN's input (bilinear, ``torchvision.ops.roi_align``; outside the image it reads zeros,
   which after normalisation is the mean image, as the paper fills with the mean).
3. **Fine-tuning** (section 2.3): the classifier with K + 1 outputs trained on warped proposals, IoU ≥ 0.5 with a
   ground-truth box counting as that box's class and the rest as background, a quarter of each batch foreground
   (the paper: 32 foreground and 96 background windows per 128). This is the engine's training.
4. **SVMs** (section 2.3): one linear SVM per class on the fine-tuned CNN's penultimate features, positives the
   ground-truth boxes, negatives proposals below IoU 0.3 with every box of the class, with hard-negative mining;
   **box regression** (appendix C): ridge regression from the features to the box offsets of proposals with IoU ≥
   0.6. Both are fitted after every epoch on ``svm_images`` training images (:meth:`RCNN.fit_post_hoc`) and kept as
   buffers, so they are saved with the weights. Features are computed batch by batch and only the SVMs' bounded
   negative cache is held (:mod:`cnnlab.detection.svm`); the paper's 200 GB on-disk feature cache is not needed at
   this scale and nothing is written to disk.
5. **Detection**: every proposal scored by every class's SVM, boxes moved by the regressor, per-class NMS at IoU
   0.3. Scores are σ(SVM margin): the order is the SVM's, and 0.5 is its decision boundary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_iou, roi_align

from cnnlab.detection.rcnn_family import _no_timer
from cnnlab.errors import ConfigError

BACKGROUND_IOU = 0.3  # SVM negatives: below this IoU with every box of the class (section 2.3, chosen by grid search)
REGRESSION_IOU = 0.6  # box regression trains on proposals at least this close to a box (appendix C)


class RCNN(nn.Module):
    """The R-CNN detector around a zoo classifier with ``num_classes + 1`` outputs (index 0: background).

    Args:
        classifier: any zoo model (the model contract: ``forward_features``, ``forward_head(pre_logits=True)``).
        num_classes: K object classes.
        context: border of context as a fraction of the warped side, each side (paper: 16 / 227).
        crop: the warped side in pixels (the classifier's input; LeNet-5: 32).
        rois_per_image: warped proposals per image per step, a quarter foreground where there are enough.
        nms: per-class NMS IoU at test time (paper: 0.3).
        svm_images: training images whose features fit the SVMs and regressors after each epoch.
        svm_c: the SVMs' regularisation C.
        scorer: ``"svm"`` (the paper) or ``"softmax"``: the fine-tuned network's own class probabilities, with the
            proposals' boxes as they are (the paper's appendix B compares the two: 54.2 vs 50.9 mAP on VOC 2007).
    """

    method = "rcnn"
    needs_proposals = True
    loss_names = ("loss_classifier",)

    def __init__(
        self,
        classifier: nn.Module,
        num_classes: int,
        context: float = 16 / 227,
        crop: int = 32,
        rois_per_image: int = 32,
        nms: float = 0.3,
        svm_images: int = 500,
        svm_c: float = 0.001,
        scorer: str = "svm",
    ):
        super().__init__()
        self.classifier, self.num_classes = classifier, num_classes
        self.context, self.crop, self.rois_per_image, self.nms = float(context), int(crop), int(rois_per_image), nms
        self.svm_images, self.svm_c = int(svm_images), float(svm_c)
        if scorer not in ("svm", "softmax"):
            raise ConfigError(f"R-CNN's scorer is 'svm' or 'softmax', got {scorer!r}.")
        self.scorer = scorer
        dim = int(classifier.num_features)
        self.register_buffer("svm_weight", torch.zeros(num_classes, dim))
        self.register_buffer("svm_bias", torch.zeros(num_classes))
        self.register_buffer("box_weight", torch.zeros(num_classes, dim, 4))
        self.register_buffer("box_bias", torch.zeros(num_classes, 4))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))  # SVMs fitted (else: the softmax scores)

    # ---- warping -----------------------------------------------------------------------------------------
    def dilate(self, boxes: torch.Tensor) -> torch.Tensor:
        """(R, 4) boxes grown so the original covers the middle 1 − 2·context of the warped window."""
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        half = (boxes[:, 2:] - boxes[:, :2]) / 2 / (1 - 2 * self.context)
        return torch.cat([centre - half, centre + half], 1)

    def warp(self, images: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        """(B, C, H, W) normalised images, one (R_i, 4) box tensor each -> (ΣR_i, C, crop, crop) warped windows."""
        dilated = [self.dilate(b.to(images.dtype)) for b in boxes]
        return roi_align(images, dilated, (self.crop, self.crop), spatial_scale=1.0, sampling_ratio=2, aligned=True)

    def features(self, windows: torch.Tensor) -> torch.Tensor:
        """(R, C, crop, crop) -> (R, D) penultimate features of the fine-tuned classifier."""
        return self.classifier.forward_head(self.classifier.forward_features(windows), pre_logits=True)

    # ---- fine-tuning -------------------------------------------------------------------------------------
    def _sample(self, proposals: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor):
        """(windows (n, 4), classes (n,) with 0 = background) for one image: ground truth added to the proposals,
        at most a quarter foreground, drawn at random (the global RNG: the engine's seeded, resumable stream)."""
        candidates = torch.cat([boxes.to(proposals.dtype), proposals])
        if len(boxes):
            overlap, match = box_iou(candidates, boxes).max(1)
            classes = torch.where(overlap >= 0.5, labels[match] + 1, torch.zeros_like(match))
        else:
            classes = torch.zeros(len(candidates), dtype=torch.int64, device=candidates.device)
        foreground = torch.nonzero(classes > 0).flatten()
        background = torch.nonzero(classes == 0).flatten()
        n_fg = min(len(foreground), self.rois_per_image // 4)
        n_bg = min(len(background), self.rois_per_image - n_fg)
        pick = torch.cat(
            [
                foreground[torch.randperm(len(foreground), device=foreground.device)[:n_fg]],
                background[torch.randperm(len(background), device=background.device)[:n_bg]],
            ]
        )
        return candidates[pick], classes[pick]

    def forward(self, images: torch.Tensor, targets, proposals: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The fine-tuning loss of a batch: cross-entropy over K + 1 classes on sampled warped windows."""
        picked = [self._sample(p.to(images.device), b, c) for p, (b, c) in zip(proposals, targets, strict=True)]
        windows = self.warp(images, [w for w, _ in picked])
        classes = torch.cat([c for _, c in picked])
        return {"loss_classifier": F.cross_entropy(self.classifier(windows), classes)}

    # ---- SVMs and box regression -------------------------------------------------------------------------
    @torch.no_grad()
    def fit_post_hoc(self, loader) -> None:
        """Fit the per-class SVMs (hard-negative mining) and box regressors on the first ``svm_images`` training
        images' features (eval mode, batch by batch), and keep them as buffers."""
        from cnnlab.detection.svm import fit_box_regressor, train_class_svms

        was_training = self.training
        self.eval()
        chosen, regression, seen = [], {"features": [], "proposals": [], "boxes": [], "classes": []}, 0
        for images, targets in loader.batches():  # the images stay on the device; features are made per image
            for image, (boxes, labels), proposals in zip(images, targets.to_lists(), targets.proposal_lists(),
                                                         strict=True):  # fmt: skip
                chosen.append((image, boxes, labels, proposals.to(image.device)))
                self._regression_examples(image, boxes, labels, proposals.to(image.device), regression)
            seen += len(images)
            if seen >= self.svm_images:
                break

        def stream():  # features recomputed on every pass of the mining: one image's features in memory at a time
            for image, boxes, labels, proposals in chosen:
                yield self._svm_examples(image, boxes, labels, proposals)

        svms = train_class_svms(stream, self.num_classes, c=self.svm_c)
        self.svm_weight.copy_(svms.weights)
        self.svm_bias.copy_(svms.biases)
        if regression["features"]:
            regressor = fit_box_regressor(
                torch.cat(regression["features"]),
                torch.cat(regression["proposals"]),
                torch.cat(regression["boxes"]),
                torch.cat(regression["classes"]),
                self.num_classes,
            )
            self.box_weight.copy_(regressor.weights)
            self.box_bias.copy_(regressor.biases)
        self.fitted.fill_(True)
        self.train(was_training)

    def _svm_examples(self, image, boxes, labels, proposals):
        """The ground-truth boxes (positives) and proposals of one image: features, classes (−1 for a proposal),
        IoU with the nearest box of each class."""
        from cnnlab.detection.svm import FeatureBatch, max_ious_per_class

        windows = torch.cat([boxes.to(proposals.dtype), proposals])
        features = self.features(self.warp(image.unsqueeze(0), [windows])).float().cpu()
        classes = torch.cat([labels, torch.full((len(proposals),), -1, dtype=torch.int64, device=labels.device)])
        overlap = max_ious_per_class(windows.cpu(), boxes.cpu(), labels.cpu(), self.num_classes)
        return FeatureBatch(features, classes.cpu(), overlap)

    def _regression_examples(self, image, boxes, labels, proposals, into: dict) -> None:
        if not len(boxes):
            return
        overlap, match = box_iou(proposals, boxes).max(1)
        near = overlap >= REGRESSION_IOU
        if near.any():
            windows = proposals[near]
            into["features"].append(self.features(self.warp(image.unsqueeze(0), [windows])).float().cpu())
            into["proposals"].append(windows.cpu())
            into["boxes"].append(boxes[match[near]].cpu())
            into["classes"].append(labels[match[near]].cpu())

    # ---- detection ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def detect(self, images: torch.Tensor, proposals: list[torch.Tensor], timer=None, chunk: int = 512):
        """Boxes, scores (σ of the SVM margin; the softmax before the SVMs are fitted) and labels per image."""
        from cnnlab.detection.svm import BoxRegressor, apply_box_regressor

        timer = timer or _no_timer
        results = []
        for image, windows in zip(images, proposals, strict=True):
            windows = windows.to(device=images.device, dtype=images.dtype)
            with timer("cnn"):  # each proposal through the whole network: R-CNN's cost
                trunk = [
                    self.classifier.forward_features(self.warp(image.unsqueeze(0), [part]))
                    for part in windows.split(chunk)
                ]
            with timer("heads"):
                if not trunk:
                    scores, boxes = windows.new_zeros(0, self.num_classes), windows.new_zeros(0, self.num_classes, 4)
                elif self.scorer == "svm" and bool(self.fitted):
                    features = torch.cat([self.classifier.forward_head(t, pre_logits=True) for t in trunk]).float()
                    scores = torch.sigmoid(features @ self.svm_weight.T + self.svm_bias)  # (P, K)
                    regressor = BoxRegressor(self.box_weight, self.box_bias, torch.zeros(0))
                    every = torch.arange(self.num_classes, device=features.device).repeat(len(windows))  # (P·K,)
                    boxes = apply_box_regressor(
                        regressor,
                        features.repeat_interleave(self.num_classes, 0),
                        windows.float().repeat_interleave(self.num_classes, 0),
                        every,
                    )
                    boxes = boxes.view(len(windows), self.num_classes, 4)
                else:  # softmax, or before the SVMs exist (a checkpoint saved mid-epoch): boxes as proposed
                    logits = torch.cat([self.classifier.forward_head(t) for t in trunk]).float()
                    scores = F.softmax(logits, 1)[:, 1:]
                    boxes = windows.float().unsqueeze(1).expand(-1, self.num_classes, -1)
            with timer("nms"):
                results.append(_per_class_nms(boxes, scores, self.nms, image.shape[-2:]))
        return results


def _per_class_nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float, size, keep: int = 100) -> dict:
    """Boxes (P, K, 4) and scores (P, K) -> the best ``keep`` after per-class NMS (``batched_nms``)."""
    k = scores.shape[1]
    labels = torch.arange(k, device=scores.device).expand_as(scores).reshape(-1)
    boxes, scores = boxes.reshape(-1, 4), scores.reshape(-1)
    boxes = torch.stack(
        [
            boxes[:, 0].clamp(0, size[1]),
            boxes[:, 1].clamp(0, size[0]),
            boxes[:, 2].clamp(0, size[1]),
            boxes[:, 3].clamp(0, size[0]),
        ],
        1,
    )
    candidate = scores > 0.01
    boxes, scores, labels = boxes[candidate], scores[candidate], labels[candidate]
    kept = batched_nms(boxes, scores, labels, iou)[:keep]
    return {"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept]}
