"""The int8 variants of a step artifact (ONNX Runtime quantisation).

    synthsleep export CHECKPOINT --out model.onnx --int8 [--int8-method hybrid]
    synthsleep verify model.int8.onnx --reference model.onnx  # how far int8 is from fp32

Three methods, each an ordinary step artifact (same inputs, outputs, states and metadata, with
``provenance.quantization`` naming the method and the fp32 artifact's content hash, and a content
hash of its own):

``dynamic`` (:func:`quantize_artifact`)
    MatMul/Gemm weights int8, activations quantised per call: no calibration data needed, so the
    variant can be made anywhere the fp32 artifact exists. Convolutions stay float.
``static`` (:func:`quantize_artifact_static`)
    QDQ: weights and activations int8, activation ranges calibrated on a few preprocessed epochs
    run with the states they carry; ORT fuses each DequantizeLinear -> Conv -> QuantizeLinear
    into an integer convolution.
``hybrid`` (:func:`quantize_artifact_hybrid`)
    The convolutions as ``static``, then every MatMul/Gemm as ``dynamic`` (per-call activation
    ranges, so the transformers do not depend on calibration). Fastest for the paper-size model,
    whose backbone convolutions are ~40 % of a dynamic-int8 step (``benchmarks/bench_paper_cpu.py``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .artifact import ArtifactInfo, check_artifact, load_proto, read_artifact, seal, set_metadata

log = logging.getLogger(__name__)

#: Node types quantised by default. Conv is left in float: ORT's dynamic ConvInteger is slower
#: than its float Conv on x86 CPUs and costs more accuracy (measured in benchmarks/bench_runtime.py).
DEFAULT_OPS = ("MatMul", "Gemm")
#: largest difference of any output (probabilities, states) an int8 variant may show against its
#: fp32 artifact in ``synthsleep export --int8``'s check
INT8_ATOL = 0.1
#: Node types the static (QDQ) variant quantises: with calibrated activations ORT runs Conv on
#: int8 kernels too (dynamic ConvInteger is slow).
STATIC_OPS = ("Conv", "MatMul", "Gemm")


def int8_path(path: str | Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx``."""
    p = Path(path)
    return p.with_name(p.stem + ".int8" + p.suffix)


def stacked_matmuls(path: Path) -> list[str]:
    """Names of the MatMul nodes whose weight is a 3-D initializer [M, in, out]: the stacked
    per-modality layers of ``model.stacked``. ORT's integer MatMul kernels take only a per-tensor
    zero point for such a weight, so they are quantised per tensor (dynamic) or left in float
    (static) while every 2-D weight is quantised per channel."""
    graph = onnx.load(str(path), load_external_data=False).graph
    three_d = {t.name for t in graph.initializer if len(t.dims) == 3}
    return [n.name for n in graph.node if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in three_d]


def quantize_artifact(src: str | Path, dst: str | Path | None = None,
                      ops: tuple[str, ...] = DEFAULT_OPS, per_channel: bool = True) -> ArtifactInfo:
    """Write the int8 variant of the artifact ``src`` to ``dst`` (default ``int8_path(src)``).
    With ``per_channel``, the stacked (3-D) MatMul weights are quantised per tensor in a second
    pass (``stacked_matmuls``).

    Raises:
        ArtifactError: ``src`` is not a valid artifact, or the result fails the artifact checks.
    """
    return _write_quantized(src, dst, lambda fp32, q8: _dynamic(fp32, q8, ops, per_channel), {
        "method": "onnxruntime dynamic int8", "ops": list(ops), "per_channel": per_channel, "weight_type": "int8"})


def _write_quantized(src: str | Path, dst: str | Path | None, run: Callable[[Path, Path], None],
                     quantization: dict[str, Any], full_check: bool = True) -> ArtifactInfo:
    """Quantise the artifact ``src`` with ``run(fp32_path, int8_path)`` and write the result to
    ``dst`` (default ``int8_path(src)``) as a sealed artifact whose provenance has
    ``quantization`` (plus the source's content hash); returns it read back (``full_check``: after
    ``onnx.checker``'s full check, which the static QDQ graphs are not given)."""
    src = Path(src)
    dst = Path(dst) if dst is not None else int8_path(src)
    info = read_artifact(src)
    model = load_proto(src)
    # the exporters' intermediate value_info (with the dynamic batch dim) makes ORT's quantiser
    # fail shape inference on large graphs; the graph's inputs/outputs keep their shapes
    del model.graph.value_info[:]
    if "Conv" in quantization["ops"]:  # the static quantiser needs one bias per convolution
        unshare_conv_biases(model.graph)
    props = {p.key: p.value for p in model.metadata_props}
    with tempfile.TemporaryDirectory() as tmp:
        fp32, q8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(fp32))
        del model
        run(fp32, q8)
        qmodel = onnx.load(str(q8))
    provenance = dict(info.provenance)
    provenance["quantization"] = {**quantization, "source": info.content_hash}
    props["provenance"] = json.dumps(provenance, sort_keys=True)
    set_metadata(qmodel, props)
    seal(qmodel)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp_dst = dst.with_name(dst.name + ".tmp")
    onnx.save(qmodel, str(tmp_dst))
    tmp_dst.replace(dst)
    out = check_artifact(dst) if full_check else read_artifact(dst)
    log.info("int8 artifact %s (%.1f MB, from %.1f MB; %s)", dst, dst.stat().st_size / 1e6,
             src.stat().st_size / 1e6, quantization["method"])
    return out


def unshare_conv_biases(graph: onnx.GraphProto) -> int:
    """Give every Conv its own bias initializer; returns how many were copied.

    The exporter stores equal constants once, so convolutions whose folded BatchNorm biases
    happen to be equal (all zero in a freshly initialised model, or any two equal vectors) share
    one initializer, sometimes behind ``Identity`` nodes. The static quantiser then quantises that
    bias once, with the first convolution's scale, and ORT cannot fuse the other convolutions
    into integer ones: they stay float between DequantizeLinear and QuantizeLinear (paper config,
    fresh weights: 166 of 240 convolutions; static QDQ step 252 ms before, 160 ms after).
    """
    inits = {t.name: t for t in graph.initializer}
    identity = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.input[0] in inits}
    users: dict[str, int] = {}
    for n in graph.node:
        if n.op_type == "Identity" and n.output[0] in identity:
            continue  # counted through the nodes that read its output
        for name in n.input:
            users[identity.get(name, name)] = users.get(identity.get(name, name), 0) + 1
    copied = 0
    for n in graph.node:
        if n.op_type != "Conv" or len(n.input) < 3:
            continue
        src = identity.get(n.input[2], n.input[2])
        if src in inits and users[src] > 1:
            bias = onnx.TensorProto()
            bias.CopyFrom(inits[src])
            bias.name = f"{n.name or n.output[0]}/bias_own"
            graph.initializer.append(bias)
            n.input[2] = bias.name
            users[src] -= 1
            copied += 1
    if copied:
        log.debug("gave %d convolutions their own bias initializer before quantisation", copied)
    return copied


def _calibration_reader(src: Path, x: np.ndarray, present: np.ndarray, side: np.ndarray) -> Any:
    """ORT ``CalibrationDataReader`` over calibration epochs in night order: each feed is one
    epoch (batch 1) with the fp32 artifact's state after the epochs before it (the activations
    the quantised graph will see live, the Mamba state included)."""
    from onnxruntime.quantization import CalibrationDataReader

    from .runtime import StepRuntime

    rt = StepRuntime(src, providers="cpu")
    feeds = []
    state = rt.new_state(1)
    for i in range(x.shape[0]):
        xi, pi = rt.check_inputs(x[i:i + 1], present[i:i + 1])
        graph_side, _ = rt.side_input(side[i:i + 1], pi, state.side_context)
        feeds.append({"x": xi, "present": pi, "conv_state": state.conv_state, "ssm_state": state.ssm_state,
                      "side": graph_side})
        _, state = rt.step(xi, pi, state, side[i:i + 1])

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    return Reader()


def synthetic_calibration_epochs(preprocess: dict[str, Any] | None = None, n: int = 16, seed: int = 3,
                                 modalities: Sequence[str] | None = None
                                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x float32 [n, M, 3000], present bool [n, M], side float32 [n, 7] (EEG side features,
    ``psg.side_features``): the first ``n`` epochs of a synthetic night
    (``psg.synthetic``, written to EDF and read back), preprocessed with ``preprocess`` (an
    artifact's ``PreprocessParams`` dict; default parameters when None), rows in the order of
    ``modalities`` (the model's; default: the preprocessing's)."""
    from synthsleep.psg.epoch import stack_for_model
    from synthsleep.psg.montage import resolve_channels
    from synthsleep.psg.preprocess import PreprocessParams, iter_recording_epochs
    from synthsleep.psg.recording import open_recording
    from synthsleep.psg.side_features import side_features_for_rows
    from synthsleep.psg.synthetic import synthesize_night, write_night

    params = PreprocessParams.from_dict(preprocess) if preprocess else PreprocessParams()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_night(synthesize_night(seed=seed, hours=(n + 2) * 30 / 3600), Path(tmp) / "calibration.edf")
        rec = open_recording(path)
        cmap = resolve_channels([c.label for c in rec.channels], wanted=params.modalities)
        eps = list(iter_recording_epochs(rec, cmap, params))[:n]
    mods = tuple(modalities or params.modalities)
    x, present, log_scale = stack_for_model(eps, mods)
    return x, present, side_features_for_rows(x, present, log_scale, mods)


def quantize_artifact_static(src: str | Path, x: np.ndarray, present: np.ndarray, side: np.ndarray,
                             dst: str | Path | None = None, ops: tuple[str, ...] = STATIC_OPS,
                             per_channel: bool = True) -> ArtifactInfo:
    """Write the static int8 (QDQ) variant of the artifact ``src``.

    Args:
        src: fp32 step artifact.
        x: float32 [N, M, 3000] calibration epochs of one night, in order (preprocessed, e.g.
            ``iter_recording_epochs`` of a synthetic night; a few dozen suffice).
        present: bool [N, M].
        side: float32 [N, 7] their EEG side features (``synthetic_calibration_epochs`` makes all three).
        dst: output (default ``int8_path(src)``).
        ops: node types quantised (weights per channel, activations per tensor, MinMax ranges;
            the stacked 3-D MatMul weights stay float, see ``stacked_matmuls``).

    Raises:
        ArtifactError: ``src`` is not a valid artifact, or the result fails the artifact checks.
    """
    def run(fp32: Path, q8: Path) -> None:
        _static_qdq(src, fp32, q8, x, present, side, ops, per_channel)

    return _write_quantized(src, dst, run, {
        "method": "onnxruntime static int8 (QDQ, MinMax calibration)", "ops": list(ops),
        "per_channel": per_channel, "weight_type": "int8", "activation_type": "uint8",
        "calibration_epochs": int(x.shape[0])}, full_check=False)


#: 7-bit weights: ORT's uint8 x int8 kernels on x86 CPUs without VNNI (AVX2 only, e.g. an AMD EPYC
#: CI runner) add pairs of products in int16 and saturate with 8-bit weights; there the dynamic
#: and static variants of a tiny model agreed with fp32 on 0 % of stages (2026-12-01). The
#: artifact may run on any CPU, so every variant is written with reduce_range.
REDUCE_RANGE = True


def _static_qdq(src: str | Path, fp32: Path, q8: Path, x: np.ndarray, present: np.ndarray,
                side: np.ndarray, ops: Sequence[str], per_channel: bool) -> None:
    """ORT ``quantize_static`` of ``fp32`` (the graph of the artifact ``src``) into ``q8``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(str(fp32), str(q8), _calibration_reader(Path(src), x, present, side),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=list(ops),
                    per_channel=per_channel, nodes_to_exclude=stacked_matmuls(fp32) if per_channel else [],
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    reduce_range=REDUCE_RANGE, extra_options={"CalibTensorRangeSymmetric": False})


def _dynamic(fp32: Path, q8: Path, ops: Sequence[str], per_channel: bool) -> None:
    """ORT ``quantize_dynamic`` of ``ops``; the stacked 3-D MatMul weights per tensor in a second
    pass (``stacked_matmuls``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    stacked = stacked_matmuls(fp32) if per_channel and "MatMul" in ops else []
    first = q8.with_name(q8.stem + ".per-channel.onnx") if stacked else q8
    quantize_dynamic(str(fp32), str(first), weight_type=QuantType.QInt8, per_channel=per_channel,
                     reduce_range=REDUCE_RANGE, op_types_to_quantize=list(ops), nodes_to_exclude=stacked)
    if stacked:
        quantize_dynamic(str(first), str(q8), weight_type=QuantType.QInt8, per_channel=False,
                         reduce_range=REDUCE_RANGE, op_types_to_quantize=["MatMul"], nodes_to_quantize=stacked)


def quantize_artifact_hybrid(src: str | Path, x: np.ndarray, present: np.ndarray, side: np.ndarray,
                             dst: str | Path | None = None) -> ArtifactInfo:
    """Write the hybrid int8 variant of ``src``: Conv static QDQ (calibrated on ``x``/``present``/``side``
    as in :func:`quantize_artifact_static`), then MatMul/Gemm dynamic (:func:`quantize_artifact`).

    Raises:
        ArtifactError: ``src`` is not a valid artifact, or the result fails the artifact checks.
    """
    def run(fp32: Path, q8: Path) -> None:
        conv = q8.with_name(q8.stem + ".conv.onnx")
        _static_qdq(src, fp32, conv, x, present, side, ("Conv",), True)
        _dynamic(conv, q8, DEFAULT_OPS, True)

    return _write_quantized(src, dst, run, {
        "method": "onnxruntime hybrid int8 (Conv static QDQ, MinMax calibration; MatMul/Gemm dynamic)",
        "ops": ["Conv", *DEFAULT_OPS], "per_channel": True, "weight_type": "int8",
        "activation_type": "uint8 (Conv)", "calibration_epochs": int(x.shape[0])}, full_check=False)
