"""The run directory: every run leaves its checkpoint, config, metrics and curves in one folder.

runs/<name>/
    checkpoint.pt   latest state (resumable): a hard link to the newest file in checkpoints/
    best.pt         the end-of-epoch state with the lowest test error so far (a hard link)
    checkpoints/    step<N>.pt: the last ``keep_last`` states, written atomically (epoch ends, every
                    ``checkpoint_every`` steps, and on SIGINT/SIGTERM)
    config.json     resolved config, versions, git revision
    metrics.csv     one row per epoch
    summary.json    best and last metrics, wall time, images/s, peak memory (written when training stops)
    curves.png      training curves (written by the caller's epoch callback)
    tensorboard/    TensorBoard event files (with ``tensorboard`` on)

Hard links make ``checkpoint.pt`` and ``best.pt`` cost no extra space or time; where the file system has none
they are copies. Every name is replaced atomically (rename), so a crash leaves each one whole, old or new.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path

from cnnlab.errors import CheckpointError
from cnnlab.train.checkpoint import (
    BEST_NAME,
    CHECKPOINT_NAME,
    CHECKPOINTS_DIR,
    save_checkpoint,
    step_checkpoints,
    step_number,
)

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

    @property
    def best(self) -> Path:
        return self.path / BEST_NAME

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    def step_checkpoints(self) -> list[Path]:
        """The files in checkpoints/, oldest step first."""
        return step_checkpoints(self.path)

    def commit_checkpoint(self, payload: dict, step: int, keep_last: int = 2, best: bool = False) -> Path:
        """Write ``payload`` as checkpoints/step<step>.pt, point checkpoint.pt (and best.pt) at it, prune.

        Each step is atomic: a failure (a full disk) leaves checkpoint.pt, best.pt and every older file as
        they were, and raises :class:`CheckpointError` saying so.
        """
        path = save_checkpoint(payload, self.checkpoints / f"step{step:09d}.pt", previous=self.checkpoint)
        _link_atomically(path, self.checkpoint)
        if best:
            _link_atomically(path, self.best)
        kept = self.step_checkpoints()
        # Files of later steps are from a trajectory this run abandoned (it resumed from an earlier state):
        # left there, they would be kept as "newest" and resumed from.
        later = [p for p in kept if step_number(p) > step]
        earlier = [p for p in kept if step_number(p) <= step]
        for old in later + earlier[:-keep_last]:
            old.unlink(missing_ok=True)
        return path

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


def _link_atomically(source: Path, target: Path) -> None:
    """Make ``target`` name the same file as ``source`` (a hard link; a copy where links are unsupported)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, tmp)
        except OSError:  # no hard links here (some network and FAT file systems): copy instead
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        kept = f"{target} still holds the previous checkpoint" if target.exists() else f"{target} was not written"
        raise CheckpointError(
            f"Could not update {target} from {source}: {error}. {kept}; {source} itself is complete."
        ) from None
