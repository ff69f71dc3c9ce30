"""Training-time augmentation of preprocessed epochs, for transfer from synthetic to real PSG.

Applied to model inputs (100 Hz, normalised) during end-to-end fine-tuning only; evaluation and
inference never see it. What it imitates: recorders with a low native rate (a 50-Hz file has
nothing above 25 Hz), other amplifiers and montages (gain, noise), and sensors that are absent.
"""

from __future__ import annotations

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
