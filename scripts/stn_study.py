"""docs/stn.md's table, over seeds: the spatial transformer paper's models (Jaderberg et al. 2015, Table 1) on the
distorted-MNIST sets, each trained with one fixed recipe through the engine; the test error of the epoch that the
validation split (10% of the training images, held out) chooses. Prints mean ± sd (sample sd) over the seeds as
markdown rows and keeps every run's figures in <out>/results.json (appended as runs finish, so a partial study
still reports what it measured, and a second call goes on where the first stopped: finished runs are reused, an
interrupted one continues from its last checkpoint, exactly, as ``cnnlab train --resume auto`` does).

    python scripts/stn_study.py --data mnist-rts mnist-cluttered --models dmnist-cnn st-cnn --seeds 0 1 2
    python scripts/stn_study.py --data mnist-rts --models st-cnn:transform=projective st-cnn:transform=tps
    python scripts/stn_study.py --data mnist-rts --models st-cnn --epochs 16 --redraw --out runs/stn-redraw

A model is a registry name, optionally followed by ``:option=value`` pairs (comma-separated) for its
``--model-option``s: ``st-fcn:transform=tps`` is the paper's ST-FCN with a thin-plate-spline transformer.

The data root is $CNNLAB_DATA (or --data-root), the folder holding MNIST/raw.

With ``--table``, nothing is trained: the results files given are merged and printed as the paper's Table 1 (its
models as rows, R, RTS, P, E and cluttered as columns; paper / ours in each cell, ours the mean ± sd of the seeds):

    python scripts/stn_study.py --table runs/stn-study/results.json runs/stn-fcn/results.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from cnnlab.cli import _parse_model_options  # the CLI's KEY=VALUE reading, so the options mean the same here
from cnnlab.errors import CnnlabError
from cnnlab.workflows import train_classifier

# One recipe for every cell (chosen before the study, not tuned on the test split): SGD with momentum 0.9 at batch
# 128, η 0.02 per batch with a cosine decay to zero, no weight decay, no augmentation (the distortion is the data).
RECIPE = {"epochs": 3, "batch_size": 128, "lr": 0.02, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.0}
RECIPE |= {"schedule": "cosine", "augment": "none", "device": "cpu"}


def _stat(values: list[float], unit: str = "%") -> str:
    """Mean ± sample sd of error fractions, in percent (the "%" after each figure, or ``unit``)."""
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f}{unit} ± {100 * sd:.2f}{unit}"


# Jaderberg et al. 2015, Table 1 (test error %): rows as (label, our model spec), columns R, RTS, P, E, cluttered
# (the paper gives the cluttered set one column per model, without the transform variants).
PAPER_TABLE = (
    ("FCN", "dmnist-fcn", (2.1, 5.2, 3.1, 3.2, 13.2)),
    ("CNN", "dmnist-cnn", (1.2, 0.8, 1.5, 1.4, 3.5)),
    ("ST-FCN Aff", "st-fcn", (1.2, 0.8, 1.5, 2.7, 2.0)),
    ("ST-FCN Proj", "st-fcn:transform=projective", (1.3, 0.9, 1.4, 2.6, None)),
    ("ST-FCN TPS", "st-fcn:transform=tps", (1.1, 0.8, 1.4, 2.4, None)),
    ("ST-CNN Aff", "st-cnn", (0.7, 0.5, 0.8, 1.2, 1.7)),
    ("ST-CNN Proj", "st-cnn:transform=projective", (0.8, 0.6, 0.8, 1.3, None)),
    ("ST-CNN TPS", "st-cnn:transform=tps", (0.7, 0.5, 0.8, 1.1, None)),
)
TABLE_SETS = ("mnist-rotated", "mnist-rts", "mnist-projective", "mnist-elastic", "mnist-cluttered")


def print_table(paths: list[str]) -> None:
    """The paper's Table 1 beside ours, from results files (later files add to earlier ones; a run measured twice
    counts once, the later)."""
    runs: dict[tuple, dict] = {}
    for path in paths:
        for row in json.loads(Path(path).read_text()):
            runs[row["data"], row["model"], row["seed"]] = row
    print("| model | R (paper / ours) | RTS | P | E | cluttered |")
    print("|---|---|---|---|---|---|")
    for label, spec, paper in PAPER_TABLE:
        cells = []
        for data, figure in zip(TABLE_SETS, paper, strict=True):
            errors = [r["test_error"] for (d, m, _), r in sorted(runs.items()) if d == data and m == spec]
            ours = f"{_stat(errors, unit='')} (n={len(errors)})" if errors else "not run"
            cells.append("—" if figure is None and not errors else f"{figure if figure is not None else '—'} / {ours}")
        print(f"| {label} | " + " | ".join(cells) + " |")


def _parse_model(spec: str) -> tuple[str, dict]:
    """'st-cnn:transform=tps' -> ('st-cnn', {'transform': 'tps'}), the values read as --model-option reads them."""
    name, _, rest = spec.partition(":")
    return name, _parse_model_options(list(filter(None, rest.split(","))), "--models")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["mnist-rts", "mnist-cluttered"])
    parser.add_argument("--models", nargs="+", default=["dmnist-cnn", "st-cnn"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    parser.add_argument("--data-root", default=None, help="default: $CNNLAB_DATA")
    parser.add_argument("--out", default="runs/stn-study")
    parser.add_argument(
        "--redraw", action="store_true", help="distort the training digits afresh every epoch (cnnlab train --redraw)"
    )
    parser.add_argument("--table", nargs="+", metavar="RESULTS", help="print Table 1 from these results.json files")
    args = parser.parse_args()
    if args.table:
        missing = [path for path in args.table if not Path(path).is_file()]
        if missing:
            raise SystemExit(f"no results file at {', '.join(missing)} (a study writes <out>/results.json)")
        print_table(args.table)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = out / "results.json"
    results = json.loads(record.read_text()) if record.exists() else []
    for data in args.data:
        for seed in args.seeds:
            for model in args.models:
                name, options = _parse_model(model)
                label = model.replace(":", "-").replace("=", "-").replace(",", "-")
                run_dir = out / f"{label}-{data}-seed{seed}"
                if any((r["data"], r["model"], r["seed"]) == (data, model, seed) for r in results):
                    continue  # measured by an earlier, interrupted call
                given = {**RECIPE, "epochs": args.epochs, "model": name, "data": data, "seed": seed}
                given |= {"out": str(run_dir), "data_root": args.data_root, "redraw": args.redraw}
                resumed = run_dir.exists()  # an interrupted run: this call's seconds are only the rest of it
                started = time.perf_counter()
                trained = train_classifier(
                    given, model_options=options, resume="auto", say=print, command=["scripts/stn_study.py"]
                )
                # the engine's own choice (lowest validation error, first of equals), as `cnnlab reproduce` reads it
                best = trained.trainer.monitor.best(trained.history)
                row = {"data": data, "model": model, "seed": seed, "test_error": best["test_error"]}
                row |= {
                    "val_error": best["val_error"],
                    "epoch": best["epoch"],
                    "seconds": time.perf_counter() - started,
                    "resumed": resumed,
                    "redraw": args.redraw,
                }
                for split in ("train", "val", "test"):  # the curves: a train/validation gap shows memorising
                    row[f"history_{split}_error"] = [h[f"{split}_error"] for h in trained.history]
                results.append(row)
                record.write_text(json.dumps(results, indent=1))
                print(f"{data} {model} seed {seed}: test error {row['test_error']:.2%} ({row['seconds']:.0f} s)")
    print("\n| data | model | test error (mean ± sd) | seeds | minutes per run |")
    print("|---|---|---:|---:|---:|")
    for data in args.data:
        for model in args.models:
            rows = [r for r in results if r["data"] == data and r["model"] == model]
            if rows:
                errors = [r["test_error"] for r in rows]
                minutes = statistics.mean(r["seconds"] for r in rows) / 60
                print(f"| {data} | {model} | {_stat(errors)} | {len(rows)} | {minutes:.1f} |")


if __name__ == "__main__":
    try:
        main()
    except CnnlabError as error:  # bad settings, missing data, an interrupted run: the message, not a traceback
        raise SystemExit(f"stn_study: {error}") from None
