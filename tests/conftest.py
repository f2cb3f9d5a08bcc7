import os
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
needs_mnist = pytest.mark.skipif(
    not (SHARED_DATASETS / "MNIST" / "raw").is_dir(), reason="real MNIST not in ../shared/datasets"
)


def idx_bytes(array) -> bytes:
    """A numpy uint8/int32 array in MNIST's idx format (big-endian header and values)."""
    import struct

    import numpy as np

    code = {np.uint8: 0x08, np.int32: 0x0C}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_jpeg(path: Path, value: int, corner: int = 0) -> None:
    """A flat 32×32 RGB JPEG of grey level ``value`` (JPEG keeps it within a few levels), its top-left 4×4 corner
    at ``corner`` so that every file's bytes differ."""
    import numpy as np
    from PIL import Image

    image = np.full((32, 32, 3), value, dtype=np.uint8)
    image[:4, :4] = corner
    Image.fromarray(image).save(path, quality=90)


def write_jpeg_tree(root: Path, per_class: tuple[int, int] = (3, 2), classes=None) -> None:
    """A CIFAR10-JPEG-shaped tree: root/{train,test}/<class>/NNNN.jpg, class k at grey level 20·k."""
    from cnnlab.data.jpeg_tree import CIFAR10_CLASSES

    for split, count in zip(("train", "test"), per_class, strict=True):
        for label, name in enumerate(classes or CIFAR10_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                write_jpeg(folder / f"{i:04d}.jpg", label * 20, corner=i * 50)


# Runs CLI commands (JSON list of argv lists in argv[1]) in a child process, e.g. inside a private read-only mount,
# and prints [[exit code, stderr], ...] as JSON.
READ_ONLY_DRIVER = """
import contextlib, io, json, sys
from cnnlab.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A real (short) LeNet-5 run on the bundled digits: 3 epochs, shared by eval/predict/summary tests."""
    out = tmp_path_factory.mktemp("run") / "lenet5"
    assert main(["train", "--epochs", "3", "--out", str(out)]) == 0
    return out
