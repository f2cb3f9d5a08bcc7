"""Objectives: what the trainer minimises. The trainer takes one; it never imports attacks or reports."""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


class Objective(Protocol):
    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (scalar loss to minimise, logits (B, num_classes) for the accuracy metrics).

        The loss must be the *mean* over the batch: gradient accumulation and data parallelism weight it by
        the batch's share of the global batch, which is exact only for means.
        """
        ...


def smoothed_targets(labels: torch.Tensor, num_classes: int, smoothing: float, dtype: torch.dtype) -> torch.Tensor:
    """(1 − ε)·one-hot + ε/K, (B,) -> (B, K)."""
    target = F.one_hot(labels, num_classes).to(dtype)
    return target * (1 - smoothing) + smoothing / num_classes if smoothing else target


def half_squared_error(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """½·Σ_k (softmax(z)_k − target_k)², averaged over the batch (the beginner's guide's "total error")."""
    target = smoothed_targets(labels, logits.shape[1], label_smoothing, logits.dtype)
    return 0.5 * (logits.softmax(dim=1) - target).pow(2).sum(dim=1).mean()


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy against (1 − ε)·one-hot + ε/K (torch's ``label_smoothing``), computed in float32."""
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


LOSS_FUNCTIONS = {"cross_entropy": cross_entropy, "mse": half_squared_error}


def aux_heads(model: object) -> list:
    """The model contract's auxiliary classifiers (``ClassifierModel.aux_heads``); none for a model outside it."""
    return list(getattr(model, "aux_heads", None) or [])


class ClassificationObjective:
    """Supervised classification with cross-entropy or the squared error on softmax outputs.

    In training mode (``model.training``) the loss uses ``label_smoothing`` and, for models with auxiliary
    classifiers (GoogLeNet: ``forward_with_aux(x) -> (logits, [aux_logits, ...])`` and ``aux_loss_weight``),
    adds ``aux_loss_weight · Σ loss(aux)`` (Szegedy et al. 2014, section 5: weight 0.3). In evaluation mode it
    is the plain loss of the main output, so test losses compare across settings.

    Args:
        loss: ``cross_entropy`` or ``mse``.
        label_smoothing: ε in [0, 1).
    """

    def __init__(self, loss: str = "cross_entropy", label_smoothing: float = 0.0):
        self.loss_name = loss
        self.loss_fn = LOSS_FUNCTIONS[loss]
        self.label_smoothing = label_smoothing

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not model.training:
            logits = model(images)
            return self.loss_fn(logits, labels), logits
        if aux_heads(model):
            logits, aux_logits = model.forward_with_aux(images)
        else:
            logits, aux_logits = model(images), []
        loss = self.loss_fn(logits, labels, self.label_smoothing)
        if aux_logits:
            aux = sum(self.loss_fn(a, labels, self.label_smoothing) for a in aux_logits)
            loss = loss + model.aux_loss_weight * aux
        return loss, logits
