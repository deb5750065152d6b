#!/usr/bin/env bash
# Idempotent machine setup for maskgate: system packages, Rust targets and the libtorch venv.
# Safe to run again: each step checks before it acts. Needs root (or sudo) only for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
APT_PACKAGES=(libclang-dev gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross
              libc6-dev-armhf-cross qemu-user curl openssl)
RUST_TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

say() { printf '[setup] %s\n' "$*"; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

installed_targets=$(rustup target list --installed)
for t in "${RUST_TARGETS[@]}"; do
  grep -qx "$t" <<<"$installed_targets" || { say "adding rust target $t"; rustup target add "$t"; }
done

# libtorch: the light CPU install of the PyTorch wheel (tch 0.24 needs exactly 2.11.0). CUDA
# libraries are loaded at run time only when a GPU is asked for (see trainer/src/device.rs).
# (Checked through package metadata: `import torch` needs CUDA libraries this light install lacks.)
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('torch').split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  say "creating .venv with torch==$TORCH_VERSION"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check --no-deps "torch==$TORCH_VERSION" \
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
fi
torch_dir=$(.venv/bin/python - <<'PY'
import importlib.util, os
print(os.path.dirname(importlib.util.find_spec("torch").origin))
PY
)
# .cargo/config.toml points LIBTORCH at this link, so no absolute path is committed.
ln -sfn "$torch_dir" .libtorch

# Python helpers that tests use to cross-check our files with independent implementations.
if ! .venv/bin/python -c "import onnx, onnxruntime, numpy" 2>/dev/null; then
  say "installing onnx, onnxruntime and numpy into .venv (test helpers)"
  # torch was installed without its (CUDA) dependencies on purpose; pip's resolver complains
  # about that on every later install, which is noise here.
  .venv/bin/pip install -q --disable-pip-version-check onnx onnxruntime numpy 2>&1 \
    | grep -v -E "^(ERROR: pip's dependency resolver|torch [0-9.]+ requires )" || true
  .venv/bin/python -c "import onnx, onnxruntime, numpy" \
    || { echo "[setup] installing onnx, onnxruntime, numpy into .venv failed" >&2; exit 1; }
fi
say "ready (libtorch at $torch_dir)"
