"""WardState: the ward's per-bed snapshot, fed with real BedSessions (no LSL, no web)."""

from __future__ import annotations

import json

import numpy as np

from synthsleep.alerts.rules import load_rules
from synthsleep.bed_session import BedSession
from synthsleep.events import iso_utc
from synthsleep.psg.epoch import EPOCH_SAMPLES, Epoch
from synthsleep.ward import WardState

MODS = ("eeg", "eog", "airflow")


def _epoch(i: int, present=(True, True, True), quality=None) -> Epoch:
    bits = quality if quality is not None else [0 if p else 2 for p in present]  # 2: FLAT
    return Epoch(i, 1000.0 + 30.0 * i, MODS, np.zeros((3, EPOCH_SAMPLES), np.float32),
                 np.array(bits, np.uint8), np.array(present, bool), np.zeros(3, np.float32))


def _feed(ward: WardState, session: BedSession, i: int, stage: int, apnea: float, present=(True, True, True),
          quality=None):
    prob = np.full(5, 0.05, np.float32)
    prob[stage] = 0.8
    ward.observe(session.bed, session.handle(_epoch(i, present, quality), prob, apnea, 0.0), session)


def test_every_bed_is_listed_before_its_first_epoch():
    snap = WardState(["1", "2"]).snapshot()
    assert [b["bed"] for b in snap["beds"]] == ["1", "2"]
    assert all(b["epoch"] is None and b["ahi"] is None and b["hypnogram"] == [] for b in snap["beds"])
    assert all(b["connected"] is None for b in snap["beds"])  # nobody said yet
    json.dumps(snap, allow_nan=False)


def test_connection_changes_count_as_changes():
    ward = WardState(["1", "2"])
    v = ward.version
    ward.set_connected("1", False)
    assert ward.version == v + 1
    ward.set_connected("1", False)  # no change, no new version (no push to the browsers)
    assert ward.version == v + 1
    ward.set_connected("1", True)
    assert [b["connected"] for b in ward.snapshot()["beds"]] == [True, None]


def test_stage_hypnogram_events_ahi_alerts_and_sensors():
    clock = iter(range(100, 200))
    ward = WardState(["a", "b"], clock=lambda: float(next(clock)))
    s = BedSession("a", MODS, None, "h", rules=load_rules(), recorded=("eeg", "eog", "airflow"))
    v0 = ward.version
    _feed(ward, s, 0, 0, 0.0)  # wake: AHI undefined
    bed = ward.snapshot()["beds"][0]
    assert ward.version > v0
    assert bed["stage"] == "W" and bed["epoch"] == 0 and abs(bed["confidence"] - 0.8) < 1e-6
    assert bed["ahi"] is None  # n/a, not 0: no sleep with a respiratory sensor yet
    for i in range(1, 4):
        _feed(ward, s, i, 2, 0.9)  # N2 with an apnea running
    _feed(ward, s, 4, 2, 0.0, present=(True, True, False))  # apnea ends; airflow lost (flat)
    bed = ward.snapshot()["beds"][0]
    assert bed["hypnogram"] == [0, 2, 2, 2, 2] and bed["first_epoch"] == 0
    assert bed["counts"] == {"apnea": 1, "hypopnea": 0}
    ev = bed["resp_events"][0]
    assert ev["type"] == "apnea" and ev["onset"] == 30.0 and ev["duration"] == 90.0
    assert bed["ahi"] == s.detector.ahi > 0
    assert {x["modality"]: x["ok"] for x in bed["sensors"]} == {"eeg": True, "eog": True, "airflow": False}
    assert [x["reason"] for x in bed["sensors"] if not x["ok"]] == ["flat"]
    assert bed["epoch_time"] is None  # no clock known to this session
    assert bed["elapsed"] == 150.0 and bed["last_epoch_time"] == 105.0  # the clock also stamps each snapshot
    assert ward.snapshot()["beds"][1]["epoch"] is None  # the other bed is untouched
    s.time_origin = 1_800_000_000.0  # the monitor maps the stream clock to the system clock
    _feed(ward, s, 5, 2, 0.0, quality=(4, 0, 0))  # EEG clipped: still present, and said so
    bed = ward.snapshot()["beds"][0]
    assert [(x["modality"], x["ok"], x["reason"]) for x in bed["sensors"]] == [
        ("eeg", True, "clipped"), ("eog", True, "ok"), ("airflow", True, "ok")]
    assert bed["epoch_time"] == iso_utc(1_800_000_000.0 + 1150.0) == "2027-01-15T08:19:10.000Z"


def test_gap_and_unknown_epochs_and_alerts():
    ward = WardState(["a"])
    s = BedSession("a", MODS, None, "h", rules=load_rules())
    _feed(ward, s, 3, 1, 0.0)  # a monitor that starts mid-night
    _feed(ward, s, 5, 1, 0.0, present=(False, False, False))  # epoch 4 never came, 5 unscored
    bed = ward.snapshot()["beds"][0]
    assert bed["first_epoch"] == 3 and bed["hypnogram"] == [1, None, -1]
    assert bed["stage"] == "unknown" and bed["confidence"] is None
    ward.update("a", [], ahi=None, alerts=["no_output"], sensors=["eeg"])
    assert ward.snapshot()["beds"][0]["alerts"] == ["no_output"]
