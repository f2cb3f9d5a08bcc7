"""Whole workflows that join the capabilities, for the command line and for Python alike.

``cnnlab train`` is :func:`train_classifier`, so a run started from Python gets what the command gives: the
resume policy, ``config.json``, ``curves.png``, the robustness curve after adversarial training, and the same
numbers. (The engine itself, :class:`~cnnlab.train.Trainer`, knows none of these: it imports no attack or
report; this module sits above it.)

>>> result = train_classifier({"model": "lenet5", "data": "digits", "epochs": 2})
>>> result.history[-1]["test_error"], result.run.run_dir.path
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.errors import NonFiniteLossError, TrainingInterrupted

ROBUSTNESS_IMAGES = 10_000  # test images attacked for the curve written after adversarial training


@dataclass
class TrainResult:
    """What :func:`train_classifier` did.

    Attributes:
        run: the built run (config, model, data, loaders, run directory).
        trainer: the engine, after training (``trainer.eval_model`` holds the evaluated weights).
        history: one metric row per epoch.
        seconds: wall time of training and evaluation (0 if nothing was left to train).
        resumed_at: ``(epoch, batch)`` where a resumed run continued, or None for a new run.
        already_complete: a resumed run had already trained its epochs (nothing was done).
    """

    run: Any
    trainer: Any
    history: list[dict]
    seconds: float
    resumed_at: tuple[int, int] | None
    already_complete: bool = False


def train_classifier(
    given: dict | None = None,
    *,
    model_options: dict | None = None,
    resume: str | None = None,
    overwrite: bool = False,
    reporter: Any = None,
    context: Any = None,
    say: Callable[[str], None] = lambda text: None,
    command: list[str] | None = None,
) -> TrainResult:
    """Train (or continue) a classifier as ``cnnlab train`` does.

    Args:
        given: :class:`~cnnlab.train.TrainConfig` fields given explicitly (unset ones come from the recipes).
        model_options: the model's own options (``--model-option``).
        resume: a checkpoint, a run directory, or ``auto`` (see :func:`~cnnlab.train.find_resume_checkpoint`);
            the run's own settings stay, and only what :func:`~cnnlab.train.config.resume_config` allows changes.
        overwrite: ``given["out"]`` may hold an earlier run, which is replaced (otherwise that is an error).
        reporter: progress display (default: none).
        context: the torchrun context (:func:`~cnnlab.train.distributed.distributed_session`), or None.
        say: where notes go (resuming, warnings, the robustness summary).
        command: recorded in ``config.json`` (default: ``sys.argv``).

    Raises:
        ConfigError, DataError, CheckpointError: before anything is written, for bad settings or data.
        RunExistsError, RunDirLockedError: the run directory holds another run, or another process writes it.
        TrainingInterrupted, NonFiniteLossError: training stopped (a resumable checkpoint is kept).
    """
    from cnnlab.errors import ConfigError
    from cnnlab.inspect import plot_curves
    from cnnlab.train import Trainer, build_run, find_resume_checkpoint
    from cnnlab.train.config import TrainConfig, resolve, resume_config
    from cnnlab.train.distributed import per_process_config
    from cnnlab.train.record import RunRecord, write_run_config
    from cnnlab.train.session import restore

    given, options = dict(given or {}), dict(model_options or {})
    if overwrite and resume:
        raise ConfigError("--overwrite starts a run afresh and --resume continues one; give one of them.")
    main = context is None or context.is_main
    found = find_resume_checkpoint(resume, given.get("out"), warn=say) if resume else None
    if found is not None:
        payload, run_path = found
        if payload.get("task") == "gan":
            raise ConfigError(f"{run_path} is a GAN run; continue it with: cnnlab gan train --resume {run_path}")
        record = RunRecord.from_payload(payload, run_path)
        config = resume_config(record.train_config(), given, options)
        done = record.progress.epoch if record.progress is not None else 0
        if config.epochs < done:
            raise ConfigError(f"--epochs {config.epochs} is fewer than the {done} epochs this run has completed.")
        run = build_run(per_process_config(config, context), run_dir=run_path)
    else:
        config = per_process_config(resolve(TrainConfig(**given, model_options=options)), context)
        # --resume auto with nothing to resume starts the run there, whatever an earlier attempt left
        run = build_run(config, overwrite=overwrite or resume == "auto")
        payload = None
    if run.run_dir.removed_orphans:
        say(f"note: removed {len(run.run_dir.removed_orphans)} unfinished *.tmp file(s) of writes a kill cut short")
    title = f"{config.model} on {config.data}"
    last_plot = [0.0]

    def curves(trainer: Trainer, row: dict) -> None:  # matplotlib is slow: at most every 20 s, and at the end
        if trainer.epoch == trainer.config.epochs or time.monotonic() - last_plot[0] > 20:
            plot_curves(trainer.history, run.run_dir.curves, title)
            last_plot[0] = time.monotonic()

    callbacks = (curves, LearningWatch(say))
    trainer = Trainer(run, objective=_objective(run), reporter=reporter, callbacks=callbacks)
    resumed_at = None
    if payload is not None:
        complete = restore(trainer, payload, say)
        resumed_at = (trainer.epoch, trainer.batch)
        if complete:
            _complete_run_records(run, trainer, title, say)
            return TrainResult(run, trainer, trainer.history, 0.0, resumed_at, already_complete=True)
    if main:
        write_run_config(run, trainer.static_record, command if command is not None else sys.argv)
        point_latest(run.run_dir.path)
    processes = f" × {context.world_size} processes" if context is not None else ""
    held = f" / {len(run.dataset.val):,} validation" if run.dataset.val is not None else ""
    say(
        f"Training {config.model} on {config.data} ({len(run.dataset.train):,} train{held} / "
        f"{len(run.dataset.test):,} test images, input {'×'.join(map(str, run.preprocessing.input_size))}) on "
        f"{run.device}{processes} "
        f"({trainer.fast.describe()}) for {config.epochs} epochs"
        f"{', its distortions drawn afresh every epoch' if config.redraw else ''}; run directory {run.run_dir.path}"
    )
    started = time.perf_counter()
    try:
        history = trainer.fit()
    except (TrainingInterrupted, NonFiniteLossError):
        if trainer.history and main:
            plot_curves(trainer.history, run.run_dir.curves, title)
        raise
    finally:
        trainer.close()
    seconds = time.perf_counter() - started
    if main and config.adversarial:
        _robustness_after_training(run, trainer, say)
    return TrainResult(run, trainer, history, seconds, resumed_at)


def point_latest(run_dir: Path) -> None:
    """Make ``<parent>/latest`` a link to the newest run started in a ``runs`` folder, so commands can name it
    (``cnnlab eval runs/latest``); replaced atomically; skipped where the file system has no symbolic links."""
    import os

    run_dir = Path(run_dir)
    if run_dir.parent.name != "runs" or run_dir.name == "latest":
        return
    link, tmp = run_dir.parent / "latest", run_dir.parent / f".latest.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run_dir.name, target_is_directory=True)  # relative: the runs folder can move
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)


class LearningWatch:
    """Epoch callback: warns (once) when training diverges without NaN: the training error is still at chance
    level after ``patience_steps`` steps, or the loss grows tenfold over its lowest value."""

    patience_steps = 100  # LeNet-5 on the digits is well below chance after 100 steps at any sane rate

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say, self.warned, self.lowest = say, False, math.inf

    def __call__(self, trainer: Any, row: dict) -> None:
        if self.warned:
            return
        classes = trainer.model.num_classes
        chance = 1 - 1 / classes
        loss, error, epoch = row["train_loss"], row["train_error"], row["epoch"]
        at_chance = error >= chance - 0.02 and trainer.step >= self.patience_steps
        exploded = loss > 10 * self.lowest and loss - self.lowest > 1
        self.lowest = min(self.lowest, loss)
        if not (at_chance or exploded):
            return
        self.warned = True
        lr = trainer.config.lr
        what = (
            f"the training error is {error:.1%}, at chance for {classes} classes ({chance:.0%}): the network is not "
            "learning"
            if at_chance
            else f"the training loss rose to {loss:.4g} from {self.lowest:.4g}: training is diverging"
        )
        self.say(
            f"warning: after epoch {epoch}, {what}. The learning rate --lr {lr:g} is probably too high; "
            f"try --lr {lr / 10:g}."
        )


def _complete_run_records(run: Any, trainer: Any, title: str, say: Callable[[str], None]) -> None:
    """Write what a kill after the last checkpoint left unwritten: metrics.csv, curves.png, summary.json."""
    from cnnlab.inspect import plot_curves

    if not trainer.is_main or not trainer.history:
        return
    run.run_dir.write_metrics(trainer.history)  # the full history, from the checkpoint
    if not run.run_dir.curves.exists():
        plot_curves(trainer.history, run.run_dir.curves, title)
    if not run.run_dir.summary.exists():
        trainer.fit()  # no epochs are left: it only writes summary.json
        say(f"wrote the missing {run.run_dir.summary}")


# ---- evaluation and prediction ---------------------------------------------------------------------------------
@dataclass
class EvalResult:
    """``cnnlab eval``'s figures: errors are fractions; ``k`` is the k of the top-k error (min(5, classes))."""

    model: str
    data: str
    samples: int
    top1_error: float
    topk_error: float
    k: int
    loss: float
    tta: str | None


def require_positive(flag: str, value: float | None, whole: bool = True) -> None:
    """A setting that must be a positive number (a whole one if ``whole``): a ConfigError naming it otherwise."""
    from cnnlab.errors import ConfigError

    if value is None:
        return
    if not (math.isfinite(value) and value > 0):
        kind = "whole number" if whole else "number"
        raise ConfigError(f"{flag} must be a positive {kind}, got {value:g}.")


def open_run(checkpoint: str | Path, device: str = "auto") -> tuple[Any, Any, Any]:
    """(record, model in eval mode on the device, device) of a checkpoint file or run directory."""
    from cnnlab.train import resolve_device
    from cnnlab.train.record import RunRecord

    record = RunRecord.load(checkpoint)
    resolved = resolve_device(device)
    return record, record.build_model(resolved), resolved


def run_test_loader(record: Any, data: str | None, data_root: str | None, batch_size: int, device: Any, say=None):
    """(dataset name, loader of its test split) for a run, warning through ``say`` when it is not the run's own."""
    name = data or record.data
    _, loader = record.test_loader(name, data_root, batch_size, device)
    if name != record.data and say is not None:
        say(
            f"warning: the model was trained on {record.data!r}, not {name!r}: the shapes fit, but its classes may "
            "not mean the same there, so read the figures as a transfer test."
        )
    return name, loader


def evaluate_run(
    checkpoint: str | Path,
    data: str | None = None,
    data_root: str | None = None,
    batch_size: int = 256,
    device: str = "auto",
    tta: str | None = None,
    say: Callable[[str], None] = lambda text: None,
) -> EvalResult:
    """Top-1 and top-k error and cross-entropy of a run on a dataset's test split (default: the run's own), with
    optional test-time augmentation restricted to the views its training covered (notes through ``say``)."""
    from cnnlab.train import ClassificationObjective, evaluate

    require_positive("--batch-size", batch_size)
    record, model, resolved = open_run(checkpoint, device)
    name, loader = run_test_loader(record, data, data_root, batch_size, resolved, say)
    if tta:
        from cnnlab.data.tta import evaluate_tta, plan_tta

        plan = plan_tta(tta, record.config.get("augment"))  # only views training covered
        if plan.note:
            say(f"note: {plan.note}")
        result = evaluate_tta(model, loader, record.preprocessing, plan)
    else:
        result = evaluate(model, loader, ClassificationObjective("cross_entropy"))
    k = min(5, len(record.classes))
    return EvalResult(
        record.model_name, name, result["samples"], result["top1_error"], result["top5_error"], k, result["loss"], tta
    )


class Predictor:
    """A trained run ready to classify images: ``cnnlab.load(run).predict(["seven.png"])``.

    Images are converted and resized with the preprocessing stored in the checkpoint, so it never guesses.
    """

    def __init__(self, checkpoint: str | Path, device: str = "auto"):
        self.record, self.model, self.device = open_run(checkpoint, device)
        self.classes = list(self.record.classes)
        self.preprocessing = self.record.preprocessing

    def probabilities(self, images: Sequence[str | Path] | Any, invert: bool = False) -> Any:
        """(N, classes) softmax probabilities of image files, or of uint8 (N, C, H, W) tensors at the input size."""
        import torch

        if isinstance(images, torch.Tensor):
            batch = images
        else:  # every file checked before any work
            batch = torch.stack([self.preprocessing.load_image(path) for path in images])
        batch = batch.to(self.device)
        if invert:
            batch = 255 - batch
        with torch.no_grad():
            return self.model(self.preprocessing.normalize(batch)).softmax(dim=1).cpu()

    def predict(
        self, images: Sequence[str | Path] | Any, top_k: int = 5, invert: bool = False
    ) -> list[list[tuple[str, float]]]:
        """For each image, its ``top_k`` classes with their probabilities, most likely first."""
        from cnnlab.errors import ConfigError

        if top_k < 1:
            raise ConfigError(f"--top-k must be at least 1, got {top_k}.")
        k = min(top_k, len(self.classes))
        ranked = []
        for probs in self.probabilities(images, invert):
            top = probs.topk(k)
            ranked.append(
                [(self.classes[i], p) for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]
            )
        return ranked


def load(checkpoint: str | Path, device: str = "auto") -> Predictor:
    """A :class:`Predictor` for a run directory or checkpoint file."""
    return Predictor(checkpoint, device)


def _objective(run: Any) -> Any:
    """The adversarial objective for ``--adversarial`` runs; None (the engine's default) otherwise."""
    config = run.config
    if not config.adversarial:
        return None
    from cnnlab.adversarial import AdversarialObjective

    return AdversarialObjective(
        run.preprocessing.mean,
        run.preprocessing.std,
        config.adv_eps,
        config.adv_alpha,
        config.adversarial,
        config.adv_steps,
        loss=config.loss,
        label_smoothing=config.label_smoothing,
    )


def _robustness_after_training(run: Any, trainer: Any, say: Callable[[str], None]) -> None:
    """FGSM accuracy against ε on the test split, saved as <run>/robustness.{json,png} for the report."""
    from cnnlab.adversarial import robustness_curve, save_robustness

    config = run.config
    eps_values = sorted({round(0.05 * i, 2) for i in range(7)} | {config.adv_eps})
    started = time.perf_counter()
    rows = robustness_curve(
        trainer.eval_model, run.preprocessing, run.test_loader, eps_values, "fgsm", limit=ROBUSTNESS_IMAGES
    )
    label = f"{config.model}, --adversarial {config.adversarial}"
    table, figure = save_robustness(rows, "fgsm", run.run_dir.path, label)
    at = next(r for r in rows if r.eps == config.adv_eps)
    say(
        f"robustness (FGSM on {rows[0].samples:,} test images, {time.perf_counter() - started:.1f} s): accuracy "
        f"{rows[0].accuracy:.2%} clean, {at.accuracy:.2%} at ε = {config.adv_eps:g}; {table.name}, {figure.name}"
    )


# ---- the Python one-liners -------------------------------------------------------------------------------------
@dataclass
class Trained:
    """What :func:`train` returns: the run directory and the per-epoch metrics, and a predictor on demand."""

    run_dir: Path
    history: list[dict]
    result: TrainResult

    @property
    def test_error(self) -> float:
        return self.history[-1]["test_error"]

    def predictor(self, device: str = "auto") -> Predictor:
        return Predictor(self.run_dir, device)


def _data_spec(data: Any, out: Path, holdout: float, seed: int, classes: Sequence[str] | None) -> str:
    """A dataset name for ``data``: a registered name or ``folder:PATH`` as given, a folder path as ``folder:``,
    or in-memory data (tensors, (train, test) pairs, a torch Dataset) saved into the run directory."""
    from cnnlab.data.datasets import ImageSet, split_off
    from cnnlab.data.tensors import from_torch_dataset, save_tensor_dataset

    if isinstance(data, str | Path):
        text = str(data)
        if ":" not in text and Path(text).expanduser().is_dir():
            return f"folder:{Path(text).expanduser().resolve()}"
        return text
    if hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, tuple | list):
        data = from_torch_dataset(data)  # a torch Dataset of (image, label) pairs
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(d, tuple | list) for d in data):
        train, test = data  # ((train images, labels), (test images, labels))
    elif isinstance(data, tuple | list) and len(data) == 2:
        import torch

        from cnnlab.data.tensors import as_uint8_images

        images, labels = as_uint8_images(data[0]), torch.as_tensor(data[1]).long()
        kept, held = split_off(ImageSet(images, labels), holdout, seed)  # a test split, stratified and seeded
        train, test = (kept.images, kept.labels), (held.images, held.labels)
    else:
        from cnnlab.errors import ConfigError

        raise ConfigError(
            "data must be a dataset name (`cnnlab data list`), a folder of class sub-folders, (images, labels), "
            f"((train images, labels), (test images, labels)), or a torch Dataset; got a {type(data).__name__}."
        )
    return save_tensor_dataset(out / "data.pt", train, test, classes)


def train(
    model: str = "lenet5",
    data: Any = "digits",
    *,
    classes: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    progress: bool = True,
    resume: str | None = None,
    overwrite: bool = False,
    **config: Any,
) -> Trained:
    """Train a registered model on a dataset, a folder or your own tensors, as ``cnnlab train`` would: the run
    directory (checkpoints, ``config.json``, ``metrics.csv``, ``curves.png``, ``summary.json``), progress on
    stderr, and a run the command line can evaluate, predict with and look inside.

    Args:
        model: a registered name or alias (``cnnlab models``).
        data: a dataset name, ``folder:PATH`` or a folder path, ``(images, labels)`` (uint8 0…255 or floats in
            [0, 1], (N, C, H, W) or (N, H, W)), ``((train images, labels), (test images, labels))``, or a torch
            ``Dataset`` of (image, label) pairs. In-memory data is saved as the run's ``data.pt``.
        classes: class names for in-memory data (default: "0", "1", ...).
        test_fraction: for ``(images, labels)``: the fraction held out as the test split (stratified, seeded).
        progress: show the progress bar and notes.
        **config: :class:`~cnnlab.train.TrainConfig` fields (``epochs=5``, ``lr=0.01``, ``out="runs/x"``...);
            an unknown one is an error listing the valid ones.
    """
    from cnnlab.train.config import TrainConfig
    from cnnlab.train.progress import QuietReporter, RichReporter, log_console
    from cnnlab.train.rundir import check_new_run_dir, default_run_dir

    TrainConfig.from_dict({"model": model, **config})  # unknown fields: one clear error, before any work
    out = Path(config.pop("out", None) or default_run_dir(model, "data" if not isinstance(data, str) else data))
    if not (overwrite or resume):
        check_new_run_dir(out)  # before in-memory data is saved there: an earlier run's data.pt stays intact
    spec = _data_spec(data, out, test_fraction, int(config.get("seed", 0)), classes)
    console = log_console()
    say = console.print if progress else (lambda text: None)
    result = train_classifier(
        {"model": model, "data": spec, "out": str(out), **config},
        resume=resume,
        overwrite=overwrite,
        reporter=RichReporter(console) if progress else QuietReporter(),
        say=say,
        command=["cnnlab.train", model, spec],
    )
    return Trained(result.run.run_dir.path, result.history, result)


def summary(model: Any, input_shape: tuple[int, int, int] | None = None, show: bool = True) -> Any:
    """The per-layer summary (shapes, parameters, MACs/FLOPs, receptive fields) of a registered model name, a
    model, or a run directory / checkpoint; printed as a table when ``show``, and returned."""
    from cnnlab.inspect import render_summary, summarize
    from cnnlab.train.record import saved_or_registered_model

    if isinstance(model, str | Path):
        options = {} if Path(model).exists() else {"device": "meta"}  # a name: shapes only, free for large models
        built, default = saved_or_registered_model(model, **options)
        result = summarize(built, input_shape or default)
    else:
        result = summarize(model, input_shape)
    if show:
        render_summary(result)
    return result
