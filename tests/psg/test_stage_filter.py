"""StageFilter: the causal forward filter over stages, and how the EventDetector uses it."""

from __future__ import annotations

import numpy as np
import pytest

from synthsleep.events import EventDetector, EventError
from synthsleep.psg.stage_filter import SHARPNESS, StageFilter, filter_night, sleep_transitions

W, N1, N2, N3, REM = range(5)


def probs(*pairs: tuple[int, float]) -> np.ndarray:
    """Stage probabilities with the given (stage, p) and the rest shared evenly."""
    p = np.zeros(5)
    for s, v in pairs:
        p[s] = v
    rest = [s for s in range(5) if s not in dict(pairs)]
    p[rest] = (1.0 - p.sum()) / len(rest)
    return p


def stage_value(det: EventDetector, i: int, p: np.ndarray, present=None) -> dict:
    """The value of the ``stage`` event epoch ``i`` produced."""
    return next(e.value for e in det.update(i, 30.0 * i, p, 0.0, 0.0, present=present) if e.type == "stage")


def test_transitions_are_a_sleep_markov_chain():
    t = sleep_transitions()
    assert t.shape == (5, 5) and np.allclose(t.sum(1), 1.0)
    assert (np.diag(t) > 0.5).all()  # stages persist
    assert t[N3, REM] < 0.01 and t[W, N3] < 0.01  # N3 -> REM and W -> N3 are rare
    assert t[N2, N3] > 10 * t[W, N3]


def test_forward_step_is_the_hmm_recursion():
    t = sleep_transitions()
    f = StageFilter()
    seq = [probs((W, 0.7)), probs((N1, 0.5)), probs((N2, 0.6)), probs((N2, 0.4), (N3, 0.35))]
    belief = np.full(5, 0.2)
    for p in seq:
        want = p ** SHARPNESS * (belief @ t)
        belief = want / want.sum()
        np.testing.assert_allclose(f.update(p), belief, rtol=1e-12)
    np.testing.assert_allclose(filter_night(np.stack(seq))[-1], belief, rtol=1e-12)


def test_a_lone_ambiguous_epoch_follows_the_run_but_clear_evidence_wins():
    run = [probs((N2, 0.8))] * 10
    blip = probs((REM, 0.45), (N2, 0.35))  # REM straight out of N2, weakly
    out = filter_night(np.stack(run + [blip]))
    assert out[-1].argmax() == N2 and blip.argmax() == REM
    clear = [probs((REM, 0.9))] * 3  # REM that stays and is clear is REM
    assert filter_night(np.stack(run + clear))[-1].argmax() == REM
    # rare is not impossible: clear REM straight out of wake (sleep-onset REM) is called at once
    wake_then_rem = [probs((W, 0.9))] * 5 + [probs((REM, 0.9))]
    assert filter_night(np.stack(wake_then_rem))[-1].argmax() == REM


def test_skip_drifts_towards_the_chain_and_state_round_trips():
    f = StageFilter()
    for _ in range(5):
        f.update(probs((N3, 0.9)))
    g = StageFilter()
    g.load_state_dict(f.state_dict())
    np.testing.assert_array_equal(g.belief, f.belief)
    before = f.belief[N3]
    f.skip(60)  # half an hour unseen: far less sure it is still N3
    assert f.belief[N3] < 0.5 * before and f.belief.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="belief"):
        g.load_state_dict({"belief": [1.0, 0.0]})


def test_detector_picks_the_filtered_stage_but_abstains_on_the_models_confidence():
    det = EventDetector("1", ("eeg",), thresholds={"stage_confidence": 0.4})
    raw = EventDetector("1", ("eeg",), thresholds={"stage_confidence": 0.4}, stage_filter=False)
    rows = [probs((N2, 0.8))] * 10 + [probs((REM, 0.45), (N2, 0.35)), probs((REM, 0.38), (N2, 0.3))]
    got = [stage_value(det, i, p) for i, p in enumerate(rows)]
    ref = [stage_value(raw, i, p) for i, p in enumerate(rows)]
    assert [v["stage"] for v in got[-2:]] == ["N2", "unknown"]  # filtered; 0.38 < 0.4: unknown
    assert [v["stage"] for v in ref[-2:]] == ["REM", "unknown"]
    assert got[-1]["confidence"] == pytest.approx(0.38) and "low confidence" in got[-1]["reason"]
    assert got[-2]["model_prob"]["REM"] == pytest.approx(0.45) and got[-2]["prob"]["N2"] > 0.5
    np.testing.assert_allclose(det.stage_prob, [got[-1]["prob"][s] for s in ("W", "N1", "N2", "N3", "REM")],
                               atol=1e-6)
    # the belief is part of the saved state: a restored detector continues identically
    twin = EventDetector("1", ("eeg",), thresholds={"stage_confidence": 0.4})
    twin.load_state_dict(det.state_dict())
    nxt = probs((REM, 0.5), (N2, 0.3))
    assert stage_value(twin, 12, nxt) == stage_value(det, 12, nxt)
    state = det.state_dict()
    del state["stage_filter"]
    with pytest.raises(EventError, match="stage filter"):
        twin.load_state_dict(state)


def test_epochs_without_eeg_do_not_feed_the_filter():
    det = EventDetector("1", ("eeg", "ecg"))
    for i in range(5):
        det.update(i, 30.0 * i, probs((N3, 0.9)), 0, 0)
    sure = det.stage_filter.belief[N3]
    assert stage_value(det, 5, probs((W, 0.99)), {"eeg": False, "ecg": True})["stage"] == "unknown"
    assert det.stage_filter.belief[N3] < sure and det.stage_filter.belief[W] < 0.1  # drifted, W not read


def test_windows_restart_the_filter():
    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.ones(5), 25)
    got = filter_night(p, window=10)
    for a in (0, 10, 20):
        np.testing.assert_array_equal(got[a:a + 10], filter_night(p[a:a + 10]))
