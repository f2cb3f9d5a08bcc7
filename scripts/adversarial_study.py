"""docs/adversarial.md's table, over seeds: lenet5-modern on real MNIST trained normally and with Goodfellow's
objective (α = 0.5, ε = 0.25), 5 epochs each, then FGSM over ε and 10-step PGD at ε = 0.1 and 0.25 on the test split.
Prints mean ± sd (sample sd) over the seeds, as markdown rows.

    python scripts/adversarial_study.py --seeds 0 1 2 --out runs/adversarial-study   # MNIST from $CNNLAB_DATA

The best epoch is chosen on the validation split held out of the training data (cnnlab's default); the test
split is only reported. Re-running writes into fresh subfolders of --out (existing runs are refused).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from cnnlab.adversarial import attack_runs
from cnnlab.workflows import train_classifier

EPS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
RECIPE = {"model": "lenet5-modern", "data": "mnist", "epochs": 5, "augment": "none", "device": "cpu"}


def _stat(values: list[float]) -> str:
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2%} ± {sd:.2%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-root", default=None, help="where MNIST/raw lives (default: $CNNLAB_DATA, else ~/.cache/cnnlab)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/adversarial-study")
    args = parser.parse_args()
    out = Path(args.out)
    arms = {"normal": {}, "adversarial": {"adversarial": "fgsm", "adv_eps": 0.25, "adv_alpha": 0.5}}
    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    started = time.perf_counter()
    for seed in args.seeds:
        for arm, extra in arms.items():
            run_dir = out / f"{arm}-seed{seed}"
            given = {**RECIPE, **extra, "seed": seed, "data_root": args.data_root, "out": str(run_dir)}
            trained = train_classifier(given, command=["scripts/adversarial_study.py"])
            (fgsm,) = attack_runs([run_dir], "fgsm", EPS, data_root=args.data_root, device="cpu")
            (pgd,) = attack_runs([run_dir], "pgd", [0.1, 0.25], steps=10, data_root=args.data_root, device="cpu")
            row = {
                "clean": trained.history[-1]["test_error"],
                "fgsm": {r.eps: r.accuracy for r in fgsm.rows},
                "fgsm_confidence": next(r.confidence for r in fgsm.rows if r.eps == 0.25),
                "pgd": {r.eps: 1 - r.accuracy for r in pgd.rows},
            }
            results[arm].append(row)
            print(f"seed {seed} {arm}: clean error {row['clean']:.2%}, FGSM 0.25 error {1 - row['fgsm'][0.25]:.2%}")
    print(f"\n{len(args.seeds)} seeds ({', '.join(map(str, args.seeds))}), {time.perf_counter() - started:.0f} s\n")
    print("| | clean error | FGSM ε = 0.25: error | its mean confidence | PGD ε = 0.25 (10 steps): error |")
    print("|---|---:|---:|---:|---:|")
    for arm, rows in results.items():
        print(
            f"| {arm} | {_stat([r['clean'] for r in rows])} | {_stat([1 - r['fgsm'][0.25] for r in rows])} | "
            f"{_stat([r['fgsm_confidence'] for r in rows])} | {_stat([r['pgd'][0.25] for r in rows])} |"
        )
    print("\n| ε | " + " | ".join(f"{e:g}" for e in EPS) + " |")
    print("|---|" + "---:|" * len(EPS))
    for arm, rows in results.items():
        print(f"| {arm} | " + " | ".join(_stat([r["fgsm"][e] for r in rows]) for e in EPS) + " |")
    print("\nPGD accuracy at ε = 0.1: " + ", ".join(f"{arm} {_stat([1 - r['pgd'][0.1] for r in rows])}"
                                               for arm, rows in results.items()))  # fmt: skip


if __name__ == "__main__":
    main()
