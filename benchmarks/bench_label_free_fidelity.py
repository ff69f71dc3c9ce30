"""Do the synthetic EEG and EOG look like the real ones? Judged without reading a single real label.

    python benchmarks/bench_label_free_fidelity.py [--nights 4] [--hours 3]

Per 30-s epoch of one EEG channel: log10 power 0.5-24 Hz (uV^2), the share of that power in
0.5-2, 2-4, 4-8, 8-12, 12-16 and 16-24 Hz, and the 2-24 Hz log-log spectral slope. Their 10th,
50th and 90th percentiles over *every* epoch of the 8 real DREAMS single-EEG excerpts (no
hypnogram is read: the excerpts are ~80 % sleep, so the synthetic side is its sleep epochs) beside
the same over held-out synthetic nights of the plain and the domain-randomised generator.

``gap`` per feature and generator: how far the synthetic percentiles sit from the real ones,
mean |difference| of the three percentiles over the real 10-90 % range (0 = same spread; above ~0.3
the model trains on a distribution the real recordings leave). A generator change whose gaps
shrink brings the training data nearer the real data without any label; this is how
``delta_hi_hz`` was found (real 2-4 Hz share 0.10/0.22/0.36, the 2-Hz-edge generator 0.11/0.17/0.23).

The EOG table does the same for the one real recording with EOG leads, ``excerpt3.edf`` (E1-A1 and
E2-A1 at 50 Hz, every epoch, no hypnogram read) against the synthetic E1-M2 and E2-M2 of sleep
epochs, with two more features: each epoch's correlation between the two leads and between E1 and
the central EEG. This is how ``eog_central`` and ``eog_noise_uv`` were found (real EOG 8-12 Hz share
0.023/0.061/0.133, the generator's 0.005/0.016/0.05; E1 vs C3-A1 correlation -0.30, generator +0.5).
Needs ../shared/data/real/dreams; prints two tables.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from bench_real_transfer import DREAMS, read_excerpt  # noqa: E402
from scipy.signal import welch  # noqa: E402

BANDS = ((0.5, 2.0), (2.0, 4.0), (4.0, 8.0), (8.0, 12.0), (12.0, 16.0), (16.0, 24.0))
NAMES = ("log10 power", *(f"share {lo:g}-{hi:g} Hz" for lo, hi in BANDS), "slope 2-24 Hz")
EOG_NAMES = (*NAMES, "corr E1 vs E2", "corr E1 vs EEG")
REAL_EOG = ("EOG1-A1", "EOG2-A1", "C3-A1")  # excerpt3.edf: the two EOG leads and the central EEG
SEED = 4242  # subjects no training run draws


def epoch_features(x: np.ndarray, fs: float) -> np.ndarray:
    """[n_epochs, 8] features of consecutive 30-s epochs of ``x`` (uV at ``fs`` Hz); epochs with a
    non-finite sample or no power are dropped."""
    out = _all_epoch_features(x, fs)
    return out[np.isfinite(out).all(1)]


def _all_epoch_features(x: np.ndarray, fs: float) -> np.ndarray:
    """``epoch_features`` with every epoch kept: a NaN row where it would drop one."""
    n = int(30 * fs)
    k = x.size // n
    f, p = welch(x[: k * n].reshape(k, n), fs, nperseg=int(4 * fs), axis=1)
    total = p[:, (f >= 0.5) & (f < 24)].sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = [p[:, (f >= lo) & (f < hi)].sum(1) / total for lo, hi in BANDS]
        sel = (f >= 2) & (f < 24)
        slope = np.polyfit(np.log(f[sel]), np.log(p[:, sel].T + 1e-12), 1)[0]
        out = np.c_[np.log10(total), np.array(shares).T, slope]
    out[~(total > 0)] = np.nan
    return out


def epoch_correlation(a: np.ndarray, b: np.ndarray, fs: float) -> np.ndarray:
    """[n_epochs] Pearson correlation of ``a`` and ``b`` over each 30-s epoch (NaN where either is)."""
    n = int(30 * fs)
    k = min(a.size, b.size) // n
    x, y = (v[: k * n].reshape(k, n) for v in (a, b))
    x, y = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (x * y).sum(1) / np.sqrt((x * x).sum(1) * (y * y).sum(1))


def eog_features(e1: np.ndarray, e2: np.ndarray, eeg: np.ndarray, fs: float) -> np.ndarray:
    """[2 x n_epochs, 10]: ``epoch_features`` of each lead, with the E1-E2 and E1-EEG correlation of
    the epoch appended (both leads' rows carry them); rows with a non-finite value are dropped."""
    n = min(x.size for x in (e1, e2, eeg)) // int(30 * fs)
    c = np.c_[epoch_correlation(e1, e2, fs), epoch_correlation(e1, eeg, fs)][:n]
    rows = [np.c_[_all_epoch_features(x, fs)[:n], c] for x in (e1, e2)]
    out = np.concatenate(rows)
    return out[np.isfinite(out).all(1)]


def real_features(dreams: Path) -> np.ndarray:
    return np.concatenate([epoch_features(x, fs) for _, fs, x in (read_excerpt(dreams, k) for k in range(1, 9))])


def real_eog_features(dreams: Path) -> np.ndarray:
    from synthsleep.psg.recording import open_recording

    with open_recording(dreams / "excerpt3.edf") as rec:
        fs = rec.channel(REAL_EOG[0]).rate
        return eog_features(*(rec.read(label) for label in REAL_EOG), fs)


def _sleep_only(night, label: str) -> np.ndarray:
    """The channel's samples with its wake epochs set to NaN (they drop out as non-finite)."""
    s = night.signal(label)
    x = np.asarray(s.data, float)
    asleep = np.repeat(np.asarray(night.stages) > 0, int(30 * s.rate))
    return np.where(asleep[: x.size], x, np.nan)


def synthetic_features(randomize: bool, nights: int, hours: float) -> tuple[np.ndarray, np.ndarray]:
    """(EEG features [n, 8], EOG features [m, 10]) of the sleep epochs of held-out synthetic nights."""
    from synthsleep.psg.synthetic import SubjectParams, synthesize_night

    eeg_rows, eog_rows = [], []
    for j in range(nights):
        subject = SubjectParams.draw(np.random.default_rng([SEED, j]), None, randomize=randomize)
        night = synthesize_night(seed=SEED * 10 + j, hours=hours, subject=subject)
        fs = night.signal("EEG C4-M1").rate
        x, e1, e2 = (_sleep_only(night, label) for label in ("EEG C4-M1", "EOG E1-M2", "EOG E2-M2"))
        eeg_rows.append(epoch_features(x, fs))
        eog_rows.append(eog_features(e1, e2, x, fs))
    return np.concatenate(eeg_rows), np.concatenate(eog_rows)


def gap(real: np.ndarray, synth: np.ndarray) -> float:
    r, s = np.percentile(real, [10, 50, 90]), np.percentile(synth, [10, 50, 90])
    return float(np.mean(np.abs(r - s)) / max(r[2] - r[0], 1e-9))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dreams", type=Path, default=DREAMS)
    ap.add_argument("--nights", type=int, default=4, help="synthetic nights per generator (default 4)")
    ap.add_argument("--hours", type=float, default=3.0, help="hours per synthetic night (default 3)")
    args = ap.parse_args(argv)
    if not (args.dreams / "excerpt1.txt").exists():
        print(f"no DREAMS data at {args.dreams}: nothing to measure")
        return 0
    synth = {kind: synthetic_features(kind == "randomised", args.nights, args.hours)
             for kind in ("plain", "randomised")}
    real = real_features(args.dreams)
    print(f"EEG. real: {len(real)} epochs of 8 DREAMS excerpts (all, unlabelled); synthetic: "
          + ", ".join(f"{k} {len(v[0])} sleep epochs" for k, v in synth.items()))
    print_table(NAMES, real, {k: v[0] for k, v in synth.items()})
    real_eog = real_eog_features(args.dreams)
    print(f"\nEOG. real: {len(real_eog)} lead-epochs of excerpt3.edf (E1-A1, E2-A1; unlabelled); synthetic: "
          + ", ".join(f"{k} {len(v[1])} sleep lead-epochs" for k, v in synth.items()))
    print_table(EOG_NAMES, real_eog, {k: v[1] for k, v in synth.items()})
    return 0


def print_table(names: tuple[str, ...], real: np.ndarray, synth: dict[str, np.ndarray]) -> None:
    """One row per feature: real and synthetic 10/50/90th percentiles and the gap; then the mean gap."""
    print(f"\n{'feature':18s} {'real p10/p50/p90':>24s}   " + "   ".join(f"{k + ' p10/p50/p90':>26s}  gap" for k in synth))
    fmt = lambda a: "/".join(f"{v:.3f}" for v in np.percentile(a, [10, 50, 90]))  # noqa: E731
    gaps: dict[str, list[float]] = {k: [] for k in synth}
    for i, name in enumerate(names):
        cells = []
        for k, s in synth.items():
            gaps[k].append(gap(real[:, i], s[:, i]))
            cells.append(f"{fmt(s[:, i]):>26s} {gaps[k][-1]:4.2f}")
        print(f"{name:18s} {fmt(real[:, i]):>24s}   " + "   ".join(cells))
    print(f"{'mean gap':18s} {'':>24s}   " + "   ".join(f"{'':>26s} {np.mean(g):4.2f}" for g in gaps.values()))


if __name__ == "__main__":
    raise SystemExit(main())
