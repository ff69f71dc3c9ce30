import math

import numpy as np
import pytest

from synthsleep.psg.epoch import EPOCH_SAMPLES, Quality
from synthsleep.psg.montage import MODALITIES
from synthsleep.psg.preprocess import (
    EpochAssembler,
    NormaliserState,
    PreprocessError,
    PreprocessParams,
    _band_sos,
    _resample,
    _robust_stats,
    _sosfiltfilt,
    preprocess_modality,
)

RATES = {"eeg": 256.0, "eog": 256.0, "emg": 512.0, "ecg": 512.0, "airflow": 32.0, "thorax": 32.0,
         "abdomen": 32.0, "spo2": 1.0}


def _signals(seconds: float, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for m, r in RATES.items():
        n = int(seconds * r)
        t = np.arange(n) / r
        out[m] = rng.normal(0, 20, n) + 40 * np.sin(2 * np.pi * (0.3 if r < 100 else 10) * t)
    out["spo2"] = 96 + rng.normal(0, 0.5, int(seconds))
    return out


def _feed(sig, chunker, rates=RATES, params=None):
    asm = EpochAssembler(rates, params)
    out = []
    for m, x in sig.items():
        pos = 0
        for c in chunker(len(x)):
            asm.push(m, x[pos:pos + c], pos / rates[m])
            pos += c
            out += asm.pop()
    return out + asm.flush()


def test_whole_and_random_chunks_identical():
    sig = _signals(300)
    rng = np.random.default_rng(1)

    def random_chunks(n):
        sizes, s = [], 0
        while s < n:
            c = int(rng.integers(1, 3000))
            sizes.append(min(c, n - s))
            s += c
        return sizes

    whole = _feed(sig, lambda n: [n])
    chunked = _feed(sig, random_chunks)
    assert len(whole) == len(chunked) == 10
    for a, b in zip(whole, chunked):
        assert a.index == b.index and a.start == b.start
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.quality, b.quality)
    e = whole[5]
    assert e.data.shape == (8, EPOCH_SAMPLES) and e.data.dtype == np.float32 and e.present.all()
    # normalised robust scale near 1 after warm-up for noise-like modalities
    assert 0.5 < np.std(e["eeg"]) < 2.0


def test_interleaved_pushes_equal_sequential():
    """Live-like interleaving of modalities gives the same epochs as per-modality feeding."""
    sig = _signals(120, seed=3)
    seq = _feed(sig, lambda n: [n])
    asm = EpochAssembler(RATES)
    live = []
    for sec in range(0, 120, 2):
        for m, x in sig.items():
            r = RATES[m]
            asm.push(m, x[int(sec * r):int((sec + 2) * r)], sec)
        live += asm.pop()
    live += asm.flush()
    assert [e.index for e in live] == [e.index for e in seq]
    for a, b in zip(live, seq):
        np.testing.assert_array_equal(a.data, b.data)


def test_float32_samples_buffered_as_float32_and_epochs_unchanged():
    """A live float32 stream is buffered as float32 (half the memory of float64) with bit-for-bit
    the epochs of the same samples pushed as float64; a float64 chunk arriving later widens the
    open epochs first, so its values are never rounded to float32."""
    sig = {m: x.astype(np.float32) for m, x in _signals(120, seed=5).items()}
    a32, a64 = EpochAssembler(RATES), EpochAssembler(RATES)
    got32, got64 = [], []
    for sec in range(0, 75, 3):
        for m, x in sig.items():
            r = RATES[m]
            piece = x[int(sec * r):int((sec + 3) * r)]
            a32.push(m, piece, sec)
            a64.push(m, piece.astype(np.float64), sec)
        got32 += a32.pop()
        got64 += a64.pop()
    open32 = [v for b in a32.buffers.values() for v, _ in b.epochs.values()]
    assert open32 and all(v.dtype == np.float32 for v in open32)
    assert all(v.dtype == np.float64 for b in a64.buffers.values() for v, _ in b.epochs.values())
    # the rest of the night arrives as float64 values float32 cannot hold (e.g. a scaled unit)
    for m, x in sig.items():
        r = RATES[m]
        rest = x[int(75 * r):].astype(np.float64) * 1.000000123
        a32.push(m, rest, 75.0)
        a64.push(m, rest, 75.0)
    got32 += a32.flush()
    got64 += a64.flush()
    assert [e.index for e in got32] == [e.index for e in got64] == list(range(4))
    for a, b in zip(got32, got64):
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.quality, b.quality)
        np.testing.assert_array_equal(a.present, b.present)


def test_normalisation_is_causal():
    """Changing the future never changes past epochs."""
    sig = _signals(300)
    a = _feed(sig, lambda n: [n])
    sig2 = {m: x.copy() for m, x in sig.items()}
    for m, r in RATES.items():
        sig2[m][int(150 * r):] *= 5.0  # epochs 5.. become louder
    b = _feed(sig2, lambda n: [n])
    for i in range(5):
        np.testing.assert_array_equal(a[i].data, b[i].data)
    assert not np.array_equal(a[6].data, b[6].data)


def test_gap_never_shifts_later_epochs():
    sig = _signals(600)
    full = _feed(sig, lambda n: [n])
    asm = EpochAssembler(RATES)
    out = []
    for m, x in sig.items():
        r = RATES[m]
        asm.push(m, x[: int(95 * r)], 0.0)          # 0 .. 95 s
        asm.push(m, x[int(212 * r):], 212.0)         # gap 95 .. 212 s (2 min)
        out += asm.pop()
    out += asm.flush()
    assert [e.index for e in out] == list(range(20))
    assert [e.start for e in out] == [30.0 * i for i in range(20)]
    # epochs 4..6 (120..210 s) are fully inside the gap: absent and flagged
    for i in (4, 5, 6):
        assert not out[i].present.any()
        assert all(q & Quality.GAP for q in out[i].quality)
    # epoch 3 (90..120 s) has 5 s of data: absent; epoch 7 (210..240 s) has 28 s (6.7 % missing,
    # under MAX_BAD_FRACTION): present, GAP flagged
    assert not out[3].present.any() and all(q & Quality.GAP for q in out[3].quality)
    assert out[7].present.all() and all(q & Quality.GAP for q in out[7].quality)
    # far from the gap, once statistics settle, data are identical in shape (same clock)
    assert out[19].start == full[19].start


def test_flat_nan_clipped_implausible_flags():
    params = PreprocessParams()
    rng = np.random.default_rng(0)
    norm = NormaliserState()
    n = 256 * 30
    flat = np.full(n, 3.0)
    y, q, present, _ = preprocess_modality("eeg", flat, None, 256.0, norm, params)
    assert q & Quality.FLAT and not present and not y.any()
    x = rng.normal(0, 30, n)
    x[:500] = np.nan  # 6.5 %: present, the NaN stretch zeroed
    y, q, present, _ = preprocess_modality("eeg", x, None, 256.0, norm, params)
    assert q & Quality.NONFINITE and present and np.isfinite(y).all()
    assert np.all(y[:190] == 0.0)
    x[:2000] = np.nan  # 26 % bad: absent, never zero-filled into the model
    y, q, present, _ = preprocess_modality("eeg", x, None, 256.0, norm, params)
    assert q & Quality.NONFINITE and not present and not y.any()
    x = rng.normal(0, 100, n)
    x = np.clip(x, -80, 80)
    y, q, present, _ = preprocess_modality("eeg", x, None, 256.0, norm, params)
    assert q & Quality.CLIPPED and present
    volts_as_uv = rng.normal(0, 30e6, n)  # a reader that took uV for V
    _, q, present, _ = preprocess_modality("eeg", volts_as_uv, None, 256.0, NormaliserState(), params)
    assert q & Quality.IMPLAUSIBLE and not present
    _, q, present, _ = preprocess_modality("emg", rng.normal(0, 5, 50 * 30), None, 50.0, NormaliserState(),
                                           params)
    assert q & Quality.LOW_RATE and not present
    _, q, present, _ = preprocess_modality("eeg", None, None, 256.0, NormaliserState(), params)
    assert q == Quality.MISSING and not present


def test_absent_epochs_do_not_update_statistics():
    params = PreprocessParams()
    norm = NormaliserState()
    rng = np.random.default_rng(0)
    preprocess_modality("eeg", rng.normal(0, 30, 7680), None, 256.0, norm, params)
    before = norm.to_dict()
    preprocess_modality("eeg", np.zeros(7680), None, 256.0, norm, params)  # flat
    assert norm.to_dict() == before


def test_state_dict_resume_gives_identical_epochs():
    sig = _signals(300)
    ref = _feed(sig, lambda n: [n])
    a = EpochAssembler(RATES)
    for m, x in sig.items():
        a.push(m, x[: int(150 * RATES[m])], 0.0)
    first = a.pop()
    assert len(first) == 5
    b = EpochAssembler(RATES)
    b.load_state_dict(a.state_dict())
    for m, x in sig.items():
        r = RATES[m]
        b.push(m, x[int(150 * r):], 150.0)
    rest = b.flush()
    for x, y in zip(first + rest, ref):
        assert x.index == y.index
        np.testing.assert_array_equal(x.data, y.data)


def test_live_clock_closes_late_epochs():
    asm = EpochAssembler({"eeg": 256.0, "ecg": 512.0})
    rng = np.random.default_rng(0)
    asm.push("eeg", rng.normal(0, 30, 256 * 60), 0.0)
    assert asm.pop() == []                    # ECG has not arrived: wait
    asm.advance(36.0)                         # 1 s past epoch 0's end + max_delay
    out = asm.pop()
    assert [e.index for e in out] == [0]
    i = out[0].modalities.index("ecg")
    assert not out[0].present[i] and out[0].quality[i] & Quality.MISSING


def test_bad_rates_and_modalities():
    with pytest.raises(PreprocessError, match="samples per"):
        EpochAssembler({"eeg": 100.0 / 3.0 + 0.001})
    with pytest.raises(PreprocessError, match="not in the montage"):
        EpochAssembler({"brainwaves": 100.0})
    with pytest.raises(PreprocessError, match="no rate registered"):
        EpochAssembler({"eeg": 100.0}).push("ecg", np.zeros(10), 0.0)


def test_per_epoch_normalisation_ignores_history_and_gain():
    """EEG/EOG/ECG are scaled by their own epoch: how the night started, the amplifier's gain
    and the derivation's amplitude change nothing; running-normalised EMG does depend on them."""
    assert PreprocessParams().epoch_norm == ()  # running statistics unless asked for
    params = PreprocessParams(epoch_norm=("eeg", "eog", "ecg"))
    rng = np.random.default_rng(3)
    x = rng.normal(0, 25, 256 * 30)
    emg = rng.normal(0, 5, 512 * 30)
    quiet, loud = NormaliserState(), NormaliserState()
    for _ in range(5):  # different histories: a quiet start vs a loud one
        preprocess_modality("eeg", rng.normal(0, 5, 256 * 30), None, 256.0, quiet, params)
        preprocess_modality("eeg", rng.normal(0, 200, 256 * 30), None, 256.0, loud, params)
        preprocess_modality("emg", rng.normal(0, 1, 512 * 30), None, 512.0, quiet, params)
        preprocess_modality("emg", rng.normal(0, 50, 512 * 30), None, 512.0, loud, params)
    a = preprocess_modality("eeg", x, None, 256.0, quiet, params)[0]
    b = preprocess_modality("eeg", 3.0 * x, None, 256.0, loud, params)[0]
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert abs(float(np.median(a))) < 0.05 and 0.8 < np.subtract(*np.percentile(a, [75, 25])) / 1.349 < 1.2
    ea = preprocess_modality("emg", emg, None, 512.0, quiet, params)[0]
    eb = preprocess_modality("emg", emg, None, 512.0, loud, params)[0]
    assert np.abs(ea).mean() > 5 * np.abs(eb).mean()


def test_params_of_older_artifacts_keep_running_normalisation():
    d = PreprocessParams(epoch_norm=("eeg",)).to_dict()
    assert PreprocessParams.from_dict(d) == PreprocessParams(epoch_norm=("eeg",))
    del d["epoch_norm"]  # written before per-epoch normalisation existed
    assert PreprocessParams.from_dict(d).epoch_norm == ()
    with pytest.raises(PreprocessError, match="epoch_norm"):
        PreprocessParams(epoch_norm=("eeg", "brainwaves"))


def test_log_scale_carries_the_amplitude_the_running_normaliser_takes_out():
    """The same signal 3x louder, after a history 3x louder: the same data, log scale + ln 3."""
    params = PreprocessParams()
    rng = np.random.default_rng(5)
    quiet, loud = NormaliserState(), NormaliserState()
    for _ in range(4):
        h = rng.normal(0, 20, 256 * 30)
        preprocess_modality("eeg", h, None, 256.0, quiet, params)
        preprocess_modality("eeg", 3.0 * h, None, 256.0, loud, params)
    x = rng.normal(0, 30, 256 * 30)
    ya, qa, pa, la = preprocess_modality("eeg", x, None, 256.0, quiet, params)
    yb, qb, pb, lb = preprocess_modality("eeg", 3.0 * x, None, 256.0, loud, params)
    assert pa and pb and qa == qb == 0
    np.testing.assert_allclose(ya, yb, atol=1e-5)
    assert lb - la == pytest.approx(np.log(3.0), abs=1e-9)
    assert la == quiet.log_scale["eeg"] and 2.0 < la < 4.0  # the running scale after this epoch, ln uV


def test_log_scale_of_per_epoch_fixed_and_absent_modalities():
    params = PreprocessParams(epoch_norm=("eeg",))
    rng = np.random.default_rng(6)
    x = rng.normal(0, 30, 256 * 30)
    y, _, present, ls = preprocess_modality("eeg", x, None, 256.0, NormaliserState(), params)
    band = _band_sos(*MODALITIES["eeg"].band, params.target_rate, params.filter_order)
    filtered = _sosfiltfilt(band, _resample(x, 256.0, params))  # uV
    center, scale = _robust_stats(filtered)
    assert present and ls == math.log(scale)  # the epoch's own robust scale
    np.testing.assert_allclose(y * np.exp(ls) + center, filtered, atol=1e-4 * scale)  # uV recovered
    _, _, present, ls = preprocess_modality("spo2", 96 + rng.normal(0, 0.5, 30), None, 1.0, NormaliserState(),
                                            params)
    assert present and ls == pytest.approx(np.log(5.0))  # fixed: ln(spec.scale)
    norm = NormaliserState()
    preprocess_modality("eeg", x, None, 256.0, norm, PreprocessParams())
    for raw in (None, np.zeros(256 * 30), np.full(256 * 30, np.nan)):  # missing, flat, non-finite
        y, _, present, ls = preprocess_modality("eeg", raw, None, 256.0, norm, PreprocessParams())
        assert not present and ls == 0.0 and not y.any()


def test_epochs_carry_the_log_scale():
    sig = _signals(120)
    eps = _feed(sig, lambda n: [n])
    for ep in eps:
        assert ep.log_scale.dtype == np.float32 and ep.log_scale.shape == (len(ep.modalities),)
        np.testing.assert_array_equal(ep.log_scale == 0, ~ep.present)
    i = eps[0].modalities.index("spo2")
    assert eps[-1].log_scale[i] == np.float32(np.log(5.0))
