"""XDF recordings (LabRecorder, ``.xdf`` / ``.xdfz``): read through pyxdf, seen as a ``Recording``.

``open_recording`` hands a file whose name ends in ``.xdf``/``.xdfz`` or that starts with the
magic ``XDF:`` to :func:`open_xdf`, so ``synthsleep score``, ``replay``, ``adapt`` and ``prepare``
read LabRecorder files like EDFs.

How an XDF maps onto a recording:

* **Signal streams** (numeric, regular nominal rate, at least one sample): every channel becomes a
  ``ChannelInfo`` at the stream's nominal rate. Labels come from
  ``desc/channels/channel/label`` (missing: ``<stream name>:ch<i>``); a label already taken by an
  earlier stream is read as ``<label>#2``. Units from ``desc/channels/channel/unit``: voltages
  (``V``, ``mV``, ``uV``, ``microvolts`` ..., and mne-lsl's power-of-ten codes ``0``/``-3``/``-6``
  on EEG/EOG/EMG/ECG channels) are converted to µV; other units pass as written.
* **Time**: pyxdf synchronises the streams' clocks (ClockOffset chunks) and dejitters them; time 0
  of the recording is the earliest first sample of any signal stream. Each stream segment (pyxdf
  splits a stream at breaks in its timestamps) is placed from its first timestamp, samples
  contiguous at the nominal rate; time no sample covers (before a late stream starts, in a break)
  reads as NaN, like an EDF+D gap, so a gap never shifts later samples.
* **Marker streams** (string channels, or an irregular rate): every marker becomes an
  ``Annotation`` at its timestamp (s from time 0). A marker whose text is JSON with a ``text`` key
  (what ``synthsleep replay`` publishes: ``{"text", "onset", "duration"}``) gives that text and
  duration; any other marker keeps its text (channels joined by ``" | "``), duration 0. Stage and
  respiratory texts are therefore read as the file's own scoring (``psg.annotations``).
* **Start date**: the file header's ``datetime`` (LabRecorder writes the time recording began),
  in UTC, naive like an EDF start; None when absent.

Errors: a file that is not XDF, has no stream, an unreadable stream header, or no usable signal
stream raises ``RecordingError`` naming the file (and the stream); a truncated or partly corrupt
file (pyxdf skips to the next boundary chunk) loads what could be read and logs a warning that
names the file.

Memory: pyxdf reads the whole file (an 8-h 10-channel 256-Hz night: ~0.3 GB as float32 + the grid).

:func:`write_xdf` writes an XDF 1.0 file (FileHeader, StreamHeader, Samples, ClockOffset,
StreamFooter chunks) from arrays, for tests and for converting recordings.

Why one module (~460 lines): the reader and the writer share the chunk format and the stream
header fields; the writer exists so that tests read real files through pyxdf.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from defusedxml.ElementTree import ParseError

from .recording import Annotation, ChannelInfo, RecordingError

log = logging.getLogger(__name__)

__all__ = ["XdfRecording", "XdfStream", "open_xdf", "write_xdf", "is_xdf"]

_VOLT = {"v": 1e6, "volt": 1e6, "volts": 1e6, "mv": 1e3, "millivolt": 1e3, "millivolts": 1e3,
         "uv": 1.0, "µv": 1.0, "μv": 1.0, "microvolt": 1.0, "microvolts": 1.0,
         "nv": 1e-3, "nanovolt": 1e-3, "nanovolts": 1e-3}
_VOLTAGE_TYPES = ("EEG", "EOG", "EMG", "ECG", "EKG")
#: more channels than this in one stream is not a PSG stream description we can trust
MAX_CHANNELS = 1024
_NUMERIC = {"float32": "<f4", "double64": "<f8", "int8": "<i1", "int16": "<i2", "int32": "<i4",
            "int64": "<i8"}


def is_xdf(path: str | os.PathLike[str]) -> bool:
    """True when the file is named ``.xdf``/``.xdfz`` or starts with the magic ``XDF:``."""
    p = Path(path)
    if p.suffix.lower() in (".xdf", ".xdfz"):
        return True
    try:
        with p.open("rb") as f:
            return f.read(4) == b"XDF:"
    except OSError:
        return False


def _first(node: Any, key: str, default: str = "") -> str:
    """pyxdf's XML dicts hold every value in a list: the first one as text, else ``default``."""
    if not isinstance(node, dict):
        return default
    val = node.get(key)
    if isinstance(val, list) and val:
        val = val[0]
    return val.strip() if isinstance(val, str) else default


def _channels(info: dict[str, Any]) -> list[dict[str, Any]]:
    desc = info.get("desc")
    desc = desc[0] if isinstance(desc, list) and desc else desc
    if not isinstance(desc, dict):
        return []
    chans = desc.get("channels")
    chans = chans[0] if isinstance(chans, list) and chans else chans
    if not isinstance(chans, dict):
        return []
    rows = chans.get("channel") or []
    return [r for r in rows if isinstance(r, dict)]


def _unit_factor(unit: str, ctype: str, label: str) -> tuple[str, float]:
    """(canonical unit, factor): voltages → ``"uV"``, else the unit as written, factor 1."""
    key = unit.strip().lower().replace(" ", "")
    if key in _VOLT:
        return "uV", _VOLT[key]
    voltage = ctype.upper() in _VOLTAGE_TYPES or label.upper().startswith(_VOLTAGE_TYPES)
    if voltage and key.lstrip("+-").isdigit() and len(key) <= 3:  # mne-lsl's power-of-ten code
        return "uV", 10.0 ** (int(key) + 6)
    return unit.strip(), 1.0


@dataclass
class XdfStream:
    """One stream for :func:`write_xdf`.

    Attributes:
        name, type: LSL stream name and type.
        rate: nominal rate, Hz (0 = irregular, e.g. markers).
        fmt: LSL channel format (``float32``, ``double64``, ``int16``, ``int32``, ``string`` ...).
        labels, units, types: per-channel ``desc/channels/channel`` values (units/types may be
            empty lists).
        data: [n, channels] numeric array, or for strings a list of n lists of str.
        stamps: float64 [n] timestamps, s (LSL clock).
        source_id: the stream's source_id.
        clock_offsets: ``[(collection time s, offset s)]`` ClockOffset chunks.
        desc_extra: extra ``desc`` children ``{tag: text}``.
        chunk: samples per Samples chunk.
    """

    name: str
    type: str
    rate: float
    fmt: str
    labels: Sequence[str]
    data: Any
    stamps: np.ndarray
    units: Sequence[str] = ()
    types: Sequence[str] = ()
    source_id: str = ""
    clock_offsets: Sequence[tuple[float, float]] = ()
    desc_extra: dict[str, str] = field(default_factory=dict)
    chunk: int = 512


def _varlen(n: int) -> bytes:
    if n < 256:
        return b"\x01" + struct.pack("<B", n)
    if n < 2**32:
        return b"\x04" + struct.pack("<I", n)
    return b"\x08" + struct.pack("<Q", n)


def _chunk(tag: int, content: bytes) -> bytes:
    return _varlen(len(content) + 2) + struct.pack("<H", tag) + content


def _element(tag: str, body: str) -> str:
    return f"<{tag}>{body}</{tag}>"


def _xml(info_body: str) -> bytes:
    """An XDF chunk's XML: ``<info>`` around ``info_body`` (already escaped). Written as text:
    the writer never parses XML; the reader leaves parsing to pyxdf."""
    return ('<?xml version="1.0"?>' + _element("info", info_body)).encode("utf-8")


def _stream_header(s: XdfStream, sid: int) -> bytes:
    """The StreamHeader chunk's content: stream id + the ``<info>`` XML."""
    fields = (("name", s.name), ("type", s.type), ("channel_count", str(len(s.labels))),
              ("nominal_srate", f"{s.rate:g}"), ("channel_format", s.fmt), ("source_id", s.source_id),
              ("version", "1.1"), ("created_at", f"{float(s.stamps[0]) if len(s.stamps) else 0.0:.6f}"),
              ("uid", f"synthsleep-xdf-{sid}"), ("session_id", "default"), ("hostname", "localhost"))
    head = "".join(_element(tag, escape(text)) for tag, text in fields)
    chans = "".join(
        _element("channel", _element("label", escape(lab))
                 + (_element("unit", escape(s.units[i])) if s.units else "")
                 + (_element("type", escape(s.types[i])) if s.types else ""))
        for i, lab in enumerate(s.labels))
    extra = "".join(_element(k, escape(v)) for k, v in s.desc_extra.items())
    return struct.pack("<I", sid) + _xml(head + _element("desc", _element("channels", chans) + extra))


def _samples(s: XdfStream, sid: int, a: int, b: int) -> bytes:
    out = [struct.pack("<I", sid), _varlen(b - a)]
    if s.fmt == "string":
        for k in range(a, b):
            out.append(b"\x08" + struct.pack("<d", float(s.stamps[k])))
            for v in s.data[k]:
                raw = str(v).encode("utf-8")
                out.append(_varlen(len(raw)) + raw)
    else:
        x = np.ascontiguousarray(np.asarray(s.data[a:b]), dtype=np.dtype(_NUMERIC[s.fmt]))
        for k in range(b - a):
            out.append(b"\x08" + struct.pack("<d", float(s.stamps[a + k])) + x[k].tobytes())
    return b"".join(out)


def write_xdf(path: str | os.PathLike[str], streams: Sequence[XdfStream],
              datetime: dt.datetime | None = None) -> Path:
    """Write an XDF 1.0 file: FileHeader, each stream's StreamHeader, its Samples chunks
    (every sample time-stamped), ClockOffset chunks, then the StreamFooters.

    Args:
        path: the file to write.
        streams: the streams; numeric ``data`` is [n, channels], string data n lists of str.
        datetime: the file header's ``datetime`` (LabRecorder's recording start); None: none.
    """
    p = Path(path)
    stamp = _element("datetime", datetime.strftime("%Y-%m-%dT%H:%M:%S%z")) if datetime is not None else ""
    parts = [b"XDF:", _chunk(1, _xml(_element("version", "1.0") + stamp))]
    for sid, s in enumerate(streams, 1):
        parts.append(_chunk(2, _stream_header(s, sid)))
    for sid, s in enumerate(streams, 1):
        n = len(s.stamps)
        for a in range(0, n, max(1, s.chunk)):
            parts.append(_chunk(3, _samples(s, sid, a, min(n, a + s.chunk))))
        for t, off in s.clock_offsets:
            parts.append(_chunk(4, struct.pack("<Idd", sid, float(t), float(off))))
    for sid, s in enumerate(streams, 1):
        n = len(s.stamps)
        offsets = "".join(_element("offset", _element("time", f"{t:.6f}") + _element("value", f"{off:.9f}"))
                          for t, off in s.clock_offsets)
        foot = (_element("first_timestamp", f"{float(s.stamps[0]) if n else 0.0:.6f}")
                + _element("last_timestamp", f"{float(s.stamps[-1]) if n else 0.0:.6f}")
                + _element("sample_count", str(n)) + _element("clock_offsets", offsets))
        parts.append(_chunk(6, struct.pack("<I", sid) + _xml(foot)))
    p.write_bytes(b"".join(parts))
    return p


class _PyxdfErrors(logging.Handler):
    """Collects pyxdf's error log lines (it logs corruption and skips ahead instead of raising)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().splitlines()[0][:200])


class XdfRecording:
    """An XDF file as a recording (the ``Recording`` interface: ``path``, ``start_datetime``,
    ``duration``, ``channels``, ``annotations``, ``read``, ``recorded``, ``channel``, ``labels``,
    ``continuous``, ``close``). Use :func:`open_xdf` or ``open_recording``.

    Attributes:
        streams: one line per stream of the file (name, type, what was made of it).
    """

    def __init__(self, path: Path, streams: list[dict[str, Any]], header: dict[str, Any] | None) -> None:
        self.path = path
        self.channels: list[ChannelInfo] = []
        self.annotations: list[Annotation] = []
        self.streams: list[str] = []
        self._data: dict[str, np.ndarray] = {}  # label -> float64 grid [n] (NaN where unrecorded)
        signal: list[tuple[dict[str, Any], str, np.ndarray, np.ndarray, float]] = []
        markers: list[tuple[str, Any, np.ndarray]] = []
        for s in streams:
            info = s.get("info") or {}
            name = _first(info, "name") or f"stream {_first(info, 'stream_id', '?')}"
            what = f"stream {name!r} (type {_first(info, 'type') or '-'})"
            fmt = _first(info, "channel_format")
            try:
                rate = float(_first(info, "nominal_srate", "0") or 0)
                nch = int(_first(info, "channel_count", "0") or 0)
            except ValueError:
                raise RecordingError(path, f"{what}: unreadable nominal_srate or channel_count") from None
            stamps = np.asarray(s.get("time_stamps", np.zeros(0)), dtype=np.float64)
            if not math.isfinite(rate) or rate < 0 or not 0 < nch <= MAX_CHANNELS:
                raise RecordingError(path, f"{what}: implausible header (nominal_srate {rate!r} Hz, "
                                           f"{nch} channels)")
            if len(stamps) == 0:
                log.info("%s: %s has no samples; skipped", path, what)
                self.streams.append(f"{what}: empty, skipped")
                continue
            if fmt == "string" or rate == 0:
                markers.append((name, s.get("time_series"), stamps))
                self.streams.append(f"{what}: {len(stamps)} markers -> annotations")
                continue
            if fmt not in _NUMERIC:
                raise RecordingError(path, f"{what}: channel format {fmt!r} is not numeric")
            x = np.asarray(s.get("time_series"), dtype=np.float64)
            if x.ndim != 2 or x.shape != (len(stamps), nch):
                raise RecordingError(path, f"{what}: data shape {x.shape} does not match "
                                           f"{len(stamps)} samples x {nch} channels")
            if not np.isfinite(stamps).all():
                raise RecordingError(path, f"{what}: non-finite timestamps")
            segments = info.get("segments") or [(0, len(stamps) - 1)]
            signal.append((info, name, x, stamps, rate))
            self.streams.append(f"{what}: {nch} ch @ {rate:g} Hz, {len(stamps)} samples, "
                                f"{len(segments)} segment(s)")
            info["_segments"] = segments
        if not signal:
            found = "; ".join(self.streams) or "no streams"
            raise RecordingError(path, f"no signal stream (numeric, regular rate, with samples); found: {found}")
        self.t0 = min(float(st[0]) for _, _, _, st, _ in signal)
        self.duration = max(float(st[-1]) - self.t0 + 1.0 / r for _, _, _, st, r in signal)
        for info, name, x, stamps, rate in signal:
            self._add_stream(info, name, x, stamps, rate)
        for name, series, stamps in markers:
            self._add_markers(name, series, stamps)
        self.annotations.sort(key=lambda a: a.onset)
        steps_ok = all(not np.isnan(v).any() for v in self._data.values())
        self.continuous = bool(steps_ok)
        self.start_datetime = self._start(header)
        log.info("%s: XDF with %s", path, "; ".join(self.streams))

    def _add_stream(self, info: dict[str, Any], name: str, x: np.ndarray, stamps: np.ndarray, rate: float) -> None:
        rows = _channels(info)
        stype = _first(info, "type")
        n_total = int(round(self.duration * rate))
        grid = np.full((n_total, x.shape[1]), np.nan)
        for a, b in info["_segments"]:
            a, b = int(a), int(b) + 1
            k0 = int(round((stamps[a] - self.t0) * rate))
            k1 = min(n_total, k0 + (b - a))
            if k1 > k0 >= 0:
                grid[k0:k1] = x[a : a + (k1 - k0)]
        for i in range(x.shape[1]):
            row = rows[i] if i < len(rows) else {}
            label = _first(row, "label") or f"{name}:ch{i}"
            if label in self._data:
                k = 2
                while f"{label}#{k}" in self._data:
                    k += 1
                log.warning("%s: stream %r repeats channel label %r; read as %r", self.path, name, label,
                            f"{label}#{k}")
                label = f"{label}#{k}"
            ctype = _first(row, "type") or stype
            unit, factor = _unit_factor(_first(row, "unit"), ctype, label)
            col = grid[:, i] * factor if factor != 1.0 else grid[:, i].copy()
            self._data[label] = col
            finite = col[np.isfinite(col)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
            self.channels.append(ChannelInfo(label=label, rate=rate, unit=unit, n_samples=n_total,
                                             physical_min=lo, physical_max=hi, transducer=f"XDF stream {name}"))

    def _add_markers(self, name: str, series: Any, stamps: np.ndarray) -> None:
        for value, t in zip(series, stamps):
            vals = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
            text = " | ".join(str(v) for v in vals if str(v) != "")
            duration = 0.0
            if text.startswith("{"):
                try:
                    obj = json.loads(text)
                except ValueError:
                    obj = None
                if isinstance(obj, dict) and isinstance(obj.get("text"), str):
                    text = obj["text"]
                    try:
                        duration = max(0.0, float(obj.get("duration") or 0.0))
                    except (TypeError, ValueError):
                        duration = 0.0
            if text:
                self.annotations.append(Annotation(float(t) - self.t0, duration, text))

    def _start(self, header: dict[str, Any] | None) -> dt.datetime | None:
        text = _first((header or {}).get("info") or {}, "datetime")
        if not text:
            return None
        try:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            try:
                when = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z")
            except ValueError:
                log.warning("%s: unreadable XDF header datetime %r", self.path, text[:40])
                return None
        if when.tzinfo is not None:
            when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return when

    # -- the Recording interface ------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.channels]

    def channel(self, label: str) -> ChannelInfo:
        """The ``ChannelInfo`` of ``label``; RecordingError listing the labels if absent."""
        for c in self.channels:
            if c.label == label:
                return c
        raise RecordingError(self.path, f"no channel {label!r}; channels: {', '.join(self.labels)}")

    def read(self, label: str, start: float = 0.0, stop: float | None = None) -> np.ndarray:
        """Samples of one channel from ``start`` to ``stop`` s (time 0: the earliest first
        sample), float64, µV for voltages; NaN where no sample was recorded."""
        info = self.channel(label)
        if label not in self._data:
            raise RecordingError(self.path, "recording is closed")
        stop = self.duration if stop is None else float(stop)
        if not (math.isfinite(start) and math.isfinite(stop)) or stop < start:
            raise RecordingError(self.path, f"invalid span [{start}, {stop}] s for channel {label!r}")
        k0, k1 = int(round(float(start) * info.rate)), int(round(stop * info.rate))
        col = self._data[label]
        out = np.full(k1 - k0, np.nan)
        a, b = max(k0, 0), min(k1, len(col))
        if b > a:
            out[a - k0 : b - k0] = col[a:b]
        return out

    def recorded(self, label: str, start: float = 0.0, stop: float | None = None) -> np.ndarray:
        """bool [n] aligned with ``read``: True where a sample was recorded."""
        return np.isfinite(self.read(label, start, stop))

    def close(self) -> None:
        self._data = {}

    def __enter__(self) -> XdfRecording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"XdfRecording({str(self.path)!r}, {len(self.channels)} channels, {self.duration:g} s)"


def open_xdf(path: str | os.PathLike[str]) -> XdfRecording:
    """Read an XDF (``.xdf``, or gzip'ed ``.xdfz``) file with pyxdf.

    Raises:
        RecordingError: missing file, not XDF, no stream, an unreadable stream header, or no
            usable signal stream (the message names the file and the stream).
    """
    p = Path(path)
    if not p.is_file():
        raise RecordingError(p, "no such file" if not p.exists() else "not a regular file")
    try:
        import pyxdf
    except ImportError:
        raise RecordingError(p, "reading XDF needs pyxdf (pip install pyxdf)") from None
    errors = _PyxdfErrors()
    pylog = logging.getLogger("pyxdf")
    pylog.addHandler(errors)
    try:
        streams, header = pyxdf.load_xdf(str(p), verbose=None)
    except (OSError, EOFError) as exc:
        raise RecordingError(p, f"not a readable XDF file ({exc})") from None
    except ParseError as exc:  # pyxdf's XML parser on a stream header
        raise RecordingError(p, f"corrupt XML in a stream header ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - any library failure is a bad file for the user
        raise RecordingError(p, f"corrupt XDF file ({type(exc).__name__}: {exc})") from None
    finally:
        pylog.removeHandler(errors)
    if errors.messages:
        log.warning("%s: XDF file is damaged (%s); using what could be read", p, "; ".join(errors.messages[:3]))
    if not streams:
        raise RecordingError(p, "XDF file holds no stream")
    return XdfRecording(p, streams, header)
