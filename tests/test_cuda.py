"""The CUDA paths, on a real GPU (issue 22): AMP bf16/fp16 with loss scaling, channels-last, torch.compile, CUDA
graphs (with the streaming loader and ``--strict``), the device loaders and augmentations with no host sync per
step, incremental occlusion against plain passes, DDP over NCCL.

Every test but the last is marked ``cuda`` and skips without a CUDA GPU; ``pytest -m cuda tests/test_cuda.py`` runs
them (``scripts/gpu_check.sh`` does, on the GPU machine). Each trains a few steps of a small model on the bundled
digits through the real :func:`build_run` and :class:`Trainer` (seconds on a GPU). Comparisons of float results
switch TF32 off (fixture ``exact_float32``), so "equal" means float rounding, not TF32's 10-bit mantissa. The last
test runs the helpers on the CPU, so CI checks that the harness itself works.
"""

import math
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import models
from cnnlab.train import TrainConfig, Trainer, build_run, load_checkpoint, resolve

CUDA = torch.cuda.is_available()
NEEDS_CUDA = "needs a CUDA GPU (run on the GPU machine: scripts/gpu_check.sh OUTDIR)"
# One epoch of the 1,437 digits (no holdout) at batch 64: 22 steps of 64 (the partial batch dropped).
BASE = {"model": "lenet5-modern", "data": "digits", "epochs": 1, "batch_size": 64, "lr": 0.01, "holdout": 0.0}
BASE |= {"augment": "none", "log_every": 5, "keep_last": 1, "seed": 0}


def cuda_test(function):
    """Marked ``cuda``; skipped with a reason where no CUDA GPU is visible."""
    return pytest.mark.cuda(pytest.mark.skipif(not CUDA, reason=NEEDS_CUDA)(function))


@pytest.fixture
def exact_float32():
    """TF32 off for matrix products and convolutions (restored after), and cuDNN autotuning back to torch's default
    (the engine switches it on for the whole process)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def _trainer(out: Path, device: str = "cuda", drop_last: bool = True, **overrides) -> Trainer:
    """A Trainer over build_run's real run (device loaders, the dataset's augmentation); with ``drop_last`` every
    batch has one shape (no recompilation, and what CUDA graphs need anyway)."""
    config = resolve(TrainConfig(**{**BASE, "device": device, "out": str(out), **overrides}))
    run = build_run(config)
    run.train_loader.drop_last = drop_last
    return Trainer(run)


def _fit(out: Path, device: str = "cuda", guard: bool = False, warmup: int = 2, drop_last: bool = True, **overrides):
    """Train; returns (trainer, guard): with ``guard`` the loop runs under :class:`NoSyncPerStep`."""
    trainer = _trainer(out, device, drop_last, **overrides)
    watch = NoSyncPerStep(trainer, warmup=warmup) if guard else None
    if watch is None:
        trainer.fit()
    else:
        watch.fit()
    return trainer, watch


def _assert_close_weights(a: torch.nn.Module, b: torch.nn.Module, atol: float, rtol: float = 1e-3) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key].float(), sb[key].float(), atol=atol, rtol=rtol, msg=key)


def _assert_trained(trainer: Trainer) -> None:
    row = trainer.history[-1]
    assert all(math.isfinite(row[k]) for k in ("train_loss", "test_loss")), row
    assert trainer.step == len(trainer.history) * len(trainer.run.train_loader)


class NoSyncPerStep:
    """``torch.cuda.set_sync_debug_mode("error")`` across a Trainer's loop, so any host–device sync inside a step
    raises. Lifted only where the engine syncs on purpose: its named sync points (``_sync_point``: progress every
    ``log_every`` steps; ``_end_epoch``: evaluation and checkpoint), the first batch of each epoch (the loader
    makes the epoch's order there, once) and the first ``warmup`` steps (cuDNN autotuning, graph capture,
    compilation). ``guarded``: steps run under the error mode. On the CPU it changes nothing (no CUDA to watch).
    """

    def __init__(self, trainer: Trainer, warmup: int = 2):
        self.trainer, self.warmup = trainer, warmup
        self.cuda = trainer.run.device.type == "cuda"
        self.armed, self.depth, self.steps, self.guarded = False, 0, 0, 0
        for name in ("_sync_point", "_end_epoch"):
            setattr(trainer, name, self._allowing(getattr(trainer, name)))
        run_step, loader = trainer._run_step, trainer.run.train_loader
        batches = loader.batches

        def guarded_step(batch, global_n):
            if self.steps < self.warmup:
                with self.allowed():
                    out = run_step(batch, global_n)
                self.steps += 1
                if self.steps == self.warmup:
                    self.armed = True
                    self._mode(True)
                return out
            self.steps += 1
            self.guarded += 1
            return run_step(batch, global_n)

        def guarded_batches(epoch: int = 0, start_batch: int = 0):
            walk = batches(epoch, start_batch)
            with self.allowed():
                first = next(walk, None)  # the epoch's order (a host-to-device copy): once per epoch
            if first is not None:
                yield first
                yield from walk  # each later batch under the error mode

        trainer._run_step = guarded_step
        loader.batches = guarded_batches

    def _mode(self, strict: bool) -> None:
        if self.cuda:
            torch.cuda.set_sync_debug_mode("error" if strict else 0)

    @contextmanager
    def allowed(self):
        self.depth += 1
        self._mode(False)
        try:
            yield
        finally:
            self.depth -= 1
            if self.depth == 0 and self.armed:
                self._mode(True)

    def _allowing(self, method):
        def call(*args, **kwargs):
            with self.allowed():
                return method(*args, **kwargs)

        return call

    def fit(self) -> None:
        try:
            self.trainer.fit()
        finally:
            self.armed = False
            self._mode(False)


# ---- AMP, channels-last, torch.compile ---------------------------------------------------------------------------
@cuda_test
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_trains_like_float32_and_fp16_scales_the_loss(tmp_path, exact_float32, amp):
    plain, _ = _fit(tmp_path / "fp32", model="resnet20", amp="off")
    mixed, _ = _fit(tmp_path / amp, model="resnet20", amp=amp)
    assert mixed.fast.amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    _assert_trained(mixed)
    assert mixed.scaler.is_enabled() == (amp == "fp16")
    saved = next(iter(load_checkpoint(tmp_path / amp)["train_state"]["parts"].values()))
    if amp == "fp16":  # active: a finite power-of-two scale (65,536 until an overflow halves it), and saved
        scale = mixed.scaler.get_scale()
        assert math.isfinite(scale) and 1 <= scale <= 2.0**16 and math.log2(scale).is_integer()
        assert saved["scaler"]["scale"] == scale
    else:
        assert "scaler" not in saved
    a, b = plain.history[-1], mixed.history[-1]
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.05, abs=0.02)
    assert b["test_loss"] == pytest.approx(a["test_loss"], rel=0.05, abs=0.02)


@cuda_test
def test_channels_last_is_the_cuda_default_and_trains_like_nchw(tmp_path, exact_float32):
    nhwc, _ = _fit(tmp_path / "nhwc", model="resnet20", amp="off")
    nchw, _ = _fit(tmp_path / "nchw", model="resnet20", amp="off", channels_last=False)
    assert nhwc.fast.channels_last and not nchw.fast.channels_last
    conv = next(m for m in nhwc.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    _assert_trained(nhwc)
    _assert_close_weights(nhwc.model, nchw.model, atol=1e-4)


@cuda_test
def test_torch_compile_trains_like_eager(tmp_path, exact_float32):
    eager, _ = _fit(tmp_path / "eager", amp="off")
    compiled, _ = _fit(tmp_path / "compiled", amp="off", compile=True)
    assert "compiled" in compiled.fast.describe()
    _assert_trained(compiled)
    _assert_close_weights(compiled.model, eager.model, atol=1e-4)


# ---- CUDA graphs -------------------------------------------------------------------------------------------------
@cuda_test
def test_cuda_graphs_replay_the_eager_step_with_ema_and_schedule(tmp_path, exact_float32):
    options = {"amp": "off", "epochs": 2, "schedule": "cosine", "ema_decay": 0.9}  # η and EMA decay change per step
    eager, _ = _fit(tmp_path / "eager", **options)
    graphed, _ = _fit(tmp_path / "graphed", cuda_graphs=True, **options)
    assert graphed.fast.cuda_graphs and graphed._graphed is not None
    _assert_trained(graphed)
    _assert_close_weights(graphed.model, eager.model, atol=1e-5)
    _assert_close_weights(graphed.ema.module, eager.ema.module, atol=1e-5)
    for a, b in zip(graphed.history, eager.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


def _digit_folder(root: Path, classes: tuple[int, ...] = (0, 1, 7), per_class: int = 32) -> Path:
    """An ImageFolder of the bundled sklearn digits: root/<digit>/<n>.png, grey 8×8 scaled to 0–255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    for digit in classes:
        folder = root / str(digit)
        folder.mkdir(parents=True)
        for n, image in enumerate(bunch.images[bunch.target == digit][:per_class]):
            Image.fromarray((image * 255 / 16).round().astype(np.uint8), mode="L").save(folder / f"{n}.png")
    return root


@cuda_test
def test_cuda_graphs_with_the_streaming_loader_and_strict_make_no_host_sync_per_step(tmp_path, exact_float32):
    data = f"folder:{_digit_folder(tmp_path / 'photos')}"
    options = {"data": data, "batch_size": 16, "epochs": 2, "strict": True, "num_workers": 2, "augment": "auto"}
    options |= {"amp": "off", "val_split": 0.25}
    graphed, guard = _fit(tmp_path / "graphed", guard=True, cuda_graphs=True, **options)
    assert type(graphed.run.train_loader).__name__ == "StreamingLoader" and graphed.run.train_loader.drop_last
    assert graphed.config.augment not in (None, "auto", "none")  # the folder's preset: crops moved on the device
    _assert_trained(graphed)
    assert guard.guarded == graphed.step - guard.warmup > 0
    eager, _ = _fit(tmp_path / "eager", **options)
    _assert_close_weights(graphed.model, eager.model, atol=1e-5)


# ---- no host sync per step ---------------------------------------------------------------------------------------
NO_SYNC_CASES = {
    "device loader, LeNet distortions, bf16": {"augment": "auto", "amp": "bf16"},
    "device loader, pad-crop-flip, resnet20, channels-last bf16": {"model": "resnet20", "augment": "pad-crop-flip"},
    "device loader, elastic + flip, float32": {"augment": "elastic+flip", "amp": "off"},
    "CUDA graphs, LeNet distortions, bf16, EMA": {"augment": "auto", "cuda_graphs": True, "ema_decay": 0.99},
    "torch.compile, LeNet distortions, bf16": {"augment": "auto", "compile": True},
    "gradient accumulation and clipping": {"augment": "auto", "accumulate_steps": 2, "clip_grad_norm": 1.0},
}


@cuda_test
@pytest.mark.parametrize("case", list(NO_SYNC_CASES))
def test_the_training_loop_makes_no_host_sync_per_step(tmp_path, case):
    trainer, guard = _fit(tmp_path / "run", guard=True, epochs=2, **NO_SYNC_CASES[case])
    _assert_trained(trainer)
    assert guard.guarded == trainer.step - guard.warmup > 0


@cuda_test
def test_the_guard_catches_a_sync_fp16_loss_scaling_syncs_every_step(tmp_path):
    """Positive control: GradScaler.step reads its found-inf flag on the host (documented in step.py), so the
    guard must raise there. If this ever passes without raising, the guard is not watching."""
    with pytest.raises(RuntimeError, match="synchroniz"):
        _fit(tmp_path / "run", guard=True, amp="fp16")


# ---- incremental occlusion on CUDA -------------------------------------------------------------------------------
def _resnet50_and_image(device: str, side: int = 112):
    torch.manual_seed(0)
    model = models.create("resnet50").eval().to(device)
    image = torch.randn(3, side, side, generator=torch.Generator().manual_seed(0)).to(device)
    return model, image


@cuda_test
def test_incremental_occlusion_on_cuda_equals_plain_passes_and_the_cpu(exact_float32):
    from cnnlab.inspect.occlusion import occlusion

    model, image = _resnet50_and_image("cuda")
    options = {"size": 16, "stride": 16, "batch_size": 16}  # 7 × 7 = 49 occluded copies
    fast = occlusion(model, image, incremental=True, **options)
    plain = occlusion(model, image, incremental=False, **options)
    assert fast.target == plain.target
    torch.testing.assert_close(fast.probs, plain.probs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fast.log_odds, plain.log_odds, atol=1e-3, rtol=1e-4)
    cpu = occlusion(model.cpu(), image.cpu(), incremental=False, **options)
    assert cpu.target == fast.target
    torch.testing.assert_close(fast.probs, cpu.probs, atol=1e-4, rtol=1e-3)


@cuda_test
def test_incremental_occlusion_keeps_its_plan_with_cudas_default_tf32():
    """With TF32 on (torch's default for convolutions) the incremental result must still pass its own check
    against plain passes, or the view silently falls back (a warning) and the speed-up is lost on GPUs."""
    import warnings

    from cnnlab.inspect.incremental import IncrementalForward
    from cnnlab.inspect.occlusion import occlusion

    model, image = _resnet50_and_image("cuda")
    assert IncrementalForward(model, image).enabled
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Incremental occlusion disagreed..." would fail here
        result = occlusion(model, image, size=16, stride=16, batch_size=16, incremental=True)
    assert torch.isfinite(result.probs).all()


# ---- DDP over NCCL -----------------------------------------------------------------------------------------------
@cuda_test
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP over NCCL needs two visible GPUs")
def test_two_nccl_processes_train_like_one_gpu(tmp_path):
    argv = ["--model", "lenet5-modern", "--epochs", "1", "--augment", "none", "--device", "cuda", "--amp", "off"]
    argv += ["--batch-size", "64", "--holdout", "0"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "cnnlab"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "NCCL_DEBUG": "WARN"}
    result = subprocess.run(
        [*command, "train", *argv, "--out", str(tmp_path / "ddp")], capture_output=True, text=True, timeout=240, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    ddp = load_checkpoint(tmp_path / "ddp")
    assert ddp["train_state"]["world_size"] == 2
    single, _ = _fit(tmp_path / "single", amp="off", drop_last=False)  # as the CLI: 23 global batches
    (ddp_row,), (single_row,) = ddp["history"], single.history
    for key in ("train_loss", "test_loss"):
        assert ddp_row[key] == pytest.approx(single_row[key], rel=1e-2), key


# ---- the harness itself, on the CPU (runs in CI) -----------------------------------------------------------------
def test_the_cuda_tests_helpers_run_on_the_cpu(tmp_path):
    trainer, guard = _fit(tmp_path / "run", device="cpu", guard=True, augment="auto", epochs=1, batch_size=128)
    _assert_trained(trainer)
    assert trainer.step == 11 and guard.steps == 11 and guard.guarded == 9  # 1,437 // 128 steps, 2 warm-up
    assert not guard.armed
