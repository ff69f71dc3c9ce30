"""The split artifact: a batched per-epoch encoder graph and a cheap temporal step graph.

The step artifact ``model.onnx`` runs, per epoch, the per-modality encoders + fusion and then
the Mamba step + heads. Offline scoring has the whole night in hand, so it runs the stateless
part over all epochs in large batches and only the stateful part epoch by epoch. ``synthsleep
export`` (``export_step``) writes, beside ``model.onnx``:

``model.encoder.onnx``  inputs ``x`` float32 [N, M, 3000], ``present`` bool [N, M]
                        -> ``embedding`` float32 [N, D] (``SleepModel.encode_epochs``)
``model.temporal.onnx`` inputs ``embedding`` [B, D], ``present`` bool [B, M] (the sensor set the
                        embedding came from: it picks the stage readout), ``conv_state``,
                        ``ssm_state``, ``side`` float32 [B, 21] (EEG side features and their
                        context, NaN row: unknown) -> the step graph's outputs (``SleepModel.temporal_step``)

Each carries ``metadata_props``: ``format`` (``synthsleep-encoder`` / ``synthsleep-temporal``),
``schema_version``, ``step_hash`` (content hash of the step artifact they were cut from),
``inputs``/``outputs`` (JSON, -1 = batch axis) and its own ``content_hash``. The step artifact is
still the one thing that names the model (its hash goes into events, its metadata gives the
montage, preprocessing and thresholds); the split graphs are used only when their ``step_hash``
matches it. Artifacts exported before the split (or whose sidecars are missing or stale) are
scored with the step graph: :func:`load_split` returns None and logs why.

No torch here: the offline scorer reads these with onnx + onnxruntime.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .artifact import ArtifactError, compute_content_hash, load_proto
from .runtime import StepOutput, StepRuntime, StepState, resolve_providers

log = logging.getLogger(__name__)

ENCODER_FORMAT = "synthsleep-encoder"
TEMPORAL_FORMAT = "synthsleep-temporal"
SPLIT_SCHEMA_VERSION = 4  # 2: the temporal graph takes ``present``; 3: and ``side``; 4: side with context
ENCODER_INPUTS = ("x", "present")
ENCODER_OUTPUTS = ("embedding",)
TEMPORAL_INPUTS = ("embedding", "present", "conv_state", "ssm_state", "side")
#: epochs per encoder call offline (memory: 64 x 8 x 3000 float32 = 6 MB of input)
DEFAULT_BATCH = 64


def split_paths(step_path: str | Path) -> tuple[Path, Path]:
    """``model.onnx`` -> (``model.encoder.onnx``, ``model.temporal.onnx``)."""
    p = Path(step_path)
    return (p.with_name(p.stem + ".encoder" + p.suffix), p.with_name(p.stem + ".temporal" + p.suffix))


def _sidecar_meta(path: Path, fmt: str, step_hash: str) -> tuple[bytes, dict[str, Any]]:
    """Read a sidecar; check format, schema, own content hash and that it belongs to the step
    artifact ``step_hash``. Returns (file bytes, parsed metadata). Raises ArtifactError."""
    data = path.read_bytes()
    proto = load_proto(data)
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("format") != fmt:
        raise ArtifactError(f"{path}: metadata format {meta.get('format')!r}, expected {fmt!r}")
    if meta.get("schema_version") != str(SPLIT_SCHEMA_VERSION):
        raise ArtifactError(f"{path}: schema_version {meta.get('schema_version')!r} unsupported")
    if meta.get("step_hash") != step_hash:
        raise ArtifactError(f"{path}: cut from step artifact {meta.get('step_hash')}, not {step_hash} (stale)")
    if compute_content_hash(proto) != meta.get("content_hash"):
        raise ArtifactError(f"{path}: content hash mismatch (the file was modified after export)")
    parsed = {k: json.loads(meta[k]) for k in ("inputs", "outputs") if k in meta}
    return data, parsed


def _session(data: bytes, path: Path, threads: int, providers: Sequence[str]) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(data, opts, providers=list(providers))
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
        raise ArtifactError(f"ONNX Runtime cannot load {path}: {e}") from None


class SplitRuntime:
    """Encoder (batched, stateless) + temporal step sessions of one step artifact.

    Args:
        step: the loaded step artifact (metadata, input checks, hash).
        threads: encoder batches run concurrently on this many threads, each call on one ONNX
            Runtime thread (``InferenceSession.run`` is thread-safe and releases the GIL). Exact:
            every batch is computed as on one thread. It scales better than ORT's intra-op
            threads, which split each small convolution (8-h night, 2 cores: 1.19x faster with 2
            intra-op threads; ``benchmarks/bench_throughput.py``). The temporal session uses 1.
        providers: as for :class:`StepRuntime`.

    Raises:
        FileNotFoundError: a sidecar is missing; ArtifactError: unreadable, foreign or stale.
    """

    def __init__(self, step: StepRuntime, threads: int = 1, providers: str | Sequence[str] = "auto") -> None:
        self.step_runtime = step
        self.encoder_path, self.temporal_path = split_paths(step.path)
        wanted = resolve_providers(providers)
        enc, self.encoder_io = _sidecar_meta(self.encoder_path, ENCODER_FORMAT, step.model_hash)
        tmp, self.temporal_io = _sidecar_meta(self.temporal_path, TEMPORAL_FORMAT, step.model_hash)
        self.threads = max(1, int(threads))
        self.encoder = _session(enc, self.encoder_path, 1, wanted)
        self.temporal = _session(tmp, self.temporal_path, 1, wanted)
        got_in = tuple(i.name for i in self.encoder.get_inputs())
        if got_in != ENCODER_INPUTS:
            raise ArtifactError(f"{self.encoder_path}: inputs {list(got_in)}, expected {list(ENCODER_INPUTS)}")
        got_in = tuple(i.name for i in self.temporal.get_inputs())
        if got_in != TEMPORAL_INPUTS:
            raise ArtifactError(f"{self.temporal_path}: inputs {list(got_in)}, expected {list(TEMPORAL_INPUTS)}")
        self._outputs = [o.name for o in self.temporal.get_outputs()]
        log.info("split artifact of %s: encoder batches on %d thread(s), temporal step 1 thread",
                 step.info.short_hash, self.threads)

    @property
    def model_hash(self) -> str:
        """The step artifact's content hash (what events name)."""
        return self.step_runtime.model_hash

    def encode(self, x: Any, present: Any, batch: int = DEFAULT_BATCH) -> np.ndarray:
        """Fused embeddings of N epochs: x float32 [N, M, 3000], present bool [N, M] -> float32
        [N, D], computed ``batch`` epochs per call (results do not depend on ``batch`` beyond
        float rounding). Inputs are checked like :meth:`StepRuntime.step`'s."""
        x, present = self.step_runtime.check_inputs(x, present)
        starts = range(0, x.shape[0], max(1, int(batch)))

        def run(i: int) -> np.ndarray:
            return self.encoder.run(None, {"x": x[i:i + batch], "present": present[i:i + batch]})[0]

        if self.threads > 1 and len(starts) > 1:
            with ThreadPoolExecutor(min(self.threads, len(starts))) as pool:
                parts = list(pool.map(run, starts))
        else:
            parts = [run(i) for i in starts]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def step(self, embedding: np.ndarray, present: np.ndarray, state: StepState,
             side: np.ndarray | None = None) -> tuple[StepOutput, StepState]:
        """One temporal step for B beds: embedding float32 [B, D] (rows of :meth:`encode`), the
        present bool [B, M] they were encoded with, and their EEG side features [B, 7] (None:
        unknown; see ``StepRuntime.step``). The state's side context moves as in ``StepRuntime.step``."""
        e = np.ascontiguousarray(embedding, dtype=np.float32)
        pr = np.ascontiguousarray(present, dtype=bool)
        if e.ndim == 1:
            e, pr = e[None], pr.reshape(1, -1)
        if pr.shape != (e.shape[0], len(self.step_runtime.modalities)):
            raise ValueError(f"present must be bool [{e.shape[0]}, {len(self.step_runtime.modalities)}], "
                             f"got {pr.shape}")
        self.step_runtime.check_state(state, e.shape[0])
        side, context = self.step_runtime.side_input(side, pr, state.side_context)
        stage, apnea, hyp, conv, ssm = self.temporal.run(self._outputs, {
            "embedding": e, "present": pr, "conv_state": state.conv_state.astype(np.float32, copy=False),
            "ssm_state": state.ssm_state.astype(np.float32, copy=False),
            "side": side})
        return StepOutput(stage, apnea, hyp), StepState(conv, ssm, context)


def load_split(step: StepRuntime, threads: int = 1, providers: str | Sequence[str] = "auto"
               ) -> SplitRuntime | None:
    """The split graphs of ``step`` or None (logged: missing sidecars, stale or unreadable ones);
    the caller then scores with the step graph, which gives the same numbers, slower."""
    enc, tmp = split_paths(step.path)
    if not enc.is_file() or not tmp.is_file():
        log.info("%s has no split encoder/temporal graphs (exported before they existed?): "
                 "scoring epoch by epoch with the step graph", step.path)
        return None
    try:
        return SplitRuntime(step, threads=threads, providers=providers)
    except (ArtifactError, OSError, ValueError) as e:
        log.warning("split graphs of %s not used (%s): scoring epoch by epoch with the step graph",
                    step.path, e)
        return None
