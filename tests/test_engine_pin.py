"""Pins the engine's numbers: seeded CPU runs written before the trainer was rebuilt around tasks must end with
the same weights after it (issue 13). Each fingerprint is, per tensor of the final state, the float64 sum and sum of
squares. Under the pinned torch version they agree to 1e-5 (relative): bit for bit on the CPU they were taken on, but
not across CPUs — on a VM with AVX-512 FP16 and AMX (2026-11-30) the same code and torch ended 1e-7 apart, float
rounding of other kernels, while anything the engine itself changes (an extra random draw, another order of
operations in a step) moves them by far more. Under other torch versions, and for the adversarial case (below),
the bound is 1e-3."""

import json
from pathlib import Path

import pytest
import torch

from cnnlab.data import DeviceTensorLoader
from cnnlab.train import TrainConfig, Trainer, build_run, resolve

PINNED_TORCH = "2.14"  # the fingerprints below were taken under torch 2.14.1 (CPU, x86-64)


def _trainer(config: TrainConfig, run_dir, objective=None) -> Trainer:
    run = build_run(resolve(config), run_dir=run_dir)
    tl, te = run.train_loader, run.test_loader
    run.train_loader = DeviceTensorLoader(
        tl.images[:256], tl.labels[:256], tl.preprocessing, tl.batch_size, shuffle=True, seed=config.seed,
        augment=tl.augment,
    )  # fmt: skip
    run.test_loader = DeviceTensorLoader(te.images[:96], te.labels[:96], te.preprocessing, 64)
    return Trainer(run, objective=objective)


def _fingerprint(state: dict) -> dict[str, tuple[float, float]]:
    return {
        k: (v.double().sum().item(), v.double().pow(2).sum().item()) for k, v in state.items() if v.is_floating_point()
    }


def _adversarial(run):
    from cnnlab.adversarial import AdversarialObjective

    return AdversarialObjective(run.preprocessing.mean, run.preprocessing.std, eps=0.2)


CASES = {
    # the paper's LeNet-5 (RBF output, MSE-like loss by default), distortions, EMA, accumulation, clipping, smoothing
    "lenet5-everything": dict(
        model="lenet5", epochs=2, batch_size=32, augment="lenet-distortions", ema_decay=0.9, accumulate_steps=2,
        clip_grad_norm=1.0, label_smoothing=0.1, checkpoint_every=5,
    ),
    "lenet5-modern-mse-adamw": dict(
        model="lenet5-modern", epochs=2, batch_size=16, augment="none", loss="mse", optimizer="adamw", lr=0.003,
        warmup_epochs=0.5,
    ),
    "lenet5-modern-adversarial": dict(model="lenet5-modern", epochs=1, batch_size=32, augment="none"),
}  # fmt: skip


def _train(name: str, tmp_path) -> dict:
    config = TrainConfig(**CASES[name], device="cpu", seed=3, holdout=0.0)  # pinned before the validation split
    trainer = _trainer(config, tmp_path / name)
    if name.endswith("adversarial"):
        trainer = _trainer(config, tmp_path / f"{name}-adv", objective=_adversarial(trainer.run))
    history = trainer.fit()
    return {"state": _fingerprint(trainer.eval_model.state_dict()), "test_loss": history[-1]["test_loss"]}


PINNED = json.loads((Path(__file__).parent / "pins" / "engine_pin.json").read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_final_weights_are_pinned(name, tmp_path):
    got = _train(name, tmp_path)
    want = PINNED[name]
    assert got["state"].keys() == want["state"].keys()
    pinned = torch.__version__.startswith(PINNED_TORCH)
    # FGSM's sign() turns a rounding difference in a near-zero gradient into a whole step: that case drifts
    # 2e-5 apart across CPUs (measured), so it gets the loose bound
    rel, abs_ = (1e-5, 1e-7) if pinned and not name.endswith("adversarial") else (1e-3, 1e-4)
    for key, (total, squares) in want["state"].items():
        assert got["state"][key] == pytest.approx((total, squares), rel=rel, abs=abs_), key
    if pinned:
        assert got["test_loss"] == pytest.approx(want["test_loss"], rel=rel)
