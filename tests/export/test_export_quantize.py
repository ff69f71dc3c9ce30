"""The int8 variant: a valid artifact of its own, traceable to its fp32 source, close to it."""

from __future__ import annotations

import onnx

from synthsleep.export.artifact import read_artifact
from synthsleep.export.quantize import INT8_ATOL, int8_path, quantize_artifact
from synthsleep.export.runtime import StepRuntime
from synthsleep.export.verify import verify_artifact


def test_int8_variant_is_a_sealed_artifact_close_to_fp32(artifact, tmp_path):
    fp32 = tmp_path / "m.onnx"
    fp32.write_bytes(artifact.read_bytes())
    q = quantize_artifact(fp32)
    assert q.path == int8_path(fp32) == tmp_path / "m.int8.onnx"
    src = read_artifact(fp32)
    assert q.hash_ok and q.content_hash != src.content_hash
    assert q.provenance["quantization"]["source"] == src.content_hash
    assert {k: v for k, v in q.provenance.items() if k != "quantization"} == src.provenance
    assert (q.modalities, q.preprocess, q.states, q.thresholds) == (src.modalities, src.preprocess, src.states,
                                                                    src.thresholds)
    ops = {n.op_type for n in onnx.load(str(q.path)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeLinear" in ops  # really quantised
    assert StepRuntime(q.path, threads=1).model_hash == q.content_hash
    rep = verify_artifact(q.path, reference=fp32, steps=15, batch=3, atol=INT8_ATOL)
    assert rep.ok, rep.summary()
    assert rep.stage_agreement is not None and rep.stage_agreement >= 0.8
    assert 0 < rep.max_abs_diff["stage_prob"] < INT8_ATOL  # different, but not by much
    strict = verify_artifact(q.path, reference=fp32, steps=15, batch=3, atol=1e-7)
    assert not strict.ok and "reference" in strict.summary()  # the comparison can fail


def test_static_qdq_variant_quantises_conv_and_stays_close(artifact, tmp_path):
    from synthsleep.export.quantize import quantize_artifact_static, synthetic_calibration_epochs

    fp32 = tmp_path / "m.onnx"
    fp32.write_bytes(artifact.read_bytes())
    src = read_artifact(fp32)
    x, present, side = synthetic_calibration_epochs(src.preprocess, n=6, modalities=src.modalities)
    assert x.shape == (6, len(src.modalities), 3000) and present.any()
    q = quantize_artifact_static(fp32, x, present, side, dst=tmp_path / "m.qdq.onnx")
    assert q.hash_ok and q.provenance["quantization"]["source"] == src.content_hash
    assert q.provenance["quantization"]["calibration_epochs"] == 6
    nodes = onnx.load(str(q.path)).graph.node
    quantised = {n.input[0] for n in nodes if n.op_type == "DequantizeLinear"}
    conv_w = {n.input[1] for n in nodes if n.op_type == "Conv"}
    assert conv_w & {n.output[0] for n in nodes if n.op_type == "DequantizeLinear"}  # Conv weights int8
    assert quantised
    rep = verify_artifact(q.path, reference=fp32, steps=10, batch=2, atol=INT8_ATOL)
    # what a user sees stays close (random inputs lie outside the calibrated ranges, so the
    # raw conv state, a pre-activation, may move more than the probabilities)
    for out in ("stage_prob", "apnea_prob", "hypopnea_prob"):
        assert rep.max_abs_diff[out] < INT8_ATOL, rep.summary()
    assert rep.stage_agreement is not None and rep.stage_agreement >= 0.8


def test_hybrid_variant_has_integer_convolutions_and_dynamic_matmuls(artifact, tmp_path):
    from synthsleep.export.quantize import quantize_artifact_hybrid, synthetic_calibration_epochs

    fp32 = tmp_path / "m.onnx"
    fp32.write_bytes(artifact.read_bytes())
    src = read_artifact(fp32)
    x, present, side = synthetic_calibration_epochs(src.preprocess, n=6, modalities=src.modalities)
    q = quantize_artifact_hybrid(fp32, x, present, side, dst=tmp_path / "m.hybrid.onnx")
    assert q.hash_ok and q.provenance["quantization"]["source"] == src.content_hash
    assert "hybrid" in q.provenance["quantization"]["method"]
    nodes = onnx.load(str(q.path)).graph.node
    dq_out = {n.output[0] for n in nodes if n.op_type == "DequantizeLinear"}
    convs = [n for n in nodes if n.op_type == "Conv"]
    assert convs and all(n.input[1] in dq_out for n in convs)  # every Conv weight int8 (QDQ)
    ops = {n.op_type for n in nodes}
    assert "DynamicQuantizeLinear" in ops  # the MatMuls quantised per call
    assert not any(n.op_type == "MatMul" and n.input[1] in dq_out for n in nodes)  # not static
    rep = verify_artifact(q.path, reference=fp32, steps=10, batch=2, atol=INT8_ATOL)
    for out in ("stage_prob", "apnea_prob", "hypopnea_prob"):
        assert rep.max_abs_diff[out] < INT8_ATOL, rep.summary()
    assert rep.stage_agreement is not None and rep.stage_agreement >= 0.8


def test_convolutions_sharing_a_bias_get_their_own_before_quantisation():
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from synthsleep.export.quantize import unshare_conv_biases

    w = numpy_helper.from_array(np.ones((2, 1, 3), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(2, np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y1"], name="c1"),
             helper.make_node("Identity", ["b"], ["b_id"]),
             helper.make_node("Conv", ["x", "w", "b_id"], ["y2"], name="c2"),
             helper.make_node("Conv", ["x", "w"], ["y3"], name="c3")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8])],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, None) for y in ("y1", "y2", "y3")],
                              [w, b])
    assert unshare_conv_biases(graph) == 1  # the last user keeps the original
    biases = [n.input[2] for n in graph.node if n.op_type == "Conv" and len(n.input) > 2]
    assert len(set(biases)) == 2
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    assert all(np.array_equal(inits[n], np.zeros(2)) for n in biases if n in inits)
    assert unshare_conv_biases(graph) == 0  # nothing left to copy
