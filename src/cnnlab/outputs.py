"""Output paths checked before any work starts: a command that will fail to write its result fails at once.

Each check creates missing parent folders (as the writers do) and writes and removes an empty probe file, so a
read-only file system, a missing permission or a path through a file is found before training or attacking.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable
from pathlib import Path

from cnnlab.errors import OutputError


def output_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create the folder ``path`` (and its parents) and check that files can be written in it.

    Raises:
        OutputError: ``path`` is a file, or the folder cannot be created or written.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {str(path)!r} is a file, but a folder is needed here; give a folder path.")
    _writable(path, flag)
    return path


def output_file(
    path: str | Path, flag: str = "--out", suffixes: Iterable[str] | None = None, what: str = "file"
) -> Path:
    """Check that the file ``path`` can be written: its suffix is one of ``suffixes`` (lower case, with the dot),
    it is not a folder, and its folder exists (created if missing) and is writable.

    Raises:
        OutputError: a folder, a wrong suffix, or a folder that cannot be created or written.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"{flag} {str(path)!r} is a folder; give the path of the {what} to write.")
    if suffixes is not None:
        suffixes = sorted(suffixes)
        if path.suffix.lower() not in suffixes:
            raise OutputError(
                f"{flag} {str(path)!r} must end in {' or '.join(suffixes)}: it names the {what} to write."
            )
    _writable(path.parent, flag, path)
    return path


def image_suffixes() -> set[str]:
    """File suffixes Pillow can write (.png, .jpg, ...)."""
    from PIL import Image

    Image.init()
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}


def _writable(folder: Path, flag: str, target: Path | None = None) -> None:
    named = target if target is not None else folder
    try:
        for attempt in range(5):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                probe = folder / f".cnnlab-write-test.{os.getpid()}.tmp"
                probe.write_bytes(b"")
                probe.unlink()
                break
            except FileNotFoundError:
                # Another process (rank 0 of a torchrun job) may be creating or replacing this very folder at the
                # same moment (a CI failure: rank 1's probe vanished with it); a missing path that stays missing
                # is reported below.
                if attempt == 4:
                    raise
                time.sleep(0.1 * (attempt + 1))
    except OSError as error:
        reason = {
            errno.EROFS: "the file system is read-only",
            errno.EACCES: "permission denied",
            errno.EPERM: "permission denied",
            errno.ENOENT: "a folder on the way cannot be created there",
            errno.ENOTDIR: "a part of the path is a file, not a folder",
            errno.ENOSPC: "the disk is full",
        }.get(error.errno or 0, error.strerror or str(error))
        raise OutputError(f"{flag} {str(named)!r} cannot be written: {reason}. Choose a writable path.") from None


def write_picture(picture, path: str | Path) -> Path:
    """Write a matplotlib ``Figure`` (or a Pillow image) to ``path`` in the format its suffix names (any format
    Pillow writes: .png, .jpg, .webp...), atomically (a temporary file, then a rename); returns the path."""
    import io

    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(picture, "savefig"):
        buffer = io.BytesIO()
        picture.savefig(buffer, format="png")
        buffer.seek(0)
        picture = Image.open(buffer)
        picture.load()
    Image.init()
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    if fmt not in ("PNG", "WEBP", "TIFF") and picture.mode not in ("RGB", "L"):
        picture = picture.convert("RGB")  # JPEG, BMP...: no alpha channel
    tmp = path.with_name(f".{path.name}.tmp")
    picture.save(tmp, format=fmt)
    os.replace(tmp, path)
    return path
