#!/usr/bin/env bash
# GPU check (issue 22): verify and measure every CUDA path of cnnlab in one run, < 8 minutes on one H100/H200.
#
#   scripts/gpu_check.sh OUTDIR                 # on the GPU machine
#   scripts/gpu_check.sh --cpu-dry-run OUTDIR   # anywhere: every step at tiny sizes on the CPU (tests the plumbing)
#
# Steps, most important first, each under its own `timeout` and inside one overall budget (GPU_CHECK_BUDGET_S,
# default 450 s), so a failing or slow step never stops the rest and the whole run ends in time:
#   env                      nvidia-smi, torch/CUDA/cuDNN versions (and wheels from .whl/ installed first, if any)
#   pytest                   pytest -m cuda tests/test_cuda.py (AMP, channels-last, compile, CUDA graphs, no host
#                            sync per step, incremental occlusion, NCCL), pass/fail counts from its JUnit XML
#   train-lenet5             bench_train: LeNet-5 / lenet5-modern, 32 px, batch 512: default, CUDA graphs, compiled,
#                            each beside the plain eager loop, with % of the device's peak
#   train-resnet50           ResNet-50, 224 px, bf16, batch 256, beside the plain eager loop
#   data                     `cnnlab bench data` (cnnlab.bench.data.run)
#   viz                      `cnnlab bench viz`: occlusion on ResNet-50 224 px (fp32 and bf16, vs plain Captum)
#   tta                      time to 99% on real MNIST, 5 seeds (skipped without .gpu-data/MNIST)
#   train-resnet50-compiled  the same ResNet-50 row with torch.compile (compile time reported as warm-up)
#   stn                      OPTIONAL, off unless GPU_CHECK_STN=1: docs/stn.md's table, one seed, on the GPU
# Results: OUTDIR/gpu_check.json (every step's figures, merged after each step), OUTDIR/gpu_check.txt (the table,
# also printed at the end) and OUTDIR/gpu_check.log (everything printed). Three files: the device tool returns at
# most 8. Not prepared: CIFAR10-JPEG time to 94% beside airbench (236 MB of JPEGs exceed the 64 MiB the tool
# carries, and airbench's code is not in the tree).
#
# Before the device call, once, on the development machine (needs ../shared/datasets and pip's registry):
#   scripts/gpu_data.sh          # copies MNIST into .gpu-data/ and captum's wheel into .whl/ (both git-ignored)
# The device call (one run; 480 s of command, ~2 min of machine start on top, inside a session's 15 minutes):
#   run(command="bash scripts/gpu_check.sh $OUT", carry=[".gpu-data", ".whl"], timeout_s=540)
# What comes back lies under the reply's files_at: gpu_check.json, gpu_check.txt, gpu_check.log.
#
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET_S (default 450), GPU_CHECK_STEPS (space-separated subset,
# default all), GPU_CHECK_STN=1 (the optional STN step), GPU_CHECK_DATA (default .gpu-data).
set -uo pipefail  # not -e: a failing step is recorded and the next one runs

DRY=0
if [[ "${1:-}" == "--cpu-dry-run" ]]; then DRY=1; shift; fi
if [[ $# -ne 1 ]]; then
  echo "usage: scripts/gpu_check.sh [--cpu-dry-run] OUTDIR" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
OUTDIR=$(mkdir -p "$1" && cd "$1" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")  # per-step files stay out of OUTDIR (8 files come back)
PYTHON=${PYTHON:-python3}
DATA=${GPU_CHECK_DATA:-.gpu-data}
BUDGET=${GPU_CHECK_BUDGET_S:-$((DRY ? 300 : 450))}  # the dry run: 2 shared CPU cores, tiny sizes
START=$(date +%s)
LOG="$OUTDIR/gpu_check.log"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" CNNLAB_DATA="$PWD/$DATA"
export MPLBACKEND=Agg

# Per-step time limits (seconds; the GPU run). A step gets min(its limit, what is left of the budget − 15 s).
declare -A LIMIT=([env]=30 [pytest]=170 [train-lenet5]=75 [train-resnet50]=50 [data]=50 [viz]=50 [tta]=50
                  [train-resnet50-compiled]=120 [stn]=240)
STEPS="env pytest train-lenet5 train-resnet50 data viz tta train-resnet50-compiled"
if [[ "${GPU_CHECK_STN:-0}" == 1 ]]; then STEPS="$STEPS stn"; fi
STEPS=${GPU_CHECK_STEPS:-$STEPS}
FLAGS=(--work "$WORK" --data-root "$PWD/$DATA")
if [[ $DRY == 1 ]]; then
  FLAGS+=(--dry-run)
  export CUDA_VISIBLE_DEVICES=""  # the dry run is the CPU's, even on a GPU machine
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
fi

elapsed() { echo $(($(date +%s) - START)); }

summary() { "$PYTHON" scripts/gpu_check.py summary --work "$WORK" --out "$OUTDIR" >/dev/null 2>&1 || true; }

# run_step NAME COMMAND...: runs under its time limit, records "name status code seconds limit" in steps.tsv
run_step() {
  local name=$1; shift
  local left=$((BUDGET - $(elapsed) - 15))
  local limit=${LIMIT[$name]:-60}
  ((DRY && limit < 90)) && limit=90  # the dry run's CPU steps are slower than the GPU's
  ((limit > left)) && limit=$left
  if ((limit < 10)); then
    printf '%s\tskipped\t0\t0\t0\n' "$name" >>"$WORK/steps.tsv"
    echo "=== $name: skipped (the ${BUDGET} s budget is spent)"
    summary
    return
  fi
  echo "=== $name (limit ${limit} s, ${left} s of budget left) $(date -u +%H:%M:%S)"
  local t0=$SECONDS code status
  timeout --kill-after=10 "$limit" "$@"
  code=$?
  case $code in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$code" "$((SECONDS - t0))" "$limit" >>"$WORK/steps.tsv"
  echo "=== $name: $status (exit $code, $((SECONDS - t0)) s)"
  summary  # gpu_check.json is current after every step, even if the whole call is cut off later
}

echo "=== gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) dry_run=$DRY budget=${BUDGET}s git=$(git rev-parse --short HEAD 2>/dev/null || echo '?')"

# Wheels for what the machine lacks (captum), from .whl/ only: nothing is fetched from the internet.
if ls .whl/*.whl >/dev/null 2>&1 && [[ $DRY == 0 ]]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site" && echo "installed from .whl/: $(ls .whl)"
fi
nvidia-smi 2>/dev/null || echo "nvidia-smi: not available"
[[ -d "$DATA/MNIST/raw" ]] || echo "note: no $DATA/MNIST/raw (run scripts/gpu_data.sh first): tta will skip"

PYTEST=(-m pytest -m cuda -q -rA -p no:cacheprovider --junitxml="$WORK/pytest.xml" tests/test_cuda.py)
"$PYTHON" -c "import pytest_timeout" 2>/dev/null && PYTEST+=(--timeout=120)
for step in $STEPS; do
  if [[ $step == pytest ]]; then  # dry run: no CUDA, every test skips with its reason; the XML and counts still work
    run_step pytest "$PYTHON" "${PYTEST[@]}"
  else
    run_step "$step" "$PYTHON" scripts/gpu_check.py "$step" "${FLAGS[@]}"
  fi
done

"$PYTHON" scripts/gpu_check.py summary --work "$WORK" --out "$OUTDIR"
echo "=== done in $(elapsed) s; results in $OUTDIR (gpu_check.json, gpu_check.txt, gpu_check.log)"
rm -rf "$WORK"
