"""The clinical vocabulary: each quantity defined once, by hand-computed values; and the AHI the
monitor exports equals the one the night report computes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthsleep.psg import clinical as C


def test_stage_vocabulary():
    assert C.STAGES == ("W", "N1", "N2", "N3", "REM") and C.STAGE_CODES["REM"] == 4
    assert C.STAGE_EDF_TEXT[4] == "Sleep stage R" and C.STAGE_EDF_TEXT[C.UNKNOWN] == "Sleep stage ?"
    assert C.RESPIRATORY_EVENT_TYPES == ("obstructive_apnea", "central_apnea", "mixed_apnea", "hypopnea")


def test_episode_rule_sleep_hours_and_ahi():
    assert C.count_runs([0, 1, 1, 0, 1, 0, 0, 1]) == 3 and C.count_runs([]) == 0
    stages = np.array([0, 1, 2, 3, 4, -1, 2, 0])  # 5 sleep epochs = 2.5 min
    assert C.sleep_hours(stages) == pytest.approx(2.5 / 60)
    assert C.events_per_hour(3, C.sleep_hours(stages)) == pytest.approx(72.0)
    assert C.events_per_hour(3, 0.0) is None  # n/a, never 0
    evs = [{"type": "obstructive_apnea"}, {"type": "hypopnea"}, {"type": "arousal"}, {"type": "central_apnea"}]
    assert C.count_respiratory_events(evs) == (2, 1)


def test_confusion_kappa_f1_by_hand():
    ref = np.array([0, 0, 1, 2, 2, 2, -1, 3])
    ours = np.array([0, 1, 1, 2, 2, 0, 2, -1])  # -1 on either side is left out
    cm = C.confusion_matrix(ref, ours)
    assert cm.sum() == 6 and cm[0, 0] == 1 and cm[0, 1] == 1 and cm[2, 0] == 1 and cm[2, 2] == 2
    po, pe = 4 / 6, (2 * 2 + 1 * 2 + 3 * 2) / 36
    assert C.cohen_kappa(cm) == pytest.approx((po - pe) / (1 - pe))
    f1 = C.per_class_f1(cm)
    assert f1[0] == pytest.approx(0.5) and f1[1] == pytest.approx(2 / 3) and f1[2] == pytest.approx(0.8)
    assert math.isnan(f1[3]) and C.macro_f1(cm) == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    one = C.confusion_matrix([2, 2], [2, 2])
    assert C.cohen_kappa(one) == 1.0 and math.isnan(C.cohen_kappa(np.zeros((5, 5))))


def test_one_ahi_for_the_monitor_gauge_and_the_night_report(tiny_artifact, synthetic_edf):
    """The running AHI the monitor exports (Prometheus gauge, console, ward) and the night
    report's AHI over the same scored epochs and events are the same number."""
    from synthsleep.alerts.rules import load_rules
    from synthsleep.bed_session import BedSession
    from synthsleep.export.runtime import StepRuntime
    from synthsleep.psg.montage import resolve_channels
    from synthsleep.psg.preprocess import PreprocessParams, iter_recording_epochs
    from synthsleep.psg.recording import open_recording
    from synthsleep.report import sleep_statistics

    rt = StepRuntime(tiny_artifact, threads=1)
    params = PreprocessParams.from_dict(rt.preprocess_params)
    rec = open_recording(synthetic_edf)
    chmap = resolve_channels([c.label for c in rec.channels], wanted=params.modalities)
    session = BedSession("1", params.modalities, rt.new_state(1), rt.model_hash,
                         {**rt.thresholds, "apnea": 0.2, "hypopnea": 0.2}, load_rules(None), recorded=list(chmap))
    events = []
    for ep in iter_recording_epochs(rec, chmap, params):
        out, session.model_state = rt.step(ep.data[None], ep.present[None], session.model_state)
        events += session.handle(ep, out.stage_prob[0], float(out.apnea_prob[0]), float(out.hypopnea_prob[0]))
    events += session.finish()
    stats = sleep_statistics([s.stage for s in session.scored], [e.to_dict() for e in events])
    assert stats.apneas + stats.hypopneas > 0  # the comparison is not 0 == 0
    assert session.detector.ahi is not None and stats.ahi == pytest.approx(session.detector.ahi)
    # the evaluation report's per-night AHI (offline_training.evaluate) is the same function
    from synthsleep.offline_training.metrics import predicted_ahi

    scored = session.scored
    batch = predicted_ahi(np.array([s.apnea_prob >= 0.2 for s in scored]),
                          np.array([s.hypopnea_prob >= 0.2 for s in scored]), np.array([s.stage for s in scored]))
    assert batch == pytest.approx(session.detector.ahi)


def test_batch_ahi_equals_the_running_ahi_epoch_for_epoch():
    """``clinical.predicted_ahi`` over a night's epochs is the detector's running AHI after the
    last of them: same episode rule (starts in sleep), same sleep time, same respiratory gating,
    on random sequences with wake, unscored epochs, EEG-only stretches and long episodes."""
    from synthsleep.events import EventDetector
    from synthsleep.psg.clinical import predicted_ahi
    from synthsleep.psg.epoch import Quality

    mods = ("eeg", "airflow")
    for seed in range(20):
        rng = np.random.default_rng(seed)
        n = 200
        stage = rng.choice(5, n, p=[0.3, 0.1, 0.3, 0.15, 0.15])
        confident = rng.random(n) > 0.1
        resp = np.repeat(rng.random(n // 20) > 0.3, 20)  # airflow comes and goes in 10-min blocks
        pa = np.repeat(rng.random(n // 4) < 0.2, 4) * 0.9  # episodes of 4+ epochs
        ph = (rng.random(n) < 0.1) * 0.8
        det = EventDetector("b", mods, thresholds={"apnea": 0.5, "hypopnea": 0.5, "stage_confidence": 0.6})
        shown = np.full(n, -1)  # the stages the detector called (after its stage filter)
        for i in range(n):
            probs = np.full(5, 0.05)
            probs[stage[i]] = 0.8 if confident[i] else 0.2  # top share 0.8 or 0.5 (threshold 0.6)
            probs /= probs.sum()
            present = np.array([True, bool(resp[i])])
            quality = np.array([0, 0 if resp[i] else int(Quality.MISSING)], np.uint8)
            evs = det.update(i, 30.0 * i, probs, float(pa[i]), float(ph[i]), present, quality)
            shown[i] = next(e.value["code"] for e in evs if e.type == "stage")
        assert ((shown >= 0) == confident).all()  # unknown exactly where the model was unsure
        want = predicted_ahi(pa >= 0.5, ph >= 0.5, shown, resp=resp)
        assert (det.ahi is None) == (want is None)
        if want is not None:
            assert det.ahi == pytest.approx(want, abs=1e-12), seed
