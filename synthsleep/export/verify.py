"""Check an artifact: ``onnx.checker``, metadata and content hash, then ONNX Runtime vs PyTorch
over a sequence of steps with the state carried (random epochs, and real ones from an EDF).

CLI: ``synthsleep verify model.onnx [--checkpoint runs/ft/model] [--edf night.edf]``
(:func:`add_arguments` / :func:`run`). Without a checkpoint only the artifact itself is checked
(checker, hash, finite outputs, probabilities summing to 1). torch is imported only when a
checkpoint or model is compared.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthsleep.export.artifact import ArtifactError, check_artifact
from synthsleep.export.runtime import StepRuntime
from synthsleep.psg.side_features import N_EPOCH_SIDE

log = logging.getLogger(__name__)

OUTPUTS = ("stage_prob", "apnea_prob", "hypopnea_prob", "conv_state_out", "ssm_state_out")
#: default tolerance: largest absolute difference allowed on any output over the whole sequence
DEFAULT_ATOL = 1e-4


@dataclass
class VerifyReport:
    """Result of :func:`verify_artifact`; ``max_abs_diff[output]`` over every step and bed."""

    path: Path
    content_hash: str
    steps: int
    batch: int
    atol: float
    compared: bool = False  # a PyTorch model was compared
    reference: Path | None = None  # or another artifact (e.g. the fp32 one of an int8 variant)
    stage_agreement: float | None = None  # fraction of (step, bed) with the same most likely stage
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    sanity_errors: list[str] = field(default_factory=list)
    ort_step_seconds: float | None = None  # median per step, one thread
    torch_step_seconds: float | None = None
    sources: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.sanity_errors and all(v <= self.atol for v in self.max_abs_diff.values())

    def summary(self) -> str:
        lines = [f"artifact {self.path}  {self.content_hash}",
                 "  onnx.checker + metadata + content hash: ok",
                 f"  {self.steps} steps x batch {self.batch}, state carried; inputs: {', '.join(self.sources)}"]
        for err in self.sanity_errors:
            lines.append(f"  FAIL {err}")
        if self.compared:
            other = f"reference {self.reference}" if self.reference else "PyTorch"
            lines.append(f"  ORT vs {other}, largest absolute difference (tolerance {self.atol:g}):")
            for k, v in self.max_abs_diff.items():
                lines.append(f"    {k:<15} {v:.3e}  {'ok' if v <= self.atol else 'FAIL'}")
            if self.stage_agreement is not None:
                lines.append(f"    most likely stage identical in {100 * self.stage_agreement:.1f} % of steps")
        else:
            lines.append("  (no checkpoint given: ORT vs PyTorch parity not checked)")
        if self.ort_step_seconds is not None:
            t = f"  median step latency (1 thread, batch {self.batch}): ORT {self.ort_step_seconds * 1e3:.2f} ms"
            if self.torch_step_seconds is not None:
                t += f", PyTorch eager {self.torch_step_seconds * 1e3:.2f} ms"
            lines.append(t)
        lines.append("RESULT: " + ("ok" if self.ok else "FAILED"))
        return "\n".join(lines)


#: typical EEG side features of an epoch (``psg.side_features.EPOCH_SIDE_NAMES``: ln uV^2/Hz of
#: 0.5-2 ... 16-30 Hz, then the ln uV scale), from synthetic nights
TYPICAL_SIDE = np.array([5.0, 3.8, 2.2, 1.1, 0.7, -1.6, 2.8])


def random_epochs(n_modalities: int, steps: int, batch: int, seed: int = 0,
                  n_samples: int = 3000) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``steps`` random (x float32 [B, M, n_samples], present bool [B, M], side float32 [B, 7]);
    >= 1 modality present; every other step has EEG alone (row 0) in bed 0, so an EEG-alone
    readout is exercised; side around real EEG side features (``TYPICAL_SIDE``: slow waves
    strongest, beta weakest), so an int8 variant calibrated on real epochs is compared inside
    the ranges it was calibrated on."""
    rng = np.random.default_rng(seed)
    for k in range(steps):
        x = rng.standard_normal((batch, n_modalities, n_samples)).astype(np.float32)
        present = rng.random((batch, n_modalities)) > 0.2
        present[np.arange(batch), rng.integers(0, n_modalities, batch)] = True
        if k % 2:
            present[0] = False
            present[0, 0] = True
        x[~present] = 0.0
        yield x, present, (TYPICAL_SIDE + 0.5 * rng.standard_normal((batch, N_EPOCH_SIDE))).astype(np.float32)


def edf_epochs(path: str | Path, rt: StepRuntime, steps: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The first ``steps`` preprocessed epochs of an EDF, as batch-1 model inputs."""
    from synthsleep.psg.montage import resolve_channels
    from synthsleep.psg.preprocess import PreprocessParams, iter_recording_epochs
    from synthsleep.psg.recording import open_recording

    rec = open_recording(path)
    params = PreprocessParams.from_dict(rt.preprocess_params)
    cmap = resolve_channels([c.label for c in rec.channels])
    out = []
    for ep in iter_recording_epochs(rec, cmap, params):
        out.append(rt.inputs_from_epochs([ep]))
        if len(out) >= steps:
            break
    if not out:
        raise ValueError(f"{path}: no complete 30-s epoch to verify with")
    return out


def _run_sequence(rt: StepRuntime, model: Any, seq: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                  report: VerifyReport, ref_rt: StepRuntime | None = None) -> None:
    batch = seq[0][0].shape[0]
    state = rt.new_state(batch)
    ref_state = ref_rt.new_state(batch) if ref_rt is not None else None
    same, total = 0, 0
    t_ort: list[float] = []
    t_torch: list[float] = []
    if model is not None:
        import torch

        tstate = tuple(torch.from_numpy(a.copy()) for a in (state.conv_state, state.ssm_state))
    for x, present, side in seq:
        graph_side, _ = rt.side_input(side, present, state.side_context)  # what rt.step feeds its graph
        t0 = time.perf_counter()
        out, state = rt.step(x, present, state, side)
        t_ort.append(time.perf_counter() - t0)
        got = (out.stage_prob, out.apnea_prob, out.hypopnea_prob, state.conv_state, state.ssm_state)
        for name, arr in zip(OUTPUTS, got):
            if not np.isfinite(arr).all():
                report.sanity_errors.append(f"{name} holds NaN/Inf")
        sums = out.stage_prob.sum(axis=-1)
        if not np.allclose(sums, 1.0, atol=1e-4):
            report.sanity_errors.append(f"stage_prob rows sum to {sums.tolist()}, not 1")
        if ref_rt is not None:  # another artifact, its own state carried
            ref_out, ref_state = ref_rt.step(x, present, ref_state, side)
            ref = (ref_out.stage_prob, ref_out.apnea_prob, ref_out.hypopnea_prob, ref_state.conv_state,
                   ref_state.ssm_state)
            for name, a, b in zip(OUTPUTS, got, ref):
                report.max_abs_diff[name] = max(report.max_abs_diff.get(name, 0.0), float(np.abs(a - b).max()))
            same += int((out.stage_prob.argmax(-1) == ref_out.stage_prob.argmax(-1)).sum())
            total += batch
            report.stage_agreement = same / total if report.stage_agreement is None else \
                min(report.stage_agreement, same / total)
        if model is None:
            continue
        with torch.no_grad():
            t0 = time.perf_counter()
            ref = model.step(torch.from_numpy(x), torch.from_numpy(present), *tstate, torch.from_numpy(graph_side))
            t_torch.append(time.perf_counter() - t0)
        tstate = (ref[3], ref[4])  # each side carries its own state
        for name, a, b in zip(OUTPUTS, got, ref):
            diff = float(np.abs(a - b.numpy()).max())
            report.max_abs_diff[name] = max(report.max_abs_diff.get(name, 0.0), diff)
    if len(t_ort) > 1 and report.ort_step_seconds is None:  # latency of the random batch run
        report.ort_step_seconds = statistics.median(t_ort[1:])
    if len(t_torch) > 1 and report.torch_step_seconds is None:
        report.torch_step_seconds = statistics.median(t_torch[1:])


def verify_artifact(path: str | Path, checkpoint: str | Path | None = None, model: Any = None,
                    steps: int = 20, batch: int = 2, seed: int = 0, edf: str | Path | None = None,
                    atol: float = DEFAULT_ATOL, reference: str | Path | None = None) -> VerifyReport:
    """Check ``path`` and compare it with a PyTorch model over ``steps`` steps, state carried.

    Args:
        path: the artifact. checkpoint / model: the PyTorch side (either; none = no parity check).
        reference: instead, another artifact of the same model to compare with through ONNX
            Runtime (an int8 variant against its fp32 artifact).
        steps, batch, seed: the random sequence. edf: also run the first ``steps`` real epochs.
        atol: tolerance on the largest absolute difference of every output.

    Raises:
        ArtifactError: checker, metadata or hash failure; ValueError: model/artifact mismatch.
    """
    info = check_artifact(path)
    if model is None and checkpoint is not None:
        from synthsleep.model import load_model

        model, _ = load_model(checkpoint)
    if model is not None:
        import torch

        torch.set_num_threads(1)
        model = model.to("cpu").eval()
        if tuple(model.cfg.modalities) != info.modalities:
            raise ValueError(f"checkpoint reads {list(model.cfg.modalities)} but {path} was exported for "
                             f"{list(info.modalities)}")
    if model is not None and reference is not None:
        raise ValueError("compare with a checkpoint or with a reference artifact, not both")
    rt = StepRuntime(path, providers="cpu", threads=1)
    ref_rt = None
    if reference is not None:
        ref_rt = StepRuntime(reference, providers="cpu", threads=1)
        if ref_rt.modalities != rt.modalities:
            raise ValueError(f"{reference} reads {list(ref_rt.modalities)}, {path} {list(rt.modalities)}")
    report = VerifyReport(Path(path), info.content_hash, steps, batch, atol,
                          compared=model is not None or ref_rt is not None,
                          reference=Path(reference) if reference is not None else None)
    seq = list(random_epochs(len(rt.modalities), steps, batch, seed, int(info.inputs["x"]["shape"][-1])))
    report.sources.append("random")
    _run_sequence(rt, model, seq, report, ref_rt)
    if edf is not None:
        report.sources.append(f"{edf} (batch 1)")
        _run_sequence(rt, model, edf_epochs(edf, rt, steps), report, ref_rt)
    return report


# ---------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``synthsleep verify model.onnx [--checkpoint CKPT] [--edf night.edf]``."""
    parser.add_argument("artifact", type=Path, help="the .onnx step artifact")
    parser.add_argument("--checkpoint", default=None,
                        help="PyTorch checkpoint (save_model pair) to compare with; omit to check the artifact only")
    parser.add_argument("--reference", type=Path, default=None,
                        help="another artifact to compare with instead (e.g. the fp32 one of an int8 variant)")
    parser.add_argument("--edf", type=Path, default=None, help="also compare on the first epochs of this EDF")
    parser.add_argument("--steps", type=int, default=20, help="steps with the state carried (default 20)")
    parser.add_argument("--batch", type=int, default=2, help="beds per step (default 2)")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                        help="largest absolute difference allowed (default %(default)g)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    if args.steps < 1 or args.batch < 1:
        raise ValueError("--steps and --batch must be >= 1")
    try:
        report = verify_artifact(args.artifact, checkpoint=args.checkpoint, steps=args.steps,
                                 batch=args.batch, seed=args.seed, edf=args.edf, atol=args.atol,
                                 reference=args.reference)
    except ArtifactError as e:
        print(f"synthsleep verify: {e}", file=sys.stderr)
        print("RESULT: FAILED")
        return 1
    print(report.summary())
    return 0 if report.ok else 1


__all__ = ["VerifyReport", "verify_artifact", "random_epochs", "edf_epochs", "add_arguments", "run"]
