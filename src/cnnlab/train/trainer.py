"""The training loop: SGD steps, evaluation each epoch, atomic checkpoints, exact resume, safe stops."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable

import torch

from cnnlab.errors import CheckpointError, NonFiniteLossError, TrainingInterrupted
from cnnlab.train.checkpoint import save_checkpoint
from cnnlab.train.evaluate import evaluate
from cnnlab.train.objective import ClassificationObjective, Objective
from cnnlab.train.optim import AlexNetSGD, make_scheduler
from cnnlab.train.progress import QuietReporter, Reporter
from cnnlab.train.provenance import git_revision, versions
from cnnlab.train.setup import TrainingRun

EpochCallback = Callable[["Trainer", dict], None]


class _StopOnSignal:
    """Turns the first SIGINT/SIGTERM into a flag the loop checks between steps; a second SIGINT aborts."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self.previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


class Trainer:
    """Trains ``run.model`` on ``run.train_loader`` with AlexNet-form SGD, evaluating on ``run.test_loader``.

    Args:
        run: what :func:`~cnnlab.train.setup.build_run` built.
        objective: the loss to minimise (default: classification with ``config.loss``).
        reporter: progress display (default: none).
        callbacks: called as ``callback(trainer, row)`` after each epoch's checkpoint is written.
    """

    def __init__(
        self,
        run: TrainingRun,
        objective: Objective | None = None,
        reporter: Reporter | None = None,
        callbacks: tuple[EpochCallback, ...] = (),
    ):
        self.run, self.config, self.model = run, run.config, run.model
        self.objective = objective or ClassificationObjective(run.config.loss)
        self.reporter = reporter or QuietReporter()
        self.callbacks = callbacks
        cfg = self.config
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = AlexNetSGD(trainable, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        steps_per_epoch = len(run.train_loader)
        self.scheduler = make_scheduler(
            self.optimizer,
            cfg.schedule,
            total_steps=cfg.epochs * steps_per_epoch,
            steps_per_epoch=steps_per_epoch,
            step_epochs=cfg.step_epochs,
            gamma=cfg.gamma,
        )
        self.epoch = 0  # completed epochs
        self.batch = 0  # completed batches of the current epoch
        self.step = 0  # completed optimisation steps
        self.history: list[dict] = []
        self._accumulators: dict | None = None
        self.static_record = {
            "model": {
                "name": cfg.model,
                "num_classes": self.model.num_classes,
                "in_chans": self.model.in_chans,
                "options": dict(cfg.model_options),
            },
            "preprocessing": run.preprocessing.to_dict(),
            "classes": list(run.dataset.classes),
            "data": cfg.data,
            "config": cfg.to_dict(),
            "versions": versions(),
            "git": git_revision(),
        }

    # ---- state -------------------------------------------------------------------------------------------
    def state_dict(self, complete: bool = False) -> dict:
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            **self.static_record,
            "model_state": self.model.state_dict(),
            "history": list(self.history),
            "train_state": {
                "epoch": self.epoch,
                "batch": self.batch,
                "step": self.step,
                "complete": complete,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rng,
                "accumulators": self._accumulators,
            },
        }

    def load_state_dict(self, payload: dict) -> None:
        """Continue from a checkpoint written by :meth:`state_dict` (model, optimizer, schedule, RNG, position)."""
        state = payload.get("train_state")
        if state is None:
            raise CheckpointError("This checkpoint holds weights only (no training state) and cannot be resumed.")
        self.model.load_state_dict(payload["model_state"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["cpu"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.history = list(payload.get("history", []))
        self._accumulators = state.get("accumulators")

    def save(self, complete: bool = False) -> None:
        save_checkpoint(self.state_dict(complete), self.run.run_dir.checkpoint)

    # ---- loop --------------------------------------------------------------------------------------------
    def fit(self) -> list[dict]:
        """Train until ``config.epochs`` epochs are complete; returns the per-epoch metric rows.

        Raises:
            NonFiniteLossError: the loss became NaN/inf (the last good checkpoint is kept).
            TrainingInterrupted: SIGINT/SIGTERM; a resumable checkpoint was saved first.
        """
        with _StopOnSignal() as stop:
            while self.epoch < self.config.epochs:
                self._train_epoch(stop)
                if stop.requested:
                    self._interrupted(stop.requested)
        return self.history

    def _interrupted(self, signal_name: str) -> None:
        where = f"epoch {self.epoch + 1}, batch {self.batch}" if self.batch else f"the end of epoch {self.epoch}"
        raise TrainingInterrupted(
            f"Stopped by {signal_name} at {where}. A resumable checkpoint is at {self.run.run_dir.checkpoint}; "
            f"continue with: cnnlab train --resume {self.run.run_dir.path}"
        )

    def _train_epoch(self, stop: _StopOnSignal) -> None:
        cfg, run, model = self.config, self.run, self.model
        loader = run.train_loader
        batches = len(loader)
        device = run.device
        acc = self._accumulators or {
            "loss_sum": torch.zeros((), dtype=torch.float64, device=device),
            "correct": torch.zeros((), dtype=torch.int64, device=device),
            "seen": 0,
            "seconds": 0.0,
        }
        loss_sum, correct = acc["loss_sum"].to(device), acc["correct"].to(device)
        seen, seconds_before = acc["seen"], acc["seconds"]
        self.reporter.start_epoch(self.epoch, cfg.epochs, batches, self.batch)
        recent_losses = torch.empty(cfg.log_every, device=device)  # per-step losses since the last sync
        n_recent = 0
        seen_here, started = 0, time.perf_counter()
        model.train()
        for images, labels in loader.batches(self.epoch, self.batch):
            loss, logits = self.objective(model, images, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            self.batch += 1
            with torch.no_grad():
                loss = loss.detach()
                recent_losses[n_recent] = loss
                n_recent += 1
                loss_sum += loss.double() * labels.shape[0]
                correct += (logits.argmax(dim=1) == labels).sum()
            seen += labels.shape[0]
            seen_here += labels.shape[0]
            if n_recent == cfg.log_every or self.batch == batches or stop.requested:
                # Sync point: the only host-device transfer of the step loop, every log_every steps.
                values = torch.cat([recent_losses[:n_recent].double(), (loss_sum / seen).view(1), correct.view(1)])
                values = values.cpu()
                bad = (~torch.isfinite(values[:n_recent])).nonzero()
                if len(bad):
                    self._non_finite(self.step - n_recent + int(bad[0]) + 1, float(values[int(bad[0])]))
                elapsed = time.perf_counter() - started
                self.reporter.update(
                    self.batch, float(values[-2]), float(values[-1]) / seen, seen_here / max(elapsed, 1e-9)
                )
                n_recent = 0
            if stop.requested:
                seconds = seconds_before + time.perf_counter() - started
                self._accumulators = {"loss_sum": loss_sum, "correct": correct, "seen": seen, "seconds": seconds}
                self.save()
                self._interrupted(stop.requested)
        seconds = seconds_before + time.perf_counter() - started
        result = evaluate(model, run.test_loader, self.objective)
        row = {
            "epoch": self.epoch + 1,
            "train_loss": float(loss_sum) / max(seen, 1),
            "train_error": 1 - float(correct) / max(seen, 1),
            "test_loss": result["loss"],
            "test_error": result["top1_error"],
            "test_top5_error": result["top5_error"],
            "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": seen_here / max(seconds - seconds_before, 1e-9),
            "seconds": seconds,
        }
        if not math.isfinite(row["test_loss"]):
            self._non_finite(self.step, row["test_loss"], during="evaluation")
        self.epoch, self.batch, self._accumulators = self.epoch + 1, 0, None
        self.history.append(row)
        self.save(complete=self.epoch == cfg.epochs)
        run.run_dir.write_metrics(self.history)
        self.reporter.end_epoch(row)
        for callback in self.callbacks:
            callback(self, row)

    def _non_finite(self, step: int, value: float, during: str = "training") -> None:
        checkpoint = self.run.run_dir.checkpoint
        kept = (
            f"The last good checkpoint, from the end of epoch {self.epoch}, is kept at {checkpoint}."
            if self.epoch > 0 and checkpoint.exists()
            else "No checkpoint was written: it happened in the first epoch."
        )
        raise NonFiniteLossError(
            f"The loss became {value} at step {step} ({during}, epoch {self.epoch + 1}); training stopped. {kept} "
            f"The learning rate is probably too high for this model: try --lr {self.config.lr / 10:g} "
            f"(was {self.config.lr:g})."
        )
