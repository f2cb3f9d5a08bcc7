"""Data parallelism: ``torchrun`` with 2 CPU processes (gloo) trains what one process trains on the same global batch.

This file is also the worker torchrun starts (see ``__main__`` at the bottom).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnlab.train import TrainConfig, Trainer, build_run, load_checkpoint, resolve

# One epoch of LeNet-5 (modern) on the digits: 45 global batches of 32, the last of 29 (split 15/14).
# The worker trains without augmentation; the CLI test with the digits' default one (drawn per global batch,
# so it is the same with 1 or 2 processes). LeNet-5 (modern) has no dropout, whose masks are per process.
BASE = {"model": "lenet5-modern", "epochs": 1, "augment": "none", "device": "cpu", "batch_size": 32}
DDP = {**BASE, "accumulate_steps": 2, "checkpoint_every": 20, "keep_last": 10, "holdout": 0.0}
TIMEOUT_S = 240  # two Python processes importing torch on a loaded 2-core machine; the training takes ~2 s


# gloo can abort a process while it tears its threads down ("terminate called without an active exception",
# SIGABRT), rarely and only on a loaded machine, even after the barrier and destroy_process_group that
# distributed_session does (pytorch/pytorch#190489, #179291: gloo's worker threads outliving the process group).
# Such a run is started once more from scratch; any other failure, or a second abort, fails the test.
_GLOO_TEARDOWN_ABORT = "terminate called without an active exception"


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    if result.returncode != 0 and _GLOO_TEARDOWN_ABORT in result.stderr:
        output = Path(args[-1])  # the worker's output folder, or the CLI's --out run directory: start afresh
        shutil.rmtree(output, ignore_errors=True)
        if args[0] == __file__:
            output.mkdir()
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def _single_process(run_dir: Path, **overrides) -> Trainer:
    trainer = Trainer(build_run(resolve(TrainConfig(**{**BASE, **overrides})), run_dir=run_dir))
    trainer.fit()
    return trainer


def _assert_close_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_and_resume_exactly(tmp_path):
    _torchrun(__file__, str(tmp_path))
    ddp = load_checkpoint(tmp_path / "ddp")
    single = _single_process(tmp_path / "single", holdout=0.0)  # no accumulation: the same gradient, whole
    _assert_close_state(ddp["model_state"], single.model.state_dict())
    (ddp_row,), (single_row,) = ddp["history"], single.history
    for key in ("train_loss", "train_error", "test_loss", "test_error"):
        assert ddp_row[key] == pytest.approx(single_row[key], rel=1e-4, abs=1e-6), key
    assert ddp_row["train_images"] == 1437 and ddp["train_state"]["world_size"] == 2
    assert len(ddp["train_state"]["rng_per_rank"]) == 2
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["status"] == "complete"
    # Resumed under torchrun from the mid-epoch checkpoint of step 20: the same weights, bit for bit.
    resumed = load_checkpoint(tmp_path / "resumed")
    for key, value in ddp["model_state"].items():
        assert torch.equal(value, resumed["model_state"][key]), key


@pytest.mark.slow
def test_torchrun_cli_with_augmentation_equals_a_single_process(tmp_path):
    argv = ["--epochs", "1", "--model", "lenet5-modern", "--augment", "auto", "--device", "cpu", "--batch-size", "32"]
    result = _torchrun("-m", "cnnlab", "train", *argv, "--out", str(tmp_path / "ddp"))
    assert result.stdout.count("final test error") == 1  # rank 0 alone reports
    ddp = load_checkpoint(tmp_path / "ddp")
    single = _single_process(tmp_path / "single", augment="auto")
    assert single.config.augment not in (None, "auto", "none")  # the digits' preset was used
    _assert_close_state(ddp["model_state"], single.model.state_dict())
    # Evaluation is sharded over the processes and summed: the same figures as one process scoring all
    (ddp_row,), (single_row,) = ddp["history"], single.history
    assert ddp_row["test_error"] == pytest.approx(single_row["test_error"], abs=1e-9)
    assert ddp_row["test_loss"] == pytest.approx(single_row["test_loss"], rel=1e-4)
    assert ddp["train_state"]["world_size"] == 2


@pytest.mark.slow
def test_gradual_unfreezing_under_torchrun_equals_a_single_process(tmp_path):
    """DDP fixes the parameters it synchronises when it wraps the model: stages unfrozen later must be
    re-registered, or each process would train its own copy of them."""
    from cnnlab.cli import main

    _single_process(tmp_path / "source")
    argv = ["finetune", str(tmp_path / "source"), "--data", "digits", "--freeze", "c3", "--unfreeze-at", "1"]
    argv += ["--epochs", "2", "--batch-size", "32", "--augment", "none", "--device", "cpu", "--lr-body", "0.01"]
    result = _torchrun("-m", "cnnlab", *argv, "--out", str(tmp_path / "ddp"))
    assert result.stdout.count("final test error") == 1 and "unfroze c1, s2, c3" in result.stderr
    assert main([*argv, "--out", str(tmp_path / "single")]) == 0
    source, ddp, single = (load_checkpoint(tmp_path / name) for name in ("source", "ddp", "single"))
    _assert_close_state(ddp["model_state"], single["model_state"])
    unfrozen = "features.c1.conv.weight"
    assert not torch.equal(single["model_state"][unfrozen], source["model_state"][unfrozen])  # it did train


@pytest.mark.slow
def test_adversarial_training_under_torchrun_follows_a_single_process(tmp_path):
    """Goodfellow's objective computes its own gradients before the trainer's backward; under DDP it must still
    synchronise every parameter once per step. Not bit-equal: sign(∇ₓJ) flips where the gradient is ~0 and
    the float path differs (DDP uses autograd's own input gradient), so a loose tolerance."""
    argv = ["train", "--model", "lenet5-modern", "--epochs", "1", "--augment", "none", "--device", "cpu"]
    argv += ["--batch-size", "32", "--adversarial", "fgsm"]
    result = _torchrun("-m", "cnnlab", *argv, "--out", str(tmp_path / "ddp"))
    assert result.stdout.count("final test error") == 1
    from cnnlab.cli import main

    assert main([*argv, "--out", str(tmp_path / "single")]) == 0
    ddp, single = load_checkpoint(tmp_path / "ddp"), load_checkpoint(tmp_path / "single")
    for key, value in ddp["model_state"].items():
        torch.testing.assert_close(value, single["model_state"][key], rtol=0, atol=5e-3, msg=key)


def _worker(out: Path) -> None:
    """Run by torchrun: train with DDP, then resume a copy from the step-20 checkpoint."""
    from cnnlab.train.checkpoint import find_resume_checkpoint
    from cnnlab.train.distributed import distributed_session, per_process_config

    torch.set_num_threads(1)
    with distributed_session("cpu") as context:
        assert context is not None and context.world_size == 2 and context.backend == "gloo"
        config = per_process_config(resolve(TrainConfig(**DDP, out=str(out / "ddp"))), context)
        Trainer(build_run(config)).fit()
        payload, _ = find_resume_checkpoint(str(out / "ddp" / "checkpoints" / "step000000020.pt"))
        resumed = Trainer(build_run(per_process_config(resolve(TrainConfig(**DDP, out=str(out / "resumed"))), context)))
        resumed.load_state_dict(payload)
        resumed.fit()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
