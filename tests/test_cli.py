"""The command line: the main job end to end, every command, and every bad input with a clear error."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from cnnlab.cli import build_parser
from cnnlab.data import load_dataset
from cnnlab.train import load_checkpoint

COMMANDS = ["train", "eval", "predict", "summary", "models"]


def _no_traceback(err):
    assert "Traceback" not in err


def test_run_directory_holds_everything(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {"checkpoint.pt", "config.json", "metrics.csv", "curves.png"} <= names
    record = json.loads((trained_run / "config.json").read_text())
    assert record["config"]["model"] == "lenet5" and record["config"]["lr"] == 0.003
    assert {"cnnlab", "torch", "torchvision"} <= set(record["versions"])
    assert "git" in record and record["preprocessing"]["resize"] == [32, 32]
    with open(trained_run / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["test_error"]) < 0.2
    png = (trained_run / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    payload = load_checkpoint(trained_run)
    assert payload["train_state"]["complete"] and payload["config"]["seed"] == 0
    assert payload["versions"]["torch"] == torch.__version__


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"cnnlab {command}" in out


def test_eval_reports_the_runs_final_error(cli, trained_run):
    code, out, _ = cli("eval", trained_run, "--device", "cpu")
    assert code == 0
    with open(trained_run / "metrics.csv") as handle:
        last = list(csv.DictReader(handle))[-1]
    assert f"top-1 error {float(last['test_error']):.2%}" in out
    assert f"top-5 error {float(last['test_top5_error']):.2%}" in out


def test_predict_matches_the_model_on_the_same_pixels(cli, trained_run, tmp_path):
    from cnnlab.train import RunRecord

    digits = load_dataset("digits")
    paths = []
    for i in range(4):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(digits.test.images[i, 0].numpy(), mode="L").save(path)
        paths.append(path)
    rgb = tmp_path / "digit0.jpg"
    Image.open(paths[0]).convert("RGB").save(rgb, quality=100)
    code, out, _ = cli("predict", trained_run, *paths, rgb, "--top-k", "3", "--device", "cpu")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 5 and all(line.count("%") == 3 for line in lines)
    record = RunRecord.load(trained_run)
    model, pre = record.build_model(), record.preprocessing
    batch = pre.normalize(torch.stack([pre.load_image(p) for p in paths]))
    expected = model(batch).argmax(1).tolist()
    assert [line.split(": ")[1].split()[0] for line in lines[:4]] == [str(e) for e in expected]


def test_summary_and_models(cli):
    code, out, _ = cli("summary", "lenet5")
    assert code == 0 and "117,600" in out and "matches the paper's 60,000" in out and "1,516" in out
    code, out, _ = cli("summary", "lenet5-modern", "--input", "3x32x32")
    assert code == 0 and "456" in out  # C1 with 3 input channels: 6·(75+1)
    code, out, _ = cli("models")
    assert code == 0 and "lenet5-modern" in out and "60,000" in out and "1998" in out


def test_summary_of_a_checkpoint(cli, trained_run):
    code, out, _ = cli("summary", trained_run / "checkpoint.pt")
    assert code == 0 and "60,000" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--model", "lenet"], "Unknown model 'lenet'. Did you mean 'lenet5'"),
        (["train", "--data", "digit"], "Unknown dataset 'digit'. Did you mean 'digits'"),
        (["train", "--lr", "0"], "--lr must be a positive number"),
        (["train", "--lr", "-0.1"], "--lr must be a positive number"),
        (["train", "--lr", "nan"], "--lr must be a positive number"),
        (["train", "--epochs", "0"], "--epochs must be a positive whole number"),
        (["train", "--batch-size", "-4"], "--batch-size must be a positive whole number"),
        (["train", "--momentum", "1.5"], "--momentum must be in"),
        (["train", "--augment", "flips"], "Unknown augmentation preset 'flips'"),
        (["train", "--model-option", "depth=3"], "has no option 'depth'"),
        (["train", "--model-option", "head"], "must look like KEY=VALUE"),
        (["train", "--device", "cuda:7"], "cuda"),
        (["summary", "lenet5", "--input", "1x12x12"], "layer 'features.c3.conv'.*smallest input it accepts is 1×32×32"),
        (["summary", "lenet5", "--input", "1x16x16"], "layer 'features.c5.conv' .Conv2d. gets a 16×1×1 input"),
        (["summary", "lenet5", "--input", "1x16"], "must be CxHxW"),
        (["summary", "lenet5", "--input", "0x32x32"], "positive whole numbers"),
        (["summary", "vgg99"], "Unknown model 'vgg99'"),
        (["models", "zzz*"], "No model matches"),
        (["eval", "no/such/checkpoint.pt"], "does not exist"),
    ],
)
def test_bad_input_gets_one_clear_error(cli, argv, message, tmp_path):
    code, out, err = cli(*argv, "--out", tmp_path / "o") if argv[0] == "train" else cli(*argv)
    assert code != 0
    import re

    assert re.search(message, " ".join(err.split())), err
    _no_traceback(err)
    assert not (tmp_path / "o").exists()  # nothing written before the inputs are known good


def test_bad_checkpoints_and_images(cli, trained_run, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((trained_run / "checkpoint.pt").read_bytes()[:5000])
    code, _, err = cli("eval", truncated)
    assert code == 2 and "truncated or corrupt" in " ".join(err.split())
    torch.save({"w": torch.ones(1)}, tmp_path / "plain.pt")
    code, _, err = cli("predict", tmp_path / "plain.pt", tmp_path / "x.png")
    assert code == 2 and "not a cnnlab checkpoint" in " ".join(err.split())
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    code, out, err = cli("predict", trained_run, broken, "--device", "cpu")
    assert code == 2 and "broken.jpg" in err and out == ""
    _no_traceback(err)


def test_resume_refuses_changed_settings(cli, trained_run):
    code, _, err = cli("train", "--resume", trained_run, "--lr", "0.1")
    assert code == 2 and "--lr cannot change" in " ".join(err.split())
    code, _, err = cli("train", "--resume", trained_run, "--epochs", "2")
    assert code == 2 and "fewer than the 3 epochs" in " ".join(err.split())


def test_debug_shows_the_traceback(cli):
    from cnnlab.errors import UnknownNameError

    with pytest.raises(UnknownNameError):
        cli("--debug", "train", "--model", "nope")


def test_exploding_loss_exits_with_a_clear_error(cli, tmp_path):
    code, _, err = cli("train", "--model", "lenet5-modern", "--lr", "1e4", "--epochs", "2", "--out", tmp_path / "r")
    assert code == 3 and "The loss became" in " ".join(err.split()) and "--lr" in err
    _no_traceback(err)


@pytest.mark.slow
def test_ctrl_c_saves_a_resumable_checkpoint_and_resume_finishes(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnlab", "train", "--epochs", "40", "--out", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "resumable checkpoint" in err and "--resume" in err
    _no_traceback(err)
    state = load_checkpoint(run_dir)["train_state"]
    assert not state["complete"] and 1 <= state["epoch"] < 40
    resumed = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", "--resume", str(run_dir), "--epochs", str(state["epoch"] + 1)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "final test error" in resumed.stdout
    assert load_checkpoint(run_dir)["train_state"]["complete"]


def test_viz_writes_into_the_runs_own_viz_folder_by_default(cli, trained_run, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    monkeypatch.chdir(tmp_path)  # not where the pictures go: the run directory decides, not the cwd
    code, out, err = cli("viz", "filters", run, "--device", "cpu")
    assert code == 0, err
    assert out.strip() == str(run / "viz" / "filters-features.c1.conv.png") and not (tmp_path / "viz").exists()
    assert "…" not in err  # progress lines only on a terminal: captured stderr holds the notes alone
    code, out, err = cli("viz", "filters", run / "checkpoint.pt", "--device", "cpu", "--out", tmp_path / "mine")
    assert code == 0 and out.strip() == str(tmp_path / "mine" / "filters-features.c1.conv.png")
