"""Alert rules: TOML loading, hysteresis (raised once, cleared once), signal loss, no output."""

from __future__ import annotations

import json

import pytest

from synthsleep.alerts.rules import AlertEngine, RuleError, load_rules
from synthsleep.events import EventDetector

MODS = ("eeg", "eog")


def onehot(stage: int) -> list[float]:
    p = [0.025] * 5
    p[stage] = 0.9
    return p


def write_rules(tmp_path, text: str):
    p = tmp_path / "alerts.toml"
    p.write_text(text)
    return load_rules(p)


BURDEN = """
[[rules]]
name = "burden"
kind = "apnea_burden"
window_minutes = 2      # 4 epochs
include_hypopnea = false
min_fill = 0.5
raise_above = 0.5
clear_below = 0.2
"""


def test_shipped_defaults_load():
    rules = load_rules()
    assert {r.kind for r in rules} == {"apnea_burden", "ahi", "signal_lost", "no_output"}
    assert all(r.clear_below <= r.raise_above for r in rules)


def test_bad_rule_files_are_named(tmp_path):
    with pytest.raises(RuleError, match="kind 'loud'"):
        write_rules(tmp_path, '[[rules]]\nname="x"\nkind="loud"\nraise_above=1\nclear_below=0\n')
    with pytest.raises(RuleError, match="clear_below"):
        write_rules(tmp_path, '[[rules]]\nname="x"\nkind="ahi"\nraise_above=1\nclear_below=5\n')
    with pytest.raises(RuleError, match="unknown key"):
        write_rules(tmp_path, '[[rules]]\nname="x"\nkind="ahi"\nraise_above=1\nclear_below=0\nwindow=3\n')
    with pytest.raises(RuleError, match="invalid TOML"):
        write_rules(tmp_path, "[[rules]\n")
    with pytest.raises(RuleError, match="does not exist"):
        load_rules(tmp_path / "nope.toml")
    with pytest.raises(RuleError, match="duplicate"):
        write_rules(tmp_path, BURDEN + BURDEN)


def test_hysteresis_raised_once_cleared_once(tmp_path):
    rules = write_rules(tmp_path, BURDEN)
    det = EventDetector("1", MODS)
    eng = AlertEngine("1", rules, model_hash="h")
    # 4 negative, 8 positive (stays high: must not repeat), then negatives until cleared,
    # with a wobble between clear_below and raise_above that must not re-raise or clear early.
    apnea = [0.0] * 4 + [0.9] * 8 + [0.0, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0]
    alerts = []
    for i, pa in enumerate(apnea):
        det.update(i, 30.0 * i, onehot(2), pa, 0.0)
        alerts += [(e.type, e.epoch_index, e.value["value"]) for e in eng.update(det.summary, now=1000.0 + i)]
    kinds = [a[0] for a in alerts]
    assert kinds == ["alert_raised", "alert_cleared"]
    raised, cleared = alerts
    assert raised[1:] == (6, 0.75)  # 3 of the last 4 epochs positive
    assert cleared[1:] == (18, 0.0)  # 0.5 and 0.25 in between neither re-raise nor clear
    assert eng.active == []


def test_ahi_rule_waits_for_enough_sleep(tmp_path):
    rules = write_rules(tmp_path, '[[rules]]\nname="ahi"\nkind="ahi"\nmin_sleep_minutes=2\n'
                                  'raise_above=30\nclear_below=25\n')
    det = EventDetector("1", MODS)
    eng = AlertEngine("1", rules)
    out = []
    for i in range(12):
        det.update(i, 30.0 * i, onehot(2), 0.9 if i % 2 == 0 else 0.0, 0.0)  # one apnea a minute
        out += [(e.type, e.epoch_index) for e in eng.update(det.summary)]
    assert out == [("alert_raised", 3)]  # first evaluable after 4 epochs (2 min) of sleep
    assert eng.active == ["ahi"]


def test_signal_lost_rule_per_modality(tmp_path):
    rules = write_rules(tmp_path, '[[rules]]\nname="lost"\nkind="signal_lost"\n'
                                  'raise_above=60\nclear_below=1\nmodalities=["eeg"]\n')
    det = EventDetector("1", MODS)
    eng = AlertEngine("1", rules)
    pres = [[1, 1], [0, 0], [0, 0], [0, 0], [0, 0], [1, 1], [1, 1]]
    out = []
    for i, p in enumerate(pres):
        det.update(i, 30.0 * i, onehot(2), 0.0, 0.0, present=p)
        out += [(e.type, e.epoch_index, e.value["key"]) for e in eng.update(det.summary)]
    # lost since t=30; end of epoch 2 (t=90): 60 s, not above 60; end of epoch 3: 90 s -> raised.
    # eog is lost too but this rule watches eeg only.
    assert out == [("alert_raised", 3, "lost:eeg"), ("alert_cleared", 5, "lost:eeg")]


def test_no_output_tick_and_state_round_trip(tmp_path):
    rules = write_rules(tmp_path, '[[rules]]\nname="silent"\nkind="no_output"\n'
                                  'raise_above=90\nclear_below=1\n')
    det = EventDetector("1", MODS)
    eng = AlertEngine("1", rules)
    det.update(0, 0.0, onehot(0), 0.0, 0.0)
    assert eng.update(det.summary, now=100.0) == []
    assert eng.tick(now=150.0) == []
    raised = eng.tick(now=200.0)
    assert [e.type for e in raised] == ["alert_raised"]
    assert raised[0].onset == pytest.approx(30.0 + 100.0)
    assert eng.tick(now=260.0) == []  # de-duplicated
    state = json.loads(json.dumps(eng.state_dict()))
    eng2 = AlertEngine("1", rules)
    eng2.load_state_dict(state)
    assert eng2.active == ["silent"] and eng2.tick(now=300.0) == []
    det.update(1, 30.0, onehot(0), 0.0, 0.0)
    cleared = eng2.update(det.summary, now=301.0)
    assert [e.type for e in cleared] == ["alert_cleared"]
