"""Night report: sleep statistics, AHI and a hypnogram plot from per-epoch outputs.

Works on what ``score`` and the monitor produce (per-epoch stage codes and probabilities, event
lists); compares with the recording's own scoring when there is one. No torch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .psg.clinical import cohen_kappa, confusion_matrix, events_per_hour, per_class_f1
from .psg.epoch import EPOCH_SECONDS, STAGES

log = logging.getLogger(__name__)

RESPIRATORY_EVENT_TYPES = ("apnea", "hypopnea")


@dataclass
class SleepStatistics:
    """Standard PSG summary statistics (minutes unless stated)."""

    epochs: int
    time_in_bed: float
    total_sleep_time: float
    sleep_efficiency: float  # percent of time in bed
    sleep_onset_latency: float | None
    rem_latency: float | None  # from sleep onset
    waso: float
    awakenings: int
    stage_minutes: dict[str, float]
    stage_percent_of_tst: dict[str, float]
    apneas: int
    hypopneas: int
    ahi: float | None  # events per hour of sleep with a respiratory sensor (None: no such sleep)
    unscored_epochs: int = 0


def sleep_statistics(stages: Sequence[int], events: Sequence[dict[str, Any]] = (),
                     epoch_seconds: float = EPOCH_SECONDS) -> SleepStatistics:
    """Statistics of one night.

    Args:
        stages: int per epoch, 0..4 = W,N1,N2,N3,REM; -1 = not scored (signal lost).
        events: Event dicts (``type`` apnea/hypopnea are counted; a ``stage`` event whose value
            says ``resp_scored: false`` marks its epoch as without a respiratory sensor, and the
            AHI's hours leave it out: None when no sleep had one).
        epoch_seconds: epoch length, s.
    """
    s = np.asarray(stages, dtype=int)
    minutes = epoch_seconds / 60.0
    scored = s >= 0
    sleep = scored & (s > 0)
    tst = float(sleep.sum() * minutes)
    idx = np.flatnonzero(sleep)
    onset = int(idx[0]) if idx.size else None
    end = int(idx[-1]) if idx.size else None
    waso = float((s[onset:end + 1] == 0).sum() * minutes) if onset is not None else 0.0
    rem = np.flatnonzero(s == 4)
    rem_latency = float((rem[0] - onset) * minutes) if onset is not None and rem.size else None
    awakenings = 0
    if onset is not None:
        seg = s[onset:end + 1]
        awakenings = int(np.count_nonzero((seg[1:] == 0) & (seg[:-1] > 0)))
    stage_min = {name: float((s == i).sum() * minutes) for i, name in enumerate(STAGES)}
    pct = {name: (100.0 * stage_min[name] / tst if tst > 0 else 0.0) for name in STAGES[1:]}
    apneas = sum(1 for e in events if e.get("type") == "apnea")
    hypopneas = sum(1 for e in events if e.get("type") == "hypopnea")
    tib = float(len(s) * minutes)
    resp = np.ones(len(s), bool)
    for e in events:
        i = e.get("epoch_index", -1)
        if e.get("type") == "stage" and isinstance(i, int) and 0 <= i < len(s):
            resp[i] = bool((e.get("value") or {}).get("resp_scored", True))
    resp_hours = float((sleep & resp).sum() * minutes) / 60.0
    return SleepStatistics(
        epochs=len(s), time_in_bed=tib, total_sleep_time=tst,
        sleep_efficiency=100.0 * tst / tib if tib > 0 else 0.0,
        sleep_onset_latency=float(onset * minutes) if onset is not None else None,
        rem_latency=rem_latency, waso=waso, awakenings=awakenings,
        stage_minutes=stage_min, stage_percent_of_tst=pct, apneas=apneas, hypopneas=hypopneas,
        ahi=events_per_hour(apneas + hypopneas, resp_hours),
        unscored_epochs=int((~scored).sum()),
    )


@dataclass
class Agreement:
    """Epoch-by-epoch agreement of our stages with a reference scoring."""

    epochs: int
    accuracy: float
    kappa: float
    per_stage_f1: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)  # rows: reference, cols: ours


def stage_agreement(ours: Sequence[int], reference: Sequence[int]) -> Agreement | None:
    """Accuracy, Cohen's kappa and per-stage F1 over epochs both scored (None if none are)."""
    a, b = np.asarray(ours, int), np.asarray(reference, int)
    n = min(a.size, b.size)
    cm = confusion_matrix(b[:n], a[:n])  # rows: reference, cols: ours; unscored on either side dropped
    total = int(cm.sum())
    if total == 0:
        return None
    f1 = {name: float(v) for name, v in zip(STAGES, per_class_f1(cm))}
    return Agreement(total, float(np.trace(cm) / total), cohen_kappa(cm), f1, cm.tolist())


def plot_night(path: Path, stages: Sequence[int], stage_prob: np.ndarray | None = None,
               events: Sequence[dict[str, Any]] = (), reference: Sequence[int] | None = None,
               title: str = "", epoch_seconds: float = EPOCH_SECONDS, origin: float = 0.0) -> Path:
    """Hypnogram PNG: predicted (and reference) stages, stage probabilities, events underneath.

    Args:
        path: output PNG path.
        stages: int per epoch (-1 unscored).
        stage_prob: float [n_epochs, 5] or None.
        events: Event dicts (apnea/hypopnea episodes drawn as bars, alerts as marks).
        reference: the recording's own scoring per epoch, drawn underneath ours.
        origin: clock time (s) of epoch 0's start; event onsets are on the same clock.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = {0: 4, 4: 3, 1: 2, 2: 1, 3: 0}  # display: W top, REM, N1, N2, N3 bottom
    s = np.asarray(stages, int)
    hours = np.arange(len(s) + 1) * epoch_seconds / 3600.0
    rows = 3 if stage_prob is not None else 2
    fig, axes = plt.subplots(rows, 1, figsize=(12, 2.2 * rows + 0.6), sharex=True,
                             gridspec_kw={"height_ratios": [3, 2, 1][:rows] if rows == 3 else [3, 1]})
    ax = axes[0]

    def _steps(seq, **kw):
        y = np.array([order.get(int(v), np.nan) for v in seq] + [np.nan], float)
        y[-1] = y[-2] if len(y) > 1 else np.nan
        ax.step(hours, y, where="post", **kw)

    if reference is not None:
        _steps(reference[: len(s)], color="0.6", lw=2.5, label="reference")
    _steps(s, color="C0", lw=1.2, label="synthsleep")
    rem = np.flatnonzero(s == 4)
    ax.scatter(hours[rem] + epoch_seconds / 7200.0, np.full(rem.size, 3), s=4, color="C3", zorder=3)
    ax.set_yticks([4, 3, 2, 1, 0], ["W", "REM", "N1", "N2", "N3"])
    ax.set_ylim(-0.5, 4.5)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "Hypnogram")
    if stage_prob is not None:
        p = np.asarray(stage_prob, float)
        colors = ["#f2c94c", "#9ad0f5", "#2f80ed", "#1b3a6b", "#eb5757"]
        axes[1].stackplot(hours[:-1], p.T, labels=STAGES, colors=colors, step="post")
        axes[1].set_ylim(0, 1)
        axes[1].set_ylabel("P(stage)")
        axes[1].legend(loc="upper right", fontsize=7, ncol=5)
    ev = axes[-1]
    lanes = {"apnea": 1.0, "hypopnea": 0.0}
    for e in events:
        t = e.get("type")
        if t in lanes:
            ev.broken_barh([((e["onset"] - origin) / 3600.0, max(e.get("duration", 30.0), 10.0) / 3600.0)],
                           (lanes[t] - 0.4, 0.8), color="C3" if t == "apnea" else "C1")
        elif t == "alert_raised":
            ev.axvline((e["onset"] - origin) / 3600.0, color="k", lw=0.8, ls=":")
    ev.set_yticks([1, 0], ["apnea", "hypopnea"])
    ev.set_ylim(-0.6, 1.6)
    ev.set_xlabel("hours since start")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(out_dir: Path, stages: Sequence[int], stage_prob: np.ndarray | None,
                 events: Sequence[dict[str, Any]], reference: Sequence[int] | None = None,
                 meta: dict[str, Any] | None = None, title: str = "", origin: float = 0.0) -> dict[str, Any]:
    """Write ``report.json`` and ``hypnogram.png`` into ``out_dir``; returns the report dict.
    ``origin``: clock time (s) of epoch 0's start (event onsets are on that clock)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = sleep_statistics(stages, events)
    report: dict[str, Any] = {"statistics": asdict(stats), **(meta or {})}
    if reference is not None:
        agree = stage_agreement(stages, reference)
        report["agreement"] = asdict(agree) if agree else None
    plot_night(out_dir / "hypnogram.png", stages, stage_prob, events, reference, title, origin=origin)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=float))
    return report


def format_statistics(stats: SleepStatistics) -> str:
    """Human-readable block for the console summary."""
    def m(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f} min"

    lines = [
        f"time in bed {m(stats.time_in_bed)}, total sleep {m(stats.total_sleep_time)}, "
        f"efficiency {stats.sleep_efficiency:.1f} %",
        f"sleep onset latency {m(stats.sleep_onset_latency)}, REM latency {m(stats.rem_latency)}, "
        f"WASO {m(stats.waso)}, awakenings {stats.awakenings}",
        "stages (% of sleep): " + ", ".join(f"{k} {v:.1f}" for k, v in stats.stage_percent_of_tst.items()),
        f"apneas {stats.apneas}, hypopneas {stats.hypopneas}, AHI "
        + ("n/a (no sleep with a respiratory sensor)" if stats.ahi is None and stats.total_sleep_time > 0
           else "n/a" if stats.ahi is None else f"{stats.ahi:.1f}/h"),
    ]
    if stats.unscored_epochs:
        lines.append(f"{stats.unscored_epochs} epochs not scored (signal lost)")
    return "\n".join(lines)
