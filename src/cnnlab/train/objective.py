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
        """Return (scalar loss to minimise, logits (B, num_classes) for the accuracy metrics)."""
        ...


def half_squared_error(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """½·Σ_k (softmax(z)_k − onehot_k)², averaged over the batch (the beginner's guide's "total error")."""
    target = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    return 0.5 * (logits.softmax(dim=1) - target).pow(2).sum(dim=1).mean()


LOSS_FUNCTIONS = {"cross_entropy": F.cross_entropy, "mse": half_squared_error}


class ClassificationObjective:
    """Plain supervised classification with cross-entropy or the squared error on softmax outputs."""

    def __init__(self, loss: str = "cross_entropy"):
        self.loss_name = loss
        self.loss_fn = LOSS_FUNCTIONS[loss]

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(images)
        return self.loss_fn(logits, labels), logits
