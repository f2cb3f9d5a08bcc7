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
    def update(self, batches_done: int, text: str, images_per_s: float, lr: float | None = None) -> None: ...
    def end_epoch(self, row: dict, text: str) -> None: ...
    def message(self, text: str) -> None: ...


class RichReporter:
    """One progress bar per epoch, then a line with the epoch's test results."""

    def __init__(self, console: Console | None = None):
        self.console = console or log_console()
        self.progress: Progress | None = None

    def start_epoch(self, epoch: int, epochs: int, batches: int, start_batch: int) -> None:
        self.progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[shown]}"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.progress.start()
        # Nothing but the bar until the first sync point has numbers to show (no "loss 0.0000 0 img/s").
        self.task = self.progress.add_task("train", total=batches, completed=start_batch, shown="")

    def update(self, batches_done: int, text: str, images_per_s: float, lr: float | None = None) -> None:
        assert self.progress is not None
        rate = f" lr {lr:.3g}" if lr is not None else ""
        shown = f"{text}{rate} {images_per_s:,.0f} img/s ETA"
        self.progress.update(self.task, completed=batches_done, shown=shown)

    def end_epoch(self, row: dict, text: str) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.console.print(f"  {text}  lr {row['lr']:.3g}  ({row['seconds']:.1f} s, {row['images_per_s']:,.0f} img/s)")

    def message(self, text: str) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.console.print(text)


class QuietReporter:
    """Reports nothing (tests, library use)."""

    def start_epoch(self, epoch: int, epochs: int, batches: int, start_batch: int) -> None:
        pass

    def update(self, batches_done: int, text: str, images_per_s: float, lr: float | None = None) -> None:
        pass

    def end_epoch(self, row: dict, text: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass
