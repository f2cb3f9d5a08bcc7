"""The run directory: every run leaves its checkpoint, config, metrics and curves in one folder.

runs/<name>/
    checkpoint.pt   latest state (resumable), written atomically every epoch
    config.json     resolved config, versions, git revision
    metrics.csv     one row per epoch
    curves.png      training curves (written by the caller's epoch callback)
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

from cnnlab.train.checkpoint import CHECKPOINT_NAME

METRIC_FIELDS = (
    "epoch",
    "train_loss",
    "train_error",
    "test_loss",
    "test_error",
    "test_top5_error",
    "lr",
    "images_per_s",
    "seconds",
)


def default_run_dir(model: str, data: str, root: str | Path = "runs") -> Path:
    """runs/<model>-<data>-<YYYYmmdd-HHMMSS>, with a suffix if that exists already."""
    base = Path(root) / f"{model}-{data.replace(':', '_').replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    def write_json(self, name: str, record: dict) -> Path:
        target = self.path / name
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
        os.replace(tmp, target)
        return target

    def write_metrics(self, rows: list[dict]) -> None:
        """Rewrite metrics.csv from the full history (so a resumed run never holds rows it has not re-done)."""
        tmp = self.metrics.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRIC_FIELDS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k, "") for k in METRIC_FIELDS})
        os.replace(tmp, self.metrics)


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a metrics.csv as dicts of floats."""
    with Path(path).open() as handle:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]
