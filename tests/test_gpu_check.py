"""scripts/gpu_check.sh's plumbing on the CPU (issue 22): the step list, one step's JSON, the merged summary with
pytest's counts, and the shell script's syntax. The whole dry run (`scripts/gpu_check.sh --cpu-dry-run OUT`, ~2.5
minutes on 2 cores) is run by hand; see docs/benchmarks.md."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env)


def test_the_shell_script_parses_and_names_every_step():
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "gpu_check.sh")], check=True)
    steps = _run("steps").stdout.split()
    assert steps[:2] == ["env", "train-lenet5"] and "stn" in steps
    shell = (ROOT / "scripts" / "gpu_check.sh").read_text()
    for step in steps:
        assert f"[{step}]=" in shell, step  # every step has its time limit
    assert 'carry=[".gpu-data", ".whl"]' in shell  # the device call is documented


def test_a_dry_step_and_the_summary_write_json(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    assert _run("env", "--work", str(work), "--dry-run").returncode == 0
    env = json.loads((work / "env.json").read_text())
    assert env["status"] == "ok" and env["environment"]["cuda_available"] is False
    (work / "pytest.xml").write_text(
        '<testsuites><testsuite><testcase name="test_a" time="1.5"/><testcase name="test_b" time="0.1">'
        '<failure message="boom"/></testcase><testcase name="test_c"><skipped message="needs a GPU"/></testcase>'
        "</testsuite></testsuites>"
    )
    (work / "steps.tsv").write_text("env\tok\t0\t6\t30\npytest\tfailed\t1\t9\t170\ntta\ttimeout\t124\t50\t50\n")
    result = _run("summary", "--work", str(work), "--out", str(out))
    assert result.returncode == 0, result.stderr
    merged = json.loads((out / "gpu_check.json").read_text())
    assert [s["step"] for s in merged["steps"]] == ["env", "pytest", "tta"] and merged["dry_run"] is True
    counts = merged["steps"][1]["pytest"]["counts"]
    assert counts == {"passed": 1, "failed": 1, "error": 0, "skipped": 1}
    assert merged["steps"][2]["status"] == "timeout"
    table = (out / "gpu_check.txt").read_text()
    assert "1 passed, 1 failed" in table and "test_b: failed" in table and "DRY RUN" in table
