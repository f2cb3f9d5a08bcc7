"""Starting or continuing a task's run, the same way for every capability that trains one (``cnnlab gan train``,
``cnnlab caption train``, ``cnnlab detect train``): the given settings checked against the command's, ``--resume``
found and checked to be a run of that task, the run's own configuration kept, and the engine's state restored
(:func:`restore`, which ``cnnlab train`` uses too).

    resumed = find_task_resume(given, GAN_FLAGS, "cnnlab gan train", resume, overwrite, "gan", "GAN", say)
    ... build the run (from resumed.spec when resuming) and its Trainer ...
    if resumed is not None and restore(trainer, resumed.payload, say):
        return ...  # the run already has its epochs: nothing to train
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.errors import ConfigError
from cnnlab.train.checkpoint import find_resume_checkpoint
from cnnlab.train.config import TrainConfig, resume_config
from cnnlab.train.record import RunRecord, task_spec


@dataclass
class Resumed:
    """A run to continue: its checkpoint ``payload``, its directory, the task's own record (``spec``: what the
    task needs to rebuild its models) and the configuration it continues with."""

    payload: dict
    run_path: Path
    spec: dict
    config: TrainConfig


def find_task_resume(
    given: dict,
    flags: Iterable[str],
    command: str,
    resume: str | None,
    overwrite: bool,
    task: str,
    label: str,
    say: Callable[[str], None] = lambda text: None,
) -> Resumed | None:
    """Refuse settings ``command`` does not take and ``--overwrite`` with ``--resume``; then the run ``resume``
    names (None: a new run, also for ``auto`` with nothing in ``given["out"]`` yet), checked to be a ``task`` run
    (its checkpoint's ``payload[task]``; ``label`` names the kind in the error), with the configuration it
    continues with (only what ``--resume`` may change taken from ``given``).

    Raises:
        ConfigError: an unknown setting, or --overwrite with --resume.
        CheckpointError: nothing resumable there, or a run of another task.
    """
    unknown = sorted(set(given) - set(flags))
    if unknown:
        raise ConfigError(f"`{command}` has no setting {', '.join(unknown)}; its settings: {', '.join(flags)}.")
    if overwrite and resume:
        raise ConfigError("--overwrite starts a run afresh and --resume continues one; give one of them.")
    found = find_resume_checkpoint(resume, given.get("out"), warn=say) if resume else None
    if found is None:
        return None
    payload, run_path = found
    spec = task_spec(payload, run_path, task, label, command)
    config = resume_config(RunRecord.from_payload(payload, run_path).train_config(), given)
    return Resumed(payload, Path(run_path), spec, config)


def restore(trainer: Any, payload: dict, say: Callable[[str], None] = lambda text: None) -> bool:
    """Put a checkpoint ``payload``'s state into ``trainer`` (weights, optimisers, schedule, RNG, position,
    history) and say where it continues; True when the run already has its epochs (nothing left to train; the
    message says how to go on)."""
    trainer.load_state_dict(payload)
    if trainer.epoch >= trainer.config.epochs:
        # One line, not "Resuming ..." first: nothing is trained, the finished run is read back as it is.
        epochs = f"{trainer.epoch} epoch{'' if trainer.epoch == 1 else 's'}"
        say(
            f"{trainer.run.run_dir.path} already completed its {epochs}: reusing it as it is "
            f"(pass --epochs N, N > {trainer.epoch}, to train it further)."
        )
        return True
    say(f"Resuming {trainer.run.run_dir.path} at epoch {trainer.epoch + 1}, batch {trainer.batch}.")
    return False
