"""One bed's scoring session: step outputs → events → alerts, with resumable state.

Shared by the offline ``score`` command and the live ``monitor`` so both produce the same events
from the same epochs. The model step itself is run by the caller (the monitor batches beds), this
class only keeps the bed's recurrent model state and turns each step's outputs into events.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .alerts.rules import AlertEngine, Rule
from .events import Event, EventDetector, iso_utc
from .psg.epoch import STAGES, Epoch

log = logging.getLogger(__name__)


@dataclass
class ScoredEpoch:
    """The model's outputs for one epoch of one bed (what the hypnogram CSV holds)."""

    index: int
    onset: float
    stage: int  # 0..4, -1 when not scored (no usable EEG/EOG: see EventDetector)
    stage_prob: np.ndarray  # float32 [5], after the stage filter (what ``stage`` was picked from)
    apnea_prob: float
    hypopnea_prob: float
    present: np.ndarray  # bool [M]
    quality: np.ndarray  # uint8 [M]
    time: str | None = None  # onset as ISO 8601 UTC (None: no clock known)


class BedSession:
    """Event and alert state of one bed, plus its recurrent model state.

    Args:
        bed: bed identifier.
        modalities: the artifact's modalities (row order of epochs).
        model_state: the runtime's per-bed state (batch 1), from ``runtime.new_state(1)``.
        model_hash: the artifact hash, copied into every event.
        thresholds: apnea/hypopnea decision thresholds.
        rules: alert rules (``alerts.rules.load_rules``).
        recorded: modalities the bed has a channel for (``EventDetector``'s ``recorded``).
        stage_filter: the detector picks stages after the causal stage filter (``EventDetector``).
    """

    def __init__(self, bed: str, modalities: Sequence[str], model_state: Any, model_hash: str = "",
                 thresholds: Mapping[str, float] | None = None, rules: Sequence[Rule] = (),
                 recorded: Sequence[str] | None = None, stage_filter: bool = True) -> None:
        self.bed = str(bed)
        self.model_state = model_state
        self.detector = EventDetector(self.bed, modalities, model_hash, thresholds, recorded=recorded,
                                      stage_filter=stage_filter)
        self.alerts = AlertEngine(self.bed, rules, model_hash)
        self.scored: list[ScoredEpoch] = []
        self.keep_history = True
        #: seconds since 1970 (UTC) at onset 0 of this bed's clock; events get a ``time`` from it
        self.time_origin: float | None = None
        #: ``Quality`` bits per modality of the last epoch handled
        self.last_quality: dict[str, int] = {}

    def clock_time(self, onset: float) -> str | None:
        """``onset`` (s, the bed's clock) as ISO 8601 UTC, or None when no clock is known."""
        return None if self.time_origin is None else iso_utc(self.time_origin + onset)

    def stamp(self, events: list[Event]) -> list[Event]:
        """The events with their ``time`` filled in from ``time_origin``."""
        if self.time_origin is None:
            return events
        return [replace(e, time=self.clock_time(e.onset)) for e in events]

    def handle(self, epoch: Epoch, stage_prob: np.ndarray, apnea_prob: float, hypopnea_prob: float,
               now: float | None = None) -> list[Event]:
        """Turn one epoch's step outputs into events (stage, changes, episodes, alerts)."""
        self.last_quality = {m: int(q) for m, q in zip(epoch.modalities, epoch.quality)}
        events = self.detector.update(epoch.index, epoch.start, stage_prob, apnea_prob, hypopnea_prob,
                                      epoch.present, epoch.quality)
        if self.detector.summary is not None:
            events += self.alerts.update(self.detector.summary, now)
        if self.keep_history:
            summary = self.detector.summary
            code = STAGES.index(summary.stage) if summary is not None and summary.scored else -1
            self.scored.append(ScoredEpoch(
                epoch.index, epoch.start, code,
                np.asarray(self.detector.stage_prob, np.float32), float(apnea_prob), float(hypopnea_prob),
                epoch.present.copy(), epoch.quality.copy(), self.clock_time(epoch.start)))
        return self.stamp(events)

    def finish(self) -> list[Event]:
        """End of the night: close running apnea/hypopnea episodes."""
        return self.stamp(self.detector.finish())

    def state_dict(self) -> dict[str, Any]:
        return {"detector": self.detector.state_dict(), "alerts": self.alerts.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.detector.load_state_dict(state["detector"])
        self.alerts.load_state_dict(state["alerts"])


def write_hypnogram_csv(path, scored: Sequence[ScoredEpoch]) -> None:
    """``epoch,onset,stage,p_W,p_N1,p_N2,p_N3,p_REM,apnea_prob,hypopnea_prob,scored,time`` per epoch
    (``time``: the onset as ISO 8601 UTC, empty when no clock is known).

    ``stage`` uses YASA's letters (W, N1, N2, N3, R; ``Uns`` when not scored), so
    ``yasa.Hypnogram(df.stage.replace({'R': 'REM'}))`` or ``pandas.read_csv`` load it directly.
    """
    letters = {0: "W", 1: "N1", 2: "N2", 3: "N3", 4: "R", -1: "Uns"}
    with open(path, "w", encoding="utf-8") as f:
        f.write("epoch,onset,stage," + ",".join(f"p_{s}" for s in STAGES) + ",apnea_prob,hypopnea_prob,scored,time\n")
        for s in scored:
            probs = ",".join(f"{p:.5f}" for p in s.stage_prob)
            f.write(f"{s.index},{s.onset:.3f},{letters[s.stage]},{probs},{s.apnea_prob:.5f},"
                    f"{s.hypopnea_prob:.5f},{int(s.stage >= 0)},{s.time or ''}\n")


BUNDLED_MODEL = Path(__file__).resolve().parent / "assets" / "model.onnx"


def resolve_model_path(path: str | None) -> str:
    """The artifact to load: ``path`` if given, else the bundled demo model (clear error if absent)."""
    p = Path(path) if path else BUNDLED_MODEL
    if not p.is_file():
        hint = "" if path else " (the bundled model is built by 'make model')"
        raise FileNotFoundError(f"model artifact {p} not found{hint}")
    return str(p)
