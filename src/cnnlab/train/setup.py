"""Building a run from a config: device, dataset, preprocessing plan, model, loaders, run directory."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from cnnlab import models
from cnnlab.data import DeviceTensorLoader, ImageDataset, Preprocessing, channel_stats, get_dataset_info, load_dataset
from cnnlab.data.augment import (
    AugmentContext,
    PCALighting,
    build_augmentation,
    pca_lighting_from,
    validate_augmentation,
)
from cnnlab.data.datasets import split_off
from cnnlab.data.streaming import StreamingLoader
from cnnlab.errors import ConfigError, DeviceError, InputSizeError
from cnnlab.models import ClassifierModel, ModelInfo
from cnnlab.train.config import TrainConfig
from cnnlab.train.distributed import rank_and_world_size
from cnnlab.train.rundir import RunDir, default_run_dir


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {name!r} is not a device name; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                "--device cuda was asked for but PyTorch sees no CUDA GPU here. Use --device cpu or auto."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible.")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("--device mps was asked for but MPS is not available. Use --device cpu or auto.")
    return device


def plan_preprocessing(dataset: ImageDataset, info: ModelInfo, model: ClassifierModel) -> Preprocessing:
    """Decide how the dataset's images are brought to the model's input, and measure mean/std after that.

    In-memory images: a fixed-size model (LeNet-5: 32×32) gets exactly its size: smaller images are centred
    with a zero border when the dataset asks for padding (MNIST in the LeNet paper) and the margins are even,
    else resized. A model that takes any size keeps the dataset's size when it fits, else gets its default.
    Photos (streamed): the shorter side is resized to 256/224 of the model's input side and centre-cropped
    square (stored), then cropped to the input: at random in training, in the centre at test (AlexNet's recipe).
    """
    c, h, w = dataset.image_shape
    if dataset.streaming:
        target = tuple(info.input_size[1:])
        side = round(max(target) * 256 / 224)
        draft = Preprocessing(c, (side, side), 0, (0.0,) * c, (1.0,) * c, keep_aspect=True, crop=target)
        mean, std = channel_stats(_sample_photos(dataset, draft))
        return Preprocessing(c, (side, side), 0, mean, std, keep_aspect=True, crop=target)
    if info.fixed_input_size:
        target = info.input_size[1:]
    else:
        try:
            models.check_input_shape(model, (c, h, w))
            target = (h, w)
        except InputSizeError:
            target = info.input_size[1:]
    pad = 0
    resize = tuple(target)
    margin_h, margin_w = target[0] - h, target[1] - w
    if dataset.fit_mode == "pad" and margin_h == margin_w and margin_h > 0 and margin_h % 2 == 0:
        resize, pad = (h, w), margin_h // 2
    draft = Preprocessing(in_chans=c, resize=resize, pad=pad, mean=(0.0,) * c, std=(1.0,) * c)
    mean, std = channel_stats(draft.to_stored_size(dataset.train.images))
    return Preprocessing(in_chans=c, resize=resize, pad=pad, mean=mean, std=std)


def _sample_photos(dataset: ImageDataset, draft: Preprocessing, count: int = 256) -> torch.Tensor:
    """A seeded sample of decoded training photos at the stored size (for mean/std and PCA statistics)."""
    files = dataset.train
    pick = torch.randperm(len(files), generator=torch.Generator().manual_seed(0))[:count].tolist()
    loader = StreamingLoader([files.paths[i] for i in pick], files.labels[pick], draft, 32, num_workers=0)
    return torch.cat([loader.files[i][0].unsqueeze(0) for i in range(len(pick)) if loader.files[i][1] >= 0])


def subset_per_class(split, per_class: int, seed: int):
    """The first ``per_class`` images of each class in a seeded shuffle of ``split`` (kept in dataset order)."""
    from cnnlab.data import FileImageSet

    if per_class < 1:
        raise ConfigError(f"--labels-per-class must be at least 1, got {per_class}.")
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed)).tolist()
    taken: dict[int, int] = {}
    keep = []
    for i in order:
        label = int(split.labels[i])
        if taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            keep.append(i)
    keep.sort()
    index = torch.tensor(keep)
    if isinstance(split, FileImageSet):
        return FileImageSet([split.paths[i] for i in keep], split.labels[index])
    return split.select(index)


@dataclass
class TrainingRun:
    """Everything a :class:`~cnnlab.train.trainer.Trainer` needs, built from one resolved config."""

    config: TrainConfig
    device: torch.device
    model: ClassifierModel
    dataset: ImageDataset
    preprocessing: Preprocessing
    train_loader: DeviceTensorLoader | StreamingLoader
    test_loader: DeviceTensorLoader | StreamingLoader
    run_dir: RunDir
    val_loader: DeviceTensorLoader | StreamingLoader | None = None  # the held-out validation split (model selection)


def build_run(config: TrainConfig, run_dir: str | Path | None = None, overwrite: bool = False) -> TrainingRun:
    """Open the run directory, load the data, build the model (seeded), plan preprocessing, create the loaders.

    ``config`` must be resolved (:func:`cnnlab.train.config.resolve`); an ``augment`` of None takes the
    dataset's preset (what its papers used), and the returned run's config records the preset used. Every
    check that can fail runs here, before anything is written or trained.

    The run directory is opened first (see :class:`~cnnlab.train.rundir.RunDir`): ``run_dir`` is an existing run
    being resumed; without it a new run starts in ``config.out`` (or a fresh ``runs/...``), which must not hold a
    run unless ``overwrite``. If a later check fails, a directory created here is removed again.

    Raises:
        RunExistsError, RunDirLockedError, OutputError: from opening the run directory.
    """
    rank, world_size = rank_and_world_size()
    path = run_dir or config.out or default_run_dir(config.model, config.data)
    opened = RunDir(path, new=run_dir is None and rank == 0, overwrite=overwrite, lock=rank == 0)
    try:
        return _build_run(config, opened, rank, world_size)
    except BaseException:
        opened.abandon()
        raise


def _build_run(config: TrainConfig, opened: RunDir, rank: int, world_size: int) -> TrainingRun:
    device = resolve_device(config.device)
    dataset = load_dataset(config.data, config.data_root, val_split=config.val_split, seed=config.seed)
    if config.holdout:  # the validation split, held out of the training data before anything is fitted on it
        kept, held = split_off(dataset.train, config.holdout, config.seed)
        dataset = replace(dataset, train=kept, val=held)
    if config.labels_per_class is not None:
        dataset = replace(dataset, train=subset_per_class(dataset.train, config.labels_per_class, config.seed))
    if config.eval_per_class is not None:  # seed 0: every run of a comparison scores the same images
        test = subset_per_class(dataset.test, config.eval_per_class, 0)
        val = None if dataset.val is None else subset_per_class(dataset.val, config.eval_per_class, 0)
        dataset = replace(dataset, test=test, val=val)
    if config.augment in (None, "auto"):
        config = replace(config, augment=get_dataset_info(config.data).augment)
    validate_augmentation(config.augment)
    info = models.get_model_info(config.model)
    _, h, w = dataset.image_shape
    if "image_size" in info.options and "image_size" not in config.model_options and h is not None and h == w:
        # Models whose fully connected layers depend on the input (the distorted-MNIST nets) are built for the data's
        # size; recording it in the config rebuilds the same model at evaluation and resume.
        config = replace(config, model_options={**config.model_options, "image_size": h})
    torch.manual_seed(config.seed)  # model initialisation and dropout
    model = models.create(
        config.model, num_classes=dataset.num_classes, in_chans=dataset.image_shape[0], **config.model_options
    )
    preprocessing = plan_preprocessing(dataset, info, model)
    models.check_input_shape(model, preprocessing.input_size)
    model.to(device)
    shard = {"rank": rank, "world_size": world_size}  # training and evaluation are both sharded over processes
    # Evaluation is sharded like training (each process scores its slice; the trainer adds the sums up).
    eval_batch = -(-max(config.batch_size, 256) // world_size) * world_size

    if dataset.streaming:

        def pca_source() -> PCALighting:
            return pca_lighting_from(_sample_photos(dataset, preprocessing, 512))

        common = {**shard, "device": device, "strict": config.strict, "num_workers": config.num_workers}
        augment = build_augmentation(config.augment, _context(preprocessing, pca_source))
        train_loader = StreamingLoader(
            dataset.train.paths,
            dataset.train.labels,
            preprocessing,
            config.batch_size,
            shuffle=True,
            seed=config.seed,
            augment=augment,
            **common,
        )
        test_loader = StreamingLoader(dataset.test.paths, dataset.test.labels, preprocessing, eval_batch, **common)
        val_loader = None
        if dataset.val is not None:
            val = dataset.val
            val_loader = StreamingLoader(val.paths, val.labels, preprocessing, eval_batch, **common)
    else:
        train_images = preprocessing.to_stored_size(dataset.train.images)  # uint8, resized once, on the host

        def pca_source() -> PCALighting:
            return pca_lighting_from(train_images)

        augment = build_augmentation(config.augment, _context(preprocessing, pca_source))
        train_loader = DeviceTensorLoader(
            train_images,
            dataset.train.labels,
            preprocessing,
            config.batch_size,
            shuffle=True,
            seed=config.seed,
            device=device,
            augment=augment,
            redraw=_redraw(dataset.train, preprocessing, config.seed) if config.redraw else None,
            **shard,
        )
        evaluation = {"device": device, **shard}
        test = dataset.test
        test_loader = DeviceTensorLoader(
            preprocessing.to_stored_size(test.images), test.labels, preprocessing, eval_batch, **evaluation
        )
        val_loader = None
        if dataset.val is not None:
            val = dataset.val
            val_loader = DeviceTensorLoader(
                preprocessing.to_stored_size(val.images), val.labels, preprocessing, eval_batch, **evaluation
            )
    return TrainingRun(config, device, model, dataset, preprocessing, train_loader, test_loader, opened, val_loader)


def _redraw(split, preprocessing: Preprocessing, seed: int):
    """``redraw(epoch)`` for the training loader: the split's digits distorted afresh, at the stored size."""

    def redraw(epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        drawn = split.redrawn(seed, epoch)
        return preprocessing.to_stored_size(drawn.images), drawn.labels

    return redraw


def _context(preprocessing: Preprocessing, pca) -> AugmentContext:
    return AugmentContext(preprocessing.stored_size, preprocessing.input_size[1:], preprocessing.in_chans, pca)
