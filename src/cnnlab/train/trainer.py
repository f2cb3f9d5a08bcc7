"""The engine: drives a :class:`~cnnlab.train.task.Task` through epochs, with evaluation, atomic checkpoints,
exact resume, safe stops, AMP, channels-last, torch.compile, CUDA graphs and DDP — for every task alike.

Three parts, each in its own module: the step (:mod:`cnnlab.train.step`: one function for the eager and the
graphed path), the state (:meth:`Trainer.state_dict` / :meth:`Trainer.load_state_dict`: everything a checkpoint
holds) and the monitoring (:mod:`cnnlab.train.monitor`: progress, TensorBoard, metrics.csv, summary.json).
This module owns the loop that joins them.

No host-device sync happens inside the loop: losses and metric sums are accumulated on the device and read at
the named sync points (:func:`~cnnlab.train.totals.sync_totals`), every ``log_every`` steps, at each checkpoint
and at the end of the epoch. That is also where NaN/inf losses are detected and, with several processes, where
metrics and stop requests are summed.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from cnnlab.errors import CheckpointError, ConfigError, NonFiniteLossError, TrainingInterrupted
from cnnlab.train.distributed import (
    all_gather_object,
    broadcast_buffers,
    broadcast_object,
    convert_sync_batchnorm,
    rank_and_world_size,
    wrap_data_parallel,
)
from cnnlab.train.ema import ModelEMA
from cnnlab.train.fastpath import resolve_fast_path
from cnnlab.train.monitor import Monitor
from cnnlab.train.objective import ClassificationObjective, Objective, aux_heads
from cnnlab.train.optim import make_optimizer, make_scheduler, multiplier_groups
from cnnlab.train.progress import Reporter
from cnnlab.train.provenance import git_revision, versions
from cnnlab.train.record import TrainingState
from cnnlab.train.setup import TrainingRun
from cnnlab.train.step import PartState, StepRunner, StepSettings
from cnnlab.train.task import ClassificationTask, Task
from cnnlab.train.totals import sync_totals

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
    """The module DDP and torch.compile wrap: its forward is the model's, or another of its methods by name
    (``forward_with_aux``), so those calls go through the wrapper too."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args, method: str | None = None):
        return getattr(self.model, method)(*args) if method else self.model(*args)


class _TrainingView:
    """What a task receives in training when a model is wrapped (DDP, compiled): calls go through the wrapper,
    so gradients are synchronised and compiled code runs; every other attribute is the model's, and
    ``forward_with_aux`` runs through the wrapper too when the model has auxiliary heads (the model contract)."""

    def __init__(self, model: nn.Module, wrapped: nn.Module):
        self._model, self._wrapped = model, wrapped
        if aux_heads(model):
            self.forward_with_aux = lambda images: wrapped(images, method="forward_with_aux")

    def __call__(self, *args):
        return self._wrapped(*args)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


class Trainer:
    """Trains a task on ``run.train_loader``, evaluating after every epoch.

    Under torch.distributed (``torchrun``; see :mod:`cnnlab.train.distributed`) each model is wrapped in
    DistributedDataParallel and only rank 0 reports, writes files and runs callbacks.

    Args:
        run: what :func:`~cnnlab.train.setup.build_run` built (after the process group, if any, exists).
        task: what to train (default: classification of ``run.model`` with ``objective``).
        objective: for the default classification task: the loss (default: ``config.loss`` with label
            smoothing; the adversarial objective is another).
        reporter: progress display (default: none).
        callbacks: called as ``callback(trainer, row)`` after each epoch's checkpoint is written (rank 0).
        epoch_hooks: called the same way in *every* process, before the callbacks: changes to the training
            itself that all processes must make alike (gradual unfreezing).
        param_groups: for a one-optimiser task: parameter groups with their own keys, e.g. a fine-tuned head and
            body at two learning rates (``[{"params": head, "lr": 0.01}, {"params": body, "lr": 0.001}]``);
            default: all trainable parameters at ``config.lr``. Schedules scale every group's rate alike.
    """

    def __init__(
        self,
        run: TrainingRun,
        objective: Objective | None = None,
        reporter: Reporter | None = None,
        callbacks: tuple[EpochCallback, ...] = (),
        epoch_hooks: tuple[EpochCallback, ...] = (),
        param_groups: list[dict] | None = None,
        task: Task | None = None,
    ):
        self.run, self.config = run, run.config
        cfg, device = self.config, run.device
        if task is None:
            objective = objective or ClassificationObjective(cfg.loss, cfg.label_smoothing)
            task = ClassificationTask(run.model, objective, validation=getattr(run, "val_loader", None) is not None)
        elif objective is not None:
            raise ConfigError("Give either a task or an objective (for the default classification task), not both.")
        self.task = task
        self.objective = getattr(task, "objective", None)
        self.rank, self.world_size = rank_and_world_size()
        self.is_main = self.rank == 0
        self.monitor = Monitor(run, task, reporter, self.is_main, cfg.tensorboard)
        self.callbacks = callbacks if self.is_main else ()
        self.epoch_hooks = epoch_hooks
        main_model = task.models[task.main]
        self.fast = resolve_fast_path(cfg, device, main_model)
        self.fast.apply_global_settings()
        if self.world_size > 1:  # own dropout masks per process (the model was initialised before, identically)
            torch.manual_seed(cfg.seed * 1_000_003 + self.rank)
        for name, model in task.models.items():
            model.to(device)
            if self.world_size > 1 and cfg.sync_bn:
                model = task.models[name] = convert_sync_batchnorm(model)
            if self.fast.channels_last:
                model.to(memory_format=torch.channels_last)
        self.model = task.models[task.main]
        if isinstance(task, ClassificationTask):
            run.model = self.model
        parts = task.parts()
        if self.fast.cuda_graphs and len(parts) > 1:
            raise ConfigError("--cuda-graphs captures one optimiser's step; this task has several. Turn it off.")
        self._check_last_batch()
        steps_per_epoch = len(run.train_loader)
        self.parts = [self._part_state(part, param_groups if len(parts) == 1 else None, steps_per_epoch)
                      for part in parts]  # fmt: skip
        main_part = next(p for p in self.parts if task.main in p.part.models)
        self.optimizer, self.scheduler, self.scaler = main_part.optimizer, main_part.scheduler, main_part.scaler
        # The paper's rule on the weights after every step (ZF Net's filter RMS, maxout's max-norm balls)
        self._weight_constraints = cfg.weight_constraints and getattr(self.model, "has_weight_constraints", False)
        self.ema = ModelEMA(self.model, cfg.ema_decay) if cfg.ema_decay else None
        settings = StepSettings(cfg.accumulate_steps, cfg.clip_grad_norm, self.world_size, self.fast.autocast)
        self.steps = StepRunner(task, self.parts, settings, self._constrain, self._average)
        self._wrap()
        self.epoch = 0  # completed epochs
        self.batch = 0  # completed batches of the current epoch
        self.step = 0  # completed optimisation steps
        self.history: list[dict] = []
        self._accumulators: dict | None = None
        self._last_saved: tuple[int, int] | None = None  # (epoch, batch) of the newest checkpoint
        self.static_record = {
            **task.record(run),
            "task": task.name,
            "config": cfg.to_dict(),
            "versions": versions(),
            "git": git_revision(),
        }

    def _part_state(self, part, param_groups: list[dict] | None, steps_per_epoch: int) -> PartState:
        cfg, device = self.config, self.run.device
        options = {"optimizer": cfg.optimizer, "lr": cfg.lr, "momentum": cfg.momentum,
                   "weight_decay": cfg.weight_decay, **part.options}  # fmt: skip
        if cfg.momentum_ramp_epochs > 0 and options["optimizer"] not in ("sgd", "alexnet-sgd"):
            raise ConfigError(
                f"--momentum-ramp-epochs ramps SGD's μ, but the {part.name}'s optimiser is {options['optimizer']}. "
                "Drop the ramp or train that part with sgd."
            )
        ramp_steps = max(1, round(cfg.momentum_ramp_epochs * steps_per_epoch)) if cfg.momentum_ramp_epochs else 0
        models = [self.task.models[name] for name in part.models]
        holder = models[0] if len(models) == 1 else nn.ModuleList(models)
        if param_groups is None and len(models) == 1:  # a model's own rates (e.g. a spatial transformer's)
            param_groups = multiplier_groups(holder, options["lr"])
        optimizer = make_optimizer(
            holder,
            options["optimizer"],
            lr=options["lr"],
            momentum=options["momentum"],
            weight_decay=options["weight_decay"],
            decay_norm_and_bias=cfg.decay_norm_and_bias,
            device=device,
            capturable=self.fast.cuda_graphs,
            groups=param_groups,
        )
        scheduler = make_scheduler(
            optimizer,
            cfg.schedule,
            total_steps=cfg.epochs * steps_per_epoch,
            steps_per_epoch=steps_per_epoch,
            step_epochs=cfg.step_epochs,
            gamma=cfg.gamma,
            milestones=cfg.milestones,
            warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
            momentum_start=cfg.momentum_start,
            momentum_ramp_steps=ramp_steps,
        )
        scaler = torch.amp.GradScaler(device.type, enabled=self.fast.uses_scaler)
        return PartState(part, optimizer, scheduler, scaler, ddp=[])

    def _check_last_batch(self) -> None:
        loader = self.run.train_loader
        remainder = loader.num_samples % loader.batch_size
        if self.fast.cuda_graphs and remainder:
            self._drop_last_batch("--cuda-graphs replays one captured step, so every batch must have one shape")
        elif self.world_size > 1 and 0 < remainder < self.world_size:
            self._drop_last_batch(
                f"its last global batch of {remainder} would leave some of the {self.world_size} processes without "
                "an image, and DDP needs every process in every backward"
            )

    def _drop_last_batch(self, why: str) -> None:
        loader = self.run.train_loader
        if getattr(loader, "drop_last", None) is None:
            raise ConfigError(
                f"This run's loader cannot drop its last partial batch, but {why}. Choose a batch size that "
                f"divides the {loader.num_samples:,} training images."
            )
        if not loader.drop_last:
            loader.drop_last = True
            self.monitor.message(f"note: dropping the last partial batch of every epoch: {why}.")

    @property
    def reporter(self) -> Reporter:
        return self.monitor.reporter

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are evaluated and saved as ``model_state``: the EMA when on, else the model."""
        return self.ema.module if self.ema is not None else self.model

    def _eval_nets(self) -> dict[str, nn.Module]:
        return {**self.task.models, self.task.main: self.eval_model}

    def _constrain(self) -> None:
        if self._weight_constraints:
            self.model.apply_weight_constraints_()

    def _average(self, graphed: bool) -> None:
        if self.ema is None:
            return
        if graphed:
            self.ema.update_with_tensor_decay(self._ema_decay)
        else:
            self.ema.update()

    # ---- state -------------------------------------------------------------------------------------------
    def state_dict(self, complete: bool = False) -> dict:
        """The whole training state as a checkpoint payload (:class:`~cnnlab.train.record.TrainingState`; a
        collective under torch.distributed: every process's RNG is gathered)."""
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        per_rank = all_gather_object(rng)  # dropout masks differ per process; each resumes its own stream
        parts = {}
        for state in self.parts:
            saved = {"optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict()}
            if state.scaler.is_enabled():
                saved["scaler"] = state.scaler.state_dict()
            parts[state.part.name] = saved
        state = TrainingState(
            epoch=self.epoch,
            batch=self.batch,
            step=self.step,
            complete=complete,
            model_state=self.eval_model.state_dict(),  # what eval/predict use: the EMA weights when on
            raw_model_state=self.model.state_dict() if self.ema is not None else None,  # what training continues
            model_states={name: m.state_dict() for name, m in self.task.models.items() if name != self.task.main},
            ema_updates=self.ema.updates if self.ema is not None else None,
            parts=parts,
            rng_per_rank=per_rank,
            accumulators=self._accumulators,
            world_size=self.world_size,
            task_state=self.task.state_dict(),
            history=list(self.history),
        )
        return state.to_payload(self.static_record)

    def load_state_dict(self, payload: dict) -> None:
        """Continue from a checkpoint written by :meth:`state_dict`: models, EMA, optimisers, schedules, scalers,
        RNG, running metrics and position, so the run goes on exactly as if never stopped."""
        state = TrainingState.from_payload(payload, [p.part.name for p in self.parts])
        if self.ema is not None:
            if state.raw_model_state is None:
                raise CheckpointError("This checkpoint was trained without --ema-decay; resume it without EMA.")
            self.model.load_state_dict(state.raw_model_state)
            self.ema.module.load_state_dict(state.model_state)
            self.ema.updates = int(state.ema_updates or 0)
        else:
            self.model.load_state_dict(state.raw_model_state or state.model_state)
        for name, model_state in state.model_states.items():
            self.task.models[name].load_state_dict(model_state)
        for part in self.parts:
            _load_part(part, state.parts[part.part.name], state.step)
        self.task.load_state_dict(state.task_state)
        per_rank = state.rng_per_rank
        rng = per_rank[self.rank] if len(per_rank) == self.world_size else per_rank[0]
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.epoch, self.batch, self.step = state.epoch, state.batch, state.step
        self.history = state.history
        # Saved running sums are already totals over processes: rank 0 continues them, the others restart at 0.
        self._accumulators = state.accumulators if self.rank == 0 else None
        if self._accumulators is None and self.batch:
            self._accumulators = self._zero_accumulators()
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
        self.monitor.start()
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
            self.monitor.flush()
        self._write_summary("complete")
        return self.history

    def close(self) -> None:
        """Close the TensorBoard writer (fit flushes it; close when done with the trainer)."""
        self.monitor.close()

    def _interrupted(self, signal_name: str) -> None:
        raise TrainingInterrupted(
            f"Stopped by {signal_name} at {_position(self.epoch, self.batch)}. "
            f"A resumable checkpoint is at {self.run.run_dir.checkpoint}; "
            f"continue with: {self.task.resume_command} {self.run.run_dir.path}"
        )

    def _global_batch(self, batch_index: int, local: int) -> int:
        """Samples in global batch ``batch_index`` over all processes (this process has ``local`` of them)."""
        if self.world_size == 1:
            return local
        loader = self.run.train_loader
        return min(loader.batch_size, loader.num_samples - batch_index * loader.batch_size)

    def _wrap(self) -> None:
        """What the task calls in training: each model itself, or wrapped for DDP and/or torch.compile; no
        captured CUDA graph yet."""
        nets: dict[str, object] = dict(self.task.models)
        for part in self.parts:
            part.ddp = []
        if self.world_size > 1 or self.fast.compile:
            for name, model in self.task.models.items():
                wrapped: nn.Module = _Dispatch(model)
                if self.world_size > 1:
                    wrapped = wrap_data_parallel(wrapped, self.run.device)
                    for part in self.parts:
                        if name in part.part.models:
                            part.ddp.append(wrapped)
                if self.fast.compile:
                    wrapped = torch.compile(wrapped)
                nets[name] = _TrainingView(model, wrapped)
        self.steps.nets = nets
        self.train_model = nets[self.task.main]
        self._graphed = None

    def trainable_parameters_changed(self) -> None:
        """Call after changing which parameters require gradients (gradual unfreezing in fine-tuning).

        DDP fixes the parameters it synchronises when it wraps the model, and a captured CUDA graph the
        gradients it computes, so both are rebuilt; without this, newly unfrozen parameters would train apart
        in each process. The optimiser already holds every parameter (frozen ones have no gradient).
        """
        self._wrap()

    def _run_step(self, batch, global_n: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The step eagerly, or replayed from a CUDA graph captured on the first batch (same function)."""
        if not self.fast.cuda_graphs:
            return self.steps.step(batch, global_n)
        from cnnlab.train.graphs import GraphedStep

        names = list(self.task.sums)
        if self._graphed is None:
            self._ema_decay = torch.zeros((), device=self.run.device)

            def captured(inputs: torch.Tensor, targets) -> tuple[torch.Tensor, ...]:
                losses, sums = self.steps.step((inputs, targets), global_n, graphed=True)
                return (losses, *(sums[n] for n in names))

            modules = [*self.task.models.values()] + ([self.ema.module] if self.ema is not None else [])
            self._graphed = GraphedStep(captured, batch[0], batch[1], modules, self.optimizer)
        if self.ema is not None:
            self._ema_decay.fill_(self.ema.current_decay())  # a device write between replays, no sync
            self.ema.updates += 1
        outputs = self._graphed(*batch)
        self.scheduler.step()  # fills the device tensor η in place for the next replay
        losses, *sums = (o.clone() for o in outputs)
        return losses, dict(zip(names, sums, strict=True))

    def _zero_accumulators(self) -> dict:
        device = self.run.device
        sums = {name: torch.zeros((), dtype=dtype, device=device) for name, dtype in self.task.sums.items()}
        return {"sums": sums, "seen": 0, "seconds": 0.0}

    def _train_epoch(self, stop: _StopOnSignal) -> None:
        """The steps of one epoch from the current position, then its evaluation, checkpoint and reports."""
        device = self.run.device
        acc = self._accumulators or self._zero_accumulators()
        epoch = _EpochProgress(
            sums={name: value.to(device) for name, value in acc["sums"].items()},
            seen=acc["seen"],
            seconds_before=acc["seconds"],
            recent=torch.empty(self.config.log_every, len(self.parts), device=device),  # losses since the last sync
        )
        batches = len(self.run.train_loader)
        self.monitor.start_epoch(self.epoch, self.config.epochs, batches, self.batch)
        for model in self.task.models.values():
            model.train()
        for batch in self.run.train_loader.batches(self.epoch, self.batch):
            inputs, targets = batch
            if self.fast.channels_last and inputs.dim() == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            n = self.task.count((inputs, targets))
            step_losses, step_sums = self._run_step((inputs, targets), self._global_batch(self.batch, n))
            self.step += 1
            self.batch += 1
            with torch.no_grad():
                epoch.recent[epoch.n_recent] = step_losses
                epoch.n_recent += 1
                for name, value in step_sums.items():
                    epoch.sums[name] += value
            epoch.seen += n
            epoch.seen_here += n
            checkpoint_due = bool(self.config.checkpoint_every) and self.step % self.config.checkpoint_every == 0
            # One process stops as soon as asked; several agree at the next sync point (a collective).
            stop_here = stop.requested is not None and self.world_size == 1
            if epoch.n_recent == self.config.log_every or self.batch == batches or checkpoint_due or stop_here:
                self._sync_point(epoch, stop, checkpoint_due, batches)
        self._end_epoch(epoch)

    def _sync_point(self, epoch: _EpochProgress, stop: _StopOnSignal, checkpoint_due: bool, batches: int) -> None:
        """The only host-device transfer of the step loop (and, distributed, one all-reduce): NaN check, progress,
        TensorBoard, and the checkpoint or stop that is due."""
        task = self.task
        counts = {"seen": epoch.seen, "seen_here": epoch.seen_here, "stop": 1.0 if stop.requested else 0.0}
        totals = sync_totals(epoch.recent[: epoch.n_recent], epoch.sums, counts, self.run.device)
        bad = (~torch.isfinite(totals.recent)).nonzero()
        if len(bad):
            row, column = (int(i) for i in bad[0])
            during = "training" if len(self.parts) == 1 else f"training: the {self.parts[column].part.name}'s loss"
            self._non_finite(self.step - epoch.n_recent + row + 1, float(totals.recent[row, column]), during)
        global_seen = int(totals.counts["seen"])
        lr = float(self.optimizer.param_groups[0]["lr"])
        speed = totals.counts["seen_here"] / max(time.perf_counter() - epoch.started, 1e-9)
        names, means = [p.part.name for p in self.parts], totals.recent.mean(dim=0).tolist()
        recent = {"loss": means[0]} if len(names) == 1 else {f"{n}_loss": m for n, m in zip(names, means, strict=True)}
        shown = task.train_metrics(totals.sums, global_seen)
        if "train_error" in shown:
            recent["accuracy"] = 1 - shown["train_error"]
        self.monitor.progress(self.step, self.batch, task.progress_text(totals.sums, global_seen), recent, speed, lr)
        epoch.n_recent = 0
        stopping = totals.counts["stop"] > 0
        if checkpoint_due or stopping:
            self._accumulators = {
                "sums": {name: torch.tensor(totals.sums[name], dtype=dtype) for name, dtype in task.sums.items()},
                "seen": global_seen,  # totals over processes
                "seconds": epoch.seconds_before + time.perf_counter() - epoch.started,
            }
            if self.batch < batches or stopping:
                self.save()
            if stopping:
                self._interrupted(stop.requested or "a signal to another process")

    def _end_epoch(self, epoch: _EpochProgress) -> None:
        """Sum the epoch over processes (a sync), evaluate, write the checkpoint (and best.pt), report, call hooks."""
        task, device = self.task, self.run.device
        seconds = epoch.seconds_before + time.perf_counter() - epoch.started
        counts = {"seen": epoch.seen, "seen_here": epoch.seen_here}
        totals = sync_totals(torch.zeros(0, device=device), epoch.sums, counts, device)  # sync (end of epoch)
        seen_total = totals.counts["seen"]
        if self.world_size > 1:  # every process scores its shard with rank 0's weights and BN statistics
            for model in self._eval_nets().values():
                broadcast_buffers(model)
        evaluation = self._evaluate()
        activity = getattr(self.model, "constraint_activity", None) if self._weight_constraints else None
        moving = self.config.momentum_ramp_epochs > 0  # a momentum column only when μ moves
        momentum = {"momentum": float(self.optimizer.param_groups[0]["momentum"])} if moving else {}
        row = {
            "epoch": self.epoch + 1,
            **task.train_metrics(totals.sums, int(seen_total)),
            **evaluation,
            **((activity.read_and_reset() or {}) if activity is not None else {}),  # a sync (end of epoch)
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            **momentum,
            "images_per_s": totals.counts["seen_here"] / max(seconds - epoch.seconds_before, 1e-9),
            "seconds": seconds,
            "train_images": int(seen_total),
        }
        for key, value in evaluation.items():
            if not math.isfinite(value):
                self._non_finite(self.step, value, during=f"evaluation: {key}")
        key = task.selection
        best_before = min((r[key] for r in self.history), default=math.inf) if key else math.inf
        is_best = key is not None and row[key] < best_before
        self.epoch, self.batch, self._accumulators = self.epoch + 1, 0, None
        self.history.append(row)
        self.save(complete=self.epoch == self.config.epochs, best=is_best)
        if self.epoch == self.config.epochs and activity is not None:
            self._note_idle_constraint()
        with torch.no_grad(), self.fast.autocast():
            self.monitor.end_epoch(self.step, row, self.history, self._eval_nets())
        for hook in self.epoch_hooks:
            hook(self, row)
        for callback in self.callbacks:
            callback(self, row)

    def _note_idle_constraint(self) -> None:
        """A weight constraint that never acted changed nothing: say so once, at the end of the run."""
        acted = [row.get("constraint_acted") for row in self.history]
        if not acted or any(value is None or value > 0 for value in acted):
            return  # it acted (or a resumed run's earlier epochs did not count)
        peak = max(float(row["constraint_peak"]) for row in self.history)
        self.monitor.message(
            f"note: the model's weight constraint ({type(self.model).__name__}.apply_weight_constraints_) never "
            f"acted in {len(acted)} epochs: the largest weight norm reached {peak:.0%} of its bound, so this run "
            "trained exactly as with --no-weight-constraints. A bound pays off at the larger learning rates it "
            "makes safe (or with a tighter bound)."
        )

    def _evaluate(self) -> dict[str, float]:
        """The task's evaluation, with every model in eval mode and no autograd (then back to training mode)."""
        nets = self._eval_nets()
        modes = {name: model.training for name, model in nets.items()}
        for model in nets.values():
            model.eval()
        try:
            with torch.no_grad(), self.fast.autocast():
                return self.task.evaluate(nets, self.run, distributed=self.world_size > 1)
        finally:
            for name, model in nets.items():
                model.train(modes[name])

    def _write_summary(self, status: str) -> None:
        """summary.json: best and last epoch, wall time, throughput, peak memory (rank 0)."""
        state = {"epoch": self.epoch, "step": self.step, "world_size": self.world_size}
        self.monitor.write_summary(status, state, self.history, self.fast.describe(), self.static_record["versions"])

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


@dataclass
class _EpochProgress:
    """The running state of the epoch being trained: device sums of the task's metrics, counts, timing and the
    per-step losses since the last sync point."""

    sums: dict[str, torch.Tensor]
    seen: int  # samples of the epoch so far, over processes where resumed from a checkpoint
    seconds_before: float  # training seconds of the epoch before this process resumed it
    recent: torch.Tensor  # (log_every, parts) step losses since the last sync point
    n_recent: int = 0
    seen_here: int = 0  # samples this process trained since it started the epoch (for images/s)
    started: float = field(default_factory=time.perf_counter)


def _load_part(part: PartState, saved: dict, step: int) -> None:
    part.optimizer.load_state_dict(saved["optimizer"])
    scheduler = part.scheduler
    try:
        scheduler.load_state_dict(saved["scheduler"])
    except KeyError:  # written by an older cnnlab with another scheduler class: recompute η at this step
        scheduler.last_epoch = step
        lambdas = zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)
        rates = [base * factor(step) for base, factor in lambdas]
        for group, rate in zip(part.optimizer.param_groups, rates, strict=True):
            group["lr"] = rate
        scheduler._last_lr = rates
    if part.scaler.is_enabled() and "scaler" in saved:
        part.scaler.load_state_dict(saved["scaler"])


def _position(epoch: int, batch: int) -> str:
    """Where a state is, in words: "the end of epoch 3" or "epoch 4, batch 17" (epochs counted from 1)."""
    return f"the end of epoch {epoch}" if batch == 0 else f"epoch {epoch + 1}, batch {batch}"
