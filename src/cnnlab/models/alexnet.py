"""AlexNet (Krizhevsky, Sutskever & Hinton, "ImageNet classification with deep convolutional neural networks", 2012).

``alexnet`` follows the paper (section 3 and figure 2):

    input 3×224×224 (see below)
    conv1  96@11×11 /4, pad 2 -> 96×55×55, ReLU, LRN, max pool 3/2 -> 96×27×27       34,944 params
    conv2 256@5×5, pad 2, 2 groups -> 256×27×27, ReLU, LRN, max pool 3/2 -> 13×13   307,456
    conv3 384@3×3, pad 1 (dense: both GPUs talk) -> 384×13×13, ReLU                885,120
    conv4 384@3×3, pad 1, 2 groups -> 384×13×13, ReLU                              663,936
    conv5 256@3×3, pad 1, 2 groups -> 256×13×13, ReLU, max pool 3/2 -> 256×6×6     442,624
    fc6 4096, ReLU, dropout 0.5                                                 37,752,832
    fc7 4096, ReLU, dropout 0.5                                                 16,781,312
    fc8 1000                                                                     4,097,000
                                                                                60,965,224  ("60 million")

**Input size.** The paper says 224×224×3, but an 11×11 stride-4 convolution on 224 pixels gives 54.25, not
the 55×55 of figure 2; 227 pixels, or 224 with 2 pixels of zero padding, give exactly 55. We take 224 with
padding 2, as torchvision does, so both AlexNets here take the same crops; every later size is the paper's.

The two-GPU split is kept where it changes the computation: conv2, conv4 and conv5 see only the half of the
previous layer's maps on their GPU (``groups=2``); conv1 (both halves see the image), conv3 and the fully
connected layers are dense. The dropout sits on the outputs of fc6 and fc7 (the paper's "first two fully
connected layers"); torch's inverted dropout scales by 2 in training instead of by 0.5 at test time, which
gives the same expected activities.

``alexnet-tv`` is torchvision's variant (64-192-384-256-256 kernels, no LRN, no groups, an adaptive 6×6
average pool, dropout before fc6/fc7), following Krizhevsky's 2014 "One weird trick" single-column network;
its module names are torchvision's, so torchvision's state dict and ImageNet weights load as they are.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from cnnlab.layers import LocalResponseNorm
from cnnlab.models._common import FullyConnectedHeadModel, normal_init_, uninitialized
from cnnlab.models._registry import register_model

PAPER = "Krizhevsky, Sutskever & Hinton 2012, ImageNet classification with deep convolutional neural networks"

# (name, out channels, kernel, stride, padding, groups, initial bias): the paper's five convolutions.
# Biases are 1 in conv2, conv4, conv5 (and fc6, fc7) "to accelerate the early stages of learning by providing the
# ReLUs with positive inputs", 0 elsewhere (section 5).
CONVS = [
    ("conv1", 96, 11, 4, 2, 1, 0.0),
    ("conv2", 256, 5, 1, 2, 2, 1.0),
    ("conv3", 384, 3, 1, 1, 1, 0.0),
    ("conv4", 384, 3, 1, 1, 2, 1.0),
    ("conv5", 256, 3, 1, 1, 2, 1.0),
]
NORMALIZED = {"conv1", "conv2"}  # "Response-normalization layers follow the first and second convolutional layers"
POOLED = {"conv1", "conv2", "conv5"}  # max pooling follows both normalisations and conv5


def alexnet_classifier(num_classes: int, dropout: float) -> nn.Sequential:
    """FC6–FC8 of the 2012 paper (section 3.5; ZF Net keeps them): 9216 -> 4096 -> 4096 -> classes, ReLU and dropout."""
    return nn.Sequential(
        OrderedDict(
            fc6=uninitialized(nn.Linear, 256 * 6 * 6, 4096),  # (B, 9216) -> (B, 4096)
            relu6=nn.ReLU(),
            drop6=nn.Dropout(dropout),
            fc7=uninitialized(nn.Linear, 4096, 4096),
            relu7=nn.ReLU(),
            drop7=nn.Dropout(dropout),
            fc8=nn.Linear(4096, num_classes),
        )
    )


class AlexNet(FullyConnectedHeadModel):
    """AlexNet as in the 2012 paper. Stages (``features``), Caffe's names: conv1, relu1, norm1, pool1, ..., pool5.

    Head: ``classifier`` = fc6, relu6, drop6, fc7, relu7, drop7, fc8. Initialisation (section 5): weights
    N(0, 0.01²); biases 1 in conv2, conv4, conv5, fc6, fc7 and 0 in conv1, conv3 and fc8.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5):
        super().__init__()
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, 4096
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = in_chans
        for name, out, kernel, stride, padding, groups, bias in CONVS:
            i = name[-1]
            layers[name] = conv = nn.Conv2d(width, out, kernel, stride=stride, padding=padding, groups=groups)
            normal_init_(conv, 0.01, bias)
            layers[f"relu{i}"] = nn.ReLU()
            if name in NORMALIZED:  # the paper's k = 2, n = 5, α = 1e-4, β = 0.75, after the ReLU
                layers[f"norm{i}"] = LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)
            if name in POOLED:  # overlapping pooling: z = 3, s = 2 (section 3.4)
                layers[f"pool{i}"] = nn.MaxPool2d(3, stride=2)
            width = out
        self.features = nn.Sequential(layers)
        self.classifier = alexnet_classifier(num_classes, dropout)
        for fc, bias in ((self.classifier.fc6, 1.0), (self.classifier.fc7, 1.0), (self.classifier.fc8, 0.0)):
            normal_init_(fc, 0.01, bias)

    def init_classifier(self, linear: nn.Linear) -> None:
        normal_init_(linear, 0.01, 0.0)


class AlexNetTorchvision(FullyConnectedHeadModel):
    """torchvision's AlexNet, module for module (``features.0`` .. ``features.12``, ``classifier.0`` .. ``.6``).

    The only change: its ReLUs are not in-place, so hooks see their inputs. Initialisation: torch's defaults,
    as in torchvision.
    """

    torchvision_compatible = True

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5):
        super().__init__()
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, 4096
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, num_classes),
        )


@register_model(
    "alexnet",
    paper=PAPER,
    year=2012,
    input_size=(3, 224, 224),
    num_classes=1000,
    param_count=60_965_224,
    paper_params="60 million",
    fixed_input_size=True,
    description="AlexNet as published: 96-256-384-384-256 kernels, two-GPU groups, LRN, overlapping pooling",
    notes=(
        "224×224 input with 2 px padding on conv1 (the paper's 224 needs 227 or padding to give its 55×55). "
        "conv2/4/5 in 2 groups (the two GPUs). Biases 1 in conv2/4/5, fc6, fc7 and 0 in fc8 (the paper says "
        "the 'hidden' fully connected layers). Inverted dropout (same expectation as the paper's ×0.5 at test)."
    ),
)
def alexnet(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> AlexNet:
    return AlexNet(num_classes=num_classes, in_chans=in_chans, dropout=dropout)


@register_model(
    "alexnet-tv",
    paper="Krizhevsky 2014, One weird trick for parallelizing convolutional neural networks (torchvision's AlexNet)",
    year=2014,
    input_size=(3, 224, 224),
    num_classes=1000,
    param_count=61_100_840,
    paper_params="61,100,840 (torchvision)",
    description="torchvision's AlexNet: 64-192-384-256-256 kernels, no LRN; loads torchvision's weights",
    notes="Module names and shapes are torchvision's; ReLUs not in-place. Takes any input ≥ 63 px (adaptive pool).",
    torchvision="alexnet",
)
def alexnet_tv(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> AlexNetTorchvision:
    return AlexNetTorchvision(num_classes=num_classes, in_chans=in_chans, dropout=dropout)
