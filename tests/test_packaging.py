"""A new user's first minute: install without warnings, `--version` at once, logs that survive a pipe."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_string_with_its_file_shipped():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT" and project["project"]["license-files"] == ["LICENSE"]
    assert any(r.startswith("setuptools>=77") for r in project["build-system"]["requires"])  # PEP 639 support
    assert "Copyright (c) 2026 the cnnlab authors" in (ROOT / "LICENSE").read_text()


def test_version_answers_without_importing_torch():
    code = "import sys; from cnnlab.cli import main; main(['--version']); print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src")}
    )
    assert result.stdout.split() == ["cnnlab", "0.1.0", "False"], result.stderr


def test_piped_training_logs_are_not_wrapped_at_80_columns(monkeypatch):
    from cnnlab.train.progress import log_console

    monkeypatch.delenv("COLUMNS", raising=False)
    console = log_console()  # pytest captures stderr: not a terminal, as in `cnnlab train 2>&1 | tee log`
    assert not console.is_terminal and console.width >= 200
