"""The training engine at speed: exact resume with every piece of state, checkpoint housekeeping, the fast path
on CPU, gradient accumulation, parameter groups, label smoothing, schedules, auxiliary losses, monitoring."""

import itertools
import json
import math
import os
import signal

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data import DeviceTensorLoader
from cnnlab.errors import CheckpointError, ConfigError, NonFiniteLossError, TrainingInterrupted, UnknownNameError
from cnnlab.train import (
    ClassificationObjective,
    TrainConfig,
    Trainer,
    build_run,
    find_resume_checkpoint,
    load_checkpoint,
    load_latest_checkpoint,
    make_scheduler,
    resolve,
)
from cnnlab.train.config import PAPER_RECIPES
from cnnlab.train.optim import AlexNetSGD, lr_factor, parameter_groups

TRAIN_IMAGES, TEST_IMAGES = 480, 120  # a fixed subset of the digits: 15 steps of 32 per epoch


def _config(**overrides):
    return resolve(TrainConfig(**{"model": "lenet5-modern", "epochs": 2, "augment": "none", **overrides}))


def _run(config, run_dir):
    """build_run on a fixed subset of the digits (keeps every test here to a second or two)."""
    run = build_run(config, run_dir=run_dir)
    tl, te = run.train_loader, run.test_loader
    run.train_loader = DeviceTensorLoader(
        tl.images[:TRAIN_IMAGES],
        tl.labels[:TRAIN_IMAGES],
        tl.preprocessing,
        tl.batch_size,
        shuffle=True,
        seed=config.seed,
        augment=tl.augment,
    )
    run.test_loader = DeviceTensorLoader(te.images[:TEST_IMAGES], te.labels[:TEST_IMAGES], te.preprocessing, 256)
    return run


def _trainer(config, run_dir, **kwargs):
    return Trainer(_run(config, run_dir), **kwargs)


def _assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class _SignalAtCall(ClassificationObjective):
    """Sends a real signal to this process during the n-th training forward pass."""

    def __init__(self, n, signum=signal.SIGTERM, **kwargs):
        super().__init__(**kwargs)
        self.n, self.calls, self.signum = n, 0, signum

    def __call__(self, model, images, labels):
        if model.training:
            self.calls += 1
            if self.calls == self.n:
                os.kill(os.getpid(), self.signum)
        return super().__call__(model, images, labels)


# ---- exact resume ------------------------------------------------------------------------------------------------
def test_sigterm_mid_epoch_resumes_bit_exactly_with_ema_accumulation_smoothing_and_clipping(tmp_path):
    config = _config(
        ema_decay=0.9, accumulate_steps=3, label_smoothing=0.1, clip_grad_norm=1.0, augment="lenet-distortions"
    )
    straight = _trainer(config, tmp_path / "straight")
    straight.fit()
    # 3 forward passes per step: call 59 is in step 20 = epoch 2, batch 5.
    cut = _trainer(config, tmp_path / "cut", objective=_SignalAtCall(59, label_smoothing=0.1))
    with pytest.raises(TrainingInterrupted, match="Stopped by SIGTERM at epoch 2, batch 5"):
        cut.fit()
    payload = load_checkpoint(tmp_path / "cut")
    state = payload["train_state"]
    assert (state["epoch"], state["batch"], state["step"]) == (1, 5, 20) and state["ema_updates"] == 20
    resumed = _trainer(config, tmp_path / "cut")
    resumed.load_state_dict(payload)
    resumed.fit()
    _assert_same_state(straight.model.state_dict(), resumed.model.state_dict())
    _assert_same_state(straight.ema.module.state_dict(), resumed.ema.module.state_dict())
    assert [r["test_loss"] for r in resumed.history] == [r["test_loss"] for r in straight.history]
    assert resumed.history[-1]["train_loss"] == straight.history[-1]["train_loss"]
    # model_state holds the EMA weights (what was evaluated); the raw weights are in the training state
    final = load_checkpoint(tmp_path / "cut")
    _assert_same_state(final["model_state"], straight.ema.module.state_dict())
    _assert_same_state(final["train_state"]["raw_model_state"], straight.model.state_dict())


def test_resume_from_any_step_checkpoint_is_bit_exact(tmp_path):
    config = _config(checkpoint_every=4, keep_last=100, optimizer="adamw", lr=0.003, warmup_epochs=0.5)
    straight = _trainer(config, tmp_path / "straight")
    straight.fit()
    files = {p.name: p for p in straight.run.run_dir.step_checkpoints()}
    assert list(files) == [f"step{s:09d}.pt" for s in (4, 8, 12, 15, 16, 20, 24, 28, 30)]  # + epoch ends
    for name in ("step000000012.pt", "step000000020.pt"):  # mid-epoch 1, mid-epoch 2
        payload = load_checkpoint(files[name])
        resumed = _trainer(config, tmp_path / name)
        resumed.load_state_dict(payload)
        resumed.fit()
        _assert_same_state(straight.model.state_dict(), resumed.model.state_dict())
        assert resumed.history[-1]["train_loss"] == straight.history[-1]["train_loss"]


def test_momentum_ramp_rises_linearly_then_holds_and_resumes_exactly(tmp_path):
    """Hinton et al. 2012's μ ramp: from momentum_start at step 0 to --momentum after momentum_ramp_epochs."""
    from cnnlab.train.optim import make_scheduler

    weights = nn.Parameter(torch.zeros(3))
    sgd = torch.optim.SGD([weights], lr=0.1, momentum=0.9)
    scheduler = make_scheduler(
        sgd, "constant", total_steps=40, steps_per_epoch=10, momentum_start=0.5, momentum_ramp_steps=20
    )
    seen = []
    for _ in range(30):
        seen.append(sgd.param_groups[0]["momentum"])
        sgd.step(), scheduler.step()
    assert seen[:21:5] == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9]) and seen[20:] == [pytest.approx(0.9)] * 10
    with pytest.raises(ValueError, match="has no 'momentum' setting"):
        make_scheduler(torch.optim.Adam([weights]), "constant", total_steps=4, steps_per_epoch=2,
                       momentum_start=0.5, momentum_ramp_steps=2)  # fmt: skip

    config = _config(
        epochs=2, optimizer="sgd", momentum=0.9, momentum_start=0.5, momentum_ramp_epochs=1.5,
        checkpoint_every=5, keep_last=100,
    )  # fmt: skip
    straight = _trainer(config, tmp_path / "straight")
    assert straight.optimizer.param_groups[0]["momentum"] == pytest.approx(0.5)
    straight.fit()  # 15 steps an epoch: μ after epoch 1 is 0.5 + 0.4·15/22
    assert [r["momentum"] for r in straight.history] == pytest.approx([0.5 + 0.4 * 15 / 22, 0.9])
    payload = load_checkpoint(straight.run.run_dir.step_checkpoints()[1])  # step 10, mid-ramp
    assert payload["train_state"]["step"] == 10
    resumed = _trainer(config, tmp_path / "resumed")
    resumed.load_state_dict(payload)
    assert resumed.optimizer.param_groups[0]["momentum"] == pytest.approx(0.5 + 0.4 * 10 / 22)
    resumed.fit()
    _assert_same_state(straight.model.state_dict(), resumed.model.state_dict())
    assert [r["momentum"] for r in resumed.history] == [r["momentum"] for r in straight.history]
    plain = _trainer(_config(epochs=1, optimizer="sgd", momentum=0.9), tmp_path / "plain")
    plain.fit()
    assert "momentum" not in plain.history[0]  # the column is there only when μ moves


def test_fp16_loss_scaler_state_is_checkpointed_and_resumes_exactly(tmp_path):
    config = _config(amp="fp16", epochs=1, batch_size=64, checkpoint_every=3, keep_last=10)
    straight = _trainer(config, tmp_path / "straight")
    assert straight.scaler.is_enabled()
    straight.fit()
    payload = load_checkpoint(straight.run.run_dir.step_checkpoints()[0])  # step 3 of 8
    assert payload["train_state"]["step"] == 3 and "scale" in payload["train_state"]["parts"]["model"]["scaler"]
    resumed = _trainer(config, tmp_path / "resumed")
    resumed.load_state_dict(payload)
    assert resumed.scaler.get_scale() == payload["train_state"]["parts"]["model"]["scaler"]["scale"]
    resumed.fit()
    _assert_same_state(straight.model.state_dict(), resumed.model.state_dict())
    assert resumed.scaler.state_dict() == straight.scaler.state_dict()


# ---- checkpoint housekeeping -------------------------------------------------------------------------------------
def test_keep_last_best_and_latest_links(tmp_path):
    trainer = _trainer(_config(epochs=3, checkpoint_every=4, keep_last=2), tmp_path / "r")
    trainer.fit()
    run_dir = trainer.run.run_dir
    kept = run_dir.step_checkpoints()
    assert [p.name for p in kept] == ["step000000044.pt", "step000000045.pt"]
    assert os.path.samefile(run_dir.checkpoint, kept[-1])
    errors = [row["val_error"] for row in trainer.history]  # chosen on the validation split, never on the test
    best_epoch = errors.index(min(errors)) + 1
    best = load_checkpoint(run_dir.best)
    assert best["train_state"]["epoch"] == best_epoch and best["train_state"]["batch"] == 0
    assert best["history"][-1]["val_error"] == min(errors)


def test_resuming_an_earlier_state_discards_the_abandoned_later_checkpoints(tmp_path):
    first = _trainer(_config(epochs=1, checkpoint_every=5, keep_last=2), tmp_path / "r")
    first.fit()
    assert [p.name for p in first.run.run_dir.step_checkpoints()] == ["step000000010.pt", "step000000015.pt"]
    again = _trainer(_config(epochs=1, checkpoint_every=5, keep_last=2), tmp_path / "r")
    again.load_state_dict(load_checkpoint(first.run.run_dir.step_checkpoints()[0]))  # back to step 10
    again.run.run_dir.commit_checkpoint(again.state_dict(), again.step, keep_last=2)
    assert [p.name for p in again.run.run_dir.step_checkpoints()] == ["step000000010.pt"]  # 15 was abandoned
    assert load_latest_checkpoint(tmp_path / "r")[1]["train_state"]["step"] == 10


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_with_a_warning(tmp_path):
    trainer = _trainer(_config(checkpoint_every=10, keep_last=3), tmp_path / "r")
    trainer.fit()
    run_dir = trainer.run.run_dir.path
    newest, previous = trainer.run.run_dir.step_checkpoints()[::-1][:2]
    newest.write_bytes(newest.read_bytes()[:3000])  # checkpoint.pt is the same file: corrupt too
    warnings = []
    path, payload = load_latest_checkpoint(run_dir, warn=warnings.append)
    assert path == previous and payload["train_state"]["step"] == 20
    assert len(warnings) == 1 and "truncated or corrupt" in warnings[0] and "Falling back" in warnings[0]
    found, resumed_dir = find_resume_checkpoint("auto", out=run_dir, warn=warnings.append)
    assert found["train_state"]["step"] == 20 and resumed_dir == run_dir
    assert find_resume_checkpoint("auto", out=tmp_path / "new") is None  # nothing yet: start there
    for p in trainer.run.run_dir.step_checkpoints():
        p.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="No checkpoint in .* can be resumed"):
        load_latest_checkpoint(run_dir)
    with pytest.raises(ConfigError, match="--resume auto needs --out"):
        find_resume_checkpoint("auto")


def test_disk_full_while_saving_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch):
    trainer = _trainer(_config(epochs=3), tmp_path / "r")
    real_save, calls = torch.save, []

    def save_then_fill_the_disk(*args, **kwargs):
        calls.append(1)
        if len(calls) >= 2:
            raise OSError(28, "No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_fill_the_disk)
    with pytest.raises(
        CheckpointError,
        match=r"step 30: .*No space left.*previous checkpoint at .*checkpoint.pt is intact.*end of epoch 1.*--resume",
    ):
        trainer.fit()
    payload = load_checkpoint(tmp_path / "r")
    assert payload["train_state"]["epoch"] == 1  # the epoch-1 checkpoint is whole
    assert not [p for p in (tmp_path / "r" / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp files
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "checkpoint-failed"


def test_nan_before_a_periodic_checkpoint_is_caught_before_it_is_saved(tmp_path):
    from test_train import _NaNAtCall

    trainer = _trainer(_config(checkpoint_every=5, log_every=50), tmp_path / "r", objective=_NaNAtCall(8))
    with pytest.raises(NonFiniteLossError, match=r"step 8 .*from epoch 1, batch 5, is kept"):
        trainer.fit()
    payload = load_checkpoint(tmp_path / "r")
    assert payload["train_state"]["step"] == 5
    assert all(torch.isfinite(t).all() for t in payload["model_state"].values())


# ---- the fast path on CPU ----------------------------------------------------------------------------------------
def test_bf16_autocast_and_channels_last_train_on_cpu(tmp_path):
    reference = _trainer(_config(epochs=1, channels_last=False), tmp_path / "ref")  # auto would pick channels-last
    reference.fit()
    assert not reference.fast.channels_last
    fast = _trainer(_config(epochs=1, amp="bf16", channels_last=True), tmp_path / "fast")
    assert fast.fast.amp_dtype == torch.bfloat16 and fast.fast.channels_last
    assert fast.model.features.c1.conv.weight.is_contiguous(memory_format=torch.channels_last)
    fast.fit()
    assert math.isfinite(fast.history[-1]["train_loss"])
    assert abs(fast.history[-1]["train_loss"] - reference.history[-1]["train_loss"]) < 0.05  # bf16: 3 digits
    cl = _trainer(_config(epochs=1, channels_last=True), tmp_path / "cl")
    cl.fit()  # channels_last alone changes only the order of float additions
    for a, b in zip(reference.model.parameters(), cl.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_auto_fast_path_on_cpu_is_float32_and_channels_last_where_the_model_gains(tmp_path):
    from dataclasses import replace

    from cnnlab import models
    from cnnlab.train.fastpath import resolve_fast_path

    trainer = _trainer(_config(epochs=1), tmp_path / "r")
    assert trainer.fast.amp_dtype is None and trainer.fast.channels_last and not trainer.scaler.is_enabled()
    assert trainer.fast.describe() == "float32, channels_last"
    conv = next(m for m in trainer.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    cpu, config = torch.device("cpu"), trainer.config
    assert not resolve_fast_path(config, cpu, models.create("maxout-mnist")).channels_last  # 0.88× in NHWC
    assert not resolve_fast_path(config, cpu, nn.Linear(2, 2)).channels_last  # unknown models stay NCHW
    assert not resolve_fast_path(replace(config, channels_last=False), cpu, trainer.model).channels_last


def test_compiled_model_trains_like_eager(tmp_path, monkeypatch):
    # Inductor compiles for ~20 s on 2 cores; aot_eager runs the same Dynamo capture and AOT autograd without
    # generating C++ (test_compile_with_inductor runs the real thing when CNNLAB_TEST_INDUCTOR=1).
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **kw: real_compile(module, backend="aot_eager"))
    eager = _trainer(_config(epochs=1), tmp_path / "eager")
    eager.fit()
    compiled = _trainer(_config(epochs=1, compile=True), tmp_path / "compiled")
    compiled.fit()
    for a, b in zip(eager.model.parameters(), compiled.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert "model_state" in load_checkpoint(tmp_path / "compiled")  # saved from the plain module (no _orig_mod.)
    assert all(not k.startswith("_orig_mod") for k in load_checkpoint(tmp_path / "compiled")["model_state"])


@pytest.mark.skipif(not os.environ.get("CNNLAB_TEST_INDUCTOR"), reason="inductor compile takes ~20 s on 2 cores")
def test_compile_with_inductor(tmp_path):
    trainer = _trainer(_config(epochs=1, compile=True), tmp_path / "r")
    trainer.fit()
    assert trainer.history[-1]["train_loss"] < 2.3


def test_cuda_graphs_refused_without_cuda(tmp_path):
    with pytest.raises(ConfigError, match="--cuda-graphs needs a CUDA device.*--device is cpu"):
        _config(device="cpu", cuda_graphs=True)
    from cnnlab.train.fastpath import resolve_fast_path

    with pytest.raises(ConfigError, match="needs a CUDA device; this run is on cpu"):
        resolve_fast_path(TrainConfig(cuda_graphs=True), torch.device("cpu"))


# ---- the mathematics ---------------------------------------------------------------------------------------------
def test_gradient_accumulation_equals_the_large_batch_gradient(tmp_path):
    grads = {}
    for k in (1, 3, 32):  # 32 = one image per micro-batch; 3 does not divide 32: uneven micro-batches
        trainer = _trainer(_config(epochs=1, accumulate_steps=k), tmp_path / f"k{k}")
        trainer.steps._update = lambda state, graphed: None  # keep the gradient of the first step
        images, labels = next(iter(trainer.run.train_loader.batches(0)))
        trainer.steps.step((images, labels), labels.shape[0])
        grads[k] = [p.grad.clone() for p in trainer.model.parameters()]
    for k in (3, 32):
        for a, b in zip(grads[1], grads[k], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_no_decay_group_holds_biases_and_norm_layers():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LayerNorm(4 * 6 * 6), nn.Linear(144, 2)
    )
    decay, no_decay = parameter_groups(model, 5e-4, decay_norm_and_bias=False)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[4].weight)}
    assert len(no_decay["params"]) == 6  # conv bias, BN weight+bias, LN weight+bias, linear bias
    (single,) = parameter_groups(model, 5e-4, decay_norm_and_bias=True)
    assert len(single["params"]) == 8
    # With zero gradients, decay alone moves the weights; the no-decay group does not move.
    optimizer = AlexNetSGD(parameter_groups(model, 0.1, decay_norm_and_bias=False), lr=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    moved = [not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True)]
    assert moved == [True, False, False, False, False, False, True, False]


def test_trainer_takes_parameter_groups_at_their_own_rates(tmp_path):
    run = _run(_config(epochs=1, schedule="constant", warmup_epochs=0.5, decay_norm_and_bias=False), tmp_path / "r")
    head = [p for n, p in run.model.named_parameters() if not n.startswith("features.")]
    body = [p for n, p in run.model.named_parameters() if n.startswith("features.")]
    trainer = Trainer(run, param_groups=[{"params": head, "lr": 0.04}, {"params": body, "lr": 0.004}])
    groups = trainer.optimizer.param_groups
    assert [(g["initial_lr"], g["weight_decay"]) for g in groups] == [
        (0.04, 5e-4),
        (0.04, 0.0),
        (0.004, 5e-4),
        (0.004, 0.0),
    ]
    assert sum(len(g["params"]) for g in groups) == len(list(run.model.parameters()))
    trainer.fit()  # warm-up scales every group alike
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx([0.04, 0.04, 0.004, 0.004])


def test_label_smoothing_matches_its_definition_and_only_in_training():
    torch.manual_seed(0)
    logits, labels, eps = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0]), 0.2
    target = F.one_hot(labels, 5).float() * (1 - eps) + eps / 5
    expected = -(target * logits.log_softmax(dim=1)).sum(dim=1).mean()
    model = nn.Identity()
    objective = ClassificationObjective("cross_entropy", label_smoothing=eps)
    loss, _ = objective(model.train(), logits, labels)
    torch.testing.assert_close(loss, expected)
    loss, _ = objective(model.eval(), logits, labels)
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels))
    mse, _ = ClassificationObjective("mse", label_smoothing=eps)(model.train(), logits, labels)
    torch.testing.assert_close(mse, 0.5 * (logits.softmax(1) - target).pow(2).sum(1).mean())


class _WithAux(nn.Module):
    """A hand-made model with GoogLeNet's auxiliary-classifier contract."""

    aux_loss_weight = 0.3

    def __init__(self):
        super().__init__()
        self.body, self.head, self.aux = nn.Linear(4, 8), nn.Linear(8, 3), nn.ModuleList([nn.Linear(8, 3)] * 1)
        self.aux.append(nn.Linear(8, 3))

    def forward(self, x):
        return self.head(self.body(x))

    @property
    def aux_heads(self):  # the model contract declares its auxiliary classifiers
        return list(self.aux)

    def forward_with_aux(self, x):
        h = self.body(x)
        return self.head(h), [a(h) for a in self.aux]


def test_auxiliary_classifiers_add_weighted_losses_in_training_only():
    torch.manual_seed(0)
    model, x, y = _WithAux(), torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    objective = ClassificationObjective()
    loss, logits = objective(model.train(), x, y)
    main, aux = model.forward_with_aux(x)
    expected = F.cross_entropy(main, y) + 0.3 * sum(F.cross_entropy(a, y) for a in aux)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logits, main)
    loss.backward()
    assert all(a.weight.grad is not None and a.weight.grad.abs().sum() > 0 for a in model.aux)
    eval_loss, _ = objective(model.eval(), x, y)
    torch.testing.assert_close(eval_loss, F.cross_entropy(model(x), y))
    # Through the trainer's wrapper (what DDP and torch.compile see), the same loss.
    from cnnlab.train.trainer import _Dispatch, _TrainingView

    view = _TrainingView(model.train(), _Dispatch(model))
    torch.testing.assert_close(objective(view, x, y)[0], expected)
    assert not hasattr(_TrainingView(nn.Linear(4, 3), _Dispatch(nn.Linear(4, 3))), "forward_with_aux")


def test_warmup_then_cosine_step_multistep_and_onecycle_shapes():
    factors = [lr_factor(s, "cosine", total_steps=20, steps_per_epoch=5, warmup_steps=5) for s in range(21)]
    assert factors[:5] == [0.2, 0.4, 0.6, 0.8, 1.0]  # linear warm-up: the first step already moves
    assert factors[5] == 1.0 and abs(factors[12] - 0.5 * (1 + math.cos(math.pi * 7 / 15))) < 1e-12
    assert factors[20] == 0.0 and all(a >= b for a, b in itertools.pairwise(factors[4:]))
    step = [
        lr_factor(s, "step", total_steps=50, steps_per_epoch=5, step_epochs=2, gamma=0.5, warmup_steps=2)
        for s in range(25)
    ]
    assert step[:3] == [0.5, 1.0, 1.0] and step[9] == 1.0 and step[10] == 0.5 and step[20] == 0.25
    multi = [lr_factor(s, "multistep", total_steps=100, steps_per_epoch=1, milestones=[3, 6]) for s in range(8)]
    assert multi == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])
    for total, warmup in ((40, 0), (40, 7)):  # torch's OneCycleLR is the oracle
        w = nn.Parameter(torch.zeros(1))
        ours, theirs = AlexNetSGD([w], lr=2.0), torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
        a = make_scheduler(ours, "onecycle", total_steps=total, steps_per_epoch=10, warmup_steps=warmup)
        pct = warmup / total if warmup else 0.3
        b = torch.optim.lr_scheduler.OneCycleLR(theirs, 2.0, total_steps=total, pct_start=pct, cycle_momentum=False)
        for _ in range(total):
            assert ours.param_groups[0]["lr"] == pytest.approx(theirs.param_groups[0]["lr"], rel=1e-12)
            ours.step(), theirs.step(), a.step(), b.step()
        assert ours.param_groups[0]["lr"] == pytest.approx(2.0 / 25 / 1e4)  # held at the end, not wrapped round


def test_trainer_warms_up_the_learning_rate(tmp_path):
    trainer = _trainer(_config(epochs=2, warmup_epochs=1, lr=0.05, schedule="constant"), tmp_path / "r")
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 / 15)  # 15 steps per epoch
    trainer.fit()
    assert trainer.history[0]["lr"] == pytest.approx(0.05) and trainer.history[1]["lr"] == pytest.approx(0.05)


# ---- configuration -----------------------------------------------------------------------------------------------
def test_paper_recipes_set_what_the_paper_used_and_explicit_values_win():
    alexnet = resolve(TrainConfig(recipe="alexnet-2012"))
    assert (alexnet.lr, alexnet.momentum, alexnet.weight_decay, alexnet.batch_size) == (0.01, 0.9, 5e-4, 128)
    assert (alexnet.schedule, alexnet.gamma, alexnet.optimizer, alexnet.epochs) == ("step", 0.1, "alexnet-sgd", 90)
    googlenet = resolve(TrainConfig(recipe="googlenet-2014"))
    assert (googlenet.step_epochs, googlenet.gamma) == (8, 0.96)  # 4% every 8 epochs
    cifar = resolve(TrainConfig(recipe="resnet-2015-cifar", batch_size=64))
    assert cifar.milestones == [32_000, 48_000] and cifar.batch_size == 64 and cifar.weight_decay == 1e-4
    assert resolve(TrainConfig(recipe="resnet-2015")).lr == 0.1
    assert set(PAPER_RECIPES) >= {"alexnet-2012", "vgg-2014", "googlenet-2014", "resnet-2015"}
    with pytest.raises(UnknownNameError, match="Unknown recipe 'alexnet'.*alexnet-2012"):
        resolve(TrainConfig(recipe="alexnet"))
    defaults = resolve(TrainConfig())
    assert (defaults.optimizer, defaults.momentum, defaults.schedule, defaults.ema_decay) == (
        "alexnet-sgd",
        0.9,
        "cosine",
        0.0,
    )
    assert defaults.milestones == [] and defaults.milestones is not resolve(TrainConfig()).milestones


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"optimizer": "lbfgs"}, "--optimizer must be one of alexnet-sgd, sgd, adam, adamw"),
        ({"amp": "fp8"}, "--amp must be one of auto, bf16, fp16, off"),
        ({"schedule": "linear"}, "--schedule must be one of"),
        ({"schedule": "multistep"}, "--schedule multistep needs --milestones"),
        ({"milestones": [48000, 32000]}, "--milestones must be positive step counts in increasing order"),
        ({"milestones": [1.5]}, "--milestones must be whole numbers of steps"),
        ({"warmup_epochs": -1.0}, r"--warmup-epochs must be in \[0, 30\)"),
        ({"warmup_epochs": 30}, r"--warmup-epochs must be in \[0, 30\)"),
        ({"label_smoothing": 1.0}, r"--label-smoothing must be in \[0, 1\)"),
        ({"clip_grad_norm": -1.0}, "--clip-grad-norm must be a norm >= 0"),
        ({"clip_grad_norm": float("nan")}, "--clip-grad-norm must be a norm >= 0"),
        ({"accumulate_steps": 0}, "--accumulate-steps must be a positive whole number"),
        ({"accumulate_steps": 64}, "--accumulate-steps 64 splits each batch into more micro-batches than the 32"),
        ({"ema_decay": 1.0}, r"--ema-decay must be in \[0, 1\)"),
        ({"checkpoint_every": -5}, "--checkpoint-every must be >= 0"),
        ({"checkpoint_every": 2.5}, "--checkpoint-every must be a whole number of steps"),
        ({"keep_last": 0}, "--keep-last must be a positive whole number"),
        ({"channels_last": "yes"}, "channels_last must be true, false or None"),
        ({"compile": 1}, "compile must be true or false"),
        ({"sync_bn": None}, "sync_bn must be true or false"),
        ({"decay_norm_and_bias": "no"}, "decay_norm_and_bias must be true or false"),
        ({"cudnn_benchmark": "yes"}, "cudnn_benchmark must be true or false"),
        ({"labels_per_class": 0}, "--labels-per-class must be a positive whole number"),
        ({"val_split": 1.0}, r"--val-split must be a fraction in \(0, 1\)"),
        ({"val_split": 0.0}, r"--val-split must be a fraction in \(0, 1\)"),
        ({"num_workers": -1}, "--num-workers must be a whole number >= 0"),
        ({"strict": "yes"}, "strict must be true or false"),
        ({"tensorboard": 1}, "tensorboard must be true or false"),
        ({"momentum": 0.9 + 0.1}, r"--momentum must be in \[0, 1\)"),
        ({"momentum_ramp_epochs": 5}, "--momentum-ramp-epochs needs --momentum-start"),
        ({"momentum_start": 0.5}, "--momentum-start does nothing without --momentum-ramp-epochs"),
        ({"momentum_ramp_epochs": -1.0}, "--momentum-ramp-epochs must be a number of epochs >= 0"),
        ({"momentum_ramp_epochs": 5, "momentum_start": 1.5}, r"--momentum-start must be in \[0, 1\)"),
        (
            {"momentum_ramp_epochs": 5, "momentum_start": 0.5, "optimizer": "adam"},
            "changes SGD's μ; --optimizer is adam",
        ),
        ({"device": "cpu", "cuda_graphs": True, "compile": True}, "--cuda-graphs needs a CUDA device"),
    ],
)
def test_every_new_value_is_validated_with_a_clear_message(overrides, message):
    base = {"epochs": 30, "batch_size": 32}  # the messages quote these; not the digits recipe's defaults
    with pytest.raises(ConfigError, match=message):
        resolve(TrainConfig(**{**base, **overrides}))


def test_cuda_graph_combinations_are_refused(monkeypatch):
    from cnnlab.train import config as config_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # only the config's own checks run
    for overrides, name in (
        ({"amp": "fp16"}, "--amp fp16"),
        ({"compile": True}, "--compile"),
        ({"accumulate_steps": 2}, "--accumulate-steps"),
        ({"momentum_ramp_epochs": 2, "momentum_start": 0.5, "optimizer": "sgd"}, "--momentum-ramp-epochs"),
    ):
        with pytest.raises(ConfigError, match=f"cannot be combined with {name}"):
            config_module.resolve(TrainConfig(device="cuda", cuda_graphs=True, **overrides))


def test_tensorboard_missing_is_a_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match="needs the tensorboard package.*pip install tensorboard"):
        resolve(TrainConfig(tensorboard=True))


# ---- monitoring --------------------------------------------------------------------------------------------------
def test_summary_json_and_tensorboard_events(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = _trainer(_config(epochs=2, tensorboard=True, log_every=5), tmp_path / "r")
    trainer.fit()
    trainer.close()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["epochs_completed"] == 2 and summary["steps"] == 30
    assert summary["best"]["val_error"] == min(r["val_error"] for r in trainer.history)
    assert summary["last"]["epoch"] == 2 and summary["images_per_s"] > 0 and summary["wall_seconds"] > 0
    assert summary["peak_memory"]["bytes"] > 10_000_000 and "RSS" in summary["peak_memory"]["measure"]
    events = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "train/images_per_s", "test/error", "test/loss"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("test/error")] == [15, 30]
    assert len(events.Scalars("train/loss")) == 6  # every log_every=5 steps
    assert "test/predictions" in tags["images"]


def test_progress_bar_shows_the_learning_rate(tmp_path):
    from io import StringIO

    from rich.console import Console

    from cnnlab.train.progress import RichReporter

    out = StringIO()
    trainer = _trainer(_config(epochs=1), tmp_path / "r", reporter=RichReporter(Console(file=out, width=150)))
    trainer.fit()
    text = out.getvalue()
    assert "lr 0" in text and "img/s" in text  # cosine ends at 0: the end-of-epoch line shows "lr 0"


def test_epoch_line_gives_the_whole_runs_eta():
    from io import StringIO

    from rich.console import Console

    from cnnlab.train.progress import RichReporter, run_eta

    out = StringIO()
    reporter = RichReporter(Console(file=out, width=150))
    for epoch, seconds in enumerate([20.0, 40.0, 30.0, 30.0]):
        reporter.start_epoch(epoch, 4, 10, 0)
        reporter.end_epoch({"epoch": epoch + 1, "lr": 0.1, "seconds": seconds, "images_per_s": 100.0}, "test ok")
    lines = [line for line in out.getvalue().splitlines() if "test ok" in line]
    assert lines[0].endswith("ETA run 0:01:00")  # 3 epochs left × 20 s
    assert lines[1].endswith("ETA run 0:01:00")  # 2 left × the mean of 20 s and 40 s
    assert lines[2].endswith("ETA run 0:00:30") and "ETA" not in lines[3]  # nothing left after the last
    assert run_eta(1, 200, [3725.0]) == "ETA run 205:54:35" and run_eta(0, 5, []) == ""
    # a task's failures come in brackets: printed as they are, not taken for rich markup and dropped
    reporter.end_epoch({"epoch": 5, "lr": 0.1, "seconds": 1.0, "images_per_s": 1.0}, "D 0.1  [mode collapse: 9 of 64]")
    reporter.message("[classes dropped: 2 of 10]")
    assert "D 0.1  [mode collapse: 9 of 64]" in out.getvalue() and "[classes dropped: 2 of 10]" in out.getvalue()


def test_step_lines_show_on_a_terminal_only():
    from io import StringIO

    from cnnlab.train.progress import step_lines

    class Terminal(StringIO):
        def isatty(self) -> bool:
            return True

    piped, terminal = StringIO(), Terminal()
    step_lines("report", piped)("confusion matrix (3/10)")
    step_lines("report", terminal)("confusion matrix (3/10)")
    assert piped.getvalue() == "" and terminal.getvalue() == "report: confusion matrix (3/10)…\n"


# ---- benchmarks (quick modes: they run, whatever their speed) ---------------------------------------------------
def test_training_benchmarks_run_in_quick_mode():
    from pathlib import Path

    from cnnlab.bench.train import (
        bench_cpu_mnist,
        bench_train,
        bench_tta,
        format_mnist_row,
        format_train_rows,
        format_tta,
    )

    torch.set_num_threads(1)  # timings are not checked; one thread avoids oversubscribing a shared CI machine
    row = bench_train("lenet5-modern", 16, (1, 32, 32), "cpu", steps=3, amp="bf16", channels_last=True)
    assert row.cnnlab_images_per_s > 0 and row.usual_images_per_s > 0 and row.precision == "bf16"
    assert 0.5e6 < row.train_flops_per_image < 5e6  # LeNet-5: ~0.4 MFLOP forward (MACs × 2), × 3 for training
    assert row.fraction_of_peak(row.cnnlab_images_per_s) is None  # CPU: no peak table
    table = format_train_rows([row])
    assert "n/a" in table and "ratio" in table and "bf16 autocast, channels_last" in table
    mnist = bench_cpu_mnist(images=256, batch_size=64, num_workers=0)
    assert mnist.ratio > 0 and "usual way" in format_mnist_row(mnist)
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    tta = bench_tta(shared, seeds=(0,), quick=True)
    if tta.skipped:
        assert "MNIST" in tta.skipped
    else:
        assert len(tta.accuracies) == 1 and all(0 < a <= 1 for a in tta.accuracies) and tta.median_train_seconds > 0
    assert "time to" in format_tta(tta)
    missing = bench_tta(Path("/nonexistent"), quick=True)
    assert missing.skipped and "skipped" in format_tta(missing)


def test_resume_accepts_the_model_options_that_made_the_run():
    """The saved options also hold what building added (an MLP's image_size): the same command is accepted again,
    a changed or new option is refused."""
    from dataclasses import replace

    from cnnlab.errors import ConfigError
    from cnnlab.train.config import TrainConfig, resolve, resume_config

    saved = replace(
        resolve(TrainConfig(model="mlp-800", data="digits")), model_options={"drop": "none", "image_size": 28}
    )
    assert resume_config(saved, {"model": "mlp-800"}, {"drop": "none"}).model_options == saved.model_options
    for changed in ({"drop": "dropout"}, {"drop": "none", "samples": 100}):
        with pytest.raises(ConfigError, match="--model-option cannot change"):
            resume_config(saved, {}, changed)
