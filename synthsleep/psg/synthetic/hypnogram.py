"""Stage sequences: a time-of-night-dependent Markov chain fitted to real expert hypnograms.

The model: one 5x5 transition matrix per hour-of-sleep bin (hour 0 = the hour after sleep onset,
the last bin covers everything later), so that N3 comes early and REM late, plus the
distribution of the first sleep stage. Wake before sleep onset and after the final awakening
is sampled separately (real recordings are trimmed to at most 30 min of wake each side).

The fitted parameters ship as ``synthsleep/data/hypnogram_model.json`` so generation works
without the real data; ``fit_hypnogram_model`` re-creates them from the real hypnograms.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

STAGE_CODES = {"W": 0, "N1": 1, "N2": 2, "N3": 3, "REM": 4, "R": 4}
N_STAGES = 5
EPOCHS_PER_HOUR = 120
MAX_EDGE_WAKE_EPOCHS = 60  # 30 min
DEFAULT_MODEL_RESOURCE = "hypnogram_model.json"


class HypnogramModelError(ValueError):
    """A hypnogram file or model table cannot be used."""


def trim_wake(stages: np.ndarray, keep_epochs: int = MAX_EDGE_WAKE_EPOCHS) -> np.ndarray:
    """Cut the wake before the first and after the last sleep epoch down to ``keep_epochs``.

    Args:
        stages: int [n] stage codes 0..4 (-1 unknown is dropped first).
        keep_epochs: wake epochs kept on each side of sleep.

    Returns:
        int8 [m] trimmed stage codes; empty when the night holds no sleep.
    """
    s = np.asarray(stages, dtype=np.int8)
    s = s[s >= 0]
    sleep = np.flatnonzero(s > 0)
    if sleep.size == 0:
        return s[:0]
    lo = max(0, int(sleep[0]) - keep_epochs)
    hi = min(s.size, int(sleep[-1]) + 1 + keep_epochs)
    return s[lo:hi]


def read_sleep_edf_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Read the ``night,epoch,stage`` CSV of real hypnograms.

    Returns:
        night id -> int8 [n_epochs] stage codes (epochs in file order, sorted by epoch number).
    """
    path = Path(path)
    nights: dict[str, list[tuple[int, int]]] = {}
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"night", "epoch", "stage"} - set(reader.fieldnames or ())
            if missing:
                raise HypnogramModelError(f"{path}: missing columns {sorted(missing)}; found {reader.fieldnames}")
            for row_no, row in enumerate(reader, start=2):
                code = STAGE_CODES.get(row["stage"].strip().upper() if row["stage"] else "")
                if code is None:
                    code = STAGE_CODES.get(row["stage"].strip(), -1)
                if code == -1:
                    logger.debug("%s line %d: unknown stage %r, treated as unscored", path, row_no, row["stage"])
                nights.setdefault(row["night"], []).append((int(row["epoch"]), code))
    except OSError as exc:
        raise HypnogramModelError(f"{path}: cannot read ({exc})") from exc
    return {k: np.array([c for _, c in sorted(v)], dtype=np.int8) for k, v in nights.items()}


def read_simple_hypnogram(path: str | Path) -> np.ndarray:
    """Read a one-value-per-line hypnogram (integers 0..4 or W/N1/N2/N3/R strings; '#' comments)."""
    path = Path(path)
    out: list[int] = []
    for line in Path(path).read_text().splitlines():
        tok = line.strip()
        if not tok or tok.startswith("#"):
            continue
        if tok.lstrip("-").isdigit():
            v = int(tok)
            out.append(v if 0 <= v <= 4 else -1)
        else:
            out.append(STAGE_CODES.get(tok.upper(), -1))
    return np.array(out, dtype=np.int8)


def _count_transitions(nights: Iterable[np.ndarray], n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    counts = np.zeros((n_bins, N_STAGES, N_STAGES))
    first = np.zeros(N_STAGES)
    for s in nights:
        sleep = np.flatnonzero(s > 0)
        if sleep.size == 0:
            continue
        onset = int(sleep[0])
        first[s[onset]] += 1
        for i in range(onset, s.size - 1):
            b = min((i - onset) // EPOCHS_PER_HOUR, n_bins - 1)
            counts[b, s[i], s[i + 1]] += 1
    return counts, first


def fit_hypnogram_model(
    csv_path: str | Path,
    extra: Sequence[str | Path] = (),
    n_bins: int = 9,
    prior_strength: float = 30.0,
) -> dict:
    """Fit the time-of-night Markov chain to real hypnograms.

    Args:
        csv_path: the Sleep-EDF ``night,epoch,stage`` CSV.
        extra: more one-value-per-line hypnograms (YASA format).
        n_bins: hour-of-sleep bins; the last one covers all later hours.
        prior_strength: pseudo-counts per row pulling each bin's row towards the pooled row
            (sparse late bins fall back on the whole-night transition probabilities).

    Returns:
        JSON-able dict: ``transitions`` [n_bins][5][5] (row = from, col = to, rows sum to 1),
        ``first_sleep_stage`` [5], ``n_nights``, ``sources``, the trimmed real stage
        statistics (``real_stats``) and the version.
    """
    nights = list(read_sleep_edf_csv(csv_path).values())
    for p in extra:
        nights.append(read_simple_hypnogram(p))
    trimmed = [t for t in (trim_wake(s) for s in nights) if t.size]
    if not trimmed:
        raise HypnogramModelError(f"{csv_path}: no night with sleep in it")
    counts, first = _count_transitions(trimmed, n_bins)
    pooled = counts.sum(axis=0) + 1.0
    pooled /= pooled.sum(axis=1, keepdims=True)
    trans = counts + prior_strength * pooled[None]
    trans /= trans.sum(axis=2, keepdims=True)
    first = (first + 0.5) / (first + 0.5).sum()
    from synthsleep.psg.synthetic.stats import hypnogram_stats  # local: avoids a cycle

    stats = [hypnogram_stats(t) for t in trimmed]
    real_stats = {k: float(np.nanmean([s.get(k, np.nan) for s in stats])) for k in stats[0]}
    logger.info("fitted hypnogram model on %d nights (%d epochs)", len(trimmed), sum(t.size for t in trimmed))
    return {
        "version": 1,
        "epoch_seconds": 30.0,
        "bin_hours": 1.0,
        "stages": ["W", "N1", "N2", "N3", "REM"],
        "transitions": np.round(trans, 6).tolist(),
        "first_sleep_stage": np.round(first, 6).tolist(),
        "sleep_onset_latency_min": {"median": 12.0, "sigma": 0.6, "min": 2.0, "max": 30.0},
        "final_wake_min": {"min": 0.0, "max": 30.0},
        "n_nights": len(trimmed),
        "sources": [str(Path(csv_path).name)] + [Path(p).name for p in extra],
        "real_stats": real_stats,
    }


def load_hypnogram_model(path: str | Path | None = None) -> dict:
    """Load a model table (default: the one shipped in ``synthsleep/data``) and check its shape."""
    try:
        if path is None:
            shipped = Path(__file__).resolve().parents[2] / "data" / DEFAULT_MODEL_RESOURCE
            text = shipped.read_text()
            where = str(shipped)
        else:
            text = Path(path).read_text()
            where = str(path)
        model = json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise HypnogramModelError(f"{path or DEFAULT_MODEL_RESOURCE}: cannot load hypnogram model ({exc})") from exc
    trans = np.asarray(model.get("transitions", []), dtype=float)
    if trans.ndim != 3 or trans.shape[1:] != (N_STAGES, N_STAGES) or not np.allclose(trans.sum(axis=2), 1, atol=1e-3):
        raise HypnogramModelError(f"{where}: 'transitions' must be [bins][5][5] with rows summing to 1, got {trans.shape}")
    return model


def with_wake_gain(trans: np.ndarray, wake_gain: float) -> np.ndarray:
    """Transition matrices [bins, 5, 5] with every sleep stage's chance of waking up (its row's
    W entry) multiplied by ``wake_gain`` (capped at 0.5), the row's other entries scaled to keep
    its sum at 1: a sleeper who wakes more often, bouts of wake as long as before. 1: unchanged."""
    if wake_gain == 1.0:
        return trans
    if not (np.isfinite(wake_gain) and wake_gain > 0):
        raise ValueError(f"wake_gain must be a positive number, got {wake_gain!r}")
    out = trans.copy()
    old = out[:, 1:, 0]
    new = np.minimum(old * wake_gain, 0.5)
    out[:, 1:, 1:] *= ((1.0 - new) / np.maximum(1.0 - old, 1e-12))[..., None]
    out[:, 1:, 0] = new
    return out


def sample_hypnogram(rng: np.random.Generator, n_epochs: int, model: dict | None = None,
                     wake_gain: float = 1.0) -> np.ndarray:
    """Draw a stage sequence of ``n_epochs`` 30-s epochs.

    Wake before sleep onset (lognormal latency, capped at 30 min), the Markov chain with
    hour-of-sleep dependent transitions, then a final wake stretch of up to 30 min.
    ``wake_gain`` multiplies the chance of waking up from sleep (``with_wake_gain``; the
    sleeper's ``SubjectParams.wake_gain``); the random numbers drawn do not depend on it.

    Returns:
        int8 [n_epochs] stage codes 0..4.
    """
    model = model if model is not None else load_hypnogram_model()
    trans = with_wake_gain(np.asarray(model["transitions"], dtype=float), wake_gain)
    cum = np.cumsum(trans, axis=2)
    first = np.asarray(model["first_sleep_stage"], dtype=float)
    sol = model["sleep_onset_latency_min"]
    fin = model["final_wake_min"]
    latency_min = float(np.clip(sol["median"] * np.exp(sol["sigma"] * rng.standard_normal()), sol["min"], sol["max"]))
    final_min = float(rng.uniform(fin["min"], fin["max"]))
    pre = min(n_epochs, int(round(latency_min * 2)))
    post = int(round(final_min * 2))
    if n_epochs - pre - post < 10:  # short nights: mostly sleep
        pre = min(pre, max(0, n_epochs // 10))
        post = 0
    out = np.zeros(n_epochs, dtype=np.int8)
    n_sleep = n_epochs - pre - post
    if n_sleep <= 0:
        return out
    u = rng.random(n_sleep)
    s = int(np.searchsorted(np.cumsum(first), u[0] * first.sum()))
    s = min(max(s, 1), 4)
    out[pre] = s
    n_bins = trans.shape[0]
    for i in range(1, n_sleep):
        b = min(i // EPOCHS_PER_HOUR, n_bins - 1)
        s = int(np.searchsorted(cum[b, s], u[i] * cum[b, s, -1]))
        s = min(s, 4)
        out[pre + i] = s
    # the final awakening: the sleep period ends in sleep, wake follows
    return out
