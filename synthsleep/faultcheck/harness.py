"""Plumbing of the fault matrix: synthetic PSG on real LSL outlets, a monitor driven in-process.

Signals are generated with numpy (seconds, not the full synthetic-night generator) at 100 Hz in
one stream per bed carrying every montage modality, in physical units. Data are pushed only
once the monitor has subscribed (an outlet keeps nothing for late consumers) and the monitor is
polled until a condition holds or a generous deadline passes: no fixed sleeps.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pylsl

#: one channel per modality, labelled as the synthetic EDFs are
LABELS: tuple[str, ...] = ("EEG C4-M1", "EOG E1-M2", "EMG Chin", "ECG II", "Resp Airflow", "Resp Thorax",
                           "Resp Abdomen", "SpO2")
UNITS: tuple[str, ...] = ("uV",) * 7 + ("%",)
EPOCH = 30.0


def signals(seconds: float, rate: float = 100.0, seed: int = 0) -> np.ndarray:
    """``[n, 8]`` float32 plausible PSG in ``LABELS`` order (uV, SpO2 in %)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate

    def smooth(scale: float, width: int) -> np.ndarray:
        x = rng.normal(0, 1, n + width)
        x = np.convolve(x, np.ones(width) / np.sqrt(width), mode="same")[:n]
        return scale * x

    eeg = smooth(25.0, 4) + 10 * np.sin(2 * np.pi * 10 * t)
    eog = smooth(30.0, 8)
    emg = rng.normal(0, 4.0, n)
    ecg = 800.0 * (np.sin(2 * np.pi * 1.1 * t) > 0.995) + rng.normal(0, 10, n)
    breath = np.sin(2 * np.pi * 0.25 * t)
    airflow = 200.0 * breath + rng.normal(0, 5, n)
    thorax = 150.0 * breath + rng.normal(0, 5, n)
    abdomen = 150.0 * np.sin(2 * np.pi * 0.25 * t + 0.3) + rng.normal(0, 5, n)
    spo2 = 96.0 + 0.5 * np.sin(2 * np.pi * 0.01 * t) + rng.normal(0, 0.1, n)
    return np.stack([eeg, eog, emg, ecg, airflow, thorax, abdomen, spo2], axis=1).astype(np.float32)


def unique_name(prefix: str = "ssfault") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_outlet(name: str, rate: float = 100.0, labels: Sequence[str] = LABELS,
                units: Sequence[str] = UNITS, synthsleep_desc: Mapping[str, str] | None = None
                ) -> pylsl.StreamOutlet:
    """An outlet with ``desc/channels/channel/{label,unit}`` (and ``desc/synthsleep/*``)."""
    info = pylsl.StreamInfo(name, "PSG", len(labels), rate, "float32", f"{name}-{rate:g}Hz")
    chans = info.desc().append_child("channels")
    for lab, unit in zip(labels, units):
        ch = chans.append_child("channel")
        ch.append_child_value("label", lab)
        ch.append_child_value("unit", unit)
    if synthsleep_desc:
        node = info.desc().append_child("synthsleep")
        for k, v in synthsleep_desc.items():
            node.append_child_value(k, v)
    return pylsl.StreamOutlet(info, chunk_size=0, max_buffered=3600)


def push(outlet: pylsl.StreamOutlet, x: np.ndarray, rate: float, t0: float) -> None:
    """Push ``x [n, ch]`` stamped ``t0 + i / rate`` in 10-s chunks."""
    step = int(10 * rate)
    for a in range(0, len(x), step):
        b = min(len(x), a + step)
        outlet.push_chunk(np.ascontiguousarray(x[a:b]), (t0 + np.arange(a, b) / rate).tolist())


def drive(monitor: Any, until: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll the monitor until ``until()`` or ``timeout`` seconds; True when the condition held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        monitor.poll_once()
        if until():
            return True
        time.sleep(0.01)
    return False


def connected(outlets: Sequence[pylsl.StreamOutlet]) -> Callable[[], bool]:
    return lambda: all(o.have_consumers() for o in outlets)


def scored_up_to(monitor: Any, bed: str, last: int) -> Callable[[], bool]:
    """True once the bed is connected and its session has scored epoch ``last``. Connected first:
    until the monitor takes the resolved stream, the session may still be the one restored from
    saved state (already past ``last`` from the previous night), which the stream can replace with
    a new one (a saved stream position that is unusable)."""
    def done() -> bool:
        b = monitor.beds[bed]
        li = b.session.detector.last_index
        return b.stream is not None and li is not None and li >= last
    return done


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line of an events file (raw dicts: works with any event schema)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def stage_events(events: Sequence[Mapping[str, Any]], bed: str) -> list[Mapping[str, Any]]:
    return [e for e in events if e["type"] == "stage" and e["bed"] == bed]


@dataclass
class Outcome:
    """One fault's verdict: passed, lost, doubled, crashed or garbage, and why."""

    fault: str
    verdict: str
    detail: str = ""
    seconds: float = 0.0
