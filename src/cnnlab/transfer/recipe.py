"""The transfer recipes as library functions: ``cnnlab finetune`` and ``cnnlab features`` call these, and Python
users get the same runs and numbers.

>>> result = finetune(FinetuneConfig(source="runs/mnist-lenet", data="fashion-mnist", freeze="c3", epochs=5))
>>> result.history[-1]["test_error"]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.errors import ConfigError, UnknownNameError


@dataclass
class FinetuneConfig:
    """A fine-tuning run. ``None`` means the recipe's default for the source model and the new data.

    Attributes:
        source: a checkpoint file or run directory, or ``MODEL:torchvision`` for torchvision's ImageNet weights.
        data: the new dataset.
        freeze: freeze the stages up to and including this one; ``train_from``: train this stage and after.
        train_bn: let frozen stages' batch-norm statistics adapt.
        lr_head: η of the new classifier (default: the recipe's η); ``lr_body``: of the trainable stages (η/10).
        unfreeze_at: unfreeze every stage after this epoch (1 … epochs − 1).
        out: run directory (default: runs/<model>-<data>-finetune-<time>); ``overwrite`` replaces a run there.
    """

    source: str
    data: str
    freeze: str | None = None
    train_from: str | None = None
    train_bn: bool = False
    lr_head: float | None = None  # η per step of the new head
    lr_body: float | None = None  # η per step of the trainable stages (default η_head / 10)
    unfreeze_at: int | None = None  # epoch after which every stage trains
    epochs: int | None = None
    batch_size: int | None = None
    labels_per_class: int | None = None
    augment: str | None = None
    seed: int | None = None
    device: str | None = None
    data_root: str | None = None
    out: str | None = None
    overwrite: bool = False

    def check(self) -> None:
        """Refuse settings that cannot work, before anything is loaded or written."""
        for name in ("lr_head", "lr_body"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive number, got {value:g}.")
        if self.unfreeze_at is not None and self.unfreeze_at < 1:
            raise ConfigError(f"--unfreeze-at must be a positive whole number, got {self.unfreeze_at}.")
        if self.unfreeze_at is not None and not (self.freeze or self.train_from):
            raise ConfigError("--unfreeze-at unfreezes the stages --freeze or --train-from froze; give one of them.")
        if self.freeze and self.train_from:
            raise ConfigError("Give --freeze or --train-from, not both.")


@dataclass
class FinetuneResult:
    run: Any
    trainer: Any
    history: list[dict]
    stages: list[str]


def source_model(source: str) -> tuple[Any, dict]:
    """(model, description) of a fine-tuning source: a run's trained model, or torchvision's weights."""
    if source.endswith(":torchvision"):
        from cnnlab import models

        name = source.split(":", 1)[0]
        return models.create(name, weights="torchvision"), {"name": name, "options": {}, "weights": "torchvision"}
    from cnnlab.train.record import RunRecord

    record = RunRecord.load(source)
    if record.model is None:
        raise ConfigError(f"{source} is a {record.task!r} run; fine-tuning starts from a classifier.")
    spec = {"name": record.model.name, "options": dict(record.model.options), "weights": str(source)}
    return record.build_model(), spec


def load_run_weights(model: Any, source: str | Path) -> str:
    """Load a classifier run's trained weights into ``model``, a fresh model of the same architecture built for
    other data (another input size, channel count or number of classes): every tensor but the output layer's,
    which stays freshly initialised when its shape differs. The first convolution is adapted to ``model``'s input
    channels (:func:`~cnnlab.transfer.adapt_input_channels`). Returns a note saying what was loaded.

    Raises:
        CheckpointError: ``source`` is not a run or checkpoint.
        ConfigError: not a classifier run, another architecture, or a tensor outside the output layer whose shape
            differs (e.g. a fully connected layer behind a different input size).
    """
    import copy

    from cnnlab import models
    from cnnlab.train.record import RunRecord
    from cnnlab.transfer.finetune import adapt_input_channels

    record = RunRecord.load(source)
    if record.model is None:
        raise ConfigError(f"{source} is a {record.task!r} run; weights are loaded from a classifier run.")
    trained_name = models.get_model_info(record.model.name).name
    wanted = models.get_model_info(model.model_name).name
    if trained_name != wanted:
        raise ConfigError(
            f"{source} trained {trained_name}, and the model to load into is {wanted}: weights load into the same "
            f"architecture; choose {trained_name} (or a run that trained {wanted})."
        )
    trained = record.build_model()
    note = adapt_input_channels(trained, model.in_chans)
    ours, theirs = model.state_dict(), trained.state_dict()
    probe = copy.deepcopy(model)  # the output layer: the tensors whose shape follows the number of classes
    probe.reset_classifier(model.num_classes + 1)
    output_layer = {k for k, v in probe.state_dict().items() if v.shape != ours[k].shape}
    differ = [k for k in ours if k not in theirs or theirs[k].shape != ours[k].shape]
    if any(k not in output_layer for k in differ):
        shown = ", ".join(
            f"{k} {tuple(theirs[k].shape) if k in theirs else 'missing'} → {tuple(ours[k].shape)}"
            for k in differ
            if k not in output_layer
        )
        raise ConfigError(
            f"{source}'s {trained_name} does not fit the model here beyond its output layer ({shown}): a fully "
            "connected layer sized by the input follows the image size; train the source at the same size, or use "
            "a model whose head pools (its pre-logits width does not depend on the input)."
        )
    skipped = output_layer if differ else set()  # a layer is loaded whole or not at all
    model.load_state_dict({k: v for k, v in theirs.items() if k in ours and k not in skipped}, strict=False)
    loaded = len(ours) - len(skipped)
    kept = "; the output layer, of another shape here, stays freshly initialised" if skipped else ""
    return (f"{note} " if note else "") + (
        f"loaded {loaded} tensors of {source} ({trained_name} trained on {record.data}){kept}."
    )


def finetune(
    config: FinetuneConfig,
    *,
    reporter: Any = None,
    context: Any = None,
    say: Callable[[str], None] = lambda text: None,
    command: list[str] | None = None,
) -> FinetuneResult:
    """Fine-tune ``config.source`` on ``config.data``: a new head, chosen stages frozen, two learning rates,
    optional gradual unfreezing; the run directory records where it came from (``transfer``)."""
    import sys

    from cnnlab.inspect import plot_curves
    from cnnlab.train import TrainConfig, Trainer, build_run, resolve
    from cnnlab.train.distributed import broadcast_object, per_process_config
    from cnnlab.train.record import write_run_config
    from cnnlab.train.rundir import default_run_dir
    from cnnlab.transfer.finetune import adapt_input_channels, freeze, frozen_stages, head_and_body_parameters, unfreeze

    config.check()
    model, source = source_model(config.source)
    stages = frozen_stages(model, config.freeze, config.train_from)  # a bad stage fails before any directory exists
    main = context is None or context.is_main
    given = {k: getattr(config, k) for k in ("epochs", "batch_size", "augment", "seed", "device", "data_root")}
    out = config.out or (str(default_run_dir(source["name"], config.data + "-finetune")) if main else None)
    if context is not None:
        out = broadcast_object(out)  # rank 0's time stamp: one run directory
    train_config = resolve(
        TrainConfig(
            model=source["name"], data=config.data, model_options=dict(source["options"]), out=out,
            labels_per_class=config.labels_per_class, **{k: v for k, v in given.items() if v is not None},
        )
    )  # fmt: skip
    if config.unfreeze_at is not None and config.unfreeze_at >= train_config.epochs:
        raise ConfigError(
            f"--unfreeze-at {config.unfreeze_at} is not before the last of the {train_config.epochs} epochs, so "
            f"nothing would train unfrozen; give 1..{train_config.epochs - 1}, or more --epochs."
        )
    # new data, preprocessing and loaders; its fresh model is replaced by the source's
    run = build_run(per_process_config(train_config, context), overwrite=config.overwrite)
    note = adapt_input_channels(model, run.dataset.image_shape[0])
    if note:
        say(note)
    model.reset_classifier(run.dataset.num_classes)
    run.model = model.to(run.device)
    freeze(run.model, stages, train_bn=config.train_bn)
    lr_head = config.lr_head if config.lr_head is not None else train_config.lr
    lr_body = config.lr_body if config.lr_body is not None else lr_head / 10
    head, body = head_and_body_parameters(run.model)
    title = f"{source['name']} fine-tuned on {config.data}"

    def gradual_unfreeze(trainer: Trainer, row: dict) -> None:  # in every process
        if config.unfreeze_at is not None and trainer.epoch == config.unfreeze_at and stages:
            unfreeze(trainer.model, stages)
            trainer.trainable_parameters_changed()  # DDP re-registers what it synchronises
            say(f"epoch {trainer.epoch}: unfroze {', '.join(stages)}")

    def curves(trainer: Trainer, row: dict) -> None:
        if trainer.epoch == trainer.config.epochs:
            plot_curves(trainer.history, run.run_dir.curves, title)

    trainer = Trainer(
        run,
        reporter=reporter,
        callbacks=(curves,),
        epoch_hooks=(gradual_unfreeze,),
        param_groups=[{"params": head, "lr": lr_head}, {"params": body, "lr": lr_body}],
    )
    trainer.static_record["transfer"] = {
        "source": source,
        "frozen_stages": stages,
        "train_bn": config.train_bn,
        "lr_head": lr_head,
        "lr_body": lr_body,
        "unfreeze_at": config.unfreeze_at,
        "labels_per_class": config.labels_per_class,
    }
    if main:
        write_run_config(run, trainer.static_record, command if command is not None else sys.argv)
    trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    say(
        f"Fine-tuning {source['name']} from {source['weights']} on {config.data} "
        f"({run.train_loader.num_samples:,} training images); frozen: {', '.join(stages) or 'none'}; "
        f"{trainable:,} trainable parameters; η head {lr_head:g}, body {lr_body:g}"
    )
    try:
        history = trainer.fit()
    finally:
        trainer.close()
    return FinetuneResult(run, trainer, history, stages)


@dataclass
class FeaturesResult:
    path: Path
    images: int
    dim: int
    seconds: float


def features_of_run(
    source: str | Path,
    data: str,
    layer: str,
    out: str | Path,
    *,
    data_root: str | None = None,
    labels_per_class: int | None = None,
    batch_size: int = 1000,
    device: str = "auto",
    say: Callable[[str], None] = lambda text: None,
    progress: Callable[[str], None] = lambda text: None,
) -> FeaturesResult:
    """Off-the-shelf features: the pooled activations of ``layer`` of a run's model for every image of ``data``
    (train and test splits), saved to an ``.npz`` with where they came from. ``progress`` is called with a short
    line before each step ("test split: 10,000 images (4/5)"); the CLI shows them on a terminal."""
    from cnnlab.data import DeviceTensorLoader, Preprocessing, load_dataset
    from cnnlab.outputs import output_file
    from cnnlab.train import resolve_device
    from cnnlab.train.record import RunRecord
    from cnnlab.train.setup import subset_per_class
    from cnnlab.transfer.features import extract_features, feature_layers, save_features
    from cnnlab.transfer.finetune import adapt_input_channels

    for flag, value in (("--batch-size", batch_size), ("--labels-per-class", labels_per_class)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be a positive whole number, got {value}.")
    progress(f"loading {source} (1/5)")
    record = RunRecord.load(source)
    resolved = resolve_device(device)
    model = record.build_model(resolved)
    output_file(out, "--out", {".npz"}, "features file (NumPy .npz)")
    if layer not in feature_layers(model):
        raise UnknownNameError("layer", layer, feature_layers(model))
    progress(f"loading {data} (2/5)")
    dataset = load_dataset(data, data_root)
    if dataset.streaming:
        raise ConfigError("`cnnlab features` streams in-memory datasets; for photo folders use `cnnlab finetune`.")
    note = adapt_input_channels(model, dataset.image_shape[0])
    if note:
        say(note)
    pre, c = record.preprocessing, dataset.image_shape[0]
    if c != pre.in_chans:  # the source's statistics, per channel of the new data
        pre = Preprocessing(c, pre.resize, pre.pad, pre.mean[:1] * c, pre.std[:1] * c, pre.keep_aspect, pre.crop)
    start = time.perf_counter()
    train = dataset.train if labels_per_class is None else subset_per_class(dataset.train, labels_per_class, 0)
    splits = []
    for number, (name, split) in enumerate((("train", train), ("test", dataset.test)), 3):
        progress(f"{name} split: {len(split.labels):,} images ({number}/5)")
        loader = DeviceTensorLoader(pre.to_stored_size(split.images), split.labels, pre, batch_size, device=resolved)
        splits.append(extract_features(model, loader, layer))
    seconds = time.perf_counter() - start
    meta = {"source": str(source), "layer": layer, "data": data, "classes": dataset.classes}
    progress(f"writing {out} (5/5)")
    path = save_features(out, splits[0], splits[1], meta)
    return FeaturesResult(path, len(splits[0][1]) + len(splits[1][1]), int(splits[0][0].shape[1]), seconds)
