"""Model selection on a validation split held out of the training data (issue 15): seeded, stratified, disjoint
from what is trained on, recorded in the run; best.pt and the summary's best are chosen on it, never on the test."""

import json

import torch

from cnnlab.data import load_dataset
from cnnlab.data.datasets import ImageSet, split_off
from cnnlab.train import TrainConfig, Trainer, build_run, load_checkpoint, resolve


def test_the_split_is_stratified_seeded_and_disjoint():
    train = load_dataset("digits").train
    kept, held = split_off(train, 0.1, seed=4)
    assert len(kept) + len(held) == len(train)
    for label in range(10):  # every class gives about a tenth
        n = int((train.labels == label).sum())
        assert abs(int((held.labels == label).sum()) - n / 10) <= 1
    again, _ = split_off(train, 0.1, seed=4)
    other, _ = split_off(train, 0.1, seed=5)
    assert torch.equal(again.images, kept.images) and not torch.equal(other.images, kept.images)
    index = {bytes(img.numpy()): i for i, img in enumerate(train.images)}
    kept_at = {index[bytes(img.numpy())] for img in kept.images}
    held_at = {index[bytes(img.numpy())] for img in held.images}
    assert not kept_at & held_at  # no image both trained on and validated on
    tiny = ImageSet(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 1]))
    kept, held = split_off(tiny, 0.5, seed=0)
    assert held.labels.tolist() == [1] and sorted(kept.labels.tolist()) == [0, 1]  # a class keeps an image


def test_best_is_chosen_on_validation_and_the_run_records_the_split(tmp_path):
    config = TrainConfig(model="lenet5-modern", epochs=3, augment="none", device="cpu", out=str(tmp_path / "r"))
    run = build_run(resolve(config))
    assert len(run.dataset.train) == 1295 and len(run.dataset.val) == 142 and len(run.dataset.test) == 360
    trainer = Trainer(run)
    history = trainer.fit()
    assert all({"val_loss", "val_error", "test_error"} <= set(row) for row in history)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["best"]["val_error"] == min(r["val_error"] for r in history)
    best = load_checkpoint(tmp_path / "r" / "best.pt")
    assert best["history"][-1]["val_error"] == min(r["val_error"] for r in history)
    header = (tmp_path / "r" / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,train_loss,train_error,val_loss,val_error,val_top5_error,test_loss")


def test_no_holdout_means_no_selection(tmp_path):
    config = resolve(TrainConfig(model="lenet5-modern", epochs=1, augment="none", device="cpu", holdout=0.0,
                                 out=str(tmp_path / "r")))  # fmt: skip
    trainer = Trainer(build_run(config))
    trainer.fit()
    assert trainer.run.val_loader is None and not (tmp_path / "r" / "best.pt").exists()
    assert "val_error" not in trainer.history[0]
