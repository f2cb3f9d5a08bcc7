"""Your own folder of images (``--data folder:PATH``) works in every view and in the report (issue #15, item 1)."""

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.inspect.views import VIEWS


def _digit_folder(root: Path, classes: tuple[int, ...] = (0, 1, 7), per_class: int = 10) -> Path:
    """An ImageFolder of the bundled sklearn digits: root/<digit>/<n>.png, grey 8×8 scaled to 0–255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    for digit in classes:
        folder = root / str(digit)
        folder.mkdir(parents=True)
        for n, image in enumerate(bunch.images[bunch.target == digit][:per_class]):
            Image.fromarray((image * 255 / 16).round().astype(np.uint8), mode="L").save(folder / f"{n}.png")
    return root


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> Path:
    """lenet5-modern trained for one short epoch on a 3-class folder of 30 PNGs, through the CLI."""
    from cnnlab.cli import main

    tmp = tmp_path_factory.mktemp("folder")
    data = _digit_folder(tmp / "digits")
    run = tmp / "run"
    argv = ["train", "--model", "lenet5-modern", "--data", f"folder:{data}", "--epochs", "1", "--batch-size", "8"]
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        assert main([*argv, "--num-workers", "0", "--device", "cpu", "--out", str(run)]) == 0
    (tmp / "train.log").write_text(log.getvalue())
    return run


def test_a_3_class_run_reports_top_3_error_everywhere(folder_run, cli):
    log = (folder_run.parent / "train.log").read_text()
    assert "top-5" not in log and log.count("top-3 error") == 2  # the epoch line and the final line
    code, out, _ = cli("eval", folder_run, "--device", "cpu")
    assert code == 0 and "top-3 error" in out and "top-5" not in out


# "transformer" is for spatial transformer models only (tests/test_stn.py); on this LeNet it is a clear error.
@pytest.mark.parametrize("kind", [k for k in VIEWS if k not in ("curves", "transformer")] + ["curves"])
def test_every_view_works_on_folder_data(folder_run, tmp_path, cli, kind):
    extra = {"top-patches": ["--max-units", "2", "--k", "2"], "occlusion": ["--size", "8", "--stride", "8"]}
    code, out, err = cli("viz", kind, folder_run, "--device", "cpu", "--out", tmp_path, *extra.get(kind, []))
    assert code == 0, err
    written = [Path(line) for line in out.splitlines() if line.endswith(".png")]
    assert written and all(p.is_file() and p.stat().st_size > 0 for p in written)


def test_report_works_on_folder_data(folder_run, cli):
    code, out, err = cli("report", folder_run, "--device", "cpu", "--images", "1", "--units", "2")
    assert code == 0, err
    page = (folder_run / "report.html").read_text()
    assert "skipped:" not in page, page[page.find("skipped:") - 200 : page.find("skipped:") + 400]
    assert page.count("data:image/png;base64,") >= 6


def test_views_and_eval_use_the_split_training_held_out(tmp_path):
    from cnnlab.data import Preprocessing, load_dataset
    from cnnlab.train import RunRecord

    spec = f"folder:{_digit_folder(tmp_path / 'd')}"
    trained = load_dataset(spec, val_split=0.3, seed=3)  # as build_run splits it
    pre = Preprocessing(
        trained.image_shape[0], (8, 8), 0, (0.5,) * trained.image_shape[0], (0.25,) * trained.image_shape[0]
    )
    payload = {"data": spec, "config": {"seed": 3, "val_split": 0.3, "data_root": None}, "preprocessing": pre.to_dict()}
    assert RunRecord.from_payload(payload, tmp_path / "checkpoint.pt").dataset().test.paths == trained.test.paths
    assert load_dataset(spec).test.paths != trained.test.paths  # the default split would test on training images
