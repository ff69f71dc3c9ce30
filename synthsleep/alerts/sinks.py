"""Where events go: an append-only JSONL file and one LSL marker stream for all beds.

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

from synthsleep.events import Event

log = logging.getLogger(__name__)

#: name of the monitor's one LSL marker stream (all beds; the bed is in each marker's JSON)
DEFAULT_MARKER_STREAM = "synthsleep-events"


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


def marker_source_id(beds: Iterable[str | int], shard: tuple[int, int] | None = None) -> str:
    """Source_id of a monitor's marker stream: ``synthsleep:events:<ward>[:shard<i>of<n>]`` with
    ``<ward>`` the first 10 hex digits of the SHA-256 of its bed ids (in order, comma-joined):
    stable across restarts (consumers reconnect), distinct for distinct wards and shards."""
    import hashlib

    ward = hashlib.sha256(",".join(str(b) for b in beds).encode("utf-8")).hexdigest()[:10]
    return f"synthsleep:events:{ward}" + (f":shard{shard[0]}of{shard[1]}" if shard else "")


class LslMarkerSink:
    """ONE LSL marker outlet shared by every bed of a monitor: type ``Markers``, 1 string channel,
    irregular rate, stream name ``synthsleep-events`` (``name``).

    Each event is pushed as one marker whose string is the event's JSON; the JSON's ``bed`` field
    says whose it is (a consumer filters on it). One outlet for a whole ward, not one per bed:
    every liblsl outlet costs threads and a socket, and 25 per-bed outlets already saturated two
    cores (issue 11). The outlet is opened at construction, so consumers can resolve it before
    anything happens. Source_id: :func:`marker_source_id` (stable for the same beds, so consumers
    reconnect after a restart; the shards of one ward and other wards publish under the same name,
    told apart by source_id). The description holds
    ``format`` ("synthsleep event JSON"), ``beds`` (comma-separated ids, as given) and ``shard``.

    Args:
        name: the stream name.
        beds: the beds whose events go out here (description only; any bed's events are pushed).
        shard: ``(i, n)`` when this monitor is shard i (1-based) of n.
    """

    def __init__(self, name: str = DEFAULT_MARKER_STREAM, beds: Iterable[str | int] = (),
                 shard: tuple[int, int] | None = None) -> None:
        import pylsl  # imported here: liblsl loads only when markers are wanted

        self.name = name
        self.beds = [str(b) for b in beds]
        self.source_id = marker_source_id(self.beds, shard)
        info = pylsl.StreamInfo(name=name, type="Markers", channel_count=1, nominal_srate=pylsl.IRREGULAR_RATE,
                                channel_format=pylsl.cf_string, source_id=self.source_id)
        info.desc().append_child_value("format", "synthsleep event JSON")
        info.desc().append_child_value("beds", ",".join(self.beds))
        info.desc().append_child_value("shard", f"{shard[0]}/{shard[1]}" if shard else "")
        self._outlet: pylsl.StreamOutlet | None = pylsl.StreamOutlet(info)
        log.info("LSL marker outlet %s (%s) open for %d bed(s)", name, self.source_id, len(self.beds))

    def write(self, events: Sequence[Event]) -> None:
        """Push the events (one marker each, stamped now on the LSL clock)."""
        if self._outlet is None:
            raise SinkError(f"LSL marker outlet {self.name} is closed")
        for ev in events:
            self._outlet.push_sample([ev.to_json()])

    def close(self) -> None:
        self._outlet = None  # dropping the outlet object closes the stream
