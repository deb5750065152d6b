"""Latency of one ONNX model in onnxruntime, batch 1, one thread, sequential execution.

The reference column of `maskgate-bench`: the same .onnx file tract runs, the same input
values (the pattern below, which tests/src/bench/latency.rs reproduces), warm-up runs first.
Prints one JSON object: the input name and shape, the output names, and every timed run in ms
(the caller computes the median and p90 the same way for both runtimes).
"""

import argparse
import json
import sys
import time

import numpy as np
import onnxruntime as ort


def pattern(n, lo, hi):
    """x[i] = lo + (hi - lo) * ((37 i + 11) mod 256) / 255: deterministic, not constant."""
    i = np.arange(n, dtype=np.int64)
    return (lo + (hi - lo) * ((37 * i + 11) % 256) / 255.0).astype(np.float32)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--shape", help="input shape, comma separated (default: the model's own)")
    p.add_argument("--lo", type=float, default=0.0)
    p.add_argument("--hi", type=float, default=255.0)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    a = p.parse_args()

    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        s = ort.InferenceSession(a.model, o, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        sys.exit(f"{a.model}: onnxruntime cannot load it: {e}")
    inp = s.get_inputs()[0]
    if a.shape:
        shape = [int(d) for d in a.shape.split(",")]
    else:
        shape = list(inp.shape)
        if not all(isinstance(d, int) for d in shape):
            sys.exit(f"{a.model}: input {inp.name} has symbolic shape {shape}; pass --shape")
    x = pattern(int(np.prod(shape)), a.lo, a.hi).reshape(shape)
    feed = {inp.name: x}
    for _ in range(a.warmup):
        s.run(None, feed)
    ms = []
    for _ in range(a.runs):
        t = time.perf_counter()
        s.run(None, feed)
        ms.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({
        "model": a.model,
        "input": inp.name,
        "shape": shape,
        "outputs": [o.name for o in s.get_outputs()],
        "onnxruntime": ort.__version__,
        "ms": ms,
    }))


if __name__ == "__main__":
    main()
