"""A tiny model with the WD14 contract, built with onnx.helper: for tests and the benchmark.

Input [N, size, size, 3] float32 BGR 0-255; output [N, T] = sigmoid(features @ W + b),
where features are the per-channel means in BGR order divided by 255, after `convs`
stride-2 3x3 convolutions (identity-initialised, so the means are unchanged; they are
there to cost time like a real network). With W = 0 the probabilities are sigmoid(b),
fixed for any picture, which the tests use for hand-worked expectations.
"""
from __future__ import annotations

import csv
import os

import numpy as np


def build_wd14_test_model(folder: str, tags: list[tuple[str, int]], bias_probabilities: list[float],
                          weights: np.ndarray | None = None, size: int = 64, convs: int = 0,
                          channels: int = 3) -> str:
    """Write model.onnx and selected_tags.csv into `folder`; returns the folder.

    tags: (name, category) per output; weights: [3, T] on the BGR means in 0-1 (default 0).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    count = len(tags)
    p = np.clip(np.asarray(bias_probabilities, np.float64), 1e-6, 1 - 1e-6)
    bias = np.log(p / (1 - p)).astype(np.float32)
    weights = np.zeros((3, count), np.float32) if weights is None else np.asarray(weights, np.float32)
    initializers = [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B"),
                    numpy_helper.from_array(np.array([1 / 255.0], np.float32), "scale")]
    nodes = [helper.make_node("Transpose", ["input_1"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Mul", ["nchw", "scale"], ["x0"])]
    current = "x0"
    for i in range(convs):
        # Identity 3x3 kernel per channel: the channel means survive, the cost is real.
        kernel = np.zeros((3, 3, 3, 3), np.float32)
        for c in range(3):
            kernel[c, c, 1, 1] = 1.0
        initializers.append(numpy_helper.from_array(kernel, f"K{i}"))
        nodes.append(helper.make_node("Conv", [current, f"K{i}"], [f"x{i + 1}"], pads=[1, 1, 1, 1]))
        current = f"x{i + 1}"
    nodes += [helper.make_node("GlobalAveragePool", [current], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["features"]),
              helper.make_node("MatMul", ["features", "W"], ["logits0"]),
              helper.make_node("Add", ["logits0", "B"], ["logits"]),
              helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"])]
    graph = helper.make_graph(
        nodes, "wd14_test",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["batch", size, size, channels])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["batch", count])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by older onnxruntime releases too
    onnx.checker.check_model(model)
    os.makedirs(folder, exist_ok=True)
    onnx.save(model, os.path.join(folder, "model.onnx"))
    with open(os.path.join(folder, "selected_tags.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tag_id", "name", "category", "count"])
        for i, (name, category) in enumerate(tags):
            writer.writerow([i, name, category, 1000 - i])
    return folder
