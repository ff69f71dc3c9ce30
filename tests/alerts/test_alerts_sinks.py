"""Sinks: JSONL append/fsync/resume index/torn line; LSL markers over real loopback LSL."""

from __future__ import annotations

import json
import os
import uuid

import pylsl
import pytest

from synthsleep.alerts.sinks import (
    JsonlSink,
    LslMarkerSink,
    Sink,
    SinkError,
    marker_source_id,
    read_events,
)
from synthsleep.events import Event


def ev(bed: str, i: int, type_: str = "stage") -> Event:
    return Event(bed, type_, 30.0 * i, 30.0, {"stage": "N2"}, i, "hash")


def test_jsonl_append_resume_index(tmp_path):
    path = tmp_path / "ev" / "events.jsonl"
    with JsonlSink(path) as sink:
        assert isinstance(sink, Sink)
        assert sink.last_epoch_index("1") is None
        sink.write([ev("1", 0), ev("1", 0, "stage_change")])
        sink.write([ev("1", 1), ev("2", 0)])
        sink.write([])
        # fsync'ed: another reader sees every line already
        assert len(path.read_text().splitlines()) == 4
    # reopen: append, do not truncate, report what is recorded
    sink = JsonlSink(path)
    assert sink.last_epoch_indices == {"1": 1, "2": 0}
    assert sink.event_count("1") == 3
    sink.write([ev("2", 1)])
    sink.close()
    evs = read_events(path)
    assert [(e.bed, e.epoch_index, e.type) for e in evs] == [
        ("1", 0, "stage"), ("1", 0, "stage_change"), ("1", 1, "stage"), ("2", 0, "stage"), ("2", 1, "stage")]
    assert evs[0] == ev("1", 0)
    with pytest.raises(SinkError, match="closed"):
        sink.write([ev("1", 9)])


def test_jsonl_torn_last_line_is_cut(tmp_path):
    path = tmp_path / "events.jsonl"
    with JsonlSink(path) as sink:
        sink.write([ev("1", 0), ev("1", 1)])
    with path.open("ab") as f:  # a crash in the middle of a write
        f.write(ev("1", 2).to_json().encode()[:25])
    sink = JsonlSink(path)
    assert sink.last_epoch_index("1") == 1
    sink.write([ev("1", 2)])
    sink.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(x)["bed"] == "1" for x in lines)


def test_jsonl_refuses_foreign_file(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text("hello world\n")
    with pytest.raises(SinkError, match="notes.jsonl:1"):
        JsonlSink(path)
    os.chmod(tmp_path, 0o500)
    try:
        if os.geteuid() != 0:  # root ignores permissions
            with pytest.raises(SinkError, match="cannot open"):
                JsonlSink(tmp_path / "sub" / "x.jsonl")
    finally:
        os.chmod(tmp_path, 0o700)


def test_one_lsl_marker_outlet_for_all_beds(tmp_path):
    """Every bed's events go out on ONE outlet (the bed is in each marker's JSON)."""
    name = f"synthsleep-test-{uuid.uuid4().hex[:8]}"
    lsl = LslMarkerSink(name, beds=["bed-a", "bed-b"], shard=(2, 3))
    found = pylsl.resolve_byprop("name", name, minimum=1, timeout=10.0)
    assert len(found) == 1, f"marker stream {name} not found on loopback"
    info = found[0]
    assert info.type() == "Markers" and info.channel_count() == 1 and info.source_id() == marker_source_id(["bed-a", "bed-b"], (2, 3))
    assert info.channel_format() == pylsl.cf_string and info.nominal_srate() == pylsl.IRREGULAR_RATE
    inlet = pylsl.StreamInlet(info)
    full = inlet.info(timeout=10.0)
    assert full.desc().child_value("beds") == "bed-a,bed-b" and full.desc().child_value("shard") == "2/3"
    inlet.open_stream(timeout=10.0)
    sent = [ev("bed-a", 4, "apnea"), ev("bed-a", 4), ev("bed-b", 7)]
    lsl.write(sent)
    got = []
    for _ in sent:
        sample, ts = inlet.pull_sample(timeout=10.0)
        assert sample is not None, "marker not received within 10 s"
        got.append(Event.from_json(sample[0]))
    assert got == sent and {e.bed for e in got} == {"bed-a", "bed-b"}
    # stable for the same ward (consumers reconnect), distinct for other wards and shards
    sid = marker_source_id(["bed-a", "bed-b"], (2, 3))
    assert sid.startswith("synthsleep:events:") and sid.endswith(":shard2of3")
    assert sid == marker_source_id(["bed-a", "bed-b"], (2, 3)) != marker_source_id(["bed-a"], (2, 3))
    assert marker_source_id(["bed-a", "bed-b"]) != sid
    assert len(pylsl.resolve_byprop("name", name, minimum=2, timeout=1.0)) == 1  # no outlet per bed
    inlet.close_stream()
    lsl.close()
    with pytest.raises(SinkError, match="closed"):
        lsl.write(sent)


def test_jsonl_single_writer(tmp_path):
    path = tmp_path / "events.jsonl"
    first = JsonlSink(path)
    with pytest.raises(SinkError, match="in use"):
        JsonlSink(path)
    first.close()
    JsonlSink(path).close()  # free again once the first writer is gone
