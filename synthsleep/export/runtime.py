"""ONNX Runtime session for the step artifact: what everything that infers uses (no torch!).

    rt = StepRuntime("model.onnx")                 # CUDA when usable, else CPU; 1 thread
    state = rt.new_state(batch=n_beds)
    x, present, side = rt.inputs_from_epochs(epochs)  # from psg Epoch objects, one per bed
    out, state = rt.step(x, present, state, side)  # x float32 [B, M, 3000], present bool [B, M]
    out.stage_prob [B, 5], out.apnea_prob [B], out.hypopnea_prob [B]

The recurrent state is explicit (:class:`StepState`: the Mamba's conv/ssm states and the EEG
side features' moving averages, numpy arrays); the monitor saves it without pickle
(``bed_state``: ``np.savez``, loaded with ``allow_pickle=False``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from synthsleep.export.artifact import ArtifactError, ArtifactInfo, info_from_proto, load_proto
from synthsleep.psg.epoch import stack_for_model
from synthsleep.psg.side_features import (
    N_EPOCH_SIDE,
    N_SIDE,
    SIDE_CONTEXT_STATE,
    new_side_context,
    side_context_step,
    side_features_for_rows,
)

log = logging.getLogger(__name__)

_PROVIDER_ALIASES = {"cpu": ["CPUExecutionProvider"],
                     "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


class RuntimeInputError(ValueError):
    """Inputs or state that do not fit the artifact (names the input, shape and expectation)."""


@dataclass
class StepState:
    """Recurrent state of B beds: conv_state [L, B, conv_dim, d_conv], ssm_state [L, B, H, P, N]
    (float32; the batch axis is 1), and side_context float64 [B, SIDE_CONTEXT_STATE] (the moving
    averages of the EEG side features, ``psg.side_features.side_context_step``; kept here, outside
    the graph, because the features are computed here too)."""

    conv_state: np.ndarray
    ssm_state: np.ndarray
    side_context: np.ndarray

    @property
    def batch(self) -> int:
        return int(self.conv_state.shape[1])

    def take(self, beds: Sequence[int] | int) -> StepState:
        """The state of some beds (an int keeps the batch axis with size 1)."""
        idx = [beds] if isinstance(beds, int) else list(beds)
        return StepState(self.conv_state[:, idx].copy(), self.ssm_state[:, idx].copy(),
                         self.side_context[idx].copy())

    @staticmethod
    def concatenate(states: Sequence[StepState]) -> StepState:
        """Stack beds' states along the batch axis (to step several beds in one call)."""
        return StepState(np.concatenate([s.conv_state for s in states], axis=1),
                         np.concatenate([s.ssm_state for s in states], axis=1),
                         np.concatenate([s.side_context for s in states], axis=0))


@dataclass
class StepOutput:
    """Outputs of one step for B beds: stage_prob [B, 5], apnea_prob [B], hypopnea_prob [B]."""

    stage_prob: np.ndarray
    apnea_prob: np.ndarray
    hypopnea_prob: np.ndarray

    @property
    def stage(self) -> np.ndarray:
        """Most probable stage code per bed, int64 [B]."""
        return self.stage_prob.argmax(axis=-1)


def _has_nvidia_gpu() -> bool:
    if sys.platform.startswith("linux"):
        return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")
    return sys.platform == "win32"


def resolve_providers(providers: str | Sequence[str] = "auto") -> list[str]:
    """``auto``: CUDA then CPU when ORT has the CUDA provider and a GPU is present, else CPU;
    ``cpu`` / ``cuda``; or an explicit list of ORT provider names."""
    available = ort.get_available_providers()
    if isinstance(providers, str):
        key = providers.lower()
        if key == "auto":
            if "CUDAExecutionProvider" in available and _has_nvidia_gpu():
                return ["CUDAExecutionProvider", "CPUExecutionProvider"]
            return ["CPUExecutionProvider"]
        if key not in _PROVIDER_ALIASES:
            raise ValueError(f"providers {providers!r} unknown: use auto, cpu, cuda or a list of {available}")
        wanted = _PROVIDER_ALIASES[key]
    else:
        wanted = list(providers)
    lacking = [p for p in wanted if p not in available]
    if lacking:
        raise ValueError(f"ONNX Runtime providers {lacking} not available here (available: {available})")
    return wanted


class StepRuntime:
    """One ONNX Runtime session of the step artifact.

    Args:
        path: the ``.onnx`` artifact (metadata and content hash are checked on load).
        providers: ``auto`` (CUDA when usable, else CPU), ``cpu``, ``cuda`` or ORT provider names.
        threads: intra-op threads (1 is fastest per bed for small models and leaves cores to
            the other beds).
        verify_hash: refuse an artifact whose content hash does not match.

    Raises:
        FileNotFoundError, ArtifactError: missing, unreadable, foreign or tampered artifact.
    """

    def __init__(self, path: str | Path, providers: str | Sequence[str] = "auto", threads: int = 1,
                 verify_hash: bool = True) -> None:
        self.path = Path(path)
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"artifact {self.path} not found") from None
        except IsADirectoryError:
            raise ArtifactError(f"artifact {self.path} is a directory, not an .onnx file") from None
        self.info: ArtifactInfo = info_from_proto(load_proto(data), self.path, verify_hash)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        wanted = resolve_providers(providers)
        try:
            self.session = ort.InferenceSession(data, opts, providers=wanted)
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
            raise ArtifactError(f"ONNX Runtime cannot load {self.path}: {e}") from None
        self.providers = self.session.get_providers()
        if wanted[0] != self.providers[0]:
            log.warning("%s: asked for %s, running on %s", self.path, wanted[0], self.providers[0])
        self._states = {s.name: s for s in self.info.states}
        for name in ("conv_state", "ssm_state"):
            if name not in self._states:
                raise ArtifactError(f"{self.path}: metadata has no state {name!r}")
        self._n_samples = int(self.info.inputs["x"]["shape"][-1])
        log.info("loaded %s (%s) on %s, %d thread(s)", self.path, self.info.short_hash,
                 self.providers[0], threads)

    # ------------------------------------------------------------------ metadata
    @property
    def model_hash(self) -> str:
        """Content hash, ``sha256:<hex>``."""
        return self.info.content_hash

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.info.modalities

    @property
    def preprocess_params(self) -> dict[str, Any]:
        """``PreprocessParams.to_dict()`` of training (``PreprocessParams.from_dict`` rebuilds it)."""
        return dict(self.info.preprocess)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Stage names in output order."""
        return self.info.stage_names

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.info.thresholds)

    # ------------------------------------------------------------------ inference
    def new_state(self, batch: int = 1) -> StepState:
        """Zero state for ``batch`` beds (the start of a night)."""
        if batch < 1:
            raise RuntimeInputError(f"batch must be >= 1, got {batch}")
        c, s = self._states["conv_state"], self._states["ssm_state"]
        return StepState(np.zeros(c.shape_for(batch), np.float32), np.zeros(s.shape_for(batch), np.float32),
                         new_side_context(batch))

    def check_inputs(self, x: Any, present: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validate and normalise (x [B, M, 3000] float32, present bool [B, M]); [M, 3000] and
        [M] are one bed. Absent rows are zeroed. Raises RuntimeInputError naming the problem."""
        m = len(self.modalities)
        x = np.asarray(x)
        if x.ndim == 2:  # one bed
            x = x[None]
        if x.ndim != 3 or x.shape[1:] != (m, self._n_samples):
            raise RuntimeInputError(f"x has shape {x.shape}; the artifact expects [B, {m}, {self._n_samples}] "
                                    f"(modalities {list(self.modalities)})")
        if x.dtype != np.float32:
            if not np.issubdtype(x.dtype, np.floating):
                raise RuntimeInputError(f"x has dtype {x.dtype}; expected float32")
            x = x.astype(np.float32)
        present = np.asarray(present)
        if present.ndim == 1:
            present = present[None]
        if present.shape != x.shape[:2]:
            raise RuntimeInputError(f"present has shape {present.shape}; expected {x.shape[:2]}")
        if present.dtype != np.bool_:
            if not np.isin(present, (0, 1)).all():
                raise RuntimeInputError("present must be bool (or 0/1)")
            present = present.astype(np.bool_)
        bad = ~np.isfinite(x).all(axis=-1) & present
        if bad.any():
            b, i = map(int, np.argwhere(bad)[0])
            raise RuntimeInputError(f"x[{b}] modality {self.modalities[i]!r} is present but holds NaN/Inf")
        if not present.all():  # absent rows are masked explicitly, whatever they hold
            x = np.where(present[:, :, None], x, np.float32(0.0))
        return np.ascontiguousarray(x), np.ascontiguousarray(present)

    def check_state(self, state: StepState, batch: int) -> None:
        """RuntimeInputError unless ``state`` has the artifact's state shapes for ``batch`` beds."""
        for name, arr in (("conv_state", state.conv_state), ("ssm_state", state.ssm_state)):
            want = self._states[name].shape_for(batch)
            if tuple(arr.shape) != want:
                raise RuntimeInputError(f"{name} has shape {tuple(arr.shape)}; expected {want} "
                                        f"for a batch of {batch}")
        if state.side_context.shape != (batch, SIDE_CONTEXT_STATE):
            raise RuntimeInputError(f"side_context has shape {state.side_context.shape}; expected "
                                    f"{(batch, SIDE_CONTEXT_STATE)} for a batch of {batch}")

    def _check(self, x: Any, present: Any, state: StepState) -> tuple[np.ndarray, np.ndarray]:
        x, present = self.check_inputs(x, present)
        self.check_state(state, x.shape[0])
        return x, present

    def check_side(self, side: Any, batch: int, width: int = N_SIDE) -> np.ndarray:
        """Side features float32 [batch, width] (``psg.side_features``; the graph's ``side`` input
        by default, an epoch's own ``N_EPOCH_SIDE`` for ``step``); None: unknown for every bed
        (all NaN: the shared stage head reads the epochs)."""
        if side is None:
            return np.full((batch, width), np.nan, np.float32)
        side = np.asarray(side, np.float32)
        if side.ndim == 1:
            side = side[None]
        if side.shape != (batch, width):
            raise RuntimeInputError(f"side has shape {side.shape}; expected {(batch, width)}")
        return np.ascontiguousarray(side)

    def side_input(self, side: Any, present: np.ndarray, context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The graph's ``side`` input for B beds' epochs and their next side context: (float32
        [B, N_SIDE], float64 [B, SIDE_CONTEXT_STATE]) from their epoch features [B, N_EPOCH_SIDE]
        (None: unknown), present bool [B, M] and ``StepState.side_context`` (not modified)."""
        eeg = (present[:, self.modalities.index("eeg")] if "eeg" in self.modalities
               else np.zeros(present.shape[0], bool))
        return side_context_step(self.check_side(side, present.shape[0], N_EPOCH_SIDE), eeg, context)

    def step(self, x: Any, present: Any, state: StepState, side: Any = None) -> tuple[StepOutput, StepState]:
        """Score one epoch for each of B beds.

        Args:
            x: float32 [B, M, 3000] preprocessed epochs (rows in ``modalities`` order; [M, 3000]
                for one bed). Rows of absent modalities are ignored (use zeros).
            present: bool [B, M] (0/1 accepted).
            state: :class:`StepState` of the same B beds.
            side: float32 [B, 7] EEG side features (``inputs_from_epochs`` makes them from the
                epochs' log scales); the stage readouts read them with their moving averages,
                which the state carries (``side_input``). None (or a NaN row): unknown, that bed's
                epoch is read by the shared stage head and its averages stay as they were.

        Returns:
            (StepOutput, new StepState); the input state is not modified.
        """
        x, present = self._check(x, present, state)
        side, context = self.side_input(side, present, state.side_context)
        outs = self.session.run(None, {"x": x, "present": present,
                                       "conv_state": state.conv_state.astype(np.float32, copy=False),
                                       "ssm_state": state.ssm_state.astype(np.float32, copy=False),
                                       "side": side})
        stage, apnea, hyp, conv, ssm = outs
        return StepOutput(stage, apnea, hyp), StepState(conv, ssm, context)

    def inputs_from_epochs(self, epochs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stack ``psg.epoch.Epoch`` objects (one per bed, or consecutive ones of a night) into
        (x [B, M, 3000], present [B, M], side [B, 7]) in this model's row order
        (``psg.epoch.stack_for_model``: rows picked by modality name; one the epoch lacks is
        absent; side from the EEG row and its log scale, ``psg.side_features``)."""
        x, present, log_scale = stack_for_model(epochs, self.modalities)
        return x, present, side_features_for_rows(x, present, log_scale, self.modalities)
