"""Convolutional maxout networks (Goodfellow, Warde-Farley, Mirza, Courville & Bengio, "Maxout networks", 2013).

A maxout layer computes k linear pieces per unit and keeps their maximum; a convolutional maxout layer is a
convolution with k × C output maps, the maximum across each group of k maps (:class:`~cnnlab.layers.Maxout`),
then spatial max pooling. The networks are trained with dropout on the input of every layer (0.2 on the
image, 0.5 elsewhere), which is part of the model here.

The paper describes the architectures in words (section 5); the numbers are the authors' pylearn2 files
(``pylearn2/scripts/papers/maxout/mnist.yaml`` and ``cifar10.yaml``). Pooling there is cuda-convnet's, which
rounds the output size up: ``ceil_mode=True``.

``maxout-mnist`` (section 5.1, convolutional, 0.45 % test error), input 1×28×28:

    h0  conv 8×8, pad 0: 48 units × 2 pieces -> 48×21×21, max pool 4/2 -> 48×10×10     6,240 params
    h1  conv 8×8, pad 3: 48 units × 2 pieces -> 48×9×9,   max pool 4/2 -> 48×4×4     295,008
    h2  conv 5×5, pad 3: 24 units × 4 pieces -> 24×6×6,   max pool 2/2 -> 24×3×3     115,296
    y   softmax 10                                                                     2,170
                                                                                     418,714

``maxout-cifar`` (section 5.3, 11.68 % without augmentation), input 3×32×32:

    h0  conv 8×8, pad 4: 96 units × 2 pieces  -> 96×33×33,  max pool 4/2 -> 96×16×16      37,056
    h1  conv 8×8, pad 3: 192 units × 2 pieces -> 192×15×15, max pool 4/2 -> 192×7×7    2,359,680
    h2  conv 5×5, pad 3: 192 units × 2 pieces -> 192×9×9,   max pool 2/2 -> 192×5×5    1,843,584
    h3  fully connected maxout: 500 units × 5 pieces                                   12,002,500
    y   softmax 10                                                                          5,010
                                                                                       16,247,830

The max-norm constraints on the weights are a training rule: :meth:`MaxoutNet.apply_max_norm_` applies them and the
trainer calls it after every optimiser step (``--no-weight-constraints`` turns that off). Not reproduced: the MNIST
file's untied biases (a bias per map *and* position;
we use ordinary per-map biases: 53,280 fewer parameters than the file's model).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnlab.layers import ConstraintActivity, Maxout, clip_row_norms_
from cnnlab.models._common import FullyConnectedHeadModel
from cnnlab.models._registry import register_model

PAPER = "Goodfellow, Warde-Farley, Mirza, Courville & Bengio 2013, Maxout networks"

# (units, pieces, kernel, padding, pool size, pool stride, max kernel norm) per convolutional maxout layer.
MNIST = [(48, 2, 8, 0, 4, 2, 0.9), (48, 2, 8, 3, 4, 2, 1.9365), (24, 4, 5, 3, 2, 2, 1.9365)]
CIFAR = [(96, 2, 8, 4, 4, 2, 0.9), (192, 2, 8, 3, 4, 2, 1.9365), (192, 2, 5, 3, 2, 2, 1.9365)]


class MaxoutNet(FullyConnectedHeadModel):
    """Convolutional maxout network. Stages: ``h0``, ``h1``, ... each = dropout, conv, maxout, max pool.

    Head (``classifier``): [flatten ->] dropout 0.5, (fully connected maxout ``h3``: dropout, linear, maxout),
    dropout 0.5, softmax layer ``y``. Initialisation: uniform in ±0.005 (the files' ``irange``), zero biases.

    Args:
        table: rows of :data:`MNIST` / :data:`CIFAR`.
        fc_maxout: (units, pieces) of a fully connected maxout layer before the softmax, or None.
        input_size: (H, W) of the images, which fixes the width of the first fully connected layer.
    """

    cpu_channels_last = False  # its channel-group max is 0.88× as fast in NHWC on the CPU (see ClassifierModel)

    def __init__(
        self,
        table: list[tuple],
        fc_maxout: tuple[int, int] | None,
        input_size: tuple[int, int],
        num_classes: int,
        in_chans: int,
        input_dropout: float = 0.2,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.num_classes, self.in_chans = num_classes, in_chans
        self.max_norms: dict[str, float] = {}
        self.constraint_activity = ConstraintActivity()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width, (h, w) = in_chans, input_size
        for i, (units, pieces, kernel, padding, pool, stride, max_norm) in enumerate(table):
            conv = nn.Conv2d(width, units * pieces, kernel, padding=padding)
            layers[f"h{i}"] = nn.Sequential(
                OrderedDict(
                    drop=nn.Dropout(input_dropout if i == 0 else dropout),
                    conv=conv,
                    maxout=Maxout(pieces),  # (B, units·pieces, H, W) -> (B, units, H, W)
                    pool=nn.MaxPool2d(pool, stride=stride, ceil_mode=True),
                )
            )
            self.max_norms[f"features.h{i}.conv.weight"] = max_norm
            h, w = (h + 2 * padding - kernel + 1), (w + 2 * padding - kernel + 1)
            h, w = -(-(h - pool) // stride) + 1, -(-(w - pool) // stride) + 1  # ceil-mode pooling
            width = units
        self.features = nn.Sequential(layers)
        flat = width * h * w
        head: OrderedDict[str, nn.Module] = OrderedDict()
        if fc_maxout is not None:
            units, pieces = fc_maxout
            head["h_drop"] = nn.Dropout(dropout)
            head["h_fc"] = nn.Linear(flat, units * pieces)
            head["h_maxout"] = Maxout(pieces)
            self.max_norms["classifier.h_fc.weight"] = 1.9
            flat = units
        head["y_drop"] = nn.Dropout(dropout)
        head["y"] = nn.Linear(flat, num_classes)
        self.max_norms["classifier.y.weight"] = 1.9365
        self.classifier = nn.Sequential(head)
        self.num_features = flat
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.uniform_(module.weight, -0.005, 0.005)
            nn.init.zeros_(module.bias)

    def init_classifier(self, linear: nn.Linear) -> None:
        self._init(linear)

    has_weight_constraints = True

    def apply_weight_constraints_(self) -> None:
        self.apply_max_norm_()

    @torch.no_grad()
    def apply_max_norm_(self) -> None:
        """Project weights back into the files' max-norm balls: each kernel (conv) or column (linear: the weights
        *into* one unit) rescaled to norm ≤ the bound. The trainer calls it after every optimiser step."""
        params = dict(self.named_parameters())
        for name, bound in self.max_norms.items():
            if (w := params.get(name)) is None:  # a replaced or removed head
                continue
            clip_row_norms_(w, bound, self.constraint_activity)


@register_model(
    "maxout-mnist",
    paper=PAPER,
    year=2013,
    input_size=(1, 28, 28),
    num_classes=10,
    param_count=418_714,
    paper_params="not stated",
    fixed_input_size=True,
    description="Convolutional maxout network for MNIST: three conv maxout layers, softmax (dropout)",
    notes="Sizes from the authors' pylearn2 file; tied (per-map) biases where the file has untied ones; the "
    "trainer applies the file's max-norm constraints after every step.",
)
def maxout_mnist(
    *, num_classes: int = 10, in_chans: int = 1, input_dropout: float = 0.2, dropout: float = 0.5
) -> MaxoutNet:
    return MaxoutNet(MNIST, None, (28, 28), num_classes, in_chans, input_dropout, dropout)


@register_model(
    "maxout-cifar",
    paper=PAPER,
    year=2013,
    input_size=(3, 32, 32),
    num_classes=10,
    param_count=16_247_830,
    paper_params="not stated",
    fixed_input_size=True,
    description="Convolutional maxout network for CIFAR-10: three conv maxout layers, FC maxout 500×5, softmax",
    notes="Sizes from the authors' pylearn2 file; the trainer applies its max-norm constraints after every step.",
)
def maxout_cifar(
    *, num_classes: int = 10, in_chans: int = 3, input_dropout: float = 0.2, dropout: float = 0.5
) -> MaxoutNet:
    return MaxoutNet(CIFAR, (500, 5), (32, 32), num_classes, in_chans, input_dropout, dropout)
