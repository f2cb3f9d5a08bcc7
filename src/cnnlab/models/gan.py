"""The fully connected GAN of Goodfellow, Pouget-Abadie, Mirza, Xu, Warde-Farley, Ozair, Courville & Bengio,
"Generative adversarial nets", 2014, as used on MNIST.

Section 5: "The generator nets used a mixture of rectifier linear activations and sigmoid activations, while the
discriminator net used maxout activations. Dropout was applied in training the discriminator net." The paper gives
no widths; they are those of the authors' released pylearn2 file (goodfeli/adversarial, ``mnist.yaml``):

    generator      z 100 -> 1200 ReLU -> 1200 ReLU -> C·28·28 sigmoid -> (C, 28, 28), pixels in [0, 1]
    discriminator  (C, 28, 28) -> maxout 240 units × 5 pieces -> maxout 240 × 5 -> 1 logit

with the file's initialisation (weights uniform in ±0.05 in the generator and ±0.005 in the discriminator, biases 0;
the file's noise is Gaussian, like every cnnlab generator's) and its dropout: inputs of ``h0`` kept with probability
0.8, of every other layer 0.5. The file also sets the generator's output biases from the training pixels' marginals;
a model knows no data, so :meth:`MLPGenerator.init_output_bias_` takes the pixel means and ``cnnlab gan train
--arch mlp`` passes them. Its training recipe (SGD η 0.1, momentum 0.5, batch 100, the file's objective) is in
:data:`cnnlab.generative.ARCH_RECIPES`. The discriminator keeps the paper's maxout units
(:class:`~cnnlab.layers.Maxout`).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnlab.layers import Maxout
from cnnlab.models._common import FullyConnectedHeadModel
from cnnlab.models._registry import register_model

PAPER = "Goodfellow et al. 2014, Generative adversarial nets"
SIZE = 28  # MNIST
GENERATOR_WIDTHS = (1200, 1200)
DISCRIMINATOR_UNITS = ((240, 5), (240, 5))  # (units, pieces) per maxout layer
GENERATOR_INIT_RANGE = 0.05  # the file's irange: weights uniform in ±0.05
DISCRIMINATOR_INIT_RANGE = 0.005


@torch.no_grad()
def _uniform_init_(net: nn.Module, init_range: float) -> None:
    """pylearn2's ``irange``: every weight uniform in ±init_range, every bias 0."""
    for module in net.modules():
        if isinstance(module, nn.Linear):
            nn.init.uniform_(module.weight, -init_range, init_range)
            nn.init.zeros_(module.bias)


class MLPGenerator(nn.Module):
    """z (B, z_dim) -> images (B, channels, 28, 28) in [0, 1] (sigmoid output). Stages: ``h0``, ``h1``, ``output``."""

    output_range = (0.0, 1.0)  # sigmoid: the data stay in [0, 1]

    def __init__(self, size: int = SIZE, channels: int = 1, z_dim: int = 100):
        super().__init__()
        if size != SIZE:
            from cnnlab.errors import ConfigError

            raise ConfigError(f"The fully connected GAN generates {SIZE} px images (MNIST), not {size!r} px.")
        self.image_size, self.channels, self.z_dim = size, channels, z_dim
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = z_dim
        for i, hidden in enumerate(GENERATOR_WIDTHS):
            layers[f"h{i}"] = nn.Sequential(nn.Linear(width, hidden), nn.ReLU())  # (B, width) -> (B, hidden)
            width = hidden
        # (B, width) -> (B, C·28·28) -> (B, C, 28, 28)
        layers["output"] = nn.Sequential(
            nn.Linear(width, channels * size * size), nn.Sigmoid(), nn.Unflatten(1, (channels, size, size))
        )
        self.stages = nn.Sequential(layers)
        _uniform_init_(self, GENERATOR_INIT_RANGE)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.stages(z.reshape(z.shape[0], self.z_dim))

    @torch.no_grad()
    def init_output_bias_(self, pixel_means: torch.Tensor) -> None:
        """The file's ``init_sigmoid_bias_from_marginals``: each output unit's bias = logit of its pixel's mean over
        the training images, so the untrained generator already draws the average digit.

        Args:
            pixel_means: (C, 28, 28) or (C·784,), in [0, 1] (clamped to [10⁻³, 1 − 10⁻³]: a pixel that is always 0
                would give −∞).
        """
        linear = self.stages.output[0]
        if pixel_means.numel() != linear.out_features:
            from cnnlab.errors import ConfigError

            raise ConfigError(
                f"init_output_bias_ needs one mean per output pixel ({linear.out_features}), got "
                f"{pixel_means.numel()} values of shape {tuple(pixel_means.shape)}."
            )
        linear.bias.copy_(torch.logit(pixel_means.reshape(-1).to(linear.bias).clamp(1e-3, 1 - 1e-3)))


class MLPDiscriminator(FullyConnectedHeadModel):
    """Images (B, C, 28, 28) -> logits (B, num_classes). Stages ``h0``, ``h1``: dropout, linear, maxout (the first
    flattens the image). Head: dropout 0.5, linear ``y``; ``pre_logits`` is the last maxout layer (240 wide)."""

    cpu_channels_last = False  # fully connected: the layout does not matter

    def __init__(self, num_classes: int = 1, in_chans: int = 1):
        super().__init__()
        self.num_classes, self.in_chans = num_classes, in_chans
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width, drop = in_chans * SIZE * SIZE, 0.2
        for i, (units, pieces) in enumerate(DISCRIMINATOR_UNITS):
            flatten = [nn.Flatten()] if i == 0 else []  # (B, C, 28, 28) -> (B, C·784)
            layers[f"h{i}"] = nn.Sequential(
                *flatten, nn.Dropout(drop), nn.Linear(width, units * pieces), Maxout(pieces)
            )
            width, drop = units, 0.5
        self.features = nn.Sequential(layers)
        self.num_features = width
        self.classifier = nn.Sequential(OrderedDict(drop=nn.Dropout(0.5), y=nn.Linear(width, num_classes)))
        _uniform_init_(self, DISCRIMINATOR_INIT_RANGE)


@register_model(
    "gan-mlp-discriminator",
    paper=PAPER,
    year=2014,
    input_size=(1, SIZE, SIZE),
    num_classes=1,
    param_count=1_231_441,
    fixed_input_size=True,
    description="The 2014 GAN's MNIST discriminator: two maxout layers (240 units × 5 pieces), one logit",
    paper_params="not stated",
    notes="Widths of the authors' pylearn2 MNIST file; dropout 0.2 on the image, 0.5 elsewhere. Trained with its "
    "generator by `cnnlab gan train --arch mlp`.",
)
def gan_mlp_discriminator(*, num_classes: int = 1, in_chans: int = 1) -> MLPDiscriminator:
    return MLPDiscriminator(num_classes=num_classes, in_chans=in_chans)
