"""TensorBoard event files: training scalars at each sync point, test metrics and sample predictions per epoch.

Optional: needs the ``tensorboard`` package (``pip install tensorboard``). View with
``tensorboard --logdir runs/`` (every run directory has its own ``tensorboard/`` folder).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from cnnlab.errors import ConfigError

MISSING = (
    "--tensorboard needs the tensorboard package, which is not installed: pip install tensorboard "
    "(or train without --tensorboard; metrics.csv, summary.json and curves.png are always written)."
)


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def check_tensorboard() -> None:
    """Raise :class:`ConfigError` saying how to install TensorBoard if it is missing."""
    if not tensorboard_available():
        raise ConfigError(MISSING)


class TensorBoardLogger:
    """A ``SummaryWriter`` on ``log_dir`` with the few things the trainer records.

    Args:
        log_dir: usually ``<run dir>/tensorboard``; a resumed run appends new event files there.
    """

    def __init__(self, log_dir: str | Path):
        check_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def predictions(
        self,
        step: int,
        images: torch.Tensor,
        labels: torch.Tensor,
        logits: torch.Tensor,
        classes: list[str],
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        """A figure of a few test images titled "prediction (truth)", wrong ones in red.

        Args:
            images: normalised (N, C, H, W), any device.
            labels: (N,) true classes.
            logits: (N, K) the model's outputs.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        images = images.detach().float().cpu()
        c = images.shape[1]
        pixels = images * torch.tensor(std).view(1, c, 1, 1) + torch.tensor(mean).view(1, c, 1, 1)  # back to [0, 1]
        pixels = pixels.clamp(0, 1).permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
        predicted = logits.detach().argmax(dim=1).cpu().tolist()
        truth = labels.detach().cpu().tolist()
        columns = min(8, len(truth))
        rows = -(-len(truth) // columns)
        figure, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.6 * rows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, image, p, t in zip(axes.flat, pixels, predicted, truth, strict=False):
            ax.imshow(image[..., 0] if c == 1 else image, cmap="gray" if c == 1 else None, vmin=0, vmax=1)
            ax.set_title(f"{classes[p]} ({classes[t]})", fontsize=8, color="green" if p == t else "red")
        figure.tight_layout()
        self.writer.add_figure("test/predictions", figure, step)  # closes the figure

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
