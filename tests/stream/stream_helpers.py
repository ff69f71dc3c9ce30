"""Helpers for the stream tests: real LSL outlets on loopback and the direct-assembler reference."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pylsl
import pytest

from synthsleep.psg.epoch import Epoch
from synthsleep.psg.preprocess import EpochAssembler, PreprocessParams


def make_outlet(name: str, rate: float, labels: Sequence[str], units: Sequence[str] | None = None,
                source_id: str | None = None, fmt: str = "float32", stype: str = "PSG") -> pylsl.StreamOutlet:
    """An outlet with ``desc/channels/channel/{label,unit}``."""
    info = pylsl.StreamInfo(name, stype, len(labels), rate, fmt, source_id or f"{name}-{rate:g}Hz")
    chans = info.desc().append_child("channels")
    for i, lab in enumerate(labels):
        ch = chans.append_child("channel")
        ch.append_child_value("label", lab)
        ch.append_child_value("unit", (units or ["uV"] * len(labels))[i])
    return pylsl.StreamOutlet(info, max_buffered=3600)


def push(outlet: pylsl.StreamOutlet, x: np.ndarray, t0: float, rate: float, chunk: int | None = None) -> None:
    """Push ``x`` [n, ch] stamped ``t0 + i / rate``, in chunks of ``chunk`` samples."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    step = chunk or max(1, int(rate / 4))
    for a in range(0, len(x), step):
        b = min(len(x), a + step)
        outlet.push_chunk(np.ascontiguousarray(x[a:b]), (t0 + np.arange(a, b) / rate).tolist())


def poll_until(poll: Callable[[], list], done: Callable[[list], bool], timeout: float = 15.0,
               every: float = 0.01) -> list:
    """Call ``poll`` until ``done(collected)`` or the timeout; returns everything collected."""
    got: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += poll()
        if done(got):
            break
        time.sleep(every)
    return got


def direct_epochs(rates: dict[str, float], pushes: list[tuple[str, np.ndarray, float]], origin: float,
                  params: PreprocessParams | None = None, flush: bool = False) -> list[Epoch]:
    """The reference: the same samples fed straight into ``EpochAssembler``."""
    asm = EpochAssembler(rates, params, origin=origin)
    out: list[Epoch] = []
    for mod, x, t0 in pushes:
        asm.push(mod, np.asarray(x, np.float64), t0)
        out += asm.pop()
    return out + (asm.flush() if flush else [])


def assert_same_epochs(got: Sequence[Epoch], want: Sequence[Epoch], atol: float = 1e-5,
                       shift: float = 0.0) -> None:
    """Same indices, starts (``got`` start = ``want`` start + ``shift``), flags and data."""
    assert [e.index for e in got] == [e.index for e in want]
    for g, w in zip(got, want):
        assert g.start == pytest.approx(w.start + shift, abs=1e-6)
        assert g.modalities == w.modalities
        np.testing.assert_array_equal(g.quality, w.quality, err_msg=f"epoch {g.index} quality")
        np.testing.assert_array_equal(g.present, w.present, err_msg=f"epoch {g.index} present")
        np.testing.assert_allclose(g.data, w.data, atol=atol, rtol=1e-5, err_msg=f"epoch {g.index} data")
