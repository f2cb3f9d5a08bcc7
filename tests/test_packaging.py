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


def test_the_sdist_ships_every_doc_the_readme_links_to(tmp_path):
    """pyproject.toml names no repository URL to make the README's `docs/...` links absolute, so the docs ship
    (MANIFEST.in) and the links resolve in an unpacked source distribution."""
    import re
    import shutil
    import tarfile

    tree = tmp_path / "tree"  # a copy: building writes an .egg-info next to the sources
    tree.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".*")
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy(ROOT / name, tree / name)
    for name in ("src", "docs"):
        shutil.copytree(ROOT / name, tree / name, ignore=ignore)
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(tmp_path / 'dist')!r}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    with tarfile.open(tmp_path / "dist" / result.stdout.split()[-1]) as sdist:
        shipped = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    linked = set(re.findall(r"\]\((docs/[^)#]+)", (ROOT / "README.md").read_text()))
    pictures = {
        f"docs/{p}"
        for page in (ROOT / "docs").glob("*.md")
        for p in re.findall(r"\]\((images/[^)]+)\)", page.read_text())
    }
    assert linked and pictures and linked | pictures <= shipped, sorted((linked | pictures) - shipped)
