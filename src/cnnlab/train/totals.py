"""Running totals that the engine sums over processes at its sync points, by name (not by offset)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from cnnlab.train.distributed import all_reduce_sum


@dataclass
class SyncedTotals:
    """What one sync point read: every value summed over the processes, on the host.

    Attributes:
        recent: (steps since the last sync, parts) each step's mean loss per optimiser part.
        sums: the task's running-metric sums over the epoch so far.
        counts: host-side counts (``seen``, ``seen_here``...) and flags (``stop``: processes asking to stop).
    """

    recent: torch.Tensor
    sums: dict[str, float]
    counts: dict[str, float]


def sync_totals(
    recent: torch.Tensor, sums: Mapping[str, torch.Tensor], counts: Mapping[str, float], device: torch.device
) -> SyncedTotals:
    """Pack, add over processes (one all-reduce; nothing without torch.distributed) and unpack by name.

    This is a host-device sync: call it only at the engine's sync points.
    """
    names, count_names = list(sums), list(counts)
    packed = torch.cat(
        [
            recent.double().flatten(),
            torch.stack([sums[n].double() for n in names]) if names else recent.new_zeros(0, dtype=torch.float64),
            torch.tensor([float(counts[n]) for n in count_names], dtype=torch.float64, device=device),
        ]
    )
    values = all_reduce_sum(packed).cpu()  # the sync
    n_recent = recent.numel()
    summed = values[n_recent : n_recent + len(names)].tolist()
    counted = values[n_recent + len(names) :].tolist()
    return SyncedTotals(
        recent=values[:n_recent].view(recent.shape),
        sums=dict(zip(names, summed, strict=True)),
        counts=dict(zip(count_names, counted, strict=True)),
    )
