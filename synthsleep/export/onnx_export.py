"""Export ``SleepModel.step`` to the ONNX step artifact (build time: needs torch).

The graph: inputs ``x`` float32 [B, M, 3000], ``present`` **bool** [B, M], ``conv_state`` float32
[L, B, conv_dim, d_conv], ``ssm_state`` float32 [L, B, H, P, N]; outputs ``stage_prob`` [B, 5],
``apnea_prob`` [B], ``hypopnea_prob`` [B], ``conv_state_out``, ``ssm_state_out`` (same shapes as
the states). The batch axis (beds) is dynamic. The metadata is described in
:mod:`synthsleep.export.artifact`.

The split graphs cut from the same model (``<stem>.encoder.onnx``, ``<stem>.temporal.onnx``,
:func:`export_split`, see :mod:`synthsleep.export.split`) are exported here too: one module
(~400 lines) because they share the exporter calls, node-metadata stripping, sealing and checks
with the step graph and must change together with it.

CLI: ``synthsleep export CHECKPOINT --out model.onnx`` (:func:`add_arguments` / :func:`run`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx
import torch

from synthsleep.export.artifact import (
    FORMAT,
    INPUT_NAMES,
    OUTPUT_NAMES,
    SCHEMA_VERSION,
    ArtifactError,
    ArtifactInfo,
    StateSpec,
    check_artifact,
    read_artifact,
    seal,
    set_metadata,
)
from synthsleep.export.graph_rewrite import expand_elu
from synthsleep.psg.side_features import N_SIDE

log = logging.getLogger(__name__)

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = 18
DEFAULT_THRESHOLDS = {"apnea": 0.5, "hypopnea": 0.5}
STAGE_NAMES = ("W", "N1", "N2", "N3", "REM")


def git_commit(cwd: str | Path | None = None) -> str:
    """The source tree's commit (``+dirty`` when modified), or ``unknown`` outside git."""
    cwd = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _check_thresholds(thresholds: Mapping[str, Any]) -> dict[str, float]:
    out = {**DEFAULT_THRESHOLDS}
    for k, v in thresholds.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"threshold {k}={v!r} must be a probability in [0, 1]")
        out[k] = float(v)
    return out


def _preprocess_dict(preprocess_params: Any, modalities: tuple[str, ...]) -> dict[str, Any]:
    if preprocess_params is None:
        from synthsleep.psg.preprocess import PreprocessParams

        preprocess_params = PreprocessParams(modalities=modalities)
    d = preprocess_params.to_dict() if hasattr(preprocess_params, "to_dict") else dict(preprocess_params)
    have = tuple(d.get("modalities", modalities))
    lacking = [m for m in modalities if m not in have]
    if lacking:
        raise ValueError(f"preprocess params produce modalities {list(have)} but the model reads "
                         f"{list(modalities)} (lacking {lacking})")
    d["modality_spec"] = modality_spec(d)
    return d


def modality_spec(preprocess: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What each input row holds, so the artifact's inputs can be reproduced without this package:
    the input unit, the zero-phase Butterworth band-pass (Hz, order), the resampling and the
    normalisation (``psg.montage.MODALITIES`` and the preprocessing parameters)."""
    from synthsleep.psg.montage import MODALITIES

    spec = {}
    for name in preprocess["modalities"]:
        m = MODALITIES[name]
        if m.norm == "fixed":
            norm = f"fixed: (x - {m.offset:g}) / {m.scale:g}"
        elif name in preprocess.get("epoch_norm", ()):
            norm = "per epoch: (x - median) / (IQR / 1.349) of the epoch's own samples"
        else:
            norm = (f"running robust: (x - median) / (IQR / 1.349), causal; cumulative over the first "
                    f"{preprocess['norm_warmup']} present epochs, then an exponential average with a "
                    f"{preprocess['norm_horizon']}-epoch time constant")
        spec[name] = {"input_unit": m.unit, "band_hz": list(m.band) if m.band else None,
                      "filter": (f"Butterworth band-pass, order {preprocess['filter_order']}, zero-phase "
                                 "within the epoch") if m.band else None,
                      "rate_hz": preprocess["target_rate"], "normalisation": norm,
                      "clip": preprocess["clip"]}
    return spec


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


def _strip_node_metadata(graph: onnx.GraphProto) -> None:
    """Drop per-node stack traces/doc strings the exporter records (they hold build-machine paths
    and triple the file size); the graph itself is unchanged."""
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
        for attr in node.attribute:
            if attr.HasField("g"):
                _strip_node_metadata(attr.g)
            for sub in attr.graphs:
                _strip_node_metadata(sub)


def _load_exported(raw: Path) -> onnx.ModelProto:
    """The graph a torch exporter wrote, cleaned (``_strip_node_metadata``) and rewritten for ORT
    speed with the same function (``graph_rewrite.expand_elu``)."""
    proto = onnx.load(str(raw))
    _strip_node_metadata(proto.graph)
    expand_elu(proto.graph)
    return proto


def _dummy_side(batch: int, gen: torch.Generator) -> torch.Tensor:
    """Example EEG side features [batch, N_SIDE] to trace the graphs with (values do not matter)."""
    return torch.randn(batch, N_SIDE, generator=gen)


def _keep_inputs(graph: onnx.GraphProto, names_in: tuple[str, ...], io_in: Mapping[str, Any]) -> None:
    """Give ``graph`` every input of its contract, in order. The TorchScript exporter drops an
    input the function does not read (``present`` / ``side`` of a graph without an EEG-alone
    readout); ONNX allows an unused input, and the runtime then feeds every graph alike."""
    have = {i.name for i in graph.input}
    kinds = {"float32": onnx.TensorProto.FLOAT, "bool": onnx.TensorProto.BOOL}
    for pos, name in enumerate(names_in):
        if name not in have:
            shape = ["batch" if d == -1 else d for d in io_in[name]["shape"]]
            graph.input.insert(pos, onnx.helper.make_tensor_value_info(name, kinds[io_in[name]["dtype"]], shape))


def _export_graph(wrapper: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path,
                  exporter: str, opset: int, names_in: tuple[str, ...] = INPUT_NAMES,
                  names_out: tuple[str, ...] = OUTPUT_NAMES,
                  batch_axes: Mapping[str, int] | None = None) -> None:
    """Export ``wrapper(*args)`` with a dynamic batch axis: ``batch_axes`` {name: axis} of inputs
    and outputs (default: the step graph's, batch axis 1 for the states, 0 otherwise)."""
    if batch_axes is None:
        batch_axes = {n: (1 if "state" in n else 0) for n in (*names_in, *names_out)}
    if exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.onnx.export(
            wrapper, args, str(path), input_names=list(names_in), output_names=list(names_out),
            opset_version=opset, dynamo=True, external_data=False, verbose=False,
            dynamic_shapes={n: {batch_axes[n]: batch} for n in names_in})
    elif exporter == "torchscript":
        axes = {n: {batch_axes[n]: "batch"} for n in (*names_in, *names_out)}
        torch.onnx.export(wrapper, args, str(path), input_names=list(names_in),
                          output_names=list(names_out), opset_version=opset, dynamo=False,
                          dynamic_axes=axes)
    else:
        raise ValueError(f"exporter {exporter!r} unknown; choose one of {EXPORTERS}")


def _quiet_export(wrapper: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path, exporter: str,
                  opset: int, **kw: Any) -> None:
    """``_export_graph`` with the exporters' stdout chatter sent to stderr and their (expected)
    tracer warnings silenced, so the CLI's stdout keeps only its summary."""
    with torch.no_grad(), contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        _export_graph(wrapper, args, path, exporter, opset, **kw)


def _stacked(cfg: Any, stacked: bool | None) -> bool:
    """Whether to export the encoder stacked: ``stacked`` when given, else the config's choice."""
    return cfg.export_stacked if stacked is None else stacked


def export_split(model: torch.nn.Module, cfg: Any, step_path: str | Path, *, exporter: str = "dynamo",
                 opset: int = DEFAULT_OPSET, stacked: bool | None = None) -> tuple[Path, Path]:
    """Write the split graphs of the step artifact ``step_path`` (see :mod:`synthsleep.export.split`):
    ``<stem>.encoder.onnx`` (``encode_epochs``, batch N) and ``<stem>.temporal.onnx``
    (``temporal_step``), each sealed with ``step_hash`` = the step artifact's content hash.

    Args:
        model: the ``SleepModel`` the step artifact was exported from (copied, CPU, eval).
        cfg: its ``ModelConfig``.
        step_path: the step artifact, already written.
        stacked: the encoder as ``StackedEncoder`` (None: ``cfg.export_stacked``).

    Returns:
        (encoder path, temporal path).
    Raises:
        ArtifactError: a written graph fails ``onnx.checker`` or writes external data.
    """
    from synthsleep.export.split import (
        ENCODER_FORMAT,
        ENCODER_INPUTS,
        ENCODER_OUTPUTS,
        SPLIT_SCHEMA_VERSION,
        TEMPORAL_FORMAT,
        TEMPORAL_INPUTS,
        split_paths,
    )
    from synthsleep.model import EncoderWrapper, TemporalWrapper
    from synthsleep.model.stacked import StackedEncoder

    step_path = Path(step_path)
    info = read_artifact(step_path)
    m = copy.deepcopy(model).to("cpu", torch.float32).eval()
    modalities = tuple(cfg.modalities)
    gen = torch.Generator().manual_seed(1)
    batch = 2  # dynamo fixes a dim of size 1
    x = torch.randn(batch, len(modalities), cfg.epoch_samples, generator=gen)
    present = torch.ones(batch, len(modalities), dtype=torch.bool)
    present[1, -1] = False
    side = _dummy_side(batch, gen)
    with torch.no_grad():
        e = m.encode_epochs(x, present)
    conv, ssm = m.allocate_state(batch)
    d = int(e.shape[-1])
    state_shapes = {s.name: list(s.shape) for s in info.states}
    graphs = [
        (EncoderWrapper(m, StackedEncoder(m) if _stacked(cfg, stacked) else None).eval(), (x, present),
         ENCODER_FORMAT, ENCODER_INPUTS, ENCODER_OUTPUTS,
         {"x": {"dtype": "float32", "shape": [-1, len(modalities), cfg.epoch_samples]},
          "present": {"dtype": "bool", "shape": [-1, len(modalities)]}},
         {"embedding": {"dtype": "float32", "shape": [-1, d]}}),
        (TemporalWrapper(m).eval(), (e, present, conv, ssm, side), TEMPORAL_FORMAT, TEMPORAL_INPUTS, OUTPUT_NAMES,
         {"embedding": {"dtype": "float32", "shape": [-1, d]},
          "present": {"dtype": "bool", "shape": [-1, len(modalities)]},
          "conv_state": {"dtype": "float32", "shape": state_shapes["conv_state"]},
          "ssm_state": {"dtype": "float32", "shape": state_shapes["ssm_state"]},
          "side": {"dtype": "float32", "shape": [-1, N_SIDE]}},
         info.outputs),
    ]
    written = []
    for (wrapper, args, fmt, names_in, names_out, io_in, io_out), path in zip(graphs, split_paths(step_path)):
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
            raw = Path(tmp) / "graph.onnx"
            _quiet_export(wrapper, args, raw, exporter, opset, names_in=names_in, names_out=names_out)
            extra = [p.name for p in Path(tmp).iterdir() if p.name != raw.name]
            if extra:
                raise ArtifactError(f"the exporter wrote external data files {extra} for {path.name}")
            proto = _load_exported(raw)
            _keep_inputs(proto.graph, names_in, io_in)
            set_metadata(proto, {"format": fmt, "schema_version": str(SPLIT_SCHEMA_VERSION),
                                 "step_hash": info.content_hash, "inputs": _json(io_in),
                                 "outputs": _json(io_out)})
            proto.doc_string = f"synthsleep {fmt} graph of {step_path.name} ({cfg.name})"
            seal(proto)
            try:
                onnx.checker.check_model(proto, full_check=True)
            except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
                raise ArtifactError(f"{path}: onnx.checker failed: {err}") from None
            sealed = Path(tmp) / "sealed.onnx"
            onnx.save(proto, str(sealed))
            os.replace(sealed, path)
        written.append(path)
    log.info("split graphs %s, %s (%s)", written[0].name, written[1].name, info.short_hash)
    return written[0], written[1]


def export_step(model: torch.nn.Module, cfg: Any, out_path: str | Path, provenance: Mapping[str, Any],
                preprocess_params: Any, thresholds: Mapping[str, float] | None = None, *,
                exporter: str = "dynamo", opset: int = DEFAULT_OPSET, split: bool = True,
                stacked: bool | None = None) -> ArtifactInfo:
    """Export ``model.step`` to ONE self-contained ``.onnx`` with metadata; check it; return its info.

    Args:
        model: a ``SleepModel`` (copied to CPU float32 eval mode; the caller's model is untouched).
        cfg: its ``ModelConfig``.
        out_path: the ``.onnx`` file to write (replaced atomically).
        provenance: JSON-able training provenance (``data_fingerprint``, ``metrics``, ...); the
            config and git commit are added when absent.
        preprocess_params: ``PreprocessParams`` or its dict (None: defaults for cfg.modalities).
        thresholds: decision thresholds (default apnea/hypopnea 0.5).
        exporter: ``dynamo`` (torch.export, the default) or ``torchscript`` (legacy, faster).
        opset: ONNX opset.
        stacked: export the encoder as ``model.stacked.StackedEncoder`` (the same function, one
            node per layer for all modalities); False: ``encode_epochs`` as it is written, one
            encoder after another; None (default): ``cfg.export_stacked`` (on for ``small``, off
            for ``paper``, where it is slower; benchmarks compare the two).
        split: also write the split graphs ``<stem>.encoder.onnx`` / ``<stem>.temporal.onnx``
            (:func:`export_split`; offline scoring batches the encoder over a night). Without
            them (and for artifacts older than the split) ``score`` uses the step graph.

    Raises:
        ValueError: bad thresholds/preprocess params; ArtifactError: the written file fails checks.
    """
    from synthsleep.model import StepWrapper  # the model room's export wrapper
    from synthsleep.model.stacked import StackedEncoder

    out_path = Path(out_path)
    modalities = tuple(cfg.modalities)
    thr = _check_thresholds(thresholds or {})
    pre = _preprocess_dict(preprocess_params, modalities)
    m = copy.deepcopy(model).to("cpu", torch.float32).eval()
    wrapper = StepWrapper(m, StackedEncoder(m) if _stacked(cfg, stacked) else None).eval()

    batch = 2  # dynamo fixes a dim of size 1: export with 2 beds so the batch axis stays dynamic
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, len(modalities), cfg.epoch_samples, generator=gen)
    present = torch.ones(batch, len(modalities), dtype=torch.bool)
    present[1, -1] = False
    conv, ssm = m.allocate_state(batch)
    states = (StateSpec("conv_state", "conv_state", "conv_state_out",
                        (conv.shape[0], -1, *conv.shape[2:]), "float32", 1),
              StateSpec("ssm_state", "ssm_state", "ssm_state_out",
                        (ssm.shape[0], -1, *ssm.shape[2:]), "float32", 1))
    m_count = len(modalities)
    io_inputs = {"x": {"dtype": "float32", "shape": [-1, m_count, cfg.epoch_samples]},
                 "present": {"dtype": "bool", "shape": [-1, m_count]},
                 "conv_state": {"dtype": "float32", "shape": list(states[0].shape)},
                 "ssm_state": {"dtype": "float32", "shape": list(states[1].shape)},
                 "side": {"dtype": "float32", "shape": [-1, N_SIDE]}}
    n_stages = int(getattr(cfg, "n_stages", 5))
    io_outputs = {"stage_prob": {"dtype": "float32", "shape": [-1, n_stages]},
                  "apnea_prob": {"dtype": "float32", "shape": [-1]},
                  "hypopnea_prob": {"dtype": "float32", "shape": [-1]},
                  "conv_state_out": {"dtype": "float32", "shape": list(states[0].shape)},
                  "ssm_state_out": {"dtype": "float32", "shape": list(states[1].shape)}}
    prov = dict(provenance)
    prov.setdefault("config", cfg.to_dict())
    prov.setdefault("git_commit", git_commit())
    prov.setdefault("data_fingerprint", None)
    prov.setdefault("metrics", {})
    prov["exporter"] = {"name": exporter, "opset": opset, "torch": torch.__version__,
                        "onnx": onnx.__version__}

    out_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".export-") as tmp:
        raw = Path(tmp) / "step.onnx"
        # the exporters print progress on stdout and warn about traced shape checks: keep the
        # CLI's stdout for its summary, and the (expected) tracer warnings out of the user's way
        _quiet_export(wrapper, (x, present, conv, ssm, _dummy_side(batch, gen)), raw, exporter, opset)
        extra = [p.name for p in Path(tmp).iterdir() if p.name != raw.name]
        if extra:
            raise ArtifactError(f"the exporter wrote external data files {extra}; the artifact must be "
                                f"one self-contained file")
        proto = _load_exported(raw)
        _keep_inputs(proto.graph, INPUT_NAMES, io_inputs)
        set_metadata(proto, {
            "format": FORMAT,
            "schema_version": str(SCHEMA_VERSION),
            "montage": _json(list(modalities)),
            "preprocess": _json(pre),
            "class_names": _json({"stage": list(STAGE_NAMES[:n_stages]), "apnea": ["no", "apnea"],
                                  "hypopnea": ["no", "hypopnea"]}),
            "inputs": _json(io_inputs),
            "outputs": _json(io_outputs),
            "states": _json([s.to_dict() for s in states]),
            "thresholds": _json(thr),
            "provenance": _json(prov),
        })
        proto.doc_string = (f"synthsleep SleepModel.step ({cfg.name}): one 30-s epoch per bed -> "
                            f"stage/apnea/hypopnea probabilities; present is bool")
        digest = seal(proto)
        sealed = Path(tmp) / "sealed.onnx"
        onnx.save(proto, str(sealed))
        os.replace(sealed, out_path)
    info = check_artifact(out_path)
    if split:
        export_split(model, cfg, out_path, exporter=exporter, opset=opset, stacked=stacked)
    else:  # never leave split graphs of an earlier export beside the new step graph
        from synthsleep.export.split import split_paths

        for p in split_paths(out_path):
            p.unlink(missing_ok=True)
    log.info("exported %s (%s, %.1f MB, %s) in %.1f s", out_path, cfg.name,
             out_path.stat().st_size / 1e6, digest[:19], time.perf_counter() - t0)
    return info


# ---------------------------------------------------------------------------------------------- CLI
def _parse_thresholds(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    out: dict[str, float] = {}
    for part in text.split(","):
        key, sep, val = part.partition("=")
        try:
            if not sep:
                raise ValueError
            out[key.strip()] = float(val)
        except ValueError:
            raise ValueError(f"--thresholds: {part!r} is not name=probability "
                             f"(e.g. apnea=0.5,hypopnea=0.4)") from None
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``synthsleep export CHECKPOINT --out model.onnx``."""
    parser.add_argument("checkpoint", help="model checkpoint: PATH(.safetensors|.json) pair written by save_model")
    parser.add_argument("--out", required=True, type=Path, help="artifact to write (.onnx)")
    parser.add_argument("--thresholds", default=None,
                        help="decision thresholds, e.g. apnea=0.5,hypopnea=0.4 (default: the "
                             "checkpoint's, else 0.5)")
    parser.add_argument("--like", type=Path, default=None, metavar="ARTIFACT",
                        help="take the provenance, preprocessing and thresholds from this artifact "
                             "instead of the checkpoint's metadata: re-export a model with a newer "
                             "exporter (e.g. synthsleep export synthsleep/assets/model --like "
                             "synthsleep/assets/model.onnx --out new/model.onnx)")
    parser.add_argument("--exporter", choices=EXPORTERS, default="dynamo",
                        help="torch ONNX exporter (default dynamo)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default %(default)s)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the ORT vs PyTorch parity check after export")
    parser.add_argument("--int8", action="store_true",
                        help="also write the int8 variant OUT.int8.onnx and report how far it is "
                             "from the fp32 artifact")
    parser.add_argument("--int8-method", choices=("dynamic", "static", "hybrid"), default="dynamic",
                        help="with --int8: dynamic (MatMul/Gemm, no calibration; default), static "
                             "(QDQ, Conv too, activation ranges calibrated on 16 epochs of a "
                             "synthetic night) or hybrid (Conv static, MatMul/Gemm dynamic: the "
                             "fastest for the paper-size model)")


def run(args: argparse.Namespace) -> int:
    """Load the checkpoint, export, check, verify parity, print a summary."""
    from synthsleep.model import load_config_json, load_model

    cli_thresholds = _parse_thresholds(args.thresholds)  # user errors first, before loading anything
    torch.set_num_threads(1)
    cfg, meta = load_config_json(args.checkpoint)
    model, cfg = load_model(args.checkpoint)
    if args.like is not None:  # the same model again, with the artifact's own record
        like = read_artifact(args.like, any_schema=True)  # an older schema's record re-exported is the point
        if like.modalities != tuple(cfg.modalities):
            raise ValueError(f"--like {args.like}: its montage {list(like.modalities)} is not the "
                             f"checkpoint's {list(cfg.modalities)}")
        thresholds = {**like.thresholds, **cli_thresholds}
        provenance = {**like.provenance, "reexported_from": like.content_hash}
        preprocess = like.preprocess
    else:
        thresholds = {**meta.get("thresholds", {}), **cli_thresholds}
        provenance = {k: meta[k] for k in ("data_fingerprint", "metrics", "git_commit", "train") if k in meta}
        provenance["checkpoint"] = str(Path(args.checkpoint))
        preprocess = meta.get("preprocess")
    print(f"exporting {args.checkpoint} ({cfg.name}, modalities {list(cfg.modalities)}) "
          f"with the {args.exporter} exporter ...", file=sys.stderr)
    t0 = time.perf_counter()
    info = export_step(model, cfg, args.out, provenance, preprocess, thresholds,
                       exporter=args.exporter, opset=args.opset)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    print(f"  content hash  {info.content_hash}")
    print(f"  montage       {', '.join(info.modalities)}")
    print(f"  thresholds    {info.thresholds}")
    print("  states        " + ", ".join(f"{s.name}{list(s.shape)}" for s in info.states))
    if args.no_verify:
        return 0
    from synthsleep.export.verify import verify_artifact

    report = verify_artifact(args.out, model=model, steps=20)
    print(report.summary())
    if args.int8:
        from synthsleep.export.quantize import (
            INT8_ATOL,
            quantize_artifact,
            quantize_artifact_hybrid,
            quantize_artifact_static,
            synthetic_calibration_epochs,
        )

        if args.int8_method == "dynamic":
            q = quantize_artifact(args.out)
        else:
            quantise = quantize_artifact_static if args.int8_method == "static" else quantize_artifact_hybrid
            q = quantise(args.out, *synthetic_calibration_epochs(info.preprocess, modalities=info.modalities))
        print(f"wrote {q.path} ({q.path.stat().st_size / 1e6:.1f} MB, int8)  {q.content_hash}")
        qrep = verify_artifact(q.path, reference=args.out, steps=20, atol=INT8_ATOL)
        print(qrep.summary())
        return 0 if report.ok and qrep.ok else 1
    return 0 if report.ok else 1
