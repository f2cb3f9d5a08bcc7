"""The ``confusion`` and ``errors`` views: where a classifier goes wrong on a labelled split.

Predictions come from one batched pass on the device with one host sync at the end; the confusion matrix is
scikit-learn's ``confusion_matrix`` (rows: true class, columns: predicted class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.inspect.grid import new_figure, show_image

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cnnlab.data import Preprocessing


@dataclass
class Predictions:
    """A model's predictions on a labelled split.

    Attributes:
        labels: (N,) true classes; ``predicted``: (N,) argmax classes; ``probs``: (N, K) softmax probabilities.
    """

    labels: torch.Tensor
    predicted: torch.Tensor
    probs: torch.Tensor

    @property
    def error(self) -> float:
        return float((self.predicted != self.labels).float().mean())

    @property
    def confidence(self) -> torch.Tensor:
        """(N,) probability of the predicted class."""
        return self.probs.gather(1, self.predicted.view(-1, 1))[:, 0]


@torch.inference_mode()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    preprocessing: Preprocessing,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> Predictions:
    """Classify uint8 images (N, C, H, W), already fitted to the model's input, in batches on ``device``."""
    from cnnlab.data import DeviceTensorLoader  # late: torchvision's import is slow and most commands skip it

    device = torch.device(device) if device is not None else next(model.parameters()).device
    loader = DeviceTensorLoader(images, labels, preprocessing, batch_size, device=device)
    probs = torch.cat([model(batch).float().softmax(dim=1) for batch, _ in loader.batches()]).cpu()  # the one sync
    return Predictions(labels.cpu(), probs.argmax(dim=1), probs)


def confusion_matrix(predictions: Predictions, num_classes: int | None = None) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    from sklearn.metrics import confusion_matrix as sk_confusion

    k = num_classes or predictions.probs.shape[1]
    return sk_confusion(predictions.labels.numpy(), predictions.predicted.numpy(), labels=list(range(k)))


def confident_mistakes(predictions: Predictions, count: int = 16) -> torch.Tensor:
    """Indices of the wrongly classified images, most confident (highest predicted-class probability) first."""
    if count < 1:
        raise ConfigError(f"The number of mistakes to show must be a positive integer, got {count}.")
    wrong = (predictions.predicted != predictions.labels).nonzero()[:, 0]
    order = predictions.confidence[wrong].argsort(descending=True, stable=True)
    return wrong[order][:count]


def render_confusion(matrix: np.ndarray, classes: list[str], title: str = "") -> Figure:
    """The confusion matrix with counts: mistakes in red, scaled to the largest off-diagonal count so that they
    stay visible next to large correct counts; the diagonal in green, shaded by each class's recall."""
    import matplotlib

    k = matrix.shape[0]
    side = min(10, 2.5 + 0.35 * k)
    fig = new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    off = matrix.astype(float).copy()
    np.fill_diagonal(off, 0)
    vmax = max(1.0, float(off.max()))
    reds, greens = matplotlib.colormaps["Reds"], matplotlib.colormaps["Greens"]
    colours = reds(off / vmax)
    recall = np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1)
    colours[np.arange(k), np.arange(k)] = greens(0.25 + 0.6 * recall)
    ax.imshow(colours, interpolation="nearest")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    dark = (i == j and recall[i] > 0.6) or (i != j and off[i, j] > 0.6 * vmax)
                    ax.text(
                        j,
                        i,
                        str(matrix[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if dark else "black",
                    )
        ax.set_xticks(range(k), classes, rotation=90 if max(map(len, classes)) > 3 else 0, fontsize=8)
        ax.set_yticks(range(k), classes, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class")
    total, correct = int(matrix.sum()), int(np.trace(matrix))
    ax.set_title(
        title or f"confusion matrix: {total - correct} errors in {total} ({(total - correct) / max(total, 1):.2%})",
        fontsize=10,
    )
    scale = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, vmax), cmap=reds)
    bar = fig.colorbar(scale, ax=ax, shrink=0.8, label="mistakes (count)")
    bar.locator = matplotlib.ticker.MaxNLocator(nbins=min(6, int(vmax)), integer=True)  # counts: whole numbers
    bar.update_ticks()
    return fig


def render_mistakes(
    images: torch.Tensor, predictions: Predictions, indices: torch.Tensor, classes: list[str], ncols: int = 8
) -> Figure:
    """The images at ``indices`` (uint8 (N, C, H, W), as the model saw them) with true → predicted (probability)."""
    n = len(indices)
    if n == 0:
        fig = new_figure(4, 1)
        fig.text(0.5, 0.5, "no mistakes", ha="center", va="center")
        return fig
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig = new_figure(1.6 * ncols, 1.8 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, i in zip(axes.flat, list(indices.tolist()) + [None] * (nrows * ncols - n), strict=True):
        if i is None:
            ax.axis("off")
            continue
        true, pred = int(predictions.labels[i]), int(predictions.predicted[i])
        show_image(
            ax,
            images[i].float() / 255,
            f"#{i}: {classes[true]} → {classes[pred]}\n({float(predictions.confidence[i]):.0%})",
        )
    fig.suptitle(f"the {n} most confident mistakes (true → predicted, probability)", fontsize=10)
    return fig
