"""DCGAN (Radford, Metz & Chintala, "Unsupervised representation learning with deep convolutional generative
adversarial networks", 2015): a generator of transposed convolutions and a discriminator of strided convolutions.

The paper's guidelines (section 3), all followed here: no pooling (strided convolutions in the discriminator,
fractionally strided ones in the generator), batch norm in both nets except the generator's output layer and the
discriminator's input layer, ReLU in the generator with tanh on its output, LeakyReLU (slope 0.2) in the
discriminator, no fully connected hidden layers, weights drawn from N(0, 0.02) (section 4; batch-norm scales from
N(1, 0.02) and shifts 0, as in the authors' code).

One table for every size: the generator projects z to ``widths[0]`` maps of ``base × base``, doubles the side with
each 4×4 stride-2 transposed convolution, and ends in ``channels`` maps; the discriminator mirrors it. At 64 px:

    z 100 -> 512×4×4 -> 256×8×8 -> 128×16×16 -> 64×32×32 -> C×64×64 (tanh)          generator
    C×64×64 -> 64×32×32 -> 128×16×16 -> 256×8×8 -> 512×4×4 -> 1 (a 4×4 conv)          discriminator

These are the widths and 4×4 kernels of the widely used Torch/PyTorch DCGAN example (64 filters in the widest
layer); the paper's figure 1 and the authors' Theano code are twice as wide (1024-512-256-128), with 5×5 kernels, a
fully connected projection of z, and an L2 weight decay of 10⁻⁵. ``size=64`` is therefore not the paper's exact
model but its design at half the width (about a quarter of the parameters).
32 px drops the widest layer; 28 px (MNIST) starts from 7×7 with two upsamplings (128-64). Convolutions followed
by batch norm have no bias (the norm's shift replaces it); the others (the
discriminator's input and output layers, the generator's output layer) have one.

The discriminator is a model of the zoo (``dcgan-discriminator-28`` / ``-32`` / ``-64``): it follows the classifier
contract (stages ``conv1``..., ``forward_features``, ``forward_head``, ``reset_classifier``), so summaries, views
and feature extraction work on it, and its features serve as a feature extractor (the paper's section 5.1).
The generator (:class:`DCGANGenerator`) is built by :mod:`cnnlab.generative`.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import pairwise

import torch
from torch import nn

from cnnlab.models._contract import ClassifierModel
from cnnlab.models._registry import register_model

PAPER = "Radford, Metz & Chintala 2015, Unsupervised representation learning with deep convolutional GANs"

# image side: (side of the first generator map, widths of the generator's hidden maps, input to output)
DCGAN: dict[int, tuple[int, tuple[int, ...]]] = {
    64: (4, (512, 256, 128, 64)),  # the paper's design at half its width (the PyTorch example's widths)
    32: (4, (256, 128, 64)),
    28: (7, (128, 64)),
}
SIZES = tuple(sorted(DCGAN))
INIT_STD = 0.02  # section 4: "all weights were initialized from a zero-centered Normal distribution with std 0.02"
LEAK = 0.2  # section 4: "the slope of the leak was set to 0.2"


def dcgan_init_(module: nn.Module) -> None:
    """Convolution weights N(0, 0.02²), batch-norm scales N(1, 0.02²), every bias and shift 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, INIT_STD)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, INIT_STD)
            nn.init.zeros_(m.bias)


def _table(size: int) -> tuple[int, tuple[int, ...]]:
    from cnnlab.errors import ConfigError

    if size not in DCGAN:
        raise ConfigError(f"DCGAN image size must be one of {', '.join(map(str, SIZES))} px, got {size!r}.")
    return DCGAN[size]


class DCGANGenerator(nn.Module):
    """z (B, z_dim) or (B, z_dim, 1, 1) -> images (B, channels, size, size) in [-1, 1].

    Stages (``stages``): ``project`` (z to ``widths[0]``×base×base), ``up1``... (each doubles the side), ``output``
    (transposed convolution to ``channels`` maps, tanh).
    """

    output_range = (-1.0, 1.0)  # tanh: the data are scaled to [-1, 1] to match

    def __init__(self, size: int = 64, channels: int = 3, z_dim: int = 100):
        super().__init__()
        base, widths = _table(size)
        self.image_size, self.channels, self.z_dim = size, channels, z_dim
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        # (B, z, 1, 1) -> (B, widths[0], base, base)
        layers["project"] = nn.Sequential(
            nn.ConvTranspose2d(z_dim, widths[0], base, 1, 0, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        for i, (wide, narrow) in enumerate(pairwise(widths), start=1):
            # (B, wide, s, s) -> (B, narrow, 2s, 2s)
            layers[f"up{i}"] = nn.Sequential(
                nn.ConvTranspose2d(wide, narrow, 4, 2, 1, bias=False), nn.BatchNorm2d(narrow), nn.ReLU()
            )
        # (B, widths[-1], size/2, size/2) -> (B, channels, size, size); no batch norm on the output (section 3)
        layers["output"] = nn.Sequential(nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh())
        self.stages = nn.Sequential(layers)
        dcgan_init_(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.stages(z.reshape(z.shape[0], self.z_dim, 1, 1))


class DCGANDiscriminator(ClassifierModel):
    """Images (B, C, size, size) -> logits (B, num_classes): one logit "real" for a GAN (``num_classes=1``).

    Stages: ``conv1`` (no batch norm: the input layer, section 3), ``conv2``... each a 4×4 stride-2 convolution
    that halves the side, ending at ``widths[0]`` maps of base × base. Head (``classifier``): one base×base
    convolution to ``num_classes`` maps of 1×1, flattened (a fully connected layer over the last maps, as the paper's
    "flattened and then fed into a single sigmoid output"). ``pre_logits``: those maps flattened
    (``num_features`` = widths[0]·base²).
    """

    cpu_channels_last = False  # not measured for these models: NCHW

    def __init__(self, size: int = 64, num_classes: int = 1, in_chans: int = 3):
        super().__init__()
        base, widths = _table(size)
        self.image_size, self.base = size, base
        self.num_classes, self.in_chans = num_classes, in_chans
        reverse = list(reversed(widths))  # e.g. 64, 128, 256, 512
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        # (B, C, size, size) -> (B, reverse[0], size/2, size/2)
        layers["conv1"] = nn.Sequential(nn.Conv2d(in_chans, reverse[0], 4, 2, 1), nn.LeakyReLU(LEAK))
        for i, (narrow, wide) in enumerate(pairwise(reverse), start=2):
            # (B, narrow, s, s) -> (B, wide, s/2, s/2)
            layers[f"conv{i}"] = nn.Sequential(
                nn.Conv2d(narrow, wide, 4, 2, 1, bias=False), nn.BatchNorm2d(wide), nn.LeakyReLU(LEAK)
            )
        self.features = nn.Sequential(layers)
        self.num_features = widths[0] * base * base
        self.classifier = self._make_classifier(num_classes)
        dcgan_init_(self)

    def _make_classifier(self, num_classes: int) -> nn.Sequential:
        device = self.features.conv1[0].weight.device
        # (B, widths[0], base, base) -> (B, num_classes, 1, 1) -> (B, num_classes)
        head = nn.Sequential(nn.Conv2d(self.num_features // self.base**2, num_classes, self.base, device=device))
        head.append(nn.Flatten())
        dcgan_init_(head)
        return head

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return torch.flatten(x, 1) if pre_logits else self.classifier(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = self._make_classifier(num_classes)
        self.num_classes = num_classes


def _register(size: int, channels: int, count: int) -> None:
    widths = DCGAN[size][1]

    @register_model(
        f"dcgan-discriminator-{size}",
        paper=PAPER,
        year=2015,
        input_size=(channels, size, size),
        num_classes=1,
        param_count=count,
        fixed_input_size=True,
        description=f"DCGAN discriminator for {size} px images: strided convs {'-'.join(map(str, widths[::-1]))}",
        paper_params="not stated",
        notes="The paper's design at half its width (the PyTorch DCGAN example's 64-128-256-512, 4×4 kernels; the "
        "paper: 128-...-1024, 5×5); 32 and 28 px drop layers. One logit; trained by `cnnlab gan train`.",
    )
    def builder(*, num_classes: int = 1, in_chans: int = channels) -> DCGANDiscriminator:
        return DCGANDiscriminator(size, num_classes=num_classes, in_chans=in_chans)


# Exact counts at the defaults (1 logit; 1 channel at 28 px, 3 at 32 and 64 px), recomputed in tests/test_gan.py.
_register(28, 1, 138_689)
_register(32, 3, 663_361)
_register(64, 3, 2_765_633)
