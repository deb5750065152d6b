#!/usr/bin/env bash
# Idempotent: make sure .venv-bench holds full PyTorch (with its dependencies), onnxruntime, onnx
# and numpy, the reference runtimes `maskgate-bench` measures maskgate against. Only `make bench`
# needs it (about 5 GB), so neither scripts/setup.sh nor CI create it.
set -euo pipefail
cd "$(dirname "$0")/../.."

TORCH_VERSION=2.11.0
VENV=.venv-bench
say() { printf '[bench-venv] %s\n' "$*"; }

if "$VENV/bin/python" -c "import torch, onnxruntime, onnx, numpy, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  say "ready ($VENV: torch $TORCH_VERSION, onnxruntime, onnx, numpy)"
  exit 0
fi
say "creating or completing $VENV: torch==$TORCH_VERSION, onnxruntime, onnx, numpy (about 5 GB)"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "torch==$TORCH_VERSION" onnxruntime onnx numpy
"$VENV/bin/python" -c "import torch, onnxruntime, onnx, numpy" \
  || { echo "[bench-venv] $VENV was created but cannot import torch/onnxruntime/onnx/numpy" >&2; exit 1; }
say "ready"
