"""Checkpoints: written atomically, read with ``weights_only=True``, checked before use.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so loading it can never run code.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from cnnlab.errors import CheckpointError, ConfigError

FORMAT = "cnnlab-checkpoint"
FORMAT_VERSION = 2  # 2: tasks (a "task" name, per-optimiser "parts" in the training state); 1 is read too
CHECKPOINT_NAME = "checkpoint.pt"  # the latest state of a run
BEST_NAME = "best.pt"  # the end-of-epoch state with the lowest test error
CHECKPOINTS_DIR = "checkpoints"  # step<N>.pt: the last few states
STEP_FILE = re.compile(r"^step(\d+)\.pt$")


def save_checkpoint(payload: dict, path: str | Path, previous: str | Path | None = None) -> Path:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, fsync, then rename.

    A crash or a full disk leaves the previous file at ``path`` intact. ``previous`` names the file an error
    message should report as intact, when it is not ``path`` itself (a run's checkpoint.pt).

    Raises:
        CheckpointError: if the file cannot be written (the message says the previous one is intact).
    """
    path = Path(path)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except (OSError, RuntimeError) as error:
        # torch.save reports a failed write as RuntimeError (from its zip writer), the OSError as its context
        cause = _os_error(error)
        if cause is None:
            raise
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
        kept = Path(previous) if previous is not None else path
        intact = f"The previous checkpoint at {kept} is intact." if kept.exists() else "No earlier checkpoint exists."
        if cause.errno in (errno.ENOSPC, errno.EDQUOT):
            needed, free = _serialized_size(payload, kept), shutil.disk_usage(path.parent).free
            space = (
                f"The checkpoint needs {_megabytes(needed)} and {_megabytes(free)} are free there. "
                if needed is not None
                else ""
            )
            more = _megabytes(max(needed - free, 0) or needed) if needed is not None else "space"
            raise CheckpointError(
                f"The disk is full: could not write checkpoint {path} ({cause.strerror}); the partial file was "
                f"removed. {space}{intact} Free at least {more} and resume."
            ) from None
        raise CheckpointError(
            f"Could not write checkpoint {path}: {cause.strerror or cause}. {intact} "
            "Make the folder writable (or free disk space) and retry."
        ) from None
    return path


def _os_error(error: BaseException) -> OSError | None:
    """The OSError behind ``error`` (itself, or in its cause/context chain), if any."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class _CountingWriter(io.RawIOBase):
    """A file that keeps nothing and counts what is written to it."""

    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.size += len(data)
        return len(data)


def _serialized_size(payload: dict, previous: Path) -> int | None:
    """Bytes ``torch.save(payload)`` writes (serialised into nothing: no disk needed); else the size of the
    previous checkpoint; None if neither is known."""
    counter = _CountingWriter()
    try:
        torch.save(payload, counter)
        return counter.size
    except Exception:
        return previous.stat().st_size if previous.is_file() else None


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 100_000 else f"{size / 1e3:,.1f} kB"


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or a run directory holding one."""
    path = Path(path)
    if path.is_dir():
        inside = path / CHECKPOINT_NAME
        if not inside.is_file():
            raise CheckpointError(
                f"{path} is a directory without a {CHECKPOINT_NAME}; give a checkpoint file or run dir."
            )
        return inside
    if not path.exists():
        raise CheckpointError(
            f"Checkpoint {str(path)!r} does not exist. Give the path of a checkpoint.pt or a run dir."
        )
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Load and check a cnnlab checkpoint (on the CPU) with ``weights_only=True``.

    Raises:
        CheckpointError: missing, truncated or corrupt, or not written by cnnlab.
    """
    path = resolve_checkpoint_path(path)
    kind = _file_kind(path)
    if kind is not None:
        raise CheckpointError(
            f"{path} is not a cnnlab checkpoint: it is {kind}, not a file written by torch.save. Give a checkpoint.pt "
            "or a run directory written by `cnnlab train`."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        what = f" (such as {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path} is not a cnnlab checkpoint: it holds Python objects{what} beyond the tensors, numbers and "
            "strings cnnlab writes, and loading such objects can run code, so the file may be unsafe; cnnlab "
            "never loads it. Use a checkpoint written by `cnnlab train`."
        ) from None
    except Exception as error:  # torch.load raises many types on corrupt bytes (RuntimeError, EOFError, KeyError...)
        size = path.stat().st_size
        raise CheckpointError(
            f"{path} ({size} bytes) is truncated or corrupt and cannot be read "
            f"({type(error).__name__}: {(str(error).splitlines() or [''])[0]}). "
            "Use an earlier checkpoint, or train again."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        what = "a plain state_dict" if isinstance(payload, dict) else f"a {type(payload).__name__}"
        raise CheckpointError(
            f"{path} is not a cnnlab checkpoint (it holds {what}, without cnnlab's model and preprocessing "
            "records). Use a checkpoint written by `cnnlab train`."
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer cnnlab (format {payload['format_version']}); upgrade cnnlab to read it."
        )
    # A classifier's checkpoint (format 1 had no other) rebuilds its model from the registry; other tasks own
    # their models, so their records only promise weights.
    classifier = payload.get("task", "classification") == "classification"
    for key in ("model", "model_state", "preprocessing", "classes") if classifier else ("model_state",):
        if key not in payload:
            raise CheckpointError(f"{path} is a damaged cnnlab checkpoint: its {key!r} record is missing.")
    return payload


_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x93NUMPY", "a NumPy array file"),
    (b"%PDF", "a PDF document"),
)


def _file_kind(path: Path) -> str | None:
    """What ``path`` is when it is plainly not a torch.save file (None for a zip archive, a pickle, or unknown)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return None  # torch.load reports it
    if not head:
        return "empty (0 bytes)"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head.lstrip()[:1] in (b"{", b"["):
        return "JSON text"
    if head.startswith((b"PK\x03\x04", b"\x80")):
        return None
    try:
        head.decode("ascii")
    except UnicodeDecodeError:
        return None
    return "a text file"


def step_number(path: str | Path) -> int:
    """N of a checkpoints/step<N>.pt file."""
    match = STEP_FILE.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not a step checkpoint")
    return int(match.group(1))


def step_checkpoints(run_dir: str | Path) -> list[Path]:
    """The files ``<run_dir>/checkpoints/step<N>.pt``, oldest (smallest N) first."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_FILE.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def checkpoint_candidates(run_dir: str | Path) -> list[Path]:
    """Resumable files of a run, newest first: the step checkpoints, then checkpoint.pt when it is not one of
    them (a run directory written before step checkpoints existed)."""
    run_dir = Path(run_dir)
    candidates = step_checkpoints(run_dir)[::-1]
    latest = run_dir / CHECKPOINT_NAME
    if latest.is_file() and not any(os.path.samefile(latest, c) for c in candidates):
        candidates.append(latest)
    return candidates


def load_latest_checkpoint(run_dir: str | Path, warn: Callable[[str], None] | None = None) -> tuple[Path, dict] | None:
    """The newest readable, resumable checkpoint of a run directory, as (path, payload); None if it has none.

    A corrupt or truncated newest file is skipped for the previous one, with a warning through ``warn``.

    Raises:
        CheckpointError: checkpoints exist but none can be read (each failure is named).
    """
    failures: list[str] = []
    for path in checkpoint_candidates(run_dir):
        try:
            payload = load_checkpoint(path)
        except CheckpointError as error:
            failures.append(str(error))
            continue
        if "train_state" not in payload:
            failures.append(f"{path} holds weights only, no training state.")
            continue
        if failures and warn is not None:
            state = payload["train_state"]
            warn(
                f"warning: {' '.join(failures)} Falling back to the previous checkpoint {path} "
                f"(epoch {state['epoch'] + 1}, batch {state['batch']}, step {state['step']})."
            )
        return path, payload
    if failures:
        raise CheckpointError(
            f"No checkpoint in {run_dir} can be resumed: {' '.join(failures)} "
            "Train again without --resume, or restore the run directory from a backup."
        )
    return None


def find_resume_checkpoint(
    spec: str, out: str | Path | None = None, warn: Callable[[str], None] | None = None
) -> tuple[dict, Path] | None:
    """What ``cnnlab train --resume SPEC`` continues, as (payload, run directory).

    ``SPEC`` is a checkpoint file (exactly that one), a run directory (its newest readable checkpoint), or
    ``auto``: the newest readable checkpoint in ``out`` if there is one, else None (start a new run there), so
    the same command can be re-run after every preemption. Under torch.distributed, rank 0 chooses and every
    rank loads the file it chose (the run directory must be on a file system all processes see).

    Raises:
        ConfigError: ``auto`` without ``out``.
        CheckpointError: the file or directory holds nothing resumable.
    """
    import torch.distributed as dist

    if spec == "auto" and out is None:
        raise ConfigError(
            "--resume auto needs --out DIR: the run directory to continue if it holds a checkpoint, else to start."
        )
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    choice: list[object] = [None]
    if not distributed or dist.get_rank() == 0:
        choice[0] = _choose_resume_file(spec, out, warn)
    if distributed:
        dist.broadcast_object_list(choice, src=0)
    if choice[0] is None:
        return None
    path, run_dir = (Path(p) for p in choice[0])  # type: ignore[union-attr]
    payload = load_checkpoint(path)
    if "train_state" not in payload:
        raise CheckpointError(f"{path} holds weights only, no training state; it cannot be resumed.")
    return payload, run_dir


def _choose_resume_file(
    spec: str, out: str | Path | None, warn: Callable[[str], None] | None
) -> tuple[str, str] | None:
    if spec == "auto":
        run_dir = Path(out)  # type: ignore[arg-type]
        found = load_latest_checkpoint(run_dir, warn) if run_dir.is_dir() else None
        return None if found is None else (str(found[0]), str(run_dir))
    path = Path(spec)
    if path.is_dir():
        found = load_latest_checkpoint(path, warn)
        if found is None:
            raise CheckpointError(
                f"{path} is a directory without checkpoints ({CHECKPOINT_NAME} or {CHECKPOINTS_DIR}/step*.pt); "
                "give a checkpoint file or a run directory."
            )
        return str(found[0]), str(path)
    resolve_checkpoint_path(path)  # a clear error if it does not exist
    run_dir = path.parent.parent if path.parent.name == CHECKPOINTS_DIR else path.parent
    return str(path), str(run_dir)
