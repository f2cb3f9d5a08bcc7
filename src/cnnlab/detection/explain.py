"""Looking inside one detection: what made the detector fire on that box, through the existing views.

A detection is a class score for a fixed box. :func:`box_classifier` turns a detector and one box into a plain
classifier — an image in, K + 1 logits out (index 0: background) — so the classifier views apply unchanged:

- **occlusion** (Zeiler & Fergus 2013, section 4.2; :func:`cnnlab.inspect.occlusion.occlusion`): a grey square slid
  over the image, the drop of the box's class log-odds at every position;
- **deconvnet** (Zeiler & Fergus 2013, section 2.1; Captum's ``Deconvolution``) and **guided backpropagation**
  (:func:`cnnlab.inspect.attribution.guided_backprop`): the box's class score projected back to the pixels.

For Fast and Faster R-CNN the box is RoI-pooled from the features of the whole image (so pixels outside the box can
matter through the receptive fields); for R-CNN the box is warped with its context first (pixels outside the
dilated window cannot matter); for OverFeat it is the window of the feature cell nearest the box's centre at scale 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError

VIEWS = ("occlusion", "deconvnet", "guided-backprop")


class BoxClassifier(nn.Module):
    """A detector's class logits (B, K + 1) for one fixed box (4,), as a function of the image (B, C, H, W)."""

    def __init__(self, detector: nn.Module, box: torch.Tensor):
        super().__init__()
        self.detector = detector
        self.register_buffer("box", box.detach().float().reshape(4))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        detector, boxes = self.detector, [self.box[None].to(images.dtype)] * images.shape[0]
        method = detector.method
        if method == "rcnn":
            return detector.classifier(detector.warp(images, boxes))
        if method == "overfeat":
            logits, _ = detector._dense(images, 1.0)  # (B, K+1, h, w)
            stride = detector.backbone.stride
            cx, cy = (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2
            row = int((cy / stride).clamp(0, logits.shape[2] - 1))
            col = int((cx / stride).clamp(0, logits.shape[3] - 1))
            return logits[:, :, row, col]
        features = {"0": detector.backbone(images)}
        sizes = [tuple(images.shape[-2:])] * images.shape[0]
        heads = detector.roi_heads
        pooled = heads.box_head(heads.box_roi_pool(features, boxes, sizes))
        return heads.box_predictor(pooled)[0]  # class logits; [1] is the box regression


def box_classifier(detector: nn.Module, box: torch.Tensor) -> BoxClassifier:
    """:class:`BoxClassifier` of a copy of ``detector`` without in-place ReLUs (torchvision's RPN head has one, which
    the deconvnet and guided-backprop hooks cannot wrap), in eval mode."""
    from cnnlab.inspect import without_inplace_relu

    return BoxClassifier(without_inplace_relu(detector)[0], box).eval()


@dataclass
class DetectionExplanation:
    """The explained detection (box, class, score) and the figures written."""

    box: list[float]
    label: str
    score: float
    files: dict[str, Path]


def explain_detection(run: str | Path, image: str | Path | int, detection: int = 0,
                      views: tuple[str, ...] = ("occlusion", "deconvnet"), out: str | Path | None = None,
                      data_root: str | Path | None = None) -> DetectionExplanation:  # fmt: skip
    """``cnnlab detect explain``: the ``detection``-th highest-scoring detection in ``image`` (a file, or the index
    of a test image of the run's dataset) seen through ``views``; one PNG per view in ``out`` (default: the run's
    ``report/`` folder).

    Raises:
        ConfigError: an unknown view, or fewer detections than ``detection`` + 1.
        DataError, CheckpointError: an unreadable image; no detection run there.
    """
    from cnnlab.detection.report import read_image
    from cnnlab.detection.runs import load_detector
    from cnnlab.inspect.attribution import guided_backprop, render_attributions
    from cnnlab.inspect.occlusion import occlusion, render_occlusion

    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise ConfigError(f"Unknown view(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(VIEWS)}.")
    loaded = load_detector(run)
    if isinstance(image, int):
        split = loaded.test_data(data_root).test
        if not 0 <= image < len(split):
            raise ConfigError(f"Test image {image} does not exist: the test split has {len(split)} images.")
        pixels, name = split.images[image], f"test{image}"
    else:
        pixels = read_image(image, loaded.preprocessing.in_chans, tuple(loaded.spec["image_size"]))
        name = Path(image).stem
    found = loaded.detect(pixels.unsqueeze(0))[0]
    if detection >= len(found["scores"]):
        raise ConfigError(f"The detector found {len(found['scores'])} boxes in {name}; --detection {detection} is "
                          "not one of them (0 is the highest score).")  # fmt: skip
    order = found["scores"].argsort(descending=True)
    pick = int(order[detection])
    box, label, score = found["boxes"][pick], int(found["labels"][pick]), float(found["scores"][pick])
    model = box_classifier(loaded.detector, box)
    x = loaded.preprocessing.normalize(pixels.unsqueeze(0))[0]
    shown = pixels.float().div(255)
    classes = ["background", *loaded.classes]
    folder = Path(out) if out is not None else loaded.run_dir / "report"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for view in views:
        path = folder / f"explain-{name}-det{detection}-{view}.png"
        if view == "occlusion":
            grey = float((0.5 - loaded.preprocessing.mean[0]) / loaded.preprocessing.std[0])
            figure = render_occlusion(occlusion(model, x, target=label + 1, baseline=grey), shown, classes)
        elif view == "guided-backprop":
            figure = render_attributions([guided_backprop(model, x, target=label + 1)], shown, classes)
        else:
            figure = render_attributions([_deconvnet(model, x, label + 1)], shown, classes)
        figure.savefig(path, dpi=100)
        files[view] = path
    return DetectionExplanation([round(float(v), 1) for v in box], loaded.classes[label], score, files)


def _deconvnet(model: nn.Module, x: torch.Tensor, target: int):
    """Zeiler & Fergus's deconvnet of the class score (Captum's ``Deconvolution``: every ReLU's backward is a ReLU
    of the signal)."""
    import warnings

    from captum.attr import Deconvolution

    from cnnlab.inspect.attribution import Attribution

    batch = x.unsqueeze(0)
    with torch.no_grad():
        probability = float(F.softmax(model(batch), 1)[0, target])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        values = Deconvolution(model).attribute(batch.detach().clone().requires_grad_(), target=target)
    return Attribution("deconvnet", target, probability, values[0].detach().float().cpu())
