"""The measuring steps of scripts/gpu_check.sh (issue 22), one per call, each writing one JSON file.

    python scripts/gpu_check.py STEP --work DIR [--dry-run] [--data-root DIR]   # writes DIR/STEP.json
    python scripts/gpu_check.py summary --work DIR --out OUTDIR                   # merges, prints the table
    python scripts/gpu_check.py steps                                             # the step names, in order

Every benchmark is a library function that `cnnlab bench ...` also runs (cnnlab.bench.*), called with the issue's
sizes so the figures come back as numbers, not text. ``--dry-run``: the same calls at tiny sizes on the CPU, to test
the plumbing on a machine without a GPU (the figures mean nothing then).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import traceback
from dataclasses import asdict, is_dataclass
from pathlib import Path

# The targets on an H100/H200, for the summary's last column (None: no target, a figure to record).
TARGETS = {
    "lenet5_images_per_s": 1_500_000,  # LeNet-5 training images/s at batch 512
    "resnet50_bf16_images_per_s": 6_000,  # ResNet-50, 224 px, bf16, batch 256
    "occlusion_resnet50_224_s": 1.0,  # one 224×224 image, 32×32 square, stride 8
    "mnist_99_train_s": 0.25,  # time to 99.0% mean test accuracy over 5 seeds (median training time)
}
# Steps in the order the shell script runs them (most important first: later ones are cut when time runs out).
STEPS = ["env", "train-lenet5", "train-resnet50", "data", "viz", "tta", "train-resnet50-compiled", "stn"]


def _plain(value):
    """JSON-able copy of dataclasses, tuples, tensors and non-finite floats."""
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def write_json(path: Path, payload: dict) -> None:
    """Atomic write (a killed step never leaves half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_plain(payload), indent=1, sort_keys=False))
    tmp.replace(path)


def _device(dry: bool) -> str:
    return "cpu" if dry else "cuda"


# ---- steps ---------------------------------------------------------------------------------------------------
def step_env(args) -> dict:
    import torch

    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
    }
    for name in ("torchvision", "captum", "numpy", "triton"):
        try:
            info[name] = __import__(name).__version__
        except Exception as error:  # reported, not fatal: the step that needs it fails on its own
            info[name] = f"missing ({type(error).__name__})"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "gpus": torch.cuda.device_count(),
            "gpu": props.name,
            "capability": f"{props.major}.{props.minor}",
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
    headline = [["device", info.get("gpu", "CPU (no CUDA)"), None], ["torch", info["torch"], None]]
    return {"environment": info, "headline": headline}


def _train_rows(cases: list[dict], dry: bool) -> list:
    from cnnlab.bench.train import bench_train

    rows = []
    for case in cases:
        started = time.perf_counter()
        row = bench_train(device=_device(dry), **case)
        entry = _plain(row) | {"ratio": row.ratio, "options": case, "wall_s": time.perf_counter() - started}
        entry["fraction_of_peak"] = row.fraction_of_peak(row.cnnlab_images_per_s)
        entry["usual_fraction_of_peak"] = row.fraction_of_peak(row.usual_images_per_s)
        rows.append(entry)
        print(
            f"{case['model_name']} {case}: cnnlab {row.cnnlab_images_per_s:,.0f} img/s, plain eager "
            f"{row.usual_images_per_s:,.0f} img/s ({row.ratio:.2f}×), warm-up {row.cnnlab_warmup_s:.1f} s, "
            f"{row.fast_path}",
            flush=True,
        )
    return rows


def _train_headline(rows: list, target_key: str) -> list:
    target = TARGETS[target_key]
    out = []
    for r in rows:
        label = f"{r['model']} b{r['batch_size']} {r['fast_path']}"
        peak = f", {r['fraction_of_peak']:.1%} of peak" if r.get("fraction_of_peak") is not None else ""
        value = f"{r['cnnlab_images_per_s']:,.0f} img/s ({r['ratio']:.2f}× eager {r['usual_images_per_s']:,.0f}{peak})"
        out.append([label, value, f"≥ {target:,} img/s: {'met' if r['cnnlab_images_per_s'] >= target else 'not met'}"])
    return out


def step_train_lenet5(args) -> dict:
    """LeNet-5 at 32 px, batch 512: the engine's default CUDA path (bf16, channels-last), CUDA graphs, compiled;
    each beside the plain eager loop (bench_train runs both in one call)."""
    size = {"batch_size": 8, "steps": 3} if args.dry_run else {"batch_size": 512, "steps": 200}
    cases = []
    for model in ("lenet5", "lenet5-modern"):
        cases.append({"model_name": model, "input_size": (1, 32, 32), **size})
        cases.append({"model_name": model, "input_size": (1, 32, 32), "cuda_graphs": True, **size})
    cases.append({"model_name": "lenet5-modern", "input_size": (1, 32, 32), "compile": True, **size})
    if args.dry_run:  # CUDA graphs need CUDA
        cases = [c for c in cases if not c.get("cuda_graphs")]
    rows = _train_rows(cases, args.dry_run)
    return {"rows": rows, "headline": _train_headline(rows, "lenet5_images_per_s")}


def _resnet50_cases(dry: bool, compile: bool) -> list[dict]:
    size = {"batch_size": 4, "steps": 3, "input_size": (3, 32, 32)} if dry else {"batch_size": 256, "steps": 30}
    size.setdefault("input_size", (3, 224, 224))
    classes = 10 if dry else 1000  # bench_train wants every class among its steps × batch images
    return [{"model_name": "resnet50", "amp": "bf16", "num_classes": classes, "compile": compile, **size}]


def step_train_resnet50(args) -> dict:
    rows = _train_rows(_resnet50_cases(args.dry_run, compile=False), args.dry_run)
    return {"rows": rows, "headline": _train_headline(rows, "resnet50_bf16_images_per_s")}


def step_train_resnet50_compiled(args) -> dict:
    rows = _train_rows(_resnet50_cases(args.dry_run, compile=True), args.dry_run)
    return {"rows": rows, "headline": _train_headline(rows, "resnet50_bf16_images_per_s")}


def step_data(args) -> dict:
    from cnnlab.bench.data import run

    rows = [_plain(r) | {"ratio": r.ratio} for r in run(quick=args.dry_run, device=_device(args.dry_run))]
    headline = [
        [f"input pipeline {r['shape']}", f"{r['cnnlab_images_per_s']:,.0f} img/s ({r['ratio']:.1f}× usual)", None]
        for r in rows
    ]
    return {"rows": rows, "headline": headline}


def step_viz(args) -> dict:
    from cnnlab.bench.viz import run

    rows = run(quick=args.dry_run, device=_device(args.dry_run), data_root=args.data_root)
    plain = [_plain(r) | {"speedup": r.speedup} for r in rows]
    headline = []
    for r in rows:
        if r.view == "occlusion" and "resnet" in r.model:
            plain_s = f", plain Captum {r.plain_seconds:.2f} s" if r.plain_seconds else ""
            met = ""
            if not args.dry_run and r.workload.startswith("224×224"):
                met = f"< {TARGETS['occlusion_resnet50_224_s']} s: {'met' if r.seconds < 1.0 else 'not met'}"
            headline.append([f"occlusion {r.model} {r.workload}", f"{r.seconds:.2f} s{plain_s}", met or None])
    return {"rows": plain, "headline": headline}


def step_tta(args) -> dict:
    from cnnlab.bench.train import bench_tta, format_tta

    result = bench_tta(args.data_root, device=_device(args.dry_run), quick=args.dry_run)
    print(format_tta(result), flush=True)
    payload = _plain(result) | {
        "mean_accuracy": result.mean_accuracy,
        "reached": result.reached,
        "median_train_seconds": result.median_train_seconds,
    }
    if result.skipped:
        return payload | {"skipped": result.skipped, "headline": [["time to 99% on MNIST", "skipped", None]]}
    target = TARGETS["mnist_99_train_s"]
    value = f"{result.median_train_seconds:.2f} s, mean {result.mean_accuracy:.2%} over {len(result.seeds)} seeds"
    met = result.reached and result.median_train_seconds <= target
    return payload | {"headline": [["time to 99% on MNIST", value, f"≤ {target} s: {'met' if met else 'not met'}"]]}


def step_stn(args) -> dict:
    """OPTIONAL (GPU_CHECK_STN=1): docs/stn.md's table on the GPU, one seed, through scripts/stn_study.py with its
    recipe's device switched to CUDA (the script itself trains on the CPU)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import stn_study

    stn_study.RECIPE["device"] = _device(args.dry_run)
    out = Path(args.work) / "stn-study"
    argv = ["stn_study.py", "--seeds", "0", "--out", str(out), "--data-root", str(args.data_root)]
    if args.dry_run:
        argv += ["--epochs", "1", "--data", "mnist-rts", "--models", "dmnist-cnn"]
    saved, sys.argv = sys.argv, argv
    try:
        stn_study.main()
    finally:
        sys.argv = saved
    results = json.loads((out / "results.json").read_text())
    headline = [[f"STN {r['data']} {r['model']}", f"test error {r['test_error']:.2%} in {r['seconds']:.0f} s", None]
                for r in results]  # fmt: skip
    return {"rows": results, "headline": headline}


STEP_FUNCTIONS = {
    "env": step_env,
    "train-lenet5": step_train_lenet5,
    "train-resnet50": step_train_resnet50,
    "train-resnet50-compiled": step_train_resnet50_compiled,
    "data": step_data,
    "viz": step_viz,
    "tta": step_tta,
    "stn": step_stn,
}
assert set(STEP_FUNCTIONS) == set(STEPS)


def run_step(name: str, args) -> int:
    """Run one step; its JSON (result or error) lands in <work>/<name>.json. Exit status 0 / 1."""
    started = time.perf_counter()
    payload: dict = {"step": name, "dry_run": args.dry_run}
    try:
        payload |= STEP_FUNCTIONS[name](args)
        payload["status"] = "ok"
    except BaseException as error:  # recorded, so the summary shows it; the shell goes on to the next step
        payload |= {"status": "failed", "error": f"{type(error).__name__}: {error}"[:2000]}
        payload["traceback"] = traceback.format_exc()[-6000:]
        traceback.print_exc()
    payload["seconds"] = time.perf_counter() - started
    write_json(Path(args.work) / f"{name}.json", payload)
    return 0 if payload["status"] == "ok" else 1


# ---- summary ---------------------------------------------------------------------------------------------------
def _pytest_counts(xml_path: Path) -> dict:
    """passed/failed/errors/skipped and each test's outcome from pytest's JUnit XML."""
    import xml.etree.ElementTree as ET

    if not xml_path.is_file():
        return {"status": "no report (pytest did not finish)"}
    root = ET.parse(xml_path).getroot()
    tests = []
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome, message = (
                    {"failure": "failed", "error": "error", "skipped": "skipped"}[kind],
                    found.get("message", ""),
                )
        tests.append({"test": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0)),
                      "message": message[:500]})  # fmt: skip
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    return {"counts": counts, "tests": tests}


def summarise(work: Path, out: Path) -> str:
    """Merge every step's JSON and the shell's step log into <out>/gpu_check.json; return the printed table."""
    steps = []
    log = work / "steps.tsv"  # written by the shell: name, status, exit code, seconds, timeout
    for line in log.read_text().splitlines() if log.is_file() else []:
        name, status, code, seconds, limit = line.split("\t")
        entry = {"step": name, "status": status, "exit_code": int(code), "seconds": float(seconds)}
        entry["timeout_s"] = int(limit)
        result = work / f"{name}.json"
        if result.is_file():
            detail = json.loads(result.read_text())
            entry |= {k: v for k, v in detail.items() if k not in ("step", "status", "seconds")}
            if detail.get("status") == "failed":
                entry["status"] = "failed"
        if name == "pytest":
            entry["pytest"] = _pytest_counts(work / "pytest.xml")
        steps.append(entry)
    dry = any(s.get("dry_run") for s in steps)
    merged = {"issue": 22, "dry_run": dry, "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "steps": steps}
    lines = ["", "GPU check (issue 22)" + (" — CPU DRY RUN: plumbing only, figures mean nothing" if dry else "")]
    lines.append(f"{'step':<24} {'status':<9} {'s':>6}  result")
    for s in steps:
        first = True
        rows = s.get("headline") or []
        if s["step"] == "pytest" and "counts" in s.get("pytest", {}):
            c = s["pytest"]["counts"]
            rows = [["tests -m cuda", ", ".join(f"{v} {k}" for k, v in c.items()), None]]
            rows += [[t["test"], t["outcome"], t["message"][:80] or None] for t in s["pytest"]["tests"]
                     if t["outcome"] in ("failed", "error")]  # fmt: skip
        if s.get("error"):
            rows = [*rows, ["error", s["error"][:150], None]]
        for what, value, target in rows or [["", "", None]]:
            head = f"{s['step']:<24} {s['status']:<9} {s['seconds']:>6.0f}" if first else " " * 41
            lines.append(f"{head}  {what}: {value}" + (f"  [{target}]" if target else "") if what else head)
            first = False
    table = "\n".join(lines)
    merged["table"] = table
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "gpu_check.json", merged)
    (out / "gpu_check.txt").write_text(table + "\n")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=[*STEPS, "summary", "steps"])
    parser.add_argument("--work", default=".", help="folder for the per-step JSON files")
    parser.add_argument("--out", default=None, help="summary: where gpu_check.json and gpu_check.txt go")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: tests the plumbing")
    parser.add_argument("--data-root", default=None, help="the folder holding MNIST/raw (default: $CNNLAB_DATA)")
    args = parser.parse_args(argv)
    if args.step == "steps":
        print(" ".join(STEPS))
        return 0
    if args.step == "summary":
        print(summarise(Path(args.work), Path(args.out or args.work)))
        return 0
    return run_step(args.step, args)


if __name__ == "__main__":
    sys.exit(main())
