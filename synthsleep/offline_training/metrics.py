"""Scoring metrics in plain numpy: staging (accuracy, macro-F1, Cohen's kappa, confusion
matrix), binary detection (F1, AUROC, AUPRC) and the apnea-hypopnea index per night.

Conventions: stage codes 0..4 = W, N1, N2, N3, REM; ``-1`` marks an unknown/unscored epoch and
is left out of every metric. Undefined values (no positives, no variance) come back as ``nan``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..psg.epoch import EPOCH_SECONDS, STAGES

N_STAGES = len(STAGES)
APNEA_EVENT_TYPES = ("obstructive_apnea", "central_apnea", "mixed_apnea")
HYPOPNEA_EVENT_TYPES = ("hypopnea",)


def _valid_pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} values but y_pred has {y_pred.size}")
    keep = y_true >= 0
    return y_true[keep].astype(np.int64), y_pred[keep].astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Multi-class (staging)
# ----------------------------------------------------------------------------------------------


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = N_STAGES) -> np.ndarray:
    """int64 [C, C]: rows = true class, columns = predicted class (epochs with y_true < 0 dropped)."""
    t, p = _valid_pair(y_true, y_pred)
    if t.size and (t.max() >= n_classes or p.min() < 0 or p.max() >= n_classes):
        raise ValueError(f"class codes must be in 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    t, p = _valid_pair(y_true, y_pred)
    return float(np.mean(t == p)) if t.size else math.nan


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """float [C]: F1 of each class from a confusion matrix; nan for a class never true nor predicted."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1)  # = 2tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2.0 * tp / denom, math.nan)


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes present in the truth or the predictions."""
    f1 = per_class_f1(cm)
    return float(np.nanmean(f1)) if np.isfinite(f1).any() else math.nan


def cohen_kappa(cm: np.ndarray) -> float:
    """Cohen's kappa from a confusion matrix: (p_o - p_e) / (1 - p_e)."""
    cm = np.asarray(cm, np.float64)
    n = cm.sum()
    if n == 0:
        return math.nan
    po = np.trace(cm) / n
    pe = float((cm.sum(0) * cm.sum(1)).sum()) / (n * n)
    return float((po - pe) / (1.0 - pe)) if pe < 1.0 else (1.0 if po == 1.0 else math.nan)


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


def count_runs(positive: np.ndarray) -> int:
    """Runs of consecutive True values in a bool [n] sequence (episodes)."""
    x = np.asarray(positive, bool).ravel()
    if x.size == 0:
        return 0
    return int(x[0]) + int(np.count_nonzero(x[1:] & ~x[:-1]))


def sleep_hours(stages: np.ndarray, epoch_seconds: float = EPOCH_SECONDS) -> float:
    """Hours of sleep: epochs scored N1, N2, N3 or REM (codes 1..4)."""
    s = np.asarray(stages)
    return float(np.count_nonzero((s >= 1) & (s <= 4)) * epoch_seconds / 3600.0)


def predicted_ahi(apnea: np.ndarray, hypopnea: np.ndarray, stages: np.ndarray,
                  epoch_seconds: float = EPOCH_SECONDS) -> float:
    """AHI from per-epoch predictions: (apnea episodes + hypopnea episodes) per hour of sleep.

    An episode is a run of consecutive positive epochs; sleep time comes from ``stages``
    (predicted stages, codes 0..4). nan when no sleep.
    """
    hours = sleep_hours(stages, epoch_seconds)
    if hours <= 0:
        return math.nan
    return (count_runs(np.asarray(apnea) == 1) + count_runs(np.asarray(hypopnea) == 1)) / hours


def true_ahi(events: Iterable[Mapping[str, Any] | Any], stages: np.ndarray,
             epoch_seconds: float = EPOCH_SECONDS) -> float:
    """AHI from scored events: apneas (obstructive, central, mixed) + hypopneas per hour of
    scored sleep. ``events``: dicts or objects with ``type``. nan when no sleep."""
    hours = sleep_hours(stages, epoch_seconds)
    if hours <= 0:
        return math.nan
    types = APNEA_EVENT_TYPES + HYPOPNEA_EVENT_TYPES
    n = sum(1 for e in events if (e["type"] if isinstance(e, Mapping) else e.type) in types)
    return n / hours


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
