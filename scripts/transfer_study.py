"""The transfer-learning study of docs/transfer.md, on real MNIST and Fashion-MNIST.

For each direction (MNIST -> Fashion-MNIST and back) and each label budget (10, 100, 1,000 images per class):
from scratch; linear probes on every stage's features; fine-tuning the head only; fine-tuning everything; and,
at 100 labels per class, Yosinski et al.'s sweep of the number of frozen stages. Writes a Markdown table and a
plot. Usage:

    python scripts/transfer_study.py --out docs/images/transfer   # data from $CNNLAB_DATA (or --data-root DIR)
    python scripts/transfer_study.py --direction fashion-mnist   # one direction
    python scripts/transfer_study.py --replot   # plot and tables from results.json

Results of a direction already in results.json are kept unless that direction is run again.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from cnnlab.data import DeviceTensorLoader, load_dataset
from cnnlab.train import RunRecord, TrainConfig, Trainer, build_run, resolve
from cnnlab.train.setup import subset_per_class
from cnnlab.transfer import (
    extract_features,
    feature_layers,
    freeze,
    frozen_stages,
    head_and_body_parameters,
    linear_probe,
)

MODEL = "lenet5-modern"
BUDGETS = (10, 100, 1000)
EPOCHS = {10: 30, 100: 15, 1000: 6}  # fewer images, more passes; about 300-2,000 steps each
BATCH = {10: 10, 100: 32, 1000: 32}
SEEDS = (0, 1, 2)  # labelled subset, initialisation and order; 10 images per class vary a lot between draws
RECIPE_LR, RECIPE_BATCH = 0.05, 32  # the mnist recipe's η (head; body η/10), scaled linearly with the batch


def train_source(data: str, root: str | None, out: Path) -> Path:
    run_dir = out / f"source-{data}"
    if not (run_dir / "checkpoint.pt").exists():
        config = resolve(
            TrainConfig(model=MODEL, data=data, data_root=root, epochs=3, augment="none", out=str(run_dir))
        )
        Trainer(build_run(config)).fit()
    return run_dir


def finetune(
    source: Path | None, data: str, root: str | None, per_class: int, freeze_through: str | None, out: Path, seed: int
) -> float:
    config = resolve(
        TrainConfig(
            model=MODEL,
            data=data,
            data_root=root,
            labels_per_class=per_class,
            epochs=EPOCHS[per_class],
            batch_size=BATCH[per_class],
            lr=RECIPE_LR * BATCH[per_class] / RECIPE_BATCH,
            seed=seed,
            augment="none",
            out=str(out / f"run-{time.monotonic_ns()}"),
        )
    )
    run = build_run(config)
    groups = None
    if source is not None:
        model = RunRecord.load(source).build_model()
        model.reset_classifier(run.dataset.num_classes)
        run.model = model.to(run.device)
        freeze(run.model, frozen_stages(run.model, freeze_through) if freeze_through else [])
        head, body = head_and_body_parameters(run.model)
        groups = [{"params": head, "lr": config.lr}, {"params": body, "lr": config.lr / 10}]
    history = Trainer(run, param_groups=groups).fit()
    return 1 - history[-1]["test_error"]


def probes(source: Path, data: str, root: str | None) -> dict[str, dict[int, float]]:
    record = RunRecord.load(source)
    model, pre = record.build_model(), record.preprocessing
    dataset = load_dataset(data, root)
    results: dict[str, dict[int, float]] = {}
    test_loader = DeviceTensorLoader(pre.to_stored_size(dataset.test.images), dataset.test.labels, pre, 1000)
    for layer in feature_layers(model):
        test = extract_features(model, test_loader, layer)
        results[layer] = {}
        for n in BUDGETS:
            train_split = subset_per_class(dataset.train, n, 0)
            train = extract_features(
                model, DeviceTensorLoader(pre.to_stored_size(train_split.images), train_split.labels, pre, 1000), layer
            )
            fit = linear_probe(
                {"train_x": train[0], "train_y": train[1], "test_x": test[0], "test_y": test[1]}, "logreg"
            )
            results[layer][n] = 1 - fit["test_error"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-root",
        default=None,
        help="where MNIST/raw and FashionMNIST/raw live (default: $CNNLAB_DATA, else ~/.cache/cnnlab)",
    )
    parser.add_argument("--out", default="docs/images/transfer")
    parser.add_argument(
        "--direction",
        choices=["mnist", "fashion-mnist", "both"],
        default="both",
        help="source dataset of the direction to run (default: both directions)",
    )
    parser.add_argument("--replot", action="store_true", help="only redraw the plot and tables from results.json")
    args = parser.parse_args()
    out = Path(args.out)
    if args.replot:
        results = json.loads((out / "results.json").read_text())
        plot(results, out / "frozen-stages.png")
        (out / "tables.md").write_text(table(results))
        return
    work = Path("runs/transfer-study")
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    started = time.time()
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for source_data, target in (("mnist", "fashion-mnist"), ("fashion-mnist", "mnist")):
        if args.direction not in ("both", source_data):
            continue
        source = train_source(source_data, args.data_root, work)
        key = f"{source_data} -> {target}"
        r = {"scratch": {}, "head only": {}, "all": {}, "frozen": {}}

        def over_seeds(src: Path | None, n: int, freeze_through: str | None, target: str = target) -> list[float]:
            return [finetune(src, target, args.data_root, n, freeze_through, work, seed) for seed in SEEDS]

        for n in BUDGETS:
            r["scratch"][n] = over_seeds(None, n, None)
            r["head only"][n] = over_seeds(source, n, "c5")
            r["all"][n] = over_seeds(source, n, None)
        stages = ["c1", "s2", "c3", "s4", "c5"]
        r["frozen"] = {0: r["all"][100]}
        for k, stage in enumerate(stages, start=1):
            r["frozen"][k] = r["head only"][100] if stage == "c5" else over_seeds(source, 100, stage)
        r["probe"] = probes(source, target, args.data_root)
        results[key] = r
        print(key, json.dumps(r, indent=1), flush=True)
        results_path.write_text(json.dumps(results, indent=1))  # after each direction: a crash keeps the first
    plot(results, out / "frozen-stages.png")
    (out / "tables.md").write_text(table(results))
    print(table(results))
    print(f"done in {time.time() - started:.0f} s")


def mean_sd(accuracies: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation, in percent."""
    values = torch.tensor(accuracies, dtype=torch.float64) * 100
    return values.mean().item(), (values.std().item() if len(values) > 1 else 0.0)


def table(results: dict) -> str:
    """The Markdown tables of docs/transfer.md (mean ± sd over the seeds)."""
    lines = []
    for key, r in results.items():
        lines += [
            f"### {key}",
            "",
            "| test accuracy (%) | 10 / class | 100 / class | 1,000 / class |",
            "|---|---:|---:|---:|",
        ]
        rows = [("from scratch", r["scratch"]), ("fine-tune all stages", r["all"])]
        rows += [("fine-tune the head only (c1–c5 frozen)", r["head only"])]
        for name, cells in rows:
            lines.append(
                f"| {name} | " + " | ".join("{:.1f} ± {:.1f}".format(*mean_sd(cells[n])) for n in cells) + " |"
            )
        for layer, cells in r["probe"].items():
            lines.append(f"| linear probe on {layer} | " + " | ".join(f"{100 * v:.1f}" for v in cells.values()) + " |")
        frozen = r["frozen"]
        lines += ["", "| stages frozen | " + " | ".join(str(k) for k in frozen) + " |", "|---|" + "---:|" * len(frozen)]
        lines.append(
            "| test accuracy (%) | " + " | ".join("{:.1f} ± {:.1f}".format(*mean_sd(v)) for v in frozen.values()) + " |"
        )
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for key, r in results.items():
        frozen = {int(k): mean_sd(v) for k, v in r["frozen"].items()}  # JSON keys are strings
        ks = sorted(frozen)
        ax.errorbar(
            ks,
            [frozen[k][0] for k in ks],
            yerr=[frozen[k][1] for k in ks],
            fmt="o-",
            capsize=3,
            label=f"{key} (fine-tuned)",
        )
        color = ax.lines[-1].get_color()
        scratch, spread = mean_sd(r["scratch"][100] if 100 in r["scratch"] else r["scratch"]["100"])
        ax.axhline(scratch, linestyle="--", color=color, alpha=0.6, label=f"{key.split(' -> ')[1]} from scratch (± sd)")
        ax.axhspan(scratch - spread, scratch + spread, color=color, alpha=0.1)
    ax.set(
        xlabel="stages frozen (0 = fine-tune all; 5 = c1..c5, head only)",
        ylabel="test accuracy (%)",
        title=f"LeNet-5 (modern), 100 labels per class, mean ± sd of {len(SEEDS)} seeds",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
