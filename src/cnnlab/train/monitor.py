"""What the engine tells the world while a task trains: the progress bar, TensorBoard, metrics.csv and
summary.json. Only rank 0 monitors (every other process gets a silent monitor)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from torch import nn

from cnnlab.train.progress import QuietReporter, Reporter
from cnnlab.train.resources import peak_memory

if TYPE_CHECKING:
    from cnnlab.train.setup import TrainingRun
    from cnnlab.train.task import Task


class Monitor:
    """Reports one run of a task.

    Args:
        run: the run (its run directory receives the files).
        task: formats the progress text and epoch line, and chooses the best epoch.
        reporter: the progress display (None: silent).
        active: False in every process but rank 0: nothing is shown or written.
        tensorboard: write TensorBoard event files to ``<run dir>/tensorboard``.
    """

    def __init__(self, run: TrainingRun, task: Task, reporter: Reporter | None, active: bool, tensorboard: bool):
        self.run, self.task, self.active = run, task, active
        self.reporter: Reporter = (reporter or QuietReporter()) if active else QuietReporter()
        self._tensorboard_wanted = tensorboard and active
        self.tensorboard = None
        self.started = time.perf_counter()

    def start(self) -> None:
        self.started = time.perf_counter()
        if self._tensorboard_wanted and self.tensorboard is None:
            from cnnlab.train.tensorboard import TensorBoardLogger

            self.tensorboard = TensorBoardLogger(self.run.run_dir.tensorboard)

    def message(self, text: str) -> None:
        self.reporter.message(text)

    def start_epoch(self, epoch: int, epochs: int, batches: int, start_batch: int) -> None:
        self.reporter.start_epoch(epoch, epochs, batches, start_batch)

    def progress(
        self, step: int, batches_done: int, text: str, recent: Mapping[str, float], speed: float, lr: float
    ) -> None:
        """At a sync point: the bar, and TensorBoard's training scalars (``recent``: mean loss per part since
        the last sync point)."""
        self.reporter.update(batches_done, text, speed, lr=lr)
        if self.tensorboard is not None:
            scalars = {f"train/{name}": value for name, value in recent.items()}
            self.tensorboard.scalars(step, {**scalars, "train/lr": lr, "train/images_per_s": speed})

    def extra_scalars(self, step: int, values: Mapping[str, float]) -> None:
        if self.tensorboard is not None:
            self.tensorboard.scalars(step, dict(values))

    def end_epoch(self, step: int, row: dict, history: list[dict], nets: Mapping[str, nn.Module]) -> None:
        """After an epoch's checkpoint: metrics.csv, TensorBoard's epoch scalars and images, the epoch line."""
        if self.active:
            self.run.run_dir.write_metrics(history)
        if self.tensorboard is not None:
            scalars = {}
            for key, value in row.items():
                if key.startswith(("test_", "val_")):
                    split, _, name = key.partition("_")
                    scalars[f"{split}/{name}"] = value
                elif key.startswith("train_") and key != "train_images":
                    scalars[f"epoch/{key}"] = value
            self.tensorboard.scalars(step, scalars)
            self.task.log_images(self.tensorboard, step, nets, self.run)
        self.reporter.end_epoch(row, self.task.epoch_text(row))

    def best(self, history: list[dict]) -> dict | None:
        key = self.task.selection
        return min(history, key=lambda r: r[key]) if key and history else None

    def write_summary(self, status: str, state: dict, history: list[dict], fast_path: str, versions: dict) -> None:
        """summary.json: best and last epoch, wall time, throughput, peak memory."""
        if not self.active:
            return
        config = self.run.config
        train_seconds = sum(r["seconds"] for r in history)
        images = sum(r.get("train_images", 0) for r in history)
        record = {
            "status": status,
            "task": self.task.name,
            "model": config.model,
            "data": config.data,
            "epochs_completed": state["epoch"],
            "epochs": config.epochs,
            "steps": state["step"],
            "best": self.best(history),
            "last": history[-1] if history else None,
            "wall_seconds": time.perf_counter() - self.started,
            "train_seconds": train_seconds,
            "images_per_s": images / train_seconds if train_seconds > 0 else None,
            "peak_memory": peak_memory(self.run.device),
            "device": str(self.run.device),
            "processes": state["world_size"],
            "fast_path": fast_path,
            "versions": versions,
        }
        self.run.run_dir.write_json("summary.json", record)

    def flush(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
