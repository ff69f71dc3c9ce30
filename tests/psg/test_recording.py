"""Recording: real EDF files written and read back (ours, mne, EDF+D, DREAMS excerpt3)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import pytest

from synthsleep.psg.recording import (
    Annotation,
    RecordingError,
    Signal,
    open_recording,
    parse_unit,
    write_edf,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
EXCERPT3 = SHARED / "data" / "real" / "dreams" / "excerpt3.edf"


def _signals(seconds: int = 60, seed: int = 0) -> list[Signal]:
    rng = np.random.default_rng(seed)
    t = np.arange(seconds * 256) / 256
    return [
        Signal("EEG C4-M1", 256, 40 * np.sin(2 * np.pi * 10 * t) + rng.normal(0, 10, t.size),
               transducer="AgAgCl electrode", prefilter="HP:0.3Hz LP:35Hz"),
        Signal("Resp Airflow", 32, rng.normal(0, 0.2, seconds * 32), unit="mV"),
        Signal("SpO2", 1, 95 + rng.normal(0, 1, seconds), unit="%"),
    ]


def test_write_read_roundtrip_units_and_annotations(tmp_path: Path) -> None:
    sigs = _signals()
    anns = [Annotation(0.0, 30.0, "Sleep stage W"), (42.5, 12.0, "Obstructive apnea")]
    start = dt.datetime(2024, 3, 1, 22, 15, 30)
    path = write_edf(tmp_path / "night.edf", sigs, anns, start=start, patient="pat 01")
    assert path.exists() and not list(tmp_path.glob("*.tmp"))

    rec = open_recording(path)
    assert rec.duration == 60.0
    assert rec.start_datetime == start
    assert [c.label for c in rec.channels] == ["EEG C4-M1", "Resp Airflow", "SpO2"]
    eeg, air, spo2 = rec.channels
    assert (eeg.rate, air.rate, spo2.rate) == (256.0, 32.0, 1.0)  # own rates, not resampled
    assert (eeg.unit, air.unit, spo2.unit) == ("uV", "uV", "%")  # mV converted to µV
    assert eeg.transducer == "AgAgCl electrode" and eeg.prefilter == "HP:0.3Hz LP:35Hz"
    assert eeg.n_samples == 60 * 256
    for s in sigs:
        scale = 1000.0 if s.unit == "mV" else 1.0
        info = rec.channel(s.label)
        q = (info.physical_max - info.physical_min) / 65535  # one quantisation step
        got = rec.read(s.label)
        assert got.shape == s.data.shape
        np.testing.assert_allclose(got, s.data * scale, atol=q)
    assert [(a.onset, a.duration, a.text) for a in rec.annotations] == [
        (0.0, 30.0, "Sleep stage W"), (42.5, 12.0, "Obstructive apnea")]


def test_lazy_read_by_seconds_matches_full_read(tmp_path: Path) -> None:
    path = write_edf(tmp_path / "a.edf", _signals())
    rec = open_recording(path)
    full = rec.read("EEG C4-M1")
    part = rec.read("EEG C4-M1", 12.5, 31.25)
    assert part.shape == (round(31.25 * 256) - round(12.5 * 256),)
    np.testing.assert_array_equal(part, full[3200:8000])
    beyond = rec.read("SpO2", 58.0, 62.0)
    assert beyond.shape == (4,) and np.isfinite(beyond[:2]).all() and np.isnan(beyond[2:]).all()
    with pytest.raises(RecordingError, match="no channel 'Nope'"):
        rec.read("Nope")


def test_mne_reads_our_file_with_annotations(tmp_path: Path) -> None:
    mne = pytest.importorskip("mne")
    sigs = _signals(seconds=30)
    path = write_edf(tmp_path / "m.edf", sigs, [(3.0, 10.0, "Hypopnea"), (15.0, 0.0, "Sleep stage N2")])
    raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    assert raw.ch_names == [s.label for s in sigs]
    assert sorted(raw.annotations.description) == ["Hypopnea", "Sleep stage N2"]
    i = list(raw.annotations.description).index("Hypopnea")
    assert raw.annotations.onset[i] == pytest.approx(3.0) and raw.annotations.duration[i] == pytest.approx(10.0)
    # mne resamples to the highest rate but the EEG is native; its volts × 1e6 = our µV
    eeg_v = raw.get_data(picks=["EEG C4-M1"])[0]
    ours = open_recording(path).read("EEG C4-M1")
    np.testing.assert_allclose(eeg_v * 1e6, ours, atol=1e-6)


def test_record_length_makes_fractional_rates_integral(tmp_path: Path) -> None:
    sigs = [Signal("EEG", 100, np.zeros(1000) + np.arange(1000) % 7), Signal("Pos", 0.5, np.arange(5.0), unit="")]
    rec = open_recording(write_edf(tmp_path / "f.edf", sigs))
    assert rec.record_duration == 2.0
    assert rec.channel("Pos").rate == 0.5
    np.testing.assert_allclose(rec.read("Pos"), np.arange(5.0), atol=1e-3)


@pytest.mark.parametrize(("unit", "canon", "factor"), [
    ("uV", "uV", 1.0), ("µV", "uV", 1.0), ("UV", "uV", 1.0), ("mV", "uV", 1e3), ("MV", "uV", 1e3),
    ("V", "uV", 1e6), ("nV", "uV", 1e-3), ("%", "%", 1.0), ("BPM", "BPM", 1.0), ("", "", 1.0)])
def test_parse_unit(unit: str, canon: str, factor: float) -> None:
    assert parse_unit(unit) == (canon, factor)


def test_missing_unit_on_eeg_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_edf(tmp_path / "u.edf", [Signal("EEG Fpz-Cz", 100, np.ones(100) * np.arange(100), unit="")])
    with caplog.at_level(logging.WARNING, logger="synthsleep.psg.recording"):
        rec = open_recording(path)
    assert rec.channels[0].unit == ""
    assert any("no physical unit" in r.getMessage() and "EEG Fpz-Cz" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------
# EDF+D, written byte by byte (no library writes EDF+D)
# ---------------------------------------------------------------------------------------------


def _write_edfd(path: Path, onsets: list[float], rate: int, values: list[np.ndarray]) -> None:
    """EDF+D: one 1-s-record signal at ``rate`` Hz (digital == physical) + annotations."""
    ann_spr = 30  # 60 bytes of TAL per record
    fields = [("EEG Test", 16), ("", 80), ("uV", 8), ("-32768", 8), ("32767", 8), ("-32768", 8),
              ("32767", 8), ("", 80), (str(rate), 8), ("", 32)]
    afields = [("EDF Annotations", 16), ("", 80), ("", 8), ("-1", 8), ("1", 8), ("-32768", 8),
               ("32767", 8), ("", 80), (str(ann_spr), 8), ("", 32)]
    sig_hdr = b"".join((a[0].ljust(a[1]) + b[0].ljust(b[1])).encode() for a, b in zip(fields, afields))
    head = ("0".ljust(8) + "X X X X".ljust(80) + "Startdate 01-JAN-2000 X X X".ljust(80) + "01.01.00"
            + "00.00.00" + str(256 * 3).ljust(8) + "EDF+D".ljust(44) + str(len(onsets)).ljust(8)
            + "1".ljust(8) + "2".ljust(4)).encode()
    assert len(head) == 256
    recs = []
    for onset, v in zip(onsets, values):
        tal = f"+{onset:g}\x14\x14\x00".encode().ljust(2 * ann_spr, b"\x00")
        recs.append(v.astype("<i2").tobytes() + tal)
    path.write_bytes(head + sig_hdr + b"".join(recs))


def test_edf_plus_d_gaps_are_nan(tmp_path: Path) -> None:
    path = tmp_path / "d.edf"
    vals = [np.full(10, k, dtype=np.int16) for k in (1, 2, 3)]
    _write_edfd(path, [0.0, 1.0, 4.0], 10, vals)  # gap 2..4 s
    rec = open_recording(path)
    assert not rec.continuous
    np.testing.assert_array_equal(rec.record_onsets, [0.0, 1.0, 4.0])
    assert rec.duration == 5.0
    x = rec.read("EEG Test")
    assert x.shape == (50,)
    np.testing.assert_array_equal(x[:20], [1] * 10 + [2] * 10)
    assert np.isnan(x[20:40]).all()
    np.testing.assert_array_equal(x[40:], [3] * 10)
    np.testing.assert_array_equal(rec.read("EEG Test", 1.5, 4.5), [2] * 5 + [np.nan] * 20 + [3] * 5)
    np.testing.assert_array_equal(rec.recorded("EEG Test", 1.5, 4.5), [True] * 5 + [False] * 20 + [True] * 5)
    assert rec.recorded("EEG Test").sum() == 30


# ---------------------------------------------------------------------------------------------
# DREAMS excerpt3 (real file; pyedflib refuses its header, upper-case units)
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not EXCERPT3.is_file(), reason="../shared/data/real/dreams/excerpt3.edf not available")
def test_dreams_excerpt3_loads_with_plausible_microvolts() -> None:
    rec = open_recording(EXCERPT3)
    assert rec.duration == 1800.0
    ch = {c.label: c for c in rec.channels}
    for eeg in ("C3-A1", "O1-A1", "FP1-A1"):
        assert ch[eeg].unit == "uV" and ch[eeg].rate == 50.0
        x = rec.read(eeg)
        assert x.shape == (90000,)
        sd = np.std(x)
        assert 3.0 < sd < 300.0, f"{eeg} std {sd} µV is not an EEG amplitude (unit bug?)"
    assert ch["ECG"].unit == "uV" and ch["ECG"].physical_max == pytest.approx(63000.0)  # MV → ×1000
    assert ch["SAO2"].unit == "%"
    for ann in ("hypnogram", "event_pneumo"):  # annotation channels stay 1 Hz
        assert ch[ann].rate == 1.0 and rec.read(ann).shape == (1800,)
    hyp = rec.read("hypnogram")
    assert set(np.unique(hyp)) <= {0, 1, 2, 3, 4, 5} and np.allclose(hyp, np.round(hyp))
    np.testing.assert_array_equal(rec.read("C3-A1", 600, 630), rec.read("C3-A1")[30000:31500])


def test_bdf_24bit_in_volts(tmp_path: Path) -> None:
    edfio = pytest.importorskip("edfio")
    rng = np.random.default_rng(3)
    x_v = rng.normal(0, 30e-6, 512 * 10)  # EEG in volts
    path = tmp_path / "eeg.bdf"
    edfio.Bdf([edfio.BdfSignal(x_v, 512, label="Fp1", physical_dimension="V", physical_range=(-0.262144, 0.262143)),
               edfio.BdfSignal(rng.normal(0, 1, 10 * 8), 8, label="Temp", physical_dimension="degC",
                               physical_range=(-10, 10))],
              data_record_duration=1).write(path)
    rec = open_recording(path)
    assert [(c.label, c.rate, c.unit) for c in rec.channels] == [("Fp1", 512.0, "uV"), ("Temp", 8.0, "degC")]
    got = rec.read("Fp1", 2.0, 3.0)
    np.testing.assert_allclose(got, x_v[1024:1536] * 1e6, atol=0.04)  # 24-bit step ≈ 0.03 µV
    assert 10 < np.std(rec.read("Fp1")) < 60


def test_duplicate_labels_stay_readable(tmp_path: Path) -> None:
    sigs = [Signal("EEG", 100, np.full(200, 5.0)), Signal("EEG", 100, np.full(200, -7.0))]
    with open_recording(write_edf(tmp_path / "dup.edf", sigs)) as rec:
        assert rec.labels == ["EEG", "EEG#2"]
        assert np.allclose(rec.read("EEG"), 5.0, atol=1e-2) and np.allclose(rec.read("EEG#2"), -7.0, atol=1e-2)
    with pytest.raises(RecordingError, match="closed"):
        rec.read("EEG")
