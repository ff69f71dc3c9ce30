"""Offline preprocessing vectorised over epochs gives exactly the per-epoch numbers."""

from __future__ import annotations

import numpy as np
import pytest

from synthsleep.psg.epoch import Quality
from synthsleep.psg.montage import resolve_channels
from synthsleep.psg.preprocess import (
    NormaliserState,
    PreprocessParams,
    iter_recording_epochs,
    preprocess_modality,
)
from synthsleep.psg.preprocess_batch import preprocess_modality_epochs
from synthsleep.psg.recording import Signal, open_recording, write_edf


def _assert_same(a, b):
    assert [e.index for e in a] == [e.index for e in b]
    for x, y in zip(a, b):
        assert x.start == y.start and x.modalities == y.modalities
        np.testing.assert_array_equal(x.quality, y.quality)
        np.testing.assert_array_equal(x.present, y.present)
        np.testing.assert_array_equal(x.log_scale, y.log_scale)
        np.testing.assert_array_equal(x.data, y.data)  # bit for bit


def _epochs(path, params, vectorised):
    rec = open_recording(path)
    cmap = resolve_channels([c.label for c in rec.channels], wanted=params.modalities)
    return list(iter_recording_epochs(rec, cmap, params, chunk_seconds=300.0, vectorised=vectorised))


@pytest.mark.parametrize("epoch_norm", [(), ("eeg", "eog")])
def test_synthetic_night_vectorised_equals_per_epoch(synthetic_edf, epoch_norm):
    params = PreprocessParams(epoch_norm=epoch_norm)
    fast, slow = _epochs(synthetic_edf, params, True), _epochs(synthetic_edf, params, False)
    assert len(fast) == 20 and any(e.present.sum() >= 6 for e in fast)
    _assert_same(fast, slow)


def test_odd_rates_bad_stretches_and_a_partial_tail(tmp_path):
    """Resampled channels (256, 200, 10 Hz), a flat and a clipped stretch, a frozen square
    wave, wrong units, and 20 s past the last whole epoch."""
    rng = np.random.default_rng(4)
    sec = 12 * 30 + 20
    eeg = rng.normal(0, 30, sec * 256)
    eeg[256 * 120:256 * 150] = 0.0  # epoch 4 flat
    eog = rng.normal(0, 50, sec * 200)
    eog[200 * 150:200 * 180] = np.clip(eog[200 * 150:200 * 180], -20, 20)  # epoch 5 saturated
    eog[200 * 180:200 * 210] = np.clip(eog[200 * 180:200 * 210], -80, 80)  # epoch 6 clipped, present
    emg = rng.normal(0, 5, sec * 200)
    emg[200 * 210:200 * 240] = np.sign(rng.normal(size=6000)) * 5  # epoch 7 frozen (2 values)
    ecg = rng.normal(0, 300, sec * 100)
    ecg[100 * 240:100 * 270] *= 100  # epoch 8 implausible (IQR ~ 40 mV: wrong units)
    flow = np.sin(np.arange(sec * 10) / 10 * 2 * np.pi * 0.25) * 100 + rng.normal(0, 5, sec * 10)
    spo2 = np.clip(96 + rng.normal(0, 0.5, sec * 1), 80, 100)
    spo2[270:300] = 150.0  # epoch 9: implausible SpO2
    path = write_edf(tmp_path / "odd.edf", [
        Signal("EEG C4-M1", 256, eeg), Signal("EOG E1-M2", 200, eog), Signal("EMG Chin", 200, emg),
        Signal("ECG II", 100, ecg), Signal("Resp Airflow", 10, flow), Signal("SpO2", 1, spo2, unit="%")])
    params = PreprocessParams()
    fast, slow = _epochs(path, params, True), _epochs(path, params, False)
    assert len(fast) == 13  # 12 whole epochs + the 20-s tail (kept: more than half an epoch)
    _assert_same(fast, slow)
    assert not fast[4].present[0] and fast[3].present[0]  # flat
    assert not fast[5].present[1] and fast[6].present[1] and fast[6].quality[1] & Quality.CLIPPED
    assert not fast[7].present[2] and fast[7].quality[2] & Quality.FLAT  # frozen
    assert not fast[8].present[3] and fast[8].quality[3] & Quality.IMPLAUSIBLE


def test_rows_equal_per_epoch_calls_with_the_normaliser_in_order():
    rng = np.random.default_rng(1)
    raw = rng.normal(0, 40, (30, 3000)) * np.linspace(0.5, 3, 30)[:, None]
    raw[7, 100:200] = np.nan  # 3 %: NONFINITE, present (per-epoch path inside)
    raw[9, :400] = np.nan  # 13 %: absent
    params = PreprocessParams()
    n1, n2 = NormaliserState(), NormaliserState()
    data, quality, present, log_scale = preprocess_modality_epochs("eeg", raw, 100.0, n1, params)
    assert log_scale.dtype == np.float32 and log_scale.shape == (30,)
    for i in range(30):
        d, q, p, ls = preprocess_modality("eeg", raw[i], None, 100.0, n2, params)
        np.testing.assert_array_equal(data[i], d)
        assert (quality[i], present[i], log_scale[i]) == (q, p, np.float32(ls))
    assert n1.to_dict() == n2.to_dict()
    assert present[7] and quality[7] & Quality.NONFINITE and not present[9] and log_scale[9] == 0.0
    assert (log_scale[present] != 0).all()
