"""The engine trains any task (issue 13's proof): a denoising autoencoder written in under 60 lines and a tiny GAN
with two models and two optimisers get a run directory, progress, TensorBoard, summary.json and bit-exact
resume with no other code; the GAN also trains under torchrun with 2 gloo processes.

This file is also the worker its subprocess tests start (see ``__main__`` at the bottom).
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data import DeviceTensorLoader
from cnnlab.train import Part, Task, TrainConfig, Trainer, build_run, load_checkpoint, load_latest_checkpoint, resolve


# ---- a new task: 36 lines ---------------------------------------------------------------------------------------
class Denoise(Task):
    """A denoising autoencoder: the input is a digit plus Gaussian noise, the target the clean digit."""

    name = "denoise"
    selection = "test_loss"

    def __init__(self, noise: float = 0.5):
        self.noise = noise
        self.models = {
            "model": nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1),
            )  # (B, 1, 32, 32) -> (B, 8, 16, 16) -> (B, 1, 32, 32)
        }  # fmt: skip

    def loss(self, part, nets, batch):
        clean, _ = batch
        loss = F.mse_loss(nets["model"](clean + self.noise * torch.randn_like(clean)), clean)
        return loss, {"loss": loss.detach().double() * len(clean)}

    def evaluate(self, nets, run, distributed):
        noise = torch.Generator().manual_seed(0)  # the same noisy test images every epoch
        total, count = 0.0, 0
        for clean, _ in run.test_loader.batches():
            noisy = clean + self.noise * torch.randn(clean.shape, generator=noise).to(clean)
            total += F.mse_loss(nets["model"](noisy), clean, reduction="sum").item() / clean[0].numel()
            count += len(clean)
        return {"test_loss": total / count}


# ---- a task with two models and two optimisers ------------------------------------------------------------------
class TinyGAN(Task):
    """Goodfellow et al. 2014 in miniature: the discriminator steps, then the generator (non-saturating loss)."""

    name = "tiny-gan"
    main = "generator"
    sums = {"d_loss": torch.float64, "g_loss": torch.float64}  # noqa: RUF012

    def __init__(self, z_dim: int = 16):
        self.z_dim = z_dim
        self.models = {
            "generator": nn.Sequential(
                nn.Linear(z_dim, 64), nn.ReLU(), nn.Linear(64, 32 * 32), nn.Unflatten(1, (1, 32, 32))
            ),
            "discriminator": nn.Sequential(
                nn.Conv2d(1, 8, 4, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(8 * 16 * 16, 1)
            ),
        }  # fmt: skip

    def parts(self):
        return [Part("discriminator", ("discriminator",)), Part("generator", ("generator",))]

    def loss(self, part, nets, batch):
        real, _ = batch
        z = torch.randn(len(real), self.z_dim, device=real.device)
        if part == "discriminator":
            with torch.no_grad():  # no graph into the generator (and DDP expects no backward there)
                fake = nets["generator"](z)
            logits = nets["discriminator"](torch.cat([real, fake])).squeeze(1)
            truth = torch.cat([torch.ones(len(real)), torch.zeros(len(real))]).to(logits)
            loss = F.binary_cross_entropy_with_logits(logits, truth)
            return loss, {"d_loss": loss.detach().double() * len(real)}
        logits = nets["discriminator"](nets["generator"](z)).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        return loss, {"g_loss": loss.detach().double() * len(real)}


# ---- the harness ------------------------------------------------------------------------------------------------
BASE = {"model": "lenet5-modern", "data": "digits", "augment": "none", "device": "cpu", "batch_size": 32, "seed": 1,
        "holdout": 0.0}  # fmt: skip
TASKS = {"denoise": (Denoise, {"optimizer": "adam", "lr": 0.003}), "gan": (TinyGAN, {"optimizer": "adam", "lr": 2e-4})}


def _trainer(kind: str, run_dir: Path, subset: int = 320, **overrides) -> Trainer:
    """The digits (a fixed subset, for speed) and the task; the task's models are built after the seed is set."""
    make, options = TASKS[kind]
    config = resolve(TrainConfig(**{**BASE, "epochs": 2, "momentum": 0.5, **options, **overrides}))
    run = build_run(config, run_dir=run_dir)
    tl, te = run.train_loader, run.test_loader
    n = subset if subset else tl.num_samples
    shard = {"rank": tl.rank, "world_size": tl.world_size}
    run.train_loader = DeviceTensorLoader(
        tl.images[:n], tl.labels[:n], tl.preprocessing, tl.batch_size, shuffle=True, seed=config.seed, **shard
    )
    run.test_loader = DeviceTensorLoader(te.images[:96], te.labels[:96], te.preprocessing, 64)
    torch.manual_seed(config.seed)
    return Trainer(run, task=make())


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_new_task_gets_run_directory_progress_tensorboard_and_summary(tmp_path):
    from io import StringIO

    from rich.console import Console

    from cnnlab.train.progress import RichReporter

    out = StringIO()
    trainer = _trainer("denoise", tmp_path / "run", tensorboard=pytest.importorskip("tensorboard") is not None)
    trainer.monitor.reporter = RichReporter(Console(file=out, width=150))
    history = trainer.fit()
    trainer.close()
    assert history[-1]["test_loss"] < history[0]["test_loss"] < 1.0  # it learns to denoise
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"checkpoint.pt", "best.pt", "metrics.csv", "summary.json", "tensorboard", "checkpoints"} <= files
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["task"] == "denoise" and summary["steps"] == 20
    assert summary["best"]["test_loss"] == min(r["test_loss"] for r in history)
    text = out.getvalue()
    assert "epoch 2/2" in text and "loss " in text and "img/s" in text and "test loss" in text
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "epoch/train_loss", "test/loss"} <= set(events.Tags()["scalars"])
    payload = load_checkpoint(tmp_path / "run")
    assert payload["task"] == "denoise" and payload["train_state"]["complete"]


def _worker(argv: list[str]) -> None:
    """``sigkill RUN_DIR``: train the autoencoder and SIGKILL this process in step 14 (after the checkpoint of
    step 12, mid-epoch 2). ``torchrun OUT``: the GAN under torchrun, then each rank writes its weights."""
    if argv[0] == "sigkill":
        trainer = _trainer("denoise", Path(argv[1]), checkpoint_every=4)
        loss = trainer.task.loss
        calls = []

        def killing_loss(part, nets, batch):
            calls.append(1)
            if len(calls) == 14:
                os.kill(os.getpid(), signal.SIGKILL)
            return loss(part, nets, batch)

        trainer.task.loss = killing_loss
        trainer.fit()
        raise SystemExit("not killed")
    from cnnlab.train.distributed import distributed_session

    out = Path(argv[1])
    with distributed_session("cpu") as context:
        trainer = _trainer("gan", out / "ddp", subset=0, epochs=1, checkpoint_every=10, keep_last=10)
        trainer.fit()
        states = {n: m.state_dict() for n, m in trainer.task.models.items()}
        torch.save(states, out / f"rank{context.rank}.pt")


def test_a_new_task_resumes_bit_exactly_after_sigkill_mid_epoch(tmp_path):
    command = [sys.executable, __file__, "sigkill", str(tmp_path / "killed")]
    threads = str(torch.get_num_threads())  # this process's: the straight run below must reduce in the same order
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": threads}
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    found = load_latest_checkpoint(tmp_path / "killed")
    assert found is not None and found[1]["train_state"]["step"] == 12  # mid-epoch 2 (10 steps an epoch)
    resumed = _trainer("denoise", tmp_path / "killed", checkpoint_every=4)
    resumed.load_state_dict(found[1])
    resumed.fit()
    straight = _trainer("denoise", tmp_path / "straight", checkpoint_every=4)
    straight.fit()
    _same(straight.model.state_dict(), resumed.model.state_dict())
    assert resumed.history == [{**r, "seconds": s["seconds"], "images_per_s": s["images_per_s"]}
                               for r, s in zip(straight.history, resumed.history, strict=True)]  # fmt: skip


def test_two_models_and_two_optimisers_resume_bit_exactly_mid_epoch(tmp_path):
    straight = _trainer("gan", tmp_path / "straight", checkpoint_every=3, keep_last=10)
    history = straight.fit()
    assert set(history[-1]) >= {"train_d_loss", "train_g_loss"} and not (tmp_path / "straight" / "best.pt").exists()
    payload = load_checkpoint(straight.run.run_dir.step_checkpoints()[4])  # step 12: epoch 2, batch 2
    assert payload["train_state"]["step"] == 12 and set(payload["train_state"]["parts"]) == {
        "discriminator",
        "generator",
    }
    assert set(payload["model_states"]) == {"discriminator"}  # the generator (main) is model_state
    resumed = _trainer("gan", tmp_path / "resumed", checkpoint_every=3, keep_last=10)
    resumed.load_state_dict(payload)
    resumed.fit()
    for name in ("generator", "discriminator"):
        _same(straight.task.models[name].state_dict(), resumed.task.models[name].state_dict())
    _same(straight.parts[1].optimizer.state_dict()["state"][0], resumed.parts[1].optimizer.state_dict()["state"][0])


@pytest.mark.slow
def test_two_models_and_two_optimisers_train_under_torchrun(tmp_path):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        __file__,
        "torchrun",
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["status"] == "complete" and summary["task"] == "tiny-gan"
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name in ("generator", "discriminator"):  # DDP kept the two processes' models identical
        _same(rank0[name], rank1[name])
    payload = load_checkpoint(tmp_path / "ddp")
    assert payload["train_state"]["world_size"] == 2 and payload["history"][0]["train_images"] == 1437
    _same(payload["model_state"], rank0["generator"])


def test_the_architecture_page_example_runs(tmp_path, monkeypatch):
    text = (Path(__file__).parents[1] / "docs" / "architecture.md").read_text()
    (example,) = [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/architecture.md", "exec"), {"__name__": "docs_example"})
    summary = json.loads((tmp_path / "runs" / "denoise" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["task"] == "denoise"


if __name__ == "__main__":
    _worker(sys.argv[1:])
