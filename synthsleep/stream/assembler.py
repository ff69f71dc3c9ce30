"""Live epochs for one bed: ``BedInlet`` chunks → ``psg.preprocess.EpochAssembler`` → ``Epoch``.

Origin: epoch 0 starts at the first sample's timestamp. The first chunks are held until every
stream of the bed has delivered (or ``origin_wait`` wall seconds passed), and the origin is the
earliest of their start times, so a stream that connects a moment later does not lose its first
samples. A resumed monitor passes the saved ``state_dict()`` instead: it carries the origin, the
next epoch index and the normaliser statistics, so epochs continue on the same grid and nothing
is emitted twice (samples before the next epoch are dropped as already scored).

Every chunk is pushed at its dejittered time (never shifted); after each poll the assembler is
told the bed's stream clock (``BedInlet.now``), so an epoch whose data is late by more than
``params.max_delay`` closes anyway, with its missing part flagged (GAP / MISSING).

A restarted source (a replay started again, an amplifier reset) stamps new data before the epochs
already scored. Those samples are not dropped as "already scored": the timeline is closed (its
last epochs flushed), ``restarted`` is set for the caller (the monitor starts a new session), and a
new origin is taken from the new data; the normaliser statistics carry over (same sleeper).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from synthsleep.psg.epoch import Epoch
from synthsleep.psg.preprocess import EpochAssembler, PreprocessParams

from .lsl_inlet import BedInlet

log = logging.getLogger(__name__)

__all__ = ["StreamEpochs"]


class StreamEpochs:
    """Epochs of one bed from its LSL streams.

    Args:
        inlet: the bed's ``BedInlet``.
        params: preprocessing parameters (the artifact's).
        origin: clock time (s, local_clock domain) of epoch 0; None = first sample.
        state: a ``state_dict()`` to resume from (its origin wins over ``origin``).
        origin_wait: wall seconds to wait for every stream before fixing the origin.
    """

    def __init__(self, inlet: BedInlet, params: PreprocessParams | None = None,
                 origin: float | None = None, state: Mapping[str, Any] | None = None,
                 origin_wait: float = 2.0) -> None:
        self.inlet = inlet
        self.params = params or PreprocessParams()
        self.origin_wait = float(origin_wait)
        self._asm: EpochAssembler | None = None
        self._held: list[tuple[str, np.ndarray, float]] = []
        self._held_since: float | None = None
        self._pending_state: dict[str, Any] | None = None
        self._origin = origin
        self._resets = 0
        self.restarted = False  # set when a restarted source began a new timeline; the caller clears it
        if state is not None:
            self.load_state_dict(state)
        elif origin is not None:
            self._start(float(origin))

    # -- public ------------------------------------------------------------------------------------
    @property
    def origin(self) -> float | None:
        """Epoch 0's start (s, local_clock domain), None until fixed."""
        return self._asm.origin if self._asm is not None else self._origin

    @property
    def assembler(self) -> EpochAssembler | None:
        """The underlying assembler (None until the origin is fixed)."""
        return self._asm

    def poll(self) -> list[Epoch]:
        """Pull what arrived (non-blocking), place it, close due epochs; returns them in order."""
        chunks = self.inlet.poll()
        if chunks and self._asm is not None and self.inlet.total_resets > self._resets:
            self._resets = self.inlet.total_resets
            scored_to = self._asm.origin + self._asm.next_epoch * self.params.epoch_seconds
            if any(t0 < scored_to for _, _, t0 in chunks):
                return self._new_timeline(chunks)
        if self._asm is None:
            self._hold(chunks)
            if self._asm is None:
                return []
            chunks = []
        for mod, x, t0 in chunks:
            self._asm.push(mod, x, t0)
        now = self.inlet.now()
        if math.isfinite(now):
            self._asm.advance(now)
        return self._asm.pop()

    def flush(self) -> list[Epoch]:
        """End of stream: close every epoch that has data (see ``EpochAssembler.flush``)."""
        if self._asm is None:
            if not self._held:
                return []
            self._start(min(t0 for _, _, t0 in self._held))
        return self._asm.flush()

    def state_dict(self) -> dict[str, Any]:
        """JSON-able resume state: ``{"origin", "next_epoch", "norm"}`` (the assembler's)."""
        if self._asm is None:
            if self._pending_state is not None:
                return dict(self._pending_state)
            return {"origin": self._origin, "next_epoch": 0, "norm": {}}
        return self._asm.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: same origin, next epoch and normaliser statistics as when the state was saved.
        A state without an origin (saved before any data) only restores the statistics."""
        state = dict(state)
        if state.get("origin") is None:
            self._pending_state = state
            return
        self._start(float(state["origin"]))
        self._asm.load_state_dict(state)

    @property
    def stats(self) -> dict[str, Any]:
        """Inlet counters per stream (``BedInlet.stats``: gaps counted there, once) plus the
        assembler's per-modality late samples (``EpochAssembler.stats``)."""
        return {"streams": self.inlet.stats,
                "modalities": self._asm.stats if self._asm is not None else {}}

    # -- internals ---------------------------------------------------------------------------------
    def _start(self, origin: float) -> None:
        self._asm = EpochAssembler(self.inlet.rates, self.params, origin=origin)
        if self._pending_state is not None:
            st = dict(self._pending_state, origin=origin)
            st.setdefault("next_epoch", 0)
            st.setdefault("norm", {})
            self._asm.load_state_dict(st)
            self._pending_state = None
        log.info("bed %s: epoch origin %.6f (local clock)", self.inlet.bed, origin)
        held, self._held = self._held, []
        for mod, x, t0 in held:
            self._asm.push(mod, x, t0)

    def _new_timeline(self, chunks: list[tuple[str, np.ndarray, float]]) -> list[Epoch]:
        """Close the current timeline (its remaining epochs are returned) and hold ``chunks`` for
        a new origin; the normaliser statistics carry over."""
        asm, self._asm = self._asm, None
        assert asm is not None
        log.warning("bed %s: the stream clock went back before epoch %d (a restarted source); closing "
                    "this timeline and starting a new one at the new data", self.inlet.bed, asm.next_epoch)
        closed = asm.flush()
        self._pending_state = {"norm": asm.state_dict()["norm"]}
        self._origin = None
        self._held, self._held_since = [], None
        self._hold(chunks)
        self.restarted = True
        return closed

    def _hold(self, chunks: list[tuple[str, np.ndarray, float]]) -> None:
        if chunks and self._held_since is None:
            self._held_since = time.monotonic()
        self._held.extend(chunks)
        if not self._held:
            return
        all_in = set(self.inlet.rates) <= {m for m, _, _ in self._held}
        waited = time.monotonic() - (self._held_since or 0.0) >= self.origin_wait
        if all_in or waited:
            self._start(min(t0 for _, _, t0 in self._held))
