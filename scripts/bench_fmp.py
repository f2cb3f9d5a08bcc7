"""Fractional max pooling's training step, side by side: fmp-cnn (batch 128, MNIST-sized, channels-last as the
engine runs it on a CPU) with cnnlab's FractionalMaxPool2d (the paper's overlapping pseudo-random regions), with
the form it replaced (the max of three ``index_select``s per axis, through autograd's ``torch.maximum``), with
torch's own kernel (``nn.FractionalMaxPool2d``, fixed 2×2 windows: the plain PyTorch way, other regions), and with
2×2 max pooling (the same net, ``pooling=max``). Rounds alternate (the machine is noisy); prints each variant's
median seconds per step and its ratio to cnnlab's.

    python scripts/bench_fmp.py --threads 1 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import cnnlab.layers.pooling as pooling
from cnnlab.models import create


def _three_index_selects(x: torch.Tensor, boundaries: torch.Tensor, overlapping: bool, dim: int) -> torch.Tensor:
    """The earlier form (until 2026-11-30): the max of a region's first, second and last positions."""
    starts = boundaries[:-1].to(x.device)
    ends = boundaries[1:].to(x.device) - (0 if overlapping else 1)
    seconds = torch.minimum(starts + 1, ends)
    out = torch.maximum(x.index_select(dim, starts), x.index_select(dim, seconds))
    return torch.maximum(out, x.index_select(dim, ends))


def _step_seconds(model: torch.nn.Module, steps: int) -> float:
    """Median seconds of ``steps`` SGD steps on a fixed random batch, after two warm-up steps."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(128, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (128,))
    times = []
    for step in range(steps + 2):
        started = time.perf_counter()
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 2:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant and round (default 5)")
    args = parser.parse_args()
    for name in ("threads", "rounds", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    current = pooling._pool_along
    variants = {
        "cnnlab FractionalMaxPool2d": ({}, current),
        "previous form (3 index_selects + torch.maximum)": ({}, _three_index_selects),
        "torch nn.FractionalMaxPool2d (2×2 windows)": ({"backend": "torch"}, current),  # set on the layers
        "2×2 max pooling (same net)": ({"pooling": "max"}, current),
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (options, pool_along) in variants.items():
            pooling._pool_along = pool_along
            try:
                torch.manual_seed(0)
                model = create("fmp-cnn", num_classes=10, in_chans=1, pooling=options.get("pooling", "fractional"))
                for layer in model.modules():
                    if isinstance(layer, pooling.FractionalMaxPool2d):
                        layer.backend = options.get("backend", "paper")
                model = model.to(memory_format=torch.channels_last)
                seconds[name].append(_step_seconds(model, args.steps))
            finally:
                pooling._pool_along = current
    reference = statistics.median(seconds["cnnlab FractionalMaxPool2d"])
    print(f"fmp-cnn training step, batch 128, channels-last, {args.threads} thread(s), {args.rounds} rounds")
    print("| variant | seconds per step (median of rounds) | × cnnlab's time | rounds |")
    print("|---|---:|---:|---|")
    for name, values in seconds.items():
        median = statistics.median(values)
        rounds = ", ".join(f"{v:.3f}" for v in values)
        print(f"| {name} | {median:.3f} | {median / reference:.2f} | {rounds} |")


if __name__ == "__main__":
    main()
