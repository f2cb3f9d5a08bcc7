"""Progress reporting: a rich progress bar per epoch (loss, accuracy, learning rate, images/s, ETA), the epoch's line
with the whole run's ETA, or silence; and short step lines for long commands (:func:`step_lines`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Protocol, TextIO

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


def run_eta(epochs_done: int, epochs: int, epoch_seconds: list[float]) -> str:
    """``ETA run 0:01:20``: the epochs left times the mean training seconds of the epochs seen so far (evaluation
    not included); empty when nothing is left or nothing was timed."""
    left = epochs - epochs_done
    if left <= 0 or not epoch_seconds:
        return ""
    total = round(left * sum(epoch_seconds) / len(epoch_seconds))
    hours, rest = divmod(total, 3600)
    return f"ETA run {hours}:{rest // 60:02d}:{rest % 60:02d}"


class RichReporter:
    """One progress bar per epoch, then a line with the epoch's test results and the whole run's ETA."""

    def __init__(self, console: Console | None = None):
        self.console = console or log_console()
        self.progress: Progress | None = None
        self.epochs = 0
        self.epoch_seconds: list[float] = []  # of the epochs this process trained (a resumed run: from the resume)

    def start_epoch(self, epoch: int, epochs: int, batches: int, start_batch: int) -> None:
        self.epochs = epochs
        self.progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[shown]}", markup=False),
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
        self.epoch_seconds.append(float(row["seconds"]))  # this epoch's training seconds
        eta = run_eta(int(row["epoch"]), self.epochs, self.epoch_seconds)
        line = f"  {text}  lr {row['lr']:.3g}  ({row['seconds']:.1f} s, {row['images_per_s']:,.0f} img/s)"
        # markup off: a task's failures come in brackets ("[mode collapse: ...]"), which rich would take for tags
        self.console.print(line + (f"  {eta}" if eta else ""), markup=False)

    def message(self, text: str) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.console.print(text, markup=False)


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


def step_lines(command: str, stream: TextIO | None = None) -> Callable[[str], None]:
    """A ``progress`` callback for long commands (``report``, ``viz``, ``features``): each step as one short line
    on stderr, ``report: confusion matrix (3/10)…``, when stderr is a terminal; silent when it is piped or
    captured, so logs and tests stay clean."""
    stream = stream if stream is not None else sys.stderr
    if not stream.isatty():
        return lambda text: None

    def say(text: str) -> None:
        print(f"{command}: {text}…", file=stream, flush=True)

    return say
