"""Bad EDF input: a RecordingError naming the file and the problem, never a library traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synthsleep.psg.recording import RecordingError, Signal, open_recording, write_edf


@pytest.fixture()
def good_edf(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    sigs = [Signal("EEG C4-M1", 100, rng.normal(0, 20, 100 * 20)), Signal("SpO2", 1, np.full(20, 96.0), unit="%")]
    return write_edf(tmp_path / "good.edf", sigs, [(1.0, 5.0, "Hypopnea")])


def _expect(path: Path, *fragments: str) -> RecordingError:
    with pytest.raises(RecordingError) as info:
        open_recording(path)
    msg = str(info.value)
    assert path.name in msg, msg
    for f in fragments:
        assert f in msg, msg
    assert isinstance(info.value, ValueError)
    return info.value


def test_good_file_opens(good_edf: Path) -> None:
    assert open_recording(good_edf).duration == 20.0


def test_truncated_file(good_edf: Path, tmp_path: Path) -> None:
    bad = tmp_path / "truncated.edf"
    data = good_edf.read_bytes()
    bad.write_bytes(data[: len(data) - 777])
    _expect(bad, "truncated")


def test_header_lies_about_record_count(good_edf: Path, tmp_path: Path) -> None:
    bad = tmp_path / "lies.edf"
    data = bytearray(good_edf.read_bytes())
    data[236:244] = b"40      "  # header claims 40 records, file holds 20
    bad.write_bytes(bytes(data))
    _expect(bad, "header says 40 data records")


def test_corrupt_header_number(good_edf: Path, tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.edf"
    data = bytearray(good_edf.read_bytes())
    data[252:256] = b"zz  "
    bad.write_bytes(bytes(data))
    _expect(bad, "corrupt header")


def test_corrupt_signal_header(good_edf: Path, tmp_path: Path) -> None:
    bad = tmp_path / "corrupt_sig.edf"
    data = bytearray(good_edf.read_bytes())
    n = int(data[252:256])
    off = 256 + n * (16 + 80 + 8 + 8 + 8 + 8 + 8 + 80)  # samples-per-record fields
    data[off : off + 8] = b"abc     "
    bad.write_bytes(bytes(data))
    _expect(bad, "samples-per-record")


def test_empty_file(tmp_path: Path) -> None:
    bad = tmp_path / "empty.edf"
    bad.write_bytes(b"")
    _expect(bad, "empty")


def test_garbage_bytes(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.edf"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    _expect(bad, "not an EDF")


def test_text_file_is_not_edf(tmp_path: Path) -> None:
    bad = tmp_path / "notes.edf"
    bad.write_text("[Hypnogram]\n5\n5\n" * 50)
    _expect(bad, "not an EDF")


def test_short_header(tmp_path: Path) -> None:
    bad = tmp_path / "short.edf"
    bad.write_bytes(b"0       " + b" " * 100)
    _expect(bad, "too short")


def test_missing_file(tmp_path: Path) -> None:
    _expect(tmp_path / "nope.edf", "no such file")


def test_write_rejects_non_ascii_label(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="not ASCII"):
        write_edf(tmp_path / "x.edf", [Signal("EEG Ä", 100, np.zeros(100))])
    assert not list(tmp_path.iterdir())  # nothing half-written left behind
