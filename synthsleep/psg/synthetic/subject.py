"""Per-subject parameters of the synthetic generator (what makes one sleeper differ from another)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

# Event-severity classes (AHI, events/h) and how often each is drawn when no range is given:
# roughly a sleep-clinic population rather than the general one.
_AHI_CLASSES = ((0.0, 5.0, 0.35), (5.0, 15.0, 0.25), (15.0, 30.0, 0.2), (30.0, 60.0, 0.2))


# Fields that exist for domain randomisation only: how a lab, montage or amplifier shows the
# sleeper, and how broken a clinic patient's sleep is beside the healthy nights the hypnogram
# chain was fitted to (``wake_gain``); they leave the per-subject stage-feature gains alone;
# ``draw(randomize=True)`` sets them and widens ``eye_leak``.
DOMAIN_FIELDS = ("bg_exponent", "bg_knee_hz", "muscle_uv", "eeg_rate", "eeg_sign", "ecg_rate", "ecg_qrs_width",
                 "ecg_t_ratio", "ecg_noise_uv", "hr_stage_gain", "rsa_gain", "eog_frontal", "delta_hi_hz", "eog_central",
                 "eog_noise_uv", "wake_gain", "quiet_wake")
#: native EEG/EOG amplifier rates (Hz) drawn by ``draw(randomize=True)``, and how often: from the
#: 50-Hz DREAMS PSG and 100-Hz Sleep-EDF to 200/256-Hz clinical systems
EEG_RATES = ((50.0, 0.1), (100.0, 0.25), (128.0, 0.15), (200.0, 0.25), (256.0, 0.25))
#: native ECG rates (Hz) and how often: the same systems, plus 512-Hz cardiac amplifiers
ECG_RATES = ((50.0, 0.1), (100.0, 0.2), (128.0, 0.1), (200.0, 0.2), (256.0, 0.2), (512.0, 0.2))


@dataclass(frozen=True)
class SubjectParams:
    """Everything that is constant for one synthetic subject across nights.

    Amplitudes are in uV (RMS unless said otherwise), frequencies in Hz, rates per minute or hour.
    """

    eeg_gain: float = 1.0  # overall EEG amplitude (age, skull, impedance)
    background_uv: float = 14.0  # RMS of the 1/f background
    alpha_hz: float = 10.0
    alpha_uv: float = 6.5  # RMS of wake alpha at C4 (eyes closed)
    beta_uv: float = 2.5
    theta_uv: float = 8.0  # RMS of N1 theta
    delta_n3_uv: float = 27.0  # RMS of 0.5-2 Hz delta in (average) N3
    spindle_hz: float = 13.0
    spindle_uv: float = 32.0  # peak amplitude
    spindle_per_min: float = 5.0  # N2 spindle density
    kcomplex_per_min: float = 1.0
    emg_tone_uv: float = 8.0  # chin EMG RMS in quiet wake
    eog_uv: float = 90.0  # typical eye-movement amplitude
    noise_uv: float = 2.0  # amplifier / environment white noise
    line_hz: float = 50.0
    line_uv: float = 1.5
    hr_bpm: float = 62.0  # resting heart rate in N2
    ecg_mv: float = 1.2  # R-wave amplitude in mV
    breath_per_min: float = 15.0
    spo2_base: float = 96.0
    ahi: float = 5.0  # target apnea-hypopnea index (events / h of sleep)
    frac_obstructive: float = 0.35
    frac_central: float = 0.1
    frac_mixed: float = 0.05  # the rest are hypopneas
    arousal_per_h: float = 10.0  # spontaneous arousals
    artifact_rate: float = 1.0  # multiplies movement/pop/drift/lead-off rates
    n1_ambiguity: float = 0.6  # 0: N1 clear-cut, 1: N1 often looks like W or N2
    eye_leak: float = 0.06  # fraction of the eye-movement potential seen by the EEG leads
    ecg_sign: float = 1.0  # +1 upright QRS; -1 reversed electrodes or another lead (DREAMS excerpt3)
    # Domain randomisation (``DOMAIN_FIELDS``); the defaults give the unrandomised generator.
    bg_exponent: float = 1.15  # amplitude-spectrum exponent of the 1/f background (power slope = 2x)
    bg_knee_hz: float = 100.0  # above it the background falls a further 1/f^2 in power (cortex, skull, amplifier)
    muscle_uv: float = 0.0  # scalp-muscle (20-100 Hz) contamination of the EEG at wake chin tone
    eeg_rate: float = 256.0  # native rate of the EEG/EOG channels (below 256: anti-aliased and decimated)
    eeg_sign: float = 1.0  # -1: EEG channels recorded with inverted polarity (swapped electrode inputs)
    ecg_rate: float = 512.0  # native rate of the ECG channel (below 512: anti-aliased and decimated)
    ecg_qrs_width: float = 1.0  # multiplies the widths of the Q, R and S waves (lead, conduction)
    ecg_t_ratio: float = 0.28  # T-wave amplitude relative to the R wave (lead, repolarisation)
    ecg_noise_uv: float = 8.0  # white noise on the ECG lead (electrode contact, chest muscle)
    hr_stage_gain: float = 1.0  # multiplies how far each stage moves the heart rate from N2's
    rsa_gain: float = 1.0  # multiplies the respiratory sinus arrhythmia (bpm)
    eog_frontal: float = 1.0  # multiplies the frontal EEG that the EOG leads pick up
    delta_hi_hz: float = 2.0  # upper edge of the slow-wave (delta) band, Hz; its lower edge is 0.5
    eog_central: float = 0.0  # signed share of the whole central EEG (C4-M1) in both EOG leads
    eog_noise_uv: float = 0.0  # RMS of each EOG lead's own 2-30 Hz (1/f^2 power) activity (periorbital muscle, contact)
    wake_gain: float = 1.0  # multiplies each sleep stage's chance per epoch of waking up (hypnogram.with_wake_gain)
    quiet_wake: float = 0.0  # share of wake epochs relaxed and still: alpha over little else (features.epoch_features)

    def to_dict(self) -> dict[str, float]:
        """JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SubjectParams:
        """Inverse of ``to_dict``; unknown keys are an error naming them."""
        names = {f.name for f in fields(cls)}
        extra = set(d) - names
        if extra:
            raise ValueError(f"SubjectParams: unknown field(s) {sorted(extra)}")
        return cls(**{k: float(v) for k, v in d.items()})

    @classmethod
    def draw(cls, rng: np.random.Generator, ahi_range: tuple[float, float] | None = None,
             randomize: bool = False) -> SubjectParams:
        """Draw a random subject.

        Args:
            rng: the generator (seeded by the caller for determinism).
            ahi_range: (low, high) AHI in events/h; default: a clinic-like mixture of
                healthy, mild, moderate and severe sleepers (0 to 60).
            randomize: also draw the domain-randomisation fields (1/f slope and the knee above
                which it steepens, scalp-muscle contamination, a wider eye-movement leak, the
                native EEG/EOG rate and the EEG polarity, the ECG's rate, morphology and noise,
                how strongly stage moves the heart rate, the frontal EEG in the EOG, how high
                the slow waves reach (2-4 Hz), how much of the whole EEG and
                of their own fast activity the EOG leads see, how often the sleeper wakes and how
                much of its wake is relaxed and still: what
                differs between labs, derivations and people more than between stages;
                ``make model --domain-randomisation``). Drawn after all others, so ``False`` (the
                default, what the bundled model was trained on) gives the same subjects without them.
        """
        if ahi_range is None:
            probs = np.array([c[2] for c in _AHI_CLASSES])
            k = int(rng.choice(len(_AHI_CLASSES), p=probs / probs.sum()))
            lo, hi = _AHI_CLASSES[k][:2]
        else:
            lo, hi = float(ahi_range[0]), float(ahi_range[1])
            if not (0 <= lo <= hi):
                raise ValueError(f"ahi_range must satisfy 0 <= low <= high, got {ahi_range}")
        ahi = float(rng.uniform(lo, hi))
        ln = rng.lognormal
        gain = float(ln(0.0, 0.25))
        fo = float(rng.uniform(0.2, 0.6))
        fc = float(rng.uniform(0.0, 0.2))
        fm = float(rng.uniform(0.0, 0.1))
        subject = cls(
            eeg_gain=gain,
            background_uv=float(14.0 * ln(0.0, 0.2)),
            alpha_hz=float(np.clip(rng.normal(10.0, 0.8), 8.2, 12.0)),
            alpha_uv=float(6.5 * ln(0.0, 0.5)),  # some people have hardly any alpha
            beta_uv=float(2.5 * ln(0.0, 0.3)),
            theta_uv=float(8.0 * ln(0.0, 0.25)),
            delta_n3_uv=float(27.0 * ln(0.0, 0.15)),
            spindle_hz=float(np.clip(rng.normal(13.0, 0.8), 11.5, 15.0)),
            spindle_uv=float(32.0 * ln(0.0, 0.3)),
            spindle_per_min=float(np.clip(rng.normal(5.0, 1.5), 1.5, 9.0)),
            kcomplex_per_min=float(np.clip(rng.normal(1.0, 0.4), 0.2, 2.5)),
            emg_tone_uv=float(8.0 * ln(0.0, 0.4)),
            eog_uv=float(90.0 * ln(0.0, 0.3)),
            noise_uv=float(2.0 * ln(0.0, 0.5)),
            line_hz=float(rng.choice([50.0, 60.0])),
            line_uv=float(1.5 * ln(0.0, 0.8)),
            hr_bpm=float(np.clip(rng.normal(62.0, 8.0), 45.0, 85.0)),
            ecg_mv=float(np.clip(rng.normal(1.2, 0.3), 0.5, 2.0)),
            breath_per_min=float(np.clip(rng.normal(15.0, 2.0), 10.0, 22.0)),
            spo2_base=float(np.clip(rng.normal(96.0, 1.2) - 0.03 * ahi, 91.0, 99.0)),
            ahi=ahi,
            frac_obstructive=fo,
            frac_central=fc,
            frac_mixed=fm,
            arousal_per_h=float(np.clip(rng.normal(10.0, 4.0), 2.0, 25.0)),
            artifact_rate=float(ln(0.0, 0.5)),
            n1_ambiguity=float(rng.uniform(0.4, 0.95)),
            eye_leak=float(rng.uniform(0.03, 0.12)),
            ecg_sign=float(-1.0 if rng.random() < 0.3 else 1.0),  # drawn last: earlier draws unchanged
        )
        if not randomize:
            return subject
        # Ranges chosen from the literature on the aperiodic EEG component (power-law exponent
        # ~1.5-3.5, steeper above a knee at 20-40 Hz) and the real N2/N3 snippets in
        # shared/data/real/snippets (30-40 Hz share 0.002 / 0.0002 of 0.5-40 Hz power, where the
        # unrandomised generator gives 0.003 / 0.0012); frontal/central pick-up of eye movements
        # and scalp muscle widened to what montages other than C4-M1 show.
        return replace(
            subject,
            bg_exponent=float(rng.uniform(0.8, 1.6)),
            bg_knee_hz=float(rng.uniform(18.0, 45.0)),
            muscle_uv=float(rng.choice([0.0, 1.0], p=[0.3, 0.7]) * 6.0 * ln(0.0, 0.6)),
            eye_leak=float(subject.eye_leak * rng.uniform(1.0, 4.0)),
            eeg_rate=float(rng.choice([r for r, _ in EEG_RATES], p=[p for _, p in EEG_RATES])),
            eeg_sign=float(-1.0 if rng.random() < 0.2 else 1.0),
            # cardiac and EOG fields: no sensor but the EEG may carry a stage signature that a
            # real lab would not reproduce (a real ECG at 50 Hz turned a model's nights into REM)
            ecg_rate=float(rng.choice([r for r, _ in ECG_RATES], p=[p for _, p in ECG_RATES])),
            ecg_qrs_width=float(rng.uniform(0.7, 1.8)),
            ecg_t_ratio=float(rng.uniform(0.05, 0.6)),
            ecg_noise_uv=float(8.0 * ln(0.0, 0.8)),
            hr_stage_gain=float(rng.uniform(0.0, 1.5)),
            rsa_gain=float(ln(0.0, 0.5)),
            eog_frontal=float(rng.uniform(1.0, 2.5)),
            # slow waves up to 4 Hz: the real excerpts' 2-4 Hz share of 0.5-24 Hz power is
            # 0.10-0.36 (10th-90th percentile over all their epochs, no label read), the
            # generator's sleep with a 2-Hz edge 0.11-0.23
            delta_hi_hz=float(rng.uniform(2.0, 4.0)),
            # the real EOG leads of DREAMS excerpt3 (E1-A1, E2-A1; no hypnogram read) carry EEG-like
            # fast activity (8-12 Hz share of 0.5-24 Hz power 0.04-0.09 median, C3-A1 0.05) and
            # correlate -0.30 / -0.14 with C3-A1; the generator's EOG 0.015 and +0.5 to +0.7
            eog_central=float(rng.uniform(-1.0, 1.0)),
            eog_noise_uv=float(rng.choice([0.0, 1.0], p=[0.3, 0.7]) * 12.0 * ln(0.0, 0.6)),
            # the hypnogram chain is fitted to healthy Sleep-EDF nights (wake 6.8 % of the sleep
            # period); sleep-clinic patients wake more (wake after sleep onset typically 10-25 %
            # of it in older and apnoeic sleepers): 1-3x the awakenings in 70 % of subjects (wake 11 %
            # of the sleep period at 1x, 17 % at 2x, 25 % at 3x; 20 sampled 8-h nights each)
            wake_gain=float(np.exp(rng.uniform(0.0, np.log(3.0))) if rng.random() < 0.7 else 1.0),
            # relaxed, still wake (eyes closed, chin slack): the real excerpts' alpha-dominant epochs
            # (8-12 Hz band power above 4-8 Hz by 0.3 ln; 2.9 % of their epochs, no label read) have
            # a median ln 0.5-2 Hz power density of 2.1 (uV^2/Hz) and 16-30 Hz of -1.1, the
            # generator's wake 4.3 (10th percentile 3.5) and +0.1: its wake always blinks, moves its
            # eyes and tenses the scalp, so beta alone told wake from sleep and real quiet wake read N2
            quiet_wake=float(rng.uniform(0.0, 0.6)),
        )
