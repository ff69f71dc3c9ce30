import json

import numpy as np
import pytest

from synthsleep.report import format_statistics, sleep_statistics, stage_agreement, write_report


def test_sleep_statistics_hand_computed():
    # 4 W, then N1 N2 N2 W N3 N3 REM REM, then 2 W, one unscored epoch
    stages = [0, 0, 0, 0, 1, 2, 2, 0, 3, 3, 4, 4, 0, 0, -1]
    events = [{"type": "apnea"}, {"type": "hypopnea"}, {"type": "stage"}]
    s = sleep_statistics(stages, events)
    assert s.epochs == 15 and s.unscored_epochs == 1
    assert s.time_in_bed == pytest.approx(7.5)
    assert s.total_sleep_time == pytest.approx(3.5)  # 7 sleep epochs
    assert s.sleep_onset_latency == pytest.approx(2.0)
    assert s.waso == pytest.approx(0.5)  # one W epoch between onset and last sleep
    assert s.awakenings == 1
    assert s.rem_latency == pytest.approx(3.0)  # epoch 10 - onset 4 = 6 epochs
    assert s.stage_percent_of_tst["N2"] == pytest.approx(200 / 7)
    assert s.apneas == 1 and s.hypopneas == 1
    assert s.ahi == pytest.approx(2 / (3.5 / 60.0))
    assert "AHI" in format_statistics(s)


def test_no_sleep_gives_no_ahi():
    s = sleep_statistics([0, 0, 0])
    assert s.total_sleep_time == 0 and s.ahi is None and s.sleep_onset_latency is None


def test_ahi_hours_leave_out_sleep_without_respiratory_sensor():
    stages = [2, 2, 2, 2]
    ev = lambda i, r: {"type": "stage", "epoch_index": i, "value": {"resp_scored": r}}  # noqa: E731
    s = sleep_statistics(stages, [{"type": "apnea"}, ev(0, True), ev(1, True), ev(2, False), ev(3, False)])
    assert s.total_sleep_time == pytest.approx(2.0) and s.ahi == pytest.approx(1 / (1.0 / 60.0))
    s = sleep_statistics(stages, [ev(i, False) for i in range(4)])
    assert s.ahi is None  # EEG only all night: no AHI, not 0


def test_agreement_kappa():
    ref = [0, 1, 2, 2, 3, 4, 4, 2]
    assert stage_agreement(ref, ref).kappa == pytest.approx(1.0)
    ours = [0, 2, 2, 2, 3, 4, 0, -1]
    a = stage_agreement(ours, ref)
    assert a.epochs == 7 and a.accuracy == pytest.approx(5 / 7)
    cm = np.array(a.confusion)
    assert cm.sum() == 7 and cm[1, 2] == 1 and cm[4, 0] == 1
    # kappa by hand: po = 5/7; pe = sum(row_i * col_i) / 49
    rows, cols = cm.sum(1), cm.sum(0)
    pe = (rows * cols).sum() / 49
    assert a.kappa == pytest.approx((5 / 7 - pe) / (1 - pe))
    assert stage_agreement([-1], [2]) is None


def test_write_report_files(tmp_path):
    rng = np.random.default_rng(0)
    stages = rng.integers(0, 5, 200)
    prob = rng.dirichlet(np.ones(5), 200)
    events = [{"type": "apnea", "onset": 600.0, "duration": 60.0}, {"type": "alert_raised", "onset": 700.0}]
    rep = write_report(tmp_path, stages, prob, events, reference=stages, meta={"x": 1})
    assert (tmp_path / "hypnogram.png").stat().st_size > 10_000
    loaded = json.loads((tmp_path / "report.json").read_text())
    assert loaded["agreement"]["accuracy"] == 1.0 and loaded["x"] == 1
    assert rep["statistics"]["apneas"] == 1
