"""The training engine: reproducibility, exact resume, non-finite losses, interruption."""

import os
import signal

import pytest
import torch

from cnnlab.errors import NonFiniteLossError, TrainingInterrupted
from cnnlab.train import ClassificationObjective, TrainConfig, Trainer, build_run, load_checkpoint, resolve


def _config(tmp_path, **overrides):
    # batch 32: 45 batches per epoch of the digits, which the step arithmetic below relies on
    return resolve(TrainConfig(**{"epochs": 2, "batch_size": 32, "out": str(tmp_path), **overrides}))


def _train(config, run_dir, objective=None):
    trainer = Trainer(build_run(config, run_dir=run_dir), objective=objective)
    trainer.fit()
    return trainer


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_same_seed_is_bit_identical_on_cpu(tmp_path):
    config = _config(tmp_path)
    a = _train(config, tmp_path / "a")
    b = _train(config, tmp_path / "b")
    _assert_same_weights(a.model, b.model)
    assert a.history[-1]["test_loss"] == b.history[-1]["test_loss"]
    c = _train(_config(tmp_path, seed=1), tmp_path / "c")
    assert not torch.equal(a.model.features.c1.conv.weight, c.model.features.c1.conv.weight)


def test_training_learns(tmp_path):
    trainer = _train(_config(tmp_path, epochs=3), tmp_path / "run")
    assert trainer.history[-1]["test_error"] < 0.5  # chance is 0.9; 3 epochs of LeNet-5 on digits reach < 0.1
    assert trainer.history[-1]["train_loss"] < trainer.history[0]["train_loss"]


def test_resume_at_an_epoch_boundary_is_bit_identical(tmp_path):
    config = _config(tmp_path)
    straight = _train(config, tmp_path / "straight")

    def stop_after_first_epoch(trainer, row):
        if trainer.epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)

    first = Trainer(build_run(config, run_dir=tmp_path / "resumed"), callbacks=(stop_after_first_epoch,))
    with pytest.raises(TrainingInterrupted, match="end of epoch 1"):
        first.fit()
    payload = load_checkpoint(tmp_path / "resumed")
    assert (payload["train_state"]["epoch"], payload["train_state"]["batch"]) == (1, 0)
    resumed = Trainer(build_run(config, run_dir=tmp_path / "resumed"))
    resumed.load_state_dict(payload)
    resumed.fit()
    _assert_same_weights(straight.model, resumed.model)
    assert [r["test_loss"] for r in resumed.history] == [r["test_loss"] for r in straight.history]


class _SignalAtCall(ClassificationObjective):
    """Sends a real SIGINT to this process during the n-th training step."""

    def __init__(self, n, signum=signal.SIGINT):
        super().__init__()
        self.n, self.calls, self.signum = n, 0, signum

    def __call__(self, model, images, labels):
        if model.training:
            self.calls += 1
            if self.calls == self.n:
                os.kill(os.getpid(), self.signum)
        return super().__call__(model, images, labels)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_mid_epoch_saves_and_resumes_bit_identically(tmp_path, signum):
    config = _config(tmp_path)
    straight = _train(config, tmp_path / "straight")
    interrupted = Trainer(build_run(config, run_dir=tmp_path / "cut"), objective=_SignalAtCall(52, signum))
    with pytest.raises(TrainingInterrupted, match=f"Stopped by {signal.Signals(signum).name}.*--resume"):
        interrupted.fit()
    payload = load_checkpoint(tmp_path / "cut")
    batches = len(interrupted.run.train_loader)  # 41 of 32: the 1,295 digits left after the validation split
    assert payload["train_state"]["epoch"] == 1 and payload["train_state"]["batch"] == 52 - batches
    resumed = Trainer(build_run(config, run_dir=tmp_path / "cut"))
    resumed.load_state_dict(payload)
    resumed.fit()
    _assert_same_weights(straight.model, resumed.model)
    assert resumed.history[-1]["train_loss"] == straight.history[-1]["train_loss"]


class _NaNAtCall(ClassificationObjective):
    def __init__(self, n):
        super().__init__()
        self.n, self.calls = n, 0

    def __call__(self, model, images, labels):
        loss, logits = super().__call__(model, images, labels)
        if model.training:
            self.calls += 1
            if self.calls >= self.n:
                loss = loss * float("nan")
        return loss, logits


def test_nan_in_first_epoch_stops_and_names_the_step(tmp_path):
    trainer = Trainer(build_run(_config(tmp_path), run_dir=tmp_path / "r"), objective=_NaNAtCall(5))
    with pytest.raises(NonFiniteLossError, match="nan at step 5 .*No checkpoint was written"):
        trainer.fit()
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_nan_later_keeps_the_last_good_checkpoint(tmp_path):
    trainer = Trainer(build_run(_config(tmp_path), run_dir=tmp_path / "r"), objective=_NaNAtCall(50))
    with pytest.raises(NonFiniteLossError, match="step 50 .*end of epoch 1, is kept"):
        trainer.fit()
    payload = load_checkpoint(tmp_path / "r")
    assert payload["train_state"]["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in payload["model_state"].values())


def test_recipes_follow_model_options_and_loss(tmp_path):
    assert _config(tmp_path).lr == 0.003
    assert _config(tmp_path, model_options={"head": "softmax"}).lr == 0.1
    assert _config(tmp_path, model_options={"head": "softmax"}, loss="mse").lr == 1.0
    assert _config(tmp_path, loss="mse", lr=0.2).lr == 0.2  # an explicit rate is never changed


def test_mse_loss_trains(tmp_path):
    config = _config(tmp_path, loss="mse", model_options={"head": "softmax"}, epochs=3, augment="none")
    trainer = _train(config, tmp_path / "m")
    assert trainer.history[-1]["train_loss"] < trainer.history[0]["train_loss"]
    assert trainer.history[-1]["test_error"] < 0.6  # chance: 0.9


@pytest.mark.parametrize("constrain", [True, False])
def test_trainer_applies_the_papers_weight_constraints(tmp_path, constrain):
    """Maxout's max-norm balls (Goodfellow et al. 2013) hold after every step unless --no-weight-constraints."""
    config = _config(
        tmp_path,
        model="maxout-mnist",
        epochs=1,
        labels_per_class=2,
        batch_size=10,
        lr=1e-4,
        weight_constraints=constrain,
    )
    trainer = Trainer(build_run(config, run_dir=tmp_path / "run"))
    weights = dict(trainer.model.named_parameters())
    with torch.no_grad():
        for name, bound in trainer.model.max_norms.items():  # every kernel and column at twice its ball's radius
            w = weights[name]
            w.mul_(2 * bound / w.flatten(1).norm(dim=1).view(-1, *[1] * (w.dim() - 1)))
    trainer.fit()
    for name, bound in trainer.model.max_norms.items():
        norms = weights[name].detach().flatten(1).norm(dim=1)
        assert (norms <= bound * (1 + 1e-5)).all() == constrain, name


def test_row_norm_clipping_matches_torch_renorm_and_counts_what_it_rescaled():
    """clip_row_norms_ is torch.renorm's projection (the oracle) plus a record of the rows it rescaled."""
    from cnnlab.layers import ConstraintActivity, clip_row_norms_

    torch.manual_seed(0)
    weight = torch.randn(6, 3, 2, 2)
    weight /= weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    weight *= torch.tensor([50.0, 7.0, 4.0, 3.0, 2.0, 1.0]).view(-1, 1, 1, 1)  # rows 0 and 1 beyond the bound 5
    expected = torch.renorm(weight, p=2, dim=0, maxnorm=5.0)
    ratios = weight.flatten(1).norm(dim=1) / 5.0
    activity = ConstraintActivity()
    clip_row_norms_(weight, 5.0, activity)
    clip_row_norms_(weight, 5.0, activity)  # a second check: nothing left to rescale
    torch.testing.assert_close(weight, expected)
    seen = activity.read_and_reset()
    assert seen is not None
    assert seen["constraint_acted"] == pytest.approx(2 / 12)
    assert seen["constraint_peak"] == pytest.approx(float(ratios.max())) == pytest.approx(10.0)
    assert activity.read_and_reset() is None  # counters back to zero


def test_trainer_records_constraint_activity_and_names_a_constraint_that_never_acted(tmp_path):
    """A bound nobody reaches changes nothing (as c = 3.5 in cnnlab's units did on mlp-1024 at η 0.05): the run
    says so."""
    from cnnlab.models import create

    class Messages:
        def __init__(self):
            self.lines = []

        def start_epoch(self, *args):
            pass

        def update(self, *args, **kwargs):
            pass

        def end_epoch(self, row, text):
            pass

        def message(self, text):
            self.lines.append(text)

    for bound, acts in ((1e3, False), (0.05, True)):
        config = _config(tmp_path, model="mlp-1024", epochs=2, labels_per_class=2, batch_size=10, lr=1e-3,
                         model_options={"max_norm": bound})  # fmt: skip
        run = build_run(config, run_dir=tmp_path / f"run-{bound}")
        assert type(run.model) is type(create("mlp-1024"))
        messages = Messages()
        trainer = Trainer(run, reporter=messages)
        trainer.fit()
        acted = [row["constraint_acted"] for row in trainer.history]
        assert all(value > 0 for value in acted) if acts else acted == [0.0, 0.0]
        assert all(row["constraint_peak"] > 0 for row in trainer.history)
        idle = [line for line in messages.lines if "never acted in 2 epochs" in line]
        assert bool(idle) != acts, messages.lines


def test_zfnet_renormalises_only_the_filters_beyond_the_radius():
    from cnnlab import models

    model = models.create("zfnet", num_classes=10)
    conv = model.features.conv1
    with torch.no_grad():
        conv.weight[:3].mul_(100)  # three filters far beyond RMS 0.1; the rest (init std 0.01) inside
    before = conv.weight.detach().clone()
    model.apply_weight_constraints_()
    rms = conv.weight.detach().pow(2).mean((1, 2, 3)).sqrt()
    torch.testing.assert_close(rms[:3], torch.full((3,), 0.1))
    assert torch.equal(conv.weight[3:], before[3:])
