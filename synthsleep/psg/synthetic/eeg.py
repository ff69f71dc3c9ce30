"""EEG (C4-M1, C3-M2), EOG (E1-M2, E2-M2) and chin EMG with AASM stage features, in uV.

EEG = subject gain x (1/f background + alpha + beta + theta + delta, each a band-limited noise
modulated by its 1-Hz feature track) + transient graphoelements (spindles, K-complexes, vertex
waves, sawtooth bursts) placed by inhomogeneous Poisson processes on the same tracks.
EOG = eye movements (opposite phase in E1/E2: blinks, saccades, slow rolling and rapid eye
movements) + in-phase frontal EEG cross-talk. EMG = high-passed noise scaled by chin tone, with
phasic twitches in REM and bursts at arousals/movements.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfilt

from synthsleep.psg.synthetic.features import FeatureTrack
from synthsleep.psg.synthetic.subject import SubjectParams
from synthsleep.psg.synthetic.util import (
    band_gain,
    peak_gain,
    pink_gain,
    place_kernels,
    poisson_times,
    shaped_noise,
    upsample,
)

EEG_FS = 256.0
EMG_FS = 512.0
DELTA_LOW_HZ = 0.5  # slow-wave activity (N2 light, N3 deep) from here to ``SubjectParams.delta_hi_hz``
THETA_BAND = (4.0, 7.0)  # Hz


def _env(track: np.ndarray, n: int, fs: float) -> np.ndarray:
    return upsample(track, 1.0, n, fs)


def _spindles(rng: np.random.Generator, n: int, fs: float, times: np.ndarray, subject: SubjectParams) -> np.ndarray:
    """Spindles: 11-16 Hz sinusoids under a smooth window, 0.5-2 s, amplitude per spindle."""
    out = np.zeros(n)
    for t0 in times:
        dur = float(np.clip(rng.lognormal(np.log(0.9), 0.35), 0.5, 2.0))
        m = int(dur * fs)
        i0 = int(t0 * fs)
        if i0 + m >= n:
            continue
        tt = np.arange(m) / fs
        f = subject.spindle_hz + rng.normal(0, 0.6)
        chirp = f * tt - 0.15 * tt**2  # spindles slow down slightly
        amp = subject.spindle_uv * rng.lognormal(0, 0.3)
        out[i0 : i0 + m] += amp * np.sin(np.pi * tt / dur) ** 2 * np.sin(2 * np.pi * chirp + rng.uniform(0, 2 * np.pi))
    return out


def _sawtooth(rng: np.random.Generator, n: int, fs: float, times: np.ndarray) -> np.ndarray:
    """REM sawtooth bursts: 2-6 Hz notched triangular waves, 1-4 s, 20-60 uV."""
    out = np.zeros(n)
    for t0 in times:
        dur = float(rng.uniform(1.0, 4.0))
        m = int(dur * fs)
        i0 = int(t0 * fs)
        if i0 + m >= n:
            continue
        tt = np.arange(m) / fs
        f = rng.uniform(2.0, 6.0)
        ph = (f * tt) % 1.0
        saw = np.where(ph < 0.75, ph / 0.75, (1.0 - ph) / 0.25) * 2 - 1  # slow rise, sharp fall
        out[i0 : i0 + m] += rng.uniform(20, 60) * 0.5 * saw * np.sin(np.pi * tt / dur) ** 0.5
    return out


def _kcomplex_kernel(fs: float) -> np.ndarray:
    t = np.arange(int(1.4 * fs)) / fs
    return -np.exp(-0.5 * ((t - 0.35) / 0.08) ** 2) + 0.6 * np.exp(-0.5 * ((t - 0.75) / 0.17) ** 2)


def _vertex_kernel(fs: float) -> np.ndarray:
    t = np.arange(int(0.5 * fs)) / fs
    return -np.exp(-0.5 * ((t - 0.15) / 0.045) ** 2) + 0.35 * np.exp(-0.5 * ((t - 0.3) / 0.05) ** 2)


def render_eeg(rng: np.random.Generator, track: FeatureTrack, subject: SubjectParams,
               fs: float = EEG_FS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two central EEG derivations and the frontal activity the EOG picks up.

    Returns:
        (c4 [n], c3 [n], frontal [n]) float64 in uV, n = seconds x fs.
    """
    n = int(track.n_seconds * fs)
    g = subject.eeg_gain
    arousal = _env(track.arousal, n, fs)
    # components are accumulated in place into ``slow`` / ``fast`` to keep memory down (8-h nights)
    bg = shaped_noise(rng, n, fs, pink_gain(subject.bg_exponent, lp=subject.bg_knee_hz), k=3)
    bg *= _env(track["bg"], n, fs)[None] * subject.background_uv
    fast = shaped_noise(rng, n, fs, peak_gain(subject.alpha_hz, 0.55))[0]
    fast *= (_env(track["alpha"], n, fs) + 1.3 * arousal) * subject.alpha_uv
    beta = shaped_noise(rng, n, fs, band_gain(15.0, 30.0))[0]
    beta *= (_env(track["beta"], n, fs) + 1.0 * arousal) * subject.beta_uv
    fast += beta
    del beta, arousal
    slow = shaped_noise(rng, n, fs, band_gain(*THETA_BAND, 3.0))[0]
    slow *= _env(track["theta"], n, fs) * subject.theta_uv
    delta = shaped_noise(rng, n, fs, band_gain(DELTA_LOW_HZ, subject.delta_hi_hz, 3.0))[0]
    delta *= _env(track["delta"], n, fs) * subject.delta_n3_uv
    slow += delta
    del delta
    # graphoelements
    spind_t = poisson_times(rng, track["spindle"] * subject.spindle_per_min / 60.0)
    kc_t = poisson_times(rng, track["kcomplex"] * subject.kcomplex_per_min / 60.0)
    vx_t = poisson_times(rng, track["vertex"] * 3.0 / 60.0)
    saw_t = poisson_times(rng, track["sawtooth"] * 1.2 / 60.0)
    follow = kc_t[rng.random(kc_t.size) < 0.35] + 0.9  # spindles riding on K-complexes
    fast += _spindles(rng, n, fs, np.sort(np.r_[spind_t, follow]), subject)
    slow += place_kernels(n, fs, kc_t, 90.0 * rng.lognormal(0, 0.3, kc_t.size), _kcomplex_kernel(fs))
    slow += place_kernels(n, fs, vx_t, 55.0 * rng.lognormal(0, 0.3, vx_t.size), _vertex_kernel(fs))
    fast += _sawtooth(rng, n, fs, saw_t)
    # slow: central/frontal slow activity shared by C3/C4; fast: alpha, beta, spindles, sawtooth
    c4 = bg[0] * 0.8 + bg[1] * 0.6 + slow + fast
    c4 *= g
    c3 = bg[0] * 0.8 + bg[2] * 0.6 + slow * rng.uniform(0.85, 1.1) + fast * rng.uniform(0.85, 1.1)
    c3 *= g
    frontal = bg[0] * 0.6 + 1.1 * slow + 0.3 * fast
    frontal *= g
    del bg, slow, fast
    # domain randomisation, drawn after everything above (zero amplitudes leave it unchanged)
    if subject.muscle_uv > 0:  # scalp muscle: follows chin tone, arousals and movements
        env = _env(track["emg"] * (1 + 2.0 * track.arousal + 4.0 * track.movement), n, fs) * subject.muscle_uv
        muscle = shaped_noise(rng, n, fs, band_gain(20.0, 100.0, 2.0), k=2)
        c4 += muscle[0] * env
        c3 += muscle[1] * env
    return c4, c3, frontal


def render_eog(rng: np.random.Generator, track: FeatureTrack, subject: SubjectParams, frontal: np.ndarray,
               central: np.ndarray, fs: float = EEG_FS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """E1-M2 and E2-M2: eye movements in opposite phase plus in-phase frontal EEG; for domain
    randomisation also ``subject.eog_central`` x the whole central EEG ``central`` [n] (uV) and
    each lead's own stage-independent 2-30 Hz activity (``subject.eog_noise_uv`` RMS).

    Returns:
        (e1 [n], e2 [n], eye [n]) float64 in uV; ``eye`` is the eye-movement potential alone
        (the EEG leads pick up a little of it).
    """
    n = frontal.size
    a = subject.eog_uv
    t = np.arange(int(0.6 * fs)) / fs
    blink_k = np.exp(-0.5 * ((t - 0.18) / 0.06) ** 2)
    t2 = np.arange(int(3.0 * fs)) / fs
    sacc_k = (1 - np.exp(-t2 / 0.03)) * np.exp(-t2 / 0.7)  # step through a 0.3-Hz-ish high-pass
    rem_k = (1 - np.exp(-t2 / 0.05)) * np.exp(-t2 / 0.5)
    blink_t = poisson_times(rng, track["blink"] * 10.0 / 60.0)
    sacc_t = poisson_times(rng, track["saccade"] * 12.0 / 60.0)
    burst_t = poisson_times(rng, track["rem"] * 4.0 / 60.0)
    rem_t = np.concatenate([b + np.cumsum(rng.uniform(0.2, 0.8, rng.integers(2, 9))) for b in burst_t]) \
        if burst_t.size else np.zeros(0)
    eye = place_kernels(n, fs, blink_t, -2.0 * a * rng.lognormal(0, 0.3, blink_t.size), blink_k)
    eye += place_kernels(n, fs, sacc_t, a * rng.choice([-1, 1], sacc_t.size) * rng.lognormal(0, 0.4, sacc_t.size), sacc_k)
    eye += place_kernels(n, fs, rem_t, 1.7 * a * rng.choice([-1, 1], rem_t.size) * rng.lognormal(0, 0.35, rem_t.size), rem_k)
    sem = shaped_noise(rng, n, fs, band_gain(0.08, 0.4, 2.0))[0]
    eye += 0.8 * a * sem * _env(track["sem"], n, fs)
    xtalk = rng.uniform(0.25, 0.55) * subject.eog_frontal
    own = shaped_noise(rng, n, fs, pink_gain(1.0), k=2) * 4.0
    e1 = eye * rng.uniform(0.85, 1.15) + xtalk * frontal + own[0]
    e2 = -eye * rng.uniform(0.85, 1.15) + xtalk * frontal * rng.uniform(0.8, 1.2) + own[1]
    if subject.eog_central:  # drawn after everything above: 0 leaves the leads as they were
        e1 += subject.eog_central * central
        e2 += subject.eog_central * rng.uniform(0.7, 1.0) * central
    if subject.eog_noise_uv:
        fast_own = shaped_noise(rng, n, fs, pink_gain(1.0, hp=2.0, lp=30.0), k=2)
        e1 += subject.eog_noise_uv * fast_own[0]
        e2 += subject.eog_noise_uv * fast_own[1]
    return e1, e2, eye


def render_emg(rng: np.random.Generator, track: FeatureTrack, subject: SubjectParams, n_seconds: int,
               fs: float = EMG_FS) -> np.ndarray:
    """Chin EMG: 10-250 Hz noise x (tone + REM twitches + arousal/movement bursts), uV [n]."""
    n = int(n_seconds * fs)
    tone = _env(track["emg"] * (1 + 1.8 * track.arousal + 4.0 * track.movement), n, fs)
    tw_t = poisson_times(rng, track["rem"] * 8.0 / 60.0)
    k = np.hanning(max(3, int(0.12 * fs)))
    twitch = place_kernels(n, fs, tw_t, rng.uniform(2.0, 6.0, tw_t.size) * 0.3, k)
    sos = butter(2, 10.0, btype="highpass", fs=fs, output="sos")
    noise = sosfilt(sos, rng.standard_normal(n))
    noise /= max(float(np.std(noise)), 1e-9)
    floor = 0.6 + 0.2 * subject.noise_uv
    return subject.emg_tone_uv * noise * (tone + twitch) + floor * rng.standard_normal(n)
