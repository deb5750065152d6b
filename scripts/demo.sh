#!/usr/bin/env bash
# The main job on built-in defaults: synthetic faces -> teacher -> MaskInv student -> evaluation
# -> calibration -> export + quantization -> signed bundle -> edge enrollment, identification and a
# door dry run. Prints one results table; the report is <out>/report.md (+ eval/student_roc.png).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/demo}
target=${CARGO_TARGET_DIR:-target}
"$target/debug/trainer" --check >/dev/null
"$target/debug/edge" --check >/dev/null
exec "$target/debug/maskgate-demo" run --out "$out"
