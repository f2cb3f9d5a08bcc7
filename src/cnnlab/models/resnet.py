"""Residual networks (He, Zhang, Ren & Sun, "Deep residual learning for image recognition", 2015).

**ImageNet** (``resnet18`` .. ``resnet152``, table 1): a 7×7/2 convolution and 3×3/2 max pooling, four stages
of residual blocks (64, 128, 256, 512 wide; basic blocks for 18/34 layers, bottlenecks ×4 for 50+) that halve
the resolution from the second on, global average pooling and a 1000-way linear layer. Module names and
shapes are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ``fc``, ...), under ``features`` as the
contract asks (``features.layer1`` ...), so torchvision's state dicts load with one rule: prefix ``features.``
to the stages. Shortcuts are option B (projections where the shape changes, identity elsewhere), as
torchvision's. Bottlenecks put the stride on the 3×3 convolution by default (torchvision, "v1.5"); the paper
and its released models put it on the first 1×1: ``stride_on="1x1"`` (same parameters, different function;
torchvision's weights need the default).

**CIFAR-10** (``resnet20`` .. ``resnet1202``, section 4.2): a 3×3 convolution of 16 maps, three stages of n
basic blocks each (16, 32, 64 maps at 32, 16, 8 pixels; depth 6n + 2), global average pooling and a 10-way
linear layer; shortcuts are option A, identity with zero-padded extra channels, so there are no shortcut
parameters. Parameter counts: 0.27, 0.46, 0.66, 0.85, 1.7 and 19.4 million, table 6's figures.

Initialisation: He et al. 2015 ("Delving deep into rectifiers") normal weights, as both papers' training did
(fan-out for ImageNet as in torchvision; fan-in, the paper's equation, for CIFAR), batch norm γ = 1, β = 0.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.layers import BasicBlock, Bottleneck, GlobalAvgPool2d, ZeroPadShortcut, projection_shortcut
from cnnlab.models._contract import ClassifierModel
from cnnlab.models._registry import register_model

PAPER = "He, Zhang, Ren & Sun 2015, Deep residual learning for image recognition"

# Table 1: block type and blocks per stage.
IMAGENET: dict[int, tuple[type[nn.Module], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}
# Table 1's FLOPs (multiply-adds) ×10⁹, for the docs; the paper states no parameter counts for these.
IMAGENET_FLOPS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}
# MACs at 224×224 with the paper's stride placement (stride_on="1x1"), from cnnlab.inspect.summarize.
PAPER_STRIDE_MACS = {50: 3.86, 101: 7.57, 152: 11.28}
IMAGENET_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
# Section 4.2 / table 6: depth -> (n, the paper's parameter figure in millions).
CIFAR = {20: (3, 0.27), 32: (5, 0.46), 44: (7, 0.66), 56: (9, 0.85), 110: (18, 1.7), 1202: (200, 19.4)}
CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}


class ResNet(ClassifierModel):
    """ImageNet ResNet. Stages: conv1, bn1, relu, maxpool, layer1 .. layer4 (torchvision's names).

    Args:
        block: :class:`~cnnlab.layers.BasicBlock` or :class:`~cnnlab.layers.Bottleneck`.
        layers: blocks per stage.
        stride_on: for bottlenecks, ``"3x3"`` (torchvision) or ``"1x1"`` (the paper).
        zero_init_residual: start each block's last batch norm at γ = 0 (Goyal et al. 2017; not the paper's).
    """

    def __init__(
        self,
        block: type[nn.Module],
        layers: list[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        stride_on: str = "3x3",
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if stride_on not in ("1x1", "3x3"):
            raise ConfigError(f"stride_on must be '1x1' (the paper's) or '3x3' (torchvision's), got {stride_on!r}.")
        self.num_classes, self.in_chans, self.stride_on = num_classes, in_chans, stride_on
        self.torchvision_compatible = stride_on == "3x3"
        stages: OrderedDict[str, nn.Module] = OrderedDict(
            conv1=nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False),
            bn1=nn.BatchNorm2d(64),
            relu=nn.ReLU(),
            maxpool=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        width = 64
        for i, (channels, count) in enumerate(zip((64, 128, 256, 512), layers, strict=True), start=1):
            blocks = []
            for j in range(count):
                stride = 2 if (i > 1 and j == 0) else 1
                out = channels * block.expansion
                downsample = projection_shortcut(width, out, stride) if (stride != 1 or width != out) else None
                extra = {"stride_on": stride_on} if block is Bottleneck else {}
                blocks.append(block(width, channels, stride=stride, downsample=downsample, **extra))
                width = out
            stages[f"layer{i}"] = nn.Sequential(*blocks)
        self.features = nn.Sequential(stages)
        self.num_features = width
        self.avgpool = GlobalAvgPool2d()
        self.fc = nn.Linear(width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                last_bn = m.bn3 if isinstance(m, Bottleneck) else m.bn2 if isinstance(m, BasicBlock) else None
                if last_bn is not None:
                    nn.init.zeros_(last_bn.weight)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.avgpool(x)  # (B, C, H, W) -> (B, C)
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes, device=self.fc.weight.device)
        self.num_classes = num_classes


class CifarResNet(ClassifierModel):
    """CIFAR ResNet of depth 6n + 2. Stages: conv1, bn1, relu, layer1 .. layer3; option A shortcuts.

    Args:
        n: basic blocks per stage.
        shortcut: ``"A"`` (the paper's CIFAR choice: zero-padding identity), ``"B"`` (projections) or ``"none"``:
            the "plain" network of the paper's figure 6 (same layers, no shortcuts).
    """

    def __init__(self, n: int, num_classes: int = 10, in_chans: int = 3, shortcut: str = "A"):
        super().__init__()
        if shortcut not in ("A", "B", "none"):
            raise ConfigError(
                f"shortcut must be 'A' (zero-padding identity, the paper's), 'B' (projections) or 'none' (the plain "
                f"network), got {shortcut!r}."
            )
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, 64
        stages: OrderedDict[str, nn.Module] = OrderedDict(
            conv1=nn.Conv2d(in_chans, 16, kernel_size=3, padding=1, bias=False),
            bn1=nn.BatchNorm2d(16),
            relu=nn.ReLU(),
        )
        width = 16
        for i, channels in enumerate((16, 32, 64), start=1):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 1 and j == 0) else 1
                downsample = None
                if (stride != 1 or width != channels) and shortcut != "none":
                    shortcut_cls = ZeroPadShortcut if shortcut == "A" else projection_shortcut
                    downsample = shortcut_cls(width, channels, stride)
                blocks.append(
                    BasicBlock(width, channels, stride=stride, downsample=downsample, residual=shortcut != "none")
                )
                width = channels
            stages[f"layer{i}"] = nn.Sequential(*blocks)
        self.features = nn.Sequential(stages)
        self.avgpool = GlobalAvgPool2d()
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.avgpool(x)  # (B, 64, 8, 8) -> (B, 64)
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(64, num_classes, device=self.fc.weight.device)
        self.num_classes = num_classes


def _register_imagenet(depth: int) -> None:
    block, layers = IMAGENET[depth]
    name = f"resnet{depth}"

    def builder(
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        stride_on: str = "3x3",
        zero_init_residual: bool = False,
    ) -> ResNet:
        return ResNet(block, layers, num_classes, in_chans, stride_on=stride_on, zero_init_residual=zero_init_residual)

    builder.__qualname__ = builder.__name__ = name
    register_model(
        name,
        paper=PAPER,
        year=2015,
        input_size=(3, 224, 224),
        num_classes=1000,
        param_count=IMAGENET_PARAMS[depth],
        paper_params=f"not stated (states {IMAGENET_FLOPS[depth]}×10⁹ multiply-adds)",
        description=f"ResNet-{depth} for ImageNet ({block.__name__}s {layers}), torchvision-compatible",
        notes=(
            "Option B shortcuts everywhere (torchvision's; the paper's table 2 uses A for 18/34, table 3 compares)"
            + (
                f"; stride on the 3×3 convolution (torchvision's v1.5, which its weights need), which costs more "
                f"MACs than the paper's figure: stride_on='1x1' is the paper's and gives {PAPER_STRIDE_MACS[depth]} G."
                if block is Bottleneck
                else "; otherwise as in the paper."
            )
        ),
        torchvision=name,
    )(builder)


def _register_cifar(depth: int) -> None:
    n, paper_millions = CIFAR[depth]
    name = f"resnet{depth}"

    def builder(*, num_classes: int = 10, in_chans: int = 3, shortcut: str = "A") -> CifarResNet:
        return CifarResNet(n, num_classes, in_chans, shortcut=shortcut)

    builder.__qualname__ = builder.__name__ = name
    register_model(
        name,
        paper=PAPER + " (CIFAR-10, section 4.2)",
        year=2015,
        input_size=(3, 32, 32),
        num_classes=10,
        param_count=CIFAR_PARAMS[depth],
        paper_params=f"{paper_millions} million",
        description=f"ResNet-{depth} for CIFAR-10: 3 stages × {n} basic blocks, option A shortcuts",
        notes="As in the paper (He-normal fan-in initialisation, the paper's reference [13]). shortcut=none gives "
        "the plain network of figure 6 (same layers, no shortcuts).",
    )(builder)


for _depth in IMAGENET:
    _register_imagenet(_depth)
for _depth in CIFAR:
    _register_cifar(_depth)
