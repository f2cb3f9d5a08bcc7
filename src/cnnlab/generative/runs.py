"""GAN workflows for the command line and for Python alike: train (``cnnlab gan train``), sample
(``cnnlab gan sample``) and walk the latent space (``cnnlab gan interpolate``).

>>> result = train_gan({"data": "mnist", "epochs": 5, "data_root": "../shared/datasets"})
>>> sample_run(result.run.run_dir.path, n=64).path
PosixPath('runs/dcgan-generator-28-mnist-.../samples-64-seed0.png')

A GAN run is a run directory like a classifier's (checkpoints, exact resume, metrics.csv, summary.json,
config.json), with ``samples/epoch<N>.png``: the same 64 noise vectors drawn by the generator after every epoch.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab import models
from cnnlab.data import DeviceTensorLoader, ImageDataset, Preprocessing, load_dataset
from cnnlab.data.streaming import StreamingLoader
from cnnlab.errors import ConfigError, NonFiniteLossError
from cnnlab.generative.architectures import ARCHS, GENERATORS, Z_DIM, build_gan, create_generator, generator_name
from cnnlab.generative.task import GANTask, coverage_classifier
from cnnlab.train.record import task_spec

# Radford et al. 2015, section 4: "mini-batch stochastic gradient descent with a mini-batch size of 128", "the Adam
# optimizer", "learning rate of 0.0002", "reducing [β1] to 0.5 helped stabilize training". No weight decay, no
# schedule and no augmentation (none is stated). Epochs: our choice (docs/gan.md shows MNIST after them).
GAN_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",
    "lr": 2e-4,  # per step, both nets
    "momentum": 0.5,  # β1 of Adam (β2 stays 0.999)
    "weight_decay": 0.0,
    "batch_size": 128,  # real images per step (and as many generated ones)
    "schedule": "constant",
    "epochs": 5,
    "augment": "none",
    "holdout": 0.0,  # nothing to select on: no validation split
    "data": "mnist",
}


@dataclass(frozen=True)
class ArchRecipe:
    """An architecture's own training recipe (what the user gives wins).

    Attributes:
        train: TrainConfig fields over :data:`GAN_DEFAULTS`.
        d_loss_scale: factor on the discriminator's loss (:class:`~cnnlab.generative.GANTask`).
        reuse_fakes: the generator's step scores the discriminator step's images unless told otherwise.
    """

    train: dict[str, Any] = field(default_factory=dict)
    d_loss_scale: float = 1.0
    reuse_fakes: bool = False


# DCGAN: GAN_DEFAULTS, the two cross-entropies summed, new noise for the generator's step (algorithm 1). The 2014 fully
# connected nets train as the authors' pylearn2 file (goodfeli/adversarial, mnist.yaml) does: SGD, η 0.1, momentum
# 0.5, batch 100; its objective (AdversaryCost2) takes half the sum of the discriminator's cross-entropies (under SGD,
# half its step) and computes both nets' objectives from one batch of samples. The file also raises the momentum to
# 0.7 over 250 epochs and divides η by 1.000004 every step; over the tens of epochs a CPU run lasts both are
# negligible (momentum +0.0008 and η −0.2 % an epoch), so they are left out. With DCGAN's settings instead these
# nets collapse onto one digit (docs/gan.md).
ARCH_RECIPES: dict[str, ArchRecipe] = {
    "dcgan": ArchRecipe(),
    "mlp": ArchRecipe({"optimizer": "sgd", "lr": 0.1, "momentum": 0.5, "batch_size": 100}, 0.5, reuse_fakes=True),
}
GAN_FLAGS = (  # the TrainConfig fields `cnnlab gan train` offers (the rest are a classifier's)
    "data", "epochs", "batch_size", "optimizer", "lr", "momentum", "seed", "device", "amp", "channels_last", "compile",
    "data_root", "val_split", "num_workers", "strict", "out", "log_every", "checkpoint_every", "keep_last",
    "tensorboard", "sync_bn", "ema_decay",
)  # fmt: skip
GRID_UPSCALE = 2  # sample grids: each pixel 2×2, so 28 px digits are readable


@dataclass
class GanTrainResult:
    """What :func:`train_gan` did: the run, the engine, one row per epoch, wall seconds, where it resumed."""

    run: Any
    trainer: Any
    history: list[dict]
    seconds: float
    resumed_at: tuple[int, int] | None
    already_complete: bool = False


def default_size(dataset: ImageDataset, arch: str) -> int:
    """The dataset's own side when the architecture makes it, else the smallest side it makes that is at least the
    dataset's (photo folders: the largest)."""
    from cnnlab.generative.architectures import sizes_of

    sizes = sizes_of(arch)
    side = dataset.image_shape[1]
    if side is None or dataset.streaming:
        return sizes[-1]
    return next((s for s in sizes if s >= side), sizes[-1])


def gan_preprocessing(channels: int, size: int, output_range: tuple[float, float], photos: bool) -> Preprocessing:
    """Images resized to ``size`` and scaled to the generator's output range: (x − mean)/std maps [0, 1] onto it."""
    low, high = output_range
    mean, std = -low / (high - low), 1 / (high - low)  # [-1, 1]: mean 0.5, std 0.5; [0, 1]: mean 0, std 1
    return Preprocessing(channels, (size, size), 0, (mean,) * channels, (std,) * channels, keep_aspect=photos)


def build_gan_run(config, arch: str, size: int | None, z_dim: int, run_dir: str | Path | None, overwrite: bool,
                  reuse_fakes: bool = False, coverage_run: str | Path | None = None):  # fmt: skip
    """(the run, its GAN task), from a resolved config: data, preprocessing, loaders, the two nets (seeded); every
    check runs before the run directory is opened. ``size`` None: :func:`default_size`; ``reuse_fakes``: see
    :class:`~cnnlab.generative.GANTask`; ``coverage_run``: a classifier run of the same data, for class coverage
    after every epoch."""
    from cnnlab.train import TrainingRun, resolve_device
    from cnnlab.train.distributed import rank_and_world_size
    from cnnlab.train.rundir import RunDir, default_run_dir

    rank, world_size = rank_and_world_size()
    device = resolve_device(config.device)
    dataset = load_dataset(config.data, config.data_root, val_split=config.val_split, seed=config.seed)
    size = default_size(dataset, arch) if size is None else size
    name = generator_name(arch, size)
    channels = dataset.image_shape[0]
    if config.model != name:
        config = replace(config, model=name)
    torch.manual_seed(config.seed)  # the nets' initialisation
    generator, discriminator = build_gan(arch, size, channels, z_dim)
    pre = gan_preprocessing(channels, size, generator.output_range, dataset.streaming)
    stored_train = None if dataset.streaming else pre.to_stored_size(dataset.train.images)  # uint8 (N, C, H, W)
    # the 2014 file sets the output biases from the pixel marginals (in-memory data; photo folders keep biases 0)
    if hasattr(generator, "init_output_bias_") and stored_train is not None:
        generator.init_output_bias_(stored_train.mean(0, dtype=torch.float32).div(255))
    shard = {"rank": rank, "world_size": world_size}
    if dataset.streaming:
        common = {**shard, "device": device, "strict": config.strict, "num_workers": config.num_workers}
        train = StreamingLoader(dataset.train.paths, dataset.train.labels, pre, config.batch_size, shuffle=True,
                                seed=config.seed, **common)  # fmt: skip
        test = StreamingLoader(dataset.test.paths, dataset.test.labels, pre, 256 * world_size, **common)
    else:
        common = {**shard, "device": device}
        train = DeviceTensorLoader(stored_train, dataset.train.labels, pre,
                                   config.batch_size, shuffle=True, seed=config.seed, **common)  # fmt: skip
        test = DeviceTensorLoader(pre.to_stored_size(dataset.test.images), dataset.test.labels, pre, 256 * world_size,
                                  **common)  # fmt: skip
    coverage = None
    if coverage_run is not None:
        with torch.random.fork_rng(devices=[]):  # building the classifier draws init weights: not from the run's RNG
            coverage = coverage_classifier(coverage_run, dataset, device)
    path = run_dir or config.out or default_run_dir(config.model, config.data)
    opened = RunDir(path, new=run_dir is None and rank == 0, overwrite=overwrite, lock=rank == 0)
    run = TrainingRun(config, device, discriminator.to(device), dataset, pre, train, test, opened)
    task = GANTask(generator, discriminator, seed=config.seed, reuse_fakes=reuse_fakes, coverage=coverage,
                   d_loss_scale=ARCH_RECIPES[arch].d_loss_scale)  # fmt: skip
    task.coverage_run = None if coverage_run is None else os.path.abspath(coverage_run)  # resumable from anywhere
    return run, task


def train_gan(
    given: dict | None = None,
    *,
    arch: str = "dcgan",
    size: int | None = None,
    z_dim: int = Z_DIM,
    reuse_fakes: bool | None = None,
    coverage_run: str | Path | None = None,
    resume: str | None = None,
    overwrite: bool = False,
    reporter: Any = None,
    context: Any = None,
    say: Callable[[str], None] = lambda text: None,
    command: list[str] | None = None,
) -> GanTrainResult:
    """Train (or continue) a GAN as ``cnnlab gan train`` does: the two nets of ``arch`` (see
    :mod:`cnnlab.generative.architectures`) for ``size`` px images, by the engine, with a sample grid per epoch.

    Args:
        given: :class:`~cnnlab.train.TrainConfig` fields (of :data:`GAN_FLAGS`); unset ones: the architecture's
            :data:`ARCH_RECIPES` entry over :data:`GAN_DEFAULTS`.
        arch: ``dcgan`` or ``mlp`` (the 2014 paper's fully connected nets; 28 px only).
        size: image side (28, 32 or 64 for dcgan); default: :func:`default_size`.
        z_dim: noise dimensions.
        reuse_fakes: the generator's step reuses the discriminator step's images (the pytorch/examples loop, one
            generator pass per step, and the 2014 file's) instead of generating from new noise (algorithm 1 of the
            GAN paper); None: the architecture's own (:data:`ARCH_RECIPES`: dcgan no, mlp yes).
        coverage_run: a classifier run of the same data (``cnnlab train``): after every epoch, the share of 1,000
            fixed-noise samples it puts in each class, and the classes under 5 % named as a failure. A resumed run
            uses the run it recorded unless another is given.
        resume: a checkpoint, run directory or ``auto``, as for ``cnnlab train``; the run keeps its own settings.
        overwrite: ``given["out"]`` may hold an earlier run, which is replaced.
        reporter, context, say, command: as for :func:`cnnlab.workflows.train_classifier`.

    Raises:
        ConfigError, DataError, CheckpointError: bad settings or data, before anything is written.
        NonFiniteLossError: a loss became NaN/inf (the message names which; the last checkpoint is kept).
        TrainingInterrupted: SIGINT/SIGTERM (a resumable checkpoint is kept).
    """
    from cnnlab.train import Trainer
    from cnnlab.train.config import TrainConfig, resolve
    from cnnlab.train.distributed import per_process_config
    from cnnlab.train.record import write_run_config
    from cnnlab.train.session import find_task_resume, restore

    given = dict(given or {})
    if arch not in ARCHS:
        from cnnlab.errors import UnknownNameError

        raise UnknownNameError("GAN architecture", arch, ARCHS)
    if not isinstance(z_dim, int) or z_dim < 1:
        raise ConfigError(f"--z-dim must be a positive whole number, got {z_dim!r}.")
    resumed = find_task_resume(given, GAN_FLAGS, "cnnlab gan train", resume, overwrite, "gan", "GAN", say)
    if resumed is not None:
        spec = {"reuse_fakes": False, **resumed.spec}  # runs from before the option generated anew
        asked = {"--arch": (arch, "dcgan"), "--size": (size, None), "--z-dim": (z_dim, Z_DIM),
                 "--reuse-fakes": (reuse_fakes, None)}  # fmt: skip
        changed = [
            f for f, (value, default) in asked.items() if value != default and value != spec[f[2:].replace("-", "_")]
        ]
        if changed:
            raise ConfigError(f"--resume continues a GAN with its own nets; {', '.join(changed)} cannot change.")
        arch, size, z_dim, reuse_fakes = spec["arch"], spec["size"], spec["z_dim"], spec["reuse_fakes"]
        coverage_run = coverage_run if coverage_run is not None else spec.get("coverage_run")
        config = resumed.config
    else:
        # the generator's name once the data fix its size (build_gan_run); a --size it cannot make fails here
        placeholder = generator_name(arch, size) if size is not None else f"{arch}-generator"
        reuse_fakes = ARCH_RECIPES[arch].reuse_fakes if reuse_fakes is None else bool(reuse_fakes)
        recipe = {**GAN_DEFAULTS, **ARCH_RECIPES[arch].train}
        config = resolve(TrainConfig(**{**recipe, "model": placeholder, **given}))
    config = per_process_config(config, context)
    run_path = resumed.run_path if resumed is not None else None
    run, task = build_gan_run(
        config, arch, size, z_dim, run_path, overwrite or resume == "auto", reuse_fakes, coverage_run
    )
    config = run.config  # with the generator's name
    main = context is None or context.is_main
    samples_dir = run.run_dir.path / "samples"

    def grid(trainer: Trainer, row: dict) -> None:  # rank 0, after each epoch's checkpoint
        # the evaluated generator: the EMA of its weights with --ema-decay (what the checkpoint keeps and samples)
        images = task.samples(trainer.eval_model)
        save_grid(images, samples_dir / f"epoch{trainer.epoch:03d}.png", task.models["generator"].output_range)

    trainer = Trainer(run, task=task, reporter=reporter, callbacks=(grid,))
    resumed_at = None
    if resumed is not None:
        complete = restore(trainer, resumed.payload, say)
        resumed_at = (trainer.epoch, trainer.batch)
        if complete:
            return GanTrainResult(run, trainer, trainer.history, 0.0, resumed_at, already_complete=True)
    if main:
        write_run_config(run, trainer.static_record, command if command is not None else sys.argv)
    say(
        f"Training a {arch} GAN ({config.model} against {GENERATORS[config.model].discriminator}) on {config.data} "
        f"({len(run.dataset.train):,} images at {'×'.join(map(str, run.preprocessing.input_size))}) on {run.device} "
        f"for {config.epochs} epochs; samples in {samples_dir}"
    )
    started = time.perf_counter()
    try:
        history = trainer.fit()
    except NonFiniteLossError as error:
        raise NonFiniteLossError(
            f"The GAN diverged. {error} A GAN that diverges usually has a learning rate too high for one of its two "
            "nets, or data outside the generator's range; the D and G losses of the last epochs are in metrics.csv."
        ) from None
    finally:
        trainer.close()
    return GanTrainResult(run, trainer, history, time.perf_counter() - started, resumed_at)


# ---- using a trained generator ---------------------------------------------------------------------------------
@dataclass
class GanRun:
    """A trained GAN, loaded from a run: ``generator`` and ``discriminator`` (eval mode; the discriminator is the zoo
    model ``discriminator_name``), the run's ``spec`` (arch, size, channels, z_dim), its ``data``, ``classes`` and
    ``preprocessing`` (images to the discriminator's input: size and range)."""

    path: Path
    generator: nn.Module
    spec: dict
    data: str
    classes: list[str]
    discriminator: nn.Module
    discriminator_name: str
    preprocessing: Preprocessing

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1], (B, C, H, W), for noise ``z`` (B, z_dim)."""
        low, high = self.generator.output_range
        with torch.no_grad():
            device = next(self.generator.parameters()).device
            return ((self.generator(z.to(device)).float().cpu() - low) / (high - low)).clamp(0, 1)

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` images in [0, 1] from seeded noise (the same seed, the same images)."""
        z = torch.randn(n, self.spec["z_dim"], generator=torch.Generator().manual_seed(seed))
        return torch.cat([self.generate(chunk) for chunk in z.split(500)])


def load_gan(run: str | Path, device: str = "cpu") -> GanRun:
    """The generator of a GAN run (a run directory or checkpoint file), in eval mode on ``device``.

    Raises:
        CheckpointError: no such run, not a cnnlab checkpoint, or not a GAN run.
    """
    from cnnlab.train import resolve_device
    from cnnlab.train.checkpoint import load_checkpoint, resolve_checkpoint_path

    path = resolve_checkpoint_path(run)
    payload = load_checkpoint(path)
    spec = task_spec(payload, run, "gan", "GAN", "cnnlab gan train")
    name = generator_name(spec["arch"], int(spec["size"]))
    generator = create_generator(name, int(spec["channels"]), int(spec["z_dim"]))
    generator.load_state_dict(payload["model_state"])
    generator.to(resolve_device(device)).eval()
    discriminator_name = GENERATORS[name].discriminator
    discriminator = models.create(discriminator_name, num_classes=1, in_chans=int(spec["channels"]))
    discriminator.load_state_dict(payload["model_states"]["discriminator"])
    discriminator.to(resolve_device(device)).eval()
    return GanRun(path, generator, spec, str(payload.get("data")), [str(c) for c in payload.get("classes", [])],
                  discriminator, discriminator_name, Preprocessing.from_dict(payload["preprocessing"]))  # fmt: skip


def save_grid(images: torch.Tensor, path: str | Path, output_range: tuple[float, float] = (0.0, 1.0),
              ncols: int | None = None) -> Path:  # fmt: skip
    """Write a batch (N, C, H, W) in ``output_range`` as one PNG grid (⌈√N⌉ columns unless ``ncols``)."""
    from cnnlab.inspect.grid import save, tile, to_pil

    low, high = output_range
    images = ((images.float() - low) / (high - low)).clamp(0, 1)
    return save(to_pil(tile(images, ncols=ncols, pad=1, fill=1.0), upscale=GRID_UPSCALE), path)


def _output_path(out: str | Path | None, default: Path) -> Path:
    from cnnlab.outputs import image_suffixes, output_file

    return output_file(out if out is not None else default, "--out", image_suffixes(), "image")


@dataclass
class SampleResult:
    """Images written by :func:`sample_run` or :func:`interpolate_run`: the file and the images in [0, 1]."""

    path: Path
    images: torch.Tensor


def sample_run(run: str | Path, n: int = 64, out: str | Path | None = None, seed: int = 0, device: str = "cpu"):
    """``cnnlab gan sample``: ``n`` images of a GAN run's generator as one grid (default
    ``RUN_DIR/samples-<n>-seed<seed>.png``).

    Raises:
        ConfigError: ``n`` not a positive whole number (at most 10,000 in one grid).
        CheckpointError, OutputError: no GAN run there; ``out`` cannot be written.
    """
    _check_count("-n", n, 10_000)
    gan = load_gan(run, device)
    path = _output_path(out, gan.path.parent / f"samples-{n}-seed{seed}.png")
    images = gan.sample(n, seed)
    return SampleResult(save_grid(images, path), images)


def interpolate_run(
    run: str | Path,
    steps: int = 10,
    rows: int = 8,
    out: str | Path | None = None,
    seed: int = 0,
    spherical: bool = False,
    device: str = "cpu",
) -> SampleResult:
    """``cnnlab gan interpolate``: a latent walk, ``rows`` strips of ``steps`` images each, from one noise vector to
    another in equal steps: z(t) = (1 − t)·z₀ + t·z₁ as in Radford et al. 2015 (section 6.1), or along the great
    circle with ``spherical`` (White 2016, "Sampling generative networks": a Gaussian z has almost all its mass near
    the sphere of radius √z_dim, which the straight line's midpoints leave). Default file:
    ``RUN_DIR/interpolation-seed<seed>.png``."""
    _check_count("--steps", steps, 100, least=2)
    _check_count("--rows", rows, 100)
    gan = load_gan(run, device)
    path = _output_path(out, gan.path.parent / f"interpolation-seed{seed}.png")
    ends = torch.randn(2, rows, gan.spec["z_dim"], generator=torch.Generator().manual_seed(seed))
    t = torch.linspace(0, 1, steps).view(1, steps, 1)  # (1, steps, 1)
    z0, z1 = ends[0].unsqueeze(1), ends[1].unsqueeze(1)  # (rows, 1, z)
    if spherical:
        omega = torch.arccos((z0 * z1).sum(-1, keepdim=True) / (z0.norm(dim=-1, keepdim=True) * z1.norm(dim=-1,
                             keepdim=True))).clamp_min(1e-6)  # fmt: skip
        z = (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)
    else:
        z = (1 - t) * z0 + t * z1  # (rows, steps, z)
    images = gan.generate(z.reshape(rows * steps, -1))
    return SampleResult(save_grid(images, path, ncols=steps), images)


def _check_count(flag: str, value: object, most: int, least: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
        raise ConfigError(f"{flag} must be a whole number from {least} to {most:,}, got {value!r}.")


def summary_model(spec: str | Path, **options: object) -> tuple[nn.Module, tuple]:
    """(model, input shape) for ``cnnlab summary``: a registered generator (input z_dim×1×1), a GAN run's generator,
    or what :func:`cnnlab.train.record.saved_or_registered_model` gives (zoo models, classifier runs)."""
    from cnnlab.train.checkpoint import load_checkpoint, resolve_checkpoint_path
    from cnnlab.train.record import saved_or_registered_model

    if str(spec) in GENERATORS:
        channels = options.get("in_chans")  # --input's C: here the noise dimensions
        generator = create_generator(str(spec), z_dim=channels or Z_DIM, device=options.get("device"))
        return generator, (generator.z_dim, 1, 1)
    if Path(spec).exists() and load_checkpoint(resolve_checkpoint_path(spec)).get("task") == "gan":
        generator = load_gan(spec).generator
        return generator, (generator.z_dim, 1, 1)
    return saved_or_registered_model(spec, **options)
