"""A trained detection run in the explorer: the boxes it finds in a drawing or an uploaded image, and its training
curves. The detector is :func:`cnnlab.detection.load_detector`'s, loaded once; its views are ``boxes`` and
``curves`` (the page shows a boxes panel instead of the classifier panels)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from cnnlab.errors import ConfigError
from cnnlab.serve.explorer import Lane

BOX_LIST_MAX = 50  # detections listed in the answer (all are drawn when above the threshold)


class DetectionExplorer:
    """A detection run, ready to be explored (same interface as :class:`~cnnlab.serve.explorer.RunExplorer` for the
    views it has).

    Raises:
        CheckpointError: not a detection run.
    """

    def __init__(self, run_dir: str | Path, run_id: str, device: str = "auto"):
        from cnnlab.detection import load_detector
        from cnnlab.train import resolve_device
        from cnnlab.train.record import RunRecord

        self.run_id = run_id
        self.device = resolve_device(device)
        self.loaded = load_detector(run_dir, str(self.device))
        self.record = RunRecord.load(run_dir)
        self.preprocessing = self.loaded.preprocessing
        self.classes = list(self.loaded.classes)
        self.layers: list[str] = []
        # One lock: detections are quick, and the detector holds no hooks.
        self.lanes = {name: Lane(self.loaded.detector, threading.Lock()) for name in ("fast", "record")}

    def describe(self) -> dict:
        spec = self.loaded.spec
        last = self.record.history[-1] if self.record.history else {}
        return {
            "id": self.run_id,
            "name": self.loaded.run_dir.name,
            "task": "detection",
            "model": f"{spec['method']} on {spec['backbone']}",
            "data": self.loaded.data,
            "adversarial": None,
            "classes": self.classes,
            "input_size": [self.preprocessing.in_chans, *spec["image_size"]],
            "layers": [],
            "default_layer": None,
            "epochs": int(last.get("epoch", 0)),
            "test_error": None,
            "test_map50": last.get("test_map50"),
            "views": ["boxes", "curves"],
        }

    def boxes(self, pixels: torch.Tensor, threshold: float = 0.5) -> dict:
        """The detections with score ≥ ``threshold`` in an image (uint8 (C, H, W) at the run's size): the image
        with its boxes drawn, and the list (class, score, box in pixels), best first."""
        from cnnlab.detection.report import render
        from cnnlab.serve.images import png_url

        if not 0 <= threshold <= 1:
            raise ConfigError(f"threshold must be a score in [0, 1], got {threshold}.")
        expected = (self.preprocessing.in_chans, *self.loaded.spec["image_size"])
        if tuple(pixels.shape) != tuple(expected):
            raise ConfigError(f"Expected an image of {tuple(expected)} (C, H, W), got {tuple(pixels.shape)}.")
        with self.lanes["fast"].lock:
            found = self.loaded.detect(pixels.unsqueeze(0))[0]
        keep = found["scores"] >= threshold
        found = {k: v[keep] for k, v in found.items()}
        order = found["scores"].argsort(descending=True)
        found = {k: v[order] for k, v in found.items()}
        picture = render(pixels.cpu(), found, self.classes)
        listed = [
            {"class": self.classes[int(c)], "score": float(s), "box": [round(float(v), 1) for v in b]}
            for b, s, c in zip(found["boxes"][:BOX_LIST_MAX], found["scores"], found["labels"], strict=False)
        ]
        return {"image": png_url(np.asarray(picture)), "detections": listed, "threshold": threshold}

    def curves(self) -> dict:
        """Loss and miss rate (1 − mAP@0.5, as "error") per epoch, from the checkpoint's history."""
        rows = []
        for row in self.record.history:
            out = {"epoch": row["epoch"], "train_loss": row.get("train_loss")}
            if "val_map50" in row:
                out["val_error"] = 1 - row["val_map50"]
            if "test_map50" in row:
                out["test_error"] = 1 - row["test_map50"]
            rows.append(out)
        return {"rows": rows, "error": "1 − mAP@0.5"}
