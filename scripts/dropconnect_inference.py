"""DropConnect's three inference rules on trained DropConnect runs: test error and evaluation time of each.

The DropConnect paper (Wan et al. 2013, section 3.1, Algorithm 2) approximates each unit's pre-activation over the
masks by a Gaussian and averages the activation over Z draws from it; ``gaussian-exact`` computes that average in
closed form (the Z → ∞ limit; ReLU only) and ``mean`` is mean-field inference, a(E[u]). This script evaluates each
run's chosen checkpoint (``best.pt``, picked on the validation split) on its test split with each rule, so the
rules can be compared on the same weights:

    python scripts/dropconnect_inference.py runs/reproduce-dropconnect-mnist/dropconnect-seed{0,1,2} --samples 100

Prints a markdown table (test error % and seconds per evaluation of the 10,000 test images) and the mean ± sd over
the runs. Sampled inference is random: its generator is seeded (``--seed``), so a rerun repeats it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from cnnlab.layers import DropConnectLinear
from cnnlab.train.evaluate import evaluate
from cnnlab.train.objective import ClassificationObjective
from cnnlab.train.record import RunRecord


def _set_inference(model: torch.nn.Module, rule: str, samples: int, seed: int) -> None:
    layers = [m for m in model.modules() if isinstance(m, DropConnectLinear)]
    if not layers:
        raise SystemExit("this run's model has no DropConnect layers (train with --model-option drop=dropconnect)")
    if rule == "gaussian-exact" and not all(isinstance(m.activation, torch.nn.ReLU) for m in layers):
        raise SystemExit("the exact rule has a closed form for ReLU units only; this run's DropConnect units are not")
    for index, layer in enumerate(layers):
        layer.inference, layer.num_samples = rule, samples
        layer.generator = torch.Generator().manual_seed(seed + index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories of DropConnect models (their best.pt is used)")
    parser.add_argument("--samples", type=int, default=100, help="Z for sampled inference (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled inference's draws")
    parser.add_argument("--data-root", default=None, help="default: the runs' own")
    args = parser.parse_args()
    if args.samples < 1:
        raise SystemExit(f"--samples must be at least 1, got {args.samples}")
    missing = [run for run in args.runs if not (Path(run) / "best.pt").is_file()]
    if missing:
        raise SystemExit(f"no best.pt in {', '.join(missing)}: give finished run directories")
    rules = (("gaussian", f"sampled (Z = {args.samples})"), ("gaussian-exact", "exact"), ("mean", "mean-field"))
    errors: dict[str, list[float]] = {rule: [] for rule, _ in rules}
    print("| run | " + " | ".join(f"{label}: error % (s)" for _, label in rules) + " |")
    print("|---|" + "---:|" * len(rules))
    for run in args.runs:
        record = RunRecord.load(Path(run) / "best.pt")
        model = record.build_model()
        _, loader = record.test_loader(data_root=args.data_root)
        cells = []
        for rule, _ in rules:
            _set_inference(model, rule, args.samples, args.seed)
            started = time.perf_counter()
            error = evaluate(model, loader, ClassificationObjective())["top1_error"]
            cells.append(f"{100 * error:.2f} ({time.perf_counter() - started:.1f})")
            errors[rule].append(100 * error)
        print(f"| {Path(run).name} | " + " | ".join(cells) + " |")
    if len(args.runs) > 1:
        means = [f"{statistics.mean(errors[r]):.2f} ± {statistics.stdev(errors[r]):.2f}" for r, _ in rules]
        print("| mean ± sd | " + " | ".join(means) + " |")


if __name__ == "__main__":
    main()
