"""User-facing errors.

Every error a user can cause is a :class:`CnnlabError` whose message says what was wrong and how to fix it.
The CLI prints the message without a traceback (unless ``--debug``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CnnlabError(Exception):
    """Base class of every error cnnlab raises on bad input. ``exit_code`` is the CLI's exit status."""

    exit_code = 2


class UnknownNameError(CnnlabError, KeyError):
    """A model, dataset or other named thing that is not registered."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        valid = sorted(valid)
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        msg = f"Unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(valid)}."
        super().__init__(msg)
        self.kind, self.name, self.valid, self.suggestions = kind, name, valid, close

    def __reduce__(self):  # rebuilt from its arguments, so it crosses process boundaries (reproduce --jobs)
        return type(self), (self.kind, self.name, self.valid)

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class ConfigError(CnnlabError, ValueError):
    """A hyperparameter or option with a value that cannot work (non-positive learning rate, unknown keyword...)."""


class InputSizeError(CnnlabError, ValueError):
    """An input shape the model cannot take."""


class ImageDecodeError(CnnlabError):
    """An image file that cannot be read or decoded."""


class CheckpointError(CnnlabError):
    """A checkpoint that is missing, truncated, or not written by cnnlab."""


class OutputError(CnnlabError):
    """An output path that cannot be written: read-only, a missing parent, a file where a folder is expected (or
    the reverse), a full disk."""


class RunExistsError(OutputError):
    """Training into a run directory that already holds a run, without ``--resume`` or ``--overwrite``."""


class RunDirLockedError(CnnlabError):
    """A run directory another process is writing (each run directory has one writer at a time)."""


class DataError(CnnlabError):
    """A dataset that is missing, malformed, or does not fit the model."""


class DeviceError(CnnlabError):
    """A device that was asked for but is not available."""


class UnsupportedModelError(CnnlabError, ValueError):
    """A model a view cannot handle faithfully (e.g. in-place or functional ReLU for deconvnet/guided backprop)."""


class MissingDependencyError(CnnlabError, ImportError):
    """An optional package a feature needs is not installed."""


class NonFiniteLossError(CnnlabError):
    """Training stopped because the loss became NaN or infinite."""

    exit_code = 3


class TrainingInterrupted(CnnlabError):
    """Training stopped on Ctrl-C or SIGTERM after saving a resumable checkpoint."""

    exit_code = 130
