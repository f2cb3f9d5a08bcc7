"""GoogLeNet (Szegedy et al., "Going deeper with convolutions", 2014): Inception v1.

``googlenet`` follows the paper: table 1 for the layers, figure 3 for the order (local response normalisation
after the first pooling and after the 3×3 convolution), section 5 for the two auxiliary classifiers. Nine
inception modules, each with 1×1 reductions before real 5×5 convolutions; convolutions with biases and
ReLU, no batch norm (it came later). Pooling rounds up (Caffe's, which the released model uses); the final
7×7 average pool is an adaptive one (identical at 224×224, and lets other sizes through).

    input 3×224×224
    conv1 7×7/2 -> 64×112×112, max pool 3/2 -> 56×56, LRN
    conv2 1×1 64, conv3 3×3 192 -> 192×56×56, LRN, max pool 3/2 -> 28×28
    inception 3a, 3b -> 480×28×28, max pool 3/2 -> 14×14
    inception 4a (→ aux1), 4b, 4c, 4d (→ aux2), 4e -> 832×14×14, max pool 3/2 -> 7×7
    inception 5a, 5b -> 1024×7×7, average pool -> 1024, dropout 0.4, linear -> 1000

Auxiliary classifiers (section 5), on 4a's and 4d's outputs: 5×5/3 average pool -> 4×4, 1×1 convolution
128 + ReLU, fully connected 1024 + ReLU, dropout 0.7, linear. They are used in training only, their losses
weighted by 0.3 (``aux_loss_weight``). ``forward`` never computes them and always returns the logits;
``forward_with_aux(x)`` returns ``(logits, [aux1_logits, aux2_logits])`` for the training objective.

The paper gives no initialisation; the released Caffe model's is used: Xavier weights, convolution biases 0.2,
linear biases 0. LRN: Caffe's size 5, α = 1e-4 in the mean convention (our α = 2e-5 per sum), β = 0.75, k = 1.

``googlenet-bn`` is torchvision's GoogLeNet, module for module: batch norm (ε = 1e-3) after every
convolution and no convolution bias, no LRN, 3×3 convolutions in the "5×5" branch (pytorch/vision#906), a
2×2 last max pool, adaptive 4×4 pooling in the auxiliary heads, dropout 0.2, and ``transform_input`` (which
torchvision's ImageNet weights need: it turns ImageNet-standardised inputs into the (x − 0.5)/0.5 scaling the
weights were trained with). Its outputs match torchvision's on the same weights.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.layers import ConvReLU, Inception, LocalResponseNorm
from cnnlab.models._contract import ClassifierModel
from cnnlab.models._registry import register_model

PAPER = "Szegedy et al. 2014, Going deeper with convolutions"

# Table 1: (in, #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj) of each inception module.
INCEPTIONS = OrderedDict(
    inception3a=(192, 64, 96, 128, 16, 32, 32),
    inception3b=(256, 128, 128, 192, 32, 96, 64),
    inception4a=(480, 192, 96, 208, 16, 48, 64),
    inception4b=(512, 160, 112, 224, 24, 64, 64),
    inception4c=(512, 128, 128, 256, 24, 64, 64),
    inception4d=(512, 112, 144, 288, 32, 64, 64),
    inception4e=(528, 256, 160, 320, 32, 128, 128),
    inception5a=(832, 256, 160, 320, 32, 128, 128),
    inception5b=(832, 384, 192, 384, 48, 128, 128),
)
POOL_AFTER = {"inception3b": "maxpool3", "inception4e": "maxpool4"}
AUX_AFTER = {"inception4a": "aux1", "inception4d": "aux2"}


@dataclass(frozen=True)
class GoogLeNetVariant:
    """What separates the paper's GoogLeNet from torchvision's."""

    batch_norm: bool  # BN after each convolution, no conv bias
    lrn: bool  # figure 3's two LRN layers
    large_kernel: int  # the "5×5" branch: 5 (paper) or 3 (torchvision)
    last_pool: int  # kernel of maxpool4: 3 (paper) or 2 (torchvision)
    aux_pool: str  # "5x5/3" (paper) or "adaptive4" (torchvision)
    dropout: float  # before the classifier: 0.4 (paper) or 0.2 (torchvision)


PAPER_VARIANT = GoogLeNetVariant(batch_norm=False, lrn=True, large_kernel=5, last_pool=3, aux_pool="5x5/3", dropout=0.4)
TORCHVISION_VARIANT = GoogLeNetVariant(
    batch_norm=True, lrn=False, large_kernel=3, last_pool=2, aux_pool="adaptive4", dropout=0.2
)


class InceptionAux(nn.Module):
    """An auxiliary classifier: pool -> 1×1 conv 128 + ReLU -> FC 1024 + ReLU -> dropout 0.7 -> linear.

    Shape: (B, C, 14, 14) -> (B, num_classes).
    """

    def __init__(self, in_channels: int, num_classes: int, conv_block: Callable[..., nn.Module], pool: str):
        super().__init__()
        # (B, C, 14, 14) -> (B, C, 4, 4)
        self.pool = nn.AvgPool2d(5, stride=3) if pool == "5x5/3" else nn.AdaptiveAvgPool2d((4, 4))
        self.conv = conv_block(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.7)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)  # (B, C, 14, 14) -> (B, 2048)
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


class InputTransform(nn.Module):
    """torchvision's ``transform_input``: ImageNet-standardised input -> (x − 0.5)/0.5 scaling, per channel."""

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self):
        super().__init__()
        # Buffers, not tensors made per call: a tensor built from Python numbers on a GPU is a synchronous copy.
        # Not persistent: torchvision's state dicts have no such entries.
        scale = torch.tensor([s / 0.5 for s in self.std]).view(1, 3, 1, 1)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer(
            "shift", torch.tensor([(m - 0.5) / 0.5 for m in self.mean]).view(1, 3, 1, 1), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


class GoogLeNet(ClassifierModel):
    """GoogLeNet. Stages: (transform_input,) conv1, maxpool1, (lrn1,) conv2, conv3, (lrn2,) maxpool2, inception3a,
    inception3b, maxpool3, inception4a .. 4e, maxpool4, inception5a, inception5b (torchvision's names).

    Args:
        variant: :data:`PAPER_VARIANT` or :data:`TORCHVISION_VARIANT`.
        aux_logits: build the two auxiliary classifiers (``aux1``, ``aux2``).
        transform_input: torchvision's input re-scaling (for its ImageNet weights only; needs 3 channels).
    """

    aux_loss_weight = 0.3  # section 5: "their loss is added to the total loss of the network with a discount weight"

    def __init__(
        self,
        variant: GoogLeNetVariant,
        num_classes: int = 1000,
        in_chans: int = 3,
        aux_logits: bool = True,
        transform_input: bool = False,
    ):
        super().__init__()
        if transform_input and in_chans != 3:
            raise ConfigError("transform_input re-scales the three ImageNet channels; it needs in_chans=3.")
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, 1024
        self.variant = variant
        if variant.batch_norm:
            conv: Callable[..., nn.Module] = functools.partial(ConvReLU, batch_norm=True, bn_eps=1e-3)
        else:
            conv = ConvReLU

        def lrn() -> LocalResponseNorm:
            return LocalResponseNorm(size=5, alpha=1e-4 / 5, beta=0.75, k=1.0)  # Caffe's α = 1e-4 is per mean

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if transform_input:
            layers["transform_input"] = InputTransform()
        layers["conv1"] = conv(in_chans, 64, kernel_size=7, stride=2, padding=3)
        layers["maxpool1"] = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        if variant.lrn:
            layers["lrn1"] = lrn()
        layers["conv2"] = conv(64, 64, kernel_size=1)
        layers["conv3"] = conv(64, 192, kernel_size=3, padding=1)
        if variant.lrn:
            layers["lrn2"] = lrn()
        layers["maxpool2"] = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name, widths in INCEPTIONS.items():
            layers[name] = Inception(*widths, conv_block=conv, large_kernel=variant.large_kernel)
            if name == "inception3b":
                layers["maxpool3"] = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            elif name == "inception4e":
                layers["maxpool4"] = nn.MaxPool2d(variant.last_pool, stride=2, ceil_mode=True)
        self.features = nn.Sequential(layers)
        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, conv, variant.aux_pool)
            self.aux2 = InceptionAux(528, num_classes, conv, variant.aux_pool)
        else:
            self.aux1 = self.aux2 = None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(variant.dropout)
        self.fc = nn.Linear(1024, num_classes)
        self.apply(self._init)

    def _init(self, module: nn.Module) -> None:
        if self.variant.batch_norm:  # torchvision's
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.trunc_normal_(module.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d | nn.Linear):  # the released Caffe model's
            nn.init.xavier_uniform_(module.weight)
            nn.init.constant_(module.bias, 0.2 if isinstance(module, nn.Conv2d) else 0.0)

    @property
    def aux_heads(self) -> list[nn.Module]:
        return [head for head in (self.aux1, self.aux2) if head is not None]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))  # (B, 1024, 7, 7) -> (B, 1024)
        return x if pre_logits else self.fc(x)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits, [aux1 logits, aux2 logits]) in any mode; ``[]`` if built without auxiliary classifiers.

        The training objective adds ``aux_loss_weight`` × each auxiliary loss to the main loss.
        """
        aux: list[torch.Tensor] = []
        for name, stage in self.features.named_children():
            x = stage(x)
            head = getattr(self, AUX_AFTER[name]) if name in AUX_AFTER else None
            if head is not None:
                aux.append(head(x))
        return self.forward_head(x), aux

    def reset_classifier(self, num_classes: int) -> None:
        device = self.fc.weight.device
        self.fc = nn.Linear(1024, num_classes, device=device)
        self._init(self.fc)
        for name in ("aux1", "aux2"):
            head = getattr(self, name)
            if head is not None:
                head.fc2 = nn.Linear(1024, num_classes, device=device)
                self._init(head.fc2)
        self.num_classes = num_classes


@register_model(
    "googlenet",
    paper=PAPER,
    year=2014,
    input_size=(3, 224, 224),
    num_classes=1000,
    param_count=13_378_280,
    paper_params="≈6.8 million (table 1's column: main network only)",
    description="GoogLeNet as published: 9 inception modules with 5×5 branches, LRN, no BN, 2 auxiliary heads",
    notes=(
        "Count includes the two auxiliary classifiers (6.38 M; the main network is 7.00 M). 1.58 G MACs vs the "
        "paper's '1.5 billion multiply-adds'. Initialisation and LRN constants from the released Caffe model "
        "(the paper gives none); Caffe's round-up pooling; adaptive final average pool (= 7×7 at 224)."
    ),
)
def googlenet(*, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = True) -> GoogLeNet:
    return GoogLeNet(PAPER_VARIANT, num_classes=num_classes, in_chans=in_chans, aux_logits=aux_logits)


@register_model(
    "googlenet-bn",
    paper=PAPER + " (torchvision's batch-normalised GoogLeNet)",
    year=2014,
    input_size=(3, 224, 224),
    num_classes=1000,
    param_count=13_004_888,
    paper_params="6,624,904 (torchvision, without aux heads)",
    description="torchvision's GoogLeNet: batch norm, 3×3 in the '5×5' branch; loads torchvision's weights",
    notes="Module names, shapes and outputs are torchvision's; count includes the aux heads (untrained in "
    "torchvision's weights).",
    torchvision="googlenet",
    torchvision_options={"transform_input": True},
)
def googlenet_bn(
    *, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = True, transform_input: bool = False
) -> GoogLeNet:
    model = GoogLeNet(
        TORCHVISION_VARIANT,
        num_classes=num_classes,
        in_chans=in_chans,
        aux_logits=aux_logits,
        transform_input=transform_input,
    )
    model.torchvision_compatible = True  # type: ignore[assignment]
    return model
