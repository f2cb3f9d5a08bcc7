"""Peak memory of a run: the device's allocator on CUDA, the process's resident set elsewhere."""

from __future__ import annotations

import sys

import torch


def peak_memory(device: torch.device) -> dict[str, object]:
    """{"bytes": peak, "measure": what was measured}.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only, not the caching allocator's reserve). Elsewhere:
    the process's maximum resident set size from ``getrusage`` (everything: Python, torch, data), or None
    where ``resource`` does not exist (Windows).
    """
    if device.type == "cuda":
        return {"bytes": int(torch.cuda.max_memory_allocated(device)), "measure": "torch.cuda.max_memory_allocated"}
    try:
        import resource
    except ImportError:
        return {"bytes": None, "measure": "unavailable on this platform"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux kibibytes
    return {"bytes": int(rss * scale), "measure": "process max RSS (getrusage)"}
