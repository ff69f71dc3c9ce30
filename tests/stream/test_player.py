"""ReplayPlayer: EDF → LSL → BedInlet/StreamEpochs gives the offline epochs; CLI basics."""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import pylsl
import pytest
from stream_helpers import assert_same_epochs, poll_until

from synthsleep.psg.montage import resolve_channels
from synthsleep.psg.preprocess import iter_recording_epochs
from synthsleep.psg.recording import Annotation, Signal, open_recording, write_edf
from synthsleep.stream import BedInlet, StreamEpochs, resolve_stream
from synthsleep.stream import player as player_mod
from synthsleep.stream.player import ReplayError, ReplayPlayer, parse_speed

CHANNELS = [("EEG C4-M1", 256.0, 40.0), ("EOG E1-M2", 256.0, 60.0), ("EMG Chin", 256.0, 10.0),
            ("ECG II", 512.0, 300.0), ("Resp Airflow", 32.0, 200.0), ("SpO2", 1.0, 0.0)]


@pytest.fixture(scope="module")
def edf(tmp_path_factory) -> str:
    """A 90-s multi-rate EDF+ with stage and apnea annotations."""
    rng = np.random.default_rng(0)
    sigs = []
    for label, rate, amp in CHANNELS:
        n = int(90 * rate)
        t = np.arange(n) / rate
        if label == "SpO2":
            x = 96 + rng.normal(0, 0.7, n)
            sigs.append(Signal(label, rate, x, unit="%"))
            continue
        x = amp * (rng.normal(0, 1, n) + np.sin(2 * np.pi * (0.25 if rate < 100 else 6.0) * t))
        sigs.append(Signal(label, rate, x, unit="uV"))
    anns = [Annotation(0.0, 30.0, "Sleep stage W"), Annotation(30.0, 30.0, "Sleep stage N2"),
            Annotation(41.5, 12.0, "Obstructive apnea"), Annotation(60.0, 30.0, "Sleep stage N2")]
    return str(write_edf(tmp_path_factory.mktemp("replay") / "night.edf", sigs, anns))


def _offline(path: str):
    rec = open_recording(path)
    return list(iter_recording_epochs(rec, resolve_channels(rec.labels)))


def _replay(edf: str, name: str, speed: float, timeout: float):
    player = ReplayPlayer(edf, name=name, speed=speed, wait_consumers=10.0, linger=2.0)
    assert player.source_ids == [f"{name}-512Hz", f"{name}-256Hz", f"{name}-32Hz", f"{name}-1Hz"]
    player.start()
    markers = pylsl.StreamInlet(resolve_stream(name=f"{name}-markers", timeout=5)[0], recover=False)
    markers.open_stream(timeout=5)
    bed = BedInlet.resolve(name=name, timeout=5.0)
    live = StreamEpochs(bed)
    texts, stamps = [], []

    def poll():
        t, ts = markers.pull_chunk(timeout=0.0)
        texts.extend(x[0] for x in t)
        stamps.extend(ts)
        return live.poll()

    got = poll_until(poll, lambda g: len(g) >= 3 and len(texts) >= 4, timeout=timeout)
    stats = player.join(timeout=10)
    bed.close()
    return got, live, bed, stats, [json.loads(t) for t in texts], stamps


def test_replay_max_speed_equals_offline(edf, uname):
    got, live, bed, stats, marks, stamps = _replay(edf, uname, math.inf, timeout=20)
    assert sorted(bed.rates) == ["airflow", "ecg", "eeg", "emg", "eog", "spo2"]
    assert live.origin == pytest.approx(stats.start, abs=1e-3)
    # float32 on the wire vs float64 offline: equal up to float32 rounding of the inputs
    assert_same_epochs(got, _offline(edf), atol=2e-4, shift=live.origin)
    assert stats.signal_seconds == pytest.approx(90.0)
    assert stats.samples[f"{uname}-512Hz"] == 90 * 512
    assert all(s["gaps"] == 0 and s["samples"] > 0 for s in bed.stats.values())
    assert [m["text"] for m in marks] == ["Sleep stage W", "Sleep stage N2", "Obstructive apnea", "Sleep stage N2"]
    apnea = marks[2]
    assert apnea["onset"] == pytest.approx(41.5) and apnea["duration"] == pytest.approx(12.0)
    # markers are stamped at their signal time on the same clock as the samples
    assert stamps[2] - live.origin == pytest.approx(41.5, abs=1e-3)


def test_replay_faster_than_real_time_is_paced_and_equal(edf, uname):
    """At x30 the timestamps run ahead of the local clock; epochs still close on the data."""
    t = time.monotonic()
    got, live, bed, stats, marks, _ = _replay(edf, uname, 30.0, timeout=30)
    # 90 s of signal at x30: never faster than paced; slower only when the machine is starved
    assert 2.9 <= stats.wall_seconds <= 9.0
    assert time.monotonic() - t >= 2.8
    assert_same_epochs(got, _offline(edf), atol=2e-4, shift=live.origin)
    assert len(marks) == 4


def test_replay_stream_description(edf, uname):
    player = ReplayPlayer(edf, name=uname, speed=1.0)
    player.start()
    try:
        infos = resolve_stream(source_id=f"{uname}-256Hz", timeout=5)
        inlet = pylsl.StreamInlet(infos[0])
        full = inlet.info(timeout=5)
        ch = full.desc().child("channels").child("channel")
        rows = []
        while not ch.empty():
            rows.append((ch.child_value("label"), ch.child_value("unit"), ch.child_value("type")))
            ch = ch.next_sibling()
        assert rows == [("EEG C4-M1", "uV", "EEG"), ("EOG E1-M2", "uV", "EOG"), ("EMG Chin", "uV", "EMG")]
        assert full.name() == uname and full.nominal_srate() == 256.0
        meta = full.desc().child("synthsleep")
        assert meta.child_value("streams").split(",") == player.source_ids
        assert meta.child_value("bed") == uname and meta.child_value("main") == f"{uname}-256Hz"
        # every stream has its own name: the one with the EEG is named like the bed
        assert player.stream_names == {f"{uname}-512Hz": f"{uname}-512Hz", f"{uname}-256Hz": uname,
                                       f"{uname}-32Hz": f"{uname}-32Hz", f"{uname}-1Hz": f"{uname}-1Hz"}
        by_name = resolve_stream(name=uname, timeout=5)
        assert [i.source_id() for i in by_name] == [f"{uname}-256Hz"]
        assert resolve_stream(name=f"{uname}-1Hz", timeout=5)[0].source_id() == f"{uname}-1Hz"
        assert full.channel_format() == pylsl.cf_float32
    finally:
        player.stop()


def test_replay_errors(tmp_path, edf):
    with pytest.raises(ReplayError, match="no channel 'Nope'"):
        ReplayPlayer(edf, channels=["Nope"])
    bad = tmp_path / "bad.edf"
    bad.write_bytes(b"0" * 300)
    parser = argparse.ArgumentParser()
    player_mod.add_arguments(parser)
    assert player_mod.run(parser.parse_args([str(bad)])) == 2
    assert parse_speed("max") == math.inf and parse_speed("10") == 10.0
    with pytest.raises(argparse.ArgumentTypeError):
        parse_speed("fast-ish")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_speed("0")
