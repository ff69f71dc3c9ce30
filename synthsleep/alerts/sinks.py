"""Where events go: an append-only JSONL file and one LSL marker stream per bed.

Every sink takes the events of one epoch as a batch (``write``), so the JSONL file is flushed
and fsync'ed once per epoch. Live path: no torch.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from synthsleep.alerts.events import Event

log = logging.getLogger(__name__)

DEFAULT_MARKER_PREFIX = "synthsleep-events"


class SinkError(OSError):
    """A sink that cannot be opened or written (names the path / stream)."""


@runtime_checkable
class Sink(Protocol):
    """Anything that records batches of events."""

    def write(self, events: Sequence[Event]) -> None:
        """Record the events of one epoch (possibly empty) durably before returning."""

    def close(self) -> None:
        """Release files / streams; further writes are an error."""


class JsonlSink:
    """Append-only JSON Lines file, one event per line, fsync'ed per batch.

    On open it reads what the file already holds, so a monitor resuming a session can ask
    :meth:`last_epoch_index` (per bed and session) and skip epochs already recorded. A torn last line (a crash during
    a write) is cut off, with a warning, before anything is appended.

    Args:
        path: the ``.jsonl`` file (created with its parent folder when missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._last: dict[tuple[str, str], int] = {}  # (bed, session) -> highest epoch_index
        self._counts: dict[str, int] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # created owner-only (0600), like the state files: events are patient data
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._f = os.fdopen(fd, "a", encoding="utf-8")
        except OSError as e:
            raise SinkError(f"cannot open event file {self.path}: {e.strerror or e}") from None
        try:
            self._lock()
            self._scan_and_repair()
        except BaseException:
            self._f.close()
            raise
        log.info("event file %s opened (%d beds already recorded)", self.path, len(self.last_epoch_indices))

    def _lock(self) -> None:
        """Exclusive advisory lock: two monitors appending to one file would interleave events."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        try:
            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SinkError(f"event file {self.path} is in use by another writer (locked): is another "
                            "monitor running with the same --events?") from None

    def _scan_and_repair(self) -> None:
        if not self.path.exists():
            return
        good_bytes = 0
        with self.path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.endswith(b"\n"):
                    log.warning("%s: torn last line %d (%d bytes) from an interrupted write; "
                                "cutting it off", self.path, lineno, len(raw))
                    break
                text = raw.decode("utf-8", errors="replace").strip()
                if text:
                    try:
                        ev = json.loads(text)
                        bed, idx = str(ev["bed"]), int(ev["epoch_index"])
                        key = (bed, str(ev.get("session", "")))
                    except (ValueError, KeyError, TypeError, AttributeError) as e:
                        raise SinkError(f"{self.path}:{lineno}: not an event line ({e}); refusing to "
                                        f"append to a file that is not a synthsleep event log") from None
                    self._last[key] = max(idx, self._last.get(key, idx))
                    self._counts[bed] = self._counts.get(bed, 0) + 1
                good_bytes += len(raw)
        if good_bytes < self.path.stat().st_size:
            with self.path.open("r+b") as f:
                f.truncate(good_bytes)
                os.fsync(f.fileno())

    def last_epoch_index(self, bed: str | int, session: str | None = None) -> int | None:
        """Highest epoch_index recorded for ``bed`` in ``session`` (None: in any session);
        None when there is no such event yet."""
        bed = str(bed)
        found = [i for (b, s), i in self._last.items() if b == bed and (session is None or s == session)]
        return max(found) if found else None

    @property
    def last_epoch_indices(self) -> dict[str, int]:
        """bed -> highest epoch_index recorded in any session (file at open, plus writes)."""
        out: dict[str, int] = {}
        for (bed, _), idx in self._last.items():
            out[bed] = max(idx, out.get(bed, idx))
        return out

    def event_count(self, bed: str | int) -> int:
        return self._counts.get(str(bed), 0)

    def write(self, events: Sequence[Event]) -> None:
        """Append the batch, flush and fsync (durable when this returns)."""
        if not events:
            return
        data = "".join(ev.to_json() + "\n" for ev in events)
        try:
            self._f.write(data)
            self._f.flush()
            os.fsync(self._f.fileno())
        except ValueError:
            raise SinkError(f"event file {self.path} is closed") from None
        except OSError as e:
            raise SinkError(f"cannot write event file {self.path}: {e.strerror or e}") from None
        for ev in events:
            key = (ev.bed, ev.session)
            self._last[key] = max(ev.epoch_index, self._last.get(key, ev.epoch_index))
            self._counts[ev.bed] = self._counts.get(ev.bed, 0) + 1

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_events(path: str | Path) -> list[Event]:
    """All complete events of a JSONL event file (a torn last line is ignored)."""
    out: list[Event] = []
    with Path(path).open("rb") as f:
        for raw in f:
            if raw.endswith(b"\n") and raw.strip():
                out.append(Event.from_json(raw.decode("utf-8")))
    return out


def marker_stream_name(bed: str | int, prefix: str = DEFAULT_MARKER_PREFIX) -> str:
    """LSL stream name of a bed's marker outlet, e.g. ``synthsleep-events-1``."""
    return f"{prefix}-{bed}"


class LslMarkerSink:
    """One LSL marker outlet per bed: type ``Markers``, 1 string channel, irregular rate.

    Each event is pushed as one marker whose string is the event's JSON. Outlets are created on
    the first event of a bed, or ahead of time with :meth:`open_bed` so that consumers can
    resolve the stream before anything happens. Stream name: :func:`marker_stream_name`;
    source_id: ``synthsleep:<name>`` (stable, so consumers reconnect after a restart).
    """

    def __init__(self, prefix: str = DEFAULT_MARKER_PREFIX, beds: Iterable[str | int] = ()) -> None:
        import pylsl  # imported here: liblsl loads only when markers are wanted

        self._pylsl = pylsl
        self.prefix = prefix
        self._outlets: dict[str, pylsl.StreamOutlet] = {}
        for bed in beds:
            self.open_bed(bed)

    def open_bed(self, bed: str | int) -> str:
        """Create the bed's outlet if needed; return its stream name."""
        bed = str(bed)
        name = marker_stream_name(bed, self.prefix)
        if bed not in self._outlets:
            pylsl = self._pylsl
            info = pylsl.StreamInfo(name=name, type="Markers", channel_count=1,
                                    nominal_srate=pylsl.IRREGULAR_RATE,
                                    channel_format=pylsl.cf_string, source_id=f"synthsleep:{name}")
            info.desc().append_child_value("bed", bed)
            info.desc().append_child_value("format", "synthsleep event JSON")
            self._outlets[bed] = pylsl.StreamOutlet(info)
            log.info("LSL marker outlet %s open", name)
        return name

    def write(self, events: Sequence[Event]) -> None:
        for ev in events:
            if ev.bed not in self._outlets:
                self.open_bed(ev.bed)
            self._outlets[ev.bed].push_sample([ev.to_json()])

    def close(self) -> None:
        self._outlets.clear()  # dropping the outlet objects closes the streams
