"""Evaluation: loss, top-1 and top-5 error over a loader, with one host sync at the end."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.data.loader import Loader
from cnnlab.train.objective import Objective


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Loader, objective: Objective, topk: int = 5, *, distributed: bool = False
) -> dict[str, float]:
    """Mean loss and top-1/top-k error (fractions in [0, 1]) of ``model`` over every sample of ``loader``.

    Top-k uses k = min(topk, num_classes). ``distributed``: every process calls this with its own shard of the
    test split (a loader built with ``rank``/``world_size``) and the same weights; the sums are added over the
    processes (one collective), so every process returns the figures of the whole split.
    """
    was_training = model.training
    model.eval()
    sums, seen = None, 0  # (loss sum, top-1 hits, top-k hits) on the device; images counted on the host
    for images, labels in loader.batches():
        if labels.shape[0] == 0:  # a process's empty share of a short last batch
            continue
        loss, logits = objective(model, images, labels)
        k = min(topk, logits.shape[1])
        top = logits.topk(k, dim=1).indices  # (B, k)
        hits = top == labels.unsqueeze(1)
        batch = torch.stack(
            [loss.double() * labels.shape[0], hits[:, 0].sum().double(), hits.any(dim=1).sum().double()]
        )
        sums = batch if sums is None else sums + batch
        seen += labels.shape[0]
    model.train(was_training)
    if sums is None:
        sums = torch.zeros(3, dtype=torch.float64, device=next(model.parameters()).device)
    totals = torch.cat([sums, sums.new_tensor([float(seen)])])
    if distributed:
        from cnnlab.train.distributed import all_reduce_sum

        all_reduce_sum(totals)
    loss_sum, correct1, correctk, seen = totals.cpu().tolist()  # the one sync
    if seen == 0:
        return {"loss": float("nan"), "top1_error": float("nan"), "top5_error": float("nan"), "samples": 0}
    return {
        "loss": loss_sum / seen,
        "top1_error": 1 - correct1 / seen,
        "top5_error": 1 - correctk / seen,
        "samples": int(seen),
    }
