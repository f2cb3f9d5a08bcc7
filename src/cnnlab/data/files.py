"""Finding, checking and reading dataset files; errors that say which files to place where."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable
from pathlib import Path

from cnnlab.errors import DataError


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def locate(folder: Path, name: str) -> Path | None:
    """``folder/name`` as given, or its .gz / uncompressed twin, whichever exists."""
    candidates = [folder / name]
    candidates.append(folder / name[:-3] if name.endswith(".gz") else folder / f"{name}.gz")
    return next((c for c in candidates if c.is_file()), None)


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed on the fly if it is gzip (reads from read-only folders, writes nothing)."""
    opener: Callable = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError) as error:
        raise DataError(
            f"{path} cannot be read ({error}); the file is damaged: delete it and fetch it again."
        ) from None


def missing_files(dataset: str, folder: Path, files: list[str], urls: list[str], note: str = "") -> DataError:
    """The error for absent files: which, where, and how to get them."""
    listing = "\n".join(f"  {folder / f}" for f in files)
    sources = ", ".join(urls)
    return DataError(
        f"Dataset {dataset!r} is not in {folder}. Expected these files (a .gz or an uncompressed copy of each):\n"
        f"{listing}\nRun `cnnlab data get {dataset}` where the network allows, or download them from {sources} and "
        f"place them there. Point --data-root (or $CNNLAB_DATA) at another folder that has them.{note}"
    )


def download(fetch: Callable[[], object], dataset: str, manual: str) -> None:
    """Run a torchvision download call, turning network failures into a clear error."""
    try:
        fetch()
    except (OSError, RuntimeError, ValueError) as error:
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise DataError(
            f"Downloading {dataset!r} failed ({type(error).__name__}: {first_line}). "
            f"The network may be unreachable. {manual}"
        ) from None
