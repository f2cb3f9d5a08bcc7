"""Checkpoints: written atomically, read with ``weights_only=True``, checked before use.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so loading it can never run code.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch

from cnnlab.errors import CheckpointError

FORMAT = "cnnlab-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(payload: dict, path: str | Path) -> Path:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, fsync, then rename.

    A crash or a full disk leaves the previous file at ``path`` intact.

    Raises:
        CheckpointError: if the file cannot be written (the message says the previous one is intact).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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
    except OSError as error:
        Path(tmp_name).unlink(missing_ok=True)
        previous = f"The previous checkpoint at {path} is intact." if path.exists() else "No earlier checkpoint exists."
        raise CheckpointError(
            f"Could not write checkpoint {path}: {error}. {previous} Free disk space and retry."
        ) from None
    return path


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
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} is not a cnnlab checkpoint: it holds Python objects that safe loading (weights_only=True) "
            f"refuses ({str(error).splitlines()[0]}). Use a checkpoint written by `cnnlab train`."
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
    for key in ("model", "model_state", "preprocessing", "classes"):
        if key not in payload:
            raise CheckpointError(f"{path} is a damaged cnnlab checkpoint: its {key!r} record is missing.")
    return payload
