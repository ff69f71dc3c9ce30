"""EDF / EDF+C / EDF+D / BDF recordings: lazy reading by seconds, voltages in µV; EDF+C writing.

Reading uses edfio (memory-mapped EDF, so ``read`` touches only the data records of the span
asked for; BDF is loaded whole by edfio). edfio is used rather than pyedflib because it reads
files that pyedflib refuses, e.g. DREAMS ``excerpt3.edf`` whose header has digital min/max
outside the int16 range (the samples themselves are int16; the header only sets the scale).
The header is checked here against the file size first, so a truncated file, a header whose
record count lies, an empty file or something that is not an EDF at all give a
``RecordingError`` naming the file and the problem, never a library traceback.

Units: the physical dimension is parsed case-insensitively (``uV``, ``µV``, ``UV``, ``mV``,
``MV``, ``V``, ``nV``) and voltage channels are converted to µV (canonical unit ``"uV"``);
other units (``%``, ``bpm``, ...) are left as written.

EDF+D (discontinuous): every data record has an onset (``Recording.record_onsets``); time not
covered by any record is read back as NaN, so gaps never shift later samples. ``duration``
is the span from the start to the end of the last record.

Why one module (~620 lines): reading EDF/EDF+C/EDF+D/BDF (units, records, gaps) and writing EDF+C
share the header model; a split would only move helpers back and forth.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "Annotation",
    "ChannelInfo",
    "Recording",
    "RecordingError",
    "Signal",
    "open_recording",
    "parse_unit",
    "read_edf_annotations",
    "write_edf",
]


class RecordingError(ValueError):
    """A recording cannot be read or written; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = str(path)
        self.problem = message
        super().__init__(f"{self.path}: {message}")


@dataclass(frozen=True)
class ChannelInfo:
    """One signal channel of a recording.

    Attributes:
        label: channel label as written in the file (stripped).
        rate: sampling rate, Hz (the channel's own; never resampled on read).
        unit: canonical unit, ``"uV"`` for voltages, otherwise as written.
        n_samples: samples in the file (records × samples per record).
        physical_min, physical_max: header range, converted to ``unit``.
        transducer: transducer type text.
        prefilter: prefiltering text.
    """

    label: str
    rate: float
    unit: str
    n_samples: int
    physical_min: float
    physical_max: float
    transducer: str = ""
    prefilter: str = ""


@dataclass(frozen=True)
class Annotation:
    """An EDF+ annotation: onset (s from the recording start), duration (s, 0 if none), text."""

    onset: float
    duration: float
    text: str


@dataclass
class Signal:
    """A signal to write: physical samples ``data`` float [n] at ``rate`` Hz, in ``unit``."""

    label: str
    rate: float
    data: np.ndarray
    unit: str = "uV"
    transducer: str = ""
    prefilter: str = ""


# ----------------------------------------------------------------------------------------------
# Units
# ----------------------------------------------------------------------------------------------

_VOLT_FACTORS = {"v": 1e6, "mv": 1e3, "uv": 1.0, "µv": 1.0, "μv": 1.0, "nv": 1e-3}
_VOLTAGE_PREFIXES = ("EEG", "EOG", "EMG", "ECG", "EKG")


def parse_unit(unit: str) -> tuple[str, float]:
    """(canonical unit, factor to multiply by) for a physical dimension text.

    Voltages (any case, ``u``/``µ``/``μ`` for micro) → ``("uV", factor to µV)``; anything else
    is returned unchanged with factor 1.
    """
    key = unit.strip().lower()
    if key in _VOLT_FACTORS:
        return "uV", _VOLT_FACTORS[key]
    return unit.strip(), 1.0


def _looks_voltage(label: str) -> bool:
    up = label.upper()
    return up.startswith(_VOLTAGE_PREFIXES) or bool(re.match(r"^[A-Z]{1,3}\d*-[A-Z]\d*$", up))


# ----------------------------------------------------------------------------------------------
# Header checks (before any library sees the file)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RawHeader:
    is_bdf: bool
    header_bytes: int
    n_records: int
    record_duration: float
    n_signals: int
    samples_per_record: tuple[int, ...]


def _field(raw: bytes, start: int, length: int) -> str:
    return raw[start : start + length].decode("ascii", errors="replace").strip()


def _check_header(path: Path, annotations_only: bool = False) -> _RawHeader:
    """Validate the fixed header and the file size; RecordingError on any inconsistency.

    ``annotations_only`` accepts files without signal data (record duration 0, e.g. Sleep-EDF
    ``*-Hypnogram.edf``).
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise RecordingError(path, f"cannot open: {exc.strerror or exc}") from None
    if size == 0:
        raise RecordingError(path, "empty file (0 bytes), not an EDF/BDF recording")
    with path.open("rb") as fh:
        head = fh.read(256)
        if len(head) < 256:
            raise RecordingError(path, f"only {size} bytes: too short for an EDF/BDF header (256 bytes)")
        is_bdf = head[:8] == b"\xffBIOSEMI"
        if not is_bdf and head[:8] != b"0       ":
            raise RecordingError(path, f"not an EDF or BDF file (version field {head[:8]!r})")
        try:
            header_bytes = int(_field(head, 184, 8))
            n_records = int(_field(head, 236, 8))
            record_duration = float(_field(head, 244, 8))
            n_signals = int(_field(head, 252, 4))
        except ValueError:
            raise RecordingError(path, "corrupt header: a number field (header size, record count, "
                                       "record duration or signal count) is not a number") from None
        if n_signals < 1 or header_bytes != 256 * (n_signals + 1):
            raise RecordingError(path, f"corrupt header: {n_signals} signals but header size "
                                       f"{header_bytes} bytes (expected {256 * (max(n_signals, 0) + 1)})")
        if size < header_bytes:
            raise RecordingError(path, f"truncated header: file has {size} bytes, header needs {header_bytes}")
        sig = fh.read(header_bytes - 256)
    off = n_signals * (16 + 80 + 8 + 8 + 8 + 8 + 8 + 80)
    try:
        spr = tuple(int(_field(sig, off + 8 * i, 8)) for i in range(n_signals))
    except ValueError:
        raise RecordingError(path, "corrupt header: samples-per-record field is not a number") from None
    if any(n <= 0 for n in spr):
        raise RecordingError(path, f"corrupt header: samples per record must be positive, got {list(spr)}")
    if not (record_duration >= 0 and math.isfinite(record_duration)):
        raise RecordingError(path, f"corrupt header: record duration {record_duration!r} s")
    record_bytes = sum(spr) * (3 if is_bdf else 2)
    data_bytes = size - header_bytes
    if n_records == -1:
        if data_bytes % record_bytes:
            raise RecordingError(path, f"record count -1 (unfinished recording) and data size "
                                       f"{data_bytes} bytes is not a whole number of {record_bytes}-byte records")
        n_records = data_bytes // record_bytes
        log.warning("%s: header record count is -1 (unfinished recording); using %d from the file size",
                    path, n_records)
    elif n_records < 0:
        raise RecordingError(path, f"corrupt header: record count {n_records}")
    expected = n_records * record_bytes
    if data_bytes < expected:
        raise RecordingError(path, f"truncated file or header lies: header says {n_records} data records "
                                   f"({expected} bytes) but the file holds only {data_bytes} bytes of data "
                                   f"({data_bytes / record_bytes:.2f} records)")
    if data_bytes > expected:
        log.warning("%s: %d bytes after the %d data records declared in the header are ignored",
                    path, data_bytes - expected, n_records)
    if n_records == 0 and not annotations_only:
        raise RecordingError(path, "the file holds no data records")
    if record_duration == 0 and not annotations_only:
        raise RecordingError(path, "record duration 0 s: an annotation-only file has no signals to read")
    return _RawHeader(is_bdf, header_bytes, n_records, record_duration, n_signals, spr)


def _record_onset(record: bytes) -> float | None:
    """Onset (s) of an EDF+ data record from its first (timekeeping) TAL, None if unreadable."""
    end = record.find(b"\x14")
    if end <= 0:
        return None
    text = record[:end].split(b"\x15")[0].decode("ascii", errors="replace")
    try:
        return float(text)
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------------
# Recording
# ----------------------------------------------------------------------------------------------


class Recording:
    """An open EDF/EDF+/BDF file. Use ``open_recording(path)``.

    Attributes:
        path: the file.
        start_datetime: recording start (naive, as written in the header), or None if unreadable.
        duration: seconds from the start to the end of the last data record.
        channels: signal channels (annotation channels excluded), in file order.
        annotations: EDF+ annotations (timekeeping ones excluded), chronological.
        record_duration: seconds per data record.
        record_onsets: float64 [n_records], onset of each data record (s); ``i * record_duration``
            for EDF and EDF+C.
        continuous: False for an EDF+D file whose records leave gaps.
    """

    def __init__(self, path: Path, edf: Any, raw: _RawHeader) -> None:
        self.path = path
        self._edf = edf
        self._raw = raw
        self.record_duration = float(raw.record_duration)
        self._signals: dict[str, Any] = {}
        self._factors: dict[str, float] = {}
        self.channels: list[ChannelInfo] = []
        n_rec = raw.n_records
        for sig in edf.signals:
            label = sig.label.strip()
            if label in self._signals:  # keep both readable: "EEG", "EEG#2"
                k = 2
                while f"{label}#{k}" in self._signals:
                    k += 1
                log.warning("%s: duplicate channel label %r; the later one is read as %r", path, label,
                            f"{label}#{k}")
                label = f"{label}#{k}"
            unit, factor = parse_unit(sig.physical_dimension)
            if not sig.physical_dimension.strip() and _looks_voltage(label):
                log.warning("%s: channel %r has no physical unit; its values are left as written "
                            "(expected a voltage in uV)", path, label)
            spr = int(sig.samples_per_data_record)
            lo, hi = float(sig.physical_min) * factor, float(sig.physical_max) * factor
            self._signals[label] = sig
            self._factors[label] = factor
            self.channels.append(ChannelInfo(
                label=label, rate=spr / self.record_duration, unit=unit, n_samples=spr * n_rec,
                physical_min=min(lo, hi), physical_max=max(lo, hi),
                transducer=sig.transducer_type.strip(), prefilter=sig.prefiltering.strip()))
        self.record_onsets = self._read_record_onsets()
        steps = np.diff(self.record_onsets)
        self.continuous = bool(np.allclose(steps, self.record_duration, atol=1e-6)) if steps.size else True
        if np.any(steps < self.record_duration - 1e-6):
            raise RecordingError(path, "EDF+D data records overlap or are out of order "
                                       f"(first at record {int(np.argmax(steps < self.record_duration - 1e-6)) + 1})")
        self.duration = float(self.record_onsets[-1] + self.record_duration) if n_rec else 0.0
        try:
            self.start_datetime: dt.datetime | None = edf.startdatetime
        except Exception:  # noqa: BLE001 - a bad date is not worth refusing the file
            log.warning("%s: unreadable start date/time in header", path)
            self.start_datetime = None
        self.annotations = self._read_annotations()

    # -- header-derived -------------------------------------------------------------------------

    def _read_record_onsets(self) -> np.ndarray:
        base = np.arange(self._raw.n_records, dtype=np.float64) * self.record_duration
        ann = [s for s in self._edf._signals if s._is_annotation_signal]  # noqa: SLF001
        if not ann:
            return base
        tk = ann[0]
        try:
            data = np.asarray(tk.digital).view(np.uint8).reshape(self._raw.n_records, -1)
        except Exception:  # noqa: BLE001
            log.warning("%s: cannot read the EDF+ timekeeping channel; assuming contiguous records", self.path)
            return base
        onsets = np.array([_record_onset(bytes(r)) for r in data], dtype=object)
        if any(o is None for o in onsets):
            log.warning("%s: some data records have no timekeeping annotation; assuming contiguous records",
                        self.path)
            return base
        onsets = onsets.astype(np.float64)
        return onsets - onsets[0]  # record 0 starts at the header start time (+ sub-second offset)

    def _read_annotations(self) -> list[Annotation]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                anns = self._edf.annotations
        except Exception as exc:  # noqa: BLE001
            raise RecordingError(self.path, f"unreadable EDF+ annotations: {exc}") from None
        # edfio gives onsets relative to the start date/time (sub-second offset removed)
        return [Annotation(float(a.onset), float(a.duration or 0.0), str(a.text)) for a in anns]

    def channel(self, label: str) -> ChannelInfo:
        """The ``ChannelInfo`` of ``label``; RecordingError listing the labels if absent."""
        for c in self.channels:
            if c.label == label:
                return c
        raise RecordingError(self.path, f"no channel {label!r}; channels: {', '.join(c.label for c in self.channels)}")

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.channels]

    # -- data -----------------------------------------------------------------------------------

    def _calibrated(self, label: str, i0: int, i1: int) -> np.ndarray:
        """Samples [i0, i1) of the file's concatenated records, physical × unit factor."""
        if self._edf is None:
            raise RecordingError(self.path, "recording is closed")
        sig = self._signals[label]
        rate = self.channel(label).rate
        if i1 <= i0:
            return np.zeros(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dig = sig.get_digital_slice(i0 / rate, i1 / rate)
        dmin, dmax = float(sig.digital_min), float(sig.digital_max)
        pmin, pmax = float(sig.physical_min), float(sig.physical_max)
        if dmax == dmin:
            raise RecordingError(self.path, f"channel {label!r}: digital minimum equals maximum ({dmin:g})")
        gain = (pmax - pmin) / (dmax - dmin) * self._factors[label]
        offset = (pmin - dmin * (pmax - pmin) / (dmax - dmin)) * self._factors[label]
        out = dig.astype(np.float64)
        out *= gain
        out += offset
        return out

    def read(self, label: str, start: float = 0.0, stop: float | None = None) -> np.ndarray:
        """Samples of one channel from ``start`` to ``stop`` seconds (recording clock).

        Returns float64 [round(stop·rate) − round(start·rate)], in physical units (µV for
        voltages). Only the data records of the span are read. Time outside the recording or
        (EDF+D) between records is NaN.
        """
        info = self.channel(label)
        rate = info.rate
        stop = self.duration if stop is None else float(stop)
        start = float(start)
        if not (math.isfinite(start) and math.isfinite(stop)) or stop < start:
            raise RecordingError(self.path, f"invalid span [{start}, {stop}] s for channel {label!r}")
        k0, k1 = int(round(start * rate)), int(round(stop * rate))
        if self.continuous:
            a, b = max(k0, 0), min(k1, info.n_samples)
            if a == k0 and b == k1:
                return self._calibrated(label, a, b)
            out = np.full(k1 - k0, np.nan)
            if b > a:
                out[a - k0 : b - k0] = self._calibrated(label, a, b)
            return out
        return self._read_discontinuous(label, info, k0, k1)

    def recorded(self, label: str, start: float = 0.0, stop: float | None = None) -> np.ndarray:
        """bool [n] aligned with ``read(label, start, stop)``: True where a data record holds
        the sample, False in EDF+D gaps and outside the recording (where ``read`` gives NaN)."""
        info = self.channel(label)
        rate = info.rate
        stop = self.duration if stop is None else float(stop)
        k0, k1 = int(round(float(start) * rate)), int(round(stop * rate))
        mask = np.zeros(max(k1 - k0, 0), bool)
        spr = int(round(rate * self.record_duration))
        rec_k = np.round(self.record_onsets * rate).astype(np.int64)
        for r in np.nonzero((rec_k < k1) & (rec_k + spr > k0))[0]:
            a, b = max(k0, int(rec_k[r])), min(k1, int(rec_k[r]) + spr)
            mask[a - k0 : b - k0] = True
        return mask

    def _read_discontinuous(self, label: str, info: ChannelInfo, k0: int, k1: int) -> np.ndarray:
        rate, spr = info.rate, int(round(info.rate * self.record_duration))
        out = np.full(k1 - k0, np.nan)
        rec_k = np.round(self.record_onsets * rate).astype(np.int64)  # first sample (clock) of each record
        hit = np.nonzero((rec_k < k1) & (rec_k + spr > k0))[0]
        if hit.size == 0:
            return out
        # runs of records that follow each other without a gap are read in one go
        breaks = np.nonzero(np.diff(rec_k[hit]) != spr)[0] + 1
        for run in np.split(hit, breaks):
            first, last = int(run[0]), int(run[-1])
            a, b = max(k0, int(rec_k[first])), min(k1, int(rec_k[last]) + spr)
            src = first * spr + (a - int(rec_k[first]))
            out[a - k0 : b - k0] = self._calibrated(label, src, src + (b - a))
        return out

    def close(self) -> None:
        """Release the file (memory map). Reading after ``close`` raises RecordingError."""
        self._signals = {}
        self._edf = None

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Recording({str(self.path)!r}, {len(self.channels)} channels, {self.duration:g} s, "
                f"{'continuous' if self.continuous else 'discontinuous'})")


def read_edf_annotations(path: str | os.PathLike[str]) -> list[Annotation]:
    """EDF+/BDF+ annotations of a file, also of annotation-only files (Sleep-EDF hypnograms).

    Onsets are seconds from the file's start date/time. Raises RecordingError for bad files.
    """
    p = Path(path)
    if not p.is_file():
        raise RecordingError(p, "no such file" if not p.exists() else "not a regular file")
    raw = _check_header(p, annotations_only=True)
    import edfio

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edf = edfio.read_bdf(p) if raw.is_bdf else edfio.read_edf(p, lazy_load_data=True)
            anns = edf.annotations
    except Exception as exc:  # noqa: BLE001
        raise RecordingError(p, f"unreadable EDF+ annotations: {exc}") from None
    return [Annotation(float(a.onset), float(a.duration or 0.0), str(a.text)) for a in anns]


def open_recording(path: str | os.PathLike[str]) -> Recording:
    """Open an EDF, EDF+C, EDF+D or BDF file for lazy reading; an XDF file (LabRecorder,
    ``.xdf``/``.xdfz`` or magic ``XDF:``) is read by ``psg.xdf.open_xdf`` into an object with the
    same interface.

    Raises:
        RecordingError: missing, empty, truncated, corrupt or non-EDF file (message names it).
    """
    p = Path(path)
    if not p.is_file():
        raise RecordingError(p, "no such file" if not p.exists() else "not a regular file")
    from .xdf import is_xdf

    if is_xdf(p):
        from .xdf import open_xdf

        return open_xdf(p)  # type: ignore[return-value] - the Recording interface
    raw = _check_header(p)
    import edfio

    reader = edfio.read_bdf if raw.is_bdf else edfio.read_edf
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            edf = reader(p, lazy_load_data=True) if not raw.is_bdf else reader(p)
    except Exception as exc:  # noqa: BLE001 - any library failure is a bad file for the user
        raise RecordingError(p, f"corrupt {'BDF' if raw.is_bdf else 'EDF'} header or data: {exc}") from None
    for w in caught:
        log.warning("%s: %s", p, w.message)
    try:
        return Recording(p, edf, raw)
    except RecordingError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise RecordingError(p, f"corrupt recording: {exc}") from None


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def _fmt8(x: float, direction: int) -> float:
    """A value representable in an 8-character EDF field, rounded outward (direction −1/+1)."""
    for digits in range(8, 0, -1):
        s = f"{x:.{digits}g}"
        if "e" in s:
            continue
        if len(s) <= 8:
            v = float(s)
            if direction * (v - x) >= 0:
                return v
            step = 10.0 ** (math.floor(math.log10(abs(v))) - digits + 1) if v else 10.0 ** -(digits)
            v2 = float(f"{v + direction * step:.{digits}g}")
            if len(f"{v2:.{digits}g}") <= 8:
                return v2
    raise ValueError(f"value {x!r} does not fit an 8-character EDF header field")


def _physical_range(data: np.ndarray) -> tuple[float, float]:
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return -1.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    span = hi - lo
    margin = max(0.01 * span, 1e-3 * max(abs(lo), abs(hi)), 1e-3)
    return _fmt8(lo - margin, -1), _fmt8(hi + margin, +1)


def _record_length(rates: Iterable[float]) -> float:
    """Shortest record length (s, ≥1 preferred) that holds a whole number of samples of every rate."""
    denoms = 1
    for r in rates:
        fr = Fraction(r).limit_denominator(10_000)
        if abs(float(fr) - r) > 1e-9 * r:
            raise ValueError(f"sampling rate {r!r} Hz is not a simple fraction")
        denoms = denoms * fr.denominator // math.gcd(denoms, fr.denominator)
    return float(denoms)


def _edf_text(s: str, what: str, path: Path) -> str:
    try:
        s.encode("ascii")
    except UnicodeEncodeError:
        raise RecordingError(path, f"{what} {s!r} is not ASCII, EDF headers are ASCII only") from None
    return s


def write_edf(
    path: str | os.PathLike[str],
    signals: Sequence[Signal],
    annotations: Iterable[Annotation | tuple[float, float, str]] = (),
    start: dt.datetime | None = None,
    patient: str = "X",
) -> Path:
    """Write an EDF+C file with an annotations channel; returns the path.

    Each signal keeps its rate; the data record length is the shortest whole number of seconds
    in which every rate has a whole number of samples (1 s for integer rates). Physical min/max
    come from the data (1 % margin), digital range is 16-bit; NaN is written as the physical
    minimum. Signals shorter than the longest are padded with their last value to whole
    records (logged). The file is written under a temporary name and renamed into place.

    Args:
        path: output file.
        signals: the signals, physical values in ``unit`` (voltages as written, e.g. "uV").
        annotations: ``Annotation`` or ``(onset s, duration s, text)`` tuples.
        start: recording start date/time (default 1 Jan 2000 00:00:00, an anonymous date).
        patient: patient code (spaces become underscores).
    """
    import edfio

    out = Path(path)
    annotations = list(annotations)
    if not signals and not annotations:
        raise RecordingError(out, "no signals and no annotations to write")
    rates = [float(s.rate) for s in signals]
    try:
        # no signals: an annotation-only EDF+ (like Sleep-EDF's *-Hypnogram.edf)
        rec_len = _record_length(rates) if rates else 0.0
    except ValueError as exc:
        raise RecordingError(out, str(exc)) from None
    spr = [int(round(r * rec_len)) for r in rates]
    durations = [len(s.data) / r for s, r in zip(signals, rates)]
    n_rec = max(1, math.ceil(max(durations) / rec_len - 1e-9)) if signals else 0
    edf_signals = []
    for s, n_per in zip(signals, spr):
        data = np.asarray(s.data, dtype=np.float64).ravel()
        want = n_rec * n_per
        if data.size != want:
            if data.size == 0:
                raise RecordingError(out, f"signal {s.label!r} is empty")
            if want - data.size > n_per:
                log.warning("%s: signal %r is %.1f s shorter than the longest; padded with its last value",
                            out, s.label, (want - data.size) / s.rate)
            data = np.concatenate([data, np.full(want - data.size, data[-1])]) if data.size < want else data[:want]
        pmin, pmax = _physical_range(data)
        data = np.where(np.isfinite(data), data, pmin)
        edf_signals.append(edfio.EdfSignal(
            data, float(s.rate), label=_edf_text(s.label, "label", out),
            transducer_type=_edf_text(s.transducer, "transducer", out),
            physical_dimension=_edf_text(s.unit, "unit", out), physical_range=(pmin, pmax),
            prefiltering=_edf_text(s.prefilter, "prefilter", out)))
    anns = []
    for a in annotations:
        onset, duration, text = (a.onset, a.duration, a.text) if isinstance(a, Annotation) else a
        anns.append(edfio.EdfAnnotation(float(onset), float(duration) if duration else None,
                                        _edf_text(str(text), "annotation", out)))
    start = start or dt.datetime(2000, 1, 1)
    code = re.sub(r"\s+", "_", patient.strip()) or "X"
    try:
        edf = edfio.Edf(
            edf_signals,
            patient=edfio.Patient(code=_edf_text(code, "patient", out)),
            recording=edfio.Recording(startdate=start.date()),
            starttime=start.time().replace(microsecond=0),
            **({"data_record_duration": rec_len} if signals else {}),
            annotations=anns,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
        try:
            edf.write(tmp)
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except RecordingError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise RecordingError(out, f"cannot write EDF: {exc}") from None
    return out
