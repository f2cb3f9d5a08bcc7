"""The discriminator as a feature extractor (Radford et al. 2015, section 5.1), against the same network trained from
scratch on the same few labels: ``cnnlab gan probe``.

The paper's recipe, followed here: the trained discriminator, frozen, maps each image to "all layers' features,
maxpooling each layer's representation to produce a 4 × 4 spatial grid", "flattened and concatenated", and "a
regularized linear L2-SVM classifier is trained on top of them" (the existing probe, :func:`cnnlab.transfer.probe.
linear_probe`, on standardised features: ``classifier="svm"`` is scikit-learn's LinearSVC, squared hinge = the
paper's L2-SVM). At 28 px the discriminator has two stages (64×14×14, 128×7×7): 64·16 + 128·16 = 3,072 features.
The default classifier is ``ridge`` (least squares with an L2 penalty, closed form), not the SVM: on 10,000 × 3,072
features the SVM's solver took 112 s (dual) to 320 s (primal) per fit on one shared CPU thread against ridge's 5 s,
for the same accuracy (88.0 % vs 88.1 % on 2,000 test images, in that one timing check, which chose nothing), and
the probe fits 2 nets × 5 values of C per labelled subset.

The comparison: the discriminator's architecture with a new head, one output per class, trained from random
weights by the engine (``cnnlab train``'s recipe for it, no augmentation) on exactly the same labelled images.

A control the paper does not report: the same probe on the discriminator's *untrained* weights (its
initialisation, seeded), which says how much of the probe's accuracy GAN training added; random convolutional
features are a strong baseline at few labels.

What is chosen on a validation split (``holdout`` of the training images, stratified, held out before the labelled
images are drawn, exactly as ``cnnlab train --holdout`` does), never on the test split: the probe's C (from
:data:`C_GRID`) and the scratch network's epoch (``best.pt``: the epoch of lowest validation error). The test split
is scored once per probe and once per scratch network, with what was chosen.

>>> result = probe_discriminator("runs/fmnist-gan", labels=(10, 100), seeds=3)
>>> print("\\n".join(result.table()))
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError, UnknownNameError
from cnnlab.train import ClassificationTask

FEATURES = ("paper", "pre-logits")  # every stage max-pooled to a 4×4 grid (section 5.1), or the flattened last maps
GRID = 4  # section 5.1: "maxpooling each layer's representation to produce a 4 × 4 spatial grid"
C_GRID = (0.0001, 0.001, 0.01, 0.1, 1.0)  # the classifier's C (inverse regularisation), chosen on the validation split
HOLDOUT = 0.02  # training images held out to choose C and the scratch epoch: 1,200 of Fashion-MNIST's 60,000
SCRATCH_STEPS = 1000  # scratch training: about this many steps (batch 32), within SCRATCH_EPOCHS
SCRATCH_EPOCHS = (10, 60)  # at least / at most; 10 labels per class of 10 classes: 60 epochs of 3 steps


@dataclass
class ProbeCell:
    """One labelled subset (``labels_per_class`` images of each class, drawn with ``seed``) and both ways to use it.
    Errors are fractions in [0, 1]; ``probe_c`` and ``scratch_epoch`` are what the validation split chose."""

    labels_per_class: int
    seed: int
    probe_error: float
    probe_val_error: float
    probe_c: float
    untrained_error: float
    untrained_c: float
    scratch_error: float
    scratch_val_error: float
    scratch_epoch: int
    scratch_epochs: int
    seconds: dict = field(default_factory=dict)


@dataclass
class ProbeResult:
    """:func:`probe_discriminator`'s cells, how the features were taken, and where the figures were written."""

    cells: list[ProbeCell]
    features: str
    dim: int
    validation_images: int
    path: Path | None = None

    def summary(self) -> list[dict]:
        """Per labels-per-class: test accuracy (%) of the probe and of the scratch net, mean and sd over seeds."""
        rows = []
        for n in sorted({c.labels_per_class for c in self.cells}):
            cells = [c for c in self.cells if c.labels_per_class == n]
            row = {"labels_per_class": n, "seeds": len(cells)}
            for way in ("probe", "untrained", "scratch"):
                accuracies = [100 * (1 - getattr(c, f"{way}_error")) for c in cells]
                row[f"{way}_mean"] = statistics.fmean(accuracies)
                row[f"{way}_sd"] = statistics.stdev(accuracies) if len(accuracies) > 1 else math.nan
            rows.append(row)
        return rows

    def table(self) -> list[str]:
        """The summary as aligned text lines (accuracy %, mean ± sd over seeds)."""
        heads = ("trained D + linear", "untrained D + linear", "same net from scratch")
        lines = [f"{'labels/class':>12}  " + "  ".join(f"{h:>22}" for h in heads) + "  seeds"]
        for r in self.summary():
            cells = [
                f"{r[f'{w}_mean']:.2f} ± {r[f'{w}_sd']:.2f} %" if r["seeds"] > 1 else f"{r[f'{w}_mean']:.2f} %"
                for w in ("probe", "untrained", "scratch")
            ]
            lines.append(f"{r['labels_per_class']:>12}  " + "  ".join(f"{c:>22}" for c in cells) + f"  {r['seeds']:>5}")
        return lines


@torch.no_grad()
def discriminator_features(discriminator: nn.Module, images: torch.Tensor, kind: str = "paper") -> torch.Tensor:
    """(B, D) features of a discriminator (eval mode is the caller's): ``paper``, every stage's maps max-pooled to
    a 4×4 grid, flattened and concatenated (section 5.1; a stage with flat output, as the 2014 MLP's maxout
    layers, is kept whole); ``pre-logits``, the contract's ``forward_head(..., pre_logits=True)``.

    Written here rather than with :func:`cnnlab.transfer.features.stage_features`, which average-pools one stage."""
    if kind == "pre-logits":
        return discriminator.forward_head(discriminator.forward_features(images), pre_logits=True).flatten(1)
    if kind != "paper":
        raise UnknownNameError("features", kind, FEATURES)
    pooled, x = [], images
    for stage in discriminator.features.children():
        x = stage(x)
        # (B, C, h, w) -> (B, C, 4, 4) -> (B, 16·C); adaptive windows where h is not a multiple of 4 (14 -> 4)
        pooled.append(F.adaptive_max_pool2d(x, GRID).flatten(1) if x.ndim == 4 else x.flatten(1))
    return torch.cat(pooled, dim=1)


def scratch_epochs(labelled: int, batch_size: int = 32) -> int:
    """Epochs for the scratch network: about :data:`SCRATCH_STEPS` steps, within :data:`SCRATCH_EPOCHS`."""
    steps_per_epoch = max(labelled // batch_size, 1)
    low, high = SCRATCH_EPOCHS
    return min(high, max(low, math.ceil(SCRATCH_STEPS / steps_per_epoch)))


def _check(labels: Sequence[int], seeds: int, features: str, holdout: float) -> None:
    if not labels or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in labels):
        raise ConfigError(f"--labels must be positive whole numbers (images per class), got {list(labels)!r}.")
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ConfigError(f"--seeds must be a positive whole number, got {seeds!r}.")
    if features not in FEATURES:
        raise UnknownNameError("features", features, FEATURES)
    if not 0 < holdout < 0.5:
        raise ConfigError(f"--holdout must be a fraction in (0, 0.5), got {holdout!r}.")


def probe_discriminator(
    gan_run: str | Path,
    labels: Sequence[int] = (10, 100, 1000),
    seeds: int = 3,
    features: str = "paper",
    holdout: float = HOLDOUT,
    classifier: str = "ridge",
    out: str | Path | None = None,
    data_root: str | None = None,
    device: str = "cpu",
    epochs: int | None = None,
    say: Callable[[str], None] = lambda text: None,
) -> ProbeResult:
    """``cnnlab gan probe``: for each labels-per-class count and seed, a linear probe on the GAN run's frozen
    discriminator and the same network trained from scratch, on the same labelled training images; test errors.

    Args:
        gan_run: a GAN run directory or checkpoint (its data are the data probed).
        labels: labelled training images per class.
        seeds: seeds 0 … seeds − 1: each draws its own labelled subset and validation split.
        features: ``paper`` (every stage max-pooled to 4×4) or ``pre-logits`` (see :func:`discriminator_features`).
        holdout: fraction of the training images held out (stratified) to choose C and the scratch epoch.
        classifier: the linear probe's (:data:`cnnlab.transfer.probe.CLASSIFIERS`): ``ridge``, ``svm`` (the paper's
            L2-SVM; minutes per fit at 1,000 labels per class on a CPU), ``logreg``.
        out: JSON file of every cell and the summary (default ``RUN_DIR/probe-<features>.json``); the scratch runs
            are run directories in ``RUN_DIR/probe-scratch/``.
        epochs: scratch epochs (default: :func:`scratch_epochs`).

    Raises:
        ConfigError, UnknownNameError: bad settings, before any work; a photo-folder GAN (in-memory data only).
        CheckpointError: no GAN run there.
    """
    from cnnlab import models
    from cnnlab.data import DeviceTensorLoader, load_dataset
    from cnnlab.data.datasets import split_off
    from cnnlab.generative.runs import load_gan
    from cnnlab.outputs import output_file
    from cnnlab.train import resolve_device
    from cnnlab.train.setup import subset_per_class
    from cnnlab.transfer.probe import CLASSIFIERS, linear_probe

    _check(labels, seeds, features, holdout)
    if classifier not in CLASSIFIERS:
        raise UnknownNameError("classifier", classifier, CLASSIFIERS)
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise ConfigError(f"--epochs must be a positive whole number, got {epochs!r}.")
    gan = load_gan(gan_run, device)
    path = output_file(out if out is not None else gan.path.parent / f"probe-{features}.json", "--out", {".json"},
                       "JSON file")  # fmt: skip
    name = gan.discriminator_name
    dataset = load_dataset(gan.data, data_root)
    if dataset.streaming:
        raise ConfigError(f"`cnnlab gan probe` reads in-memory datasets; {gan.data} is a photo folder.")
    resolved = resolve_device(device)
    pre = gan.preprocessing
    torch.manual_seed(0)  # the untrained control: the zoo's initialisation (N(0, 0.02)), seeded
    nets = {"trained": gan.discriminator.eval(), "untrained": models.create(name, num_classes=1,
            in_chans=int(gan.spec["channels"]), device=resolved).eval()}  # fmt: skip

    def featurize(split) -> dict[str, tuple[np.ndarray, np.ndarray]]:  # per net: (N, D) features, (N,) labels
        loader = DeviceTensorLoader(pre.to_stored_size(split.images), split.labels, pre, 500, device=resolved)
        feats: dict[str, list] = {k: [] for k in nets}
        ys = []
        for images, y in loader.batches():
            for k, net in nets.items():
                feats[k].append(discriminator_features(net, images, features).float().cpu())
            ys.append(y.cpu())
        labels_of = torch.cat(ys).numpy()
        return {k: (torch.cat(v).numpy(), labels_of) for k, v in feats.items()}

    def fit(net: str, train: dict, val: dict, test: dict) -> tuple[dict, float, float]:
        """(test result, chosen C, its validation error): C from C_GRID on the validation split, then the test."""
        (tx, ty), (vx, vy), (sx, sy) = train[net], val[net], test[net]
        fitting = {"train_x": tx, "train_y": ty, "test_x": vx, "test_y": vy}
        choice = {c: linear_probe(fitting, classifier, c)["test_error"] for c in C_GRID}
        best_c = min(C_GRID, key=lambda c: (choice[c], c))  # ties: the stronger regularisation
        return (
            linear_probe({"train_x": tx, "train_y": ty, "test_x": sx, "test_y": sy}, classifier, best_c),
            best_c,
            choice[best_c],
        )

    started = time.perf_counter()
    test = featurize(dataset.test)
    dim = int(test["trained"][0].shape[1])
    say(f"test features: {len(test['trained'][1]):,} × {dim:,} ({time.perf_counter() - started:.1f} s)")
    cells: list[ProbeCell] = []
    validation_images = 0
    for seed in range(seeds):
        kept, held = split_off(dataset.train, holdout, seed)  # as `cnnlab train --holdout` splits, with this seed
        val = featurize(held)
        validation_images = len(val["trained"][1])
        for n in labels:
            timing: dict[str, float] = {}
            clock = time.perf_counter()
            train = featurize(subset_per_class(kept, n, seed))  # the images `--labels-per-class n --seed s` trains on
            probe, best_c, val_error = fit("trained", train, val, test)
            untrained, untrained_c, _ = fit("untrained", train, val, test)
            timing["probe"] = time.perf_counter() - clock
            clock = time.perf_counter()
            scratch = _scratch(name, gan.data, n, dataset.num_classes, seed, holdout, epochs, data_root, device,
                               gan.path.parent / "probe-scratch" / f"labels{n}-seed{seed}")  # fmt: skip
            timing["scratch"] = time.perf_counter() - clock
            cell = ProbeCell(n, seed, probe["test_error"], val_error, best_c, untrained["test_error"], untrained_c,
                             **scratch, seconds=timing)  # fmt: skip
            cells.append(cell)
            say(
                f"{n} labels/class, seed {seed}: probe {1 - cell.probe_error:.2%} (C {best_c:g}), untrained D "
                f"{1 - cell.untrained_error:.2%}, scratch "
                f"{1 - cell.scratch_error:.2%} (epoch {cell.scratch_epoch} of {cell.scratch_epochs}); "
                f"{timing['probe']:.0f} s + {timing['scratch']:.0f} s"
            )
    result = ProbeResult(cells, features, dim, validation_images, path)
    record = {
        "gan_run": str(gan.path),
        "data": gan.data,
        "discriminator": name,
        "features": features,
        "dim": result.dim,
        "holdout": holdout,
        "validation_images": validation_images,
        "classifier": classifier,
        "c_grid": list(C_GRID),
        "cells": [asdict(c) for c in cells],
        "summary": result.summary(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return result


def _scratch(model: str, data: str, labels_per_class: int, classes: int, seed: int, holdout: float, epochs: int | None,
             data_root: str | None, device: str, out: Path) -> dict:  # fmt: skip
    """The discriminator's architecture with a new head (one output per class), trained from random weights by the
    engine on the labelled subset (``cnnlab train``'s recipe for the model, no augmentation);
    the epoch of lowest validation error is scored once on the test split."""
    from cnnlab.train import ClassificationObjective, RunRecord, TrainConfig, Trainer, build_run, evaluate, resolve

    batch = resolve(TrainConfig(model=model, data=data)).batch_size
    config = resolve(
        TrainConfig(model=model, data=data, data_root=data_root, labels_per_class=labels_per_class, holdout=holdout,
                    seed=seed, augment="none", device=device, out=str(out),
                    epochs=epochs or scratch_epochs(labels_per_class * classes, batch), log_every=50)
    )  # fmt: skip
    run = build_run(config, overwrite=True)
    objective = ClassificationObjective(config.loss, config.label_smoothing)
    trainer = Trainer(run, task=ValidationSelected(run.model, objective))
    try:
        history = trainer.fit()
    finally:
        trainer.close()
    best = min(history, key=lambda row: row["val_error"])
    model_at_best = RunRecord.load(run.run_dir.best).build_model(run.device)
    tested = evaluate(model_at_best, run.test_loader, objective)
    return {
        "scratch_error": float(tested["top1_error"]),
        "scratch_val_error": float(best["val_error"]),
        "scratch_epoch": int(best["epoch"]),
        "scratch_epochs": int(config.epochs),
    }


class ValidationSelected(ClassificationTask):
    """Classification scored on the validation split only after each epoch (``best.pt``: its lowest error); the
    test split is scored once afterwards, at the chosen epoch. (The engine's default task scores the test split
    every epoch too: at 10 labels per class that pass over 10,000 images costs more than the training itself.)"""

    def __init__(self, model: nn.Module, objective):
        super().__init__(model, objective, validation=True)

    def evaluate(self, nets, run, distributed: bool) -> dict[str, float]:
        from cnnlab.train import evaluate

        result = evaluate(nets["model"], run.val_loader, self.objective, self.topk, distributed=distributed)
        return {"val_loss": result["loss"], "val_error": result["top1_error"]}

    def epoch_text(self, row) -> str:
        return f"val loss {row['val_loss']:.4f}  val error {row['val_error']:.2%}"
