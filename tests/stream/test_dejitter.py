"""TimestampDejitter on synthetic timestamps (no LSL)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from synthsleep.stream.dejitter import Run, TimestampDejitter


def _stamps(t0: float, n: int, rate: float) -> np.ndarray:
    return t0 + np.arange(n) / rate


def test_regular_timestamps_are_one_run_per_chunk_without_gaps():
    dj = TimestampDejitter(100.0, 0.1, "bed b: stream 's'")
    assert dj.split(_stamps(10.0, 50, 100.0)) == [Run(0, 50, pytest.approx(10.0, abs=1e-12))]
    assert dj.next_t == pytest.approx(10.5, abs=1e-12)
    assert dj.split(_stamps(10.5, 30, 100.0)) == [Run(0, 30, pytest.approx(10.5, abs=1e-12))]
    assert dj.next_t == pytest.approx(10.8, abs=1e-12)
    assert (dj.gaps, dj.gap_seconds, dj.resets) == (0, 0.0, 0)


def test_jitter_within_tolerance_is_smoothed_and_slewed():
    dj = TimestampDejitter(100.0, 0.1, "x")
    dj.split(_stamps(10.0, 50, 100.0))
    # per-sample jitter of +-4 ms around the grid: no cut, the fit is the grid
    wobble = np.tile([0.004, -0.004], 25)
    (run,) = dj.split(_stamps(10.5, 50, 100.0) + wobble)
    assert run == Run(0, 50, pytest.approx(10.5, abs=1e-9))
    # a chunk 50 ms late (within 0.1 s): placed after the previous one, slewed by 0.1 sample at most
    (run,) = dj.split(_stamps(11.05, 50, 100.0))
    assert run == Run(0, 50, pytest.approx(11.001, abs=1e-9))
    assert dj.next_t == pytest.approx(11.501, abs=1e-9)
    # a small offset (0.5 ms) is followed by a tenth of it
    (run,) = dj.split(_stamps(11.5015, 10, 100.0))
    assert run.t0 == pytest.approx(11.50105, abs=1e-9)
    assert (dj.gaps, dj.gap_seconds, dj.resets) == (0, 0.0, 0)


def test_forward_jump_is_a_gap_with_its_seconds_and_a_new_run(caplog):
    dj = TimestampDejitter(100.0, 0.1, "bed b: stream 's'")
    dj.split(_stamps(10.0, 50, 100.0))
    with caplog.at_level(logging.INFO, logger="synthsleep.stream.dejitter"):
        (run,) = dj.split(_stamps(11.0, 50, 100.0))  # 0.5 s after the expected 10.5
    assert run == Run(0, 50, pytest.approx(11.0, abs=1e-9))
    assert (dj.gaps, dj.gap_seconds, dj.resets) == (1, pytest.approx(0.5, abs=1e-9), 0)
    assert dj.next_t == pytest.approx(11.5, abs=1e-9)
    assert caplog.messages == ["bed b: stream 's' gap of 0.500 s at t=10.500"]
    # a hole inside one chunk splits it: two runs, the second at its own time
    ts = np.concatenate([_stamps(11.5, 20, 100.0), _stamps(12.0, 30, 100.0)])
    runs = dj.split(ts)
    assert [(r.start, r.stop) for r in runs] == [(0, 20), (20, 50)]
    assert [r.t0 for r in runs] == pytest.approx([11.5, 12.0], abs=1e-9)
    assert (dj.gaps, dj.gap_seconds, dj.resets) == (2, pytest.approx(0.8, abs=1e-9), 0)


def test_backward_jump_is_a_reset_placed_at_its_own_time(caplog):
    dj = TimestampDejitter(100.0, 0.1, "bed b: stream 's'")
    dj.split(_stamps(100.0, 50, 100.0))
    with caplog.at_level(logging.WARNING, logger="synthsleep.stream.dejitter"):
        (run,) = dj.split(_stamps(40.0, 50, 100.0))
    assert run == Run(0, 50, pytest.approx(40.0, abs=1e-9))
    assert (dj.gaps, dj.gap_seconds, dj.resets) == (0, 0.0, 1)
    assert caplog.messages == [
        "bed b: stream 's' timestamps went back by 60.500 s; placing new data at its own time"]
    # the new timeline continues normally
    (run,) = dj.split(_stamps(40.5, 50, 100.0))
    assert run.t0 == pytest.approx(40.5, abs=1e-9)
    assert (dj.gaps, dj.resets) == (0, 1)


def test_tolerance_is_at_least_two_and_a_half_samples():
    assert TimestampDejitter(100.0, 0.1, "x").tolerance == pytest.approx(0.1)
    assert TimestampDejitter(10.0, 0.1, "x").tolerance == pytest.approx(0.25)
    assert TimestampDejitter(256.0, 0.001, "x").tolerance == pytest.approx(2.5 / 256)
    # at 10 Hz a 0.2-s jump is jitter (slewed by 0.1 sample), a 0.3-s jump a gap
    dj = TimestampDejitter(10.0, 0.1, "x")
    dj.split(_stamps(0.0, 10, 10.0))
    (run,) = dj.split(_stamps(1.2, 10, 10.0))
    assert run.t0 == pytest.approx(1.01, abs=1e-9) and dj.gaps == 0
    (run,) = dj.split(_stamps(2.31, 10, 10.0))
    assert run.t0 == pytest.approx(2.31, abs=1e-9)
    assert (dj.gaps, dj.gap_seconds) == (1, pytest.approx(0.3, abs=1e-9))

