"""The one model contract every cnnlab model follows.

Visualisation, attacks, transfer learning and detection backbones are written once against this contract:

- ``features``: an ``nn.Sequential`` whose named children are the model's *stages* (``model.stage_names``);
- ``forward_features(x)``: image batch -> the last stage's output;
- ``forward_head(x, pre_logits=False)``: features -> logits (or the penultimate vector with ``pre_logits``);
- ``reset_classifier(num_classes)``: a new, freshly initialised classifier for ``num_classes`` classes;
- ``num_features``: width of the ``pre_logits`` vector; ``num_classes``, ``in_chans``.

``forward(x)`` is always ``forward_head(forward_features(x))`` and returns logits, in training and in eval
mode alike (models with auxiliary outputs return them through a separate method, never by changing type).
"""

from __future__ import annotations

import torch
from torch import nn


class ClassifierModel(nn.Module):
    """Base class: subclasses set ``self.features`` (named stages) and implement the head methods."""

    features: nn.Sequential
    num_classes: int
    num_features: int
    in_chans: int

    @property
    def stage_names(self) -> list[str]:
        """Names of the stages in ``features``, input to output."""
        return [name for name, _ in self.features.named_children()]

    def get_stage(self, name: str) -> nn.Module:
        """The stage called ``name`` (raises :class:`~cnnlab.errors.UnknownNameError` listing the valid ones)."""
        from cnnlab.errors import UnknownNameError

        stages = dict(self.features.named_children())
        if name not in stages:
            raise UnknownNameError("stage", name, stages)
        return stages[name]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    has_weight_constraints = False  # True where a paper constrains the weights after each step (ZF Net, maxout)
    # Where it is True, a cnnlab.layers.ConstraintActivity that apply_weight_constraints_ feeds: the trainer reads it
    # once an epoch (metrics constraint_acted, constraint_peak) and says so when the constraint never acted
    constraint_activity = None

    # Facts every consumer reads from the contract (views, attacks, transfer, export, the trainer), declared once:
    model_name: str = ""  # the registry name it was built under (set by models.create; "" for a model built by hand)
    torchvision_compatible = False  # True where the state dict's keys and shapes are torchvision's namesake's
    aux_loss_weight = 0.0  # weight of each auxiliary classifier's loss in training (GoogLeNet: 0.3)
    # Learning-rate multipliers by parameter-name prefix, a model's own training rule (a spatial transformer's
    # localisation network learns slower than the classifier behind it); the trainer makes a group of each.
    lr_multipliers: dict[str, float] = {}  # noqa: RUF012 (read-only class default)

    @property
    def aux_heads(self) -> list[nn.Module]:
        """Auxiliary classifiers trained alongside the main one (GoogLeNet's two); none by default."""
        return []

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits, [auxiliary logits, ...]) in any mode: what the training objective adds ``aux_loss_weight`` × each
        auxiliary loss from. ``forward`` never returns auxiliary outputs (its type never changes with the mode)."""
        return self(x), []

    # Whether the trainer's automatic layout picks channels-last (NHWC) on the CPU. Training step, float32,
    # 2 cores (`python scripts/channels_last_cpu.py`, docs/benchmarks.md): LeNet-5 1.18×, lenet5-modern 1.20×,
    # resnet20 1.28×, nin-cifar 1.33×, vgg-a-bn 1.39× faster at 32 px; ResNet-18 0.98× and 0.94× at 32/64 px,
    # within noise; maxout 0.88× (it says False). On CUDA the trainer picks channels-last for every model.
    cpu_channels_last = True

    def apply_weight_constraints_(self) -> None:
        """The paper's rule on the weights after every optimiser step (max-norm balls, filter renormalisation).

        The trainer calls it after each step when ``has_weight_constraints`` (``--no-weight-constraints``
        turns that off). Tensor operations only: no host sync, safe inside a captured CUDA graph.
        """
