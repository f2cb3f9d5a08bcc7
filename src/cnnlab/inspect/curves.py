"""Training curves: loss and error per epoch, train and test, as a PNG."""

from __future__ import annotations

from pathlib import Path


def plot_curves(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Write a two-panel PNG (loss; error in %) of per-epoch metric rows (as in metrics.csv)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train", markersize=3)
    ax_loss.plot(epochs, [r["test_loss"] for r in rows], "o-", label="test", markersize=3)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.set_yscale("log")
    ax_err.plot(epochs, [100 * r["train_error"] for r in rows], "o-", label="train", markersize=3)
    ax_err.plot(epochs, [100 * r["test_error"] for r in rows], "o-", label="test", markersize=3)
    best = min(rows, key=lambda r: r["test_error"])
    ax_err.annotate(
        f"best test {100 * best['test_error']:.2f}%",
        (best["epoch"], 100 * best["test_error"]),
        textcoords="offset points",
        xytext=(0, 12),
        ha="center",
    )
    ax_err.set(xlabel="epoch", ylabel="error (%)", title="top-1 error")
    ax_err.set_ylim(bottom=0)
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
