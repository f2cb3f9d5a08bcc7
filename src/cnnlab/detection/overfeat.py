"""OverFeat detection (Sermanet et al. 2014): a convolutional network applied densely, at several scales, as a
sliding-window classifier and box regressor, and greedy merging of the boxes it predicts.

The paper's network is fully convolutional: its "fully connected" layers are convolutions, so running it on a
larger image slides the classifier over every window at once (section 3.5) — here the backbone's trunk
(:class:`~cnnlab.detection.backbone.DetectorBackbone`, any zoo model) and two small heads of 1×1 convolutions (the
FC layers as convolutions): a softmax over K + 1 classes (background included, section 4.1: "we train the network on
negative examples") and a box regressor (section 4.2: four numbers per location, the box's edges).

- **Windows**: at scale s, feature cell (i, j) is a window of ``W`` = 8 × stride pixels (LeNet's 32 px receptive
  field at stride 4) centred on the cell, in the image resized by s; windows span objects from W/4 to W pixels
  there, so the scales (1 and 0.5: objects of 8–32 and 16–64 px) cover the data's sizes.
- **Training**: a cell is positive for an object when its centre lies in the middle half of the object's box and
  the object's larger side at that scale is within [W/4, W] (the smaller object wins a shared cell); ignored when it
  lies in an object of another scale's size range; negative otherwise — also off-centre in an object of its own
  range, so that only central windows fire and the merging has fewer stray boxes to absorb. Cross-entropy over the
  positives and three times as many random negatives; smooth L1 on the positives' regression: the distances from
  the cell centre to the four edges, in units of W.
- **Detection**: every cell whose best object class beats ``threshold`` proposes its regressed box, at every scale;
  boxes of one class are merged greedily (:func:`cnnlab.detection.merge.greedy_merge`, section 4.3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.detection.backbone import DetectorBackbone
from cnnlab.detection.rcnn_family import _no_timer

WINDOW_CELLS = 8  # a window is 8 feature cells wide (LeNet's 32 px receptive field at stride 4)
NEGATIVES_PER_POSITIVE = 3


def _head(channels: int, width: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, width, 1), nn.ReLU(inplace=True), nn.Conv2d(width, outputs, 1))


class OverFeatDetector(nn.Module):
    """Dense classification and box regression over a backbone's feature map, at several scales.

    Args:
        backbone: the trunk (any zoo model's stages).
        num_classes: K object classes.
        scales: image scales the trunk runs at (the paper: 6 for photos; 2 cover 8–64 px digits).
        head_width: channels of the heads' hidden 1×1 convolution.
        threshold: the smallest class probability that proposes a box at test time.
        merge: greedy merging stops when the best pair's match score exceeds this.
    """

    method = "overfeat"
    needs_proposals = False
    loss_names = ("loss_classifier", "loss_box_reg")

    def __init__(
        self,
        backbone: DetectorBackbone,
        num_classes: int,
        scales: Sequence[float] = (1.0, 0.5),
        head_width: int = 128,
        threshold: float = 0.3,
        merge: float = 1.0,
    ):
        super().__init__()
        self.backbone, self.num_classes = backbone, num_classes
        self.scales = tuple(float(s) for s in scales)
        self.threshold, self.merge = float(threshold), float(merge)
        self.window = WINDOW_CELLS * backbone.stride  # px at each scale
        self.classifier = _head(backbone.out_channels, head_width, num_classes + 1)
        self.regressor = _head(backbone.out_channels, head_width, 4)

    def _dense(self, images: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(class logits (B, K+1, h, w), edge distances (B, 4, h, w) in windows) at one scale."""
        if scale != 1.0:
            images = F.interpolate(
                images, scale_factor=scale, mode="bilinear", antialias=scale < 1, align_corners=False
            )
        features = self.backbone(images)
        return self.classifier(features), self.regressor(features)

    def _centres(self, h: int, w: int, scale: float, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell centres (h, w) in pixels of the *original* image."""
        stride = self.backbone.stride
        ys = (torch.arange(h, device=device) + 0.5) * stride / scale
        xs = (torch.arange(w, device=device) + 0.5) * stride / scale
        return ys[:, None].expand(h, w), xs[None, :].expand(h, w)

    def _assign(self, boxes: torch.Tensor, labels: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, scale: float):
        """(classes (h, w): −1 ignore, 0 background, k + 1 object; boxes (h, w, 4)) for one image at one scale."""
        classes = torch.zeros(cy.shape, dtype=torch.int64, device=cy.device)
        targets = torch.zeros(*cy.shape, 4, device=cy.device)
        if not len(boxes):
            return classes, targets
        sides = (boxes[:, 2:] - boxes[:, :2]).amax(1) * scale
        order = sides.argsort(descending=True)  # the smaller object is written last and wins a shared cell
        for index in order.tolist():
            x1, y1, x2, y2 = boxes[index].tolist()
            inside = (cx >= x1) & (cx < x2) & (cy >= y1) & (cy < y2)
            if not self.window / 4 <= float(sides[index]) <= self.window:
                classes[inside & (classes == 0)] = -1  # another scale's object: neither it nor background here
                continue
            qx, qy = (x2 - x1) / 4, (y2 - y1) / 4
            middle = (cx >= x1 + qx) & (cx < x2 - qx) & (cy >= y1 + qy) & (cy < y2 - qy)
            if not middle.any():  # a tiny box: the cell nearest its centre
                d = (cx - (x1 + x2) / 2) ** 2 + (cy - (y1 + y2) / 2) ** 2
                middle = d == d.min()
            classes[middle] = int(labels[index]) + 1
            targets[middle] = boxes[index].to(targets.dtype)
        return classes, targets

    def _encode(self, boxes: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, scale: float) -> torch.Tensor:
        unit = self.window / scale  # the window's side in original pixels
        return torch.stack([cx - boxes[..., 0], cy - boxes[..., 1], boxes[..., 2] - cx, boxes[..., 3] - cy], -1) / unit

    def _decode(self, distances: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, scale: float) -> torch.Tensor:
        d = distances * (self.window / scale)
        return torch.stack([cx - d[..., 0], cy - d[..., 1], cx + d[..., 2], cy + d[..., 3]], -1)

    def forward(self, images: torch.Tensor, targets, proposals=None) -> dict[str, torch.Tensor]:
        """The training losses: cross-entropy on positives and sampled negatives, smooth L1 on positives."""
        logits_all, classes_all, regressed_all, wanted_all = [], [], [], []
        for scale in self.scales:
            logits, distances = self._dense(images, scale)
            h, w = logits.shape[-2:]
            cy, cx = self._centres(h, w, scale, images.device)
            for b, (boxes, labels) in enumerate(targets):
                classes, boxes_at = self._assign(boxes, labels, cy, cx, scale)
                logits_all.append(logits[b].permute(1, 2, 0).reshape(-1, self.num_classes + 1))
                classes_all.append(classes.reshape(-1))
                positive = classes.reshape(-1) > 0
                regressed_all.append(distances[b].permute(1, 2, 0).reshape(-1, 4)[positive])
                wanted_all.append(self._encode(boxes_at, cy, cx, scale).reshape(-1, 4)[positive])
        logits, classes = torch.cat(logits_all), torch.cat(classes_all)
        positive = torch.nonzero(classes > 0).flatten()
        negative = torch.nonzero(classes == 0).flatten()
        want = max(NEGATIVES_PER_POSITIVE * len(positive), 64)
        negative = negative[torch.randperm(len(negative), device=negative.device)[:want]]
        chosen = torch.cat([positive, negative])
        loss_classifier = F.cross_entropy(logits[chosen], classes[chosen])
        regressed, wanted = torch.cat(regressed_all), torch.cat(wanted_all)
        loss_box = F.smooth_l1_loss(regressed, wanted, beta=1 / 9) if len(wanted) else regressed.sum() * 0.0
        return {"loss_classifier": loss_classifier, "loss_box_reg": loss_box}

    @torch.no_grad()
    def detect(self, images: torch.Tensor, proposals=None, timer=None) -> list[dict[str, torch.Tensor]]:
        """Boxes, scores (the proposing cells' class probability, merged) and labels per image."""
        from cnnlab.detection.merge import greedy_merge

        timer = timer or _no_timer
        found: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = [[] for _ in range(len(images))]
        for scale in self.scales:
            with timer("cnn"):
                logits, distances = self._dense(images, scale)
            with timer("heads"):
                h, w = logits.shape[-2:]
                cy, cx = self._centres(h, w, scale, images.device)
                probs = F.softmax(logits.float(), 1)[:, 1:]  # (B, K, h, w)
                best, label = probs.max(1)
                boxes = self._decode(distances.float().permute(0, 2, 3, 1), cy, cx, scale)  # (B, h, w, 4)
                for b in range(len(images)):
                    keep = best[b] > self.threshold
                    found[b].append((boxes[b][keep], best[b][keep], label[b][keep]))
        results = []
        size = images.shape[-2:]
        with timer("nms"):  # greedy merging plays NMS's part
            for parts in found:
                boxes = torch.cat([p[0] for p in parts])
                scores, labels = torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])
                boxes = torch.stack(
                    [
                        boxes[:, 0].clamp(0, size[1]),
                        boxes[:, 1].clamp(0, size[0]),
                        boxes[:, 2].clamp(0, size[1]),
                        boxes[:, 3].clamp(0, size[0]),
                    ],
                    1,
                )
                real = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
                boxes, scores, labels = boxes[real], scores[real], labels[real]
                # the merging loop runs in NumPy on the CPU (merge.py says why); the answer goes back to the device
                merged = greedy_merge(boxes.cpu(), scores.cpu(), labels.cpu(), threshold=self.merge, score="sum")
                order = merged.scores.argsort(descending=True)[:100]
                device = images.device
                results.append({"boxes": merged.boxes[order].to(device), "scores": merged.scores[order].to(device),
                                "labels": merged.labels[order].to(device)})  # fmt: skip
        return results
