"""The run directory: every run leaves its checkpoint, config, metrics and curves in one folder.

runs/<name>/
    checkpoint.pt   latest state (resumable): a hard link to the newest file in checkpoints/
    best.pt         the end-of-epoch state with the lowest test error so far (a hard link)
    checkpoints/    step<N>.pt: the last ``keep_last`` states, written atomically (epoch ends, every
                    ``checkpoint_every`` steps, and on SIGINT/SIGTERM)
    config.json     resolved config, versions, git revision
    metrics.csv     one row per epoch
    summary.json    best and last metrics, wall time, images/s, peak memory (written when training stops)
    curves.png      training curves (written by the caller's epoch callback)
    tensorboard/    TensorBoard event files (with ``tensorboard`` on)
    .lock           held (``flock``) by the one process writing the run; holds its PID

One writer at a time: opening a run directory for writing takes an exclusive ``flock`` on its ``.lock``, which
the kernel releases however the process ends (``kill -9`` included), so a stale lock cannot outlive its
holder; a second writer is refused at once with the holder's PID. With the lock held, ``*.tmp`` files are
leftovers of writes that a kill cut short, and are removed.

Hard links make ``checkpoint.pt`` and ``best.pt`` cost no extra space or time; where the file system has none
they are copies. Every name is replaced atomically (rename), so a crash leaves each one whole, old or new.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import shutil
import socket
import sys
import time
import warnings
import weakref
from pathlib import Path

from cnnlab.errors import CheckpointError, OutputError, RunDirLockedError, RunExistsError
from cnnlab.train.checkpoint import (
    BEST_NAME,
    CHECKPOINT_NAME,
    CHECKPOINTS_DIR,
    save_checkpoint,
    step_checkpoints,
    step_number,
)

METRIC_FIELDS = (  # the classifier's columns, in this order; another task's columns follow (metric_fields)
    "epoch",
    "train_loss",
    "train_error",
    "val_loss",
    "val_error",
    "val_top5_error",
    "test_loss",
    "test_error",
    "test_top5_error",
    "lr",
    "images_per_s",
    "seconds",
)


def metric_fields(rows: list[dict]) -> list[str]:
    """The metrics.csv columns of these rows: the known ones that occur, in :data:`METRIC_FIELDS` order, then any
    other column a task reports (a GAN's ``train_d_loss``...), in the order first seen."""
    seen = list(dict.fromkeys(k for row in rows for k in row if k != "train_images"))
    return [k for k in METRIC_FIELDS if k in seen] + [k for k in seen if k not in METRIC_FIELDS]


def default_run_dir(model: str, data: str, root: str | Path = "runs") -> Path:
    """runs/<model>-<data>-<YYYYmmdd-HHMMSS>, with a suffix if that exists already."""
    base = Path(root) / f"{model}-{data.replace(':', '_').replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


LOCK_NAME = ".lock"
# Files whose presence means a directory holds a run (work that a new run there would destroy)
RUN_RECORDS = (CHECKPOINT_NAME, BEST_NAME, CHECKPOINTS_DIR, "config.json", "metrics.csv", "summary.json")
# What training writes into a run directory: what --overwrite deletes (nothing else in the folder is touched)
TRAINING_OUTPUTS = (*RUN_RECORDS, "curves.png", "tensorboard", "robustness.json", "robustness.png")


class RunDir:
    """A run directory opened for writing: created if needed, locked against other writers, orphans removed.

    Args:
        path: the directory.
        new: a new run starts here: refuse a directory that already holds one (:data:`RUN_RECORDS`) unless
            ``overwrite``, which deletes the old run's :data:`TRAINING_OUTPUTS` (after taking the lock).
        overwrite: see ``new``.
        lock: take the writer's lock (False for the processes of a distributed run that write nothing).

    Raises:
        OutputError: the directory cannot be created or written.
        RunExistsError: ``new`` and the directory holds a run, without ``overwrite``.
        RunDirLockedError: another process holds the lock.
    """

    def __init__(self, path: str | Path, *, new: bool = False, overwrite: bool = False, lock: bool = True):
        self.path = Path(path)
        self.created = not self.path.exists()
        self.removed_orphans: list[Path] = []
        if new and not overwrite:
            check_new_run_dir(self.path)
        _make_directory(self.path)
        self._lock = _acquire_lock(self.path) if lock else None
        if self._lock is not None:
            weakref.finalize(self, self._lock)  # a RunDir that is dropped lets go of its share of the lock
        if lock:
            if new and overwrite:
                self._delete_training_outputs()
            elif new:
                check_new_run_dir(self.path)  # again under the lock: another run may have started meanwhile
            self.removed_orphans = self._remove_orphans()

    def release(self) -> None:
        """Let another process write this run directory (closing this handle on the lock)."""
        if self._lock is not None:
            self._lock()
            self._lock = None

    def abandon(self) -> None:
        """Release the lock and remove the directory if this object created it and nothing else was written."""
        was_writer = self._lock is not None
        self.release()
        if self.created and was_writer:
            (self.path / LOCK_NAME).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # something else is in it: keep it
                self.path.rmdir()

    def _delete_training_outputs(self) -> None:
        for name in TRAINING_OUTPUTS:
            target = self.path / name
            try:
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
            except OSError as error:
                raise OutputError(f"--overwrite could not delete {target}: {error.strerror}.") from None

    def _remove_orphans(self) -> list[Path]:
        """Delete ``*.tmp`` files in the run and checkpoints folders: with the lock held, nothing is writing them."""
        removed = []
        for folder in (self.path, self.path / CHECKPOINTS_DIR):
            if not folder.is_dir():
                continue
            for item in folder.iterdir():
                if (item.name.endswith(".tmp") or item.name.endswith(".tmp.png")) and item.is_file():
                    try:
                        item.unlink()
                    except OSError:
                        continue
                    removed.append(item)
        return removed

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @property
    def best(self) -> Path:
        return self.path / BEST_NAME

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    def step_checkpoints(self) -> list[Path]:
        """The files in checkpoints/, oldest step first."""
        return step_checkpoints(self.path)

    def commit_checkpoint(self, payload: dict, step: int, keep_last: int = 2, best: bool = False) -> Path:
        """Write ``payload`` as checkpoints/step<step>.pt, point checkpoint.pt (and best.pt) at it, prune.

        Each step is atomic: a failure (a full disk) leaves checkpoint.pt, best.pt and every older file as
        they were, and raises :class:`CheckpointError` saying so.
        """
        path = save_checkpoint(payload, self.checkpoints / f"step{step:09d}.pt", previous=self.checkpoint)
        _link_atomically(path, self.checkpoint)
        if best:
            _link_atomically(path, self.best)
        kept = self.step_checkpoints()
        # Files of later steps are from a trajectory this run abandoned (it resumed from an earlier state):
        # left there, they would be kept as "newest" and resumed from.
        later = [p for p in kept if step_number(p) > step]
        earlier = [p for p in kept if step_number(p) <= step]
        for old in later + earlier[:-keep_last]:
            old.unlink(missing_ok=True)
        return path

    def write_json(self, name: str, record: dict) -> Path:
        target = self.path / name
        tmp = target.with_suffix(".json.tmp")
        try:
            tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
            os.replace(tmp, target)
        except OSError as error:
            raise _write_failed(target, tmp, error) from None
        return target

    def write_metrics(self, rows: list[dict]) -> None:
        """Rewrite metrics.csv from the full history (so a resumed run never holds rows it has not re-done)."""
        tmp = self.metrics.with_suffix(".csv.tmp")
        try:
            fields = metric_fields(rows)
            with tmp.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=fields)
                writer.writeheader()
                for row in rows:
                    writer.writerow({k: row.get(k, "") for k in fields})
            os.replace(tmp, self.metrics)
        except OSError as error:
            raise _write_failed(self.metrics, tmp, error) from None


def check_new_run_dir(path: str | Path) -> None:
    """Refuse to start a new run in ``path`` if it holds one (its files would be replaced and its checkpoints
    pruned), or if it cannot be a directory.

    Raises:
        RunExistsError: ``path`` holds a run's files.
        OutputError: ``path`` is a file.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"--out {str(path)!r} is a file, not a directory; give a new or empty directory.")
    found = [name for name in RUN_RECORDS if (path / name).exists()]
    if found:
        raise RunExistsError(
            f"{path} already holds a run ({', '.join(found)}); training there would replace it. To continue it: "
            f"cnnlab train --resume {path} (with --epochs N to train longer); to start afresh, choose another "
            "--out, or add --overwrite to delete its checkpoints, metrics and summary."
        )


def _make_directory(path: Path) -> None:
    """Create ``path`` (and its parents) or say in one line why it cannot be (cnnlab.outputs' check)."""
    from cnnlab.outputs import output_dir

    if path.exists() and not path.is_dir():
        raise OutputError(f"--out {str(path)!r} is a file, not a directory; give a new or empty directory.")
    output_dir(path, "--out")


_HELD: dict[str, list] = {}  # resolved path -> [file object holding the flock, number of RunDirs sharing it]


def _acquire_lock(path: Path):
    """Take the exclusive lock of ``path`` for this process; returns a function releasing this holder's share.

    The kernel drops a ``flock`` when its file is closed, including when the process dies (``kill -9``).
    Several RunDirs of one process share one lock (a library user may open a run again to resume it).
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        return None
    key = str(path.resolve())
    if key not in _HELD:
        lock_path = path / LOCK_NAME
        try:
            handle = open(lock_path, "a+")  # noqa: SIM115 (held open: the lock lives as long as the file)
        except OSError as error:
            raise OutputError(
                f"Cannot create the lock file {lock_path}: {error.strerror}. Choose a writable --out."
            ) from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise RunDirLockedError(
                    f"{path} is being written by another process ({holder}); a run directory has one writer at a "
                    "time. Wait for it to end or stop it, or choose another --out."
                ) from None
            why = f"cannot lock {lock_path} ({error.strerror}); make sure no other run writes there"
            warnings.warn(why, stacklevel=3)
            return None
        handle.seek(0)
        handle.truncate()
        command = " ".join(Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv))[:200]
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(f"PID {os.getpid()} on {socket.gethostname()}, since {since}: {command}")
        handle.flush()
        _HELD[key] = [handle, 0]
    _HELD[key][1] += 1
    released = [False]

    def release() -> None:
        if released[0] or key not in _HELD:
            return
        released[0] = True
        _HELD[key][1] -= 1
        if _HELD[key][1] == 0:
            _HELD.pop(key)[0].close()

    return release


def _write_failed(target: Path, tmp: Path, error: OSError) -> OutputError:
    """The error for a failed write of ``target`` through ``tmp`` (removed), saying whether the old file is kept."""
    tmp.unlink(missing_ok=True)
    kept = f"the previous {target.name} is unchanged" if target.exists() else f"{target.name} was not written"
    return OutputError(f"Could not write {target}: {error.strerror or error}; {kept}. {_fix_for(error)}")


def _fix_for(error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        return "Free disk space and retry."
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "Make the folder writable, or choose another --out."
    return "Check the folder and retry."


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a metrics.csv as dicts of floats."""
    with Path(path).open() as handle:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


def _link_atomically(source: Path, target: Path) -> None:
    """Make ``target`` name the same file as ``source`` (a hard link; a copy where links are unsupported)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, tmp)
        except OSError:  # no hard links here (some network and FAT file systems): copy instead
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        kept = f"{target} still holds the previous checkpoint" if target.exists() else f"{target} was not written"
        raise CheckpointError(
            f"Could not update {target} from {source}: {error}. {kept}; {source} itself is complete."
        ) from None
