"""Regenerate the pictures of docs/inspect.md from two trained runs.

cnnlab train --out /tmp/lenet5
cnnlab train --model lenet5-modern --out /tmp/lenet5-modern
python -m cnnlab.inspect._docs_images /tmp/lenet5 /tmp/lenet5-modern [docs/images]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import torch

from cnnlab.inspect.views import run_view

# (picture name, view, which run, layer, options)
PICTURES = (
    ("filters-c1", "filters", "faithful", None, {}),
    ("filters-c3", "filters", "faithful", "c3", {}),
    ("activations", "activations", "faithful", None, {}),
    ("deconv-lenet5", "deconv", "faithful", "c3", {}),
    ("deconv-modern", "deconv", "modern", "c3", {}),
    ("top-patches", "top-patches", "faithful", "c3", {"max_units": 8}),
    ("occlusion", "occlusion", "faithful", None, {"size": 8, "stride": 2}),
    ("saliency", "saliency", "modern", None, {}),
    ("guided-backprop", "guided-backprop", "modern", None, {}),
    ("confusion", "confusion", "faithful", None, {}),
    ("errors", "errors", "faithful", None, {"count": 8}),
    ("curves", "curves", "faithful", None, {}),
)


def make_pictures(faithful: str | Path, modern: str | Path, out_dir: str | Path = "docs/images") -> list[Path]:
    """Write docs/images/inspect-<name>.png for every picture of docs/inspect.md; returns the paths."""
    runs = {"faithful": faithful, "modern": modern}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, kind, run, layer, options in PICTURES:
            result = run_view(kind, runs[run], layer=layer, out_dir=Path(tmp) / name, device="cpu", **options)
            target = out_dir / f"inspect-{name}.png"
            shutil.copyfile(result.paths[0], target)
            written.append(target)
            print(f"{target} ({target.stat().st_size // 1024} KB)")
    return written


if __name__ == "__main__":
    torch.set_num_threads(1)  # the pictures do not depend on it; keeps a shared machine usable
    make_pictures(*sys.argv[1:4])
