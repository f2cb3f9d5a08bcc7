"""The run record, typed: what a cnnlab checkpoint says, and everything built from it.

This module is the one reader of a checkpoint's insides (``checkpoint.py`` writes, loads and validates the file
itself; ``rundir.py`` owns the folder). Commands, views, attacks, transfer and export ask a :class:`RunRecord`
for the model, its preprocessing, its classes, its dataset and a test loader, so the rules live once: which
data root a run's own dataset is read from, what makes a dataset fit a model, and the errors that say so.

>>> record = RunRecord.load("runs/lenet5-digits")      # a run directory or a checkpoint file
>>> model = record.build_model("cpu")                  # the trained weights, in eval mode
>>> dataset, loader = record.test_loader(batch_size=256, device="cpu")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cnnlab.errors import CheckpointError, DataError

if TYPE_CHECKING:
    from cnnlab.data import ImageDataset, Preprocessing
    from cnnlab.models import ClassifierModel
    from cnnlab.train.config import TrainConfig


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild the model from the registry: ``create(name, num_classes=..., in_chans=..., **options)``."""

    name: str
    num_classes: int
    in_chans: int
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    """Where training stood when the checkpoint was written (epochs counted from 0, as completed)."""

    epoch: int
    batch: int
    step: int
    complete: bool


@dataclass
class RunRecord:
    """A loaded checkpoint.

    Attributes:
        path: the checkpoint file.
        task: ``classification`` or another task's name.
        model: the registry model it rebuilds (None for tasks whose models are not in the registry).
        classes: class names, index order.
        data: the dataset it was trained on (a registered name or ``folder:PATH``).
        config: the resolved training config, as saved (a dict: a newer cnnlab may have more fields).
        history: one row per completed epoch.
        progress: the training position, or None for a weights-only file.
        transfer: for a fine-tuned run, where it came from and what was frozen.
    """

    path: Path
    task: str
    model: ModelSpec | None
    classes: list[str]
    data: str | None
    config: dict
    versions: dict
    git: str | None
    history: list[dict]
    progress: Progress | None
    transfer: dict | None
    _payload: dict = field(repr=False)

    # ---- reading ---------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> RunRecord:
        """Read a checkpoint file, or a run directory's ``checkpoint.pt`` (safely: ``weights_only=True``).

        Raises:
            CheckpointError: missing, corrupt, unsafe or not written by cnnlab (the message says which).
        """
        from cnnlab.train.checkpoint import load_checkpoint, resolve_checkpoint_path

        resolved = resolve_checkpoint_path(path)
        return cls.from_payload(load_checkpoint(resolved), resolved)

    @classmethod
    def from_payload(cls, payload: dict, path: str | Path) -> RunRecord:
        """A record from a payload :func:`~cnnlab.train.checkpoint.load_checkpoint` validated."""
        spec = payload.get("model")
        state = payload.get("train_state")
        model = None
        if spec is not None:
            options = dict(spec.get("options", {}))
            model = ModelSpec(spec["name"], int(spec["num_classes"]), int(spec["in_chans"]), options)
        progress = None
        if state is not None:
            progress = Progress(int(state["epoch"]), int(state["batch"]), int(state["step"]), bool(state["complete"]))
        return cls(
            path=Path(path),
            task=str(payload.get("task", "classification")),
            model=model,
            classes=[str(c) for c in payload.get("classes", [])],
            data=payload.get("data"),
            config=dict(payload.get("config") or {}),
            versions=dict(payload.get("versions") or {}),
            git=payload.get("git"),
            history=list(payload.get("history") or []),
            progress=progress,
            transfer=payload.get("transfer"),
            _payload=payload,
        )

    @property
    def run_dir(self) -> Path:
        """The run directory the checkpoint belongs to (``checkpoints/step<N>.pt`` lies one level down)."""
        from cnnlab.train.checkpoint import CHECKPOINTS_DIR

        parent = self.path.parent
        return parent.parent if parent.name == CHECKPOINTS_DIR else parent

    @property
    def model_name(self) -> str:
        return self.model.name if self.model is not None else self.task

    @property
    def preprocessing(self) -> Preprocessing:
        from cnnlab.data import Preprocessing

        if "preprocessing" not in self._payload:
            raise CheckpointError(f"{self.path} has no preprocessing record (a {self.task} checkpoint).")
        return Preprocessing.from_dict(self._payload["preprocessing"])

    @property
    def data_root(self) -> str | None:
        """Where the run read its data from (None: the default data root)."""
        return self.config.get("data_root")

    def train_config(self) -> TrainConfig:
        """The saved config as a :class:`TrainConfig` (an unknown field, from a newer cnnlab, is an error)."""
        from cnnlab.train.config import TrainConfig

        return TrainConfig.from_dict(self.config)

    @property
    def resumable(self) -> bool:
        return self.progress is not None

    def weights(self) -> dict[str, torch.Tensor]:
        """The evaluated weights (the EMA's when training kept one)."""
        return self._payload["model_state"]

    def task_state(self) -> dict:
        """The task's own saved state (e.g. a spatial transformer's θ over training); empty when none."""
        return dict((self._payload.get("train_state") or {}).get("task_state") or {})

    def training_payload(self) -> dict:
        """The whole checkpoint, for :meth:`Trainer.load_state_dict` (the engine's own reader of its state)."""
        return self._payload

    def as_dict(self) -> dict:
        """The descriptive records (no weights, no training state), e.g. for a report's provenance table."""
        keep = ("task", "model", "preprocessing", "classes", "data", "config", "versions", "git", "transfer")
        return {k: self._payload[k] for k in keep if k in self._payload}

    # ---- building --------------------------------------------------------------------------------------------
    def build_model(self, device: torch.device | str = "cpu") -> ClassifierModel:
        """The registry model the record describes, with its trained weights, in eval mode on ``device``."""
        from cnnlab import models

        if self.model is None:
            raise CheckpointError(
                f"{self.path} is a {self.task!r} checkpoint: its models are not in cnnlab's registry, so it cannot "
                "be rebuilt by name. Load its weights into the task's own models."
            )
        spec = self.model
        model = models.create(spec.name, num_classes=spec.num_classes, in_chans=spec.in_chans, **spec.options)
        try:
            model.load_state_dict(self.weights())
        except RuntimeError as error:
            raise CheckpointError(
                f"The checkpoint's weights do not fit model {spec.name!r} as this cnnlab builds it: "
                f"{str(error).splitlines()[0]}. It may come from another cnnlab version."
            ) from None
        return model.to(device).eval()

    def dataset(self, data: str | None = None, data_root: str | Path | None = None) -> ImageDataset:
        """The named dataset (default: the run's own), checked to have images of the model's channels.

        The run's own data is read from the data root it was trained from (unless ``data_root`` says otherwise),
        and a ``folder:PATH`` is split with the run's ``val_split`` and ``seed``, so its test split is the one
        training held out (another split would test on training images).

        Raises:
            DataError: a dataset of another number of channels (or one that is not available here).
        """
        from cnnlab.data import load_dataset

        name = data or self.data
        if name is None:
            raise DataError(f"{self.path} names no dataset; give one with --data.")
        if name == self.data:
            root = data_root if data_root is not None else self.data_root
            split = {"val_split": self.config.get("val_split", 0.2), "seed": self.config.get("seed", 0)}
            dataset = load_dataset(name, root, **split)
        else:
            dataset = load_dataset(name, data_root)
        channels = self.preprocessing.in_chans
        if dataset.image_shape[0] != channels:
            raise DataError(
                f"Dataset {name!r} has {dataset.image_shape[0]}-channel images but the model takes {channels}; "
                "use a dataset of the kind it was trained on."
            )
        return dataset

    def check_classes(self, dataset: ImageDataset) -> None:
        """Raise :class:`DataError` unless ``dataset``'s labels can be compared with the model's predictions."""
        if dataset.num_classes != len(self.classes):
            raise DataError(
                f"Dataset {dataset.name!r} has {dataset.num_classes} classes but the model predicts "
                f"{len(self.classes)}; its labels cannot be compared with the predictions (fine-tune it for the "
                "new classes first)."
            )

    def test_loader(
        self,
        data: str | None = None,
        data_root: str | Path | None = None,
        batch_size: int = 256,
        device: torch.device | str = "cpu",
        per_class: int | None = None,
    ):
        """(dataset, loader over its test split) fitted with the run's preprocessing, labels checked.

        ``per_class``: only that many test images of each class (the subset ``eval_per_class`` trains with)."""
        from dataclasses import replace

        from cnnlab.data import DeviceTensorLoader
        from cnnlab.data.streaming import StreamingLoader
        from cnnlab.train.setup import subset_per_class

        dataset = self.dataset(data, data_root)
        self.check_classes(dataset)
        if per_class is not None:
            dataset = replace(dataset, test=subset_per_class(dataset.test, per_class, 0))
        preprocessing = self.preprocessing
        device = torch.device(device)
        if dataset.streaming:
            loader = StreamingLoader(dataset.test.paths, dataset.test.labels, preprocessing, batch_size, device=device)
        else:
            images = preprocessing.to_stored_size(dataset.test.images)
            loader = DeviceTensorLoader(images, dataset.test.labels, preprocessing, batch_size, device=device)
        return dataset, loader


def task_spec(payload: dict, path: Path | str, key: str, what: str, command: str) -> dict:
    """The task-specific record ``payload[key]`` of a checkpoint (a detector's, a GAN's, a captioner's), or a
    CheckpointError saying what kind of run ``path`` is and which command makes the right one."""
    if key not in payload:
        kind = payload.get("task", "classification")
        raise CheckpointError(f"{path} is a {kind} run, not a {what} run; `{command}` makes one.")
    return dict(payload[key])


def saved_or_registered_model(spec: str | Path, **create_options: object) -> tuple[ClassifierModel, tuple]:
    """(model, its input shape (C, H, W)): a checkpoint's (or run directory's) model with its stored preprocessing,
    or a registered model name built with ``create_options`` (e.g. ``device="meta"`` for shapes only)."""
    from cnnlab import models

    path = Path(spec)
    text = str(spec)
    if not path.exists() and (path.suffix in (".pt", ".pth") or "/" in text or "\\" in text):
        raise CheckpointError(
            f"Checkpoint {text!r} does not exist. Give a checkpoint file, a run directory, or a model name "
            "(`cnnlab models` lists them)."
        )
    if path.exists():
        record = RunRecord.load(path)
        return record.build_model(), record.preprocessing.input_size
    info = models.get_model_info(text)
    return models.create(text, **create_options), info.input_size


def write_run_config(run, static_record: dict, command: list[str]) -> None:
    """``config.json``: the resolved config, the model and its paper, preprocessing, data, device, versions, git
    revision and the command, for people and tools that read a run without loading its checkpoint."""
    from cnnlab import models

    model = static_record.get("model")
    if model is not None and model["name"] in models.list_models(include_aliases=True):
        info = models.get_model_info(model["name"])
        model = {**model, "paper": info.paper, "year": info.year}
    record = {
        "config": run.config.to_dict(),
        "task": static_record.get("task", "classification"),
        "model": model,
        "preprocessing": run.preprocessing.to_dict(),
        "data": {
            "name": run.config.data,
            "source": run.dataset.source,
            "train_samples": len(run.dataset.train),
            "val_samples": len(run.dataset.val) if run.dataset.val is not None else 0,  # held out of train (seeded)
            "test_samples": len(run.dataset.test),
            "classes": run.dataset.classes,
        },
        "device": str(run.device),
        "versions": static_record["versions"],
        "git": static_record["git"],
        "command": list(command),
    }
    standard = {"config", "task", "model", "preprocessing", "data", "classes", "versions", "git"}
    for key, value in static_record.items():  # a task's own description: transfer, a GAN's or a detector's spec
        if key not in standard:
            record[key] = value
    run.run_dir.write_json("config.json", record)


@dataclass
class TrainingState:
    """What a resumable checkpoint holds beyond the run's description: the engine writes one with
    :meth:`to_payload` and reads one with :meth:`from_payload` (which also upgrades format 1, written before tasks).

    Attributes:
        model_state: the evaluated weights of the task's main model (the EMA's when training kept one).
        raw_model_state: the weights training continues from, when an EMA is kept (else None).
        model_states: the task's other models (a GAN's discriminator), by name.
        parts: per optimiser part: ``optimizer``, ``scheduler`` and (fp16) ``scaler`` state dicts.
        rng_per_rank: each process's RNG states (dropout masks and noise differ per process).
        accumulators: the epoch's running sums at a mid-epoch checkpoint (``sums``, ``seen``, ``seconds``).
        task_state: the task's own state (:meth:`Task.state_dict`).
    """

    epoch: int
    batch: int
    step: int
    complete: bool
    model_state: dict
    raw_model_state: dict | None
    model_states: dict
    ema_updates: int | None
    parts: dict
    rng_per_rank: list
    accumulators: dict | None
    world_size: int
    task_state: dict
    history: list

    def to_payload(self, static_record: dict) -> dict:
        train_state = {
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "complete": self.complete,
            "parts": self.parts,
            "rng": self.rng_per_rank[0],
            "rng_per_rank": self.rng_per_rank,
            "accumulators": self.accumulators,
            "world_size": self.world_size,
            "task_state": self.task_state,
        }
        if self.raw_model_state is not None:
            train_state["ema_updates"] = self.ema_updates
            train_state["raw_model_state"] = self.raw_model_state
        return {
            **static_record,
            "model_state": self.model_state,
            **({"model_states": self.model_states} if self.model_states else {}),
            "history": list(self.history),
            "train_state": train_state,
        }

    @classmethod
    def from_payload(cls, payload: dict, part_names: list[str]) -> TrainingState:
        """The state of a checkpoint, for a task whose optimiser parts are ``part_names``.

        Raises:
            CheckpointError: a weights-only checkpoint, or one written by a task with other optimisers.
        """
        state = payload.get("train_state")
        if state is None:
            raise CheckpointError("This checkpoint holds weights only (no training state) and cannot be resumed.")
        # Format 1 (before tasks): one optimiser, its state at the top of the training state.
        parts = state.get("parts") or {part_names[0]: state}
        if set(parts) != set(part_names):
            raise CheckpointError(
                f"This checkpoint's optimisers {sorted(parts)} are not this task's {sorted(part_names)}; it was "
                "written by another task."
            )
        return cls(
            epoch=int(state["epoch"]),
            batch=int(state["batch"]),
            step=int(state["step"]),
            complete=bool(state.get("complete", False)),
            model_state=payload["model_state"],
            raw_model_state=state.get("raw_model_state"),
            model_states=dict(payload.get("model_states") or {}),
            ema_updates=int(state["ema_updates"]) if "ema_updates" in state else None,
            parts={name: parts[name] for name in part_names},
            rng_per_rank=list(state.get("rng_per_rank") or [state["rng"]]),
            accumulators=_upgrade_accumulators(state.get("accumulators")),
            world_size=int(state.get("world_size", 1)),
            task_state=dict(state.get("task_state") or {}),
            history=list(payload.get("history") or []),
        )


def _upgrade_accumulators(saved: dict | None) -> dict | None:
    """Running sums as checkpointed; format 1 (before tasks) kept ``loss_sum`` and ``correct`` by name."""
    if saved is None or "sums" in saved:
        return saved
    return {
        "sums": {"loss": saved["loss_sum"], "correct": saved["correct"]},
        "seen": saved["seen"],
        "seconds": saved["seconds"],
    }
