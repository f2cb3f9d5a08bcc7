"""What DropConnect's masks cost: one training step of ``mlp-800`` for each way of drawing them, side by side.

The DropConnect paper (Wan et al. 2013) draws a fresh mask of the weights for every example; on a CPU that is most
of the step, so ``cnnlab reproduce dropconnect-mnist`` draws ``mask_groups`` masks a batch instead. This measures,
in alternating rounds (the machine is noisy), the median time of a training step (forward, backward, SGD update)
at batch 128 for No-Drop, dropout, and DropConnect with one mask a batch, with G masks a batch and with one per
example, and each one's ratio to No-Drop:

    python scripts/dropconnect_step_time.py                 # one thread, 5 rounds
    python scripts/dropconnect_step_time.py --groups 4,8,16 --rounds 7 --threads 2

Prints a markdown table. The inputs are random: the step's cost does not depend on the pixels.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from cnnlab.models import create


def _arms(groups: list[int]) -> dict[str, dict]:
    arms = {"No-Drop": {"drop": "none"}, "Dropout": {"drop": "dropout"}}
    arms["DropConnect, 1 mask a batch"] = {"drop": "dropconnect", "per_example": False}
    for count in sorted(set(groups) - {1}):  # 1 is the row above
        arms[f"DropConnect, {count} masks a batch"] = {
            "drop": "dropconnect",
            "per_example": False,
            "mask_groups": count,
        }
    arms["DropConnect, a mask per example (the paper's)"] = {"drop": "dropconnect", "per_example": True}
    return arms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", default="8", help="mask_groups values to time, comma-separated (default: 8)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; the median is shown (default: 5)")
    parser.add_argument("--batch-size", type=int, default=128, help="examples a step (default: 128, the entry's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = parser.parse_args()
    try:
        groups = [int(text) for text in args.groups.split(",")]
    except ValueError:
        raise SystemExit(
            f"--groups takes whole numbers separated by commas, e.g. 4,8,16; got {args.groups!r}"
        ) from None
    if args.rounds < 1 or args.batch_size < 1 or args.threads < 1 or min(groups) < 1:
        raise SystemExit("--rounds, --batch-size, --threads and every --groups value must be at least 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 1, 28, 28)
    labels = torch.randint(0, 10, (args.batch_size,))
    steps = {}
    for name, options in _arms(groups).items():
        model = create("mlp-800", **options).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step(model=model, optimizer=optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()

        step()  # warm-up: allocations, first-call dispatch
        steps[name] = step
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            seconds[name].append(time.perf_counter() - start)
    base = statistics.median(seconds["No-Drop"])
    print(f"mlp-800, batch {args.batch_size}, {args.threads} thread(s), median of {args.rounds} alternating rounds")
    print("| masks | ms a step | × No-Drop |\n|---|---:|---:|")
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"| {name} | {1000 * median:.1f} | {median / base:.1f} |")


if __name__ == "__main__":
    main()
