"""The transfer-learning study of docs/transfer.md, on real MNIST and Fashion-MNIST.

For each direction (MNIST -> Fashion-MNIST and back) and each label budget (10, 100, 1,000 images per class):
from scratch; linear probes on every stage's features; fine-tuning the head only; fine-tuning everything; and,
at 100 labels per class, Yosinski et al.'s sweep of the number of frozen stages. Writes a Markdown table and a
plot. Usage:

    python scripts/transfer_study.py --data-root ../shared/datasets --out docs/images/transfer
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from cnnlab.data import DeviceTensorLoader, load_dataset
from cnnlab.train import TrainConfig, Trainer, build_run, load_checkpoint, model_from_checkpoint, resolve
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


def train_source(data: str, root: str, out: Path) -> Path:
    run_dir = out / f"source-{data}"
    if not (run_dir / "checkpoint.pt").exists():
        config = resolve(
            TrainConfig(model=MODEL, data=data, data_root=root, epochs=3, augment="none", out=str(run_dir))
        )
        Trainer(build_run(config)).fit()
    return run_dir


def finetune(source: Path | None, data: str, root: str, per_class: int, freeze_through: str | None, out: Path) -> float:
    config = resolve(
        TrainConfig(
            model=MODEL,
            data=data,
            data_root=root,
            labels_per_class=per_class,
            epochs=EPOCHS[per_class],
            batch_size=BATCH[per_class],
            augment="none",
            out=str(out / f"run-{time.monotonic_ns()}"),
        )
    )
    run = build_run(config)
    groups = None
    if source is not None:
        model = model_from_checkpoint(load_checkpoint(source))
        model.reset_classifier(run.dataset.num_classes)
        run.model = model.to(run.device)
        freeze(run.model, frozen_stages(run.model, freeze_through) if freeze_through else [])
        head, body = head_and_body_parameters(run.model)
        groups = [{"params": head, "lr": config.lr}, {"params": body, "lr": config.lr / 10}]
    history = Trainer(run, param_groups=groups).fit()
    return 1 - history[-1]["test_error"]


def probes(source: Path, data: str, root: str) -> dict[str, dict[int, float]]:
    payload = load_checkpoint(source)
    model = model_from_checkpoint(payload)
    from cnnlab.data import Preprocessing

    pre = Preprocessing.from_dict(payload["preprocessing"])
    dataset = load_dataset(data, root)
    results: dict[str, dict[int, float]] = {}
    test_loader = DeviceTensorLoader(pre.fit(dataset.test.images), dataset.test.labels, pre, 1000)
    for layer in feature_layers(model):
        test = extract_features(model, test_loader, layer)
        results[layer] = {}
        for n in BUDGETS:
            train_split = subset_per_class(dataset.train, n, 0)
            train = extract_features(
                model, DeviceTensorLoader(pre.fit(train_split.images), train_split.labels, pre, 1000), layer
            )
            fit = linear_probe(
                {"train_x": train[0], "train_y": train[1], "test_x": test[0], "test_y": test[1]}, "logreg"
            )
            results[layer][n] = 1 - fit["test_error"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", default="docs/images/transfer")
    args = parser.parse_args()
    out = Path(args.out)
    work = Path("runs/transfer-study")
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    started = time.time()
    results = {}
    for source_data, target in (("mnist", "fashion-mnist"), ("fashion-mnist", "mnist")):
        source = train_source(source_data, args.data_root, work)
        key = f"{source_data} -> {target}"
        r = {"scratch": {}, "head only": {}, "all": {}, "frozen": {}}
        for n in BUDGETS:
            r["scratch"][n] = finetune(None, target, args.data_root, n, None, work)
            r["head only"][n] = finetune(source, target, args.data_root, n, "c5", work)
            r["all"][n] = finetune(source, target, args.data_root, n, None, work)
        stages = ["c1", "s2", "c3", "s4", "c5"]
        r["frozen"] = {0: r["all"][100]}
        for k, stage in enumerate(stages, start=1):
            r["frozen"][k] = (
                r["head only"][100] if stage == "c5" else finetune(source, target, args.data_root, 100, stage, work)
            )
        r["probe"] = probes(source, target, args.data_root)
        results[key] = r
        print(key, json.dumps(r, indent=1), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "frozen-stages.png")
    print(f"done in {time.time() - started:.0f} s")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key, r in results.items():
        ks = sorted(int(k) for k in r["frozen"])
        ax.plot(ks, [100 * r["frozen"][k] for k in ks], "o-", label=f"{key} (fine-tuned)")
        ax.axhline(
            100 * r["scratch"][100],
            linestyle="--",
            color=ax.lines[-1].get_color(),
            alpha=0.6,
            label=f"{key.split(' -> ')[1]} from scratch",
        )
    ax.set(
        xlabel="stages frozen (0 = fine-tune all; 5 = c1..c5, head only)",
        ylabel="test accuracy (%)",
        title="LeNet-5 (modern), 100 labels per class: accuracy vs frozen stages",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
