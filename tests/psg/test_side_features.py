"""EEG side features: absolute band power (uV) and scale, recovered from normalised epochs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal

from synthsleep.psg.epoch import EPOCH_SAMPLES, TARGET_RATE
from synthsleep.psg.montage import MODALITIES
from synthsleep.psg.preprocess import (
    NormaliserState,
    PreprocessParams,
    _band_sos,
    _resample,
    _sosfiltfilt,
    preprocess_modality,
)
from synthsleep.psg.side_features import (
    CONTEXT_EPOCHS,
    N_EPOCH_SIDE,
    N_SIDE,
    SIDE_BANDS,
    add_side_context,
    eeg_side_features,
    new_side_context,
    side_context_step,
    side_features_for_rows,
)

PARAMS = PreprocessParams()


def _eeg_uv(seed: int = 0) -> np.ndarray:
    """30 s of EEG at 100 Hz, uV: a 1-Hz, 50-uV sine plus 10-uV white noise."""
    t = np.arange(EPOCH_SAMPLES) / TARGET_RATE
    return 50.0 * np.sin(2 * np.pi * 1.0 * t) + np.random.default_rng(seed).normal(0, 10, EPOCH_SAMPLES)


def _features(raw: np.ndarray) -> np.ndarray:
    """Side features [N_SIDE] of one EEG epoch in uV, through ``preprocess_modality``."""
    y, _, present, log_scale = preprocess_modality("eeg", raw, None, TARGET_RATE, NormaliserState(), PARAMS)
    assert present
    return eeg_side_features(y[None], np.array([log_scale]), np.array([True]))[0]


def test_band_powers_are_those_of_the_filtered_signal_in_uv() -> None:
    raw = _eeg_uv()
    feats = _features(raw)
    band = _band_sos(*MODALITIES["eeg"].band, PARAMS.target_rate, PARAMS.filter_order)
    filtered = _sosfiltfilt(band, _resample(raw, TARGET_RATE, PARAMS))  # uV
    f, p = signal.welch(filtered, fs=TARGET_RATE, nperseg=400)
    want = [math.log(p[(f >= lo) & (f < hi)].mean() + 1e-12) for lo, hi in SIDE_BANDS]
    assert feats.shape == (N_EPOCH_SIDE,) and feats.dtype == np.float32
    np.testing.assert_allclose(feats[:-1], want, atol=1e-3)
    assert feats[0] > feats[1] + 3.0  # the 1-Hz sine is in the slow band


def test_twice_the_amplitude_adds_ln4_to_the_powers_and_ln2_to_the_scale() -> None:
    raw = _eeg_uv(1)
    a, b = _features(raw), _features(2.0 * raw)
    np.testing.assert_allclose(b[:-1] - a[:-1], 2.0 * math.log(2.0), atol=1e-5)
    assert b[-1] - a[-1] == pytest.approx(math.log(2.0), abs=1e-6)


def test_absent_rows_are_zero_and_rows_are_picked_by_name() -> None:
    rng = np.random.default_rng(2)
    eeg = rng.normal(0, 1, (3, EPOCH_SAMPLES))
    ls = np.array([3.0, 2.5, 4.0])
    feats = eeg_side_features(eeg, ls, np.array([True, False, True]))
    assert not feats[1].any() and feats[0].all() and feats[2].all()
    assert not eeg_side_features(eeg, ls, np.zeros(3, bool)).any()
    mods = ("eog", "eeg")
    x = np.stack([rng.normal(0, 1, (3, EPOCH_SAMPLES)), eeg], axis=1).astype(np.float32)  # [3, 2, 3000]
    present = np.ones((3, 2), bool)
    log_scale = np.stack([np.full(3, 1.0), ls], axis=1)
    got = side_features_for_rows(x, present, log_scale, mods)
    np.testing.assert_array_equal(got, eeg_side_features(x[:, 1], ls, present[:, 1]))
    assert not side_features_for_rows(x, present, log_scale, ("eog", "emg")).any()


def test_context_is_the_running_then_exponential_mean_of_eeg_epochs():
    rng = np.random.default_rng(3)
    side = rng.standard_normal((50, N_EPOCH_SIDE))
    eeg = np.ones(50, bool)
    eeg[[10, 11, 30]] = False  # epochs without an EEG neither read nor move the context
    side[20] = np.nan  # unknown features: likewise
    present = np.zeros((50, 2), bool)
    present[:, 1] = eeg
    got = add_side_context(side, present, ("ecg", "eeg"))
    assert got.shape == (50, N_SIDE) and got.dtype == np.float32
    for j, k in enumerate(CONTEXT_EPOCHS):  # the reference: a plain loop over the usable epochs
        m, n = None, 0
        for t in range(50):
            if not eeg[t]:
                assert not got[t].any()
                continue
            if t == 20:
                assert np.isnan(got[t]).all()
                continue
            n += 1
            m = side[t].copy() if m is None else m + max(1.0 / k, 1.0 / n) * (side[t] - m)
            np.testing.assert_allclose(got[t, N_EPOCH_SIDE * (j + 1):N_EPOCH_SIDE * (j + 2)], m, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(got[t, :N_EPOCH_SIDE], side[t], rtol=1e-6)
    # the short average follows a step change within a few epochs, the long one lags behind
    step = np.concatenate([np.zeros((60, N_EPOCH_SIDE)), np.ones((8, N_EPOCH_SIDE))])
    ctx = add_side_context(step, np.ones((68, 1), bool), ("eeg",))[-1]
    assert ctx[N_EPOCH_SIDE] > 0.85 and ctx[2 * N_EPOCH_SIDE] < 0.3


def test_context_stepped_bed_by_bed_equals_the_whole_night():
    rng = np.random.default_rng(4)
    side = rng.standard_normal((2, 40, N_EPOCH_SIDE))
    eeg = rng.random((2, 40)) > 0.2
    state = new_side_context(2)
    for t in range(40):
        out, state = side_context_step(side[:, t], eeg[:, t], state)
        for b in range(2):
            whole = add_side_context(side[b, :t + 1], eeg[b, :t + 1, None], ("eeg",))
            np.testing.assert_array_equal(out[b], whole[-1])
