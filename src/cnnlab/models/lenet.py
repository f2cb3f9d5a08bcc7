"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document recognition", 1998).

``lenet5`` follows the paper layer for layer; ``lenet5-modern`` is what people train today.

    input 1×32×32
    C1  conv 6@5×5            -> 6×28×28     156 params
    S2  subsample 2×2 (+gain) -> 6×14×14      12
    C3  conv 16@5×5, table    -> 16×10×10  1,516
    S4  subsample 2×2 (+gain) -> 16×5×5       32
    C5  conv 120@5×5          -> 120×1×1  48,120
    F6  full 84                             10,164
    out Euclidean RBF 10 (fixed ±1 7×12 codes: 840 fixed parameters)
                                           60,000 trainable

Every layer up to F6 is followed by the squashing function 1.7159·tanh(2a/3).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.layers import ConnectionTableConv2d, EuclideanRBF, ScaledTanh, TrainableSubsampling, glyph_codes
from cnnlab.models._contract import ClassifierModel
from cnnlab.models._registry import register_model

PAPER = "LeCun et al. 1998, Gradient-based learning applied to document recognition"


def lenet_c3_table() -> list[list[int]]:
    """The S2→C3 connection table (Table I of the paper), as the S2 maps each C3 map reads.

    The paper's rule: C3 maps 0–5 take every contiguous run of three S2 maps, 6–11 every contiguous run of
    four, 12–14 the discontinuous subsets {0,1,3,4}, {1,2,4,5}, {0,2,3,5}, and map 15 takes all six.
    """
    threes = [[(j + k) % 6 for k in range(3)] for j in range(6)]
    fours = [[(j + k) % 6 for k in range(4)] for j in range(6)]
    return threes + fours + [[0, 1, 3, 4], [1, 2, 4, 5], [0, 2, 3, 5], list(range(6))]


# Trainable parameters per layer as stated in the paper (section II.B), for tests, docs and `cnnlab summary`.
PAPER_PARAMS = {"c1": 156, "s2": 12, "c3": 1_516, "s4": 32, "c5": 48_120, "f6": 10_164}


def _lecun_uniform_(module: nn.Module) -> None:
    """The paper's initialisation (appendix C): every weight uniform in ±2.4/F, F the unit's fan-in."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        fan_in = module.weight[0].numel()
        for p in (module.weight, module.bias):
            nn.init.uniform_(p, -2.4 / fan_in, 2.4 / fan_in)
    elif isinstance(module, ConnectionTableConv2d):
        with torch.no_grad():  # each C3 map has its own fan-in (3, 4 or 6 maps × 25 taps)
            fan_in = module.fan_in_per_connection().to(module.weight.device)
            module.weight.uniform_(-1, 1).mul_((2.4 / fan_in).view(-1, 1, 1))
            module.bias.uniform_(-1, 1).mul_(2.4 / fan_in.min())  # bias: the smallest fan-in, so none dominates
    elif isinstance(module, TrainableSubsampling):
        fan_in = module.kernel_size**2
        for p in (module.weight, module.bias):
            nn.init.uniform_(p, -2.4 / fan_in, 2.4 / fan_in)


class LeNet5(ClassifierModel):
    """LeNet-5 as in the 1998 paper; ``head="softmax"`` swaps the RBF output for a linear layer + softmax.

    Stages: c1, s2, c3, s4, c5 (``features``); head: f6, output. ``forward`` returns logits: for the RBF head
    these are the negated squared distances to the class codes.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, head: str = "rbf"):
        super().__init__()
        if head not in ("rbf", "softmax"):
            raise ConfigError(f"LeNet-5 head must be 'rbf' (the paper's) or 'softmax', got {head!r}.")
        self.num_classes, self.in_chans, self.head, self.num_features = num_classes, in_chans, head, 84
        self.features = nn.Sequential(
            OrderedDict(
                c1=nn.Sequential(OrderedDict(conv=nn.Conv2d(in_chans, 6, 5), act=ScaledTanh())),
                s2=nn.Sequential(OrderedDict(pool=TrainableSubsampling(6), act=ScaledTanh())),
                c3=nn.Sequential(OrderedDict(conv=ConnectionTableConv2d(6, lenet_c3_table(), 5), act=ScaledTanh())),
                s4=nn.Sequential(OrderedDict(pool=TrainableSubsampling(16), act=ScaledTanh())),
                c5=nn.Sequential(OrderedDict(conv=nn.Conv2d(16, 120, 5), act=ScaledTanh())),
            )
        )
        self.f6 = nn.Sequential(OrderedDict(fc=nn.Linear(120, 84), act=ScaledTanh()))
        self.apply(_lecun_uniform_)
        self.output: nn.Module = self._make_output(num_classes)

    def _make_output(self, num_classes: int) -> nn.Module:
        device = self.f6.fc.weight.device
        if self.head == "rbf":
            return EuclideanRBF(glyph_codes(num_classes).to(device))
        linear = nn.Linear(self.num_features, num_classes, device=device)
        _lecun_uniform_(linear)
        return linear

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.f6(torch.flatten(x, 1))  # (B, 120, 1, 1) -> (B, 84)
        if pre_logits:
            return x
        return -self.output(x) if self.head == "rbf" else self.output(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.output = self._make_output(num_classes)


class LeNet5Modern(ClassifierModel):
    """LeNet-5 as trained today: ReLU, 2×2 max pooling, a dense C3, a linear + softmax output, torch's init."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1):
        super().__init__()
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, 84
        self.features = nn.Sequential(
            OrderedDict(
                c1=nn.Sequential(OrderedDict(conv=nn.Conv2d(in_chans, 6, 5), act=nn.ReLU())),
                s2=nn.MaxPool2d(2),
                c3=nn.Sequential(OrderedDict(conv=nn.Conv2d(6, 16, 5), act=nn.ReLU())),
                s4=nn.MaxPool2d(2),
                c5=nn.Sequential(OrderedDict(conv=nn.Conv2d(16, 120, 5), act=nn.ReLU())),
            )
        )
        self.f6 = nn.Sequential(OrderedDict(fc=nn.Linear(120, 84), act=nn.ReLU()))
        self.output = nn.Linear(84, num_classes)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.f6(torch.flatten(x, 1))  # (B, 120, 1, 1) -> (B, 84)
        return x if pre_logits else self.output(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.output = nn.Linear(self.num_features, num_classes, device=self.output.weight.device)


@register_model(
    "lenet5",
    paper=PAPER,
    year=1998,
    input_size=(1, 32, 32),
    param_count=sum(PAPER_PARAMS.values()),
    paper_params="60,000 (section II.B, layer by layer)",
    fixed_input_size=True,
    description="LeNet-5 as published: scaled tanh, trainable subsampling, C3 connection table, RBF output",
    notes="As in the paper; the RBF output's 840 fixed ±1 code entries are buffers, not trainable.",
)
def lenet5(*, num_classes: int = 10, in_chans: int = 1, head: str = "rbf") -> LeNet5:
    return LeNet5(num_classes=num_classes, in_chans=in_chans, head=head)


@register_model(
    "lenet5-modern",
    paper=PAPER,
    year=1998,
    input_size=(1, 32, 32),
    param_count=61_706,
    paper_params="— (not the paper's model)",
    fixed_input_size=True,
    description="LeNet-5 as trained today: ReLU, max pooling, dense C3, softmax",
    notes="Deliberately not the paper's: ReLU, max pooling, a dense C3, a linear + softmax output.",
)
def lenet5_modern(*, num_classes: int = 10, in_chans: int = 1) -> LeNet5Modern:
    return LeNet5Modern(num_classes=num_classes, in_chans=in_chans)
