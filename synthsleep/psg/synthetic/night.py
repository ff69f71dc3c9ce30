"""One synthetic PSG night: stages, planned events, every channel at its native rate, EDF+ out."""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from synthsleep.psg.annotations import NightAnnotations, RespEvent, write_scoring_annotations
from synthsleep.psg.clinical import RESPIRATORY_EVENT_TYPES, events_per_hour, sleep_hours
from synthsleep.psg.recording import Signal, write_edf
from synthsleep.psg.synthetic.artifacts import LeadOff, add_artifacts
from synthsleep.psg.synthetic.cardiorespiratory import (
    ECG_FS,
    RESP_FS,
    heart_rate,
    render_ecg,
    render_respiration,
    render_spo2,
)
from synthsleep.psg.synthetic.eeg import EEG_FS, EMG_FS, render_eeg, render_emg, render_eog
from synthsleep.psg.synthetic.events import EPOCH_S, NightPlan, plan_night
from synthsleep.psg.synthetic.features import feature_track
from synthsleep.psg.synthetic.hypnogram import sample_hypnogram
from synthsleep.psg.synthetic.subject import SubjectParams

logger = logging.getLogger(__name__)

#: label -> (native rate Hz, unit, transducer)
CHANNELS: dict[str, tuple[float, str, str]] = {
    "EEG C4-M1": (EEG_FS, "uV", "AgAgCl electrode"),
    "EEG C3-M2": (EEG_FS, "uV", "AgAgCl electrode"),
    "EOG E1-M2": (EEG_FS, "uV", "AgAgCl electrode"),
    "EOG E2-M2": (EEG_FS, "uV", "AgAgCl electrode"),
    "EMG Chin": (EMG_FS, "uV", "AgAgCl electrode"),
    "ECG II": (ECG_FS, "uV", "AgAgCl electrode"),
    "Resp Airflow": (RESP_FS, "uV", "nasal pressure"),
    "Resp Thorax": (RESP_FS, "uV", "RIP belt"),
    "Resp Abdomen": (RESP_FS, "uV", "RIP belt"),
    "SpO2": (1.0, "%", "pulse oximeter"),
}
_START = dt.datetime(2020, 1, 1, 22, 30, 0)


@dataclass
class SyntheticNight:
    """A generated night.

    Attributes:
        signals: one ``Signal`` per channel of ``CHANNELS`` (physical units, native rates).
        stages: int8 [n_epochs] ground-truth stages 0..4 (W, N1, N2, N3, REM) per 30-s epoch.
        events: respiratory events (apneas, hypopneas), desaturations and arousals, by onset.
        subject: the subject's parameters.
        seed: the seed it was generated from.
        lead_off: channels that were flat for a while (labels unchanged).
        r_peaks: ECG R-peak times in seconds.
    """

    signals: list[Signal]
    stages: np.ndarray
    events: list[RespEvent]
    subject: SubjectParams
    seed: int
    lead_off: list[LeadOff] = field(default_factory=list)
    r_peaks: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.stages.size * float(EPOCH_S)

    def signal(self, label: str) -> Signal:
        """The channel called ``label`` (KeyError naming the known labels otherwise)."""
        for s in self.signals:
            if s.label == label:
                return s
        raise KeyError(f"no channel {label!r}; have {[s.label for s in self.signals]}")

    def resp_events(self) -> list[RespEvent]:
        """Apneas and hypopneas only."""
        return [e for e in self.events if e.type in RESPIRATORY_EVENT_TYPES]

    def ahi(self) -> float | None:
        """Apneas + hypopneas per hour of sleep (None: no sleep)."""
        return events_per_hour(len(self.resp_events()), sleep_hours(self.stages, EPOCH_S))

    def starting_at(self, epoch: int) -> SyntheticNight:
        """The recording as it would be had it been started at ``epoch`` (a mid-night start: a
        monitor switched on, or a recording cut, while the sleeper is in any stage).

        Signals are cut at ``epoch * 30`` s; stages, events, lead-offs and R peaks are shifted to
        the new start (an event or lead-off running across it keeps its part after it; events
        that ended before it are dropped). The sleeper and their physiology are unchanged.

        Args:
            epoch: first epoch kept, 0 <= epoch < number of epochs.
        """
        if not 0 <= epoch < self.stages.size:
            raise ValueError(f"start epoch {epoch} is outside the night's {self.stages.size} epochs")
        t0 = epoch * float(EPOCH_S)
        signals = [replace(s, data=s.data[int(round(t0 * s.rate)):]) for s in self.signals]
        events = [RespEvent(round(max(e.onset, t0) - t0, 2), round(e.end - max(e.onset, t0), 2), e.type)
                  for e in self.events if e.end > t0]
        lead_off = [LeadOff(lo.label, max(lo.start, t0) - t0, lo.stop - t0) for lo in self.lead_off if lo.stop > t0]
        return SyntheticNight(signals, self.stages[epoch:].copy(), events, self.subject, self.seed, lead_off,
                              self.r_peaks[self.r_peaks >= t0] - t0)

    def scoring(self) -> NightAnnotations:
        """The ground truth as a ``NightAnnotations``."""
        return NightAnnotations(self.stages.copy(), list(self.events), float(EPOCH_S), source=f"synthetic seed {self.seed}",
                       resp_scored=True)


def _events_from_plan(plan: NightPlan, duration: float) -> list[RespEvent]:
    out: list[RespEvent] = []
    for ev in plan.resp:
        out.append(RespEvent(round(ev.onset, 2), round(ev.duration, 2), ev.type))
        if ev.desat >= 3.0:
            on = ev.onset + 0.6 * ev.lag
            end = min(duration, ev.end + ev.lag)
            if end > on:
                out.append(RespEvent(round(on, 2), round(end - on, 2), "desaturation"))
    for on, dur, _ in plan.arousals:
        if on + dur <= duration:
            out.append(RespEvent(round(on, 2), round(dur, 2), "arousal"))
    out.sort(key=lambda e: (e.onset, e.type))
    return out


def synthesize_night(seed: int, hours: float, subject: SubjectParams | None = None,
                     ahi_range: tuple[float, float] | None = None, artifacts: bool = True,
                     stages: np.ndarray | None = None) -> SyntheticNight:
    """Generate one night.

    Args:
        seed: everything is determined by it (and ``subject``).
        hours: recording length (rounded down to whole 30-s epochs; at least one epoch).
        subject: the sleeper; drawn from the seed when None (``ahi_range`` then bounds its AHI).
        ahi_range: (low, high) events/h for a drawn subject.
        artifacts: add line noise, movements, pops, sweat, lead-off (default True).
        stages: force this stage sequence (int [n_epochs] 0..4) instead of sampling one; ``hours``
            is then ignored.

    Returns:
        ``SyntheticNight`` with channels at their native rates (EEG/EOG 256 Hz, EMG/ECG 512 Hz,
        respiration 32 Hz, SpO2 1 Hz).
    """
    if stages is None and (not np.isfinite(hours) or hours <= 0):
        raise ValueError(f"hours must be a positive number, got {hours!r}")
    t_start = time.perf_counter()
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(9)]
    if subject is None:
        subject = SubjectParams.draw(rngs[0], ahi_range)
    if stages is None:
        n_epochs = max(1, int(hours * 3600 // EPOCH_S))
        stages = sample_hypnogram(rngs[1], n_epochs, wake_gain=subject.wake_gain)
    else:
        stages = np.asarray(stages, dtype=np.int8).reshape(-1)
        if stages.size == 0 or stages.min() < 0 or stages.max() > 4:
            raise ValueError(f"stages must be a non-empty sequence of codes 0..4, got {stages.size} values "
                             f"in [{stages.min() if stages.size else '-'}, {stages.max() if stages.size else '-'}]")
        n_epochs = stages.size
    n_sec = n_epochs * EPOCH_S
    plan = plan_night(rngs[2], stages, subject)
    track = feature_track(rngs[3], stages, subject, plan)
    c4, c3, frontal = render_eeg(rngs[4], track, subject)
    e1, e2, eye = render_eog(rngs[5], track, subject, frontal, c4)
    del frontal
    c4 += subject.eye_leak * eye  # blinks and eye movements reach the central leads a little
    c3 += subject.eye_leak * 1.2 * eye
    del eye
    emg = render_emg(rngs[6], track, subject, n_sec)
    airflow, thorax, abdomen, phase = render_respiration(rngs[7], stages, track, plan, subject)
    hr = heart_rate(rngs[7], stages, track, plan, subject, phase)
    ecg, r_peaks = render_ecg(rngs[7], hr, RESP_FS, subject, phase)
    emg += 0.004 * ecg[: emg.size] * rngs[6].uniform(0.2, 1.5)  # ECG picked up by the chin leads
    spo2 = render_spo2(rngs[7], n_sec, plan, subject)
    raw: dict[str, tuple[float, np.ndarray]] = {
        "EEG C4-M1": (EEG_FS, c4), "EEG C3-M2": (EEG_FS, c3), "EOG E1-M2": (EEG_FS, e1), "EOG E2-M2": (EEG_FS, e2),
        "EMG Chin": (EMG_FS, emg), "ECG II": (ECG_FS, ecg), "Resp Airflow": (RESP_FS, airflow),
        "Resp Thorax": (RESP_FS, thorax), "Resp Abdomen": (RESP_FS, abdomen), "SpO2": (1.0, spo2),
    }
    lead_off = add_artifacts(rngs[8], raw, track, subject) if artifacts else []
    _record_as_amplifier(raw, subject)
    signals = [Signal(label, raw[label][0], raw[label][1].astype(np.float32), unit, transducer=tr)
               for label, (_, unit, tr) in CHANNELS.items()]
    night = SyntheticNight(signals, stages, _events_from_plan(plan, float(n_sec)), subject, int(seed), lead_off, r_peaks)
    logger.debug("synthetic night seed=%d: %d epochs, %d events, %.2f s", seed, n_epochs, len(night.events),
                 time.perf_counter() - t_start)
    return night


def _record_as_amplifier(raw: dict[str, tuple[float, np.ndarray]], subject: SubjectParams) -> None:
    """The EEG/EOG and ECG channels as the subject's amplifier records them, in place: the EEG
    inverted when ``eeg_sign`` is -1 (swapped inputs); EEG/EOG anti-alias filtered and decimated
    to ``eeg_rate`` below the generator's 256 Hz, the ECG to ``ecg_rate`` below its 512 Hz
    (everything above the new Nyquist is gone, as in the 50-Hz DREAMS PSG). The defaults leave
    them unchanged."""
    for label in ("EEG C4-M1", "EEG C3-M2", "EOG E1-M2", "EOG E2-M2", "ECG II"):
        fs, x = raw[label]
        if subject.eeg_sign < 0 and label.startswith("EEG"):
            x = -x
        rate = subject.ecg_rate if label == "ECG II" else subject.eeg_rate
        ratio = Fraction(int(round(rate)), int(fs))
        if ratio != 1:
            x = resample_poly(x, ratio.numerator, ratio.denominator)
            fs = float(rate)
        raw[label] = (fs, x)


def write_night(night: SyntheticNight, path: str | os.PathLike[str], start: dt.datetime | None = None) -> Path:
    """Write the night as EDF+C with its stages and events as EDF+ annotations.

    Returns:
        the path written.
    """
    ann = write_scoring_annotations(night.scoring())
    return write_edf(Path(path), night.signals, ann, start=start or _START, patient=f"synth-{night.seed}")
