"""Training-time augmentation of preprocessed epochs, for transfer from synthetic to real PSG.

Applied to model inputs (100 Hz, normalised) during end-to-end fine-tuning only; evaluation and
inference never see it. What it imitates: recorders with a low native rate (a 50-Hz file has
nothing above 25 Hz), other amplifiers and montages (gain, noise), and sensors that are absent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..psg.epoch import TARGET_RATE


def augment_epochs(x: np.ndarray, present: np.ndarray, rng: np.random.Generator,
                   modalities: tuple[str, ...], p_lowpass: float = 0.5, gain_sd: float = 0.25,
                   noise_max: float = 0.3, p_drop: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Augment a batch of epoch windows.

    Args:
        x: float32 [B, T, M, 3000] normalised epochs (a copy is returned).
        present: bool [B, T, M].
        rng: random generator.
        modalities: names of the M rows.
        p_lowpass: chance per (window, modality) of a low-pass at a random 15-40 Hz cutoff.
        gain_sd: log-normal gain spread per (window, modality).
        noise_max: largest standard deviation of added white noise (normalised units).
        p_drop: chance per (window, modality other than eeg) of marking it absent.

    Returns:
        (x [B, T, M, 3000], present [B, T, M]), augmented; the same change holds for all T
        epochs of a window, as a recorder's properties do over a night.
    """
    x = x.copy()
    present = present.copy()
    b, _, m, n = x.shape
    freqs = np.fft.rfftfreq(n, 1.0 / TARGET_RATE)
    for i in range(b):
        for j, name in enumerate(modalities):
            if name != "spo2" and rng.random() < p_lowpass:
                cut = rng.uniform(15.0, 40.0)
                spec = np.fft.rfft(x[i, :, j], axis=-1)
                spec[..., freqs > cut] = 0.0
                x[i, :, j] = np.fft.irfft(spec, n=n, axis=-1)
            x[i, :, j] *= np.exp(rng.normal(0.0, gain_sd))
            x[i, :, j] += rng.normal(0.0, rng.uniform(0.0, noise_max), size=x[i, :, j].shape)
            if name != "eeg" and rng.random() < p_drop:
                present[i, :, j] = False
        x[i][~present[i]] = 0.0
    return x.astype(np.float32), present


#: Sensor sets that real recordings come with, besides the full montage: EEG alone (a headband,
#: the DREAMS excerpts), EEG+EOG(+EMG) (Sleep-EDF cassette), no respiratory channels, a PSG that
#: lost its chin EMG or its oximeter (DREAMS excerpt3 at 50 Hz: EMG unusable, SpO2 implausible).
REDUCED_MONTAGES: tuple[tuple[str, ...], ...] = (
    ("eeg",),
    ("eeg", "eog"),
    ("eeg", "eog", "emg"),
    ("eeg", "eog", "emg", "ecg"),
    ("eeg", "eog", "ecg", "airflow", "thorax", "abdomen"),
    ("eeg", "eog", "emg", "ecg", "airflow", "thorax", "abdomen"),
    ("eeg", "eog", "emg", "ecg", "spo2"),
)


def montage_mask(montage: tuple[str, ...], modalities: tuple[str, ...]) -> np.ndarray:
    """bool [M]: which of ``modalities`` the sensor set ``montage`` records."""
    return np.array([m in montage for m in modalities], dtype=bool)


def draw_montage(rng: np.random.Generator, modalities: tuple[str, ...],
                 weights: Sequence[float]) -> np.ndarray:
    """One of ``REDUCED_MONTAGES`` at random, as a bool [M] mask.

    ``weights``: relative chance of each montage, in ``REDUCED_MONTAGES`` order (the run
    config's ``finetune.montage_weights``).
    """
    w = np.asarray(weights, dtype=float)
    if w.shape != (len(REDUCED_MONTAGES),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"montage weights must be {len(REDUCED_MONTAGES)} non-negative numbers "
                         f"(one per augment.REDUCED_MONTAGES entry, not all 0), got {list(weights)}")
    k = int(rng.choice(len(REDUCED_MONTAGES), p=w / w.sum()))
    return montage_mask(REDUCED_MONTAGES[k], modalities)


def montage_dropout(present: np.ndarray, rng: np.random.Generator, modalities: tuple[str, ...],
                    p: float, weights: Sequence[float]) -> np.ndarray:
    """Whole-window sensor loss: each window, with probability ``p``, keeps only the sensors of a
    random reduced montage (the same for all its epochs, as a recorder's set is over a night).

    Unlike per-epoch modality dropout (rare, independent losses), this trains the model on the
    sensor subsets it meets in real files, so EEG alone is scored from EEG, not from an input
    pattern it has never seen. A window left with no modality keeps its original mask.

    Args:
        present: bool [B, T, M].
        rng: random generator.
        modalities: names of the M columns.
        p: chance per window of a reduced montage.
        weights: relative chance of each of ``REDUCED_MONTAGES`` (see ``draw_montage``).

    Returns:
        bool [B, T, M] (a copy).
    """
    out = present.copy()
    for i in range(out.shape[0]):
        if rng.random() < p:
            reduced = out[i] & draw_montage(rng, modalities, weights)[None]
            if reduced.any():
                out[i] = reduced
    return out


def corrupt_modality(x: np.ndarray, present: np.ndarray, rng: np.random.Generator,
                     modalities: tuple[str, ...], p: float) -> np.ndarray:
    """A sensor that is present but carries something foreign, for a whole window.

    With probability ``p`` per window, one present modality other than the EEG is replaced by
    one of: white noise, 1/f noise, another modality's signal of the same window, or its own
    signal from another window of the batch; it stays marked present. Trained this way the
    model cannot let one sensor override the others (a real ECG unlike the synthetic ones turned
    every epoch of DREAMS excerpt3 into "wake").

    Args:
        x: float32 [B, T, M, 3000] normalised epochs (a copy is returned).
        present: bool [B, T, M].
        rng: random generator.
        modalities: names of the M rows.
        p: chance per window.

    Returns:
        float32 [B, T, M, 3000].
    """
    x = x.copy()
    b, t, m, n = x.shape
    for i in range(b):
        cand = [j for j in range(m) if modalities[j] != "eeg" and present[i, :, j].any()]
        if not cand or rng.random() >= p:
            continue
        j = int(rng.choice(cand))
        kind = int(rng.integers(4))
        if kind == 0:
            y = rng.standard_normal((t, n))
        elif kind == 1:
            y = np.cumsum(rng.standard_normal((t, n)), axis=-1)
            y -= y.mean(axis=-1, keepdims=True)
        elif kind == 2 and m > 1:
            y = x[i, :, int(rng.choice([k for k in range(m) if k != j])), :].copy()
        else:
            y = x[int(rng.integers(b)), :, j, :][rng.permutation(t)]
        scale = np.maximum(y.std(axis=-1, keepdims=True), 1e-6)
        x[i, :, j] = np.where(present[i, :, j, None], y / scale, 0.0)
    return x.astype(np.float32)
