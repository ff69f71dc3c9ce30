"""The clinical vocabulary: every number a clinician acts on is defined here, once.

Stages, respiratory event types, the episode rule, sleep hours, the apnea-hypopnea index and the
agreement statistics (confusion matrix, Cohen's kappa, F1). The monitor's Prometheus gauge, the
night report, ``events.jsonl``, the evaluation and the README all call these functions, so they
cannot disagree on the same night. Plain numpy, no torch (the live path imports it).

Conventions: stage codes 0..4 = W, N1, N2, N3, REM; -1 = unknown/unscored, left out of every
statistic. An undefined AHI (no sleep to divide by) is ``None``, never 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .epoch import EPOCH_SECONDS, STAGES, UNKNOWN

#: stage code -> name ("W", "N1", "N2", "N3", "REM"); -1 is ``UNKNOWN``
STAGE_CODES: dict[str, int] = {name: i for i, name in enumerate(STAGES)}
N_STAGES = len(STAGES)
SLEEP_STAGES = (1, 2, 3, 4)
#: EDF+ annotation text of each stage (the Sleep-EDF / AASM convention)
STAGE_EDF_TEXT: dict[int, str] = {**{i: f"Sleep stage {name if name != 'REM' else 'R'}" for i, name in enumerate(STAGES)},
                                   UNKNOWN: "Sleep stage ?"}

#: scored respiratory event types that count in the AHI
APNEA_TYPES: tuple[str, ...] = ("obstructive_apnea", "central_apnea", "mixed_apnea")
HYPOPNEA_TYPES: tuple[str, ...] = ("hypopnea",)
RESPIRATORY_EVENT_TYPES: tuple[str, ...] = APNEA_TYPES + HYPOPNEA_TYPES

__all__ = ["STAGES", "UNKNOWN", "STAGE_CODES", "N_STAGES", "SLEEP_STAGES", "STAGE_EDF_TEXT", "APNEA_TYPES",
           "HYPOPNEA_TYPES", "RESPIRATORY_EVENT_TYPES", "count_runs", "episodes_in_sleep", "sleep_hours",
           "events_per_hour", "predicted_ahi",
           "count_respiratory_events", "confusion_matrix", "per_class_f1", "macro_f1", "cohen_kappa"]


# ----------------------------------------------------------------------------------------------
# Episodes, sleep time, AHI
# ----------------------------------------------------------------------------------------------


def count_runs(positive: np.ndarray) -> int:
    """The episode rule: a run of consecutive positive epochs is one event."""
    x = np.asarray(positive, bool).ravel()
    if x.size == 0:
        return 0
    return int(x[0]) + int(np.count_nonzero(x[1:] & ~x[:-1]))


def sleep_hours(stages: np.ndarray, epoch_seconds: float = EPOCH_SECONDS) -> float:
    """Hours of sleep: epochs staged N1, N2, N3 or REM (codes 1..4)."""
    s = np.asarray(stages)
    return float(np.count_nonzero((s >= 1) & (s <= 4)) * epoch_seconds / 3600.0)


def events_per_hour(n_events: int, hours: float) -> float | None:
    """The AHI: events per hour of sleep (with a respiratory sensor, where that is known);
    None when there is no such sleep (n/a, not 0)."""
    return n_events / hours if hours > 0 else None


def episodes_in_sleep(positive: np.ndarray, stages: np.ndarray) -> int:
    """Episodes (runs of positive epochs, ``count_runs``) that start in a sleep epoch (stage
    1..4): the events the AHI counts. An episode starting in wake or an unscored epoch is no
    event, and it does not become one by running on into sleep."""
    x = np.asarray(positive, bool).ravel()
    starts = x & ~np.r_[False, x[:-1]]
    s = np.asarray(stages).ravel()
    return int(np.count_nonzero(starts & (s >= 1) & (s <= 4)))


def predicted_ahi(apnea: np.ndarray, hypopnea: np.ndarray, stages: np.ndarray,
                  resp: np.ndarray | None = None, epoch_seconds: float = EPOCH_SECONDS) -> float | None:
    """The AHI of a scored night, per epoch in order (the batch form of the monitor's running
    AHI, ``events.EventDetector.ahi``, which equals it epoch for epoch).

    Args:
        apnea, hypopnea: bool [n], the epoch is positive (probability at or above its threshold).
        stages: int [n] predicted stages (-1: unscored, never positive, never sleep).
        resp: bool [n], a usable respiratory sensor in that epoch (None: in every epoch). An epoch
            without one is neither positive nor sleep time for the AHI.

    Returns:
        (apnea + hypopnea episodes starting in sleep) per hour of sleep with a respiratory sensor;
        None when there is no such sleep (n/a, not 0).
    """
    s = np.asarray(stages).ravel()
    r = np.ones(s.size, bool) if resp is None else np.asarray(resp, bool).ravel()
    scored = r & (s >= 0)
    n = (episodes_in_sleep(np.asarray(apnea, bool) & scored, s)
         + episodes_in_sleep(np.asarray(hypopnea, bool) & scored, s))
    return events_per_hour(n, sleep_hours(np.where(r, s, -1), epoch_seconds))


def _type(e: Mapping[str, Any] | Any) -> str:
    return e["type"] if isinstance(e, Mapping) else e.type


def count_respiratory_events(events: Iterable[Mapping[str, Any] | Any]) -> tuple[int, int]:
    """(apneas, hypopneas) among scored respiratory events (dicts or objects with ``type``)."""
    n_ap = n_hy = 0
    for e in events:
        t = _type(e)
        n_ap += t in APNEA_TYPES
        n_hy += t in HYPOPNEA_TYPES
    return n_ap, n_hy


# ----------------------------------------------------------------------------------------------
# Agreement with a reference scoring
# ----------------------------------------------------------------------------------------------


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = N_STAGES) -> np.ndarray:
    """int64 [C, C]: rows = reference class, columns = predicted class. Epochs with a reference
    below 0 are dropped; a prediction below 0 (unscored) is dropped too."""
    t, p = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    keep = (t >= 0) & (p >= 0)
    t, p = t[keep].astype(np.int64), p[keep].astype(np.int64)
    if t.size and (t.max() >= n_classes or p.max() >= n_classes):
        raise ValueError(f"class codes must be in 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """float [C]: F1 of each class; nan for a class neither in the reference nor predicted."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1)  # = 2tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2.0 * tp / denom, math.nan)


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes present in the reference or the predictions (nan if none)."""
    f1 = per_class_f1(cm)
    return float(np.nanmean(f1)) if np.isfinite(f1).any() else math.nan


def cohen_kappa(cm: np.ndarray) -> float:
    """Cohen's kappa (p_o - p_e) / (1 - p_e); 1.0 for perfect agreement on a single class, nan
    when undefined (no epochs, or chance agreement is certain and the scorings still differ)."""
    cm = np.asarray(cm, np.float64)
    n = cm.sum()
    if n == 0:
        return math.nan
    po = np.trace(cm) / n
    pe = float((cm.sum(0) * cm.sum(1)).sum()) / (n * n)
    return float((po - pe) / (1.0 - pe)) if pe < 1.0 else (1.0 if po == 1.0 else math.nan)
