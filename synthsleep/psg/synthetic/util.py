"""Small signal-building helpers shared by the synthetic generators (all vectorised numpy)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def shaped_noise(rng: np.random.Generator, n: int, fs: float, gain: Callable[[np.ndarray], np.ndarray],
                 k: int = 1) -> np.ndarray:
    """Gaussian noise with amplitude spectrum ``gain(f)``, scaled to unit RMS.

    Args:
        rng: random generator.
        n: samples.
        fs: sample rate in Hz.
        gain: f [Hz] -> amplitude response (>= 0), vectorised.
        k: how many independent series.

    Returns:
        float64 [k, n] (unit RMS each).
    """
    from scipy import fft as sfft

    m = n // 2 + 1
    # the spectrum of white Gaussian noise drawn directly (saves the forward transform)
    spec = rng.standard_normal((k, m)) + 1j * rng.standard_normal((k, m))
    spec[:, 0] = 0.0
    f = np.fft.rfftfreq(n, 1.0 / fs)
    spec *= gain(f)[None]
    out = sfft.irfft(spec, n=n, axis=1)
    rms = np.sqrt(np.mean(out**2, axis=1, keepdims=True))
    return out / np.maximum(rms, 1e-12)


def band_gain(lo: float, hi: float, order: float = 4.0) -> Callable[[np.ndarray], np.ndarray]:
    """Smooth band-pass amplitude response (Butterworth-like magnitude) for ``shaped_noise``."""

    def g(f: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            hp = 1.0 / np.sqrt(1.0 + (lo / np.maximum(f, 1e-9)) ** (2 * order))
        lp = 1.0 / np.sqrt(1.0 + (f / hi) ** (2 * order))
        return hp * lp

    return g


def peak_gain(center: float, width: float) -> Callable[[np.ndarray], np.ndarray]:
    """Gaussian spectral peak (center, standard deviation ``width`` in Hz)."""
    return lambda f: np.exp(-0.5 * ((f - center) / width) ** 2)


def pink_gain(exponent: float = 1.0, hp: float = 0.3, lp: float = 100.0) -> Callable[[np.ndarray], np.ndarray]:
    """1/f^exponent amplitude response with a 1st-order high-pass at ``hp`` and low-pass at ``lp``."""

    def g(f: np.ndarray) -> np.ndarray:
        ff = np.maximum(f, 1e-3)
        return (1.0 / (ff + 0.5) ** exponent) * (ff / np.sqrt(ff**2 + hp**2)) / np.sqrt(1 + (ff / lp) ** 4)

    return g


def smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average (boxcar of ``width`` samples, edges padded by reflection)."""
    if width <= 1:
        return np.asarray(x, dtype=float)
    pad = width // 2
    xp = np.pad(np.asarray(x, dtype=float), (pad, width - 1 - pad), mode="edge")
    c = np.cumsum(np.r_[0.0, xp])
    return (c[width:] - c[:-width]) / width


def upsample(env: np.ndarray, env_fs: float, n: int, fs: float) -> np.ndarray:
    """Linear interpolation of an envelope sampled at ``env_fs`` (first sample at t=0.5/env_fs) to ``n`` samples at ``fs``."""
    t_env = (np.arange(env.size) + 0.5) / env_fs
    t = np.arange(n) / fs
    return np.interp(t, t_env, env)


def slow_modulation(rng: np.random.Generator, n_seconds: int, sigma: float, corr_s: float = 20.0) -> np.ndarray:
    """Multiplicative lognormal wobble at 1 Hz with correlation time ``corr_s`` (mean about 1)."""
    z = rng.standard_normal(n_seconds + 4 * int(corr_s))
    z = smooth(z, int(corr_s))[: n_seconds]
    z /= max(float(np.std(z)), 1e-9)
    return np.exp(sigma * z - 0.5 * sigma**2)


def place_kernels(n: int, fs: float, times: np.ndarray, amps: np.ndarray, kernel: np.ndarray,
                  center: int = 0) -> np.ndarray:
    """Sum of ``amps[i] * kernel`` placed at ``times[i]`` seconds (kernel sample ``center`` at the time).

    Returns:
        float64 [n]
    """
    from scipy.signal import oaconvolve

    imp = np.zeros(n)
    idx = np.round(np.asarray(times) * fs).astype(np.int64) - center
    ok = (idx >= 0) & (idx < n)
    np.add.at(imp, idx[ok], np.asarray(amps, dtype=float)[ok])
    if not ok.any():
        return imp
    return oaconvolve(imp, kernel, mode="full")[:n]


def poisson_times(rng: np.random.Generator, rate_per_s: np.ndarray) -> np.ndarray:
    """Event times (s) of an inhomogeneous Poisson process with a per-second rate array."""
    counts = rng.poisson(np.maximum(rate_per_s, 0.0))
    sec = np.repeat(np.arange(rate_per_s.size), counts)
    return np.sort(sec + rng.random(sec.size))


def sinusoid(n: int, fs: float, freq: float, phase: float) -> np.ndarray:
    """sin(2 pi freq t + phase) for n samples at fs; tiled from one exact period when freq/fs is rational."""
    from fractions import Fraction

    r = Fraction(freq / fs).limit_denominator(4096)
    if abs(float(r) - freq / fs) < 1e-12 and 0 < r.denominator <= 4096:
        period = r.denominator
        base = np.sin(2 * np.pi * freq * np.arange(period) / fs + phase)
        return np.resize(base, n)
    return np.sin(2 * np.pi * freq * np.arange(n) / fs + phase)
