"""The training loop: steps, evaluation each epoch, atomic checkpoints, exact resume, safe stops, many GPUs.

One step, the fast path (each part has a config flag):

    images ─ channels_last ─▶ [autocast bf16/fp16 ─ objective] ─▶ backward (×accumulate_steps micro-batches,
    DDP all-reduce on the last) ─▶ unscale + clip ─▶ optimiser (fused on CUDA) ─▶ schedule ─▶ EMA

No host-device sync happens inside the loop: losses and counts are accumulated on the device and read at the
named sync points, every ``log_every`` steps, at each checkpoint and at the end of the epoch. That is also
where NaN/inf losses are detected and, with several processes, where metrics and stop requests are summed.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import nn

from cnnlab.errors import CheckpointError, ConfigError, NonFiniteLossError, TrainingInterrupted
from cnnlab.train.distributed import (
    all_gather_object,
    all_reduce_sum,
    broadcast_buffers,
    broadcast_object,
    convert_sync_batchnorm,
    rank_and_world_size,
    wrap_data_parallel,
)
from cnnlab.train.ema import ModelEMA
from cnnlab.train.evaluate import evaluate
from cnnlab.train.fastpath import resolve_fast_path
from cnnlab.train.objective import ClassificationObjective, Objective
from cnnlab.train.optim import make_optimizer, make_scheduler
from cnnlab.train.progress import QuietReporter, Reporter
from cnnlab.train.provenance import git_revision, versions
from cnnlab.train.resources import peak_memory
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


class _Dispatch(nn.Module):
    """The module DDP and torch.compile wrap: its forward is the model's, or ``forward_with_aux``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, with_aux: bool = False):
        return self.model.forward_with_aux(images) if with_aux else self.model(images)


class _TrainingView:
    """What the objective receives in training when the model is wrapped (DDP, compiled): calls go through the
    wrapper, so gradients are synchronised and compiled code runs; ``training``, ``aux_loss_weight`` and
    ``parameters()`` are the model's, and ``forward_with_aux`` exists exactly when the model has it."""

    def __init__(self, model: nn.Module, wrapped: nn.Module):
        self._model, self._wrapped = model, wrapped
        if hasattr(model, "forward_with_aux"):
            self.forward_with_aux = lambda images: wrapped(images, True)

    @property
    def training(self) -> bool:
        return self._model.training

    @property
    def aux_loss_weight(self) -> float:
        return self._model.aux_loss_weight

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self._wrapped(images)

    def parameters(self):
        return self._model.parameters()


class Trainer:
    """Trains ``run.model`` on ``run.train_loader``, evaluating on ``run.test_loader`` after every epoch.

    Under torch.distributed (``torchrun``; see :mod:`cnnlab.train.distributed`) the model is wrapped in
    DistributedDataParallel and only rank 0 reports, writes files and runs callbacks.

    Args:
        run: what :func:`~cnnlab.train.setup.build_run` built (after the process group, if any, exists).
        objective: the loss to minimise (default: classification with ``config.loss`` and label smoothing).
        reporter: progress display (default: none).
        callbacks: called as ``callback(trainer, row)`` after each epoch's checkpoint is written (rank 0).
        epoch_hooks: called the same way in *every* process, before the callbacks: changes to the training
            itself that all processes must make alike (gradual unfreezing).
        param_groups: optimiser parameter groups with their own keys, e.g. a fine-tuned head and body at two
            learning rates (``[{"params": head, "lr": 0.01}, {"params": body, "lr": 0.001}]``); default: all
            trainable parameters at ``config.lr``. Schedules scale every group's rate alike.
    """

    def __init__(
        self,
        run: TrainingRun,
        objective: Objective | None = None,
        reporter: Reporter | None = None,
        callbacks: tuple[EpochCallback, ...] = (),
        epoch_hooks: tuple[EpochCallback, ...] = (),
        param_groups: list[dict] | None = None,
    ):
        self.run, self.config, self.model = run, run.config, run.model
        cfg, device = self.config, run.device
        self.rank, self.world_size = rank_and_world_size()
        self.is_main = self.rank == 0
        self.objective = objective or ClassificationObjective(cfg.loss, cfg.label_smoothing)
        self.reporter = (reporter or QuietReporter()) if self.is_main else QuietReporter()
        self.callbacks = callbacks if self.is_main else ()
        self.epoch_hooks = epoch_hooks
        self.fast = resolve_fast_path(cfg, device, self.model)
        self.fast.apply_global_settings()
        if self.world_size > 1:  # own dropout masks per process (the model was initialised before, identically)
            torch.manual_seed(cfg.seed * 1_000_003 + self.rank)
        if self.world_size > 1 and cfg.sync_bn:
            self.model = convert_sync_batchnorm(self.model)
        if self.fast.channels_last:
            self.model.to(memory_format=torch.channels_last)
        loader = run.train_loader
        remainder = loader.num_samples % loader.batch_size
        if self.fast.cuda_graphs and remainder:
            self._drop_last_batch("--cuda-graphs replays one captured step, so every batch must have one shape")
        elif self.world_size > 1 and 0 < remainder < self.world_size:
            self._drop_last_batch(
                f"its last global batch of {remainder} would leave some of the {self.world_size} processes without "
                "an image, and DDP needs every process in every backward"
            )
        self.optimizer = make_optimizer(
            self.model,
            cfg.optimizer,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            decay_norm_and_bias=cfg.decay_norm_and_bias,
            device=device,
            capturable=self.fast.cuda_graphs,
            groups=param_groups,
        )
        steps_per_epoch = len(loader)
        self.scheduler = make_scheduler(
            self.optimizer,
            cfg.schedule,
            total_steps=cfg.epochs * steps_per_epoch,
            steps_per_epoch=steps_per_epoch,
            step_epochs=cfg.step_epochs,
            gamma=cfg.gamma,
            milestones=cfg.milestones,
            warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.fast.uses_scaler)
        # The paper's rule on the weights after every step (ZF Net's filter RMS, maxout's max-norm balls)
        self._weight_constraints = cfg.weight_constraints and getattr(self.model, "has_weight_constraints", False)
        self.ema = ModelEMA(self.model, cfg.ema_decay) if cfg.ema_decay else None
        self._wrap()
        self._tensorboard = None
        self._samples: tuple[torch.Tensor, torch.Tensor] | None = None  # test images shown in TensorBoard
        self.epoch = 0  # completed epochs
        self.batch = 0  # completed batches of the current epoch
        self.step = 0  # completed optimisation steps
        self.history: list[dict] = []
        self._accumulators: dict | None = None
        self._last_saved: tuple[int, int] | None = None  # (epoch, batch) of the newest checkpoint
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

    def _drop_last_batch(self, why: str) -> None:
        loader = self.run.train_loader
        if getattr(loader, "drop_last", None) is None:
            raise ConfigError(
                f"This run's loader cannot drop its last partial batch, but {why}. Choose a batch size that "
                f"divides the {loader.num_samples:,} training images."
            )
        if not loader.drop_last:
            loader.drop_last = True
            self.reporter.message(f"note: dropping the last partial batch of every epoch: {why}.")

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are evaluated and saved as ``model_state``: the EMA when on, else the model."""
        return self.ema.module if self.ema is not None else self.model

    # ---- state -------------------------------------------------------------------------------------------
    def state_dict(self, complete: bool = False) -> dict:
        """The whole training state (a collective under torch.distributed: every process's RNG is gathered)."""
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        per_rank = all_gather_object(rng)  # dropout masks differ per process; each resumes its own stream
        train_state = {
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "complete": complete,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": per_rank[0],
            "rng_per_rank": per_rank,
            "accumulators": self._accumulators,
            "world_size": self.world_size,
        }
        if self.scaler.is_enabled():
            train_state["scaler"] = self.scaler.state_dict()
        if self.ema is not None:
            train_state["ema_updates"] = self.ema.updates
            train_state["raw_model_state"] = self.model.state_dict()  # what training continues from
        return {
            **self.static_record,
            "model_state": self.eval_model.state_dict(),  # what eval/predict use: the EMA weights when on
            "history": list(self.history),
            "train_state": train_state,
        }

    def load_state_dict(self, payload: dict) -> None:
        """Continue from a checkpoint written by :meth:`state_dict`: model, EMA, optimiser, schedule, scaler,
        RNG, running metrics and position, so the run goes on exactly as if never stopped."""
        state = payload.get("train_state")
        if state is None:
            raise CheckpointError("This checkpoint holds weights only (no training state) and cannot be resumed.")
        if self.ema is not None:
            if "raw_model_state" not in state:
                raise CheckpointError("This checkpoint was trained without --ema-decay; resume it without EMA.")
            self.model.load_state_dict(state["raw_model_state"])
            self.ema.module.load_state_dict(payload["model_state"])
            self.ema.updates = int(state["ema_updates"])
        else:
            self.model.load_state_dict(state.get("raw_model_state", payload["model_state"]))
        self.optimizer.load_state_dict(state["optimizer"])
        try:
            self.scheduler.load_state_dict(state["scheduler"])
        except KeyError:  # written by an older cnnlab with another scheduler class: recompute η at this step
            self.scheduler.last_epoch = state["step"]
            lambdas = zip(self.scheduler.base_lrs, self.scheduler.lr_lambdas, strict=True)
            rates = [base * factor(state["step"]) for base, factor in lambdas]
            for group, rate in zip(self.optimizer.param_groups, rates, strict=True):
                group["lr"] = rate
            self.scheduler._last_lr = rates
        if self.scaler.is_enabled() and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        per_rank = state.get("rng_per_rank") or [state["rng"]]
        rng = per_rank[self.rank] if len(per_rank) == self.world_size else per_rank[0]
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.history = list(payload.get("history", []))
        # Saved running sums are already totals over processes: rank 0 continues them, the others restart at 0.
        self._accumulators = state.get("accumulators") if self.rank == 0 else None
        if self._accumulators is None and self.batch:
            self._accumulators = _zero_accumulators(self.run.device)
        self._last_saved = (self.epoch, self.batch)

    def save(self, complete: bool = False, best: bool = False) -> None:
        """Write a checkpoint (rank 0; a collective under torch.distributed). On failure every process raises.

        Raises:
            CheckpointError: the write failed; the message says which earlier checkpoint is intact.
        """
        payload = self.state_dict(complete)
        failure = None
        if self.is_main:
            try:
                self.run.run_dir.commit_checkpoint(payload, self.step, self.config.keep_last, best=best)
            except CheckpointError as error:
                failure = str(error)
        failure = broadcast_object(failure)
        if failure is not None:
            resume = (
                f"It holds the state at {_position(*self._last_saved)}; continue from there with: "
                f"cnnlab train --resume {self.run.run_dir.path}"
                if self._last_saved is not None
                else ""
            )
            self._write_summary("checkpoint-failed")
            raise CheckpointError(f"Training stopped at step {self.step}: {failure} {resume}".rstrip())
        self._last_saved = (self.epoch, self.batch)

    # ---- loop --------------------------------------------------------------------------------------------
    def fit(self) -> list[dict]:
        """Train until ``config.epochs`` epochs are complete; returns the per-epoch metric rows.

        Writes ``summary.json`` when training stops, however it stops.

        Raises:
            NonFiniteLossError: the loss became NaN/inf (the last good checkpoint is kept).
            TrainingInterrupted: SIGINT/SIGTERM; a resumable checkpoint was saved first.
        """
        self._started = time.perf_counter()
        if self.is_main and self.config.tensorboard and self._tensorboard is None:
            from cnnlab.train.tensorboard import TensorBoardLogger

            self._tensorboard = TensorBoardLogger(self.run.run_dir.tensorboard)
        try:
            with _StopOnSignal() as stop:
                while self.epoch < self.config.epochs:
                    self._train_epoch(stop)
                    if stop.requested and self.world_size == 1:
                        self._interrupted(stop.requested)
        except TrainingInterrupted:
            self._write_summary("interrupted")
            raise
        except NonFiniteLossError:
            self._write_summary("non-finite loss")
            raise
        finally:
            if self._tensorboard is not None:
                self._tensorboard.flush()
        self._write_summary("complete")
        return self.history

    def close(self) -> None:
        """Close the TensorBoard writer (fit flushes it; close when done with the trainer)."""
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def _interrupted(self, signal_name: str) -> None:
        raise TrainingInterrupted(
            f"Stopped by {signal_name} at {_position(self.epoch, self.batch)}. "
            f"A resumable checkpoint is at {self.run.run_dir.checkpoint}; "
            f"continue with: cnnlab train --resume {self.run.run_dir.path}"
        )

    def _global_batch(self, batch_index: int, local: int) -> int:
        """Images in global batch ``batch_index`` over all processes (this process has ``local`` of them)."""
        if self.world_size == 1:
            return local
        loader = self.run.train_loader
        return min(loader.batch_size, loader.num_samples - batch_index * loader.batch_size)

    def _wrap(self) -> None:
        """``train_model``: the model itself, or wrapped for DDP and/or torch.compile; no captured CUDA graph yet."""
        self._ddp: nn.Module | None = None
        self.train_model: nn.Module | _TrainingView = self.model
        if self.world_size > 1 or self.fast.compile:
            wrapped: nn.Module = _Dispatch(self.model)
            if self.world_size > 1:
                wrapped = self._ddp = wrap_data_parallel(wrapped, self.run.device)
            if self.fast.compile:
                wrapped = torch.compile(wrapped)
            self.train_model = _TrainingView(self.model, wrapped)
        self._graphed = None

    def trainable_parameters_changed(self) -> None:
        """Call after changing which parameters require gradients (gradual unfreezing in fine-tuning).

        DDP fixes the parameters it synchronises when it wraps the model, and a captured CUDA graph the
        gradients it computes, so both are rebuilt; without this, newly unfrozen parameters would train apart
        in each process. The optimiser already holds every parameter (frozen ones have no gradient).
        """
        self._wrap()

    def _step(self, images: torch.Tensor, labels: torch.Tensor, global_n: int) -> tuple[torch.Tensor, ...]:
        """One optimisation step on this process's part of a global batch of ``global_n`` images.

        Each micro-batch's mean loss is weighted by its share of the global batch (× world size, which DDP's
        gradient averaging divides out), so the summed gradient is the gradient of the global batch's mean
        loss whatever the split: exact gradient accumulation and data parallelism.

        Returns device tensors: (this process's share of the step's mean loss, its sum of per-image losses,
        its number of correct top-1 predictions). No host sync.
        """
        cfg = self.config
        k = cfg.accumulate_steps
        chunks = [(x, y) for x, y in zip(images.tensor_split(k), labels.tensor_split(k), strict=True) if len(y)]
        step_loss = loss_sum = correct = None
        self.optimizer.zero_grad(set_to_none=True)
        for i, (x, y) in enumerate(chunks):
            share = y.shape[0] / global_n
            sync = self._ddp.no_sync() if self._ddp is not None and i < len(chunks) - 1 else nullcontext()
            with sync:
                with self.fast.autocast():
                    loss, logits = self.objective(self.train_model, x, y)
                weight = share * self.world_size
                self.scaler.scale(loss if weight == 1 else loss * weight).backward()
            with torch.no_grad():
                loss = loss.detach().float()
                hits = (logits.argmax(dim=1) == y).sum()
                part = (loss * share, loss.double() * y.shape[0], hits)
                if step_loss is None:
                    step_loss, loss_sum, correct = part
                else:
                    step_loss, loss_sum, correct = step_loss + part[0], loss_sum + part[1], correct + part[2]
        self._update()
        return step_loss, loss_sum, correct

    def _update(self) -> None:
        """Clip, optimiser step (through the loss scaler for fp16), schedule, EMA: after the gradients exist."""
        if self.config.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)  # no-op without fp16
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.clip_grad_norm, foreach=True)  # no host sync
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # skips the step if a gradient overflowed (reads a flag: syncs)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self._weight_constraints:
            self.model.apply_weight_constraints_()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update()

    def _graphed_step(self, images: torch.Tensor, labels: torch.Tensor, global_n: int) -> tuple[torch.Tensor, ...]:
        """``_step`` through a captured CUDA graph (see graphs.py): same math, one launch."""
        from cnnlab.train.graphs import GraphedStep

        if self._graphed is None:
            self._ema_decay = torch.zeros((), device=images.device)
            n = labels.shape[0]

            def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
                with self.fast.autocast():
                    loss, logits = self.objective(self.train_model, x, y)
                loss.backward()
                if self.config.clip_grad_norm:
                    params = [p for group in self.optimizer.param_groups for p in group["params"]]
                    torch.nn.utils.clip_grad_norm_(params, self.config.clip_grad_norm, foreach=True)
                self.optimizer.step()
                if self._weight_constraints:
                    self.model.apply_weight_constraints_()
                if self.ema is not None:
                    self.ema.update_with_tensor_decay(self._ema_decay)
                loss = loss.detach().float()
                return loss, loss.double() * n, (logits.argmax(dim=1) == y).sum()

            modules = [self.model] + ([self.ema.module] if self.ema is not None else [])
            self._graphed = GraphedStep(step, images, labels, modules, self.optimizer)
        if self.ema is not None:
            self._ema_decay.fill_(self.ema.current_decay())  # a device write between replays, no sync
            self.ema.updates += 1
        outputs = self._graphed(images, labels)
        self.scheduler.step()  # fills the device tensor η in place for the next replay
        return tuple(o.clone() for o in outputs)

    def _train_epoch(self, stop: _StopOnSignal) -> None:
        cfg, run, model = self.config, self.run, self.model
        loader = run.train_loader
        batches = len(loader)
        device = run.device
        acc = self._accumulators or _zero_accumulators(device)
        loss_sum, correct = acc["loss_sum"].to(device), acc["correct"].to(device)
        seen, seconds_before = acc["seen"], acc["seconds"]
        self.reporter.start_epoch(self.epoch, cfg.epochs, batches, self.batch)
        recent_losses = torch.empty(cfg.log_every, device=device)  # per-step losses since the last sync
        n_recent = 0
        seen_here, started = 0, time.perf_counter()
        step_fn = self._graphed_step if self.fast.cuda_graphs else self._step
        model.train()
        for images, labels in loader.batches(self.epoch, self.batch):
            if self.fast.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            global_n = self._global_batch(self.batch, labels.shape[0])
            step_loss, step_loss_sum, step_correct = step_fn(images, labels, global_n)
            self.step += 1
            self.batch += 1
            with torch.no_grad():
                recent_losses[n_recent] = step_loss
                n_recent += 1
                loss_sum += step_loss_sum
                correct += step_correct
            seen += labels.shape[0]
            seen_here += labels.shape[0]
            checkpoint_due = bool(cfg.checkpoint_every) and self.step % cfg.checkpoint_every == 0
            # One process stops as soon as asked; several agree at the next sync point (a collective).
            stop_here = stop.requested is not None and self.world_size == 1
            if not (n_recent == cfg.log_every or self.batch == batches or checkpoint_due or stop_here):
                continue
            # Sync point: the only host-device transfer of the step loop (and, distributed, one all-reduce).
            flag = torch.tensor([1.0 if stop.requested else 0.0], dtype=torch.float64, device=device)
            totals = torch.cat(
                [
                    recent_losses[:n_recent].double(),
                    loss_sum.view(1),
                    correct.double().view(1),
                    torch.tensor([float(seen), float(seen_here)], dtype=torch.float64, device=device),
                    flag,
                ]
            )
            values = all_reduce_sum(totals).cpu()
            bad = (~torch.isfinite(values[:n_recent])).nonzero()
            if len(bad):
                self._non_finite(self.step - n_recent + int(bad[0]) + 1, float(values[int(bad[0])]))
            global_seen, global_seen_here, stop_votes = float(values[-3]), float(values[-2]), float(values[-1])
            elapsed = time.perf_counter() - started
            lr = float(self.optimizer.param_groups[0]["lr"])
            recent_mean = float(values[:n_recent].mean())
            speed = global_seen_here / max(elapsed, 1e-9)
            mean_loss, accuracy = float(values[n_recent]) / global_seen, float(values[n_recent + 1]) / global_seen
            self.reporter.update(self.batch, mean_loss, accuracy, speed, lr=lr)
            if self._tensorboard is not None:
                scalars = {"train/loss": recent_mean, "train/accuracy": accuracy, "train/lr": lr}
                self._tensorboard.scalars(self.step, {**scalars, "train/images_per_s": speed})
            n_recent = 0
            stopping = stop_votes > 0
            if checkpoint_due or stopping:
                seconds = seconds_before + time.perf_counter() - started
                self._accumulators = {
                    "loss_sum": torch.tensor(float(values[-5]), dtype=torch.float64),  # totals over processes
                    "correct": torch.tensor(int(values[-4]), dtype=torch.int64),
                    "seen": int(global_seen),
                    "seconds": seconds,
                }
                if self.batch < batches or stopping:
                    self.save()
                if stopping:
                    self._interrupted(stop.requested or "a signal to another process")
        seconds = seconds_before + time.perf_counter() - started
        counts = torch.tensor([float(seen), float(seen_here)], dtype=torch.float64, device=device)
        totals = all_reduce_sum(torch.cat([loss_sum.view(1), correct.double().view(1), counts]))
        loss_total, correct_total, seen_total, seen_here_total = totals.cpu().tolist()  # sync (end of epoch)
        if self.world_size > 1:  # every process scores its shard with rank 0's weights and BN statistics
            broadcast_buffers(self.eval_model)
        with self.fast.autocast():
            result = evaluate(self.eval_model, run.test_loader, self.objective, distributed=self.world_size > 1)
        row = {
            "epoch": self.epoch + 1,
            "train_loss": loss_total / max(seen_total, 1),
            "train_error": 1 - correct_total / max(seen_total, 1),
            "test_loss": result["loss"],
            "test_error": result["top1_error"],
            "test_top5_error": result["top5_error"],
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "images_per_s": seen_here_total / max(seconds - seconds_before, 1e-9),
            "seconds": seconds,
            "train_images": int(seen_total),
        }
        if not math.isfinite(row["test_loss"]):
            self._non_finite(self.step, row["test_loss"], during="evaluation")
        best_before = min((r["test_error"] for r in self.history), default=math.inf)
        self.epoch, self.batch, self._accumulators = self.epoch + 1, 0, None
        self.history.append(row)
        self.save(complete=self.epoch == cfg.epochs, best=row["test_error"] < best_before)
        if self.is_main:
            run.run_dir.write_metrics(self.history)
            if self._tensorboard is not None:
                self._log_epoch(row)
        self.reporter.end_epoch(row)
        for hook in self.epoch_hooks:
            hook(self, row)
        for callback in self.callbacks:
            callback(self, row)

    def _log_epoch(self, row: dict) -> None:
        assert self._tensorboard is not None
        self._tensorboard.scalars(
            self.step,
            {
                "epoch/train_loss": row["train_loss"],
                "epoch/train_error": row["train_error"],
                "test/loss": row["test_loss"],
                "test/error": row["test_error"],
                "test/top5_error": row["test_top5_error"],
            },
        )
        if self._samples is None:  # the same 16 test images every epoch (taken once: a loader may start workers)
            images, labels = next(iter(self.run.test_loader.batches()))
            self._samples = images[:16].clone(), labels[:16].clone()
        images, labels = self._samples
        model = self.eval_model
        was_training = model.training
        model.eval()
        with torch.no_grad(), self.fast.autocast():
            logits = model(images)
        model.train(was_training)
        pre, classes = self.run.preprocessing, list(self.run.dataset.classes)
        self._tensorboard.predictions(self.step, images, labels, logits, classes, pre.mean, pre.std)

    def _write_summary(self, status: str) -> None:
        """summary.json: best and last epoch, wall time, throughput, peak memory (rank 0)."""
        if not self.is_main:
            return
        history = self.history
        train_seconds = sum(r["seconds"] for r in history)
        images = sum(r.get("train_images", 0) for r in history)
        best = min(history, key=lambda r: r["test_error"]) if history else None
        record = {
            "status": status,
            "model": self.config.model,
            "data": self.config.data,
            "epochs_completed": self.epoch,
            "epochs": self.config.epochs,
            "steps": self.step,
            "best": best,
            "last": history[-1] if history else None,
            "wall_seconds": time.perf_counter() - getattr(self, "_started", time.perf_counter()),
            "train_seconds": train_seconds,
            "images_per_s": images / train_seconds if train_seconds > 0 else None,
            "peak_memory": peak_memory(self.run.device),
            "device": str(self.run.device),
            "processes": self.world_size,
            "fast_path": self.fast.describe(),
            "versions": self.static_record["versions"],
        }
        self.run.run_dir.write_json("summary.json", record)

    def _non_finite(self, step: int, value: float, during: str = "training") -> None:
        checkpoint = self.run.run_dir.checkpoint
        if self._last_saved is not None and checkpoint.exists():
            kept = f"The last good checkpoint, from {_position(*self._last_saved)}, is kept at {checkpoint}."
        else:
            kept = "No checkpoint was written: it happened before the first one."
        raise NonFiniteLossError(
            f"The loss became {value} at step {step} ({during}, epoch {self.epoch + 1}); training stopped. {kept} "
            f"The learning rate is probably too high for this model: try --lr {self.config.lr / 10:g} "
            f"(was {self.config.lr:g})."
        )


def _position(epoch: int, batch: int) -> str:
    """Where a state is, in words: "the end of epoch 3" or "epoch 4, batch 17" (epochs counted from 1)."""
    return f"the end of epoch {epoch}" if batch == 0 else f"epoch {epoch + 1}, batch {batch}"


def _zero_accumulators(device: torch.device) -> dict:
    return {
        "loss_sum": torch.zeros((), dtype=torch.float64, device=device),
        "correct": torch.zeros((), dtype=torch.int64, device=device),
        "seen": 0,
        "seconds": 0.0,
    }
