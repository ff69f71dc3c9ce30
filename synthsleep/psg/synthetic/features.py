"""Per-stage feature strengths: which AASM features an epoch shows, and how strongly.

Each 30-s epoch gets a vector of feature weights from its stage (``STAGE_FEATURES``), jittered
per epoch; N1 epochs are mixed with their neighbours' look (N1 is ambiguous in real scoring),
N2 and N3 get a continuous depth. The weights are then expanded to 1 Hz and smoothed, so stage
features bleed a few seconds into the neighbouring epochs, and arousals / movements are added on
the same 1-Hz grid.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from synthsleep.psg.synthetic.events import EPOCH_S, NightPlan
from synthsleep.psg.synthetic.subject import DOMAIN_FIELDS, SubjectParams
from synthsleep.psg.synthetic.util import slow_modulation, smooth

FEATURES = ("bg", "alpha", "beta", "theta", "delta", "spindle", "kcomplex", "vertex", "sawtooth",
            "emg", "blink", "saccade", "sem", "rem")
#                       bg    alpha beta  theta delta spind kc    vert  saw   emg   blink sacc  sem   rem
# Tuned so that the relative band powers of the preprocessed (normalised) EEG per stage follow
# the real DREAMS excerpts (benchmarks/bench_synth_realism.py): N1 has more theta and residual
# alpha than N2, N3 keeps some theta/alpha under its delta, wake beta stays below alpha.
STAGE_FEATURES = np.array([
    [0.85, 1.00, 1.60, 0.25, 0.15, 0.00, 0.00, 0.00, 0.00, 1.00, 1.00, 1.00, 0.05, 0.00],  # W
    [0.90, 0.55, 0.55, 1.20, 0.28, 0.05, 0.05, 1.00, 0.00, 0.60, 0.10, 0.10, 0.70, 0.00],  # N1
    [1.00, 0.12, 0.30, 0.45, 0.45, 1.00, 1.00, 0.10, 0.00, 0.45, 0.00, 0.00, 0.15, 0.00],  # N2
    [1.05, 0.25, 0.20, 1.20, 1.00, 0.30, 0.30, 0.00, 0.00, 0.40, 0.00, 0.00, 0.00, 0.00],  # N3
    [0.80, 0.12, 0.22, 0.45, 0.20, 0.02, 0.02, 0.00, 1.00, 0.12, 0.00, 0.05, 0.10, 1.00],  # REM
])
_IDX = {f: i for i, f in enumerate(FEATURES)}
_RATE_FEATURES = ("spindle", "kcomplex", "vertex", "sawtooth", "blink", "saccade", "rem")


@dataclass
class FeatureTrack:
    """1-Hz tracks of every feature weight plus arousal and movement intensity.

    Attributes:
        values: name -> float64 [n_seconds] weight (stage-table units, ~0..1.5).
        arousal: float64 [n_seconds], 0..~1.2 arousal strength.
        movement: float64 [n_seconds], movement-burst strength (0 = none).
    """

    values: dict[str, np.ndarray]
    arousal: np.ndarray
    movement: np.ndarray

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]

    @property
    def n_seconds(self) -> int:
        return self.arousal.size


def subject_feature_gains(subject: SubjectParams) -> np.ndarray:
    """Subject-specific multipliers of the stage table (same for all nights of a subject).

    Derived deterministically from the subject's parameters, so two nights of one subject share
    them. Returns float64 [5 stages, len(FEATURES)], lognormal around 1.
    """
    # the fields added for domain randomisation stay out, so unrandomised subjects keep the gains
    # they had before those fields existed
    sleeper = {k: v for k, v in subject.to_dict().items() if k not in DOMAIN_FIELDS}
    digest = hashlib.sha256(json.dumps(sleeper, sort_keys=True).encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    g = rng.lognormal(0.0, 0.32, size=STAGE_FEATURES.shape)
    g *= rng.lognormal(0.0, 0.15, size=(1, len(FEATURES)))
    return g


#: relaxed, still wake (``SubjectParams.quiet_wake``): each feature's weight multiplied by a factor
#: drawn per epoch from [low, high): a quieter background, hardly any blinks, eye movements, slow
#: activity or muscle, the alpha left as it was
_QUIET_WAKE = (("bg", 0.25, 0.6), ("beta", 0.2, 0.6), ("delta", 0.1, 0.5), ("theta", 0.5, 1.0),
               ("blink", 0.0, 0.15), ("saccade", 0.0, 0.15), ("emg", 0.2, 0.6))


def epoch_features(rng: np.random.Generator, stages: np.ndarray, subject: SubjectParams) -> np.ndarray:
    """Per-epoch feature weights.

    Returns:
        float64 [n_epochs, len(FEATURES)].
    """
    w = STAGE_FEATURES[stages] * subject_feature_gains(subject)[stages]
    w *= rng.lognormal(0.0, 0.35, size=w.shape)  # epoch-to-epoch variability
    # N1: a mix towards the neighbouring look (wake-like or N2-like), strength per subject
    n1 = np.flatnonzero(stages == 1)
    if n1.size:
        m = rng.uniform(0.0, subject.n1_ambiguity, size=n1.size)
        towards = np.where(rng.random(n1.size) < 0.5, 0, 2)
        prev = stages[np.maximum(n1 - 1, 0)]
        towards = np.where(np.isin(prev, (0, 2)), np.where(rng.random(n1.size) < 0.7, prev, towards), towards)
        w[n1] = (1 - m)[:, None] * w[n1] + m[:, None] * STAGE_FEATURES[towards] * rng.lognormal(0, 0.2, (n1.size, 1))
        w[n1, _IDX["sem"]] *= rng.uniform(0.0, 1.3, n1.size)  # slow eye movements come and go
    # depth: N2 delta from light to near-N3, N3 from threshold to deep
    n2 = stages == 2
    w[n2, _IDX["delta"]] = rng.uniform(0.25, 0.68, n2.sum())
    n3 = stages == 3
    w[n3, _IDX["delta"]] = rng.uniform(0.78, 1.45, n3.sum())
    # REM: tonic (no eye movements, fewer sawtooth) vs phasic epochs
    rem = np.flatnonzero(stages == 4)
    if rem.size:
        phasic = rng.gamma(1.2, 1.0, rem.size)
        phasic[rng.random(rem.size) < 0.3] = 0.0
        w[rem, _IDX["rem"]] = phasic
        w[rem, _IDX["sawtooth"]] *= 0.3 + 0.7 * np.minimum(phasic, 1.5)
    # wake: eyes open/closed changes alpha vs blinks
    wk = np.flatnonzero(stages == 0)
    if wk.size:
        closed = np.where(rng.random(wk.size) < 0.3, rng.uniform(0.02, 0.2, wk.size), rng.uniform(0.3, 1.0, wk.size))
        w[wk, _IDX["alpha"]] *= closed
        w[wk, _IDX["blink"]] *= 1.3 - closed
        w[wk, _IDX["saccade"]] *= 1.3 - closed
        drowsy = rng.random(wk.size) < 0.35  # drowsy wake: alpha fades, eyes roll
        w[wk[drowsy], _IDX["alpha"]] *= rng.uniform(0.2, 0.7, drowsy.sum())
        w[wk[drowsy], _IDX["theta"]] += rng.uniform(0.2, 0.6, drowsy.sum())
        w[wk[drowsy], _IDX["sem"]] += rng.uniform(0.2, 0.8, drowsy.sum())
        if subject.quiet_wake > 0:  # relaxed and still: no draw at 0, so those nights stay as they were
            quiet = wk[rng.random(wk.size) < subject.quiet_wake]
            for name, lo, hi in _QUIET_WAKE:
                w[quiet, _IDX[name]] *= rng.uniform(lo, hi, quiet.size)
    return np.clip(w, 0.0, None)


def feature_track(rng: np.random.Generator, stages: np.ndarray, subject: SubjectParams, plan: NightPlan,
                  bleed_s: int = 14) -> FeatureTrack:
    """Expand epoch weights to 1 Hz, smooth over ``bleed_s`` seconds, add slow wobble, arousals, movements."""
    w = epoch_features(rng, stages, subject)
    n_sec = stages.size * EPOCH_S
    # a random offset per night so that stage changes do not fall exactly on epoch borders
    shift = int(rng.integers(-4, 5))
    values: dict[str, np.ndarray] = {}
    for i, name in enumerate(FEATURES):
        x = np.repeat(w[:, i], EPOCH_S)
        x = np.roll(x, shift)
        x = smooth(x, bleed_s)
        if name not in _RATE_FEATURES:
            x = x * slow_modulation(rng, n_sec, 0.2, corr_s=15.0)
        values[name] = x
    arousal = np.zeros(n_sec)
    for on, dur, strength in plan.arousals:
        i0, i1 = int(on), min(n_sec, int(on + dur) + 1)
        arousal[i0:i1] = np.maximum(arousal[i0:i1], strength)
    arousal = smooth(arousal, 3)
    movement = np.zeros(n_sec)
    for on, dur, strength in plan.movements:
        i0, i1 = int(on), min(n_sec, int(on + dur) + 1)
        movement[i0:i1] = np.maximum(movement[i0:i1], strength)
    return FeatureTrack(values, arousal, movement)
