"""Building a run from a config: device, dataset, preprocessing plan, model, loaders, run directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab import models
from cnnlab.data import DeviceTensorLoader, ImageDataset, Preprocessing, channel_stats, load_dataset
from cnnlab.data.augment import get_augmentation
from cnnlab.errors import CheckpointError, ConfigError, DeviceError, InputSizeError
from cnnlab.models import ClassifierModel, ModelInfo
from cnnlab.train.config import TrainConfig
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

    A fixed-size model (LeNet-5: 32×32) gets exactly its size: smaller images are centred with a zero border
    when the dataset asks for padding (MNIST in the LeNet paper) and the margins are even, else resized. A
    model that takes any size keeps the dataset's size when it fits, else gets its default size.
    """
    c, h, w = dataset.image_shape
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
    mean, std = channel_stats(draft.fit(dataset.train.images))
    return Preprocessing(in_chans=c, resize=resize, pad=pad, mean=mean, std=std)


def distributed_rank_and_size() -> tuple[int, int]:
    """(rank, world size) of this process if torch.distributed is initialised (e.g. under torchrun), else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass
class TrainingRun:
    """Everything a :class:`~cnnlab.train.trainer.Trainer` needs, built from one resolved config."""

    config: TrainConfig
    device: torch.device
    model: ClassifierModel
    dataset: ImageDataset
    preprocessing: Preprocessing
    train_loader: DeviceTensorLoader
    test_loader: DeviceTensorLoader
    run_dir: RunDir


def build_run(config: TrainConfig, run_dir: str | Path | None = None) -> TrainingRun:
    """Load the data, build the model (seeded), plan preprocessing and create the loaders and run directory.

    ``config`` must be resolved (:func:`cnnlab.train.config.resolve`). Every check that can fail runs here,
    before anything is written or trained.
    """
    device = resolve_device(config.device)
    dataset = load_dataset(config.data, config.data_root)
    info = models.get_model_info(config.model)
    torch.manual_seed(config.seed)  # model initialisation and dropout
    model = models.create(
        config.model, num_classes=dataset.num_classes, in_chans=dataset.image_shape[0], **config.model_options
    )
    preprocessing = plan_preprocessing(dataset, info, model)
    models.check_input_shape(model, preprocessing.input_size)
    model.to(device)

    def fitted(split):  # uint8, fitted once, before it goes to the device
        return preprocessing.fit(split.images), split.labels

    rank, world_size = distributed_rank_and_size()
    train_loader = DeviceTensorLoader(
        *fitted(dataset.train),
        preprocessing,
        config.batch_size,
        shuffle=True,
        seed=config.seed,
        device=device,
        augment=get_augmentation(config.augment),
        rank=rank,
        world_size=world_size,
    )
    test_loader = DeviceTensorLoader(*fitted(dataset.test), preprocessing, max(config.batch_size, 256), device=device)
    path = run_dir or config.out or default_run_dir(config.model, config.data)
    return TrainingRun(config, device, model, dataset, preprocessing, train_loader, test_loader, RunDir(path))


def model_from_checkpoint(payload: dict, device: torch.device | str = "cpu") -> ClassifierModel:
    """Rebuild the model a checkpoint describes and load its weights (strictly)."""
    spec = payload["model"]
    model = models.create(
        spec["name"], num_classes=spec["num_classes"], in_chans=spec["in_chans"], **spec.get("options", {})
    )
    try:
        model.load_state_dict(payload["model_state"])
    except RuntimeError as error:
        raise CheckpointError(
            f"The checkpoint's weights do not fit model {spec['name']!r} as this cnnlab builds it: "
            f"{str(error).splitlines()[0]}. It may come from another cnnlab version."
        ) from None
    return model.to(device).eval()
