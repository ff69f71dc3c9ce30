"""LSL inlet for one bed: resolve its streams, read their channel descriptions, poll samples.

A bed is one or more LSL streams (e.g. EEG/EOG/EMG at 256 Hz, ECG at 512 Hz, SpO2 at 1 Hz).
``BedInlet.poll()`` never blocks: it drains every stream with ``pull_chunk(timeout=0.0)`` and
returns ``(modality, samples, t0)`` runs ready for ``psg.preprocess.EpochAssembler.push``.

Timestamps:

* **Clock correction.** Each stream's timestamps are mapped to this machine's ``local_clock``
  with ``StreamInlet.time_correction``, always called with a timeout (without one it hangs
  forever once the outlet is gone). The first estimate is requested with ``timeout=0`` on every
  poll until liblsl has it (its background thread keeps working); a stream's data stays queued
  in the inlet until then (or until ``clock_wait`` seconds passed, then offset 0 is assumed and
  logged). Later refreshes every ``clock_refresh`` s are instantaneous.
* **Dejittering and gaps.** Each stream's corrected timestamps go through its own
  ``dejitter.TimestampDejitter`` (LSL-free; its module docstring has the rules): runs fitted to
  the nominal rate, jitter within ``max(2.5 samples, gap_tolerance)`` smoothed, a larger jump
  forward counted as a **gap**, a jump backwards as a reset. Its counters are ``stats``' gaps,
  gap_seconds and resets.

Recovery: inlets are opened with ``recover=False`` so a vanished outlet raises ``LostError``
at once; the stream is then marked lost and a ``ContinuousResolver`` looks for it again (same
``source_id``, or same name when the source has none). When it reappears (or when a different
stream with the same identity appears while the old one sent nothing for ``reconnect_after``
seconds) a new inlet is opened, checked (same channels, rate and labels) and polled; its data
is placed by its own timestamps, the hole in between shows as a gap.

Stream clock (``BedInlet.now``): the time up to which the bed's data should have arrived, for
``EpochAssembler.advance``. It is the *minimum* of the newest timestamps of the streams that
delivered data in the last ``stale_after`` wall seconds, so a replay faster than real time
(whose timestamps run ahead of ``local_clock``) never closes epochs early; when every stream is
silent it runs on in wall-clock time from the newest sample, so late data closes epochs.

Why one module (~800 lines): ``BedInlet`` is one bed's set of liblsl inlets, and resolving them
(siblings, retries, buffer sizing), validating their descriptions and units, clock correction and
recovery all act on the same per-stream ``_Link`` records; what needs no LSL lives apart (the
timestamp dejitter and gap detector in ``dejitter``, epoch assembly in ``assembler``).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pylsl
from pylsl.util import LostError
from pylsl.util import TimeoutError as LSLTimeoutError

from synthsleep.psg.montage import (
    MODALITIES,
    MODALITY_NAMES,
    MontageError,
    describe_mapping,
    resolve_channels,
)
from synthsleep.psg.preprocess import PreprocessError, samples_per_epoch

from .dejitter import TimestampDejitter

log = logging.getLogger(__name__)

__all__ = [
    "BedInlet", "StreamNotFound", "StreamError", "resolve_stream", "describe_stream",
    "visible_streams", "unit_factor", "ChannelRoute",
]

# Voltage unit texts (lower case) → factor to µV. XDF's convention is "microvolts".
_VOLT_TO_UV: dict[str, float] = {
    "v": 1e6, "volt": 1e6, "volts": 1e6,
    "mv": 1e3, "millivolt": 1e3, "millivolts": 1e3,
    "uv": 1.0, "µv": 1.0, "μv": 1.0, "microvolt": 1.0, "microvolts": 1.0,
    "nv": 1e-3, "nanovolt": 1e-3, "nanovolts": 1e-3,
}
_VOLTAGE_MODALITIES = ("eeg", "eog", "emg", "ecg")
#: mne-lsl writes a channel's unit as the power of ten of its SI unit ("-6": µV)
_POWER_CODE = re.compile(r"^[+-]?\d{1,2}$")
#: limits on what a stream description may say (beyond them it is refused or ignored, with a
#: message that quotes at most ``_TEXT_LIMIT`` characters of any field)
MAX_LABEL_CHARS = 128
MAX_RATE_HZ = 20000.0
MAX_REPLAY_SECONDS = 48 * 3600.0
#: default seconds of wall-clock time the monitor may stall before an inlet drops samples (liblsl
#: preallocates ~16 bytes per sample slot: ~1 MB per 512-Hz stream); a faster replay scales it
DEFAULT_BUFLEN_S = 120
#: at most this many streams per bed are taken from a description's ``synthsleep/streams``
MAX_SIBLINGS = 16
_TEXT_LIMIT = 80


def _short(text: str, limit: int = _TEXT_LIMIT) -> str:
    """``text`` cut for a message: a 1-MB label must not become a 10-MB log line."""
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


class StreamNotFound(LookupError):
    """No LSL stream matched; the message lists the streams that are visible."""


class StreamError(ValueError):
    """A stream cannot be used as described (format, units, changed channels); names the stream."""


def describe_stream(info: pylsl.StreamInfo) -> str:
    """One line for logs and errors: ``name (type, source_id, N ch @ R Hz, host)``."""
    return (f"{_short(info.name())!r} (type {_short(info.type()) or '-'}, source_id "
            f"{_short(info.source_id()) or '-'}, {info.channel_count()} ch @ {info.nominal_srate():g} Hz, "
            f"host {_short(info.hostname())})")


def visible_streams(wait: float = 0.5) -> list[str]:
    """Descriptions of the LSL streams visible within ``wait`` seconds (for error messages)."""
    try:
        return sorted(describe_stream(i) for i in pylsl.resolve_streams(wait_time=wait))
    except Exception as exc:  # noqa: BLE001 - only used to enrich an error message
        return [f"(could not list streams: {exc})"]


def resolve_stream(
    name: str | None = None,
    type: str | None = None,  # noqa: A002 - LSL's own property name
    source_id: str | None = None,
    timeout: float = 10.0,
    minimum: int = 1,
    retry_interval: float = 0.5,
) -> list[pylsl.StreamInfo]:
    """Find LSL streams matching every given property, retrying until ``timeout``.

    The most specific property given (source_id, then name, then type) is asked for with
    ``resolve_byprop``; the others filter the answers. Retries accumulate answers (a single
    sweep can miss streams when many are on the network).

    Args:
        name, type, source_id: properties that must match (at least one).
        timeout: seconds to keep trying.
        minimum: return as soon as this many distinct streams are found.
        retry_interval: seconds per ``resolve_byprop`` attempt.

    Returns:
        Matching ``StreamInfo`` objects (short descriptions: no ``desc``), at least ``minimum``.

    Raises:
        StreamNotFound: fewer than ``minimum`` found in time; lists what is visible.
        ValueError: no property given.
    """
    props = [(p, v) for p, v in (("source_id", source_id), ("name", name), ("type", type)) if v]
    if not props:
        raise ValueError("resolve_stream needs a name, type or source_id")
    prop, value = props[0]
    found: dict[str, pylsl.StreamInfo] = {}
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        left = deadline - time.monotonic()
        attempt = max(0.05, min(retry_interval, left))
        for info in pylsl.resolve_byprop(prop, value, minimum=minimum, timeout=attempt):
            if all(getattr(info, p)() == v for p, v in props[1:]):
                found.setdefault(info.uid(), info)
        if len(found) >= minimum or time.monotonic() >= deadline:
            break
    if len(found) < minimum:
        wanted = ", ".join(f"{p}={v!r}" for p, v in props)
        visible = visible_streams()
        raise StreamNotFound(
            f"no LSL stream with {wanted} found within {timeout:g} s (found {len(found)}, need {minimum}). "
            f"Visible streams: {'; '.join(visible) if visible else '(none)'}")
    return sorted(found.values(), key=lambda i: (i.source_id(), i.uid()))


def wall_clock_offset() -> float:
    """System clock (s since 1970, UTC) minus LSL's ``local_clock``: add it to a time on the
    stream clock to get the wall-clock time."""
    return time.time() - pylsl.local_clock()


def unit_factor(modality: str, unit: str, where: str) -> float:
    """Factor turning a channel's samples into the modality's unit (µV for voltages).

    An empty unit is taken as already right (logged). Voltage modalities (EEG/EOG/EMG/ECG) need
    a voltage unit; respiratory channels in a voltage unit are converted to µV, in any other
    unit (arbitrary effort/flow units) they pass unchanged. SpO2 is taken in %. mne-lsl's unit
    codes (the power of ten of the SI unit: ``"0"`` V, ``"-3"`` mV, ``"-6"`` µV) are voltages.

    Raises:
        StreamError: a voltage modality in a non-voltage unit (``where`` names stream/channel).
    """
    key = unit.strip().lower().replace(" ", "")
    if not key:
        log.info("%s: no unit in the stream description; assuming %s", where, MODALITIES[modality].unit)
        return 1.0
    power = _POWER_CODE.match(key)
    if power and MODALITIES[modality].unit == "uV":
        return 10.0 ** (int(power.group(0)) + 6)
    if key in _VOLT_TO_UV and MODALITIES[modality].unit == "uV":
        return _VOLT_TO_UV[key]
    if power and modality == "spo2" and int(power.group(0)) == 0:
        return 1.0  # mne-lsl's "no scale": the value as sent (%)
    if modality in _VOLTAGE_MODALITIES:
        raise StreamError(f"{where}: unit {unit!r} is not a voltage; {modality} needs V, mV, uV or "
                          "microvolts")
    if modality == "spo2" and key not in ("%", "percent", "pct"):
        log.warning("%s: SpO2 unit %r is not %%; values passed unchanged", where, unit)
    return 1.0


def parse_units(items: Sequence[str]) -> dict[str, str]:
    """CLI ``MODALITY=UNIT`` pairs (``--unit eeg=V``) → ``{modality: unit}``, checked."""
    units: dict[str, str] = {}
    for item in items:
        mod, sep, unit = item.partition("=")
        if not sep or not unit.strip():
            raise ValueError(f"--unit {item!r} must look like MODALITY=UNIT, e.g. --unit eeg=V")
        units[mod.strip().lower()] = unit.strip()
    check_units(units)
    return units


def check_units(units: Mapping[str, str]) -> None:
    """ValueError naming the entry when a modality is unknown or a unit unusable for it."""
    for mod, unit in units.items():
        if mod not in MODALITIES:
            raise ValueError(f"unit override {mod}={unit!r}: unknown modality; known: {', '.join(MODALITIES)}")
        unit_factor(mod, unit, f"unit override {mod}={unit!r}")  # StreamError (a ValueError) if unusable


@dataclass(frozen=True)
class ChannelRoute:
    """Where one modality comes from: stream, channel index, label, unit and µV factor."""

    modality: str
    stream: str
    index: int
    label: str
    unit: str
    type: str
    factor: float


@dataclass
class _Desc:
    labels: list[str]
    units: list[str]
    types: list[str]


def _read_desc(info: pylsl.StreamInfo) -> _Desc:
    """Channel labels/units/types from ``desc/channels/channel``; missing labels → ``ch<i>``."""
    n = info.channel_count()
    labels, units, types = [f"ch{i}" for i in range(n)], [""] * n, [""] * n
    ch = info.desc().child("channels").child("channel")
    i = 0
    while not ch.empty() and i < n:
        label = ch.child_value("label").strip()
        if len(label) > MAX_LABEL_CHARS:  # no montage label is that long: keep it out of logs
            log.warning("stream %s: channel %d has a %d-character label; shown cut", describe_stream(info),
                        i, len(label))
            label = _short(label, 40)
        labels[i] = label or labels[i]
        units[i] = _short(ch.child_value("unit").strip(), 40)
        types[i] = _short(ch.child_value("type").strip(), 40)
        ch = ch.next_sibling("channel")
        i += 1
    return _Desc(labels, units, types)


@dataclass
class _Counters:
    samples: int = 0
    chunks: int = 0
    reconnects: int = 0
    losses: int = 0


@dataclass
class _Link:
    """One LSL stream of the bed and its inlet, clock and dejitter state."""

    info: pylsl.StreamInfo
    desc: _Desc
    routes: list[ChannelRoute]
    inlet: pylsl.StreamInlet | None
    rate: float
    opened_wall: float
    dejitter: TimestampDejitter
    offset: float = 0.0
    offset_ok: bool = False
    offset_wall: float = -math.inf
    newest: float = -math.inf  # corrected timestamp of the newest sample
    last_data_wall: float = -math.inf
    checked_wall: float = -math.inf  # last pull attempted (a pull is what notices a lost outlet)
    lost: bool = False
    resolver: pylsl.ContinuousResolver | None = None
    retry_wall: float = -math.inf
    counters: _Counters = field(default_factory=_Counters)

    @property
    def name(self) -> str:
        return self.info.name()

    @property
    def key(self) -> tuple[str, str]:
        """Identity used to find the stream again: its source_id, else its name."""
        sid = self.info.source_id()
        return ("source_id", sid) if sid else ("name", self.info.name())


#: sample formats whose values float32 holds exactly
_EXACT_IN_FLOAT32 = (np.dtype(np.float32), np.dtype(np.int16), np.dtype(np.int8))


def _in_uv(x: np.ndarray, factor: float) -> np.ndarray:
    """One channel's pulled samples in µV (or %), as a new contiguous array.

    Unscaled samples of a float32 or 8/16-bit stream stay float32 (exact; the epoch assembler
    buffers them at half the memory of float64 and widens them losslessly when it preprocesses);
    anything else is float64 (``factor`` applied in float64, as before)."""
    if factor == 1.0:
        return x.astype(np.float32 if x.dtype in _EXACT_IN_FLOAT32 else np.float64)
    return np.multiply(x, factor, dtype=np.float64)  # one pass: widened, then scaled


def _replay_duration(text: str, bed: str | None) -> float | None:
    """A replay's ``desc/synthsleep/duration`` (s) when plausible, else None (logged when given)."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0.0 < value <= MAX_REPLAY_SECONDS):  # NaN, inf, 1e10, negative
        log.warning("bed %s: stream description gives duration %r; ignored (expected 0 to %g s)",
                    bed, _short(text, 40), MAX_REPLAY_SECONDS)
        return None
    return value


def _replay_buflen(speed_text: str, duration: float | None, buflen: int) -> int | None:
    """Inlet buffer (s of stream time) for a replay at ``speed``, when it must exceed ``buflen``:
    ``buflen`` is wall-clock stall time, so a replay at s x real time needs s x as much stream
    time (at most the whole recording + 60 s); at maximum speed, all of it. None: ``buflen`` does."""
    try:
        speed = float(speed_text)
    except ValueError:
        return None
    if not speed > 1.0:  # NaN, real time, slower
        return None
    if duration is not None:
        cap = int(duration) + 60
    elif math.isinf(speed):
        return None  # all of an unknown length: leave it to ``buflen``
    else:
        cap = int(MAX_REPLAY_SECONDS)
    need = int(min(buflen * speed, cap))
    return need if need > buflen else None


class BedInlet:
    """All LSL streams of one bed, mapped onto montage modalities; non-blocking ``poll``.

    Args:
        infos: the bed's streams (from ``resolve_stream``; short or full descriptions).
        bed: bed name for logs and errors.
        overrides: ``{modality: label}`` channel choices (``montage.resolve_channels``).
        required: modalities that must be present.
        modalities: modalities to look for (default: all of the montage).
        max_buflen: seconds each inlet buffers (a replay at maximum speed needs the whole
            recording's length here, or data is dropped by liblsl).
        stale_after: wall seconds without data after which a stream no longer holds back ``now``.
        reconnect_after: wall seconds without data after which a newer stream with the same
            identity is taken instead.
        clock_wait: wall seconds to wait for the first clock-correction estimate.
        open_timeout: seconds for opening an inlet and reading its full description.
        clock_refresh: seconds between clock-correction refreshes (non-blocking).
        liveness_check: seconds between pulls of a stream that has no sample queued (only a pull
            notices that its outlet is gone); a stream with samples is pulled on every poll.
        gap_tolerance: timestamp jitter (s) tolerated before a jump counts as a gap (at least
            2.5 samples).
        units: ``{modality: unit}`` replacing the unit a stream description gives (or lacks)
            for that modality's channel (e.g. ``{"eeg": "V"}``).

    Raises:
        MontageError: the labels map to no required modality (names the streams and labels).
        PreprocessError: a stream's rate is irregular or gives no whole number of samples per
            30-s epoch (names the stream and rate).
        StreamError: a string stream, a non-voltage unit on a voltage channel, or a stream
            whose description cannot be read.
    """

    def __init__(
        self,
        infos: Sequence[pylsl.StreamInfo],
        bed: str = "bed",
        overrides: Mapping[str, str] | None = None,
        required: Iterable[str] = ("eeg",),
        modalities: Iterable[str] = MODALITY_NAMES,
        max_buflen: int = DEFAULT_BUFLEN_S,
        stale_after: float = 2.0,
        reconnect_after: float = 10.0,
        clock_wait: float = 5.0,
        open_timeout: float = 5.0,
        clock_refresh: float = 5.0,
        gap_tolerance: float = 0.1,
        units: Mapping[str, str] | None = None,
        liveness_check: float = 0.5,
    ) -> None:
        if not infos:
            raise StreamError(f"bed {bed!r}: no streams given")
        self.bed = bed
        self.max_buflen = int(max_buflen)
        self.stale_after = float(stale_after)
        self.reconnect_after = float(reconnect_after)
        self.clock_wait = float(clock_wait)
        self.open_timeout = float(open_timeout)
        self.clock_refresh = float(clock_refresh)
        self.liveness_check = float(liveness_check)
        #: samples pulled from all streams so far (a cheap counter; ``stats`` has the details)
        self.total_samples = 0
        self.gap_tolerance = float(gap_tolerance)
        self.units = dict(units or {})
        self._links: list[_Link] = []
        opened: list[tuple[pylsl.StreamInfo, pylsl.StreamInlet, _Desc]] = []
        try:
            for info in infos:
                inlet, full = self._open(info, subscribe=False)
                opened.append((full, inlet, _read_desc(full)))
            routes = self._map_channels(opened, overrides, required, modalities)
            used = [(f, i, d) for f, i, d in opened if routes.get(f.uid())]
            for full, inlet, _ in opened:
                if not routes.get(full.uid()):
                    log.info("bed %s: stream %s carries no montage channel; not polled", bed,
                             describe_stream(full))
                    inlet.close_stream()
            for full, _, _ in used:
                self._validate_rate(full)
            # first clock estimates (they run in parallel), then subscribe: data pushed from now
            # on arrives with a clock correction ready
            deadline = time.monotonic() + self.clock_wait
            for _, inlet, _ in used:
                try:
                    inlet.time_correction(timeout=max(0.0, deadline - time.monotonic()))
                except LSLTimeoutError:
                    pass  # poll() keeps asking without blocking
            for full, inlet, _ in used:
                try:
                    inlet.open_stream(timeout=self.open_timeout)
                except (LSLTimeoutError, LostError) as exc:
                    raise StreamError(f"bed {bed}: cannot subscribe to stream {describe_stream(full)}: "
                                      f"{exc}") from None
        except BaseException:
            for _, inlet, _ in opened:
                inlet.close_stream()
            raise
        now = time.monotonic()
        self._links = [
            _Link(f, d, routes[f.uid()], i, float(f.nominal_srate()), now,
                  TimestampDejitter(float(f.nominal_srate()), self.gap_tolerance, self._label(f)))
            for f, i, d in used]
        log.info("bed %s: %s", bed, "; ".join(
            f"{r.modality}={r.label!r} ({r.stream}, {lk.rate:g} Hz, x{r.factor:g})"
            for lk in self._links for r in lk.routes))

    # -- construction helpers ------------------------------------------------------------------
    @classmethod
    def resolve(
        cls,
        name: str | None = None,
        source_ids: Sequence[str] = (),
        type: str | None = None,  # noqa: A002
        timeout: float = 10.0,
        bed: str | None = None,
        **kwargs: Any,
    ) -> BedInlet:
        """Resolve a bed's streams and open them.

        With ``name``: every stream of that name (a ``ReplayPlayer`` bed: its main stream, named
        like the bed; older replays named all their streams so). A stream written by
        ``ReplayPlayer`` (or shaped like one) lists its siblings' source_ids in
        ``desc/synthsleep/streams``, whatever their names (``<bed>-<rate>Hz``), and those are
        resolved one by one by source_id, with retries, so none is missed (one LSL discovery
        sweep misses streams when hundreds are on the network); for a replay faster than real
        time ``max_buflen`` (wall-clock stall time) is scaled by its speed, up to the recording's
        duration (+60 s; all of it at maximum speed), so nothing is dropped.
        With ``source_ids``: exactly those. Other keyword arguments go to ``BedInlet``.
        """
        infos: dict[str, pylsl.StreamInfo] = {}
        deadline = time.monotonic() + timeout
        if name or type:
            for i in resolve_stream(name=name, type=type, timeout=timeout):
                infos.setdefault(i.source_id() or i.uid(), i)
        wanted = list(source_ids)
        if name and not wanted:
            wanted, meta = cls._siblings(next(iter(infos.values())), timeout=min(timeout, 5.0))
            duration = _replay_duration(meta.get("duration", ""), bed or name)
            need = _replay_buflen(meta.get("speed", ""), duration, kwargs.get("max_buflen", DEFAULT_BUFLEN_S))
            if need is not None:
                log.info("bed %s: replay at %sx; inlet buffers sized to %d s", name, meta.get("speed"), need)
                kwargs["max_buflen"] = need
        for sid in wanted:
            if sid not in infos:
                left = max(0.5, deadline - time.monotonic())
                infos[sid] = resolve_stream(source_id=sid, timeout=left)[0]
        return cls(list(infos.values()), bed=bed or name or ",".join(source_ids), **kwargs)

    @staticmethod
    def _siblings(info: pylsl.StreamInfo, timeout: float) -> tuple[list[str], dict[str, str]]:
        """(source_ids listed in ``desc/synthsleep/streams``, the other ``desc/synthsleep`` values)."""
        inlet = pylsl.StreamInlet(info, max_buflen=1, recover=False)
        try:
            full = inlet.info(timeout=timeout)
        except (LSLTimeoutError, LostError):
            return [], {}
        finally:
            inlet.close_stream()
        node = full.desc().child("synthsleep")
        meta = {k: node.child_value(k) for k in ("speed", "duration", "file")}
        text = node.child_value("streams")
        sids = [s for s in (t.strip() for t in text.split(",")) if s]
        if len(sids) > MAX_SIBLINGS:
            log.warning("stream %s lists %d sibling streams; only the first %d are resolved",
                        describe_stream(full), len(sids), MAX_SIBLINGS)
            sids = sids[:MAX_SIBLINGS]
        return [_short(s, MAX_LABEL_CHARS) for s in sids], meta

    def _open(self, info: pylsl.StreamInfo, subscribe: bool = True
              ) -> tuple[pylsl.StreamInlet, pylsl.StreamInfo]:
        """Open an inlet, read the full description and start the clock-correction estimate
        (without waiting for it); subscribe to the data unless ``subscribe`` is False."""
        if info.channel_format() == pylsl.cf_string:
            raise StreamError(f"bed {self.bed}: stream {describe_stream(info)} carries strings, not samples")
        inlet = pylsl.StreamInlet(info, max_buflen=self.max_buflen, recover=False)
        try:
            full = inlet.info(timeout=self.open_timeout)
            try:
                inlet.time_correction(timeout=0.0)  # starts liblsl's estimate in the background
            except LSLTimeoutError:
                pass
            if subscribe:
                inlet.open_stream(timeout=self.open_timeout)
        except (LSLTimeoutError, LostError) as exc:
            inlet.close_stream()
            raise StreamError(f"bed {self.bed}: cannot open stream {describe_stream(info)}: {exc}") from None
        return inlet, full

    def _map_channels(self, opened, overrides, required, modalities) -> dict[str, list[ChannelRoute]]:
        modalities = tuple(modalities)
        labels: list[str] = []
        where: dict[str, tuple[pylsl.StreamInfo, _Desc, int]] = {}
        for full, _, desc in opened:
            for i, lab in enumerate(desc.labels):
                if lab not in where:  # a label repeated across streams: the first stream wins
                    where[lab] = (full, desc, i)
                    labels.append(lab)
        source = f"bed {self.bed} (LSL streams {', '.join(repr(f.name()) for f, _, _ in opened)})"
        try:
            mapping = resolve_channels(labels, overrides, required=required, wanted=modalities, source=source)
        except MontageError as exc:
            raise MontageError(
                f"{exc} Labels are read from each stream's desc/channels/channel/label.") from None
        #: what was mapped and what was left out, one line (the monitor prints it)
        self.channel_report = describe_mapping(mapping, labels, modalities)
        routes: dict[str, list[ChannelRoute]] = {}
        for mod, lab in mapping.items():
            full, desc, i = where[lab]
            unit = self.units.get(mod, desc.units[i])
            factor = unit_factor(mod, unit, f"bed {self.bed}, stream {full.name()!r}, channel {lab!r}")
            routes.setdefault(full.uid(), []).append(
                ChannelRoute(mod, full.name(), i, lab, unit, desc.types[i], factor))
        return routes

    def _label(self, info: pylsl.StreamInfo) -> str:
        """How the dejitter's log lines name a stream: ``bed B: stream 'NAME'``."""
        return f"bed {self.bed}: stream {info.name()!r}"

    def _validate_rate(self, info: pylsl.StreamInfo) -> None:
        rate = info.nominal_srate()
        if not math.isfinite(rate) or rate > MAX_RATE_HZ:
            raise PreprocessError(f"bed {self.bed}: stream {describe_stream(info)} has an implausible "
                                  f"sampling rate {rate!r} Hz (at most {MAX_RATE_HZ:g} Hz)")
        if rate <= 0:
            raise PreprocessError(f"bed {self.bed}: stream {describe_stream(info)} has an irregular "
                                  "sampling rate; the monitor needs a regular nominal rate")
        try:
            samples_per_epoch(rate)
        except PreprocessError as exc:
            raise PreprocessError(f"bed {self.bed}: stream {describe_stream(info)}: {exc}") from None

    # -- public read-only views --------------------------------------------------------------------
    @property
    def rates(self) -> dict[str, float]:
        """``{modality: native rate Hz}`` of the mapped channels."""
        return {r.modality: lk.rate for lk in self._links for r in lk.routes}

    @property
    def routes(self) -> list[ChannelRoute]:
        """Where each mapped modality comes from."""
        return [r for lk in self._links for r in lk.routes]

    @property
    def lost(self) -> bool:
        """True while any stream of the bed is lost (its outlet vanished)."""
        return any(lk.lost for lk in self._links)

    @property
    def stats(self) -> dict[str, dict[str, Any]]:
        """Per stream (by name@source_id): samples, chunks, gaps, gap_seconds, resets, reconnects,
        losses, lost, lag (s, ``local_clock() - newest timestamp``; negative when a replay runs
        ahead of real time; NaN before data), silent (wall s since the last data, or since the
        stream was opened), clock offset (s)."""
        now = pylsl.local_clock()
        wall = time.monotonic()
        out = {}
        for lk in self._links:
            c, dj = lk.counters, lk.dejitter
            out[f"{lk.name}@{lk.info.source_id() or '-'}"] = {
                "samples": c.samples, "chunks": c.chunks, "gaps": dj.gaps, "gap_seconds": dj.gap_seconds,
                "resets": dj.resets, "reconnects": c.reconnects, "losses": c.losses, "lost": lk.lost,
                "lag": (now - lk.newest) if math.isfinite(lk.newest) else math.nan,
                "silent": wall - max(lk.last_data_wall, lk.opened_wall), "offset": lk.offset,
            }
        return out

    def now(self) -> float:
        """Stream clock (s, local_clock domain) up to which data should have arrived; −inf
        before any data. See the module docstring."""
        wall = time.monotonic()
        have = [lk for lk in self._links if math.isfinite(lk.newest)]
        if not have:
            return -math.inf
        fresh = [lk.newest for lk in have if wall - lk.last_data_wall <= self.stale_after]
        if fresh:
            return min(fresh)
        last = max(have, key=lambda lk: lk.last_data_wall)
        return max(lk.newest for lk in have) + (wall - last.last_data_wall)

    # -- polling -----------------------------------------------------------------------------------
    def poll(self, max_seconds: float = 60.0) -> list[tuple[str, np.ndarray, float]]:
        """Drain what has arrived, without blocking.

        Args:
            max_seconds: at most this much signal per stream per call (keeps one call short when
                a backlog built up).

        Returns:
            ``[(modality, samples [n] in µV (or %), t0 seconds)]`` in arrival order (float32 for
            an unscaled float32 or 8/16-bit stream: exact; else float64); each
            entry is a contiguous run at the modality's rate whose first sample is at ``t0`` on
            the dejittered, clock-corrected local clock. A gap splits runs.
        """
        out: list[tuple[str, np.ndarray, float]] = []
        for link in self._links:
            if link.lost or link.inlet is None:
                self._try_recover(link)
                if link.lost:
                    continue
            elif time.monotonic() - max(link.last_data_wall, link.opened_wall) > self.reconnect_after:
                self._try_replace(link)
            try:
                if not self._clock(link):
                    continue
                self._pull(link, max_seconds, out)
            except LostError:
                self._mark_lost(link)
        return out

    def _clock(self, link: _Link) -> bool:
        """Refresh the clock offset; False while the first estimate is not there yet."""
        wall = time.monotonic()
        if link.offset_ok and wall - link.offset_wall < self.clock_refresh:
            return True
        try:
            link.offset = float(link.inlet.time_correction(timeout=0.0))
            link.offset_ok, link.offset_wall = True, wall
        except LSLTimeoutError:
            if not link.offset_ok and wall - link.opened_wall > self.clock_wait:
                log.warning("bed %s: no clock correction for stream %r after %.1f s; assuming offset 0",
                            self.bed, link.name, self.clock_wait)
                link.offset, link.offset_ok, link.offset_wall = 0.0, True, wall
        return link.offset_ok

    def _pull(self, link: _Link, max_seconds: float, out: list[tuple[str, np.ndarray, float]]) -> None:
        if not link.inlet.samples_available():
            wall = time.monotonic()
            if wall - link.checked_wall < self.liveness_check:
                return  # nothing queued: no pull (the common case, at hundreds of beds)
            link.checked_wall = wall
        budget = max(1, int(max_seconds * link.rate))
        pieces: list[np.ndarray] = []
        stamps: list[np.ndarray] = []
        got = 0
        while got < budget:
            # size the buffer to what is queued (a fixed large buffer costs an allocation per call);
            # always pull at least once so a lost stream raises LostError
            want = max(1, min(budget - got, int(link.inlet.samples_available()) or 1, 65536))
            data, ts = link.inlet.pull_chunk(timeout=0.0, max_samples=want, as_numpy=True)
            if ts is None or len(ts) == 0:
                break
            pieces.append(np.asarray(data))
            stamps.append(np.asarray(ts, dtype=np.float64))
            got += len(ts)
        if not got:
            return
        data = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        ts = np.concatenate(stamps) + link.offset
        link.counters.samples += got
        self.total_samples += got
        link.counters.chunks += 1
        link.last_data_wall = time.monotonic()
        link.newest = float(ts[-1])
        if link.resolver is not None:
            # the stream speaks again: stop looking for a replacement (each ContinuousResolver
            # holds a thread, sockets and ~120 kB, and queries the network every second)
            link.resolver = None
        for a, b, t0 in link.dejitter.split(ts):
            for r in link.routes:
                out.append((r.modality, _in_uv(data[a:b, r.index], r.factor), t0))

    @property
    def total_resets(self) -> int:
        """Times any of the bed's streams' timestamps went back (a restarted source), all streams."""
        return sum(lk.dejitter.resets for lk in self._links)

    # -- loss and recovery -------------------------------------------------------------------------
    def _mark_lost(self, link: _Link) -> None:
        if not link.lost:
            log.warning("bed %s: stream %s lost; waiting for it to come back", self.bed, describe_stream(link.info))
            link.counters.losses += 1
        link.lost = True
        if link.inlet is not None:
            link.inlet.close_stream()
            link.inlet = None
        self._ensure_resolver(link)

    def _ensure_resolver(self, link: _Link) -> None:
        if link.resolver is None:
            prop, value = link.key
            link.resolver = pylsl.ContinuousResolver(prop=prop, value=value, forget_after=2.0)

    def _try_replace(self, link: _Link) -> None:
        """A silent stream: switch to a newer one with the same identity if one appeared."""
        self._ensure_resolver(link)
        self._try_recover(link, silent=True)

    def _try_recover(self, link: _Link, silent: bool = False) -> None:
        wall = time.monotonic()
        if wall < link.retry_wall:
            return
        link.retry_wall = wall + 0.2
        self._ensure_resolver(link)
        for info in link.resolver.results():
            if info.uid() == link.info.uid() and not link.lost:
                continue
            if link.lost and info.uid() == link.info.uid():
                continue  # the old outlet is still being reported (forget_after); wait for a new one
            if info.channel_count() != link.info.channel_count() or info.nominal_srate() != link.rate:
                log.error("bed %s: stream %s came back with a different layout (%s); ignored",
                          self.bed, describe_stream(link.info), describe_stream(info))
                continue
            try:
                inlet, full = self._open(info)
            except StreamError as exc:
                log.warning("%s", exc)
                continue
            desc = _read_desc(full)
            if [desc.labels[r.index] for r in link.routes] != [r.label for r in link.routes]:
                inlet.close_stream()
                log.error("bed %s: stream %r came back with other channel labels %s; ignored",
                          self.bed, link.name, desc.labels)
                continue
            if link.inlet is not None:
                link.inlet.close_stream()
            log.info("bed %s: stream %r %s", self.bed, link.name, "replaced" if silent else "reconnected")
            link.info, link.inlet, link.desc = full, inlet, desc
            link.dejitter.label = self._label(full)
            link.lost, link.offset_ok, link.opened_wall = False, False, wall
            link.counters.reconnects += 1
            link.resolver = None
            return

    def close(self) -> None:
        """Close every inlet (idempotent)."""
        for link in self._links:
            if link.inlet is not None:
                link.inlet.close_stream()
                link.inlet = None
            link.resolver = None

    def __enter__(self) -> BedInlet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
