"""Evaluation: loss, top-1 and top-5 error over a loader, with one host sync at the end."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.data.loader import Loader
from cnnlab.train.objective import Objective


@torch.no_grad()
def evaluate(model: nn.Module, loader: Loader, objective: Objective, topk: int = 5) -> dict[str, float]:
    """Mean loss and top-1/top-k error (fractions in [0, 1]) of ``model`` over every sample of ``loader``.

    Top-k uses k = min(topk, num_classes).
    """
    was_training = model.training
    model.eval()
    loss_sum = correct1 = correctk = None
    seen = 0
    for images, labels in loader.batches():
        loss, logits = objective(model, images, labels)
        k = min(topk, logits.shape[1])
        top = logits.topk(k, dim=1).indices  # (B, k)
        hits = top == labels.unsqueeze(1)
        batch = (loss.double() * labels.shape[0], hits[:, 0].sum(), hits.any(dim=1).sum())
        if loss_sum is None:
            loss_sum, correct1, correctk = batch
        else:
            loss_sum, correct1, correctk = loss_sum + batch[0], correct1 + batch[1], correctk + batch[2]
        seen += labels.shape[0]
    model.train(was_training)
    if seen == 0:
        return {"loss": float("nan"), "top1_error": float("nan"), "top5_error": float("nan"), "samples": 0}
    totals = torch.stack([loss_sum, correct1.double(), correctk.double()]).cpu()  # the one sync
    return {
        "loss": float(totals[0]) / seen,
        "top1_error": 1 - float(totals[1]) / seen,
        "top5_error": 1 - float(totals[2]) / seen,
        "samples": seen,
    }
