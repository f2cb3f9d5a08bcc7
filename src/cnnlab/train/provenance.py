"""Versions and git revision, recorded in every run directory and checkpoint."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path


def versions() -> dict[str, str]:
    import numpy
    import torch
    import torchvision

    import cnnlab

    return {
        "cnnlab": cnnlab.__version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "numpy": str(numpy.__version__),
        "python": platform.python_version(),
        "cuda": str(torch.version.cuda),
    }


def git_revision() -> dict[str, object] | None:
    """The commit of the cnnlab source tree (not of the working directory), and whether it had local changes."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}
