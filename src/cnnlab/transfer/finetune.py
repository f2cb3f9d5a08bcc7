"""Reusing a trained network on a new dataset: new head, adapted input channels, frozen stages.

Yosinski et al. (2014): the lower stages are general, the upper ones specific; freeze fewer the more the new
data differs. Frozen stages keep their batch-norm statistics too (torchvision's FrozenBatchNorm2d) unless
``train_bn``.
"""

from __future__ import annotations

from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from cnnlab.errors import UnknownNameError
from cnnlab.models import ClassifierModel


def adapt_input_channels(model: ClassifierModel, in_chans: int) -> str | None:
    """Make the first convolution take ``in_chans`` channels, preserving its response to grey images:
    RGB→grey sums the kernels over colour (a grey image is R = G = B, so the output is unchanged); grey→RGB
    splits the kernel equally over the three channels. Returns a note saying what was done, or None."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first.in_channels == in_chans:
        return None
    old = first.in_channels
    weight = first.weight.detach()
    if in_chans == 1:
        new = weight.sum(dim=1, keepdim=True)
    elif old == 1:
        new = weight.repeat(1, in_chans, 1, 1) / in_chans
    else:
        new = weight.mean(dim=1, keepdim=True).repeat(1, in_chans, 1, 1) * old / in_chans
    if first.groups != 1:
        raise UnknownNameError("adaptable first layer", "grouped convolution", ["a plain nn.Conv2d"])
    first.in_channels = in_chans
    first.weight = nn.Parameter(new.contiguous())
    model.in_chans = in_chans
    how = "summed over colour (RGB→grey)" if in_chans == 1 else "split equally over the channels (grey→RGB)"
    return f"note: the source takes {old}-channel images, the data has {in_chans}; first-layer kernels {how}."


def _freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace BatchNorm2d layers under ``module`` by FrozenBatchNorm2d with the same statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen.to(child.weight.device))
        else:
            _freeze_batchnorm(child)
    return module


def frozen_stages(model: ClassifierModel, freeze: str | None = None, train_from: str | None = None) -> list[str]:
    """The stages to freeze: up to and including ``freeze``, or all before ``train_from``."""
    names = model.stage_names
    for stage in (freeze, train_from):
        if stage is not None and stage not in names:
            raise UnknownNameError("stage", stage, names)
    if freeze is not None:
        return names[: names.index(freeze) + 1]
    if train_from is not None:
        return names[: names.index(train_from)]
    return []


def freeze(model: ClassifierModel, stages: list[str], train_bn: bool = False) -> None:
    """Stop gradients to ``stages`` (their parameters keep requires_grad=False) and freeze their BN statistics."""
    for name in stages:
        stage = model.get_stage(name)
        for p in stage.parameters():
            p.requires_grad_(False)
        if not train_bn:
            _freeze_batchnorm(stage)


def unfreeze(model: ClassifierModel, stages: list[str]) -> None:
    """Let gradients reach ``stages`` again (batch-norm statistics stay frozen)."""
    for name in stages:
        for p in model.get_stage(name).parameters():
            p.requires_grad_(True)


def head_and_body_parameters(model: ClassifierModel) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(parameters outside ``features`` — the head; parameters of ``features`` — the body), frozen ones included
    so that unfreezing later needs no new optimiser."""
    body_ids = {id(p) for p in model.features.parameters()}
    params = [p for p in model.parameters() if p.dtype.is_floating_point]
    head = [p for p in params if id(p) not in body_ids]
    body = [p for p in params if id(p) in body_ids]
    return head, body
