"""Timestamp dejitter and gap detection for one regularly sampled stream (no LSL).

``TimestampDejitter`` is fed a stream's chunks one at a time (their timestamps, seconds, already
clock-corrected) and keeps what it needs between chunks: the dejittered time of the next
expected sample and the gap/reset counters. Times are in seconds, positions in samples.

* A chunk's timestamps are split where consecutive stamps differ from ``1/rate`` by more than
  the tolerance (``max(2.5 samples, gap_tolerance)``, default 0.1 s); each run is fitted to the
  nominal rate (least squares, slope fixed to ``1/rate``).
* A run that continues the previous one within the tolerance is placed exactly after it (slewed
  by at most 0.1 sample per run towards the fit, so a slowly drifting device clock is followed,
  never jumped).
* A jump forward larger than the tolerance is a **gap**: it is counted (``gaps``,
  ``gap_seconds``) and kept (the data after it is placed at its own time), never smoothed over.
* A jump backwards (a restarted source whose clock went back) is counted as a reset
  (``resets``) and the new data is placed at its own time.

(Measured: devices that stamp each chunk at push time jitter by 20-30 ms on a loaded machine,
so a tolerance of a few samples would report spurious gaps.) This is the one place where a
live stream's gaps are detected and counted; the monitor exports that count.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["Run", "TimestampDejitter"]


class Run(NamedTuple):
    """Samples ``[start, stop)`` of a chunk, contiguous at the nominal rate, the first at ``t0`` s."""

    start: int
    stop: int
    t0: float


class TimestampDejitter:
    """Dejittered run start times and gap/reset counts of one stream, one chunk at a time.

    Args:
        rate: nominal sampling rate (Hz, > 0).
        gap_tolerance: jitter (s) tolerated before a jump counts as a gap; at least 2.5 samples
            are always tolerated.
        label: what the log lines name, e.g. ``"bed b1: stream 'b1'"``.

    Attributes:
        tolerance: the jitter tolerated (s): ``max(2.5 / rate, gap_tolerance)``.
        next_t: dejittered time (s) of the next expected sample; None before the first chunk.
        gaps: forward jumps larger than ``tolerance``.
        gap_seconds: their total length (s).
        resets: backward jumps larger than ``tolerance`` (a restarted source).
    """

    def __init__(self, rate: float, gap_tolerance: float, label: str) -> None:
        self.rate = rate
        self.tolerance = max(2.5 / rate, gap_tolerance)
        self.label = label
        self.next_t: float | None = None
        self.gaps = 0
        self.gap_seconds = 0.0
        self.resets = 0

    def split(self, stamps: np.ndarray) -> list[Run]:
        """Split a chunk's timestamps (float64 s [n], n >= 1) at jumps and give each run its
        dejittered start time; updates ``next_t`` and the counters (gaps and resets are logged,
        the first three of each at INFO/WARNING, later ones at DEBUG)."""
        rate, tol = self.rate, self.tolerance
        d = np.diff(stamps)
        cuts = np.nonzero(np.abs(d - 1.0 / rate) > tol)[0] + 1
        bounds = [0, *cuts.tolist(), len(stamps)]
        runs = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            fit = float(np.mean(stamps[a:b] - np.arange(b - a) / rate))
            if self.next_t is None:
                t0 = fit
            else:
                jump = fit - self.next_t
                if abs(jump) <= tol:
                    t0 = self.next_t + float(np.clip(0.1 * jump, -0.1 / rate, 0.1 / rate))
                elif jump > 0:
                    self.gaps += 1
                    self.gap_seconds += jump
                    log.log(logging.INFO if self.gaps <= 3 else logging.DEBUG,
                            "%s gap of %.3f s at t=%.3f", self.label, jump, self.next_t)
                    t0 = fit
                else:
                    self.resets += 1
                    log.log(logging.WARNING if self.resets <= 3 else logging.DEBUG,
                            "%s timestamps went back by %.3f s; placing new data at its own time",
                            self.label, -jump)
                    t0 = fit
            self.next_t = t0 + (b - a) / rate
            runs.append(Run(a, b, t0))
        return runs
