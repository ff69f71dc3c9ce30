"""Evaluation on a split: metrics, JSON report, plots (``synthsleep evaluate``).

The core, ``evaluate_predictions(predictions, truth)``, needs no model: per-night predicted
probabilities against the shards' labels → staging metrics (accuracy, macro-F1, kappa, per-class
F1, confusion matrix), apnea/hypopnea detection (F1, AUROC, AUPRC) and AHI agreement (MAE,
Pearson r). The thin model-driving part runs a checkpoint (PyTorch) or an ONNX artifact over
whole nights twice:

- ``carried``: the state carried across the whole night (how the monitor runs);
- ``windows``: non-overlapping 20-epoch windows, each from a zero state (the original
  SynthSleepNet evaluation), for comparison.

Nights come from ``shards.iter_nights`` (the reader training uses); plots are in ``plots``.
Why one module (~420 lines): the metrics core, the two predictors and the CLI table share the
report's format; each part alone is small.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..psg.epoch import STAGES
from ..psg.side_features import add_side_context
from ..psg.stage_filter import filter_night
from .metrics import ahi_agreement, binary_metrics, jsonable, predicted_ahi, staging_metrics, true_ahi
from .plots import plot_confusion, plot_hypnogram

if TYPE_CHECKING:
    from ..export.runtime import StepState

log = logging.getLogger(__name__)

REPORT_VERSION = 1


@dataclass
class NightTruth:
    """Scored truth of one night: stage/apnea/hypopnea int [n] (-1 unknown), ``events``: scored
    events (dicts with ``type``, ``onset`` s, ``duration`` s) for the true AHI."""

    night: str
    stage: np.ndarray
    apnea: np.ndarray
    hypopnea: np.ndarray
    events: list[dict[str, Any]] = field(default_factory=list)
    subject: str = ""


@dataclass
class NightPredictions:
    """Model output for one night: stage_prob float [n, 5], apnea_prob / hypopnea_prob float [n].
    ``window``: the model ran over windows of this many epochs, each from a zero state (None: the
    whole night, state carried)."""

    night: str
    stage_prob: np.ndarray
    apnea_prob: np.ndarray
    hypopnea_prob: np.ndarray
    window: int | None = None

    @cached_property
    def stage(self) -> np.ndarray:
        """The stage per epoch as the monitor picks it: after the causal stage filter
        (``psg.stage_filter``), run over the whole night or each window from its start."""
        return filter_night(self.stage_prob, self.window).argmax(-1)


def _by_night(items: Iterable[Any] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(items, Mapping):
        return dict(items)
    return {it.night: it for it in items}


def evaluate_predictions(predictions: Iterable[NightPredictions] | Mapping[str, NightPredictions],
                         truth: Iterable[NightTruth] | Mapping[str, NightTruth],
                         threshold: float | Mapping[str, float] = 0.5) -> dict[str, Any]:
    """Metrics of ``predictions`` against ``truth`` (matched by night id).

    ``threshold``: probability at or above which an epoch counts as apnea / hypopnea (one value,
    or ``{"apnea": a, "hypopnea": h}``); used for F1 and the predicted AHI.

    Returns a JSON-able dict: ``nights``, ``epochs``, ``staging`` (see
    ``metrics.staging_metrics``), ``apnea`` and ``hypopnea`` (``metrics.binary_metrics``),
    ``ahi`` (MAE, Pearson r, and ``per_night`` true/predicted AHI). Undefined values are NaN
    here (``write_report`` turns them into null).

    Raises:
        ValueError: a night has no truth, or lengths differ (message names the night).
    """
    preds, truths = _by_night(predictions), _by_night(truth)
    thr = _thresholds(threshold)
    missing = [n for n in preds if n not in truths]
    if missing:
        raise ValueError(f"no truth for predicted nights {missing[:5]}")
    st_t, st_p, ap_t, ap_p, hy_t, hy_p = ([] for _ in range(6))
    per_night = []
    for name, p in preds.items():
        t = truths[name]
        n = len(t.stage)
        shapes = (p.stage_prob.shape, p.apnea_prob.shape, p.hypopnea_prob.shape)
        if shapes != ((n, len(STAGES)), (n,), (n,)):
            raise ValueError(f"night {name}: predictions have shapes {shapes} but the night has {n} epochs "
                             f"(want stage_prob [{n}, {len(STAGES)}], apnea/hypopnea_prob [{n}])")
        st_t.append(np.asarray(t.stage))
        st_p.append(p.stage)
        ap_t.append(np.asarray(t.apnea))
        ap_p.append(np.asarray(p.apnea_prob))
        hy_t.append(np.asarray(t.hypopnea))
        hy_p.append(np.asarray(p.hypopnea_prob))
        ahi_t = true_ahi(t.events, t.stage) if np.any(np.asarray(t.stage) >= 0) else math.nan
        ahi_p = predicted_ahi(p.apnea_prob >= thr["apnea"], p.hypopnea_prob >= thr["hypopnea"], p.stage)
        ahi_p = math.nan if ahi_p is None else ahi_p
        st = staging_metrics(t.stage, p.stage)
        per_night.append({"night": name, "subject": t.subject, "epochs": n, "accuracy": st["accuracy"],
                          "kappa": st["kappa"], "ahi_true": ahi_t, "ahi_pred": ahi_p})
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))  # noqa: E731
    report: dict[str, Any] = {
        "nights": len(preds),
        "epochs": int(sum(len(x) for x in st_t)),
        "staging": staging_metrics(cat(st_t).astype(np.int64), cat(st_p).astype(np.int64)),
        "apnea": binary_metrics(cat(ap_t), cat(ap_p), thr["apnea"]),
        "hypopnea": binary_metrics(cat(hy_t), cat(hy_p), thr["hypopnea"]),
    }
    report["ahi"] = {**ahi_agreement([r["ahi_true"] for r in per_night], [r["ahi_pred"] for r in per_night]),
                     "per_night": per_night}
    return report


def _thresholds(threshold: float | Mapping[str, float]) -> dict[str, float]:
    if isinstance(threshold, Mapping):
        out = {k: float(threshold.get(k, 0.5)) for k in ("apnea", "hypopnea")}
    else:
        out = {"apnea": float(threshold), "hypopnea": float(threshold)}
    for k, v in out.items():
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{k} threshold must be a probability in [0, 1], got {v}")
    return out


# ----------------------------------------------------------------------------------------------
# The report (its plots: .plots)
# ----------------------------------------------------------------------------------------------


def write_report(report: Mapping[str, Any], out_dir: Path | str, name: str = "report.json") -> Path:
    """Write ``report`` as JSON (NaN → null) into ``out_dir``; returns the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(jsonable(dict(report)), indent=1) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------
# Driving a model (thin): PyTorch checkpoint or ONNX artifact
# ----------------------------------------------------------------------------------------------


class Predictor(Protocol):
    """Runs a model over one night. x float32 [n, M, 3000], present bool [n, M], side float32
    [n, 7] (each epoch's EEG side features, ``psg.side_features``; NaN rows: unknown; the
    predictor adds their context, carried like the state) →
    (stage_prob [n, 5], apnea_prob [n], hypopnea_prob [n]). ``thresholds``: the model's own
    apnea/hypopnea decision thresholds (empty: 0.5)."""

    modalities: tuple[str, ...]
    thresholds: dict[str, float]

    def carried(self, x: np.ndarray, present: np.ndarray, side: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def windows(self, x: np.ndarray, present: np.ndarray, side: np.ndarray, window: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def _window_slices(n: int, window: int) -> list[slice]:
    return [slice(a, min(a + window, n)) for a in range(0, n, window)]


class TorchPredictor:
    """A ``SleepModel`` checkpoint (``load_model``): ``forward`` over chunks with the state carried,
    and over 20-epoch windows batched together from a zero state."""

    def __init__(self, path: Path | str, chunk: int = 64, batch: int = 8) -> None:
        import torch

        from ..model import load_model

        self.torch = torch
        self.model, self.cfg = load_model(path)
        self.model.eval()
        self.modalities = tuple(self.cfg.modalities)
        self.thresholds: dict[str, float] = {}  # folded into the heads' biases by make_model
        self.chunk, self.batch = chunk, batch

    def _probs(self, out: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = self.torch
        return (t.softmax(out.stage_logits, -1).numpy(), t.sigmoid(out.apnea_logit).numpy(),
                t.sigmoid(out.hypopnea_logit).numpy())

    def carried(self, x: np.ndarray, present: np.ndarray, side: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = self.torch
        state = None
        parts = []
        side = add_side_context(side, present, self.modalities)
        with t.inference_mode():
            for sl in _window_slices(x.shape[0], self.chunk):
                out, state = self.model(t.from_numpy(x[None, sl]), t.from_numpy(present[None, sl]), state,
                                        t.from_numpy(side[None, sl]))
                parts.append([a[0] for a in self._probs(out)])
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]

    def windows(self, x: np.ndarray, present: np.ndarray, side: np.ndarray, window: int = 20
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = self.torch
        n = x.shape[0]
        full = n // window
        parts: list[tuple[np.ndarray, ...]] = []
        side = np.concatenate([add_side_context(side[sl], present[sl], self.modalities)  # each from zero
                               for sl in _window_slices(n, window)])
        with t.inference_mode():
            for b0 in range(0, full, self.batch):
                b1 = min(b0 + self.batch, full)
                xs = x[b0 * window:b1 * window].reshape(b1 - b0, window, *x.shape[1:])
                ps = present[b0 * window:b1 * window].reshape(b1 - b0, window, present.shape[1])
                ss = side[b0 * window:b1 * window].reshape(b1 - b0, window, side.shape[1])
                out, _ = self.model(t.from_numpy(np.ascontiguousarray(xs)), t.from_numpy(np.ascontiguousarray(ps)),
                                    None, t.from_numpy(np.ascontiguousarray(ss)))
                parts.append(tuple(a.reshape(-1, *a.shape[2:]) for a in self._probs(out)))
            if full * window < n:  # the remainder: a shorter window, also from zero
                out, _ = self.model(t.from_numpy(x[None, full * window:]), t.from_numpy(present[None, full * window:]),
                                    None, t.from_numpy(side[None, full * window:]))
                parts.append(tuple(a[0] for a in self._probs(out)))
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


class OnnxPredictor:
    """An ONNX step artifact through ``synthsleep.export.runtime.StepRuntime``: one step per
    epoch; carried = one lane all night, windows = all windows as parallel lanes from zero."""

    def __init__(self, path: Path | str) -> None:
        from ..export.runtime import StepRuntime

        self.rt = StepRuntime(str(path))
        self.modalities = self.rt.modalities
        self.thresholds = dict(self.rt.thresholds)

    def _step(self, x: np.ndarray, present: np.ndarray, side: np.ndarray, state: StepState
              ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], StepState]:
        out, state = self.rt.step(np.ascontiguousarray(x, np.float32), np.ascontiguousarray(present, bool), state,
                                  side)
        return (out.stage_prob, out.apnea_prob.reshape(-1), out.hypopnea_prob.reshape(-1)), state

    def carried(self, x: np.ndarray, present: np.ndarray, side: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        state = self.rt.new_state(1)
        res = []
        for i in range(x.shape[0]):
            r, state = self._step(x[i:i + 1], present[i:i + 1], side[i:i + 1], state)
            res.append(r)
        return tuple(np.concatenate([r[k] for r in res]) for k in range(3))  # type: ignore[return-value]

    def windows(self, x: np.ndarray, present: np.ndarray, side: np.ndarray, window: int = 20
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = x.shape[0]
        out = [np.zeros((n, len(STAGES)), np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32)]
        starts = np.arange(0, n, window)
        state = self.rt.new_state(len(starts))
        for t in range(window):
            idx = starts + t
            live = idx < n
            if not live.any():
                break
            sel = np.where(live, idx, n - 1)  # finished lanes repeat a real epoch; results ignored
            r, state = self._step(x[sel], present[sel], side[sel], state)
            for k in range(3):
                out[k][idx[live]] = r[k][live]
        return out[0], out[1], out[2]


def load_predictor(path: Path | str) -> Predictor:
    """``.onnx`` → ``OnnxPredictor``; otherwise a checkpoint (``.safetensors``/``.json``/base path,
    or a run folder holding ``model.safetensors``)."""
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        if not p.is_file():
            raise FileNotFoundError(f"ONNX artifact {p} not found")
        return OnnxPredictor(p)
    if p.is_dir():  # a run folder: its checkpoint runs/x/model.{safetensors,json}
        if (p / "model.safetensors").is_file():
            return TorchPredictor(p / "model")
        raise FileNotFoundError(f"{p} is a folder without model.safetensors; pass a checkpoint or an .onnx file")
    return TorchPredictor(p)


def run_split(predictor: Predictor, shard_dir: Path | str, split: str = "test", window: int = 20,
              max_nights: int | None = None, progress: bool = False
              ) -> tuple[list[NightTruth], list[NightPredictions], list[NightPredictions]]:
    """Run ``predictor`` over every night of ``split``: (truth, carried, windows) per night.

    Nights come from ``shards.iter_nights`` (the reader training uses), float32, one at a time.
    """
    from ..psg.side_features import side_features_for_rows
    from .shards import iter_nights, split_files

    n_nights = len(split_files(shard_dir, split))
    if not n_nights:
        raise ValueError(f"{shard_dir}: split {split!r} has no nights to evaluate")
    nights = iter_nights(shard_dir, split, predictor.modalities, max_nights=max_nights, dtype=np.float32)
    if progress:
        from tqdm import tqdm
        nights = tqdm(nights, unit="night", desc=f"evaluate {split}",
                      total=n_nights if max_nights is None else min(max_nights, n_nights))
    truth, carried, windows = [], [], []
    for n in nights:
        truth.append(NightTruth(n.night, n.stage.astype(np.int64), n.apnea.astype(np.int64),
                                n.hypopnea.astype(np.int64), n.events, n.subject))
        side = side_features_for_rows(n.x, n.present, n.log_scale, tuple(predictor.modalities))
        carried.append(NightPredictions(n.night, *predictor.carried(n.x, n.present, side)))
        windows.append(NightPredictions(n.night, *predictor.windows(n.x, n.present, side, window), window))
    return truth, carried, windows


def evaluate_model(model: Path | str, shard_dir: Path | str, out_dir: Path | str, split: str = "test",
                   window: int = 20, threshold: float | Mapping[str, float] | None = None,
                   max_nights: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Evaluate a checkpoint/artifact on a split in both modes; writes ``report.json``,
    ``confusion_carried.png``, ``confusion_windows.png`` and ``hypnogram_<night>.png`` (first
    night) into ``out_dir``; returns the report. ``threshold`` None: the artifact's thresholds
    (ONNX metadata), else 0.5."""
    t0 = time.perf_counter()
    pred = load_predictor(model)
    if threshold is None:
        threshold = pred.thresholds or 0.5
    threshold = _thresholds(threshold)
    truth, carried, windows = run_split(pred, shard_dir, split, window, max_nights, progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "version": REPORT_VERSION, "model": str(model), "shards": str(shard_dir), "split": split,
        "modalities": list(pred.modalities), "window": window, "threshold": threshold,
        "carried": evaluate_predictions(carried, truth, threshold),
        "windows": evaluate_predictions(windows, truth, threshold),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    plot_confusion(report["carried"]["staging"]["confusion"], out / "confusion_carried.png",
                   "state carried all night")
    plot_confusion(report["windows"]["staging"]["confusion"], out / "confusion_windows.png",
                   f"{window}-epoch windows from zero state")
    t = truth[0]
    plot_hypnogram(t.stage, {"carried": carried[0].stage, f"{window}-epoch windows": windows[0].stage},
                   out / f"hypnogram_{t.night}.png", f"night {t.night}")
    write_report(report, out)
    return report


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="CHECKPOINT_OR_ONNX",
                        help="a checkpoint (runs/ft/model[.safetensors]) or an ONNX artifact (model.onnx)")
    parser.add_argument("--shards", required=True, metavar="DIR", help="folder made by 'synthsleep prepare'")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="split (default test)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (report.json, PNGs)")
    parser.add_argument("--window", type=int, default=20, help="zero-state window length, epochs (default 20)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="apnea/hypopnea probability threshold (default: the artifact's, else 0.5)")
    parser.add_argument("--max-nights", type=int, default=None, help="evaluate only the first N nights")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    if args.window < 1:
        raise ValueError(f"--window must be at least 1, got {args.window}")
    rep = evaluate_model(args.model, args.shards, args.out, args.split, args.window, args.threshold,
                         args.max_nights, progress=not args.no_progress)
    t = Table(title=f"synthsleep evaluate: {args.split} split, {rep['carried']['nights']} nights, "
                    f"{rep['carried']['epochs']} epochs")
    t.add_column("metric")
    t.add_column("state carried", justify="right")
    t.add_column(f"{args.window}-epoch windows", justify="right")
    c, w = rep["carried"], rep["windows"]
    rows = [("stage accuracy", c["staging"]["accuracy"], w["staging"]["accuracy"]),
            ("stage macro-F1", c["staging"]["macro_f1"], w["staging"]["macro_f1"]),
            ("stage kappa", c["staging"]["kappa"], w["staging"]["kappa"])]
    for task in ("apnea", "hypopnea"):
        for k in ("f1", "auroc", "auprc"):
            rows.append((f"{task} {k.upper() if k != 'f1' else 'F1'}", c[task][k], w[task][k]))
    rows += [("AHI MAE (events/h)", c["ahi"]["mae"], w["ahi"]["mae"]),
             ("AHI Pearson r", c["ahi"]["pearson_r"], w["ahi"]["pearson_r"])]
    for name, a, b in rows:
        t.add_row(name, _fmt(a), _fmt(b))
    con = Console()
    con.print(t)
    con.print(f"report: {Path(args.out) / 'report.json'}  ({rep['seconds']:.1f} s)")
    return 0
