"""Training curves: loss and error per epoch, train and test, as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cnnlab.inspect.grid import new_figure, save

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def curves_figure(rows: list[dict], title: str = "") -> Figure:
    """Two panels (loss, log scale; top-1 error in %) of per-epoch metric rows (as in metrics.csv). The best test
    epoch is ringed on the error panel and named in its legend, where no label can cover the curves."""
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in rows]
    fig = new_figure(10, 4)
    ax_loss, ax_err = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train", markersize=3)
    ax_loss.plot(epochs, [r["test_loss"] for r in rows], "o-", label="test", markersize=3)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.set_yscale("log")
    ax_err.plot(epochs, [100 * r["train_error"] for r in rows], "o-", label="train", markersize=3)
    ax_err.plot(epochs, [100 * r["test_error"] for r in rows], "o-", label="test", markersize=3)
    best = min(rows, key=lambda r: r["test_error"])
    ax_err.plot(
        best["epoch"],
        100 * best["test_error"],
        "o",
        markersize=11,
        markerfacecolor="none",
        markeredgecolor="crimson",
        markeredgewidth=1.8,
        label=f"best test {100 * best['test_error']:.2f}% (epoch {int(best['epoch'])})",
    )
    ax_err.set(xlabel="epoch", ylabel="error (%)", title="top-1 error")
    ax_err.set_ylim(bottom=0)
    for ax in (ax_loss, ax_err):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return fig


def plot_curves(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Write :func:`curves_figure` of ``rows`` to ``path`` as PNG, atomically; returns the path."""
    return save(curves_figure(rows, title), path)
