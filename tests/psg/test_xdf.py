"""XDF (LabRecorder) input: real XDF files written chunk by chunk (``psg.xdf.write_xdf``) and read
back through pyxdf; ``synthsleep score`` and ``synthsleep replay`` of them."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
import uuid
from pathlib import Path

import numpy as np
import pylsl
import pytest

from synthsleep.cli import main
from synthsleep.psg.annotations import load_scoring
from synthsleep.psg.montage import resolve_channels
from synthsleep.psg.preprocess import iter_recording_epochs
from synthsleep.psg.recording import RecordingError, open_recording
from synthsleep.psg.xdf import XdfStream, write_xdf

pyxdf = pytest.importorskip("pyxdf")

T_LSL = 5000.25  # LSL clock of the first sample (s): XDF time stamps are never from 0


def edf_to_xdf(edf: Path, out: Path, markers: bool = True, late: float = 0.0) -> Path:
    """The EDF's channels as LabRecorder would record a replay of it: one float32 stream per rate
    (the 256-Hz one typed EEG), its annotations as a string marker stream (replay's JSON), and
    an empty stream. ``late``: the lower-rate streams start this many seconds after the others."""
    rec = open_recording(edf)
    by_rate: dict[float, list] = {}
    for c in rec.channels:
        by_rate.setdefault(c.rate, []).append(c)
    streams = []
    for rate, chans in sorted(by_rate.items(), reverse=True):
        x = np.stack([rec.read(c.label) for c in chans], axis=1).astype(np.float32)
        t = T_LSL + np.arange(len(x)) / rate
        if rate < 256 and late:
            k = int(round(late * rate))
            x, t = x[k:], t[k:]
        streams.append(XdfStream(
            name=f"night-{rate:g}Hz", type="EEG" if rate == 256 else "PSG", rate=rate, fmt="float32",
            labels=[c.label for c in chans], units=["microvolts" if c.unit == "uV" else c.unit for c in chans],
            data=x, stamps=t, source_id=f"night-{rate:g}Hz", clock_offsets=[(T_LSL + 1, 0.0), (T_LSL + 6, 0.0)]))
    if markers:
        anns = rec.annotations
        streams.append(XdfStream(
            name="night-markers", type="Markers", rate=0.0, fmt="string", labels=["marker"],
            data=[[json.dumps({"text": a.text, "onset": a.onset, "duration": a.duration})] for a in anns],
            stamps=np.array([T_LSL + a.onset for a in anns]), source_id="night-markers"))
    streams.append(XdfStream(name="keyboard", type="Markers", rate=0.0, fmt="string", labels=["key"],
                             data=[], stamps=np.zeros(0)))
    return write_xdf(out, streams, datetime=dt.datetime(2026, 3, 1, 23, 15, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))))


@pytest.fixture(scope="module")
def night_xdf(synthetic_edf, tmp_path_factory) -> Path:
    return edf_to_xdf(synthetic_edf, tmp_path_factory.mktemp("xdf") / "night.xdf")


def test_xdf_reads_like_the_edf(synthetic_edf, night_xdf):
    edf, xdf = open_recording(synthetic_edf), open_recording(night_xdf)
    # pyxdf itself reads our file: every stream, samples and header as written
    streams, header = pyxdf.load_xdf(str(night_xdf))
    assert sorted(s["info"]["name"][0] for s in streams) == sorted(
        ["night-512Hz", "night-256Hz", "night-32Hz", "night-1Hz", "night-markers", "keyboard"][: len(streams)])
    assert header["info"]["datetime"][0] == "2026-03-01T23:15:00+0100"
    assert sorted(xdf.labels) == sorted(edf.labels)
    assert xdf.duration == pytest.approx(edf.duration, abs=1e-6)
    assert xdf.start_datetime == dt.datetime(2026, 3, 1, 22, 15, 0)  # UTC, naive like an EDF start
    for c in edf.channels:
        x = xdf.channel(c.label)
        assert (x.rate, x.unit) == (c.rate, c.unit)
        np.testing.assert_allclose(xdf.read(c.label, 30.0, 90.0), edf.read(c.label, 30.0, 90.0).astype(np.float32),
                                   rtol=1e-6, atol=1e-3)
    # the marker stream (replay's JSON) became the annotations; so the file's scoring is read
    assert [(a.text, round(a.onset, 6), a.duration) for a in xdf.annotations] == [
        (a.text, round(a.onset, 6), a.duration) for a in edf.annotations]
    assert load_scoring(night_xdf).stages.tolist() == load_scoring(synthetic_edf).stages.tolist()


def test_late_stream_is_nan_not_shifted(synthetic_edf, tmp_path):
    """A stream that starts 3 s after the others reads NaN there, and its samples stay at their
    own time (never shifted to time 0)."""
    xdf = open_recording(edf_to_xdf(synthetic_edf, tmp_path / "late.xdf", markers=False, late=3.0))
    edf = open_recording(synthetic_edf)
    spo2 = next(c.label for c in edf.channels if c.rate == 1.0)
    got = xdf.read(spo2, 0.0, 10.0)
    assert np.isnan(got[:3]).all() and np.isfinite(got[3:]).all()
    np.testing.assert_allclose(got[3:], edf.read(spo2, 3.0, 10.0), atol=1e-3)
    assert not xdf.continuous and xdf.recorded(spo2, 0.0, 10.0).tolist() == [False] * 3 + [True] * 7


def test_score_xdf_equals_score_edf(tiny_artifact, synthetic_edf, night_xdf, tmp_path, capsys):
    outs = {}
    for kind, path in (("edf", synthetic_edf), ("xdf", night_xdf)):
        out = tmp_path / kind
        assert main(["score", str(path), "--out", str(out), "--model", str(tiny_artifact)]) == 0
        outs[kind] = [line.split(",") for line in (out / "hypnogram.csv").read_text().splitlines()]
    text = capsys.readouterr().out
    assert "agreement with the file's own scoring" in text  # the XDF markers are its scoring
    edf_rows, xdf_rows = outs["edf"], outs["xdf"]
    assert len(edf_rows) == len(xdf_rows) == 21
    for e, x in zip(edf_rows[1:], xdf_rows[1:]):
        assert e[:3] == x[:3]  # epoch, onset, stage
        np.testing.assert_allclose(np.array(e[3:10], float), np.array(x[3:10], float), atol=2e-4)
    # clinical time from the XDF header's datetime (LabRecorder's start), in UTC
    assert xdf_rows[1][-1] == "2026-03-01T22:15:00.000Z"


def test_replay_xdf_with_its_markers(night_xdf):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stream"))
    from stream_helpers import assert_same_epochs, poll_until

    from synthsleep.stream import BedInlet, StreamEpochs, resolve_stream
    from synthsleep.stream.player import ReplayPlayer

    uname = f"ss-xdf-{uuid.uuid4().hex[:10]}"
    rec = open_recording(night_xdf)
    offline = list(iter_recording_epochs(rec, resolve_channels(rec.labels)))
    player = ReplayPlayer(night_xdf, name=uname, speed=math.inf, wait_consumers=10.0, linger=2.0)
    player.start()
    markers = pylsl.StreamInlet(resolve_stream(name=f"{uname}-markers", timeout=5)[0], recover=False)
    markers.open_stream(timeout=5)
    bed = BedInlet.resolve(name=uname, timeout=5.0)
    live = StreamEpochs(bed)
    texts = []

    def poll():
        t, _ = markers.pull_chunk(timeout=0.0)
        texts.extend(json.loads(x[0])["text"] for x in t)
        return live.poll()

    got = poll_until(poll, lambda g: len(g) >= 19 and len(texts) >= len(rec.annotations), timeout=60)
    player.join(timeout=20)
    bed.close()
    assert_same_epochs(got[:19], offline[:19], atol=2e-4, shift=live.origin)
    assert texts == [a.text for a in rec.annotations]


def _bad(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_bad_xdf_clear_errors(tiny_artifact, synthetic_edf, night_xdf, tmp_path, capsys):
    cases = {
        "not XDF": (_bad(tmp_path, "junk.xdf", b"this is not an xdf file at all"), "not a readable XDF"),
        "markers only": (write_xdf(tmp_path / "markers.xdf", [XdfStream(
            "only-markers", "Markers", 0.0, "string", ["m"], [["Sleep stage W"]], np.array([1.0]))]),
            "no signal stream"),
        "bad rate": (write_xdf(tmp_path / "rate.xdf", [XdfStream(
            "amp", "EEG", -5.0, "float32", ["C4-M1"], np.zeros((10, 1)), np.arange(10.0))]),
            "stream 'amp'"),
        "empty": (_bad(tmp_path, "empty.xdf", b"XDF:"), "no stream"),
    }
    for what, (path, words) in cases.items():
        with pytest.raises(RecordingError, match=words) as err:
            open_recording(path)
        assert str(path) in str(err.value), what
        assert main(["score", str(path), "--out", str(tmp_path / "o"), "--model", str(tiny_artifact)]) == 2
        msg = capsys.readouterr().err
        assert "Traceback" not in msg and str(path) in msg, (what, msg)
    # a file cut short (LabRecorder killed): what was written is read, with a warning
    data = night_xdf.read_bytes()
    cut = _bad(tmp_path, "cut.xdf", data[: len(data) * 2 // 3])
    rec = open_recording(cut)
    assert rec.duration > 60 and rec.labels
