"""Respiration (airflow, thoracic/abdominal effort at 32 Hz), SpO2 (1 Hz) and ECG (512 Hz).

All rendered from the same ``NightPlan``: an obstructive apnea silences the airflow while effort
goes on (thorax and abdomen drift into opposite phase), a central apnea silences both, a mixed
one starts central and ends obstructive, a hypopnea reduces the flow by 50-80 %. Recovery
breaths follow each event, the SpO2 nadir lags the event end by 18-30 s, the heart slows during
apneas and speeds up at the arousal that ends them.
"""

from __future__ import annotations

import numpy as np

from synthsleep.psg.synthetic.events import EPOCH_S, NightPlan
from synthsleep.psg.synthetic.features import FeatureTrack
from synthsleep.psg.synthetic.subject import SubjectParams
from synthsleep.psg.synthetic.util import band_gain, shaped_noise, slow_modulation, smooth, upsample

RESP_FS = 32.0
ECG_FS = 512.0
SPO2_FS = 1.0
_BREATH_STAGE = np.array([1.06, 1.0, 0.97, 0.95, 1.05])
_HR_STAGE = np.array([1.10, 1.04, 1.0, 0.95, 1.05])
_AIRFLOW_AMP = 150.0
_EFFORT_AMP = (400.0, 300.0)


def _ramp_set(x: np.ndarray, fs: float, t0: float, t1: float, value: float, ramp: float) -> None:
    """Set x to ``value`` on [t0, t1] with linear ramps of ``ramp`` s before t0 (in) and after t1 (out)."""
    n = x.size
    i0, i1 = int(t0 * fs), min(n, int(t1 * fs))
    r = max(1, int(ramp * fs))
    a = max(0, i0 - r)
    if i0 > a:
        x[a:i0] = np.linspace(x[a], value, i0 - a, endpoint=False)
    x[i0:i1] = value
    b = min(n, i1 + r)
    if b > i1:
        x[i1:b] = np.linspace(value, x[b - 1] if b < n else 1.0, b - i1)


def respiratory_modulation(rng: np.random.Generator, plan: NightPlan, n: int, fs: float = RESP_FS
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Airflow factor, effort factor and paradox fraction (0 in phase .. 1 opposite), each [n] at ``fs``."""
    flow = np.ones(n)
    effort = np.ones(n)
    paradox = np.zeros(n)
    for ev in plan.resp:
        on, end, d = ev.onset, ev.end, ev.duration
        if ev.type == "hypopnea":
            _ramp_set(flow, fs, on, end, ev.flow_factor, 2.0)
            _ramp_set(effort, fs, on, end, 0.55 + 0.4 * ev.flow_factor, 2.0)
            if rng.random() < 0.3:
                _ramp_set(paradox, fs, on + 2, end, 0.35, 3.0)
        elif ev.type == "central_apnea":
            _ramp_set(flow, fs, on, end, ev.flow_factor, 1.0)
            _ramp_set(effort, fs, on, end, 0.04, 1.0)
        else:
            c_end = on + (0.4 * d if ev.type == "mixed_apnea" else 0.0)
            _ramp_set(flow, fs, on, end, ev.flow_factor, 1.0)
            if c_end > on:
                _ramp_set(effort, fs, on, c_end, 0.04, 1.0)
            i0, i1 = int(c_end * fs), min(n, int(end * fs))
            if i1 > i0:
                effort[i0:i1] = np.linspace(0.8, 1.45, i1 - i0)  # crescendo against the closed airway
                _ramp_set(paradox, fs, c_end + 4.0, end, 0.9, 4.0)
        # recovery breaths: big and fast, decaying over ~12 s
        i1 = min(n, int(end * fs))
        k = np.arange(min(n - i1, int(12 * fs)))
        boost = 1.0 + 0.8 * np.exp(-k / (5.0 * fs))
        flow[i1 : i1 + k.size] = np.maximum(flow[i1 : i1 + k.size], boost)
        effort[i1 : i1 + k.size] = np.maximum(effort[i1 : i1 + k.size], boost)
    return flow, effort, paradox


def render_respiration(rng: np.random.Generator, stages: np.ndarray, track: FeatureTrack, plan: NightPlan,
                       subject: SubjectParams, fs: float = RESP_FS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Airflow (nasal pressure, inspiration positive), thorax, abdomen [n] at 32 Hz, and breath phase (cycles).

    Returns:
        (airflow, thorax, abdomen, phase) float64 [n], n = seconds x fs; amplitudes in arbitrary
        uV-scaled units (airflow ~150, belts ~300-400 at rest).
    """
    n_sec = stages.size * EPOCH_S
    n = int(n_sec * fs)
    stage_sec = np.repeat(stages, EPOCH_S)
    irregular = np.where(stage_sec == 4, 0.12, np.where(stage_sec == 0, 0.1, 0.04))
    rate_sec = subject.breath_per_min / 60.0 * smooth(_BREATH_STAGE[stage_sec], 30)
    rate_sec = rate_sec * (1.0 + irregular * rng.standard_normal(n_sec).cumsum().clip(-3, 3) / 3)
    rate_sec = smooth(rate_sec * slow_modulation(rng, n_sec, 0.05, 8.0), 4)
    rate = upsample(rate_sec, 1.0, n, fs)
    phase = np.cumsum(rate) / fs
    amp = upsample(slow_modulation(rng, n_sec, 0.18, 6.0) * (1 + 0.4 * track.movement), 1.0, n, fs)
    flow_f, effort_f, paradox = respiratory_modulation(rng, plan, n, fs)
    s = np.sin(2 * np.pi * phase)
    wave = np.where(s > 0, np.abs(s) ** 0.7, 0.75 * s)
    airflow = _AIRFLOW_AMP * amp * flow_f * wave
    lag = 0.08  # effort leads nasal pressure slightly
    th = np.sin(2 * np.pi * (phase + lag))
    ab = np.sin(2 * np.pi * (phase + lag) + np.pi * paradox)
    move = upsample(track.movement, 1.0, n, fs)
    jolt = np.zeros(n)
    on = move > 0.01
    if on.any():  # body movement: large slow swings on the belts while it lasts
        jolt[on] = move[on] * shaped_noise(rng, int(on.sum()), fs, band_gain(0.2, 2.0, 2.0))[0] * 350.0
    drift = upsample(slow_modulation(rng, n_sec, 0.3, 60.0) - 1.0, 1.0, n, fs)
    thorax = _EFFORT_AMP[0] * (amp * effort_f * th + 0.3 * drift) + jolt
    abdomen = _EFFORT_AMP[1] * (amp * effort_f * ab - 0.3 * drift) + 0.7 * jolt
    airflow += 3.0 * rng.standard_normal(n) + 0.5 * jolt
    return airflow, thorax, abdomen, phase


def render_spo2(rng: np.random.Generator, n_sec: int, plan: NightPlan, subject: SubjectParams) -> np.ndarray:
    """SpO2 in % at 1 Hz, integer-valued like an oximeter display; nadir ``lag`` s after each event end."""
    desat = np.zeros(n_sec)
    t = np.arange(n_sec) + 0.5
    for ev in plan.resp:
        start, nadir = ev.onset + ev.lag * 0.6, ev.end + ev.lag
        rec = rng.uniform(8.0, 15.0)
        d = np.zeros(n_sec)
        fall = (t >= start) & (t < nadir)
        d[fall] = ev.desat * ((t[fall] - start) / (nadir - start)) ** 1.3
        up = (t >= nadir) & (t < nadir + rec)
        d[up] = ev.desat * (1 - (t[up] - nadir) / rec)
        desat = np.maximum(desat, d)
    base = subject.spo2_base + 0.5 * (slow_modulation(rng, n_sec, 0.5, 120.0) - 1)
    jitter = smooth(rng.standard_normal(n_sec), 6) * 0.6  # oximeters average over a few seconds
    return np.clip(np.round(base - desat + jitter), 50, 100)


def heart_rate(rng: np.random.Generator, stages: np.ndarray, track: FeatureTrack, plan: NightPlan,
               subject: SubjectParams, phase: np.ndarray, fs: float = RESP_FS) -> np.ndarray:
    """Instantaneous heart rate in bpm [n] at ``fs`` (the respiration grid)."""
    n_sec = stages.size * EPOCH_S
    n = phase.size
    stage_sec = np.repeat(stages, EPOCH_S)
    stage_factor = 1.0 + subject.hr_stage_gain * (_HR_STAGE - 1.0)  # exactly _HR_STAGE at gain 1
    base = subject.hr_bpm * smooth(stage_factor[stage_sec], 40)
    var = np.where(stage_sec == 4, 0.06, np.where(stage_sec == 0, 0.05, 0.025))
    lf = smooth(rng.standard_normal(n_sec + 200), 12)[:n_sec]
    lf = lf / max(float(np.std(lf)), 1e-9) * smooth(var, 20)
    brady = np.zeros(n_sec)
    for ev in plan.resp:
        if ev.type == "hypopnea":
            continue
        i0, i1 = int(ev.onset), min(n_sec, int(ev.end))
        brady[i0:i1] = np.linspace(0.0, 0.1, i1 - i0)
    hr_sec = base * (1 + lf - brady + 0.22 * track.arousal + 0.15 * track.movement)
    rsa_amp = subject.rsa_gain * np.where(stage_sec == 4, 1.5, 3.5)
    hr = upsample(hr_sec, 1.0, n, fs) + upsample(rsa_amp, 1.0, n, fs) * np.sin(2 * np.pi * phase)
    return np.clip(hr, 35.0, 160.0)


def _ecg_template(fs: float, qrs_width: float = 1.0, t_ratio: float = 0.28) -> tuple[np.ndarray, int]:
    """P-QRS-T beat (R peak = 1) sampled at ``fs`` from -0.3 s to +0.5 s, the Q, R and S widths
    times ``qrs_width``, the T wave ``t_ratio`` of the R; returns (template, index of R)."""
    t = np.arange(int(-0.3 * fs), int(0.5 * fs)) / fs
    w = qrs_width
    waves = ((-0.17, 0.025, 0.12), (-0.03, 0.010 * w, -0.12), (0.0, 0.011 * w, 1.0), (0.03 * w, 0.011 * w, -0.25),
             (0.27, 0.05, t_ratio))
    y = sum(a * np.exp(-0.5 * ((t - mu) / sd) ** 2) for mu, sd, a in waves)
    return y, int(0.3 * fs)


def render_ecg(rng: np.random.Generator, hr: np.ndarray, hr_fs: float, subject: SubjectParams,
               phase: np.ndarray, fs: float = ECG_FS) -> tuple[np.ndarray, np.ndarray]:
    """ECG lead II in uV at ``fs`` and the R-peak times (s); upside down when ``subject.ecg_sign``
    is -1 (as reversed electrodes record it).

    Returns:
        (ecg [n], r_times [beats]) with n = len(hr) / hr_fs x fs.
    """
    beat_phase = np.cumsum(hr / 60.0) / hr_fs
    k = np.floor(beat_phase)
    idx = np.flatnonzero(np.diff(k) > 0) + 1
    frac = (beat_phase[idx] - k[idx]) / np.maximum(beat_phase[idx] - beat_phase[idx - 1], 1e-9)
    r_times = (idx - frac) / hr_fs
    n = int(hr.size / hr_fs * fs)
    tmpl, r_at = _ecg_template(fs, subject.ecg_qrs_width, subject.ecg_t_ratio)
    ecg = np.zeros(n)
    m = tmpl.size
    for i0 in (np.round(r_times * fs).astype(np.int64) - r_at).tolist():  # ~30k beats a night
        a, b = max(0, i0), min(n, i0 + m)
        if b > a:
            ecg[a:b] += tmpl[a - i0: b - i0]
    amp = subject.ecg_mv * 1000.0 * subject.ecg_sign
    wander = upsample(np.sin(2 * np.pi * phase[:: int(hr_fs)]), 1.0, n, fs)
    return amp * ecg + 0.05 * amp * wander + subject.ecg_noise_uv * rng.standard_normal(n), r_times
