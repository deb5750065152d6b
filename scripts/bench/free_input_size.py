"""Copy an ONNX model with its input's height and width made symbolic (and output shapes
cleared), so onnxruntime runs it at the size tract is given (YuNet ships fixed at 640x640; the
edge runs it at [detector] input_size, 320 by default). Weights and operators are untouched.
"""

import argparse
import sys

import onnx


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("src")
    p.add_argument("dst")
    a = p.parse_args()
    try:
        m = onnx.load(a.src)
    except Exception as e:  # onnx raises several types for unreadable files
        sys.exit(f"{a.src}: cannot read it as ONNX: {e}")
    inp = m.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    if len(dims) != 4:
        sys.exit(f"{a.src}: input {inp.name} is not 4-D")
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    for out in m.graph.output:
        out.type.tensor_type.ClearField("shape")
    del m.graph.value_info[:]
    onnx.save(m, a.dst)


if __name__ == "__main__":
    main()
