"""Evaluation metrics in plain numpy: staging reports, binary detection (F1, AUROC, AUPRC) and
per-night AHI agreement, built on the clinical definitions of :mod:`synthsleep.psg.clinical`
(confusion matrix, kappa, F1, the episode rule, sleep hours, the AHI), re-exported here.

Conventions: stage codes 0..4 = W, N1, N2, N3, REM; ``-1`` marks an unknown/unscored epoch and
is left out of every metric. Undefined values (no positives, no variance) come back as ``nan``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..psg.clinical import (
    N_STAGES,
    STAGES,
    cohen_kappa,
    confusion_matrix,
    count_respiratory_events,
    count_runs,
    events_per_hour,
    macro_f1,
    per_class_f1,
    predicted_ahi,
    sleep_hours,
)
from ..psg.epoch import EPOCH_SECONDS

__all__ = ["jsonable", "N_STAGES", "confusion_matrix", "count_runs", "macro_f1", "per_class_f1", "cohen_kappa",
           "sleep_hours", "accuracy", "staging_metrics", "binary_f1", "roc_auc", "predicted_ahi", "true_ahi",
           "ahi_agreement", "pearson_r"]


def jsonable(o: Any) -> Any:
    """``o`` with numpy scalars and arrays turned into Python numbers/lists and undefined
    (non-finite) numbers into None, for json.dumps: JSON has no NaN, an undefined metric is null."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, (np.generic, np.ndarray)):
        return jsonable(o.tolist())
    return o


def _valid_pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} values but y_pred has {y_pred.size}")
    keep = y_true >= 0
    return y_true[keep].astype(np.int64), y_pred[keep].astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Multi-class (staging)
# ----------------------------------------------------------------------------------------------


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    t, p = _valid_pair(y_true, y_pred)
    return float(np.mean(t == p)) if t.size else math.nan


def staging_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """accuracy, macro_f1, kappa, per-class F1 (by stage name), confusion matrix, n epochs."""
    cm = confusion_matrix(y_true, y_pred)
    f1 = per_class_f1(cm)
    return {"n": int(cm.sum()), "accuracy": accuracy(y_true, y_pred), "macro_f1": macro_f1(cm),
            "kappa": cohen_kappa(cm), "f1": {s: float(v) for s, v in zip(STAGES, f1)},
            "confusion": cm.tolist()}


# ----------------------------------------------------------------------------------------------
# Binary detection (apnea, hypopnea)
# ----------------------------------------------------------------------------------------------


def binary_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of the positive class (labels 0/1; y_true < 0 dropped); nan when no positive anywhere."""
    t, p = _valid_pair(y_true, y_pred)
    tp = np.count_nonzero((t == 1) & (p == 1))
    denom = np.count_nonzero(t == 1) + np.count_nonzero(p == 1)
    return 2.0 * tp / denom if denom else math.nan


def _ranked(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, score = np.asarray(y_true).ravel(), np.asarray(score, np.float64).ravel()
    if y_true.shape != score.shape:
        raise ValueError(f"y_true has {y_true.size} values but score has {score.size}")
    keep = (y_true >= 0) & np.isfinite(score)
    return (y_true[keep] == 1), score[keep]


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random positive > a random negative), ties count
    one half (Mann-Whitney U with average ranks); nan without both classes."""
    pos, s = _ranked(y_true, score)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, np.float64)
    ss = s[order]
    # average ranks over ties (1-based)
    bounds = np.flatnonzero(np.diff(ss)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [ss.size]])
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve as average precision: sum over thresholds (distinct
    scores, high to low) of precision × recall increase; nan without positives."""
    pos, s = _ranked(y_true, score)
    n_pos = int(pos.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    s, pos = s[order], pos[order]
    last = np.concatenate([np.flatnonzero(np.diff(s)), [s.size - 1]])  # last index of each tie group
    tp = np.cumsum(pos)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    d_recall = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(precision * d_recall))


def binary_metrics(y_true: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """n, positives, accuracy, F1 at ``threshold``, AUROC, AUPRC of one binary task."""
    y_true, prob = np.asarray(y_true).ravel(), np.asarray(prob, np.float64).ravel()
    pred = (prob >= threshold).astype(np.int64)
    keep = y_true >= 0
    return {"n": int(keep.sum()), "positives": int((y_true[keep] == 1).sum()), "threshold": threshold,
            "accuracy": accuracy(y_true, pred), "f1": binary_f1(y_true, pred),
            "auroc": roc_auc(y_true, prob), "auprc": average_precision(y_true, prob)}


# ----------------------------------------------------------------------------------------------
# Apnea-hypopnea index
# ----------------------------------------------------------------------------------------------


def true_ahi(events: Iterable[Mapping[str, Any] | Any], stages: np.ndarray,
             epoch_seconds: float = EPOCH_SECONDS) -> float:
    """AHI from scored events: apneas (obstructive, central, mixed) + hypopneas per hour of
    scored sleep. ``events``: dicts or objects with ``type``. nan when no sleep."""
    ahi = events_per_hour(sum(count_respiratory_events(events)), sleep_hours(stages, epoch_seconds))
    return math.nan if ahi is None else ahi


def ahi_agreement(true: Sequence[float], pred: Sequence[float]) -> dict[str, Any]:
    """MAE and Pearson r between true and predicted AHI over nights (nan nights dropped)."""
    t, p = np.asarray(true, np.float64), np.asarray(pred, np.float64)
    keep = np.isfinite(t) & np.isfinite(p)
    t, p = t[keep], p[keep]
    out: dict[str, Any] = {"nights": int(t.size), "mae": float(np.mean(np.abs(t - p))) if t.size else math.nan,
                           "pearson_r": pearson_r(t, p)}
    return out


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; nan with fewer than 2 values or zero variance."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum() / den) if den > 0 else math.nan
