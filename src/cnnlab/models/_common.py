"""Pieces shared by the model families: a head of fully connected layers, and weight initialisers."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models._contract import ClassifierModel


class FullyConnectedHeadModel(ClassifierModel):
    """A model whose head is ``classifier``, an ``nn.Sequential`` ending in the output ``nn.Linear``.

    ``forward_head`` pools (with ``self.avgpool``, if the subclass sets one), flattens, runs every classifier layer but
    the last (the ``pre_logits`` vector, ``num_features`` wide) and then the last. ``reset_classifier``
    replaces the last layer, initialised by :meth:`init_classifier`.
    """

    classifier: nn.Sequential

    def init_classifier(self, linear: nn.Linear) -> None:
        """Initialise a new output layer; torch's default unless the family's paper says otherwise."""

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pool = self._modules.get("avgpool")  # optional: AlexNet-tv and VGG pool to a fixed size first
        if pool is not None:
            x = pool(x)
        x = torch.flatten(x, 1)  # (B, C, H, W) -> (B, C·H·W)
        for layer in list(self.classifier)[:-1]:
            x = layer(x)
        return x if pre_logits else self.classifier[-1](x)

    def reset_classifier(self, num_classes: int) -> None:
        last_name = list(self.classifier._modules)[-1]
        old = self.classifier[-1]
        new = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
        self.init_classifier(new)
        setattr(self.classifier, last_name, new)
        self.num_classes = num_classes


def normal_init_(module: nn.Module, std: float = 0.01, bias: float = 0.0) -> None:
    """Weights N(0, std²), biases constant: the initialisation of AlexNet, ZFNet and OverFeat."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, std)
        if module.bias is not None:
            nn.init.constant_(module.bias, bias)


def uninitialized(module_cls: type[nn.Module], *args: object, **kwargs: object) -> nn.Module:
    """Build a layer without torch's default initialisation, for layers the family initialises itself.

    torch's default init of VGG's 100-million-weight fc6 costs as much as the paper's init that replaces it;
    skipping it halves the time to build the big models. Honours ``with torch.device(...)`` (and ``create``'s
    ``device``), unlike ``nn.utils.skip_init`` alone, which defaults to the CPU.
    """
    return nn.utils.skip_init(module_cls, *args, device=torch.get_default_device(), **kwargs)
