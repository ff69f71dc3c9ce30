import numpy as np

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
