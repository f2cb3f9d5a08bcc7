"""A small network for comparing fractional max pooling (Graham 2014, "Fractional max-pooling") with 2×2 max
pooling on the same layers.

Graham's networks alternate 2×2 convolutions with FMP of ratio 1/√2 and grow the width by a constant each layer
("(160nC2 − FMP√2)₁₀ − C2 − C1 − output" for CIFAR-100). ``fmp-cnn`` is that pattern at a CPU-friendly size:
four blocks of a 3×3 convolution (32, 64, 96, 128 channels, ReLU) each followed by the pooling, then global
average pooling and the output layer. ``pooling="max"`` swaps every FMP for 2×2 max pooling and nothing else;
the global pooling keeps the parameter count identical, so the comparison is the pooling alone (FMP keeps
larger maps, so it costs more compute: 28 → 20 → 14 → 10 → 7 against 28 → 14 → 7 → 3 → 1 on MNIST).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.layers import FractionalMaxPool2d, GlobalAvgPool2d
from cnnlab.models._contract import ClassifierModel
from cnnlab.models._registry import register_model

WIDTHS = (32, 64, 96, 128)


class FractionalPoolingNet(ClassifierModel):
    """Stages ``block1`` .. ``block4`` (conv, relu, pool); head: global average pool and ``fc``."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_chans: int,
        pooling: str,
        output_ratio: float,
        overlapping: bool,
        pseudo_random: bool,
    ):
        super().__init__()
        if pooling not in ("fractional", "max"):
            raise ConfigError(f"pooling must be 'fractional' or 'max', got {pooling!r}.")
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, WIDTHS[-1]
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        width = in_chans
        for i, channels in enumerate(WIDTHS, start=1):
            pool = (
                FractionalMaxPool2d(output_ratio, overlapping=overlapping, pseudo_random=pseudo_random)
                if pooling == "fractional"
                else nn.MaxPool2d(2, ceil_mode=True)  # ceil: a 3×3 map still pools to 2×2, then 1×1
            )
            blocks[f"block{i}"] = nn.Sequential(
                OrderedDict(conv=nn.Conv2d(width, channels, 3, padding=1), relu=nn.ReLU(), pool=pool)
            )
            width = channels
        self.features = nn.Sequential(blocks)
        self.avgpool = GlobalAvgPool2d()
        self.fc = nn.Linear(width, num_classes)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.avgpool(x)  # (B, 128, h, w) -> (B, 128)
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes, device=self.fc.weight.device)
        self.num_classes = num_classes


@register_model(
    "fmp-cnn",
    paper="Graham 2014, Fractional max-pooling",
    year=2014,
    input_size=(1, 28, 28),
    num_classes=10,
    param_count=186_218,
    paper_params="not stated (our small network in the paper's pattern)",
    description="Four conv blocks (32-64-96-128) with fractional max pooling (ratio 1/√2) or 2×2 max pooling",
    notes="pooling: fractional (default) or max; output_ratio (1/√2), overlapping (True), pseudo_random (True). "
    "Test-time averaging over pooling draws: cnnlab.layers.average_over_pooling_draws.",
)
def fmp_cnn(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    pooling: str = "fractional",
    output_ratio: float = 2**-0.5,
    overlapping: bool = True,
    pseudo_random: bool = True,
) -> FractionalPoolingNet:
    return FractionalPoolingNet(
        num_classes=num_classes,
        in_chans=in_chans,
        pooling=pooling,
        output_ratio=output_ratio,
        overlapping=overlapping,
        pseudo_random=pseudo_random,
    )
