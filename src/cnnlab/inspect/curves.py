"""Training curves: loss and error per epoch, train, validation and test, as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cnnlab.inspect.grid import new_figure, save

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def curves_figure(rows: list[dict], title: str = "") -> Figure:
    """Two panels (loss, log scale; top-1 error in %) of per-epoch metric rows (as in metrics.csv): train,
    validation (when the run held one out) and test. The best epoch — chosen on the validation split, as best.pt is;
    on the test split only for older runs without one — is ringed on the error panel and named in its legend, where
    no label can cover the curves."""
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in rows]
    splits = [
        ("train", "train"),
        *([("val", "validation")] if all("val_error" in r for r in rows) else []),
        ("test", "test"),
    ]
    fig = new_figure(10, 4)
    ax_loss, ax_err = fig.subplots(1, 2)
    for key, label in splits:
        ax_loss.plot(epochs, [r[f"{key}_loss"] for r in rows], "o-", label=label, markersize=3)
        ax_err.plot(epochs, [100 * r[f"{key}_error"] for r in rows], "o-", label=label, markersize=3)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.set_yscale("log")
    chosen_on = "val" if splits[1][0] == "val" else "test"
    best = min(rows, key=lambda r: r[f"{chosen_on}_error"])
    epoch, test = int(best["epoch"]), 100 * best["test_error"]
    named = (
        f"best epoch {epoch}: validation {100 * best['val_error']:.2f}%, test {test:.2f}%"
        if chosen_on == "val"
        else f"best test {test:.2f}% (epoch {epoch})"
    )
    ax_err.plot(
        best["epoch"],
        100 * best[f"{chosen_on}_error"],
        "o",
        markersize=11,
        markerfacecolor="none",
        markeredgecolor="crimson",
        markeredgewidth=1.8,
        label=named,
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


ZOOM = 3.0  # arms_figure's error axis ends at this multiple of the highest final test error (when the data go higher)


def arms_figure(histories: dict[str, list[list[dict]]], title: str = "") -> Figure:
    """Error per epoch of several arms, as He et al. 2015 draw plain against residual nets (figures 1 and 6): one
    colour per arm, the test error solid and the training error dashed, each the mean over the arm's seeds with
    the seeds' range shaded. ``histories``: arm -> one list of per-epoch metric rows (as in metrics.csv) per seed.
    Seeds that ran different numbers of epochs are drawn over the epochs they share. The error axis ends at
    :data:`ZOOM` × the highest final test error when the first epochs go far above that (MNIST's 1–2 % under
    first epochs of 5–15 %), so the differences between arms stay visible; the caption says so."""
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(7, 4.2)
    ax = fig.subplots()
    colours = [f"C{i}" for i in range(10)]
    finals, highest = [], 0.0  # each arm's final mean test error; the highest point drawn, in %
    for i, (arm, runs) in enumerate(histories.items()):
        epochs = min(len(rows) for rows in runs)
        if not epochs:
            continue
        x = [runs[0][e]["epoch"] for e in range(epochs)]
        for key, style, label in (("test_error", "-", "test"), ("train_error", "--", "train")):
            if not all(key in rows[e] for rows in runs for e in range(epochs)):
                continue
            per_epoch = [[100 * rows[e][key] for rows in runs] for e in range(epochs)]  # (epochs, seeds) in %
            mean = [sum(v) / len(v) for v in per_epoch]
            if key == "test_error":
                finals.append(mean[-1])
            highest = max(highest, *(max(v) for v in per_epoch))
            ax.plot(x, mean, style, color=colours[i % 10], label=f"{arm}, {label}", linewidth=1.4)
            if len(runs) > 1:
                ax.fill_between(x, [min(v) for v in per_epoch], [max(v) for v in per_epoch], color=colours[i % 10],
                                alpha=0.15, linewidth=0)  # fmt: skip
    seeds = sorted({len(runs) for runs in histories.values()})
    caption = f"mean of {'/'.join(map(str, seeds))} seed(s), range shaded"
    top = ZOOM * max(finals, default=0.0)
    if 0 < top < highest:
        ax.set_ylim(0, top)
        caption += f"; axis cut at {ZOOM:g}× the highest final test error"
    else:
        ax.set_ylim(bottom=0)
    ax.set(xlabel="epoch", ylabel="error (%)", title=caption)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_arms(histories: dict[str, list[list[dict]]], path: str | Path, title: str = "") -> Path:
    """Write :func:`arms_figure` to ``path`` as PNG, atomically; returns the path."""
    return save(arms_figure(histories, title), path)
