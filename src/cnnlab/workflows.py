"""Whole workflows that join the capabilities, for the command line and for Python alike.

``cnnlab train`` is :func:`train_classifier`, so a run started from Python gets what the command gives: the
resume policy, ``config.json``, ``curves.png``, the robustness curve after adversarial training, and the same
numbers. (The engine itself, :class:`~cnnlab.train.Trainer`, knows none of these: it imports no attack or
report; this module sits above it.)

>>> result = train_classifier({"model": "lenet5", "data": "digits", "epochs": 2})
>>> result.history[-1]["test_error"], result.run.run_dir.path
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
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
        reporter: progress display (default: none).
        context: the torchrun context (:func:`~cnnlab.train.distributed.distributed_session`), or None.
        say: where notes go (resuming, warnings, the robustness summary).
        command: recorded in ``config.json`` (default: ``sys.argv``).

    Raises:
        ConfigError, DataError, CheckpointError: before anything is written, for bad settings or data.
        TrainingInterrupted, NonFiniteLossError: training stopped (a resumable checkpoint is kept).
    """
    from cnnlab.inspect import plot_curves
    from cnnlab.train import Trainer, build_run, find_resume_checkpoint
    from cnnlab.train.config import TrainConfig, resolve, resume_config
    from cnnlab.train.distributed import per_process_config
    from cnnlab.train.record import RunRecord, write_run_config

    given, options = dict(given or {}), dict(model_options or {})
    main = context is None or context.is_main
    found = find_resume_checkpoint(resume, given.get("out"), warn=say) if resume else None
    if found is not None:
        payload, run_path = found
        record = RunRecord.from_payload(payload, run_path)
        config = resume_config(record.train_config(), given, options)
        done = record.progress.epoch if record.progress is not None else 0
        if config.epochs < done:
            from cnnlab.errors import ConfigError

            raise ConfigError(f"--epochs {config.epochs} is fewer than the {done} epochs this run has completed.")
        run = build_run(per_process_config(config, context), run_dir=run_path)
    else:
        config = per_process_config(resolve(TrainConfig(**given, model_options=options)), context)
        run = build_run(config)
        payload = None
    title = f"{config.model} on {config.data}"
    last_plot = [0.0]

    def curves(trainer: Trainer, row: dict) -> None:  # matplotlib is slow: at most every 20 s, and at the end
        if trainer.epoch == trainer.config.epochs or time.monotonic() - last_plot[0] > 20:
            plot_curves(trainer.history, run.run_dir.curves, title)
            last_plot[0] = time.monotonic()

    trainer = Trainer(run, objective=_objective(run), reporter=reporter, callbacks=(curves,))
    resumed_at = None
    if payload is not None:
        trainer.load_state_dict(payload)
        resumed_at = (trainer.epoch, trainer.batch)
        if trainer.epoch >= config.epochs:
            return TrainResult(run, trainer, trainer.history, 0.0, resumed_at, already_complete=True)
    if main:
        write_run_config(run, trainer.static_record, command if command is not None else sys.argv)
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
