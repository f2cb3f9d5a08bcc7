"""The README's commands run as written, in order, after `make run` (issue 15): every `$ ` line of its shell blocks,
in a scratch folder, with the data root a user would set ($CNNLAB_DATA) pointing at the local datasets. A command
whose shown output is an error must fail with that error; every other must succeed."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED_DATASETS

README = Path(__file__).parents[1] / "README.md"


def tour() -> list[tuple[str, str]]:
    """(command line, the output shown under it) for every `$ ` line of the README's plain ``` blocks."""
    steps = []
    for fenced in README.read_text().split("```")[1::2]:
        language, _, body = fenced.partition("\n")
        if language.strip() not in ("", "sh", "console"):
            continue
        lines = body.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("$ "):
                shown = []
                for after in lines[i + 1 :]:
                    if after.startswith("$ "):
                        break
                    shown.append(after)
                steps.append((line[2:].split("  #")[0].strip(), "\n".join(shown)))
    return steps


def test_the_tour_is_found():
    commands = [c for c, _ in tour()]
    assert commands[0] == "cnnlab train" and any(c.startswith("cnnlab predict runs/latest") for c in commands)
    assert all(c.startswith(("cnnlab ", "make ")) for c in commands), commands


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path):
    if not (SHARED_DATASETS / "MNIST").is_dir() or not (SHARED_DATASETS / "FashionMNIST").is_dir():
        pytest.skip(f"the README's MNIST commands need {SHARED_DATASETS}/MNIST and FashionMNIST")
    cnnlab = shutil.which("cnnlab", path=str(Path(sys.executable).parent)) or shutil.which("cnnlab")
    env = {**os.environ, "CNNLAB_DATA": str(SHARED_DATASETS), "PYTHONUNBUFFERED": "1"}
    for command, shown in tour():
        words = shlex.split(command)
        if words[0] == "make":
            continue  # the set-up itself: this test runs after it
        result = subprocess.run(
            [cnnlab, *words[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
        )
        said = result.stdout + result.stderr
        assert "Traceback" not in said, (command, said[-3000:])
        if shown.startswith("error ("):
            assert result.returncode != 0 and shown.split(":")[0] in said, (command, said[-2000:])
        else:
            assert result.returncode == 0, (command, said[-3000:])
