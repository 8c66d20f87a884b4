#!/usr/bin/env bash
# Create .venv with the CPU build of PyTorch and install aswl (editable) with its test tools
# and Torch-Pruning (small, pure Python: channel mode and its tests).
#   bash scripts/setup.sh          the default: what `pytest -q` needs
#   bash scripts/setup.sh --all    also every optional extra the full test run uses (onnx,
#                                  lightning, hf, tensorboard); CI and the README's full
#                                  test command call this
set -euo pipefail
cd "$(dirname "$0")/.."
ALL=0
for arg in "$@"; do
  case "$arg" in
    --all) ALL=1 ;;
    *) echo "scripts/setup.sh: unknown option $arg (use --all for every optional extra)" >&2
       exit 2 ;;
  esac
done
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
# Pin the CPU wheel first: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[test,structured]"
if [ "$ALL" = 1 ]; then
  # each extra on its own, so that one that cannot install says so and the others still do
  .venv/bin/pip install -q -e ".[onnx]" \
    || echo "note: onnx/onnxruntime not installed; the ONNX export tests will skip"
  .venv/bin/pip install -q -e ".[lightning,hf,tensorboard]" \
    || echo "note: lightning/transformers/tensorboard not installed; their tests will skip"
fi
