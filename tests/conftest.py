import os
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

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
