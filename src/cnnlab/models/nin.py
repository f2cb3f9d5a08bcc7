"""Network In Network (Lin, Chen & Yan, "Network in network", 2013).

Each stage is an *mlpconv* layer (a k×k convolution followed by two 1×1 convolutions, all with ReLU: a small
MLP slid over the image), and the classifier is *global average pooling* of one final map per class, with
no fully connected layer.

``nin-cifar`` (section 4.2, CIFAR-10): "three stacked mlpconv layers", each of the first two followed by max
pooling that halves the resolution and by dropout 0.5 ("dropout is applied on the outputs of all but the
last mlpconv layers"); the third ends in 10 maps, averaged globally. The paper gives no layer widths; they
are the authors' released Caffe model (192-160-96, 192-192-192, 192-192-10, 5×5/5×5/3×3 kernels):

    input 3×32×32
    mlpconv1 5×5 pad 2: 192, 160, 96  -> 96×32×32, max pool 3/2 -> 16×16, dropout     60,928 params
    mlpconv2 5×5 pad 2: 192, 192, 192 -> 192×16×16, max pool 3/2 -> 8×8, dropout     535,104
    mlpconv3 3×3 pad 1: 192, 192, 10  -> 10×8×8, global average -> 10               370,954
             (its last 1×1 layer, the class maps, is the model's ``classifier``)
                                                                                    966,986

The released model's second pooling is an average pooling; we follow the paper's text (max pooling).

``nin`` (ImageNet) is not in the paper: it is the authors' released ImageNet model (Caffe model zoo, "NIN
ImageNet"), four mlpconv layers 96-256-384-1024 wide with 11×11/4, 5×5, 3×3, 3×3 kernels and dropout before
the last one, about 7.6 million parameters. Pooling rounds up (Caffe), as the released models do.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnlab.layers import GlobalAvgPool2d, MLPConv
from cnnlab.models._contract import ClassifierModel
from cnnlab.models._registry import register_model

PAPER = "Lin, Chen & Yan 2013, Network in network"

# (channels of the three layers, kernel, stride, padding, pooling after, dropout after)
CIFAR = [
    ((192, 160, 96), 5, 1, 2, "max", True),
    ((192, 192, 192), 5, 1, 2, "max", True),
    ((192, 192, None), 3, 1, 1, None, False),  # None: num_classes maps
]
IMAGENET = [
    ((96, 96, 96), 11, 4, 0, "max", False),
    ((256, 256, 256), 5, 1, 2, "max", False),
    ((384, 384, 384), 3, 1, 1, "max", True),
    ((1024, 1024, None), 3, 1, 1, None, False),
]


class NIN(ClassifierModel):
    """Network In Network. Stages: mlpconv1, pool1, (drop1,) ..., mlpconvN without its last layer.

    The last mlpconv layer's final 1×1 convolution, the one that makes a map per class, is the head
    (``classifier``: conv, relu, then global average pooling), so ``reset_classifier`` replaces it and
    ``forward_features`` ends at the layer before. ``pre_logits`` is the global average of those features
    (``num_features`` = that layer's width): NIN has no vector between the pooling and the scores.
    """

    def __init__(self, table: list, num_classes: int, in_chans: int, dropout: float = 0.5):
        super().__init__()
        self.num_classes, self.in_chans = num_classes, in_chans
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = in_chans
        for i, (channels, kernel, stride, padding, pool, drop) in enumerate(table, start=1):
            last = i == len(table)
            widths = [c for c in channels if c is not None]  # the last layer's None (class maps) is the head
            layers[f"mlpconv{i}"] = MLPConv(width, widths, kernel, stride=stride, padding=padding)
            if pool == "max":
                layers[f"pool{i}"] = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            if drop and not last:
                layers[f"drop{i}"] = nn.Dropout(dropout)
            width = widths[-1]
        self.features = nn.Sequential(layers)
        self.num_features = width
        self.classifier = self._make_classifier(num_classes)
        # Initialisation: torch's defaults. The released models use hand-tuned Gaussian scales per layer
        # (e.g. std 0.05 for CIFAR); the paper states none.

    def _make_classifier(self, num_classes: int) -> nn.Sequential:
        device = next(self.features.parameters()).device
        return nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(self.num_features, num_classes, 1, device=device),  # one map per class
                relu=nn.ReLU(),
                pool=GlobalAvgPool2d(),  # (B, num_classes, H, W) -> (B, num_classes)
            )
        )

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x.mean((2, 3)) if pre_logits else self.classifier(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = self._make_classifier(num_classes)
        self.num_classes = num_classes


@register_model(
    "nin-cifar",
    paper=PAPER,
    year=2013,
    input_size=(3, 32, 32),
    num_classes=10,
    param_count=966_986,
    paper_params="not stated",
    description="NIN for CIFAR-10: three mlpconv layers, global average pooling",
    notes="Widths from the authors' released Caffe model (the paper gives none); max pooling throughout, per the text.",
)
def nin_cifar(*, num_classes: int = 10, in_chans: int = 3, dropout: float = 0.5) -> NIN:
    return NIN(CIFAR, num_classes=num_classes, in_chans=in_chans, dropout=dropout)


@register_model(
    "nin",
    paper=PAPER + " (ImageNet model: the authors' release)",
    year=2013,
    input_size=(3, 224, 224),
    num_classes=1000,
    param_count=7_595_176,
    paper_params="not in the paper",
    description="NIN for ImageNet: four mlpconv layers (96-256-384-1024), global average pooling",
    notes="Not in the paper (no ImageNet experiments there): the authors' released Caffe ImageNet model.",
)
def nin(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> NIN:
    return NIN(IMAGENET, num_classes=num_classes, in_chans=in_chans, dropout=dropout)
