"""Replay a recording (EDF/EDF+/BDF, or XDF via ``psg.xdf``) as live LSL streams (``synthsleep replay``).

Streams (one bed): one outlet per distinct sampling rate, each under its own name so a tool that
attaches by name (mne-lsl's ``StreamLSL(name=...)``) gets one definite stream. The **main** stream
(the one carrying the EEG; without EEG the one with the most channels) is named ``<name>``; the
others ``<name>-<rate>Hz`` (e.g. ``bed1-512Hz``, ``bed1-1Hz``). Source_ids are
``<name>-<rate>Hz`` for every stream (the main one too). Samples are float32 in the file's
physical units (µV for voltages). Each stream's description holds
``channels/channel/{label, unit, type}`` (type EEG/EOG/EMG/ECG/RESP/SPO2 from the montage, else
MISC) and ``synthsleep/{bed, main, streams, file, speed, duration}`` where ``bed`` is ``<name>``,
``main`` the main stream's source_id and ``streams`` lists the source_ids of all the bed's sample
streams, so ``BedInlet.resolve(name=...)`` finds the main stream by name and every other one by
source_id (and, at speed inf, sizes its inlet buffers to ``duration``). A marker stream
``<name>-markers`` (type Markers, one string channel, irregular rate) carries the file's
annotations as JSON ``{"text", "onset", "duration"}`` (onset/duration in s of signal time)
stamped at their signal time.

Timestamps are signal time: sample ``i`` of every stream is stamped ``start + i / rate``, where
``start`` is the ``local_clock()`` when pushing begins (shared by all outlets). ``speed`` only
decides *when* samples are pushed: at speed 1 timestamps track the local clock; at speed 10 (or
``inf``, as fast as possible) they run ahead of it. Consumers therefore always see 30 s of
signal per 30 s of timestamps; ``BedInlet.now`` is built on the newest timestamps, not on the
wall clock, so it works at any speed. Pacing is scheduled against the start (pushes due by
``(wall - wall_start) * speed``), never by accumulating sleeps, so it does not drift.

At ``speed=inf`` the player first waits for a consumer on every outlet (``wait_consumers``
seconds) and sizes the outlets' buffers to the whole recording so nothing is dropped (the
consumer must likewise open its inlets with ``max_buflen`` >= the recording's duration or keep
up; ``BedInlet.resolve`` does this by itself from the description). Memory: liblsl's queues
hold one slot per sample, so an 8-h night at max speed costs ~100 MB per 512-Hz stream.
With ``loop=True`` the file repeats with the signal clock running on (pass k is stamped
from ``start + k * duration``).

Why one module (~450 lines): the player, its stream layout (names and descriptions, the contract
``BedInlet`` resolves) and its CLI entry; the layout and the player change together.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pylsl

from synthsleep.psg.montage import MODALITIES, modality_of

log = logging.getLogger(__name__)

__all__ = ["ReplayPlayer", "ReplayError", "ReplayStats", "add_arguments", "run", "parse_speed"]


class ReplayError(RuntimeError):
    """The replay cannot proceed (no consumer in time, nothing to replay); message says why."""


@dataclass
class ReplayStats:
    """What a replay did: signal seconds pushed, samples per stream, markers, wall time."""

    signal_seconds: float = 0.0
    wall_seconds: float = 0.0
    samples: dict[str, int] = field(default_factory=dict)
    markers: int = 0
    passes: int = 0
    start: float | None = None  # local_clock() timestamp of signal time 0

    @property
    def effective_speed(self) -> float:
        return self.signal_seconds / self.wall_seconds if self.wall_seconds > 0 else math.inf


def _lsl_type(label: str) -> str:
    mod = modality_of(label)
    return MODALITIES[mod].lsl_type if mod else "MISC"


def _rate_tag(rate: float) -> str:
    return f"{rate:g}Hz"


class _Group:
    """One outlet: the channels of one sampling rate, read lazily in blocks."""

    def __init__(self, rec, rate: float, labels: list[str], block_seconds: float) -> None:
        self.rec, self.rate, self.labels = rec, rate, labels
        self.n_total = int(round(rec.duration * rate))
        self.block = max(1, int(round(block_seconds * rate)))
        self.buf = np.zeros((0, len(labels)), np.float32)
        self.buf_k0 = 0
        self.outlet: pylsl.StreamOutlet | None = None
        self.source_id = ""
        self.stream_name = ""

    def samples(self, k0: int, k1: int) -> np.ndarray:
        """float32 [k1 - k0, channels] of file samples k0..k1 (within the recording)."""
        if not (self.buf_k0 <= k0 and k1 <= self.buf_k0 + len(self.buf)):
            b1 = min(self.n_total, max(k1, k0 + self.block))
            cols = [self.rec.read(lab, k0 / self.rate, b1 / self.rate) for lab in self.labels]
            self.buf = np.stack(cols, axis=1).astype(np.float32)
            self.buf_k0 = k0
        return self.buf[k0 - self.buf_k0 : k1 - self.buf_k0]


def main_group(groups: Sequence[_Group]) -> _Group:
    """The bed's main stream: the one with an EEG channel (the first such, i.e. the highest
    rate), else the one with the most channels (ties: the highest rate)."""
    for g in groups:
        if any(modality_of(lab) == "eeg" for lab in g.labels):
            return g
    return max(groups, key=lambda g: (len(g.labels), g.rate))


class ReplayPlayer:
    """Play an EDF file as LSL streams, paced by the clock.

    Args:
        edf_path: the recording (EDF/EDF+/BDF or XDF, via ``psg.recording.open_recording``).
        name: the bed's name: the main stream's name (``BedInlet.resolve(name=...)``), and the
            prefix of the other streams' names and of every source_id.
        speed: signal seconds per wall second; ``float('inf')`` = as fast as possible.
        channels: labels to replay (default: all).
        loop: start over at the end (signal clock runs on) until stopped.
        wait_consumers: seconds to wait for a consumer on every outlet before pushing;
            default 30 s at infinite speed, no wait otherwise.
        chunk_seconds: signal seconds per push at finite speed (0.1 s → 10 pushes/s at speed 1).
        markers: also publish the annotation marker stream.
        linger: seconds the outlets stay open after the last push (default 2 s, 10 s at infinite
            speed). liblsl makes data still queued in an inlet unreadable once its outlet is
            gone, so a consumer must pull everything within this time.

    Raises:
        RecordingError: the file cannot be read (from ``open_recording``).
        ReplayError: a requested channel is not in the file, or the file has no signal.
    """

    def __init__(self, edf_path: str | Path, name: str = "synthsleep-replay", speed: float = 1.0,
                 channels: Sequence[str] | None = None, loop: bool = False,
                 wait_consumers: float | None = None, chunk_seconds: float = 0.1,
                 markers: bool = True, linger: float | None = None) -> None:
        from synthsleep.psg.recording import open_recording

        if not (speed > 0):
            raise ReplayError(f"speed must be > 0 (or inf), got {speed!r}")
        self.path = Path(edf_path)
        self.name = name
        self.speed = float(speed)
        self.loop = loop
        self.chunk_seconds = float(chunk_seconds)
        self.linger = (10.0 if math.isinf(self.speed) else 2.0) if linger is None else float(linger)
        self.wait_consumers = (30.0 if math.isinf(self.speed) else None) if wait_consumers is None \
            else float(wait_consumers)
        self.rec = open_recording(self.path)
        infos = {c.label: c for c in self.rec.channels}
        wanted = list(channels) if channels else list(infos)
        missing = [c for c in wanted if c not in infos]
        if missing:
            raise ReplayError(f"{self.path}: no channel {', '.join(map(repr, missing))}; "
                              f"channels: {', '.join(infos)}")
        if not wanted or self.rec.duration <= 0:
            raise ReplayError(f"{self.path}: nothing to replay (no channels or zero duration)")
        by_rate: dict[float, list[str]] = {}
        for lab in wanted:
            by_rate.setdefault(float(infos[lab].rate), []).append(lab)
        block = 60.0 if math.isfinite(self.speed) else 600.0
        self.groups = [_Group(self.rec, r, labs, block) for r, labs in sorted(by_rate.items(), reverse=True)]
        main = main_group(self.groups)
        for g in self.groups:
            g.source_id = f"{name}-{_rate_tag(g.rate)}"
            g.stream_name = name if g is main else g.source_id
        self.main_source_id = main.source_id
        self.annotations = sorted(self.rec.annotations, key=lambda a: a.onset) if markers else []
        self.markers = markers
        self.marker_outlet: pylsl.StreamOutlet | None = None
        self.stats = ReplayStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.position = 0.0  # signal seconds pushed so far (all passes)

    # -- outlets -----------------------------------------------------------------------------------
    @property
    def duration(self) -> float:
        """Signal seconds of one pass."""
        return float(self.rec.duration)

    @property
    def source_ids(self) -> list[str]:
        """Source_ids of the bed's sample streams, highest rate first."""
        return [g.source_id for g in self.groups]

    @property
    def stream_names(self) -> dict[str, str]:
        """``{source_id: stream name}``: the main stream is named like the bed, the others
        ``<bed>-<rate>Hz``."""
        return {g.source_id: g.stream_name for g in self.groups}

    def _open_outlets(self) -> None:
        units = {c.label: c.unit for c in self.rec.channels}
        siblings = ",".join(self.source_ids)
        # seconds of data each outlet keeps per consumer: the whole file at infinite speed
        buffered = int(self.duration) + 60 if math.isinf(self.speed) else 360
        for g in self.groups:
            types = {_lsl_type(lab) for lab in g.labels}
            info = pylsl.StreamInfo(g.stream_name, types.pop() if len(types) == 1 else "PSG", len(g.labels),
                                    g.rate, "float32", g.source_id)
            chans = info.desc().append_child("channels")
            for lab in g.labels:
                ch = chans.append_child("channel")
                ch.append_child_value("label", lab)
                ch.append_child_value("unit", units[lab])
                ch.append_child_value("type", _lsl_type(lab))
            meta = info.desc().append_child("synthsleep")
            meta.append_child_value("bed", self.name)
            meta.append_child_value("main", self.main_source_id)
            meta.append_child_value("streams", siblings)
            meta.append_child_value("file", self.path.name)
            meta.append_child_value("speed", f"{self.speed:g}")
            meta.append_child_value("duration", f"{self.duration:.6f}")
            g.outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=buffered)
        if self.markers:
            info = pylsl.StreamInfo(f"{self.name}-markers", "Markers", 1, pylsl.IRREGULAR_RATE, "string",
                                    f"{self.name}-markers")
            info.desc().append_child("synthsleep").append_child_value("streams", siblings)
            self.marker_outlet = pylsl.StreamOutlet(info, max_buffered=max(buffered, 3600))
        log.info("replay %s: %d stream(s) %s, %g s of signal at speed %g", self.path.name,
                 len(self.groups), ", ".join(f"{g.stream_name!r} ({g.source_id}, {len(g.labels)} ch)"
                                             for g in self.groups), self.duration, self.speed)

    def _close_outlets(self) -> None:
        for g in self.groups:
            g.outlet = None
        self.marker_outlet = None

    def _await_consumers(self, grace: float = 2.0) -> None:
        """Wait until a consumer is connected to some outlet, then up to ``grace`` s for the
        others: a consumer that uses only some of the rates (a model without ECG) never opens
        the others, and must not stall the replay."""
        if self.wait_consumers is None:
            return
        deadline = time.monotonic() + self.wait_consumers
        while not any(g.outlet.have_consumers() for g in self.groups):
            if time.monotonic() >= deadline or self._stop.is_set():
                raise ReplayError(f"no consumer connected to stream {self.name!r} within "
                                  f"{self.wait_consumers:g} s")
            self.groups[0].outlet.wait_for_consumers(0.1)
        until = time.monotonic() + grace
        while time.monotonic() < until and not self._stop.is_set():
            waiting = [g for g in self.groups if not g.outlet.have_consumers()]
            if not waiting:
                return
            waiting[0].outlet.wait_for_consumers(0.1)
        log.info("replay %s: no consumer on %s; pushing anyway", self.name,
                 ", ".join(g.source_id for g in self.groups if not g.outlet.have_consumers()))

    # -- playing -----------------------------------------------------------------------------------
    def run(self, progress: Callable[[float, float], None] | None = None) -> ReplayStats:
        """Play (blocking) until the end (or ``stop()``); returns the statistics.

        Args:
            progress: called as ``progress(signal_seconds_pushed, duration_of_one_pass)``.
        """
        self._open_outlets()
        try:
            self._await_consumers()
            self._play(progress)
        finally:
            self._close_outlets()
        return self.stats

    def _play(self, progress: Callable[[float, float], None] | None) -> None:
        dur = self.duration
        start = pylsl.local_clock()
        wall0 = time.monotonic()
        self.stats = ReplayStats(start=start, samples={g.source_id: 0 for g in self.groups})
        pushed = 0.0  # signal seconds pushed (all passes)
        step = self.chunk_seconds if math.isfinite(self.speed) else 10.0
        next_marker = 0
        pass_k = 0
        try:
            while not self._stop.is_set():
                if math.isfinite(self.speed):
                    due = (time.monotonic() - wall0) * self.speed
                    if due < pushed + min(step, (pass_k + 1) * dur - pushed) - 1e-9:
                        wake = wall0 + (pushed + step) / self.speed
                        self._stop.wait(max(0.0, min(wake - time.monotonic(), 0.5)))
                        continue
                    target = min(due, (pass_k + 1) * dur)
                else:
                    target = min(pushed + step, (pass_k + 1) * dur)
                base = pass_k * dur
                for g in self.groups:
                    k0 = int(round((pushed - base) * g.rate))
                    k1 = min(g.n_total, int(round((target - base) * g.rate)))
                    if k1 <= k0:
                        continue
                    x = g.samples(k0, k1)
                    stamps = start + base + np.arange(k0, k1, dtype=np.float64) / g.rate
                    g.outlet.push_chunk(np.ascontiguousarray(x), stamps.tolist())
                    self.stats.samples[g.source_id] += k1 - k0
                while next_marker < len(self.annotations) and self.annotations[next_marker].onset <= target - base:
                    a = self.annotations[next_marker]
                    self.marker_outlet.push_sample(
                        [json.dumps({"text": a.text, "onset": a.onset + base, "duration": a.duration})],
                        start + base + a.onset)
                    self.stats.markers += 1
                    next_marker += 1
                pushed = target
                self.position = pushed
                if progress is not None:
                    progress(pushed, dur)
                if pushed >= (pass_k + 1) * dur - 1e-9:
                    pass_k += 1
                    if not self.loop:
                        break
                    next_marker = 0
        finally:
            self.stats.signal_seconds = pushed
            self.stats.passes = pass_k
            self.stats.wall_seconds = time.monotonic() - wall0
        self._drain()

    def _drain(self) -> None:
        """Keep the outlets open ``linger`` s after the last push so liblsl's send threads hand the
        last samples to the consumers (``stop()`` cuts this short)."""
        self._stop.wait(self.linger)

    # -- threaded ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Play in a background thread (``stop()`` / ``join()`` to end it)."""
        if self._thread is not None and self._thread.is_alive():
            raise ReplayError("replay already running")
        self._stop.clear()

        def target() -> None:
            try:
                self.run()
            except BaseException as exc:  # noqa: BLE001 - re-raised by join()
                log.error("replay %s failed: %s", self.path.name, exc)
                self._error = exc

        self._thread = threading.Thread(target=target, name=f"replay-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the replay to end and wait for its thread."""
        self._stop.set()
        self.join()

    def join(self, timeout: float | None = None) -> ReplayStats:
        """Wait for the background replay; re-raises its error, returns the statistics."""
        if self._thread is not None:
            self._thread.join(timeout)
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        return self.stats

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


# ----------------------------------------------------------------------------------------------
# CLI: synthsleep replay
# ----------------------------------------------------------------------------------------------


def parse_speed(text: str) -> float:
    """``1``, ``10``, ``2.5`` or ``max``/``inf`` → float (inf = as fast as possible)."""
    t = text.strip().lower()
    if t in ("max", "inf", "fast"):
        return math.inf
    try:
        v = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"speed must be a number > 0 or 'max', got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"speed must be > 0 or 'max', got {text!r}")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``synthsleep replay``."""
    parser.add_argument("edf", type=Path, help="recording to replay: EDF/EDF+/BDF, or an XDF file (LabRecorder; its "
                                                "marker streams are replayed on the marker stream)")
    parser.add_argument("--speed", type=parse_speed, default=1.0,
                        help="signal seconds per wall second: 1 (real time), 10, any number, or 'max' "
                             "(as fast as possible, waits for a consumer first). Default 1")
    parser.add_argument("--name", default="synthsleep-replay",
                        help="the bed's LSL name (the monitor's --stream): the stream with the EEG is named "
                             "NAME, the other rates NAME-<rate>Hz; source_ids are NAME-<rate>Hz")
    parser.add_argument("--loop", action="store_true", help="start over at the end until interrupted")
    parser.add_argument("--channels", default=None,
                        help="comma-separated channel labels to replay (default: all)")
    parser.add_argument("--wait", type=float, default=None,
                        help="seconds to wait for a consumer before pushing (default: 30 at max speed, "
                             "none otherwise)")
    parser.add_argument("--no-markers", action="store_true", help="do not publish the annotation marker stream")


def run(args: argparse.Namespace) -> int:
    """Run ``synthsleep replay``: progress bar of signal time, summary at the end."""
    from tqdm import tqdm

    from synthsleep.psg.recording import RecordingError

    channels = [c.strip() for c in args.channels.split(",")] if args.channels else None
    try:
        player = ReplayPlayer(args.edf, name=args.name, speed=args.speed, channels=channels, loop=args.loop,
                              wait_consumers=args.wait, markers=not args.no_markers)
    except (RecordingError, ReplayError) as exc:
        print(f"synthsleep replay: {exc}", file=sys.stderr)
        return 2
    dur = player.duration
    names = ", ".join(f"{n!r}" for n in player.stream_names.values())
    speed = "max" if math.isinf(args.speed) else f"{args.speed:g}"
    print(f"Replaying {args.edf} ({dur / 3600:.2f} h) as LSL streams {names} (bed {args.name!r}) at speed {speed}"
          f"{', looping' if args.loop else ''}. Ctrl-C to stop.", file=sys.stderr)
    # signal seconds pushed; a looping replay counts on without a total
    bar = tqdm(total=None if args.loop else round(dur), unit="s", desc="signal time", dynamic_ncols=True,
               file=sys.stderr)

    def progress(pos: float, one_pass: float) -> None:
        bar.update(max(0, round(pos) - bar.n))

    interrupted = False
    try:
        stats = player.run(progress=progress)
    except KeyboardInterrupt:
        interrupted = True
        player._stop.set()  # noqa: SLF001 - run() already returned through the interrupt
        stats = player.stats
    except ReplayError as exc:
        bar.close()
        print(f"synthsleep replay: {exc}", file=sys.stderr)
        return 1
    bar.close()
    per_stream = ", ".join(f"{sid}: {n} samples" for sid, n in stats.samples.items())
    print(f"{'Stopped' if interrupted else 'Done'}: {stats.signal_seconds:.1f} s of signal in "
          f"{stats.wall_seconds:.1f} s wall (x{stats.effective_speed:.1f}), {stats.passes} pass(es), "
          f"{per_stream}; {stats.markers} markers.", file=sys.stderr)
    return 130 if interrupted else 0
