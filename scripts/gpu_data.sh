#!/usr/bin/env bash
# Fill the git-ignored folders that scripts/gpu_check.sh needs on the GPU machine, which reaches no network:
#   .gpu-data/MNIST/raw/*.gz   copied from ../shared/datasets (read-only there: copied, never written)
#   .whl/captum-*.whl          the one cnnlab dependency the GPU image lacks (pip download; KINDS.md's package list)
# Then the device call names both in `carry` (see scripts/gpu_check.sh's header). ~13 MB in all.
#
#   scripts/gpu_data.sh [--cifar10-jpeg]
# --cifar10-jpeg also copies CIFAR10-JPEG (236 MB: over the 64 MiB the device tool carries, so only for a
# machine that gets the data another way; no step of gpu_check.sh uses it yet).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED_DATASETS:-../shared/datasets}
DATA=${GPU_CHECK_DATA:-.gpu-data}
PYTHON=${PYTHON:-python3}
CAPTUM=${CAPTUM_VERSION:-0.9.0}

git check-ignore -q "$DATA/" || { echo "$DATA is not git-ignored; add it to .gitignore first" >&2; exit 1; }
git check-ignore -q .whl/ || { echo ".whl is not git-ignored; add /.whl/ to .gitignore first" >&2; exit 1; }
mkdir -p "$DATA/MNIST/raw"
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  cp -p "$SHARED/MNIST/raw/$f" "$DATA/MNIST/raw/$f"
done
(cd "$SHARED" && grep 'MNIST/raw' MD5SUMS | grep -v Fashion) | (cd "$DATA" && md5sum -c --quiet -) \
  && echo "MNIST copied and checked: $DATA/MNIST/raw"
if [[ "${1:-}" == "--cifar10-jpeg" ]]; then
  mkdir -p "$DATA/CIFAR10-JPEG" && cp -rp "$SHARED/CIFAR10-JPEG/." "$DATA/CIFAR10-JPEG/"
  echo "CIFAR10-JPEG copied (236 MB: too large to carry to the device machine)"
fi

# The GPU image runs Python 3.12 (KINDS.md); captum is pure Python, its needs (numpy, torch, matplotlib,
# packaging, tqdm) are all on the image.
if ! ls .whl/captum-*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "captum==$CAPTUM"
fi
echo "wheels: $(ls .whl)"
du -sh "$DATA" .whl
