"""Recording artifacts: line noise, amplifier noise, movement bursts, electrode pops, sweat drift, lead-off.

Signals are modified in place; labels never change (a flat channel during lead-off still carries
the night's stages and events, as in a real scored recording).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthsleep.psg.synthetic.features import FeatureTrack
from synthsleep.psg.synthetic.subject import SubjectParams
from synthsleep.psg.synthetic.util import band_gain, shaped_noise, sinusoid, slow_modulation, upsample

EXG_LABELS = ("EEG C4-M1", "EEG C3-M2", "EOG E1-M2", "EOG E2-M2")


@dataclass(frozen=True)
class LeadOff:
    """A channel that went flat from ``start`` to ``stop`` seconds."""

    label: str
    start: float
    stop: float


def add_artifacts(rng: np.random.Generator, signals: dict[str, tuple[float, np.ndarray]], track: FeatureTrack,
                  subject: SubjectParams) -> list[LeadOff]:
    """Add artifacts to ``signals`` (label -> (rate Hz, float64 data)) in place.

    Returns:
        the lead-off periods applied (flat channels).
    """
    n_sec = track.n_seconds
    rate = subject.artifact_rate
    line_mod = slow_modulation(rng, n_sec, 0.4, 300.0)
    for label, (fs, x) in signals.items():
        if label == "SpO2" or label.startswith("Resp"):
            continue
        amp = subject.line_uv * (3.0 if label in ("EMG Chin", "ECG II") else 1.0)
        x += amp * upsample(line_mod, 1.0, x.size, fs) * sinusoid(x.size, fs, subject.line_hz, rng.uniform(0, 6.3))
        if label in EXG_LABELS:
            x += subject.noise_uv * rng.standard_normal(x.size)
    # movement bursts on EEG/EOG/ECG: large slow swings plus muscle noise
    if track.movement.any():
        for label in (*EXG_LABELS, "ECG II"):
            fs, x = signals[label]
            env = upsample(track.movement, 1.0, x.size, fs)
            on = env > 0.01
            if not on.any():
                continue
            k = int(on.sum())
            slow = shaped_noise(rng, k, fs, band_gain(0.3, 4.0, 2.0))[0] * 120.0
            x[on] += env[on] * (slow + 30.0 * rng.standard_normal(k))
    # electrode pops
    for label in EXG_LABELS:
        fs, x = signals[label]
        for t0 in rng.random(rng.poisson(1.0 * rate * n_sec / 3600.0)) * n_sec:
            i0 = int(t0 * fs)
            m = min(x.size - i0, int(4 * fs))
            x[i0 : i0 + m] += rng.choice([-1, 1]) * rng.uniform(100, 400) * np.exp(-np.arange(m) / (rng.uniform(0.3, 1.5) * fs))
    # sweat: slow large drift on EEG/EOG for 20-60 min
    if rng.random() < min(0.9, 0.3 * rate):
        dur = rng.uniform(1200, 3600)
        t0 = rng.uniform(0, max(1.0, n_sec - dur))
        fs = signals[EXG_LABELS[0]][0]
        m = int(min(dur, n_sec - t0) * fs)
        if m > 10:
            common = shaped_noise(rng, m, fs, band_gain(0.05, 0.4, 2.0))[0]
            win = np.sin(np.pi * np.arange(m) / m) ** 0.3
            for label in EXG_LABELS:
                fs_l, x = signals[label]
                i0 = int(t0 * fs_l)
                x[i0 : i0 + m] += rng.uniform(25, 70) * win * common
    # lead-off: a channel goes flat for 2-10 min
    lead: list[LeadOff] = []
    if rng.random() < min(0.8, 0.25 * rate):
        label = str(rng.choice(list(signals)))
        fs, x = signals[label]
        dur = rng.uniform(120, 600)
        t0 = rng.uniform(0, max(1.0, n_sec - dur))
        i0, i1 = int(t0 * fs), min(x.size, int((t0 + dur) * fs))
        x[i0:i1] = 0.0
        lead.append(LeadOff(label, i0 / fs, i1 / fs))
    return lead
