"""The HTML report: self-contained, every section present or visibly skipped, and it renders in a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

from cnnlab.errors import CheckpointError, ConfigError
from cnnlab.inspect import write_report
from cnnlab.train import load_checkpoint, save_checkpoint

SECTIONS = (  # in the page's order: results first, the long tables last
    "Final metrics",
    "Training curves",
    "Confusion matrix",
    "Most confident mistakes",
    "Filters",
    "Activations",
    "Occlusion",
    "Top patches",
    "Model summary",
    "Configuration",
)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--hide-scrollbars",
)
# Appended to a copy of the report (the report itself has no scripts): after loading, count the images that
# decoded to a real picture, and write the counts on <body> for --dump-dom to show.
IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const loaded = images.filter((img) => img.complete && img.naturalWidth > 0 && img.naturalHeight > 0);
  document.body.setAttribute("data-images", images.length);
  document.body.setAttribute("data-loaded", loaded.length);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium installed (Debian: apt-get install -y chromium); the browser rendering test needs it")


@pytest.fixture(scope="module")
def report(trained_run, tmp_path_factory) -> Path:
    pytest.importorskip("captum")
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(trained_run, run)
    steps: list[str] = []
    path = write_report(run, images=1, units=4, mistakes=8, progress=steps.append)
    assert (
        steps[0].startswith("loading ") and steps[1] == "final metrics (1/10)" and steps[-1] == "configuration (10/10)"
    )
    return path


def test_report_is_one_self_contained_page_with_every_section(report):
    assert report.name == "report.html"
    text = report.read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in text
    assert [text.index(f"<h2>{title}</h2>") for title in SECTIONS] == sorted(
        text.index(f"<h2>{title}</h2>") for title in SECTIONS
    )
    config = text[text.index("<h2>Configuration</h2>") :]
    assert config.count("<details><summary>") == 2 and "settings</summary><table>" in config  # folded
    assert "last epoch (3)" in text and "best validation epoch" in text  # the last beside the best (validation)
    assert "skipped" not in text.lower()  # a complete run: nothing to skip
    images = re.findall(r"<img[^>]*>", text)
    assert len(images) >= 9
    assert all('src="data:image/png;base64,' in tag for tag in images)
    # nothing to fetch: no scripts, no external addresses, no stylesheet links
    assert not re.search(r"<script|<link|src=\"(?!data:)|url\(|https?://", text)
    assert "features.c1.conv" in text and "60,000" in text  # the summary table, with LeNet-5's parameter count
    assert '"lr"' in text or ">lr<" in text  # the config


def test_report_renders_in_headless_chromium_with_every_image_loaded(report, tmp_path):
    browser = chromium()
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", IMAGE_PROBE + "</body>"))
    common = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*common, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<body[^>]*data-images="(\d+)"[^>]*data-loaded="(\d+)"', dom.stdout)
    assert found, "the probe script did not run: " + dom.stdout[:500]
    total, loaded = int(found.group(1)), int(found.group(2))
    assert total >= 9 and loaded == total, f"{loaded} of {total} images loaded"

    shot = tmp_path / "shot.png"
    result = subprocess.run(
        [*common, "--window-size=1200,3000", f"--screenshot={shot}", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    with Image.open(shot) as image:
        pixels = torch.from_numpy(__import__("numpy").asarray(image.convert("L")).copy()).float()
    assert pixels.shape == (3000, 1200)
    not_white = (pixels < 240).float().mean()
    assert not_white > 0.05, f"the screenshot is blank ({not_white:.1%} non-white pixels)"
    assert pixels.std() > 20  # text, tables and figures, not a flat page


def test_sections_without_their_data_are_skipped_with_a_visible_reason(trained_run, tmp_path):
    run = tmp_path / "bare"
    shutil.copytree(trained_run, run)
    (run / "metrics.csv").unlink()
    (run / "config.json").unlink()
    payload = load_checkpoint(run)
    payload.update(data="not-a-dataset", history=[])
    save_checkpoint(payload, run / "checkpoint.pt")
    text = write_report(run).read_text()
    assert "Training curves skipped:</strong> the run has no metrics.csv and its checkpoint holds no" in text
    for title in ("Confusion matrix", "Activations", "Occlusion", "Top patches", "Most confident mistakes"):
        assert f"{title} skipped:</strong> the dataset &#x27;not-a-dataset&#x27; is not available here" in text
    assert "Unknown dataset" in text  # the reason says what was wrong
    assert "From the checkpoint (no config.json in the run directory)" in text
    assert text.count('src="data:image/png;base64,') >= 2  # filters still there: they need only the weights
    assert "Skipped sections: Final metrics, Training curves, Confusion matrix" in text


def test_report_of_a_missing_run_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="images must be a positive whole number"):
        write_report(tmp_path, images=0)
    with pytest.raises(CheckpointError, match="does not exist"):
        write_report(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="without a checkpoint.pt"):
        write_report(tmp_path)


def test_adversarial_runs_get_their_robustness_curve_in_the_report(cli, tmp_path):
    """`train --adversarial` writes robustness.{json,png}; the report shows them, and `cnnlab attack` figures."""
    pytest.importorskip("captum")
    run = tmp_path / "adv"
    code, out, err = cli("train", "--model", "lenet5-modern", "--epochs", "1", "--adversarial", "fgsm", "--out", run)
    assert code == 0, err
    assert "robustness (FGSM on 360 test images" in err
    record = __import__("json").loads((run / "robustness.json").read_text())
    assert record["method"] == "fgsm" and [row["eps"] for row in record["rows"]][:2] == [0.0, 0.05]
    assert record["rows"][0]["accuracy"] == pytest.approx(1 - load_checkpoint(run)["history"][-1]["test_error"])
    code, _, err = cli("attack", run, "--method", "pgd", "--eps", "0,0.1", "--steps", "2")
    assert code == 0, err
    text = write_report(run, images=1, units=2, mistakes=2).read_text()
    section = text[text.index("<h2>Robustness</h2>") :]
    assert "FGSM on 360 test images" in section and "cnnlab attack (pgd)" in section
    assert section.count('src="data:image/png;base64,') >= 2
    (run / "robustness.json").write_text("{not json")
    text = write_report(run, images=1, units=2, mistakes=2).read_text()
    assert "Robustness skipped:</strong>" in text and "is not a robustness table written by cnnlab" in text
