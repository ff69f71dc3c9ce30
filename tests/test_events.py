"""EventDetector: stage events, stage changes, episode merging, AHI, signal loss, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synthsleep.events import Event, EventDetector, EventError

MODS = ("eeg", "eog", "emg", "ecg")


def onehot(stage: int) -> list[float]:
    p = [0.025] * 5
    p[stage] = 0.9
    return p


def run(det: EventDetector, rows, start: int = 0) -> list[Event]:
    """rows: (stage, apnea_prob, hypopnea_prob, present or None)."""
    out = []
    for i, (stage, pa, ph, present) in enumerate(rows, start):
        out += det.update(i, 30.0 * i, onehot(stage), pa, ph, present=present)
    return out


def test_event_json_round_trip_and_contract_keys():
    ev = Event(3, "apnea", 60.0, 90.0, {"n_epochs": 3}, 5, "abc")
    d = json.loads(ev.to_json())
    assert list(d) == ["bed", "type", "onset", "duration", "value", "epoch_index", "model_hash", "session",
                       "time"]
    assert d["bed"] == "3" and d["time"] is None and d["session"] == ""  # no clock known, offline
    assert Event.from_json(ev.to_json()) == ev
    timed = Event(3, "apnea", 60.0, 90.0, {}, 5, "abc", time="2026-11-29T22:10:00.000Z")
    assert Event.from_json(timed.to_json()) == timed
    old = {k: v for k, v in d.items() if k != "time"}  # events files written before `time` existed
    assert Event.from_dict(old) == ev
    with pytest.raises(EventError, match="unknown"):
        Event("1", "snore", 0, 0, None, 0, "")


def test_stage_every_epoch_and_changes():
    det = EventDetector("1", MODS, model_hash="h")
    evs = run(det, [(0, 0, 0, None), (0, 0, 0, None), (2, 0, 0, None), (4, 0, 0, None)])
    stages = [e for e in evs if e.type == "stage"]
    assert [e.value["stage"] for e in stages] == ["W", "W", "N2", "REM"]
    assert stages[2].value["model_prob"]["N2"] == pytest.approx(0.9)  # the model's own
    assert sum(stages[2].value["prob"].values()) == pytest.approx(1.0, abs=1e-5)  # after the stage filter
    assert all(e.model_hash == "h" and e.bed == "1" and e.duration == 30.0 for e in stages)
    changes = [(e.value["from"], e.value["to"], e.epoch_index) for e in evs if e.type == "stage_change"]
    assert changes == [("W", "N2", 2), ("N2", "REM", 3)]


def test_apnea_episode_merged_and_emitted_when_it_ends():
    det = EventDetector("1", MODS)
    rows = [(2, 0.1, 0, None), (2, 0.8, 0, None), (2, 0.9, 0, None), (2, 0.7, 0, None),
            (2, 0.2, 0, None), (2, 0.6, 0.6, None), (2, 0.1, 0.1, None)]
    evs = run(det, rows)
    ap = [e for e in evs if e.type == "apnea"]
    assert len(ap) == 2
    first = ap[0]
    assert (first.onset, first.duration, first.epoch_index) == (30.0, 90.0, 4)
    assert first.value == {"first_epoch": 1, "last_epoch": 3, "n_epochs": 3, "peak_prob": 0.9}
    assert (ap[1].onset, ap[1].duration) == (150.0, 30.0)
    hy = [e for e in evs if e.type == "hypopnea"]
    assert len(hy) == 1 and hy[0].epoch_index == 6
    # 3 episodes in 7 epochs (3.5 min) of N2 sleep
    assert det.ahi == pytest.approx(3 / (7 * 30 / 3600))


def test_episode_ends_at_gap_and_finish():
    det = EventDetector("1", MODS)
    det.update(0, 0.0, onehot(2), 0.9, 0.0)
    det.update(1, 30.0, onehot(2), 0.9, 0.0)
    evs = det.update(5, 150.0, onehot(2), 0.9, 0.0)  # epochs 2-4 never arrived
    ap = [e for e in evs if e.type == "apnea"]
    assert len(ap) == 1 and ap[0].duration == 60.0 and ap[0].value["last_epoch"] == 1
    tail = det.finish()
    assert [(e.type, e.onset, e.duration, e.epoch_index) for e in tail] == [("apnea", 150.0, 30.0, 5)]


def test_ahi_counts_sleep_only():
    det = EventDetector("1", MODS)
    run(det, [(0, 0.9, 0, None), (0, 0.1, 0, None)] + [(2, 0, 0, None)] * 2)
    assert det.sleep_seconds == 60.0
    assert det.ahi == 0.0  # the apnea started in wake


def test_signal_lost_and_restored_and_unscored_epochs():
    det = EventDetector("1", MODS)
    allp = {m: True for m in MODS}
    rows = [(2, 0, 0, allp), (2, 0, 0, {**allp, "eeg": False}), (2, 0, 0, [0, 0, 0, 0]),
            (2, 0, 0, allp)]
    evs = run(det, rows)
    lost = [(e.value["modality"], e.epoch_index) for e in evs if e.type == "signal_lost"]
    restored = [(e.value["modality"], e.value["lost_seconds"]) for e in evs if e.type == "signal_restored"]
    assert lost == [("eeg", 1), ("eog", 2), ("emg", 2), ("ecg", 2)]
    assert sorted(restored) == [("ecg", 30.0), ("eeg", 60.0), ("emg", 30.0), ("eog", 30.0)]
    stages = [e.value["stage"] for e in evs if e.type == "stage"]
    assert stages == ["N2", "N2", "unknown", "N2"]
    assert det.sleep_seconds == 90.0  # the unscored epoch is not sleep
    assert not [e for e in evs if e.type == "stage_change"]  # unknown does not count as a change


def test_bad_input_is_named():
    det = EventDetector("7", MODS)
    with pytest.raises(EventError, match="shape"):
        det.update(0, 0.0, [0.5, 0.5], 0.0, 0.0)
    with pytest.raises(EventError, match="non-finite"):
        det.update(0, 0.0, onehot(1), float("nan"), 0.0)
    with pytest.raises(EventError, match="unknown modality"):
        det.update(0, 0.0, onehot(1), 0.0, 0.0, present={"eeg": True, "spo3": False})
    det.update(0, 0.0, onehot(1), 0.0, 0.0)
    with pytest.raises(EventError, match="already processed"):
        det.update(0, 0.0, onehot(1), 0.0, 0.0)


def test_state_json_resume_gives_identical_events():
    rng = np.random.default_rng(0)
    n = 60
    stages = rng.integers(0, 5, n)
    pa = (rng.random(n) > 0.6) * 0.9
    ph = (rng.random(n) > 0.7) * 0.8
    pres = rng.random((n, 4)) > 0.1

    def feed(det, lo, hi):
        out = []
        for i in range(lo, hi):
            out += det.update(i, 30.0 * i, onehot(int(stages[i])), pa[i], ph[i], present=pres[i])
        return out

    ref = EventDetector("1", MODS, "h")
    all_ref = feed(ref, 0, n) + ref.finish()

    a = EventDetector("1", MODS, "h")
    part = feed(a, 0, 23)
    state = json.loads(json.dumps(a.state_dict()))  # survives JSON
    b = EventDetector("1", MODS, "h")
    b.load_state_dict(state)
    part += feed(b, 23, n) + b.finish()
    assert [e.to_json() for e in part] == [e.to_json() for e in all_ref]
    assert b.ahi == ref.ahi
    with pytest.raises(EventError, match="bed"):
        EventDetector("2", MODS).load_state_dict(state)


def test_a_sensor_the_bed_never_had_is_not_lost():
    det = EventDetector("1", MODS, recorded=("eeg", "eog"))
    eeg_eog = {m: m in ("eeg", "eog") for m in MODS}
    evs = run(det, [(2, 0, 0, eeg_eog), (2, 0, 0, {**eeg_eog, "eog": False}), (2, 0, 0, eeg_eog)])
    assert [(e.type, e.value["modality"]) for e in evs if e.type.startswith("signal_")] == \
        [("signal_lost", "eog"), ("signal_restored", "eog")]
    assert det.summary is not None and set(det.lost_since) == set()


def test_no_respiratory_sensor_no_apnea_scoring():
    mods = ("eeg", "airflow", "spo2")
    det = EventDetector("1", mods)
    full = {"eeg": True, "airflow": True, "spo2": True}
    eeg_only = {"eeg": True, "airflow": False, "spo2": False}
    spo2_only = {"eeg": True, "airflow": False, "spo2": True}
    evs = run(det, [(2, 0.9, 0, full), (2, 0.1, 0, full),       # one apnea, resp scored
                    (2, 0.9, 0.9, eeg_only), (2, 0.9, 0, eeg_only),  # EEG alone: not scored
                    (2, 0.9, 0, spo2_only), (2, 0.1, 0, spo2_only)])  # airflow recorded but lost
    assert [e.value["resp_scored"] for e in evs if e.type == "stage"] == [True, True, False, False, False, False]
    assert [(e.value["first_epoch"], e.value["last_epoch"]) for e in evs if e.type == "apnea"] == [(0, 0)]
    assert not [e for e in evs if e.type == "hypopnea"]
    assert det.sleep_seconds == 180.0 and det.ahi == 1 * 3600.0 / 60.0  # 1 event in 2 epochs with resp
    assert not det.summary.resp_scored
    # a bed that has no airflow sensor at all: the oximeter alone counts
    oxi = EventDetector("3", mods, recorded=("eeg", "spo2"))
    evs = run(oxi, [(2, 0.9, 0, spo2_only), (2, 0.1, 0, spo2_only)])
    assert [e.value["resp_scored"] for e in evs if e.type == "stage"] == [True, True]
    assert [(e.value["first_epoch"], e.value["last_epoch"]) for e in evs if e.type == "apnea"] == [(0, 0)]
    assert oxi.summary is not None and oxi.summary.resp_scored
    # a model that reads no respiratory channel scores apnea from what it has (no gate)
    plain = EventDetector("2", ("eeg",))
    assert [e.type for e in run(plain, [(2, 0.9, 0, None), (2, 0.1, 0, None)]) if e.type == "apnea"] == ["apnea"]


def test_low_confidence_stage_is_unknown_with_the_reason():
    """Below the artifact's stage_confidence the stage is 'unknown' (no stage change, no sleep,
    no apnea counted) and says why; every stage event carries its confidence."""
    det = EventDetector("1", ("eeg", "airflow"), thresholds={"stage_confidence": 0.5})
    sure = det.update(0, 0.0, [0.05, 0.05, 0.8, 0.05, 0.05], 0.9, 0.0)
    unsure = det.update(1, 30.0, [0.1, 0.3, 0.35, 0.15, 0.1], 0.9, 0.0)
    again = det.update(2, 60.0, [0.05, 0.05, 0.8, 0.05, 0.05], 0.0, 0.0)
    st = [e for e in sure + unsure + again if e.type == "stage"]
    assert [e.value["stage"] for e in st] == ["N2", "unknown", "N2"]
    assert [e.value["confidence"] for e in st] == pytest.approx([0.8, 0.35, 0.8])
    assert st[1].value["reason"] == "low confidence: N2 at 0.35 < 0.50" and "reason" not in st[0].value
    assert not st[1].value["resp_scored"] and not any(e.type == "stage_change" for e in unsure + again)
    assert det.sleep_seconds == 60.0  # the unknown epoch is not counted as sleep
    plain = EventDetector("1", ("eeg", "airflow"))  # an artifact without the threshold: no gating
    assert plain.update(0, 0.0, [0.1, 0.3, 0.35, 0.15, 0.1], 0.0, 0.0)[0].value["stage"] == "N2"
