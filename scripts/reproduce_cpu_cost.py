"""How long a seed of a `cnnlab reproduce` entry takes on this CPU, from throughput measured through the engine.

The GPU-sized entries are refused on a CPU (unless ``--cpu-anyway``), and ``cnnlab reproduce --list`` shows the CPU time
a seed of each: these figures (``Entry.cpu_minutes``, with the date they were measured) come from here.

    python scripts/reproduce_cpu_cost.py                        # every GPU-sized entry
    python scripts/reproduce_cpu_cost.py resnet-degradation     # chosen entries (any entry)

Each arm of an entry trains two epochs of its own recipe (model, options, batch, augmentation, adversarial training,
DropConnect's masks: everything that costs time) through the engine, on a class-balanced subset of ``--per-class``
training images a class, scored each epoch on the same number of test images a class. The second epoch's training
seconds give images per second (the first holds the warm-up); a second pass of the engine's evaluation over those
validation and test images, timed, gives evaluation's. A seed's minutes are then the entry's epochs of its real sizes
(the full training split less the held-out validation images; validation and test scored every epoch) at those rates,
summed over its arms. One run at a time, with the process's threads (2 on the 2-core CPU). Nothing of the test split is
read for anything but timing; the runs go to a temporary folder and are deleted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from cnnlab.data.datasets import load_dataset, split_off
from cnnlab.errors import CnnlabError
from cnnlab.reproduce.entries import ENTRIES
from cnnlab.reproduce.run import _arm_settings
from cnnlab.train import TrainConfig
from cnnlab.train.config import resolve
from cnnlab.workflows import train_classifier


def full_sizes(config: TrainConfig) -> tuple[int, int, int]:
    """(training, validation, test) images of the real run: the dataset's splits, the validation images held out
    of the training ones by the engine's own split."""
    dataset = load_dataset(config.data, config.data_root, val_split=config.val_split, seed=config.seed)
    held = len(split_off(dataset.train, config.holdout, config.seed)[1]) if config.holdout else 0
    return len(dataset.train) - held, held, len(dataset.test)


def measure_arm(entry, arm, per_class: int, data_root, out: Path) -> dict:
    """Throughput of one arm: training and evaluation images per second, and its minutes per seed."""
    _, given, options = _arm_settings(entry, arm, 0, False, out, data_root, "cpu")
    full = resolve(TrainConfig(**given, model_options=options))  # the real run's epochs and holdout (recipes too)
    given |= {"epochs": 2, "labels_per_class": per_class, "eval_per_class": per_class}
    given.pop("milestones", None)  # steps of the full run: past the end of two short epochs
    trained = train_classifier(given, model_options=options, overwrite=True, command=["reproduce_cpu_cost.py"])
    run = trained.run
    train_n = run.train_loader.num_samples
    eval_n = run.test_loader.num_samples + (run.val_loader.num_samples if run.val_loader is not None else 0)
    train_rate = train_n / trained.history[1]["seconds"]
    trained.trainer._evaluate()  # the engine's own evaluation (validation and test), warm; then timed
    started = time.perf_counter()
    trained.trainer._evaluate()
    eval_rate = eval_n / (time.perf_counter() - started)
    train_images, val_images, test_images = full_sizes(full)
    per_epoch = train_images / train_rate + (val_images + test_images) / eval_rate
    return {
        "arm": arm.label,
        "train_per_s": train_rate,
        "eval_per_s": eval_rate,
        "epochs": full.epochs,
        "minutes": full.epochs * per_epoch / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("entries", nargs="*", help="entry names (default: every GPU-sized entry)")
    parser.add_argument("--per-class", type=int, default=100, help="training and test images a class (default 100)")
    parser.add_argument("--data-root", default=None, help="default: $CNNLAB_DATA")
    args = parser.parse_args()
    names = args.entries or [name for name, entry in ENTRIES.items() if entry.gpu_only]
    unknown = [name for name in names if name not in ENTRIES]
    if unknown:
        raise SystemExit(f"no entry named {', '.join(unknown)}; the entries: {', '.join(ENTRIES)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, one run at a time")
    print("| entry | arm | training img/s | evaluation img/s | epochs | hours a seed |")
    print("|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            entry = ENTRIES[name]
            total = 0.0
            for index, arm in enumerate(entry.arms):
                row = measure_arm(entry, arm, args.per_class, args.data_root, Path(tmp) / f"{name}-{index}")
                total += row["minutes"]
                print(
                    f"| {name} | {arm.label} | {row['train_per_s']:,.0f} | {row['eval_per_s']:,.0f} | "
                    f"{row['epochs']} | {row['minutes'] / 60:.1f} |",
                    flush=True,
                )
            print(f"| **{name}** | all {len(entry.arms)} arms | | | | **{total / 60:.1f}** ({total:.0f} min) |")


if __name__ == "__main__":
    try:
        main()
    except CnnlabError as error:  # missing data, bad settings: the message, not a traceback
        raise SystemExit(f"reproduce_cpu_cost: {error}") from None
