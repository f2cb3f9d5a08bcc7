"""The generator registry: which generator goes with which discriminator of the model zoo.

Discriminators follow the classifier contract and live in the zoo (``cnnlab models 'dcgan*'``); generators map
noise to images, so they have a small registry of their own here, refusing duplicates like the zoo's:

>>> list_generators()
['dcgan-generator-28', 'dcgan-generator-32', 'dcgan-generator-64', 'gan-mlp-generator']
>>> generator, discriminator = build_gan("dcgan", size=28, channels=1)
>>> generator(torch.zeros(2, 100)).shape
torch.Size([2, 1, 28, 28])
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from cnnlab import models
from cnnlab.errors import ConfigError, UnknownNameError
from cnnlab.models.dcgan import SIZES as DCGAN_SIZES
from cnnlab.models.dcgan import DCGANGenerator
from cnnlab.models.gan import SIZE as MLP_SIZE
from cnnlab.models.gan import MLPGenerator

Z_DIM = 100  # both papers draw 100-dimensional noise


@dataclass(frozen=True)
class GeneratorInfo:
    """What the registry knows about a generator.

    Attributes:
        name: registry name, e.g. ``"dcgan-generator-64"``.
        arch: the family (``--arch``): ``"dcgan"`` or ``"mlp"``.
        size: side of the images it makes, in pixels.
        channels: default image channels.
        discriminator: the zoo name of the discriminator it is trained against.
        paper: short citation.
        builder: ``builder(size, channels, z_dim)`` -> the generator.
    """

    name: str
    arch: str
    size: int
    channels: int
    discriminator: str
    paper: str
    builder: Callable[..., nn.Module] = field(repr=False)


GENERATORS: dict[str, GeneratorInfo] = {}
ARCHS = ("dcgan", "mlp")


def register_generator(info: GeneratorInfo) -> None:
    """Add a generator; a name registered twice is an error."""
    if info.name in GENERATORS:
        raise ConfigError(f"Generator name {info.name!r} is already registered.")
    GENERATORS[info.name] = info


for _size in DCGAN_SIZES:
    register_generator(
        GeneratorInfo(
            f"dcgan-generator-{_size}", "dcgan", _size, 1 if _size == 28 else 3, f"dcgan-discriminator-{_size}",
            models.get_model_info(f"dcgan-discriminator-{_size}").paper, DCGANGenerator,
        )
    )  # fmt: skip
register_generator(
    GeneratorInfo(
        "gan-mlp-generator", "mlp", MLP_SIZE, 1, "gan-mlp-discriminator",
        models.get_model_info("gan-mlp-discriminator").paper, MLPGenerator,
    )
)  # fmt: skip


def list_generators(pattern: str = "*") -> list[str]:
    """Registered generator names matching a shell-style pattern, sorted."""
    return sorted(n for n in GENERATORS if fnmatch.fnmatch(n, pattern))


def sizes_of(arch: str) -> list[int]:
    """The image sides an architecture makes."""
    if arch not in ARCHS:
        raise UnknownNameError("GAN architecture", arch, ARCHS)
    return sorted(info.size for info in GENERATORS.values() if info.arch == arch)


def generator_name(arch: str, size: int) -> str:
    """The registered generator of ``arch`` at ``size`` px (clear errors for an unknown arch or size)."""
    sizes = sizes_of(arch)
    if size not in sizes:
        raise ConfigError(
            f"--size {size!r}: the {arch} GAN makes {' or '.join(map(str, sizes))} px images; choose one of those."
        )
    return next(i.name for i in GENERATORS.values() if i.arch == arch and i.size == size)


def create_generator(
    name: str, channels: int | None = None, z_dim: int = Z_DIM, device: torch.device | str | None = None
) -> nn.Module:
    """Build a registered generator; it carries ``arch``, ``model_name``, ``image_size``, ``channels``, ``z_dim``."""
    if name not in GENERATORS:
        raise UnknownNameError("generator", name, GENERATORS)
    info = GENERATORS[name]
    channels = info.channels if channels is None else channels
    for label, value in (("channels", channels), ("z_dim", z_dim)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{label} must be a positive whole number, got {value!r}.")
    with torch.device(device) if device is not None else contextlib.nullcontext():
        generator = info.builder(info.size, channels, z_dim)
    generator.arch, generator.model_name = info.arch, info.name
    return generator


def build_gan(
    arch: str, size: int, channels: int, z_dim: int = Z_DIM, device: torch.device | str | None = None
) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) of ``arch`` for ``size`` px images with ``channels`` channels; the discriminator
    is its zoo model with one logit."""
    info = GENERATORS[generator_name(arch, size)]
    generator = create_generator(info.name, channels, z_dim, device)
    discriminator = models.create(info.discriminator, num_classes=1, in_chans=channels, device=device)
    return generator, discriminator
