"""The realtime monitor: beds' LSL streams → epochs → one batched model step → events, alerts.

Many beds run in one process. Each round polls every bed (non-blocking), collects the epochs that
closed, and runs ONE batched step for the beds that have an epoch ready (the artifact has a
dynamic batch axis). After every step each bed's events are written (JSONL fsynced, the ONE LSL
marker stream shared by all beds, Prometheus) and its state is saved atomically (model state, preprocessing statistics, event and
alert state) so a monitor killed at any point and restarted resumes without losing an epoch's
events or writing one twice.

Event identity is (bed, session, epoch index); the events file is the truth for what was
written. A bed that resumes from valid saved state continues its session and skips only the
epochs of THAT session already in the JSONL. A bed without usable state (none, unreadable,
truncated, another model, another clock) starts a NEW session and appends: nothing is ever
dropped because an earlier night used the same epoch indices. See ``bed_state``.

Per-bed isolation: anything that goes wrong with one bed (its stream's description, channels,
rate or units, its state, its data) marks that bed faulted (log line, ``bed_fault`` event,
``synthsleep_bed_faulted`` metric) and retries it with backoff; the other beds go on.

Capacity: a round pulls only inlets that hold samples, stream metrics are refreshed every few
seconds and alert timers once a second (``benchmarks/bench_live_capacity.py``: 300 real-time beds
in one process). Beyond one process: ``--shard I/N`` runs beds I, I+N, ... of the same beds.toml,
each shard its own events file, state folder, marker source_id and Prometheus target.

This is live code: it imports no torch (ONNX Runtime only).

Why one module (~790 lines): the ``Monitor`` loop (connect, poll, batched step, per-bed faults,
sessions and restarts, state saving) acts on the same ``_Bed`` records in the same round, and its
CLI entry (beds file, shards) only builds them; the parts with a job of their own already live
apart (``stream/``, ``bed_session``, ``bed_state``, ``events``, ``alerts/``, ``ward/``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .alerts.metrics import MonitorMetrics, start_metrics_server
from .alerts.rules import load_rules
from .alerts.sinks import JsonlSink, LslMarkerSink, SinkError
from .bed_session import BedSession, resolve_model_path
from .bed_state import SavedState, StateDirLocked, StateStore, new_session_id
from .events import Event, EventError
from .export.runtime import StepRuntime, StepState
from .psg.epoch import STAGES, Epoch
from .psg.montage import parse_overrides
from .psg.preprocess import PreprocessParams
from .stop_flag import StopFlag, stop_on_signals
from .stream.assembler import StreamEpochs
from .stream.lsl_inlet import (
    DEFAULT_BUFLEN_S,
    BedInlet,
    StreamNotFound,
    check_units,
    parse_units,
    wall_clock_offset,
)

log = logging.getLogger(__name__)

#: seconds before a faulted bed is retried: doubles per consecutive fault, up to the maximum
FAULT_RETRY_S, FAULT_RETRY_MAX_S = 2.0, 60.0
#: at most this many beds per batched model step. ONNX Runtime's CPU memory arena grows to the
#: largest batch it has run and keeps that memory (~4.5 MB per bed of the batch for the bundled
#: model: 20 beds closing an epoch together left ~95 MB behind); on CPU a batch of 4 is already
#: as fast per bed as larger ones (benchmarks/bench_bed_memory.py)
MAX_BATCH = 4


def _short(text: str, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters for a log line or an event (a 1-MB stream label must
    not become a 10-MB log line)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


@dataclass
class BedSpec:
    """Where one bed's data comes from.

    Attributes:
        bed: bed identifier (metric label, event field).
        stream: LSL stream name (every stream of that name belongs to the bed).
        source_ids: or: exact LSL source_ids of the bed's streams.
        channels: ``{modality: label}`` overrides of the channel map.
        units: ``{modality: unit}`` overrides of the units the streams describe.
    """

    bed: str
    stream: str | None = None
    source_ids: list[str] = field(default_factory=list)
    channels: dict[str, str] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)


#: ``[monitor]`` options of a beds file (each also a command-line option, which wins over it)
MONITOR_OPTIONS = ("model", "metrics", "http", "events", "state_dir", "rules", "buffer")
BED_KEYS = ("id", "stream", "source_ids", "channels", "units")


def load_beds_config(path: str | Path) -> tuple[list[BedSpec], dict[str, Any]]:
    """Read ``beds.toml``: ``[monitor]`` options (``MONITOR_OPTIONS``: strings, ``buffer`` seconds) and ``[[bed]]``
    tables (``BED_KEYS``: id, stream or source_ids, channels, units). Unknown keys are an error.
    Raises ValueError (``tomlconfig.ConfigError``) naming the file and the problem."""
    from .tomlconfig import check_keys, coerce, read_toml

    path = Path(path)
    doc = read_toml(path, "beds config")
    check_keys(doc, ("monitor", "bed"), str(path))
    options = dict(doc.get("monitor", {}))
    check_keys(options, MONITOR_OPTIONS, str(path), "monitor.")
    for k, v in options.items():
        options[k] = coerce(float(DEFAULT_BUFLEN_S) if k == "buffer" else "", v, f"{path}: monitor.{k}")
    beds = []
    for i, t in enumerate(doc.get("bed", [])):
        check_keys(t, BED_KEYS, f"{path}: [[bed]] #{i + 1}")
        if "id" not in t or not (t.get("stream") or t.get("source_ids")):
            raise ValueError(f"{path}: [[bed]] #{i + 1} needs an id and a stream (or source_ids)")
        units = {str(m): str(u) for m, u in dict(t.get("units", {})).items()}
        try:
            check_units(units)
        except ValueError as exc:
            raise ValueError(f"{path}: [[bed]] {t['id']}: {exc}") from None
        beds.append(BedSpec(str(t["id"]), t.get("stream"), list(t.get("source_ids", [])),
                            dict(t.get("channels", {})), units))
    if not beds:
        raise ValueError(f"{path}: no [[bed]] tables")
    ids = [b.bed for b in beds]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: bed ids must be unique, got {ids}")
    return beds, options


class _Bed:
    """Everything the monitor holds for one bed."""

    def __init__(self, spec: BedSpec, session: BedSession) -> None:
        self.spec = spec
        self.session = session
        self.stream: StreamEpochs | None = None
        self.pending: deque[tuple[Epoch, float]] = deque()  # (epoch, wall time it closed)
        self.session_id = ""  # the monitoring session (event identity: bed, session, epoch)
        self.resume: dict[str, Any] | None = None  # stream state to continue from on (re)connect
        self.written_up_to = -1  # last epoch index of this session already in the JSONL
        self.next_resolve = 0.0
        self.resolving: Future[BedInlet] | None = None  # a resolve running in the background
        self.samples_seen = 0  # samples counted into the metrics
        self.gaps_seen = 0
        self.pulled = 0  # samples pulled (cheap counter: idle detection every round)
        self.next_stats = 0.0  # monotonic time of the next stream-metrics refresh
        self.faults = 0  # consecutive faults (backoff); 0 once an epoch is scored again
        self.faulted = False
        self.last: dict[str, Any] = {}


class Monitor:
    """Beds → stream → preprocessing → batched step → events/alerts/sinks/metrics.

    Args:
        beds: the beds to monitor.
        runtime: the loaded artifact.
        events_path: JSONL event log (append-only).
        state_dir: folder for per-bed resume state (None: no resume).
        metrics: Prometheus metrics (None: none).
        markers: publish events on the monitor's one LSL marker stream (``synthsleep-events``;
            the bed in each marker's JSON).
        rules_path: alert rules TOML (None: shipped defaults).
        resolve_timeout: seconds to wait for a bed's stream on each attempt.
        max_buflen: seconds the monitor may stall before an LSL inlet drops samples (liblsl
            preallocates ~16 bytes per sample slot: 120 s of a 512-Hz stream is ~1 MB; a replay
            faster than real time scales it by its speed).
        shard: ``(i, n)`` when this monitor is shard i (1-based) of a ward split over n processes
            (names its marker stream's source_id; the beds given are already this shard's).
        stats_interval: seconds between refreshes of a bed's stream metrics (samples, gaps, lag);
            the loop itself only polls what has data.
        max_batch: at most this many beds per batched model step (``MAX_BATCH``; more beds with
            an epoch ready are stepped in several batches of the same round).
    """

    def __init__(self, beds: Sequence[BedSpec], runtime: StepRuntime, events_path: str | Path,
                 state_dir: str | Path | None = None, metrics: MonitorMetrics | None = None,
                 markers: bool = True, rules_path: str | Path | None = None,
                 resolve_timeout: float = 5.0, max_buflen: int = DEFAULT_BUFLEN_S,
                 shard: tuple[int, int] | None = None, stats_interval: float = 2.0,
                 max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.runtime = runtime
        self.params = PreprocessParams.from_dict(runtime.preprocess_params)
        self.state_dir = Path(state_dir) if state_dir else None
        self.store = StateStore(self.state_dir, runtime.model_hash) if self.state_dir else None
        self.metrics = metrics
        self.resolve_timeout = resolve_timeout
        self.max_buflen = max_buflen
        self.shard = shard
        self.stats_interval = float(stats_interval)
        self.max_batch = int(max_batch)
        self.steps = 0  # batched model steps run (a batch holds at most max_batch beds)
        self._next_tick = 0.0  # monotonic time of the next alert-timer check
        # streams are resolved off the polling thread: a bed whose amplifier is off must not
        # hold up the beds that are streaming (a resolve blocks up to resolve_timeout)
        self._resolver = ThreadPoolExecutor(max_workers=max(1, min(8, len(beds))),
                                            thread_name_prefix="synthsleep-resolve")
        try:
            self.jsonl = JsonlSink(events_path)
        except BaseException:
            if self.store:
                self.store.close()
            raise
        self.markers = LslMarkerSink(beds=[b.bed for b in beds], shard=shard) if markers else None
        self._rules = load_rules(rules_path)
        self.beds: dict[str, _Bed] = {}
        for spec in beds:
            bed = _Bed(spec, self._new_session(spec.bed))
            self._start_session(bed)
            self.beds[spec.bed] = bed
            if self.metrics:
                self.metrics.add_bed(spec.bed)  # every series exists (zero) from the start
        self.recent: deque[Event] = deque(maxlen=10)
        self.epochs_done = 0
        #: called with (bed id, events, its BedSession) whenever a bed's events are written
        self.observers: list[Callable[[str, list[Event], BedSession], None]] = []
        self.last_data: float | None = None  # monotonic time samples last arrived (any bed)

    # -- sessions and resume ---------------------------------------------------------------------
    def _new_session(self, bed: str) -> BedSession:
        session = BedSession(bed, self.params.modalities, self.runtime.new_state(1), self.runtime.model_hash,
                             self.runtime.thresholds, self._rules)
        session.keep_history = False
        return session

    def _restart_session(self, bed: _Bed) -> None:
        """A new session for a bed whose stream began a new timeline (epoch indices from 0 again;
        events are appended under the new session id, the old session's stay as written)."""
        old = bed.session_id
        bed.session = self._new_session(bed.spec.bed)
        bed.session_id, bed.resume, bed.written_up_to = new_session_id(), None, -1
        bed.session.time_origin = wall_clock_offset()
        log.warning("bed %s: stream restarted; session %s ends, session %s begins", bed.spec.bed, old,
                    bed.session_id)

    def _start_session(self, bed: _Bed) -> None:
        """Continue the saved session when the state is usable; else start a new one (appends)."""
        name = bed.spec.bed
        saved = self.store.load(name) if self.store else None
        if saved is not None:
            fresh = self.runtime.new_state(1)
            try:
                shapes = [(a.shape, b.shape) for a, b in ((saved.conv_state, fresh.conv_state),
                                                          (saved.ssm_state, fresh.ssm_state),
                                                          (saved.side_context, fresh.side_context))]
                if any(a != b for a, b in shapes):
                    raise ValueError(f"model state shapes {[a for a, _ in shapes]} != the model's "
                                     f"{[b for _, b in shapes]}")
                bed.session.load_state_dict(saved.session)
                bed.session.model_state = StepState(saved.conv_state.astype(np.float32),
                                                    saved.ssm_state.astype(np.float32),
                                                    saved.side_context.astype(np.float64))
            except (EventError, KeyError, TypeError, ValueError) as exc:
                log.warning("bed %s: saved state does not fit this bed (%s); starting a new session",
                            name, _short(str(exc)))
                bed.session, saved = self._new_session(name), None
        if saved is not None:
            bed.session_id, bed.resume = saved.session_id, saved.stream
            written = self.jsonl.last_epoch_index(name, bed.session_id)
            bed.written_up_to = -1 if written is None else written
            log.info("bed %s: resuming session %s after epoch %s", name, bed.session_id,
                     bed.session.detector.last_index)
        else:
            bed.session_id, bed.resume, bed.written_up_to = new_session_id(), None, -1
            log.info("bed %s: new session %s (events are appended to %s)", name, bed.session_id, self.jsonl.path)

    def _save_state(self, bed: _Bed) -> None:
        if self.store is None or bed.stream is None:
            return
        st = bed.session.model_state
        self.store.save(bed.spec.bed, SavedState(bed.session_id, st.conv_state, st.ssm_state, st.side_context,
                                                 bed.session.state_dict(), bed.stream.state_dict()))

    # -- faults ----------------------------------------------------------------------------------
    def _fault(self, bed: _Bed, where: str, exc: BaseException) -> None:
        """Fault one bed: log, ``bed_fault`` event, metrics, drop its stream, retry with backoff."""
        bed.faults += 1
        bed.faulted = True
        delay = min(FAULT_RETRY_MAX_S, FAULT_RETRY_S * 2 ** (bed.faults - 1))
        bed.next_resolve = time.monotonic() + delay
        reason = _short(f"{type(exc).__name__}: {exc}")
        log.error("bed %s: fault while %s: %s; retrying in %.0f s (other beds go on)", bed.spec.bed, where,
                  reason, delay)
        if bed.stream is not None:
            try:
                bed.resume = bed.stream.state_dict()  # continue on the same epoch grid
                bed.stream.inlet.close()
            except Exception as e:  # noqa: BLE001 - releasing a broken stream must not fault again
                log.warning("bed %s: closing its stream: %s", bed.spec.bed, _short(str(e)))
            bed.stream = None
        bed.pending.clear()
        det = bed.session.detector
        index = det.last_index if det.last_index is not None else -1
        onset = det.summary.end if det.summary is not None else 0.0
        ev = Event(bed.spec.bed, "bed_fault", onset, 0.0,
                   {"where": where, "reason": reason, "faults": bed.faults, "retry_in_s": delay},
                   index, self.runtime.model_hash)
        try:
            self._emit(bed, [ev], None)
        except Exception as e:  # noqa: BLE001 - the fault is logged above in any case
            log.error("bed %s: cannot record its fault: %s", bed.spec.bed, _short(str(e)))
        if self.metrics:
            self.metrics.set_bed_faulted(bed.spec.bed, True)
            self.metrics.add_bed_fault(bed.spec.bed)

    def _recovered(self, bed: _Bed) -> None:
        if bed.faulted:
            log.info("bed %s: scoring again after %d fault(s)", bed.spec.bed, bed.faults)
            if self.metrics:
                self.metrics.set_bed_faulted(bed.spec.bed, False)
        bed.faulted, bed.faults = False, 0

    # -- connection ------------------------------------------------------------------------------
    def _connect(self, bed: _Bed, now: float) -> None:
        """Start a background resolve when due; attach the stream once one has finished."""
        if bed.stream is not None:
            return
        spec = bed.spec
        if bed.resolving is None:
            if now >= bed.next_resolve:
                bed.resolving = self._resolver.submit(
                    BedInlet.resolve, name=spec.stream, source_ids=spec.source_ids,
                    timeout=self.resolve_timeout, bed=spec.bed, overrides=spec.channels or None,
                    units=spec.units or None,
                    modalities=self.params.modalities, max_buflen=self.max_buflen)
            return
        if not bed.resolving.done():
            return
        future, bed.resolving = bed.resolving, None
        try:
            inlet = future.result()  # a montage error (unknown channels, ...) is raised here
        except StreamNotFound as exc:
            bed.next_resolve = now + 2.0
            log.warning("bed %s: %s; retrying", spec.bed, _short(str(exc), 1000))
            return
        try:
            try:
                bed.stream = StreamEpochs(inlet, self.params, state=bed.resume)
            except (KeyError, TypeError, ValueError) as exc:
                if bed.resume is None:
                    raise
                # the saved stream position is unusable: never retry it forever, start afresh
                log.warning("bed %s: saved stream position unusable (%s); starting a new session", spec.bed,
                            _short(str(exc)))
                bed.session = self._new_session(spec.bed)
                bed.session_id, bed.resume, bed.written_up_to = new_session_id(), None, -1
                bed.stream = StreamEpochs(inlet, self.params)
        except BaseException:
            inlet.close()
            raise
        bed.samples_seen = bed.gaps_seen = bed.pulled = 0  # a new inlet counts from 0
        bed.next_stats = 0.0
        bed.session.time_origin = wall_clock_offset()  # stream clock → system clock (event times)
        bed.session.detector.recorded = frozenset(inlet.rates)  # no "lost" for sensors never there
        log.info("bed %s: connected (%s)", spec.bed, ", ".join(f"{m} {r:g} Hz" for m, r in inlet.rates.items()))

    # -- one round -------------------------------------------------------------------------------
    def poll_once(self) -> int:
        """Poll every bed, score every closed epoch (batched across beds). Returns epochs scored.

        Cheap when nothing arrived: a bed's inlets are pulled only when they hold samples (see
        ``BedInlet.poll``), its stream metrics are refreshed every ``stats_interval`` s and the
        alert timers checked once a second, not every round (at 300 beds the per-round work was
        the monitor's main cost, issue 11)."""
        now = time.monotonic()
        for bed in self.beds.values():
            try:
                self._connect(bed, now)
                if bed.stream is None:
                    continue
                wall = time.perf_counter()
                for ep in bed.stream.poll():
                    bed.pending.append((ep, wall))
                if bed.stream.restarted:  # a restarted source: score the old timeline, then a new session
                    bed.stream.restarted = False
                    while bed.pending:
                        self._step([bed])
                    self._restart_session(bed)
                pulled = bed.stream.inlet.total_samples
                if pulled != bed.pulled:
                    bed.pulled, self.last_data = pulled, now
                if now >= bed.next_stats:
                    bed.next_stats = now + self.stats_interval
                    self._stream_metrics(bed)
            except Exception as exc:  # noqa: BLE001 - one bad bed never stops the others
                self._fault(bed, "connecting" if bed.stream is None else "reading its stream", exc)
        scored = self._step_pending()
        if now < self._next_tick:
            return scored
        self._next_tick = now + 1.0
        for bed in self.beds.values():  # timers (no-output alerts), once a second
            try:
                evs = bed.session.stamp(bed.session.alerts.tick())
                if evs:
                    self._emit(bed, evs, None)
                    self._save_state(bed)
            except Exception as exc:  # noqa: BLE001
                self._fault(bed, "checking its alert timers", exc)
        return scored

    def _step_pending(self) -> int:
        """Score every pending epoch: one epoch per bed per pass, in batches of at most
        ``max_batch`` beds, until no bed has one left. Returns the epochs scored."""
        scored = 0
        while True:
            ready = [b for b in self.beds.values() if b.pending]
            if not ready:
                return scored
            for i in range(0, len(ready), self.max_batch):
                scored += self._step(ready[i:i + self.max_batch])

    def _step(self, ready: list[_Bed]) -> int:
        batch = [b.pending.popleft() for b in ready]
        self.steps += 1
        x, present, side = self.runtime.inputs_from_epochs([ep for ep, _ in batch])
        t0 = time.perf_counter()
        try:
            state = StepState.concatenate([b.session.model_state for b in ready])
            out, new_state = self.runtime.step(x, present, state, side)
        except Exception as exc:  # noqa: BLE001
            if len(ready) == 1:
                self._fault(ready[0], f"scoring epoch {batch[0][0].index}", exc)
                return 0
            for b, item in zip(ready, batch):  # find the bed at fault: step each alone
                b.pending.appendleft(item)
            return sum(self._step([b]) for b in ready)
        step_seconds = time.perf_counter() - t0
        done = 0
        for i, bed in enumerate(ready):
            ep, closed_at = batch[i]
            try:
                self._handle(bed, ep, closed_at, out, new_state, i, step_seconds)
                done += 1
            except Exception as exc:  # noqa: BLE001
                self._fault(bed, f"handling epoch {ep.index}", exc)
        self.epochs_done += done
        return done

    def _handle(self, bed: _Bed, ep: Epoch, closed_at: float, out: Any, new_state: StepState, i: int,
                step_seconds: float) -> None:
        """One bed's share of a batched step: events, state, console row, metrics."""
        bed.session.model_state = new_state.take(i)
        events = bed.session.handle(ep, out.stage_prob[i], float(out.apnea_prob[i]), float(out.hypopnea_prob[i]))
        probs = bed.session.detector.stage_prob  # after the stage filter: what the stage was picked from
        self._emit(bed, events, ep.index)
        self._save_state(bed)
        self._recovered(bed)
        latency = time.perf_counter() - closed_at
        summary = bed.session.detector.summary
        code = STAGES.index(summary.stage) if summary is not None and summary.scored else -1
        bed.last = {"epoch": ep.index, "onset": ep.start, "stage": STAGES[code] if code >= 0 else "—",
                    "prob": probs, "apnea": float(out.apnea_prob[i]), "hypopnea": float(out.hypopnea_prob[i]),
                    "ahi": bed.session.detector.ahi, "alerts": bed.session.alerts.active,
                    "absent": [m for m, p in zip(ep.modalities, ep.present) if not p],
                    "latency": latency}
        if self.metrics:
            self.metrics.observe_epoch(bed.spec.bed, probs, float(out.apnea_prob[i]),
                                       float(out.hypopnea_prob[i]), code, step_seconds,
                                       bed.session.detector.ahi, epoch_latency_seconds=latency)
            self.metrics.set_alerts_active(bed.spec.bed, len(bed.session.alerts.active))

    def _emit(self, bed: _Bed, events: list[Event], epoch_index: int | None) -> None:
        if epoch_index is not None and epoch_index <= bed.written_up_to:
            return  # this session's epoch is already in the JSONL (resume): never written twice
        if not events:
            return
        events = [replace(e, session=bed.session_id) for e in events]
        self.jsonl.write(events)
        if self.markers:
            self.markers.write(events)
        if self.metrics:
            self.metrics.write(events)
        self.recent.extend(e for e in events if e.type != "stage")
        for observe in self.observers:
            try:
                observe(bed.spec.bed, events, bed.session)
            except Exception:  # a view must never stop the clinical record
                log.exception("bed %s: event observer %r failed", bed.spec.bed, observe)

    def _stream_metrics(self, bed: _Bed) -> None:
        """Count new samples (``last_data`` for ``--idle-exit``) and update the stream metrics."""
        if bed.stream is None:
            return
        streams = bed.stream.stats["streams"].values()
        samples = sum(int(s["samples"]) for s in streams)
        if samples != bed.samples_seen:
            self.last_data = time.monotonic()
        if self.metrics is None:
            bed.samples_seen = samples
            return
        gaps = sum(int(s["gaps"]) for s in streams)
        if samples > bed.samples_seen:
            self.metrics.add_samples(bed.spec.bed, samples - bed.samples_seen)
        bed.samples_seen = samples
        if gaps > bed.gaps_seen:
            self.metrics.add_gap(bed.spec.bed, gaps - bed.gaps_seen)
            bed.gaps_seen = gaps
        lags = [float(s["lag"]) for s in streams if np.isfinite(s["lag"])]
        if lags:
            self.metrics.set_lag(bed.spec.bed, max(lags))

    # -- lifecycle -------------------------------------------------------------------------------
    def run(self, stop: threading.Event | StopFlag, idle_exit: float | None = None, poll_interval: float = 0.02,
            on_round: Callable[[Monitor], None] | None = None) -> None:
        """Poll until ``stop`` is set, or (``idle_exit``) once data flowed and then no sample
        arrived for ``idle_exit`` s (after a stream ends, epochs without data keep closing on the
        live clock, so idleness is judged on samples, not epochs)."""
        while not stop.is_set():
            n = self.poll_once()
            if (not n and idle_exit is not None and self.last_data is not None
                    and time.monotonic() - self.last_data > idle_exit):
                log.info("no data for %.0f s: stopping", idle_exit)
                break
            if on_round:
                on_round(self)
            if not n:
                stop.wait(poll_interval)

    def close(self, flush: bool = True) -> None:
        """Score what is left (``flush``: the streams ended), close episodes, save, release."""
        for bed in self.beds.values():  # the stream metrics' last refresh
            try:
                self._stream_metrics(bed)
            except Exception as exc:  # noqa: BLE001
                log.warning("bed %s: stream metrics: %s", bed.spec.bed, _short(str(exc)))
        if flush:
            for bed in self.beds.values():
                if bed.stream is not None:
                    try:
                        wall = time.perf_counter()
                        bed.pending.extend((ep, wall) for ep in bed.stream.flush())
                    except Exception as exc:  # noqa: BLE001
                        self._fault(bed, "flushing its stream", exc)
            self._step_pending()
            for bed in self.beds.values():
                try:
                    evs = bed.session.finish()
                    if evs:
                        self._emit(bed, evs, None)
                    self._save_state(bed)
                except Exception as exc:  # noqa: BLE001
                    self._fault(bed, "closing its session", exc)
        self._resolver.shutdown(wait=False, cancel_futures=True)
        for bed in self.beds.values():
            if bed.stream is not None:
                bed.stream.inlet.close()
        self.jsonl.close()
        if self.store:
            self.store.close()
        if self.markers:
            self.markers.close()


# ------------------------------------------------------------------------------------------------
# console view
# ------------------------------------------------------------------------------------------------


def render_console(monitor: Monitor):
    """A rich renderable: one row per bed, then the latest events."""
    from rich.console import Group
    from rich.table import Table

    short = monitor.runtime.model_hash.split(":")[-1][:12]
    table = Table(title=f"synthsleep monitor — {len(monitor.beds)} bed(s), model {short}", expand=True)
    for col in ("bed", "epoch", "time", "stage", *STAGES, "apnea", "hypop.", "AHI", "alerts", "signals"):
        table.add_column(col, justify="right" if col not in ("bed", "stage", "alerts", "signals") else "left")
    for name, bed in monitor.beds.items():
        last = bed.last
        if not last:
            table.add_row(name, "—", "—", "connecting" if bed.stream is None else "waiting",
                          *["" for _ in STAGES], "", "", "", "", "")
            continue
        h, rem = divmod(int(last["onset"] - (bed.stream.origin or 0.0) if bed.stream else 0), 3600)
        table.add_row(name, str(last["epoch"]), f"{h:d}:{rem // 60:02d}", last["stage"],
                      *[f"{p:.2f}" for p in last["prob"]], f"{last['apnea']:.2f}", f"{last['hypopnea']:.2f}",
                      "n/a" if last["ahi"] is None else f"{last['ahi']:.1f}", ",".join(last["alerts"]) or "-",
                      "ok" if not last["absent"] else "lost: " + ",".join(last["absent"]))
    ev = Table(title="recent events", expand=True, show_header=True)
    for col in ("bed", "type", "at (h:mm:ss)", "value"):
        ev.add_column(col)
    for e in list(monitor.recent)[-8:]:
        bed = monitor.beds.get(e.bed)
        origin = bed.stream.origin if bed is not None and bed.stream is not None else None
        rel = e.onset - origin if origin is not None else e.onset
        h, rem = divmod(int(max(rel, 0)), 3600)
        ev.add_row(e.bed, e.type, f"{h:d}:{rem // 60:02d}:{rem % 60:02d}", json.dumps(e.value)[:90])
    return Group(table, ev)


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def parse_hostport(text: str, default_port: int = 9109, option: str = "--metrics") -> tuple[str, int]:
    """``HOST:PORT`` / ``PORT`` / ``[IPv6]:PORT`` / ``[IPv6]`` → (host, port); the host defaults
    to 127.0.0.1, the port to ``default_port``. Raises ValueError naming ``option`` and the text."""
    text = text.strip()
    if text.startswith("["):  # [::1]:9109, [::]
        host, sep, rest = text[1:].partition("]")
        if not sep or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"{option} expects HOST:PORT, PORT or [IPv6]:PORT, got {text!r}")
        port = rest[1:]
    elif text.count(":") > 1:
        raise ValueError(f"{option}: write an IPv6 address in brackets, e.g. [::1]:9109, got {text!r}")
    else:
        host, _, port = text.rpartition(":")
    try:
        value = int(port) if port else default_port
    except ValueError:
        raise ValueError(f"{option} expects HOST:PORT, PORT or [IPv6]:PORT, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise ValueError(f"{option}: port {value} is out of range 0-65535")
    return host or "127.0.0.1", value


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard I/N`` → (I, N) with 1 <= I <= N; ValueError naming ``--shard`` otherwise."""
    a, sep, b = text.strip().partition("/")
    try:
        i, n = int(a), int(b)
    except ValueError:
        i = n = 0
    if not sep or not 1 <= i <= n:
        raise ValueError(f"--shard expects I/N with 1 <= I <= N (e.g. --shard 1/2), got {text!r}")
    return i, n


def shard_beds(beds: Sequence[BedSpec], shard: tuple[int, int]) -> list[BedSpec]:
    """Shard I of N of a ward: the beds at positions I-1, I-1+N, I-1+2N ... of the config (so
    the N processes given the same beds.toml take every bed exactly once)."""
    i, n = shard
    return [b for k, b in enumerate(beds) if k % n == i - 1]


def shard_path(path: str | Path, shard: tuple[int, int] | None, folder: bool = False) -> str:
    """``events.jsonl`` → ``events.shard1of2.jsonl`` (``folder``: ``state`` → ``state/shard1of2``):
    each shard writes its own events file and state folder (both are locked to one writer)."""
    if shard is None:
        return str(path)
    tag = f"shard{shard[0]}of{shard[1]}"
    p = Path(path)
    return str(p / tag if folder else p.with_name(f"{p.stem}.{tag}{p.suffix}"))


def _shift_port(addr: str, shard: tuple[int, int] | None, default_port: int, option: str) -> str:
    """A config's ``HOST:PORT`` for shard I: port + I - 1 (port 0, any free port, stays 0)."""
    if shard is None:
        return addr
    host, port = parse_hostport(addr, default_port, option)
    port = port + shard[0] - 1 if port else 0
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--stream", help="LSL stream name of a single bed")
    src.add_argument("--config", help="beds.toml: [monitor] options and [[bed]] id/stream/channels")
    p.add_argument("--bed", default=None, help="bed id for --stream (default: the stream name)")
    p.add_argument("--channel", action="append", default=[], metavar="MODALITY=LABEL",
                   help="channel override for --stream, e.g. --channel eeg='C3-A2'")
    p.add_argument("--unit", action="append", default=[], metavar="MODALITY=UNIT",
                   help="unit of a modality's channel when the stream describes it wrongly or not at all, "
                        "e.g. --unit eeg=V (also mV, uV, or mne-lsl's power-of-ten codes 0, -3, -6); "
                        "for every bed")
    p.add_argument("--model", default=None, help="ONNX artifact (default: the bundled model)")
    p.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics (bound to 127.0.0.1 unless a host is given)")
    p.add_argument("--http", default=None, metavar="HOST:PORT",
                   help="serve the ward view (a live web page of every bed); 127.0.0.1 unless a host is given")
    p.add_argument("--events", default=None,
                   help="JSONL event log, append-only (default: the beds file's, else events.jsonl)")
    p.add_argument("--state-dir", default=None, help="save per-bed state here after every epoch; resume from it")
    p.add_argument("--rules", default=None, help="alert rules TOML (default: shipped rules)")
    p.add_argument("--no-markers", action="store_true", help="do not publish events as LSL markers")
    p.add_argument("--no-console", action="store_true", help="no live console view (log lines only)")
    p.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS",
                   help="stop once no sample arrived for this long (e.g. at the end of a replay)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1)")
    p.add_argument("--buffer", type=float, default=None, metavar="SECONDS",
                   help=f"seconds the monitor may stall before an LSL inlet drops samples (default "
                        f"{DEFAULT_BUFLEN_S}; scaled by the speed of a faster-than-real-time replay; memory "
                        "~16 bytes per sample slot, e.g. 1 MB per 512-Hz stream at 120 s)")
    p.add_argument("--max-batch", type=int, default=MAX_BATCH, metavar="BEDS",
                   help=f"at most this many beds per batched model step (default {MAX_BATCH}; ONNX Runtime keeps "
                        "memory for the largest batch it ran, ~4.5 MB per bed of the batch on CPU)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="run shard I of N of the --config ward: beds I, I+N, I+2N ... (1-based, in config order); "
                        "start N monitors with the same beds.toml and I = 1..N, and scrape every one. Each "
                        "shard writes EVENTS.shardIofN.jsonl and STATE-DIR/shardIofN; metrics/http ports "
                        "from beds.toml are shifted by I-1 (give --metrics per process to choose)")


def run(args: argparse.Namespace) -> int:
    if args.config:
        beds, opts = load_beds_config(args.config)
    else:
        beds, opts = [BedSpec(args.bed or args.stream, args.stream, channels=parse_overrides(args.channel))], {}
    shard = parse_shard(args.shard) if args.shard else None
    if shard is not None:
        if not args.config:
            raise ValueError("--shard needs --config (a ward of beds to split)")
        beds = shard_beds(beds, shard)
        if not beds:
            raise ValueError(f"--shard {args.shard}: no bed falls in this shard (the config has fewer beds)")
        for key, port in (("metrics", 9109), ("http", 8080)):
            if opts.get(key):
                opts[key] = _shift_port(str(opts[key]), shard, port, key)
        print(f"shard {shard[0]}/{shard[1]}: {len(beds)} bed(s): {', '.join(b.bed for b in beds[:10])}"
              f"{' ...' if len(beds) > 10 else ''}")
    # the command line wins over the beds file, which wins over the defaults
    events_path = shard_path(args.events or opts.get("events") or "events.jsonl", shard)
    state_dir = args.state_dir or opts.get("state_dir")
    state_dir = shard_path(state_dir, shard, folder=True) if state_dir else None
    units = parse_units(args.unit)
    for spec in beds:
        spec.units = {**spec.units, **units}
    model = args.model or opts.get("model")
    metrics_addr = args.metrics or opts.get("metrics")
    runtime = StepRuntime(resolve_model_path(model), threads=args.threads)
    metrics = MonitorMetrics()
    server = ward = mon = None
    try:
        if metrics_addr:
            host, port = parse_hostport(str(metrics_addr))
            server = start_metrics_server(metrics, port=port, host=host)
            print(f"metrics at {server.url}", flush=True)
        buffer = args.buffer if args.buffer is not None else float(opts.get("buffer", DEFAULT_BUFLEN_S))
        if not 10 <= buffer <= 24 * 3600:
            raise ValueError(f"--buffer must be 10 to 86400 seconds, got {buffer:g}")
        mon = Monitor(beds, runtime, events_path, state_dir, metrics, markers=not args.no_markers,
                      rules_path=args.rules or opts.get("rules"), shard=shard, max_buflen=int(buffer),
                      max_batch=args.max_batch)
        if args.http or opts.get("http"):
            from .ward.server import serve_monitor

            ward = serve_monitor(mon, *parse_hostport(str(args.http or opts.get("http")), 8080, "--http"))
            print(f"ward view at {ward.url}", flush=True)
    except (OSError, SinkError, StateDirLocked) as exc:  # busy port, locked events file / state folder
        if mon:
            mon.close(flush=False)
        if server:
            server.stop()
        print(f"synthsleep monitor: error: {exc}", file=sys.stderr)
        return 2
    stop = stop_on_signals()
    t0 = time.monotonic()
    reported: set[str] = set()

    def report_channels(m: Monitor) -> None:  # once per bed, when its streams are connected
        for name, bed in m.beds.items():
            if bed.stream is not None and name not in reported:
                reported.add(name)
                print(f"bed {name}: {bed.stream.inlet.channel_report}", flush=True)

    try:
        if args.no_console:
            mon.run(stop, idle_exit=args.idle_exit, on_round=report_channels)
        else:
            from rich.live import Live

            def on_round(m: Monitor) -> None:
                report_channels(m)
                live.update(render_console(m))

            with Live(render_console(mon), refresh_per_second=4) as live:
                mon.run(stop, idle_exit=args.idle_exit, on_round=on_round)
    finally:
        mon.close(flush=not stop.is_set())
        if server:
            server.stop()
        if ward:
            ward.stop()
    print(f"monitored {len(beds)} bed(s) for {time.monotonic() - t0:.0f} s: {mon.epochs_done} epochs scored; "
          f"events in {events_path}")
    return 0
