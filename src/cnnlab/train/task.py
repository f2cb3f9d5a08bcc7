"""Tasks: what the engine trains. A task says what a batch is, which models and optimisers it has, its losses,
its running metrics and its evaluation; the :class:`~cnnlab.train.trainer.Trainer` gives every task the rest
(checkpoints, exact resume, AMP, channels-last, torch.compile, CUDA graphs, DDP, progress, TensorBoard,
``metrics.csv``, ``summary.json``).

A batch is whatever the loader yields: an ``(inputs, targets)`` pair, where ``targets`` is any tensor a task
needs (int labels, clean images, token ids...). A task that needs no targets ignores them (a GAN).

Adding a task (the whole contract; see ``tests/test_tasks.py`` for a denoising autoencoder and a GAN)::

    class Denoise(Task):
        def __init__(self, model):
            self.models = {"model": model}
        def loss(self, part, nets, batch):
            clean, _ = batch
            restored = nets["model"](clean + 0.3 * torch.randn_like(clean))
            loss = F.mse_loss(restored, clean)
            return loss, {"loss": loss.detach().double() * len(clean)}

Several optimisers: :meth:`Task.parts` lists :class:`Part` s, stepped in order on every batch, each over its own
models' parameters, each with its own optimiser, schedule and loss scaler (a GAN's discriminator, then its
generator); the engine calls :meth:`Task.loss` once per part and micro-batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from cnnlab.layers import SpatialTransformer

if TYPE_CHECKING:
    from cnnlab.train.setup import TrainingRun

Batch = tuple[torch.Tensor, Any]  # (inputs, targets) as the loader yields it
Sums = dict[str, torch.Tensor]  # per-batch sums of a task's running metrics (device scalars, no host sync)


@dataclass(frozen=True)
class Part:
    """One optimiser's share of a step: the models whose trainable parameters it updates.

    Attributes:
        name: ``"model"`` for a task with one optimiser; e.g. ``"discriminator"`` and ``"generator"`` for a GAN.
        models: keys of :attr:`Task.models` it optimises.
        options: overrides of the config's optimiser settings for this part (``lr``, ``momentum``,
            ``weight_decay``, ``optimizer``); empty: the run's config.
    """

    name: str
    models: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)


class Task:
    """Base class of the tasks the trainer drives. Subclasses set :attr:`models` and define :meth:`loss`.

    Attributes:
        models: the trained modules by name; ``main`` names the one that is evaluated, saved as ``model_state``,
            kept as an EMA (``--ema-decay``) and constrained after each step (the paper's weight rules).
        sums: the running metrics :meth:`loss` returns, with the dtype of their running sums.
        selection: the epoch metric that chooses ``best.pt`` (lower is better), or None for no best.pt.
    """

    name: str = "task"
    models: dict[str, nn.Module]
    main: str = "model"
    sums: ClassVar[Mapping[str, torch.dtype]] = {"loss": torch.float64}
    selection: str | None = None
    resume_command: str = "cnnlab train --resume"  # what an interrupted run's message tells to run (+ the run dir)

    # ---- what the task is ------------------------------------------------------------------------------
    def parts(self) -> list[Part]:
        """The optimisers, in the order they step on every batch (default: one over every model)."""
        return [Part("model", tuple(self.models))]

    def loss(self, part: str, nets: Mapping[str, Any], batch: Batch) -> tuple[torch.Tensor, Sums]:
        """The loss ``part``'s optimiser minimises on ``batch``, and this micro-batch's running-metric sums.

        ``nets`` maps each model's name to what to call in training: the model itself, or its DDP/compiled
        wrapper (which keeps the model's attributes). The loss must be the *mean* over the batch: gradient
        accumulation and data parallelism weight it by the batch's share of the global batch, exact only for
        means. The sums are detached device tensors (no ``.item()``: the engine reads them at its sync points).
        """
        raise NotImplementedError

    def count(self, batch: Batch) -> int:
        """Samples in ``batch`` (what images/s and the running means count)."""
        return int(batch[0].shape[0])

    def split(self, batch: Batch, pieces: int) -> list[Batch]:
        """``batch`` in ``pieces`` micro-batches along the first axis (gradient accumulation); none empty."""
        inputs, targets = batch
        if pieces == 1:
            return [batch]
        chunks = zip(inputs.tensor_split(pieces), targets.tensor_split(pieces), strict=True)
        return [(x, y) for x, y in chunks if len(x)]

    # ---- what is reported ------------------------------------------------------------------------------
    def train_metrics(self, sums: Mapping[str, float], seen: int) -> dict[str, float]:
        """The epoch's training columns from the summed metrics (default: each sum's mean, ``train_<name>``)."""
        return {f"train_{name}": value / max(seen, 1) for name, value in sums.items()}

    def progress_text(self, sums: Mapping[str, float], seen: int) -> str:
        """What the progress bar shows after the bar itself (default: the running means)."""
        means = self.train_metrics(sums, seen)
        return " ".join(f"{k.removeprefix('train_')} {v:.4f}" for k, v in means.items())

    def evaluate(self, nets: Mapping[str, nn.Module], run: TrainingRun, distributed: bool) -> dict[str, float]:
        """The epoch's evaluation columns (``test_<name>``), from the models in eval mode (default: none).

        Called in every process under torch.distributed, each with its shard of the test loader."""
        return {}

    def epoch_text(self, row: Mapping[str, float]) -> str:
        """The line printed after each epoch, before the learning rate and timing (default: test columns)."""
        shown = {k: v for k, v in row.items() if k.startswith("test_")}
        return "  ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in shown.items())

    def log_images(self, tensorboard: Any, step: int, nets: Mapping[str, nn.Module], run: TrainingRun) -> None:
        """Images for TensorBoard after each epoch (default: none)."""

    # ---- what is saved ---------------------------------------------------------------------------------
    def record(self, run: TrainingRun) -> dict:
        """What a checkpoint says about the task besides weights and training state (run-record fields)."""
        return {"preprocessing": run.preprocessing.to_dict(), "data": run.config.data}

    def state_dict(self) -> dict:
        """The task's own state beyond its models (e.g. a GAN's fixed noise); tensors, numbers, strings only."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class ClassificationTask(Task):
    """Images and int labels; an objective (cross-entropy or MSE with label smoothing and auxiliary heads, or
    the adversarial objective) gives the loss and the logits; top-1 accuracy while training; each epoch the loss,
    top-1 and top-k error on the validation split held out of the training data (when there is one) and on the
    test split. ``best.pt`` is the epoch with the lowest validation error: the test split is only reported."""

    name = "classification"
    sums: ClassVar[Mapping[str, torch.dtype]] = {"loss": torch.float64, "correct": torch.int64}

    def __init__(self, model: nn.Module, objective: Any, topk: int = 5, validation: bool = True):
        self.models = {"model": model}
        self.objective = objective
        self.topk = topk
        self.selection = "val_error" if validation else None
        # A spatial transformer's θ for a few fixed images after every epoch (how it learns where to look):
        # the images (model inputs) once, then one (images, params) row per epoch. Kept in the task state.
        self.theta_images: torch.Tensor | None = None
        self.theta_history: list[torch.Tensor] = []

    def loss(self, part: str, nets: Mapping[str, Any], batch: Batch) -> tuple[torch.Tensor, Sums]:
        images, labels = batch
        loss, logits = self.objective(nets["model"], images, labels)
        with torch.no_grad():
            hits = (logits.argmax(dim=1) == labels).sum()
            return loss, {"loss": loss.detach().float().double() * labels.shape[0], "correct": hits}

    def count(self, batch: Batch) -> int:
        return int(batch[1].shape[0])

    def train_metrics(self, sums: Mapping[str, float], seen: int) -> dict[str, float]:
        return {"train_loss": sums["loss"] / max(seen, 1), "train_error": 1 - sums["correct"] / max(seen, 1)}

    def progress_text(self, sums: Mapping[str, float], seen: int) -> str:
        return f"loss {sums['loss'] / max(seen, 1):.4f} acc {sums['correct'] / max(seen, 1):6.2%}"

    def evaluate(self, nets: Mapping[str, nn.Module], run: TrainingRun, distributed: bool) -> dict[str, float]:
        from cnnlab.train.evaluate import evaluate

        row = {}
        for split, loader in (("val", getattr(run, "val_loader", None)), ("test", run.test_loader)):
            if loader is not None:
                result = evaluate(nets["model"], loader, self.objective, self.topk, distributed=distributed)
                row |= {f"{split}_loss": result["loss"], f"{split}_error": result["top1_error"]}
                row[f"{split}_top5_error"] = result["top5_error"]
        self._track_transformer(nets["model"], run)
        return row

    THETA_IMAGES = 8  # images whose θ is tracked over training

    def _track_transformer(self, model: nn.Module, run: TrainingRun) -> None:
        """Append θ of the tracked images (the first of the validation split, else of the test split) for models
        with a spatial transformer in front (``model.transformer``); nothing for the others. ``model`` is the one
        evaluated (the EMA's weights when there is one: what the checkpoint keeps and the views show)."""
        for wrapper in ("module", "_orig_mod"):  # DDP or an EMA wrapper, torch.compile
            model = getattr(model, wrapper, model)
        transformer = getattr(model, "transformer", None)
        if not isinstance(transformer, SpatialTransformer):
            return
        if self.theta_images is None:
            loader = getattr(run, "val_loader", None) or run.test_loader
            self.theta_images = next(iter(loader.batches()))[0][: self.THETA_IMAGES].detach().float().cpu()
        was_training = transformer.training
        transformer.eval()
        with torch.no_grad():
            device = next(transformer.parameters()).device
            theta = transformer.transform_params(self.theta_images.to(device))  # (n, parameters)
        transformer.train(was_training)
        self.theta_history.append(theta.float().cpu())

    def epoch_text(self, row: Mapping[str, float]) -> str:
        k = min(self.topk, self.models["model"].num_classes)
        validation = f"val error {row['val_error']:.2%}  " if "val_error" in row else ""
        return (
            f"{validation}test loss {row['test_loss']:.4f}  test error {row['test_error']:.2%}  "
            f"top-{k} error {row['test_top5_error']:.2%}"
        )

    def log_images(self, tensorboard: Any, step: int, nets: Mapping[str, nn.Module], run: TrainingRun) -> None:
        if getattr(self, "_samples", None) is None:  # the same 16 test images every epoch (workers start once)
            images, labels = next(iter(run.test_loader.batches()))
            self._samples = images[:16].clone(), labels[:16].clone()
        images, labels = self._samples
        model = nets["model"]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            logits = model(images)
        model.train(was_training)
        pre, classes = run.preprocessing, list(run.dataset.classes)
        tensorboard.predictions(step, images, labels, logits, classes, pre.mean, pre.std)

    def state_dict(self) -> dict:
        if self.theta_images is None:
            return {}
        return {"theta_images": self.theta_images, "theta_history": torch.stack(self.theta_history)}

    def load_state_dict(self, state: dict) -> None:
        if "theta_images" in state:
            self.theta_images = state["theta_images"]
            self.theta_history = list(state["theta_history"].unbind(0))

    def record(self, run: TrainingRun) -> dict:
        model = self.models["model"]
        return {
            "model": {
                "name": run.config.model,
                "num_classes": model.num_classes,
                "in_chans": model.in_chans,
                "options": dict(run.config.model_options),
            },
            "preprocessing": run.preprocessing.to_dict(),
            "classes": list(run.dataset.classes),
            "data": run.config.data,
        }
