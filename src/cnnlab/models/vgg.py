"""VGG (Simonyan & Zisserman, "Very deep convolutional networks for large-scale image recognition", 2014).

Table 1 of the paper is the table below: ``3×3`` convolutions (int = width), ``(width, 1)`` for the 1×1
convolutions of configuration C, ``"M"`` for 2×2 max pooling and ``"LRN"`` for A-LRN's normalisation. Every
convolution has stride 1 and "same" padding and is followed by a ReLU; then FC-4096, FC-4096 (each with ReLU
and dropout 0.5) and FC-1000.

Names. The registry names are the paper's configurations (``vgg-a`` .. ``vgg-e``, ``vgg-a-lrn``); the
batch-normalised variants (not in the paper: batch norm came in 2015) add ``-bn``. torchvision's names are
aliases of the same models: ``vgg11`` = ``vgg-a``, ``vgg13`` = ``vgg-b``, ``vgg16`` = ``vgg-d``, ``vgg19`` =
``vgg-e``, and ``vgg11_bn`` .. ``vgg19_bn`` for the ``-bn`` ones. Configuration C (16 layers with 1×1
convolutions) and A-LRN have no torchvision counterpart.

Module names are torchvision's (``features.0``, ``features.1``, ... and ``classifier.0`` .. ``classifier.6``),
so torchvision's VGG state dicts and ImageNet weights load unchanged; ``model.layer_names`` maps the usual
``conv5_3``-style names to those indices. An adaptive 7×7 average pool before the classifier (torchvision's)
is the identity at 224×224 and lets smaller inputs through.

Initialisation: the paper initialised A from N(0, 10⁻²) and the deeper nets from A, and adds that "it is
possible to initialise the weights without pre-training by using the random initialisation procedure of
Glorot & Bengio (2010)": that is what we do (Glorot uniform weights, zero biases).
"""

from __future__ import annotations

from torch import nn

from cnnlab.layers import LocalResponseNorm
from cnnlab.models._common import FullyConnectedHeadModel, uninitialized
from cnnlab.models._registry import register_model

PAPER = "Simonyan & Zisserman 2014, Very deep convolutional networks for large-scale image recognition"

Layer = int | tuple[int, int] | str
CONFIGS: dict[str, list[Layer]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M", 512, 512, (512, 1), "M", 512, 512, (512, 1), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
# Table 2 of the paper, in millions: A and A-LRN 133, B 133, C 134, D 138, E 144.
PAPER_PARAMS = {"A": 133, "A-LRN": 133, "B": 133, "C": 134, "D": 138, "E": 144}
TORCHVISION_NAMES = {"A": "vgg11", "B": "vgg13", "D": "vgg16", "E": "vgg19"}


def _glorot_(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class VGG(FullyConnectedHeadModel):
    """A VGG configuration. Stages: every layer of ``features`` (named by index, as in torchvision).

    Args:
        config: a list in the notation of :data:`CONFIGS`.
        batch_norm: batch norm after every convolution (torchvision's ``vgg*_bn``).
    """

    def __init__(
        self,
        config: list[Layer],
        num_classes: int = 1000,
        in_chans: int = 3,
        batch_norm: bool = False,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, 4096
        layers: list[nn.Module] = []
        self.layer_names: dict[str, str] = {}  # "conv1_1" -> "0", as in the paper's and Caffe's naming
        block, position, width = 1, 1, in_chans
        for item in config:
            index = str(len(layers))
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                self.layer_names[f"pool{block}"] = index
                block, position = block + 1, 1
            elif item == "LRN":  # A-LRN: "the same LRN parameters as Krizhevsky et al."
                layers.append(LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0))
                self.layer_names[f"norm{block}"] = index
            else:
                out, kernel = item if isinstance(item, tuple) else (item, 3)
                layers.append(nn.Conv2d(width, out, kernel_size=kernel, padding=kernel // 2))
                self.layer_names[f"conv{block}_{position}"] = index
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out))
                    self.layer_names[f"bn{block}_{position}"] = str(len(layers) - 1)
                layers.append(nn.ReLU())
                self.layer_names[f"relu{block}_{position}"] = str(len(layers) - 1)
                position, width = position + 1, out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            uninitialized(nn.Linear, width * 7 * 7, 4096),  # (B, 25088) -> (B, 4096)
            nn.ReLU(),
            nn.Dropout(p=dropout),
            uninitialized(nn.Linear, 4096, 4096),
            nn.ReLU(),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        self.apply(_glorot_)

    def init_classifier(self, linear: nn.Linear) -> None:
        _glorot_(linear)


def _register(config: str, batch_norm: bool) -> None:
    suffix = "-bn" if batch_norm else ""
    name = f"vgg-{config.lower()}{suffix}"
    tv = TORCHVISION_NAMES.get(config)
    tv = f"{tv}_bn" if tv and batch_norm else tv
    depth = sum(1 for x in CONFIGS[config] if x not in ("M", "LRN")) + 3
    count = _count(CONFIGS[config], batch_norm)
    notes = "Glorot initialisation (the paper's footnote) instead of N(0, 10⁻²) + copying from A."
    if batch_norm:
        notes = "Not in the paper: batch norm after every convolution (torchvision's _bn). " + notes
    if config == "C":
        notes += " No torchvision counterpart."

    def builder(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
        model = VGG(CONFIGS[config], num_classes=num_classes, in_chans=in_chans, batch_norm=batch_norm, dropout=dropout)
        model.torchvision_compatible = tv is not None  # type: ignore[assignment]
        return model

    builder.__qualname__ = builder.__name__ = name.replace("-", "_")
    register_model(
        name,
        paper=PAPER,
        year=2014,
        input_size=(3, 224, 224),
        num_classes=1000,
        param_count=count,
        paper_params=f"{PAPER_PARAMS[config]} million" + (" (without BN)" if batch_norm else ""),
        description=f"VGG configuration {config} ({depth} weight layers){' with batch norm' if batch_norm else ''}",
        notes=notes,
        torchvision=tv,
        aliases=(tv,) if tv else (),
    )(builder)


def _count(config: list[Layer], batch_norm: bool, in_chans: int = 3, num_classes: int = 1000) -> int:
    """Exact trainable parameters of a configuration, from the table alone (the models are checked against it)."""
    total, width = 0, in_chans
    for item in config:
        if item in ("M", "LRN"):
            continue
        out, kernel = item if isinstance(item, tuple) else (item, 3)
        total += out * width * kernel * kernel + out + (2 * out if batch_norm else 0)
        width = out
    return total + (width * 49 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * num_classes + num_classes)


for _config in CONFIGS:
    _register(_config, batch_norm=False)
for _config in ("A", "B", "C", "D", "E"):
    _register(_config, batch_norm=True)
