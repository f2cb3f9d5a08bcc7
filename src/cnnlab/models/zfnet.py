"""ZFNet (Zeiler & Fergus, "Visualizing and understanding convolutional networks", 2013; figure 3).

    input 3×224×224
    layer 1  96@7×7 /2, pad 1 -> 96×110×110, ReLU, max pool 3/2 -> 55×55, contrast norm     14,208 params
    layer 2 256@5×5 /2        -> 256×26×26, ReLU, max pool 3/2 -> 13×13, contrast norm     614,656
    layer 3 384@3×3, pad 1    -> 384×13×13, ReLU                                          885,120
    layer 4 384@3×3, pad 1    -> 384×13×13, ReLU                                        1,327,488
    layer 5 256@3×3, pad 1    -> 256×13×13, ReLU, max pool 3/2 -> 256×6×6                884,992
    fc6 4096, ReLU, dropout 0.5                                                      37,752,832
    fc7 4096, ReLU, dropout 0.5                                                      16,781,312
    fc8 1000                                                                          4,097,000
                                                                                     62,357,608

The changes from AlexNet that section 5 makes after looking inside it: a 7×7 stride-2 first layer (not
11×11 stride 4, which left dead and aliased filters), a stride-2 second layer, and dense connections in
layers 3–5 (one GPU). Figure 3 gives the map sizes but not the padding or rounding; 1 pixel of padding on
layer 1 and Caffe's round-up ("ceil") pooling are what reproduce 110, 55, 26, 13 and 6 exactly. The paper's
"contrast normalization across feature maps" is AlexNet's response normalisation, with AlexNet's constants
(it states none). Initialisation (section 3): weights 1e-2, biases 0.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnlab.layers import ConstraintActivity, LocalResponseNorm, clip_row_norms_
from cnnlab.models._common import FullyConnectedHeadModel, normal_init_
from cnnlab.models._registry import register_model
from cnnlab.models.alexnet import alexnet_classifier

PAPER = "Zeiler & Fergus 2013, Visualizing and understanding convolutional networks"

# (name, out channels, kernel, stride, padding, pooled and normalised after?)
CONVS = [
    ("conv1", 96, 7, 2, 1, True),
    ("conv2", 256, 5, 2, 0, True),
    ("conv3", 384, 3, 1, 1, False),
    ("conv4", 384, 3, 1, 1, False),
    ("conv5", 256, 3, 1, 1, False),
]


class ZFNet(FullyConnectedHeadModel):
    """ZFNet as in figure 3. Stages: conv1, relu1, pool1, norm1, conv2, ..., conv5, relu5, pool5.

    Head: ``classifier`` = fc6, relu6, drop6, fc7, relu7, drop7, fc8.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5):
        super().__init__()
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, 4096
        self.constraint_activity = ConstraintActivity()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = in_chans
        for name, out, kernel, stride, padding, pooled in CONVS:
            i = name[-1]
            layers[name] = nn.Conv2d(width, out, kernel, stride=stride, padding=padding)
            layers[f"relu{i}"] = nn.ReLU()
            if pooled:  # figure 3: "3×3 max pool, stride 2", then "contrast norm."
                layers[f"pool{i}"] = nn.MaxPool2d(3, stride=2, ceil_mode=True)
                layers[f"norm{i}"] = LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)
            width = out
        layers["pool5"] = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.features = nn.Sequential(layers)
        self.classifier = alexnet_classifier(num_classes, dropout)
        self.apply(normal_init_)

    def init_classifier(self, linear: nn.Linear) -> None:
        normal_init_(linear)

    has_weight_constraints = True

    def apply_weight_constraints_(self) -> None:
        self.renormalize_filters_()

    @torch.no_grad()
    def renormalize_filters_(self, radius: float = 0.1) -> None:
        """Section 3: "renormalize each filter in the convolutional layers whose RMS value exceeds a fixed radius
        of 10⁻¹ to this fixed radius". The trainer calls it after each optimiser step (apply_weight_constraints_).
        """
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                w = module.weight  # (out, in, k, k): one filter per output map
                # RMS = norm / √(in·k·k), so RMS ≤ radius is the norm ball of radius·√(in·k·k)
                clip_row_norms_(w, radius * w[0].numel() ** 0.5, self.constraint_activity)


@register_model(
    "zfnet",
    paper=PAPER,
    year=2013,
    input_size=(3, 224, 224),
    num_classes=1000,
    param_count=62_357_608,
    paper_params="not stated",
    fixed_input_size=True,
    description="ZFNet: AlexNet with a 7×7 stride-2 first layer, stride-2 layer 2 and dense layers 3–5",
    notes=(
        "Padding/rounding chosen to reproduce figure 3's map sizes; LRN constants are AlexNet's (the paper gives "
        "none); the trainer renormalises filter RMS to 0.1 after every step (--no-weight-constraints: off)."
    ),
)
def zfnet(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> ZFNet:
    return ZFNet(num_classes=num_classes, in_chans=in_chans, dropout=dropout)
