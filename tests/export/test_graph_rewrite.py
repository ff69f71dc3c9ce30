"""``export.graph_rewrite``: the exported graphs keep their function after the ORT-speed rewrites."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from synthsleep.export.graph_rewrite import expand_elu


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_expand_elu_computes_elu_and_leaves_other_alphas():
    nodes = [helper.make_node("Elu", ["x"], ["a"], name="e1"),  # alpha 1 (default)
             helper.make_node("Elu", ["a"], ["b"], name="e2", alpha=1.0),
             helper.make_node("Elu", ["b"], ["y"], name="e3", alpha=0.5)]  # kept: the identity needs alpha 1
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 7])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    x = np.concatenate([np.random.default_rng(0).normal(0, 3, (200, 7)),
                        [[-100.0, -20.0, -1e-6, 0.0, 1e-6, 20.0, 100.0]]]).astype(np.float32)
    want = _run(model, x)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert expand_elu(rewritten.graph) == 2
    onnx.checker.check_model(rewritten, full_check=True)
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("Elu") == 1 and ops.count("Exp") == 2 and ops.count("Max") == 2
    np.testing.assert_allclose(_run(rewritten, x), want, rtol=1e-6, atol=1e-6)
    assert expand_elu(rewritten.graph) == 0  # nothing left to rewrite; the constants are not added twice
    assert sum(i.name.startswith("elu_expand") for i in rewritten.graph.initializer) == 2


def test_exported_artifacts_have_no_elu(artifact):
    from synthsleep.export.split import split_paths

    for path in (artifact, *split_paths(artifact)):
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert "Elu" not in ops, path.name
    assert "Exp" in {n.op_type for n in onnx.load(str(split_paths(artifact)[0])).graph.node}
