"""Progress reporting: a rich progress bar per epoch (loss, accuracy, learning rate, images/s, ETA), or silence."""

from __future__ import annotations

from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def log_console() -> Console:
    """The console for training logs, on stderr. Piped or redirected output gets 200 columns: rich's default of
    80 (or $COLUMNS) off a terminal would split every epoch line in two."""
    console = Console(stderr=True)
    if not console.is_terminal:
        console = Console(stderr=True, width=max(console.width, 200))
    return console


class Reporter(Protocol):
    def start_epoch(self, epoch: int, epochs: int, batches: int, start_batch: int) -> None: ...
    def update(
        self, batches_done: int, loss: float, accuracy: float, images_per_s: float, lr: float | None = None
    ) -> None: ...
    def end_epoch(self, row: dict) -> None: ...
    def message(self, text: str) -> None: ...


class RichReporter:
    """One progress bar per epoch, then a line with the epoch's test results."""

    def __init__(self, console: Console | None = None, top_k: int = 5):
        """``top_k``: the k of the top-k error the trainer measures, min(5, classes), for its label."""
        self.console = console or log_console()
        self.progress: Progress | None = None
        self.top_k = top_k

    def start_epoch(self, epoch: int, epochs: int, batches: int, start_batch: int) -> None:
        self.progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "loss {task.fields[loss]:.4f} acc {task.fields[acc]:6.2%} lr {task.fields[lr]:.3g} "
                "{task.fields[speed]:,.0f} img/s ETA"
            ),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=batches, completed=start_batch, loss=0.0, acc=0.0, speed=0.0, lr=0.0
        )

    def update(
        self, batches_done: int, loss: float, accuracy: float, images_per_s: float, lr: float | None = None
    ) -> None:
        assert self.progress is not None
        fields = {"loss": loss, "acc": accuracy, "speed": images_per_s, **({"lr": lr} if lr is not None else {})}
        self.progress.update(self.task, completed=batches_done, **fields)

    def end_epoch(self, row: dict) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.console.print(
            f"  test loss {row['test_loss']:.4f}  test error {row['test_error']:.2%}  "
            f"top-{self.top_k} error {row['test_top5_error']:.2%}  lr {row['lr']:.3g}  "
            f"({row['seconds']:.1f} s, {row['images_per_s']:,.0f} img/s)"
        )

    def message(self, text: str) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.console.print(text)


class QuietReporter:
    """Reports nothing (tests, library use)."""

    def start_epoch(self, epoch: int, epochs: int, batches: int, start_batch: int) -> None:
        pass

    def update(
        self, batches_done: int, loss: float, accuracy: float, images_per_s: float, lr: float | None = None
    ) -> None:
        pass

    def end_epoch(self, row: dict) -> None:
        pass

    def message(self, text: str) -> None:
        pass
