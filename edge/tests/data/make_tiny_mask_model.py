"""Writes tiny_mask_model.onnx: a stand-in for a maskgate recogniser with a mask head.

Input `data` [1,3,112,112]; outputs `embedding` [1,4] (per-channel means times a fixed matrix)
and `mask_prob` [1,1] = sigmoid(10 * mean of all inputs): a bright crop reads as masked, a dark
one as unmasked. Used by edge/tests/mask_condition.rs to test per-condition thresholds without a
trained model. Regenerate with: python make_tiny_mask_model.py
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

w = numpy_helper.from_array(np.array([[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1]], dtype=np.float32), "w")
ten = numpy_helper.from_array(np.array(10.0, dtype=np.float32), "ten")
bias = numpy_helper.from_array(np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32), "bias")
nodes = [
    helper.make_node("ReduceMean", ["data"], ["chan"], axes=[2, 3], keepdims=0),
    helper.make_node("MatMul", ["chan", "w"], ["mm"]),
    helper.make_node("Add", ["mm", "bias"], ["embedding"]),
    helper.make_node("ReduceMean", ["data"], ["all"], axes=[1, 2, 3], keepdims=0),
    helper.make_node("Mul", ["all", "ten"], ["logit"]),
    helper.make_node("Sigmoid", ["logit"], ["prob"]),
    helper.make_node("Unsqueeze", ["prob", "one"], ["mask_prob"]),
]
one = numpy_helper.from_array(np.array([1], dtype=np.int64), "one")
graph = helper.make_graph(
    nodes,
    "tiny_mask_model",
    [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 112, 112])],
    [
        helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 4]),
        helper.make_tensor_value_info("mask_prob", TensorProto.FLOAT, [1, 1]),
    ],
    [w, ten, bias, one],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
onnx.checker.check_model(model)
onnx.save(model, "tiny_mask_model.onnx")
