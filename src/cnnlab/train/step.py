"""One optimisation step of a task, the same function whether it runs eagerly or captured as a CUDA graph.

For each optimiser part of the task, in order (one part for classification; discriminator then generator for
a GAN)::

    zero grads ─▶ for each micro-batch: [autocast ─ task.loss] ─▶ scaled backward (DDP all-reduce on the last)
    ─▶ unscale + clip ─▶ optimiser (through the fp16 loss scaler) ─▶ weight constraints ─▶ schedule ─▶ EMA

Nothing here reads a value back to the host (no ``.item()``): losses and metric sums stay on the device until
the trainer's sync points. Under a CUDA graph (``graphed=True``) the gradients are rewritten by every replay
(no zeroing), the schedule is stepped by the trainer between replays and the EMA decay is a device tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnlab.train.task import Batch, Part, Sums, Task


@dataclass
class PartState:
    """One optimiser part at run time: its optimiser, schedule and fp16 loss scaler, and where DDP lives."""

    part: Part
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ddp: list[nn.Module]  # the DDP wrappers of this part's models (no_sync during accumulation)

    @property
    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]


@dataclass
class StepSettings:
    """What the step needs from the run's config and fast path."""

    accumulate_steps: int
    clip_grad_norm: float
    world_size: int
    autocast: Callable[[], AbstractContextManager]


class StepRunner:
    """Runs :meth:`step` for a task over its parts. Right after the main model's optimiser steps, ``constrain()``
    applies the paper's weight rule, and after its schedule, ``average(graphed)`` updates the EMA."""

    def __init__(
        self,
        task: Task,
        parts: list[PartState],
        settings: StepSettings,
        constrain: Callable[[], None],
        average: Callable[[bool], None],
    ):
        self.task, self.parts, self.settings = task, parts, settings
        self.constrain, self.average = constrain, average
        self.nets: Mapping[str, Any] = {}  # set by the trainer: what task.loss calls (models or their wrappers)

    def step(self, batch: Batch, global_n: int, graphed: bool = False) -> tuple[torch.Tensor, Sums]:
        """One step on this process's share of a global batch of ``global_n`` samples.

        Each micro-batch's mean loss is weighted by its share of the global batch (× world size, which DDP's
        gradient averaging divides out), so the summed gradient is the gradient of the global batch's mean
        loss whatever the split: exact gradient accumulation and data parallelism.

        Returns device tensors: (each part's mean loss, shape (parts,); the task's metric sums over this
        process's samples, from every part: their names must differ). No host sync.
        """
        settings, task = self.settings, self.task
        chunks = task.split(batch, settings.accumulate_steps)
        step_losses: list[torch.Tensor] = []
        sums: Sums = {}
        for state in self.parts:
            if not graphed:
                state.optimizer.zero_grad(set_to_none=True)
            step_loss = None
            for i, chunk in enumerate(chunks):
                share = task.count(chunk) / global_n
                last = i == len(chunks) - 1
                with _no_sync(state.ddp) if not last else nullcontext():
                    with settings.autocast():
                        loss, chunk_sums = task.loss(state.part.name, self.nets, chunk)
                    weight = share * settings.world_size
                    state.scaler.scale(loss if weight == 1 else loss * weight).backward()
                with torch.no_grad():
                    part_loss = loss.detach().float() * share
                    step_loss = part_loss if step_loss is None else step_loss + part_loss
                    for name, value in chunk_sums.items():
                        sums[name] = value if name not in sums else sums[name] + value
            step_losses.append(step_loss)
            self._update(state, graphed)
        return torch.stack(step_losses), sums

    def _update(self, state: PartState, graphed: bool) -> None:
        """Clip, optimiser step (through the loss scaler for fp16), constraints, schedule, EMA."""
        if self.settings.clip_grad_norm:
            state.scaler.unscale_(state.optimizer)  # no-op without fp16
            torch.nn.utils.clip_grad_norm_(state.parameters, self.settings.clip_grad_norm, foreach=True)  # no sync
        if state.scaler.is_enabled():
            state.scaler.step(state.optimizer)  # skips the step if a gradient overflowed (reads a flag: syncs)
            state.scaler.update()
        else:
            state.optimizer.step()
        main = self.task.main in state.part.models
        if main:
            self.constrain()
        if not graphed:  # a graphed step's schedule is stepped between replays: it fills η in place
            state.scheduler.step()
        if main:
            self.average(graphed)


class _no_sync:
    """DDP's ``no_sync`` on every wrapper of a part (gradients accumulate locally until the last micro-batch)."""

    def __init__(self, wrappers: list[nn.Module]):
        self.contexts = [w.no_sync() for w in wrappers]

    def __enter__(self) -> None:
        for context in self.contexts:
            context.__enter__()

    def __exit__(self, *exc: object) -> None:
        for context in reversed(self.contexts):
            context.__exit__(*exc)
