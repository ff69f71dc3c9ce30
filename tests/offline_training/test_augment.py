import numpy as np
import pytest

from synthsleep.offline_training.augment import augment_epochs

MODS = ("eeg", "eog", "emg", "ecg", "airflow", "thorax", "abdomen", "spo2")


def test_augment_shapes_lowpass_and_drop():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (16, 2, 8, 3000)).astype(np.float32)
    present = np.ones((16, 2, 8), bool)
    y, p = augment_epochs(x, present, np.random.default_rng(1), MODS, p_lowpass=1.0, p_drop=0.5)
    assert y.shape == x.shape and y.dtype == np.float32 and not np.shares_memory(y, x)
    assert p[:, :, 0].all()                      # EEG is never dropped
    assert (~p[:, :, 1:]).any()                  # other sensors sometimes are
    assert (y[~p] == 0).all()                    # absent rows are zeroed, never silently kept
    assert (p[:, 0] == p[:, 1]).all()            # the same recorder all window long
    # low-pass: with no added noise, nothing is left above 40 Hz
    z, _ = augment_epochs(x, present, np.random.default_rng(2), MODS, p_lowpass=1.0, noise_max=0.0, p_drop=0.0)
    spec = np.abs(np.fft.rfft(z[:, :, 0], axis=-1))
    freqs = np.fft.rfftfreq(3000, 0.01)
    assert spec[..., freqs > 40.5].max() < 1e-3 * spec.max()
    np.testing.assert_array_equal(present, np.ones((16, 2, 8), bool))  # input untouched


def test_montage_dropout_keeps_real_sensor_sets_per_window():
    from synthsleep.offline_training.augment import REDUCED_MONTAGES, montage_dropout

    mods = ("eeg", "eog", "emg", "ecg", "airflow", "thorax", "abdomen", "spo2")
    present = np.ones((400, 5, 8), bool)
    present[0] = False  # a window with nothing stays as it was
    out = montage_dropout(present, np.random.default_rng(0), mods, p=0.5,
                          weights=[3, 2, 1, 1, 1, 1, 1])
    assert not out[0].any()
    sets = {tuple(m for m, k in zip(mods, row[0]) if k) for row in out[1:]}
    assert all((row == row[0]).all() for row in out)  # one sensor set for a whole window
    reduced = sets - {mods}
    assert reduced == set(REDUCED_MONTAGES)  # every reduced montage drawn, nothing else
    n_full = sum(row.all() for row in out[1:])
    assert 150 <= n_full <= 250  # about half the windows keep everything
    assert (present == 1).sum() > out.sum()  # input untouched, output a copy


def test_montage_weights_set_how_often_each_sensor_set_is_drawn():
    from synthsleep.offline_training.augment import REDUCED_MONTAGES, draw_montage, montage_mask

    mods = ("eeg", "eog", "emg", "ecg", "airflow", "thorax", "abdomen", "spo2")
    rng = np.random.default_rng(0)
    only_resp = [0, 0, 0, 0, 1, 1, 0]  # the two cardiorespiratory sets, equally often
    drawn = [tuple(draw_montage(rng, mods, only_resp)) for _ in range(400)]
    want = [tuple(montage_mask(REDUCED_MONTAGES[k], mods)) for k in (4, 5)]
    assert set(drawn) == set(want) and 150 <= drawn.count(want[0]) <= 250
    for bad in ([1, 1], [0] * 7, [1, -1, 1, 1, 1, 1, 1]):
        with pytest.raises(ValueError, match="montage weights"):
            draw_montage(rng, mods, bad)


def test_corrupt_modality_replaces_one_sensor_never_the_eeg():
    from synthsleep.offline_training.augment import corrupt_modality

    mods = ("eeg", "eog", "emg", "ecg")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 3, 4, 3000)).astype(np.float32)
    present = np.ones((300, 3, 4), bool)
    present[:, :, 2] = False  # EMG absent: stays zero, never picked
    x[:, :, 2] = 0.0
    out = corrupt_modality(x, present, np.random.default_rng(1), mods, p=0.5)
    changed = ~np.isclose(out, x).all(axis=(1, 3))  # [B, M]: a modality changed in the window
    assert not changed[:, 0].any() and not changed[:, 2].any()  # EEG and the absent EMG untouched
    assert (changed.sum(axis=1) <= 1).all()  # at most one sensor per window
    assert 100 <= changed.any(axis=1).sum() <= 200  # about half the windows
    assert {1, 3} == set(np.flatnonzero(changed.any(axis=0)))
    assert np.isfinite(out).all() and out.dtype == np.float32
    np.testing.assert_array_equal(x[:, :, 2], 0.0)  # input untouched (a copy is returned)
