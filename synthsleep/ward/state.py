"""``WardState``: the ward's per-bed snapshot, one job, no web framework and no LSL.

The monitor calls :meth:`WardState.observe` with a bed's events each time it writes them (once
per scored epoch, and when a timer raises an alert). The web server reads :meth:`snapshot` (a
JSON-able dict) from another thread and watches :attr:`WardState.version` for changes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..events import STAGE_NAMES, UNKNOWN_STAGE, Event
from ..psg.epoch import EPOCH_SECONDS, Quality

#: how many respiratory events each bed keeps for the page (a whole night at a high AHI)
MAX_RESP_EVENTS = 2000


class _BedView:
    """What the page shows for one bed (mutated under the WardState lock)."""

    def __init__(self, bed: str) -> None:
        self.bed = bed
        self.first_epoch: int | None = None
        self.origin: float | None = None  # onset of epoch 0 on the stream clock
        self.hypnogram: list[int | None] = []  # stage code per epoch from first_epoch; None = no epoch
        self.last: dict[str, Any] | None = None  # last stage event's epoch, onset, stage, prob
        self.last_time: float | None = None  # wall clock (s since 1970) of the last scored epoch
        self.resp_events: list[dict[str, Any]] = []
        self.ahi: float | None = None
        self.alerts: list[str] = []
        self.sensors: list[str] = []
        self.lost: dict[str, str] = {}  # modality -> reason
        self.quality: dict[str, int] = {}  # modality -> Quality bits of the last epoch
        self.connected: bool | None = None  # its streams are attached (None: nobody said)

    def to_dict(self) -> dict[str, Any]:
        counts = {k: sum(1 for e in self.resp_events if e["type"] == k) for k in ("apnea", "hypopnea")}
        return {
            "bed": self.bed,
            "connected": self.connected,
            "epoch": self.last["epoch"] if self.last else None,
            "stage": self.last["stage"] if self.last else None,
            "confidence": self.last["confidence"] if self.last else None,
            "prob": self.last["prob"] if self.last else None,
            "elapsed": (self.last["onset"] + EPOCH_SECONDS - self.origin) if self.last and self.origin is not None
            else None,
            "epoch_time": self.last["time"] if self.last else None,  # the epoch's onset, ISO 8601 UTC
            "last_epoch_time": self.last_time,
            "first_epoch": self.first_epoch,
            "hypnogram": list(self.hypnogram),
            "resp_events": list(self.resp_events),
            "counts": counts,
            "ahi": self.ahi,
            "alerts": list(self.alerts),
            # a sensor is ok (present; its reason may still say "clipped") or lost (with why)
            "sensors": [{"modality": m, "ok": m not in self.lost,
                         "reason": self.lost.get(m) or Quality.describe(self.quality.get(m, 0))}
                        for m in self.sensors],
        }


class WardState:
    """Thread-safe snapshot of every bed of a ward, for the web page.

    Args:
        beds: bed ids, in display order (every bed is shown, even before its first epoch).
        stage_names: stage names in model output order (codes 0..4).
        clock: wall clock (seconds since 1970) used to stamp each bed's last epoch.
    """

    def __init__(self, beds: Sequence[str], stage_names: Sequence[str] = STAGE_NAMES,
                 clock: Callable[[], float] = time.time) -> None:
        self.stage_names = tuple(stage_names)
        self._clock = clock
        self._beds = {str(b): _BedView(str(b)) for b in beds}
        self._version = 0
        self._lock = threading.Lock()

    @property
    def version(self) -> int:
        """Increases by one with every change."""
        with self._lock:
            return self._version

    def observe(self, bed: str, events: Sequence[Event], session: Any) -> None:
        """The monitor's hook: ``bed``'s freshly written ``events`` and its ``bed_session.BedSession``
        (read for the running AHI, the active alerts and the sensors the bed records)."""
        det = session.detector
        sensors = [m for m in det.modalities if det.recorded is None or m in det.recorded]
        # AHI is undefined (n/a, not 0) until there was predicted sleep with a respiratory sensor
        ahi = det.ahi if det.resp_sleep_seconds > 0 else None
        self.update(bed, events, ahi=ahi, alerts=session.alerts.active, sensors=sensors,
                    quality=session.last_quality)

    def update(self, bed: str, events: Sequence[Event], ahi: float | None = None,
               alerts: Sequence[str] = (), sensors: Sequence[str] = (),
               quality: Mapping[str, int] | None = None) -> None:
        """Apply one batch of ``bed``'s events and its current AHI, alerts, recorded sensors and
        the ``Quality`` bits of its last epoch per modality."""
        with self._lock:
            view = self._beds.get(str(bed))
            if view is None:
                view = self._beds[str(bed)] = _BedView(str(bed))
            for ev in events:
                self._apply(view, ev)
            view.ahi = None if ahi is None else float(ahi)
            view.alerts = list(alerts)
            view.sensors = list(sensors)
            if quality is not None:
                view.quality = dict(quality)
            self._version += 1

    def set_connected(self, bed: str, connected: bool) -> None:
        """Whether ``bed``'s streams are attached (a change counts as a change of the snapshot)."""
        with self._lock:
            view = self._beds.get(str(bed))
            if view is None:
                view = self._beds[str(bed)] = _BedView(str(bed))
            if view.connected != bool(connected):
                view.connected = bool(connected)
                self._version += 1

    def _apply(self, view: _BedView, ev: Event) -> None:
        if ev.type == "stage":
            code = int(ev.value.get("code", -1))
            prob = ev.value.get("prob") or {}
            stage = ev.value.get("stage", UNKNOWN_STAGE)
            idx = ev.epoch_index
            if view.first_epoch is None:
                view.first_epoch = idx
                view.origin = ev.onset - idx * EPOCH_SECONDS
            pos = idx - view.first_epoch
            if pos >= len(view.hypnogram):
                view.hypnogram.extend([None] * (pos + 1 - len(view.hypnogram)))
            view.hypnogram[pos] = code
            confidence = ev.value.get("confidence", float(prob.get(stage, 0.0))) if code >= 0 else None
            view.last = {"epoch": idx, "onset": ev.onset, "stage": stage, "confidence": confidence,
                         "prob": {n: float(prob.get(n, 0.0)) for n in self.stage_names}, "time": ev.time}
            view.last_time = self._clock()
        elif ev.type in ("apnea", "hypopnea"):
            view.resp_events.append({"type": ev.type, "onset": ev.onset - (view.origin or 0.0),
                                     "duration": ev.duration, "epoch": ev.value.get("first_epoch")})
            del view.resp_events[:-MAX_RESP_EVENTS]
        elif ev.type == "signal_lost":
            view.lost[ev.value["modality"]] = ev.value.get("reason", "absent")
        elif ev.type == "signal_restored":
            view.lost.pop(ev.value["modality"], None)

    def snapshot(self) -> dict[str, Any]:
        """``{"version", "now" (wall clock, s), "stages", "epoch_seconds", "beds": [...]}`` (JSON-able)."""
        with self._lock:
            return {"version": self._version, "now": self._clock(), "stages": list(self.stage_names),
                    "epoch_seconds": EPOCH_SECONDS, "beds": [v.to_dict() for v in self._beds.values()]}
