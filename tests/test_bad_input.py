"""Bad input and faults, as a hostile user would try them: every subcommand gets a table of bad arguments and must
answer with one clear error (non-zero exit, no traceback, the bad value named) before doing any work; the run
directory survives refused overwrites, concurrent writers, a full disk, kills and their leftovers."""

import errno
import fcntl
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.errors import RunDirLockedError
from cnnlab.train import checkpoint as checkpoint_module
from cnnlab.train import load_checkpoint
from cnnlab.train.rundir import LOCK_NAME, RunDir
from conftest import READ_ONLY_DRIVER, SHARED_DATASETS

TINY = ["--epochs", "1", "--labels-per-class", "10", "--batch-size", "16", "--device", "cpu"]


def _huge_png(path: Path) -> None:
    """A valid PNG header claiming 20,000 × 20,000 pixels (400 megapixels) in a few bytes."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data[12:29]  # chunk type + 13 bytes of IHDR data
    ihdr[4:12] = struct.pack(">II", 20_000, 20_000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny 1-epoch run, a features file and assorted bad files, made once for the module."""
    root = tmp_path_factory.mktemp("bad-input")
    run = root / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    npz = root / "features.npz"
    assert main(["features", str(run), "--data", "digits", "--layer", "c5", "--out", str(npz), "--device", "cpu"]) == 0
    (root / "plain.txt").write_text("not a checkpoint\n")
    (root / "empty.npz").write_bytes(b"")
    Image.new("L", (8, 8)).save(root / "image.png")
    _huge_png(root / "huge.png")
    (root / "trunc.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:4000])
    shutil.copy(run / "checkpoint.pt", root / "other.pt")
    with open(root / "evil.pt", "wb") as handle:
        pickle.dump(Path("/etc/passwd"), handle)  # a global that safe loading refuses
    (root / "folder").mkdir()
    return {"run": str(run), "tmp": str(root), "npz": str(npz)}


# (argv, strings the error must contain); {run}, {tmp}, {npz} are filled from the fixture.
CASES = [
    # train: the run directory
    (["train", "--out", "{run}"], ["{run} already holds a run", "--resume", "--overwrite"]),
    (["train", "--out", "/proc/forbidden/run"], ["/proc/forbidden/run"]),
    (["train", "--out", "{tmp}/plain.txt"], ["{tmp}/plain.txt", "is a file"]),
    (["train", "--out", "{tmp}/plain.txt/run"], ["{tmp}/plain.txt/run"]),
    (["train", "--resume", "{run}", "--overwrite"], ["--overwrite", "--resume"]),
    (["train", "--lr", "nan"], ["--lr"]),
    # eval / predict / summary: files that are not checkpoints or images
    (["eval", "{tmp}/plain.txt"], ["{tmp}/plain.txt", "not a cnnlab checkpoint", "text"]),
    (["eval", "{run}/config.json"], ["config.json", "JSON"]),
    (["eval", "{tmp}/evil.pt"], ["evil.pt", "may be unsafe"]),
    (["eval", "{tmp}/image.png"], ["image.png", "PNG image"]),
    (["eval", "{run}", "--batch-size", "0"], ["--batch-size", "0"]),
    (["predict", "{run}", "{tmp}/huge.png"], ["huge.png", "pixels", "CNNLAB_MAX_IMAGE_PIXELS"]),
    (["predict", "{run}", "{tmp}/missing.png"], ["missing.png", "does not exist"]),
    (["predict", "{run}", "{tmp}/image.png", "--top-k", "0"], ["--top-k"]),
    (["summary", "{tmp}/missing.pt"], ["missing.pt", "does not exist"]),
    (["summary", "lenet5", "--input", "0x32x32"], ["0x32x32"]),
    (["models", "zzz*"], ["zzz*"]),
    # attack
    (["attack", "{run}", "--limit", "0"], ["--limit", "0"]),
    (["attack", "{run}", "--batch-size", "0"], ["--batch-size", "0"]),
    (["attack", "{run}", "--method", "pgd", "--steps", "0"], ["--steps", "0"]),
    (["attack", "{run}", "--norm", "l2"], ["--norm l2", "pgd"]),
    (["attack", "{run}", "--eps", "x"], ["--eps 'x'"]),
    (["attack", "{run}", "--target", "12"], ["--target 12"]),
    (["attack", "{run}", "--out", "{tmp}/plain.txt"], ["{tmp}/plain.txt", "is a file"]),
    (["attack", "{run}", "{tmp}/missing"], ["{tmp}/missing", "does not exist"]),
    # fool
    (["fool", "{run}", "--class", "3", "--count", "0"], ["--count", "0"]),
    (["fool", "{run}", "--class", "3", "--count", "-2"], ["--count", "-2"]),
    (["fool", "{run}", "--class", "3", "--steps", "0"], ["--steps", "0"]),
    (["fool", "{run}", "--class", "99"], ["--class 99"]),
    (["fool", "{run}", "--class", "3", "--out", "{tmp}/x.pt"], ["{tmp}/x.pt", ".png"]),
    (["fool", "{run}", "--class", "3", "--out", "{tmp}/x.txt"], ["{tmp}/x.txt", ".png"]),
    (["fool", "{run}", "--class", "3", "--out", "{tmp}/folder"], ["{tmp}/folder", "is a folder"]),
    (["fool", "{run}", "--class", "3", "--out", "{tmp}/plain.txt/f.png"], ["{tmp}/plain.txt/f.png"]),
    # viz / report
    (["viz", "filters", "{run}", "--out", "{tmp}/plain.txt"], ["{tmp}/plain.txt", "is a file"]),
    (["viz", "activations", "{run}", "{tmp}/huge.png", "--out", "{tmp}/viz"], ["huge.png", "CNNLAB_MAX_IMAGE_PIXELS"]),
    (["viz", "filterz", "{run}"], ["filterz", "filters"]),
    (["report", "{tmp}/trunc.pt"], ["trunc.pt", "truncated or corrupt"]),
    (["report", "{tmp}/other.pt"], ["other.pt", "not its checkpoint.pt"]),
    (["report", "{run}", "--images", "0"], ["images", "0"]),
    (["report", "{run}", "--mistakes", "100000"], ["mistakes", "100000", "at most"]),
    (["viz", "activations", "{run}", "--count", "100000"], ["count", "100000", "at most 64"]),
    (["viz", "errors", "{run}", "--count", "100000"], ["count", "100000", "at most 256"]),
    # finetune / features / linear-probe
    (["finetune", "{run}", "--data", "digits", "--freeze", "c3", "--unfreeze-at", "-1"], ["--unfreeze-at", "-1"]),
    (["finetune", "{run}", "--data", "digits", "--lr-head", "nan"], ["--lr-head", "nan"]),
    (["finetune", "{run}", "--data", "digits", "--epochs", "1", "--out", "{run}"], ["{run} already holds a run"]),
    (["features", "{run}", "--data", "digits", "--layer", "c5", "--out", "{tmp}/dir.pt"], ["{tmp}/dir.pt", ".npz"]),
    (["features", "{run}", "--data", "digits", "--layer", "c5", "--out", "{tmp}/folder"], ["{tmp}/folder"]),
    (["features", "{run}", "--data", "digits", "--layer", "c9", "--out", "{tmp}/f.npz"], ["c9"]),
    (["linear-probe", "{npz}", "--c", "0"], ["--c", "0"]),
    (["linear-probe", "{npz}", "--c", "nan"], ["--c", "nan"]),
    (["linear-probe", "{npz}", "--c", "-1"], ["--c", "-1"]),
    (["linear-probe", "{tmp}/empty.npz"], ["empty.npz", "0 bytes"]),
    (["linear-probe", "{tmp}/folder"], ["{tmp}/folder", "is a folder"]),
    (["linear-probe", "{tmp}/image.png"], ["image.png", "not an .npz"]),
    (["linear-probe", "{tmp}/missing.npz"], ["missing.npz", "does not exist"]),
    # data
    (["data", "preview", "digits", "--count", "0"], ["--count", "0"]),
    (["data", "preview", "digits", "--count", "100000"], ["--count", "100000"]),
    (["data", "preview", "digits", "--out", "{tmp}/x.pt"], ["{tmp}/x.pt", ".png"]),
    (["data", "preview", "digits", "--out", "{tmp}/x.txt"], ["{tmp}/x.txt"]),
    (["data", "preview", "digits", "--out", "{tmp}/plain.txt/p.png"], ["{tmp}/plain.txt/p.png"]),
    (["data", "info", "digitz"], ["digitz"]),
    # bench
    (["bench", "models", "lenet5", "--input-size", "0"], ["--input-size", "0"]),
    (["bench", "models", "alexnet", "--input-size", "32"], ["3×32×32", "too small", "alexnet"]),
    (["bench", "models", "lenet5", "--batch-size", "0"], ["--batch-size", "0"]),
    (["bench", "models", "lenet5", "--repeats", "0", "--quick"], ["--repeats", "0"]),
    (["bench", "data", "lenet5"], ["lenet5", "bench models"]),
    # export
    (["export", "{run}", "--out", "{tmp}/folder"], ["{tmp}/folder", "is a folder"]),
    (["export", "{run}", "--out", "{tmp}/never.safetensors", "--check"], ["--check", "safetensors"]),
    (["export", "{run}", "--out", "{tmp}/plain.txt/m.onnx"], ["{tmp}/plain.txt/m.onnx"]),
    (["export", "lenet5", "--out", "{tmp}/m.onnx", "--input", "1x8x8"], ["1×8×8", "too small"]),
]


@pytest.mark.parametrize(("argv", "needles"), CASES, ids=[" ".join(argv[:3]) for argv, _ in CASES])
def test_bad_input_is_one_clear_error(files, argv, needles, capsys):
    argv = [a.format(**files) for a in argv]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code != 0, out
    assert "Traceback" not in out + err
    text = " ".join(err.split())
    assert text.startswith("error ("), err
    for needle in needles:
        assert needle.format(**files) in text, text
    assert not (Path(files["tmp"]) / "never.safetensors").exists()  # refused before writing


def test_no_work_before_every_checkpoint_is_checked(files, capsys):
    run = Path(files["run"])
    assert main(["attack", str(run), files["tmp"] + "/missing", "--device", "cpu"]) != 0
    assert not (run / "attack-fgsm").exists()  # the first run was not attacked before the second was refused


# ---- the run directory under faults ----------------------------------------------------------------------------
@pytest.fixture
def run_copy(files, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(files["run"], copy)
    (copy / LOCK_NAME).unlink(missing_ok=True)
    return copy


def test_refused_overwrite_keeps_the_run_and_overwrite_replaces_it(run_copy, capsys):
    before = (run_copy / "checkpoint.pt").read_bytes()
    assert main(["train", *TINY, "--seed", "5", "--out", str(run_copy)]) != 0
    assert "already holds a run" in capsys.readouterr().err
    assert (run_copy / "checkpoint.pt").read_bytes() == before
    (run_copy / "checkpoints" / "step000099999.pt").write_bytes(b"an old run's later step")
    assert main(["train", *TINY, "--seed", "5", "--out", str(run_copy), "--overwrite"]) == 0
    assert load_checkpoint(run_copy)["config"]["seed"] == 5
    assert not (run_copy / "checkpoints" / "step000099999.pt").exists()


def test_a_second_writer_is_refused_with_the_holders_pid(run_copy, capsys):
    with open(run_copy / LOCK_NAME, "a+") as handle:  # another process's lock (a separate open file: a separate lock)
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.write("PID 424242 on elsewhere")
        handle.flush()
        assert main(["train", "--resume", str(run_copy), "--epochs", "2"]) != 0
        err = " ".join(capsys.readouterr().err.split())
        assert "RunDirLockedError" in err and "PID 424242" in err and "Traceback" not in err
    assert load_checkpoint(run_copy)["train_state"]["epoch"] == 1  # untouched


def test_the_lock_dies_with_its_holder_even_on_kill_9(run_copy):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from cnnlab.train.rundir import RunDir; r = RunDir({str(run_copy)!r}); "
            "print('locked', flush=True); import time; time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirLockedError, match=f"PID {holder.pid} "):
            RunDir(run_copy)
    finally:
        holder.kill()  # SIGKILL: no handler, no cleanup of its own
        holder.wait()
    RunDir(run_copy).release()  # the kernel released the lock with the process


class _FullDiskOs:
    """``os`` for checkpoint.py, whose files fill the disk after ``limit`` bytes (OSError ENOSPC on write)."""

    def __init__(self, limit: int):
        self.limit = limit

    def __getattr__(self, name):
        return getattr(os, name)

    def fdopen(self, fd, mode="r", *args, **kwargs):
        real, limit = os.fdopen(fd, mode, *args, **kwargs), self.limit

        class Full(io.RawIOBase):
            written = 0

            def writable(self):
                return True

            def write(self, data):
                if self.written + len(data) > limit:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self.written += len(data)
                return real.write(data)

            def fileno(self):
                return real.fileno()

            def flush(self):
                real.flush()

            def close(self):
                super().close()  # flushes through this wrapper first
                real.close()

        return Full()


def test_disk_full_says_how_much_space_and_leaves_no_partial_file(run_copy, capsys, monkeypatch):
    monkeypatch.setattr(checkpoint_module, "os", _FullDiskOs(limit=10_000))
    assert main(["train", "--resume", str(run_copy), "--epochs", "2"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in err and "CheckpointError" in err
    assert "disk is full" in err and "partial file was removed" in err
    assert "The checkpoint needs 0.5 MB" in err and "is intact" in err and "--resume" in err, err
    assert not list(run_copy.rglob("*.tmp"))
    assert load_checkpoint(run_copy)["train_state"]["epoch"] == 1  # the previous checkpoint survives


def test_kill_after_the_last_checkpoint_then_rerun_writes_the_summary_and_cleans_orphans(run_copy, capsys):
    for name in ("summary.json", "metrics.csv", "curves.png"):  # what a kill right after the checkpoint leaves out
        (run_copy / name).unlink()
    orphans = [run_copy / "checkpoints" / ".step000000007.pt.x1y2.tmp", run_copy / ".checkpoint.pt.99.tmp"]
    orphans.append(run_copy / "summary.json.tmp")
    for orphan in orphans:
        orphan.write_bytes(b"half a write")
    assert main(["train", "--resume", str(run_copy)]) == 0
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert "already completed its 1 epoch: reusing it" in err and "Resuming" not in err
    assert "removed 3 unfinished" in " ".join(captured.err.split())
    assert not any(o.exists() for o in orphans)
    summary = json.loads((run_copy / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["epochs_completed"] == 1
    assert (run_copy / "metrics.csv").read_text().count("\n") == 2 and (run_copy / "curves.png").exists()


def test_fool_works_in_bounded_batches(files, tmp_path, capsys):
    out = tmp_path / "f.png"
    assert main(["fool", files["run"], "--class", "3", "--count", "70", "--steps", "1", "--out", str(out)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["f-00001.png", "f-00002.png"]  # 64 + 6 images, one file per batch
    assert "median" in capsys.readouterr().out


def test_training_that_stays_at_chance_is_flagged(tmp_path, capsys):
    argv = ["--epochs", "1", "--labels-per-class", "100", "--batch-size", "8", "--device", "cpu", "--lr", "10"]
    assert main(["train", *argv, "--out", str(tmp_path / "r")]) == 0  # 125 steps
    err = " ".join(capsys.readouterr().err.split())
    assert "at chance" in err and "--lr 1" in err


def test_a_dataset_other_than_the_models_own_is_warned_about(files, capsys):
    if not (SHARED_DATASETS / "MNIST").exists():
        pytest.skip("MNIST is not in the shared datasets")
    assert main(["eval", files["run"], "--device", "cpu"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["eval", files["run"], "--device", "cpu", "--data", "mnist", "--data-root", str(SHARED_DATASETS)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: the model was trained on 'digits', not 'mnist'" in err


READ_ONLY_COMMANDS = [  # every command that writes, pointed at a read-only file system ({ro})
    ["train", *TINY, "--out", "{ro}/run"],
    ["attack", "{run}", "--eps", "0.1", "--limit", "8", "--device", "cpu", "--out", "{ro}/attack"],
    ["fool", "{run}", "--class", "3", "--count", "1", "--steps", "1", "--device", "cpu", "--out", "{ro}/f.png"],
    ["viz", "filters", "{run}", "--device", "cpu", "--out", "{ro}/viz"],
    ["finetune", "{run}", "--data", "digits", "--epochs", "1", "--device", "cpu", "--out", "{ro}/ft"],
    ["features", "{run}", "--data", "digits", "--layer", "c5", "--device", "cpu", "--out", "{ro}/f.npz"],
    ["data", "preview", "digits", "--out", "{ro}/p.png"],
    ["export", "{run}", "--out", "{ro}/m.safetensors"],
]


@pytest.mark.slow
def test_a_read_only_file_system_is_one_clear_error_for_every_writing_command(files, tmp_path):
    """A real read-only mount (tmpfs, ro) in a private mount namespace: each writing command refuses at once."""
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux's unshare to mount a read-only file system privately")
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    commands = [[a.format(ro=mount_point, **files) for a in argv] for argv in READ_ONLY_COMMANDS]
    script = f'mount -t tmpfs -o ro,size=1m tmpfs {mount_point} && exec {sys.executable} -c "$0" "$1"'
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o ro tmpfs {mount_point}"], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private file system here: {probe.stderr.decode().strip()}")
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, READ_ONLY_DRIVER, json.dumps(commands)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for argv, (code, err) in zip(commands, json.loads(result.stdout.splitlines()[-1]), strict=True):
        assert code != 0 and "Traceback" not in err and str(mount_point) in err, (argv, err)
        assert "read-only" in err.lower() or "cannot be written" in err.lower() or "not writable" in err.lower(), err


def test_model_options_of_the_wrong_kind_are_refused_not_misread(cli, tmp_path):
    """`per_example=false` once reached the model as the string 'false', which is truthy: DropConnect then drew a
    mask per example (400× slower) without a word. Words as people type them are booleans now, and an option of
    another kind than its default is an error that names the option and the kind."""
    from cnnlab import models
    from cnnlab.cli import _parse_model_options
    from cnnlab.errors import ConfigError

    parsed = _parse_model_options(["per_example=false", "bias=True", "drop=none", "transform=tps", "samples=20"])
    assert parsed == {"per_example": False, "bias": True, "drop": "none", "transform": "tps", "samples": 20}
    for option, value, kind in (
        ("per_example", "false", "true or false"),
        ("samples", 2.5, "a whole number"),
        ("keep", "half", "a number"),
        ("drop", 1, "a word"),
    ):
        with pytest.raises(ConfigError, match=f"Option {option} of model 'mlp-800' is {kind}"):
            models.create("mlp-800", **{option: value})
    assert models.create("mlp-800", keep=1).features.fc1 is not None  # a whole number is a number
    code, _, err = cli("train", "--model", "mlp-800", "--data", "digits", "--model-option", "per_example=maybe",
                       "--out", tmp_path / "run")  # fmt: skip
    assert code != 0 and "per_example of model 'mlp-800' is true or false" in err and not (tmp_path / "run").exists()


def test_every_error_class_crosses_a_process_boundary_as_itself():
    """Errors raised in a worker process (``cnnlab reproduce --jobs``) are pickled back to the caller: each
    error class must come back as the same class with the same message, not as a pool error."""
    import inspect

    from cnnlab import errors

    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.CnnlabError)]
    assert len(classes) > 10
    for cls in classes:
        if cls is errors.UnknownNameError:
            raised = cls("model", "lenet", ["lenet5", "alexnet"])
        else:
            raised = cls("what was wrong, and how to fix it")
        back = pickle.loads(pickle.dumps(raised))
        assert type(back) is cls and str(back) == str(raised), cls.__name__
    unknown = errors.UnknownNameError("model", "lenet", ["lenet5", "alexnet"])
    back = pickle.loads(pickle.dumps(unknown))
    assert (back.kind, back.name, back.valid, back.suggestions) == (
        "model",
        "lenet",
        ["alexnet", "lenet5"],
        unknown.suggestions,
    )
    assert "lenet5" in back.suggestions and isinstance(back, KeyError)
