"""``cnnlab report RUN`` for a GAN run: one self-contained HTML page (``RUN/report.html``) of what training did.

Sections: the failures the task names (the discriminator winning, mode collapse, classes dropped), epoch by epoch;
the losses and the discriminator's probabilities over the epochs; the sample diversity and class coverage over the
epochs; the fixed-noise grids over time (the same 64 z after each epoch, so the eye follows one sample from grid to
grid); every epoch's numbers; the configuration. The pictures are embedded, so the page opens offline.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cnnlab.errors import CheckpointError
from cnnlab.generative.task import COLLAPSE_DIVERSITY, COLLAPSE_TWINS, diagnose, diagnose_collapse, diagnose_coverage

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cnnlab.train.record import RunRecord

MAX_GRIDS = 10  # grids shown: evenly spaced over the epochs, the first and the last always among them


def write_gan_report(run: str | Path | RunRecord, progress: Callable[[str], None] = lambda text: None) -> Path:
    """Write ``RUN_DIR/report.html`` for a GAN run (its directory, its checkpoint or its loaded record, as written by
    ``cnnlab gan train``); returns its path.

    Raises:
        CheckpointError: no readable checkpoint, or not a GAN run.
    """
    from cnnlab import __version__
    from cnnlab.inspect.page import REPORT_NAME, figure, png_file, table, write_page
    from cnnlab.train.record import RunRecord, task_spec

    started = time.perf_counter()
    record = run if isinstance(run, RunRecord) else RunRecord.load(run)
    run_dir = record.run_dir
    spec = task_spec(record.training_payload(), run_dir, "gan", "GAN", "cnnlab gan train")
    history = record.history
    if not history:
        raise CheckpointError(f"{run_dir} has no completed epoch yet: nothing to report (train at least one).")
    classes = record.classes
    progress("failures (1/6)")
    sections = [("Failures", _failures(history, classes))]
    progress("losses (2/6)")
    sections.append(
        ("Losses", figure(losses_figure(history), "The two losses and D's mean probability 'real', per epoch."))
    )
    progress("diversity and coverage (3/6)")
    sections.append(("Diversity and coverage", figure(health_figure(history), _health_caption(history))))
    progress("sample grids (4/6)")
    grids = sorted((run_dir / "samples").glob("epoch*.png"))
    if grids:
        picks = torch.linspace(0, len(grids) - 1, min(MAX_GRIDS, len(grids))).round().long().unique().tolist()
        parts = [
            f"<figure>{png_file(grids[i], grids[i].stem)}<figcaption>after epoch {int(grids[i].stem[5:])}"
            "</figcaption></figure>"
            for i in picks
        ]
        note = f"The same 64 noise vectors after each epoch ({len(parts)} of {len(grids)} grids shown)."
        sections.append(("Samples over time", f'<p class="note">{note}</p><div class="row">{"".join(parts)}</div>'))
    else:
        sections.append(("Samples over time", '<p class="skip">No sample grids in samples/ (deleted?).</p>'))
    progress("epochs (5/6)")
    columns = [c for c in EPOCH_COLUMNS if any(c in row for row in history)]
    rows = [[int(row["epoch"]), *(_cell(row.get(c)) for c in columns)] for row in history]
    sections.append(("Epochs", table(["epoch", *columns], rows)))
    progress("configuration (6/6)")
    settings = [[k, v if isinstance(v, str) else json.dumps(v)] for k, v in {**record.config, **spec}.items()]
    sections.append(("Configuration", f"<details><summary>{len(settings)} settings</summary>"
                                      f"{table(['setting', 'value'], settings, left=2)}</details>"))  # fmt: skip
    last = history[-1]
    name = record.config.get("model", "GAN")
    header = (
        f"<h1>{html.escape(str(name))} on {html.escape(str(record.data or '?'))}</h1>"
        f'<p class="meta">Run {html.escape(str(run_dir.resolve()))}: {int(last["epoch"])} epochs, last D loss '
        f"{last['train_d_loss']:.3f}, G loss {last['train_g_loss']:.3f}. Report by cnnlab {html.escape(__version__)} "
        f"on {time.strftime('%Y-%m-%d %H:%M')}, in {time.perf_counter() - started:.1f} s.</p>"
    )
    return write_page(run_dir / REPORT_NAME, f"{name} report", header, sections)


EPOCH_COLUMNS = (
    "train_d_loss", "train_g_loss", "train_d_real", "train_d_fake", "train_d_wins", "sample_diversity",
    "sample_twins", "mode_collapse", "classes_covered", "rarest_class", "rarest_share", "frechet", "frechet_floor",
    "images_per_s", "seconds",
)  # fmt: skip


def _cell(value: object) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def epoch_problems(row: dict, classes: list[str] | None = None) -> list[str]:
    """The failures the GAN task names for one epoch's row (as its epoch line shows them)."""
    problems = [diagnose(row["train_d_loss"], row["train_g_loss"])]
    if "sample_diversity" in row:
        problems.append(diagnose_collapse(row["sample_diversity"], row["sample_twins"]))
    if "classes_covered" in row:
        problems.append(diagnose_coverage(row, classes))
    return [p for p in problems if p]


def _failures(history: list[dict], classes: list[str]) -> str:
    found = [(int(row["epoch"]), p) for row in history for p in epoch_problems(row, classes)]
    checked = "the discriminator winning (D loss ≈ 0, G loss high), NaN, mode collapse (diversity and twins)"
    checked += (
        ", classes dropped (coverage)"
        if any("classes_covered" in r for r in history)
        else " (class coverage was not measured: train with --coverage-run CLASSIFIER_RUN)"
    )
    if not found:
        return f"<p>None detected in {len(history)} epoch(s). Checked: {html.escape(checked)}.</p>"
    items = "".join(f"<li>epoch {epoch}: {html.escape(p)}</li>" for epoch, p in found)
    return f"<ul>{items}</ul><p class='note'>Checked: {html.escape(checked)}.</p>"


def losses_figure(history: list[dict]) -> Figure:
    """Two panels per epoch: the D and G losses, and D's mean probability 'real' on real and generated images."""
    from matplotlib.ticker import MaxNLocator

    from cnnlab.inspect.grid import new_figure

    epochs = [row["epoch"] for row in history]
    fig = new_figure(10, 3.6)
    losses, odds = fig.subplots(1, 2)
    losses.plot(epochs, [r["train_d_loss"] for r in history], "o-", label="D loss", markersize=3)
    losses.plot(epochs, [r["train_g_loss"] for r in history], "o-", label="G loss (−log D(G(z)))", markersize=3)
    losses.set(xlabel="epoch", ylabel="mean loss", title="losses")
    odds.plot(epochs, [r["train_d_real"] for r in history], "o-", label="D(x), real", markersize=3)
    odds.plot(epochs, [r["train_d_fake"] for r in history], "o-", label="D(G(z)), generated", markersize=3)
    odds.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="0.5: D cannot tell")
    odds.set(xlabel="epoch", ylabel="mean probability 'real'", title="the discriminator", ylim=(0, 1))
    for ax in (losses, odds):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def health_figure(history: list[dict]) -> Figure:
    """Diversity and twins of the fixed-noise samples per epoch with the collapse thresholds, and (when measured)
    the classes covered by ≥ 5 % of the coverage samples and their Fréchet distance beside its floor."""
    from matplotlib.ticker import MaxNLocator

    from cnnlab.inspect.grid import new_figure

    epochs = [row["epoch"] for row in history]
    fig = new_figure(14, 3.6)
    spread, covered, distance = fig.subplots(1, 3)
    if all("sample_diversity" in r for r in history):
        spread.plot(epochs, [r["sample_diversity"] for r in history], "o-", label="diversity", markersize=3)
        spread.plot(epochs, [r["sample_twins"] for r in history], "o-", label="twins", markersize=3)
        spread.axhline(COLLAPSE_DIVERSITY, color="C0", linestyle=":", linewidth=1, label="collapse: diversity below")
        spread.axhline(COLLAPSE_TWINS, color="C1", linestyle=":", linewidth=1, label="collapse: twins above")
        spread.legend(fontsize=8)
    spread.set(xlabel="epoch", title="the 64 fixed-noise samples against real images")
    if all("classes_covered" in r for r in history):
        total = history[0]["classes_covered"] + history[0]["classes_dropped"]
        covered.plot(epochs, [r["classes_covered"] for r in history], "o-", markersize=3, label="classes ≥ 5 %")
        covered.set(ylim=(0, total + 0.5), ylabel="classes")
        covered.axhline(total, color="grey", linestyle=":", linewidth=1, label="all classes")
        covered.legend(fontsize=8)
    else:
        covered.text(0.5, 0.5, "class coverage not measured\n(--coverage-run CLASSIFIER_RUN)", ha="center",
                     va="center", transform=covered.transAxes, color="grey")  # fmt: skip
    covered.set(xlabel="epoch", title="class coverage of 1,000 samples")
    if all("frechet" in r for r in history):
        distance.plot(epochs, [r["frechet"] for r in history], "o-", markersize=3, label="samples vs real test")
        floor = [r["frechet_floor"] for r in history]
        distance.plot(epochs, floor, ":", color="grey", label="floor: real train vs test")
        distance.set(yscale="log", ylabel="Fréchet distance (classifier features)")
        distance.legend(fontsize=8)
    else:
        distance.text(0.5, 0.5, "Fréchet distance not measured\n(--coverage-run CLASSIFIER_RUN)", ha="center",
                      va="center", transform=distance.transAxes, color="grey")  # fmt: skip
    distance.set(xlabel="epoch", title="Fréchet distance of the 1,000 samples")
    for ax in (spread, covered, distance):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    return fig


def _health_caption(history: list[dict]) -> str:
    text = (
        "Left: the samples' mean pairwise distance over the real images' (diversity, ≈ 1 for real-like variety) "
        "and the share with a near-copy among them (twins); dotted: where mode collapse is named."
    )
    if any("classes_covered" in r for r in history):
        last = history[-1]
        text += f" Middle: classes the classifier finds in ≥ 5 % of the samples; after the last epoch the rarest " \
                f"class has {last['rarest_share']:.1%}."  # fmt: skip
    if any("frechet" in r for r in history):
        text += (
            " Right: the Fréchet distance of the same 1,000 samples to 1,000 real test images in the classifier's "
            "features (log scale), and its floor, 1,000 real training images against them: a curve of quality "
            "over the epochs (cnnlab gan measure, with 10,000 samples, gives the figure to quote)."
        )
    return text
