"""Object detection on the zoo's backbones: R-CNN (2014), Fast R-CNN (2015), Faster R-CNN (2015) and OverFeat
(2014), trained by the engine, scored by mAP, drawn.

>>> from cnnlab import detection
>>> result = detection.train_detector({"data": "mnist-detection", "epochs": 4}, method="faster-rcnn")
>>> detection.evaluate_detector(result.run.run_dir.path).map50

See docs/detection.md.
"""

from cnnlab.detection.detectors import DEFAULT_BACKBONE, METHODS, OPTIONS, build_detector
from cnnlab.detection.explain import explain_detection
from cnnlab.detection.runs import (
    DETECT_DEFAULTS,
    DETECT_FLAGS,
    DetectEvalResult,
    DetectorRun,
    DetectTrainResult,
    evaluate_detector,
    load_detector,
    predict_images,
    train_detector,
    write_report,
)

__all__ = [
    "DEFAULT_BACKBONE",
    "DETECT_DEFAULTS",
    "DETECT_FLAGS",
    "METHODS",
    "OPTIONS",
    "DetectEvalResult",
    "DetectTrainResult",
    "DetectorRun",
    "build_detector",
    "evaluate_detector",
    "explain_detection",
    "load_detector",
    "predict_images",
    "train_detector",
    "write_report",
]
