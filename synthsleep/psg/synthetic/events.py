"""Where things happen in a synthetic night: respiratory events, arousals, movements.

Everything is planned first (on the stage sequence), then each signal generator renders the
same plan, so that airflow, effort, SpO2, EEG, EMG and heart rate agree with each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from synthsleep.psg.clinical import RESPIRATORY_EVENT_TYPES
from synthsleep.psg.synthetic.subject import SubjectParams

EPOCH_S = 30
# relative propensity of respiratory events per stage (W, N1, N2, N3, REM): none in wake,
# fewer in N3, more in REM
EVENT_STAGE_WEIGHT = np.array([0.0, 1.0, 1.0, 0.3, 1.6])


@dataclass
class PlannedEvent:
    """One respiratory event as rendered in the signals.

    Attributes:
        onset, duration: seconds.
        type: obstructive_apnea / central_apnea / mixed_apnea / hypopnea.
        flow_factor: airflow amplitude during the event relative to normal breathing.
        desat: SpO2 drop in % (nadir lags the event end by ``lag`` seconds).
        lag: circulation delay of the SpO2 nadir after the event end (s).
        arousal: an arousal follows the event.
    """

    onset: float
    duration: float
    type: str
    flow_factor: float
    desat: float
    lag: float
    arousal: bool

    @property
    def end(self) -> float:
        return self.onset + self.duration


@dataclass
class NightPlan:
    """The planned events of a night (all times in seconds from the recording start)."""

    resp: list[PlannedEvent] = field(default_factory=list)
    arousals: list[tuple[float, float, float]] = field(default_factory=list)  # onset, duration, strength
    movements: list[tuple[float, float, float]] = field(default_factory=list)  # onset, duration, strength


def _draw_type(rng: np.random.Generator, subject: SubjectParams) -> str:
    fo, fc, fm = subject.frac_obstructive, subject.frac_central, subject.frac_mixed
    fh = max(0.0, 1.0 - fo - fc - fm)
    p = np.array([fo, fc, fm, fh])
    return RESPIRATORY_EVENT_TYPES[int(rng.choice(4, p=p / p.sum()))]


def plan_respiratory_events(rng: np.random.Generator, stages: np.ndarray, subject: SubjectParams) -> list[PlannedEvent]:
    """Place apneas/hypopneas on the stage sequence.

    The count is Poisson(AHI x sleep hours); onsets are drawn with stage weights
    (``EVENT_STAGE_WEIGHT``), each event must lie wholly inside sleep epochs and keep >= 12 s of
    normal breathing from its neighbours.
    """
    n_sec = stages.size * EPOCH_S
    sleep_h = float(np.sum(stages > 0)) * EPOCH_S / 3600.0
    n_target = int(rng.poisson(subject.ahi * sleep_h))
    if n_target == 0:
        return []
    w_sec = np.repeat(EVENT_STAGE_WEIGHT[stages], EPOCH_S)
    if w_sec.sum() <= 0:
        return []
    sleep_sec = np.repeat(stages > 0, EPOCH_S)
    cand = rng.choice(n_sec, size=min(n_sec, 6 * n_target + 50), p=w_sec / w_sec.sum())
    busy = np.zeros(n_sec, dtype=bool)
    events: list[PlannedEvent] = []
    for c in cand:
        if len(events) >= n_target:
            break
        etype = _draw_type(rng, subject)
        med = 24.0 if etype != "hypopnea" else 26.0
        dur = float(np.clip(med * rng.lognormal(0.0, 0.35), 10.5, 75.0))
        on = float(c) + float(rng.random())
        i0, i1 = int(on) - 12, int(on + dur) + 14
        if i0 < 0 or i1 >= n_sec or busy[i0:i1].any() or not sleep_sec[int(on) : int(on + dur) + 1].all():
            continue
        busy[i0:i1] = True
        if etype == "hypopnea":
            flow = float(rng.uniform(0.2, 0.5))  # 50-80 % drop
            if rng.random() < 0.75:
                desat = float(rng.uniform(3.2, 6.0))
                arousal = bool(rng.random() < 0.5)
            else:  # hypopnea scored on the arousal alone
                desat = float(rng.uniform(0.5, 2.0))
                arousal = True
        else:
            flow = float(rng.uniform(0.0, 0.06))
            desat = float(np.clip(2.5 + 0.12 * dur + rng.normal(0, 1.5), 3.0, 20.0))
            arousal = bool(rng.random() < 0.85)
        events.append(PlannedEvent(on, dur, etype, flow, desat, float(rng.uniform(18.0, 30.0)), arousal))
    events.sort(key=lambda e: e.onset)
    return events


def plan_night(rng: np.random.Generator, stages: np.ndarray, subject: SubjectParams) -> NightPlan:
    """Respiratory events, then arousals (after events and spontaneous) and movement bursts."""
    plan = NightPlan(resp=plan_respiratory_events(rng, stages, subject))
    for ev in plan.resp:
        if ev.arousal:
            plan.arousals.append((ev.end - 1.0 + float(rng.uniform(0, 2)), float(rng.uniform(4.0, 12.0)),
                                  float(rng.uniform(0.6, 1.2))))
    n_sec = stages.size * EPOCH_S
    sleep_sec = np.repeat(stages > 0, EPOCH_S)
    rate = sleep_sec * subject.arousal_per_h / 3600.0
    for t in np.sort(rng.random(rng.poisson(rate.sum())) * n_sec):
        if sleep_sec[int(t)] and not any(ev.onset - 5 < t < ev.end + 15 for ev in plan.resp):
            plan.arousals.append((float(t), float(rng.uniform(3.0, 14.0)), float(rng.uniform(0.5, 1.1))))
    plan.arousals.sort()
    # movement bursts: in wake (about one per 4 min) and at a quarter of the arousals
    wake_sec = ~sleep_sec
    for t in np.sort(rng.random(rng.poisson(wake_sec.sum() / 240.0 * subject.artifact_rate)) * n_sec):
        if wake_sec[int(t)]:
            plan.movements.append((float(t), float(rng.uniform(1.0, 8.0)), float(rng.lognormal(0, 0.5))))
    for on, dur, _ in plan.arousals:
        if rng.random() < 0.25 * min(subject.artifact_rate, 2.0):
            plan.movements.append((on + float(rng.uniform(0, 2)), float(rng.uniform(1.0, min(dur, 6.0))),
                                   float(rng.lognormal(-0.5, 0.5))))
    plan.movements.sort()
    return plan
