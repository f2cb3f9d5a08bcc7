"""OverFeat (Sermanet, Eigen, Zhang, Mathieu, Fergus & LeCun, "OverFeat: integrated recognition, localization
and detection using convolutional networks", 2013).

Tables 1 (fast) and 3 (accurate) of the paper, as data: no contrast normalisation, non-overlapping pooling,
ReLU everywhere, dropout 0.5 on the outputs of the first two fully connected layers.

``overfeat-fast``, input 3×231×231 (spatial sizes as the arithmetic gives them):

    conv1  96@11×11/4          -> 56×56, max pool 2/2 -> 28×28          34,944 params
    conv2 256@5×5              -> 24×24, max pool 2/2 -> 12×12         614,656
    conv3 512@3×3, pad 1       -> 12×12                              1,180,160
    conv4 1024@3×3, pad 1      -> 12×12                              4,719,616
    conv5 1024@3×3, pad 1      -> 12×12, max pool 2/2 -> 6×6         9,438,208
    fc6 3072 (a 6×6 convolution), fc7 4096, fc8 1000                 129,933,288
                                                                     145,920,872   (paper: 145 million)

``overfeat-accurate``, input 3×221×221:

    conv1  96@7×7/2 -> 108×108, max pool 3/3 -> 36×36; conv2 256@7×7 -> 30×30, max pool 2/2 -> 15×15;
    conv3 512, conv4 512, conv5 1024, conv6 1024 (3×3, pad 1) -> 15×15, max pool 3/3 -> 5×5;
    fc7 4096 (a 5×5 convolution), fc8 4096, fc9 1000                 144,656,488   (paper: 144 million)

The fully connected layers are convolutions (section 3.5: "at test time, these layers are effectively
replaced by convolution operations with kernels of 1×1 spatial extent"), so the same weights run on larger
images: ``forward_dense(x)`` returns the (B, classes, h, w) map of class scores, one per 32-pixel (fast) or
36-pixel (accurate) step of the input window. ``forward`` returns logits: at the training size the map is
1×1; on larger inputs it takes each class's spatial maximum, step (a) of the paper's classification
(section 3.3). ``forward_dense(x, offset_pooling=True)`` adds the finer-grained "offset max pooling" of
section 3.3 (figure 3): scores every 32/2 = 16 (fast) or 36/3 = 12 (accurate) input pixels.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnlab.errors import InputSizeError
from cnnlab.models._common import normal_init_, uninitialized
from cnnlab.models._contract import ClassifierModel
from cnnlab.models._registry import register_model

PAPER = "Sermanet et al. 2013, OverFeat: integrated recognition, localization and detection using convnets"

# (out channels, kernel, stride, padding, pooling (size = stride) or None) per convolutional layer.
FAST = [(96, 11, 4, 0, 2), (256, 5, 1, 0, 2), (512, 3, 1, 1, None), (1024, 3, 1, 1, None), (1024, 3, 1, 1, 2)]
ACCURATE = [
    (96, 7, 2, 0, 3),
    (256, 7, 1, 0, 2),
    (512, 3, 1, 1, None),
    (512, 3, 1, 1, None),
    (1024, 3, 1, 1, None),
    (1024, 3, 1, 1, 3),
]
# (widths of the hidden fully connected layers, spatial size of the last feature map at the training size)
FAST_HEAD = ([3072, 4096], 6)
ACCURATE_HEAD = ([4096, 4096], 5)


class OverFeat(ClassifierModel):
    """OverFeat. Stages: conv1, relu1, pool1, ..., (the last pool). Head: ``classifier``, convolutions only."""

    def __init__(
        self, convs: list[tuple], head: tuple[list[int], int], num_classes: int, in_chans: int, dropout: float = 0.5
    ):
        super().__init__()
        self.num_classes, self.in_chans = num_classes, in_chans
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = in_chans
        for i, (out, kernel, stride, padding, pool) in enumerate(convs, start=1):
            layers[f"conv{i}"] = nn.Conv2d(width, out, kernel, stride=stride, padding=padding)
            layers[f"relu{i}"] = nn.ReLU()
            if pool:
                layers[f"pool{i}"] = nn.MaxPool2d(pool, stride=pool)
            width = out
        self.features = nn.Sequential(layers)
        hidden, kernel = head
        first = len(convs) + 1
        fc: OrderedDict[str, nn.Module] = OrderedDict()
        for j, units in enumerate(hidden):
            i = first + j
            fc[f"fc{i}"] = uninitialized(nn.Conv2d, width, units, kernel if j == 0 else 1)  # FC, as a convolution
            fc[f"relu{i}"] = nn.ReLU()
            fc[f"drop{i}"] = nn.Dropout(dropout)
            width = units
        fc[f"fc{first + len(hidden)}"] = nn.Conv2d(width, num_classes, 1)
        self.classifier = nn.Sequential(fc)
        self.num_features = width
        self.apply(normal_init_)  # section 4.1: weights from N(0, 1e-2²)

    def forward_dense(self, x: torch.Tensor, offset_pooling: bool = False) -> torch.Tensor:
        """Class scores at every window position: (B, C, H, W) -> (B, num_classes, h, w).

        ``offset_pooling``: section 3.3's finer grid (figure 3). The last max pooling (k×k, stride k) runs at
        each of the k² offsets (Δy, Δx) ∈ {0..k−1}² of its input, the classifier on each, and the k² maps are
        interleaved, so that scores come every 32/k (fast) or 36/k (accurate) input pixels instead of every 32 or
        36: (B, C, H, W) -> (B, num_classes, k·h', k·w'), where h', w' are the smallest of the offsets' map sizes
        and out[..., i·k + Δy, j·k + Δx] is offset (Δy, Δx)'s score at (i, j).
        """
        if not offset_pooling:
            return self.classifier(self.forward_features(x))
        last_pool = self.features[-1]  # the final k×k, stride-k max pooling
        k = last_pool.kernel_size
        maps = self.features[:-1](x)  # (B, C', H', W') before that pooling
        window = self.classifier[0].kernel_size[0]  # the first FC layer's extent, in pooled pixels
        if min((side - (k - 1)) // k for side in maps.shape[2:]) < window:
            raise InputSizeError(
                f"Offset max pooling shifts the last pooling by up to {k - 1} pixel(s), so it needs an input at "
                "least one score step (32 px fast, 36 px accurate) larger than the model's window; "
                f"{tuple(x.shape[2:])} is too small. Use a larger image, or offset_pooling=False."
            )
        scores = [[self.classifier(last_pool(maps[:, :, dy:, dx:])) for dx in range(k)] for dy in range(k)]
        h = min(s.shape[2] for row in scores for s in row)
        w = min(s.shape[3] for row in scores for s in row)
        # (B, K, h, k_y, w, k_x) -> (B, K, h·k, w·k): row i·k + Δy, column j·k + Δx
        grid = torch.stack([torch.stack([s[:, :, :h, :w] for s in row], dim=-1) for row in scores], dim=3)
        return grid.reshape(x.shape[0], -1, h * k, w * k)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        for layer in list(self.classifier)[:-1]:
            x = layer(x)  # (B, 1024, 6, 6) -> (B, 4096, h, w)
        if not pre_logits:
            x = self.classifier[-1](x)
        return x.amax((2, 3))  # spatial maximum per class (1×1 at the training size): (B, K, h, w) -> (B, K)

    def reset_classifier(self, num_classes: int) -> None:
        name = list(self.classifier._modules)[-1]
        old = self.classifier[-1]
        new = nn.Conv2d(old.in_channels, num_classes, 1, device=old.weight.device)
        normal_init_(new)
        setattr(self.classifier, name, new)
        self.num_classes = num_classes


@register_model(
    "overfeat-fast",
    paper=PAPER,
    year=2013,
    input_size=(3, 231, 231),
    num_classes=1000,
    param_count=145_920_872,
    paper_params="145 million",
    description="OverFeat fast model (table 1): 5 conv layers, FC as convolutions, dense class-score maps",
    notes="Logits on larger inputs are the spatial max (section 3.3 step a); offset max pooling in forward_dense.",
)
def overfeat_fast(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> OverFeat:
    return OverFeat(FAST, FAST_HEAD, num_classes, in_chans, dropout)


@register_model(
    "overfeat-accurate",
    paper=PAPER,
    year=2013,
    input_size=(3, 221, 221),
    num_classes=1000,
    param_count=144_656_488,
    paper_params="144 million",
    description="OverFeat accurate model (table 3): 6 conv layers, FC as convolutions, dense class-score maps",
    notes="Logits on larger inputs are the spatial max (section 3.3 step a); offset max pooling in forward_dense.",
)
def overfeat_accurate(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> OverFeat:
    return OverFeat(ACCURATE, ACCURATE_HEAD, num_classes, in_chans, dropout)
