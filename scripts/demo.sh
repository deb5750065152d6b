#!/usr/bin/env bash
# The main job on built-in defaults. Grows with the project; today it checks that both halves
# run: libtorch loads in the trainer, the edge binary starts, and the shared contracts hold.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/demo}
mkdir -p "$out"
target=${CARGO_TARGET_DIR:-target}
"$target/debug/trainer" --check
"$target/debug/edge" --check
echo "demo artefacts in $out"
