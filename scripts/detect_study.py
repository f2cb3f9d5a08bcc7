"""The detectors side by side on mnist-detection: each method trained on the same backbone, canvases and seeds;
the epoch chosen on the validation split (best.pt), its test mAP reported; then `cnnlab bench detect` on the runs.

    python scripts/detect_study.py --out runs/detect-study --seeds 0 --train-size 2000 --epochs 4

Resumable: finished runs are read back from OUT/results.json; a run directory left by an interrupted run continues
with --resume auto. docs/detection.md gives the figures this printed.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from cnnlab.bench.detect import bench_detectors
from cnnlab.detection import evaluate_detector, train_detector
from cnnlab.detection.detectors import METHODS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/detect-study")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--backbone", default="lenet5-modern")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--bench", action="store_true", help="then time the seed-0 runs side by side")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for seed in args.seeds:
        for method in args.methods:
            key = f"{method}-seed{seed}"
            if key in results:
                continue
            run_dir = out / key
            given = {"epochs": args.epochs, "seed": seed, "out": str(run_dir), "data_root": args.data_root}
            data_options = {"train_size": args.train_size, "test_size": args.test_size}
            started = time.perf_counter()
            result = train_detector(
                given, method=method, backbone=args.backbone, data_options=data_options, resume="auto", say=print
            )
            wall = time.perf_counter() - started
            best = min(result.history, key=lambda row: row["val_miss"])
            final = evaluate_detector(str(run_dir / "best.pt"), args.data_root)
            results[key] = {
                "method": method,
                "seed": seed,
                "best_epoch": best["epoch"],
                "val_map50": best["val_map50"],
                "test_map50": final.map50,
                "test_map": final.map,
                "train_seconds": sum(r["seconds"] for r in result.history),
                "wall_seconds": wall,
                "test_ms_per_image": final.seconds_per_image * 1000,
            }
            results_file.write_text(json.dumps(results, indent=1))
            print(key, results[key], flush=True)
    for method in args.methods:
        rows = [r for r in results.values() if r["method"] == method]
        for field in ("test_map50", "test_map", "train_seconds"):
            values = [r[field] for r in rows]
            sd = statistics.stdev(values) if len(values) > 1 else float("nan")
            print(f"{method:12} {field:14} {statistics.mean(values):.4f} ± {sd:.4f} (n={len(values)})")
    if args.bench:
        runs = [str(out / f"{m}-seed{args.seeds[0]}") for m in args.methods]
        print("\n".join(bench_detectors(runs, data_root=args.data_root)))


if __name__ == "__main__":
    main()
