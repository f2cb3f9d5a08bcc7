"""The four detectors by name, built from one spec (what a checkpoint records to rebuild them).

========================  ==========================================================================  =========
method                    proposals → features → heads                                                paper
========================  ==========================================================================  =========
``rcnn``                  selective search → each box warped (16 px context) through the whole CNN     2014
                          → one linear SVM per class, ridge box regression
``fast-rcnn``             selective search → the image through the conv layers once, RoI max pooling  2015
                          → FC layers, softmax + box regression
``faster-rcnn``           a region proposal network on the shared features → the Fast R-CNN head      2015
``overfeat``              none: the convolutional trunk run densely over the image at several scales  2014
                          → a class and a box at every location → greedy box merging
========================  ==========================================================================  =========
"""

from __future__ import annotations

from typing import Any

from torch import nn

from cnnlab.errors import ConfigError, UnknownNameError

METHODS = ("rcnn", "fast-rcnn", "faster-rcnn", "overfeat")
DEFAULT_BACKBONE = "lenet5-modern"  # small and fast on a CPU; any zoo model works (`--backbone`)

# Faster R-CNN's RPN keeps 2000 proposals per image in training and 300 at test (paper) for ~20,000 anchors on
# 600×1000 photos of a few objects up to dozens; a 128 px canvas has ~9,000 anchors and at most 6 digits, and the RPN's
# NMS over 4,000 boxes took half of a training step on the CPU (87 ms an image), so 300 / 100 here.
# Options each method takes (`--option NAME=VALUE`), with their defaults (recorded in every checkpoint's spec).
OPTIONS: dict[str, dict[str, Any]] = {
    "fast-rcnn": {"head_width": 256, "pool_size": 7, "rois_per_image": 64, "nms": 0.3},
    "faster-rcnn": {
        "head_width": 256,
        "pool_size": 7,
        "rois_per_image": 64,
        "nms": 0.3,
        "anchor_sizes": None,
        "aspect_ratios": None,
        "rpn_train_proposals": 300,
        "rpn_test_proposals": 100,
    },
    "rcnn": {
        "context": 16 / 227,
        "crop": 32,
        "rois_per_image": 32,
        "nms": 0.3,
        "svm_images": 500,
        "svm_c": 0.001,
        "scorer": "svm",
    },
    "overfeat": {"scales": (1.0, 0.5), "head_width": 128, "threshold": 0.3, "merge": 1.0},
}


def check_method(method: str) -> None:
    if method not in METHODS:
        raise UnknownNameError("detection method", method, list(METHODS))


def resolve_options(method: str, given: dict[str, Any]) -> dict[str, Any]:
    """The method's options with ``given`` ones in place of the defaults (unknown names refused)."""
    check_method(method)
    unknown = sorted(set(given) - set(OPTIONS[method]))
    if unknown:
        raise ConfigError(
            f"{method} has no option {', '.join(unknown)}; it takes: {', '.join(sorted(OPTIONS[method]))}."
        )
    options = {**OPTIONS[method], **given}
    for name, value in given.items():
        _check_option(method, name, value, OPTIONS[method][name])
    return options


# Options whose values must lie in a range (inclusive low, exclusive high), beyond being of the default's type.
RANGES = {"context": (0.0, 0.5), "nms": (0.0, 1.0001), "threshold": (0.0, 1.0001), "svm_c": (1e-12, float("inf"))}


def _check_option(method: str, name: str, value: Any, default: Any) -> None:
    """Refuse a value of the wrong kind or range, naming the option (``--option NAME=VALUE``)."""
    if name in ("anchor_sizes", "aspect_ratios", "scales"):
        ok = isinstance(value, list | tuple) and len(value) > 0 and all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in value)  # fmt: skip
        if not ok:
            raise ConfigError(
                f"{method}'s {name} must be a list of positive numbers, e.g. {name}=[16,32,64]; got {value!r}."
            )
        return
    if isinstance(default, str):
        if value not in ("svm", "softmax"):
            raise ConfigError(f"{method}'s {name} must be 'svm' or 'softmax', got {value!r}.")
        return
    if isinstance(default, int) and not isinstance(default, bool):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{method}'s {name} must be a positive whole number, got {value!r}.")
        return
    low, high = RANGES.get(name, (0.0, float("inf")))
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value < high:
        raise ConfigError(f"{method}'s {name} must be a number in [{low:g}, {high:g}), got {value!r}.")


def build_detector(spec: dict[str, Any]) -> nn.Module:
    """A freshly initialised detector from its spec: ``method``, ``backbone`` (a zoo model name), ``stage``
    (None: the last), ``num_classes`` (K, without background), ``in_chans``, ``image_size`` (H, W) and
    ``options`` (:data:`OPTIONS`). The returned module keeps ``spec`` as an attribute.

    Raises:
        UnknownNameError: an unknown method or backbone.
        ConfigError: a bad option, or a backbone stage that cannot take the images.
    """
    from cnnlab import models
    from cnnlab.detection.backbone import DetectorBackbone

    method = spec["method"]
    options = resolve_options(method, dict(spec.get("options") or {}))
    k, size = int(spec["num_classes"]), tuple(spec["image_size"])
    if method == "rcnn":
        from cnnlab.detection.rcnn import RCNN

        classifier = models.create(spec["backbone"], num_classes=k + 1, in_chans=int(spec["in_chans"]))
        _check_crop(classifier, spec["backbone"], int(spec["in_chans"]), int(options["crop"]))
        detector = RCNN(classifier, k, **options)
    else:
        trunk = models.create(spec["backbone"], num_classes=k, in_chans=int(spec["in_chans"]))
        backbone = DetectorBackbone(trunk, spec.get("stage"), size)
        detector = _build_on_backbone(method, backbone, k, options)
    detector.spec = {**spec, "options": options}
    return detector


def _check_crop(classifier: nn.Module, name: str, channels: int, crop: int) -> None:
    """R-CNN warps every proposal to ``crop`` px for the whole classifier: refuse a size it cannot take."""
    import torch

    was_training = classifier.training
    classifier.eval()
    try:
        with torch.no_grad():
            classifier(torch.zeros(1, channels, crop, crop))
    except RuntimeError:
        raise ConfigError(
            f"{name} cannot take R-CNN's {crop}×{crop} warped proposals; pass its input size with --option crop=N "
            f"(e.g. crop=224 for AlexNet-sized models), or choose a smaller backbone."
        ) from None
    finally:
        classifier.train(was_training)


def _build_on_backbone(method: str, backbone: nn.Module, k: int, options: dict[str, Any]) -> nn.Module:
    from cnnlab.detection.rcnn_family import FasterRCNN, FastRCNN, make_roi_heads

    if method == "overfeat":
        from cnnlab.detection.overfeat import OverFeatDetector

        return OverFeatDetector(backbone, k, **options)
    heads = make_roi_heads(
        backbone,
        k,
        options["pool_size"],
        options["head_width"],
        options["rois_per_image"],
        nms_threshold=options["nms"],
    )
    if method == "fast-rcnn":
        detector = FastRCNN(backbone, heads, k)
    else:
        if not options["anchor_sizes"] or not options["aspect_ratios"]:
            raise ConfigError("Faster R-CNN needs anchor_sizes and aspect_ratios (the workflow picks them from data).")
        detector = FasterRCNN(
            backbone,
            heads,
            k,
            options["anchor_sizes"],
            options["aspect_ratios"],
            options["rpn_train_proposals"],
            options["rpn_test_proposals"],
        )
    return detector
