"""Events from scored epochs: stage, stage changes, apnea/hypopnea episodes, signal loss.

One :class:`EventDetector` per bed is fed one scored epoch at a time (the outputs of one step)
and returns the :class:`Event` objects that epoch produced. Its whole state is a JSON-able dict
(:meth:`EventDetector.state_dict`), saved by the monitor after every epoch so that a restarted
monitor resumes without doubling or losing events.

Conventions (all times in seconds on the bed's stream clock):

* ``Event.epoch_index`` is the index of the epoch whose processing *produced* the event, so a
  sink can tell exactly which epochs are already recorded. For an apnea/hypopnea episode (emitted
  when it ends) that is the first negative epoch after it; ``onset``/``duration`` describe the
  episode itself and ``value`` holds its first/last epoch index.
* The stage of an epoch is the most probable one after the causal stage filter
  (``psg.stage_filter.StageFilter``: the model's probabilities weighed with how stages follow each
  other), fed every epoch with a usable EEG/EOG; the ``stage`` event's ``prob`` holds the filtered
  probabilities, ``model_prob`` the model's own.
* An epoch is *scored* when the model is confident enough (its own top stage probability reaches the
  artifact's ``stage_confidence`` threshold, 0 when it has none) and an EEG-class modality is
  present: EEG, or EOG as the fallback (EOG
  carries the slow waves, eye movements and alpha that stage sleep; EMG, ECG or respiratory
  channels alone do not stage it). A detector whose modalities include neither scores an epoch
  when any modality is present. Unscored epochs produce a ``stage`` event with stage
  ``"unknown"`` (code -1) and a ``reason``, end running episodes, and count neither as sleep
  nor as events.
* Apnea/hypopnea are scored only in scored epochs where a respiratory sensor is present, no
  respiratory channel is partial (present but with a GAP or NaN stretch) and no airflow/effort
  channel the bed records (airflow, thorax, abdomen) is absent: a respiratory event is never
  read from a missing or half-missing channel (12 s of lost airflow looks like an apnea).
  SpO2 absent alone does not stop it (it only supports hypopneas).
* Running AHI = (apnea + hypopnea episodes that start in a predicted sleep epoch) per hour of
  predicted sleep (every scored epoch whose stage is not W). An episode counts when it starts.

This module is on the live path: numpy and the standard library only (no torch).
Why one module (~460 lines): the detector's rules (stage, episodes, gating, signal loss) share one
per-bed state that must be saved and restored as a whole; ``Event`` is their output format.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from synthsleep.psg.clinical import events_per_hour
from synthsleep.psg.epoch import EPOCH_SECONDS, STAGES, Quality
from synthsleep.psg.montage import RESPIRATORY_MODALITIES
from synthsleep.psg.stage_filter import StageFilter

#: modalities that can stage sleep, in order of preference (EOG is EEG's fallback)
STAGE_MODALITIES: tuple[str, ...] = ("eeg", "eog")
#: the channels apneas are read from: while one the bed records is absent, none is scored
AIRWAY_MODALITIES: tuple[str, ...] = ("airflow", "thorax", "abdomen")
#: a present respiratory channel with these bits is partial: no apnea/hypopnea from it
_PARTIAL_BITS = int(Quality.GAP | Quality.NONFINITE)

log = logging.getLogger(__name__)

EVENT_TYPES: tuple[str, ...] = (
    "stage", "stage_change", "apnea", "hypopnea",
    "alert_raised", "alert_cleared", "signal_lost", "signal_restored", "bed_fault",
)
#: Stage names in model output order.
STAGE_NAMES: tuple[str, ...] = STAGES
UNKNOWN_STAGE = "unknown"
DEFAULT_THRESHOLDS: dict[str, float] = {"apnea": 0.5, "hypopnea": 0.5}
STATE_VERSION = 2  # 2: the stage filter's belief


class EventError(ValueError):
    """Bad input to the event detector (wrong shape, non-finite probability, unknown modality)."""


@dataclass(frozen=True)
class Event:
    """One event of one bed (the Event contract).

    Attributes:
        bed: bed identifier (a string; ints are converted).
        type: one of :data:`EVENT_TYPES`.
        onset: start, seconds on the bed's stream clock.
        duration: seconds (0 for instantaneous events).
        value: JSON-able payload, depends on ``type``.
        epoch_index: index of the epoch whose processing produced the event.
        model_hash: content hash of the artifact that scored the epoch.
        session: the monitoring session that wrote it (empty offline). An event is identified
            by (bed, session, epoch_index): a monitor that starts without usable state starts
            a new session, so its epoch indices never collide with an earlier night's.
        time: ``onset`` as an ISO 8601 UTC date-time (``2026-11-29T22:10:00.000Z``): live, the
            stream clock mapped to the system clock; offline, the recording's start date plus
            ``onset``. None when no clock is known.
    """

    bed: str
    type: str
    onset: float
    duration: float
    value: Any
    epoch_index: int
    model_hash: str
    session: str = ""
    time: str | None = None

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise EventError(f"event type {self.type!r} unknown; known: {', '.join(EVENT_TYPES)}")
        object.__setattr__(self, "bed", str(self.bed))
        object.__setattr__(self, "onset", float(self.onset))
        object.__setattr__(self, "duration", float(self.duration))
        object.__setattr__(self, "epoch_index", int(self.epoch_index))
        object.__setattr__(self, "session", str(self.session))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """One-line JSON (keys in contract order, no NaN allowed)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Event:
        missing = [k for k in ("bed", "type", "onset", "duration", "value", "epoch_index", "model_hash")
                   if k not in d]
        if missing:
            raise EventError(f"event {dict(d)!r} lacks field(s) {missing}")
        return cls(bed=d["bed"], type=d["type"], onset=d["onset"], duration=d["duration"],
                   value=d["value"], epoch_index=d["epoch_index"], model_hash=d["model_hash"],
                   session=d.get("session", ""), time=d.get("time"))

    @classmethod
    def from_json(cls, line: str) -> Event:
        return cls.from_dict(json.loads(line))


def iso_utc(seconds: float) -> str:
    """ISO 8601 UTC date-time, milliseconds, ``Z`` suffix, of ``seconds`` since 1970."""
    stamp = dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@dataclass
class EpochSummary:
    """What the alert rules need to know about the epoch just processed (see ``rules``).

    Attributes:
        epoch_index, onset: the epoch (onset in s, stream clock); ``end = onset + epoch_seconds``.
        stage: stage name or ``"unknown"``; scored: at least one modality present.
        apnea, hypopnea: the epoch is positive (probability >= threshold, and scored).
        apnea_prob, hypopnea_prob: the raw probabilities.
        ahi: running AHI (events/h of predicted sleep with a respiratory sensor; None: no such
            sleep yet, n/a);
        sleep_seconds: predicted sleep so far.
        lost_since: modality -> onset (s) of the first absent epoch of a running loss.
        resp_scored: a respiratory sensor was present, so apnea/hypopnea were scored.
    """

    epoch_index: int
    onset: float
    end: float
    stage: str
    scored: bool
    apnea: bool
    hypopnea: bool
    apnea_prob: float
    hypopnea_prob: float
    ahi: float | None
    sleep_seconds: float
    lost_since: dict[str, float] = field(default_factory=dict)
    resp_scored: bool = True


@dataclass
class _Episode:
    first_index: int
    last_index: int
    onset: float
    end: float
    peak: float


def _as_mask(name: str, values: Mapping[str, Any] | Sequence[Any] | np.ndarray | None,
             modalities: Sequence[str]) -> dict[str, Any] | None:
    """Align a dict (by modality) or a sequence (in ``modalities`` order) to a dict."""
    if values is None:
        return None
    if isinstance(values, Mapping):
        unknown = sorted(set(values) - set(modalities))
        if unknown:
            raise EventError(f"{name}: unknown modality {unknown}; this bed has {list(modalities)}")
        return dict(values)
    seq = list(np.asarray(values).reshape(-1).tolist())
    if len(seq) != len(modalities):
        raise EventError(f"{name}: {len(seq)} values for {len(modalities)} modalities {list(modalities)}")
    return dict(zip(modalities, seq))


class EventDetector:
    """Turns one bed's per-epoch step outputs into events.

    Args:
        bed: bed identifier.
        modalities: modality names in the order of ``present``/``quality`` arrays.
        model_hash: the artifact's content hash, copied into every event.
        thresholds: default ``{"apnea": p, "hypopnea": p}`` decision thresholds.
        epoch_seconds: epoch length in seconds.
        stage_names: names of the stage probabilities, in output order.
        recorded: the modalities this bed has a sensor for; only those can be "lost" (None = all).
            A montage without, say, SpO2 gets no signal_lost events or alerts for it. Settable
            later (``detector.recorded = ...``) when the channels are known only on connection.
        stage_filter: pick the stage after the causal stage filter (default; False: the model's
            most probable stage, for comparison).
    """

    def __init__(self, bed: str | int, modalities: Sequence[str], model_hash: str = "",
                 thresholds: Mapping[str, float] | None = None, epoch_seconds: float = EPOCH_SECONDS,
                 stage_names: Sequence[str] = STAGE_NAMES, recorded: Sequence[str] | None = None,
                 stage_filter: bool = True) -> None:
        self.bed = str(bed)
        self.modalities = tuple(modalities)
        self.recorded = None if recorded is None else frozenset(recorded)
        # apnea/hypopnea are scored only while one of these is present (none: always)
        self.resp_modalities = tuple(m for m in self.modalities if m in RESPIRATORY_MODALITIES)
        # a stage is scored only while one of these is present (none: any modality)
        self.stage_modalities = tuple(m for m in self.modalities if m in STAGE_MODALITIES)
        self.model_hash = model_hash
        self.thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
        self.epoch_seconds = float(epoch_seconds)
        self.stage_names = tuple(stage_names)
        self.stage_filter = StageFilter() if stage_filter else None
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new night)."""
        self.last_index: int | None = None
        self.last_stage: str | None = None  # last *known* stage
        self.episodes: dict[str, _Episode | None] = {"apnea": None, "hypopnea": None}
        self.n_events: dict[str, int] = {"apnea": 0, "hypopnea": 0}  # counted for AHI
        self.sleep_seconds = 0.0
        self.resp_sleep_seconds = 0.0  # predicted sleep with a respiratory sensor (AHI's hours)
        self.scored_seconds = 0.0
        self.lost_since: dict[str, float] = {}
        self.summary: EpochSummary | None = None
        #: the last epoch's stage probabilities the stage was picked from (after the filter)
        self.stage_prob: np.ndarray | None = None
        if self.stage_filter is not None:
            self.stage_filter.reset()

    # ------------------------------------------------------------------ derived values
    @property
    def ahi(self) -> float | None:
        """Running AHI, events per hour of predicted sleep during which a respiratory sensor was
        present (None, n/a, before any such sleep: not 0)."""
        return events_per_hour(self.n_events["apnea"] + self.n_events["hypopnea"], self.resp_sleep_seconds / 3600.0)

    def _event(self, type_: str, onset: float, duration: float, value: Any, index: int) -> Event:
        return Event(self.bed, type_, onset, duration, value, index, self.model_hash)

    # ------------------------------------------------------------------ main entry
    def update(self, epoch_index: int, onset: float, stage_prob: Sequence[float] | np.ndarray,
               apnea_prob: float, hypopnea_prob: float,
               present: Mapping[str, bool] | Sequence[bool] | np.ndarray | None = None,
               quality: Mapping[str, int] | Sequence[int] | np.ndarray | None = None,
               thresholds: Mapping[str, float] | None = None) -> list[Event]:
        """Process one scored epoch; return the events it produced, in a stable order.

        Args:
            epoch_index: epoch number (strictly increasing; a jump is a gap).
            onset: epoch start, seconds on the stream clock.
            stage_prob: [5] stage probabilities (W, N1, N2, N3, REM).
            apnea_prob, hypopnea_prob: probabilities in [0, 1].
            present: per-modality usable flag (dict or array in ``modalities`` order);
                None = all present.
            quality: per-modality ``Quality`` bits (only reported in signal_lost values).
            thresholds: overrides the detector's thresholds for this epoch.

        Raises:
            EventError: out-of-order epoch index, wrong shapes, non-finite probabilities.
        """
        epoch_index = int(epoch_index)
        onset = float(onset)
        if self.last_index is not None and epoch_index <= self.last_index:
            raise EventError(f"bed {self.bed}: epoch {epoch_index} arrives after epoch "
                             f"{self.last_index} (already processed)")
        probs = np.asarray(stage_prob, dtype=np.float64).reshape(-1)
        if probs.shape != (len(self.stage_names),):
            raise EventError(f"bed {self.bed} epoch {epoch_index}: stage_prob has shape "
                             f"{probs.shape}, expected ({len(self.stage_names)},)")
        pa, ph = float(apnea_prob), float(hypopnea_prob)
        if not (np.isfinite(probs).all() and math.isfinite(pa) and math.isfinite(ph)):
            raise EventError(f"bed {self.bed} epoch {epoch_index}: non-finite probability "
                             f"(stage {probs.tolist()}, apnea {pa}, hypopnea {ph})")
        thr = {**self.thresholds, **(thresholds or {})}
        pres = _as_mask("present", present, self.modalities)
        if pres is None:
            pres = {m: True for m in self.modalities}
        qual = _as_mask("quality", quality, self.modalities) or {}
        staging = self.stage_modalities or self.modalities
        usable = any(bool(pres.get(m, False)) for m in staging)
        filtered = probs
        if self.stage_filter is not None:
            gap = 0 if self.last_index is None else epoch_index - self.last_index - 1
            self.stage_filter.skip(gap + (not usable))  # epochs it did not see
            if usable:
                filtered = self.stage_filter.update(probs)
        self.stage_prob = filtered
        confidence = float(probs.max())
        # a stage the model is this unsure of is said to be unknown (the artifact's threshold,
        # chosen on validation nights: below it the model was wrong more often than right)
        confident = confidence >= thr.get("stage_confidence", 0.0)
        scored = usable and confident
        partial = [m for m in self.resp_modalities if pres.get(m, False) and int(qual.get(m, 0)) & _PARTIAL_BITS]
        partial += [m for m in self.resp_modalities if m in AIRWAY_MODALITIES and not pres.get(m, False)
                    and (self.recorded is None or m in self.recorded)]
        resp = scored and not partial and (
            not self.resp_modalities or any(bool(pres.get(m, False)) for m in self.resp_modalities))
        end = onset + self.epoch_seconds
        events: list[Event] = []

        # gap in epoch indices: running episodes end at their last epoch
        if self.last_index is not None and epoch_index != self.last_index + 1:
            for kind in ("apnea", "hypopnea"):
                events += self._close_episode(kind, epoch_index)

        # signal lost / restored per modality (those the bed records)
        for m in self.modalities:
            if self.recorded is not None and m not in self.recorded and m not in self.lost_since:
                continue
            ok = bool(pres.get(m, True))
            if not ok and m not in self.lost_since:
                self.lost_since[m] = onset
                bits = int(qual.get(m, 0))
                events.append(self._event("signal_lost", onset, 0.0,
                                          {"modality": m, "quality": bits,
                                           "reason": _describe_quality(bits)}, epoch_index))
            elif ok and m in self.lost_since:
                since = self.lost_since.pop(m)
                events.append(self._event("signal_restored", onset, 0.0,
                                          {"modality": m, "lost_seconds": onset - since}, epoch_index))

        # stage and stage change
        code = int(np.argmax(filtered)) if scored else -1
        stage = self.stage_names[code] if scored else UNKNOWN_STAGE
        value: dict[str, Any] = {"stage": stage, "code": code,
                                 "prob": {n: round(float(p), 6) for n, p in zip(self.stage_names, filtered)},
                                 "model_prob": {n: round(float(p), 6) for n, p in zip(self.stage_names, probs)},
                                 "confidence": round(confidence, 6), "resp_scored": resp}
        if not usable:
            value["reason"] = "no usable " + "/".join(m.upper() for m in staging) + " signal (" + ", ".join(
                f"{m} {_describe_quality(int(qual.get(m, 0)))}" for m in staging) + ")"
        elif not confident:
            value["reason"] = (f"low confidence: {self.stage_names[int(np.argmax(probs))]} at "
                               f"{confidence:.2f} < {thr['stage_confidence']:.2f}")
        elif partial:
            value["resp_reason"] = "respiratory channel partial or lost: " + ", ".join(
                f"{m} {_describe_quality(int(qual.get(m, 0)))}" for m in partial)
        events.append(self._event("stage", onset, self.epoch_seconds, value, epoch_index))
        if scored:
            if self.last_stage is not None and stage != self.last_stage:
                events.append(self._event("stage_change", onset, 0.0,
                                          {"from": self.last_stage, "to": stage}, epoch_index))
            self.last_stage = stage
            self.scored_seconds += self.epoch_seconds
        asleep = scored and stage != "W"
        if asleep:
            self.sleep_seconds += self.epoch_seconds
            if resp:
                self.resp_sleep_seconds += self.epoch_seconds

        # respiratory episodes: only where a respiratory sensor tells (EEG alone cannot)
        positive = {"apnea": resp and pa >= thr["apnea"], "hypopnea": resp and ph >= thr["hypopnea"]}
        for kind, p in (("apnea", pa), ("hypopnea", ph)):
            ep = self.episodes[kind]
            if positive[kind]:
                if ep is None:
                    self.episodes[kind] = _Episode(epoch_index, epoch_index, onset, end, p)
                    if asleep:
                        self.n_events[kind] += 1
                else:
                    ep.last_index, ep.end, ep.peak = epoch_index, end, max(ep.peak, p)
            elif ep is not None:
                events += self._close_episode(kind, epoch_index)

        self.last_index = epoch_index
        self.summary = EpochSummary(
            epoch_index=epoch_index, onset=onset, end=end, stage=stage, scored=scored,
            apnea=positive["apnea"], hypopnea=positive["hypopnea"], apnea_prob=pa,
            hypopnea_prob=ph, ahi=self.ahi, sleep_seconds=self.sleep_seconds,
            lost_since=dict(self.lost_since), resp_scored=resp)
        return events

    def _close_episode(self, kind: str, at_index: int) -> list[Event]:
        ep = self.episodes[kind]
        if ep is None:
            return []
        self.episodes[kind] = None
        return [self._event(kind, ep.onset, ep.end - ep.onset,
                            {"first_epoch": ep.first_index, "last_epoch": ep.last_index,
                             "n_epochs": ep.last_index - ep.first_index + 1,
                             "peak_prob": round(ep.peak, 6)}, at_index)]

    def finish(self) -> list[Event]:
        """End of the stream: emit running episodes (tagged with the last epoch index)."""
        if self.last_index is None:
            return []
        out: list[Event] = []
        for kind in ("apnea", "hypopnea"):
            out += self._close_episode(kind, self.last_index)
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """JSON-able snapshot of everything needed to resume exactly after the last epoch."""
        return {
            "version": STATE_VERSION,
            "bed": self.bed,
            "modalities": list(self.modalities),
            "last_index": self.last_index,
            "last_stage": self.last_stage,
            "episodes": {k: (asdict(v) if v is not None else None) for k, v in self.episodes.items()},
            "n_events": dict(self.n_events),
            "sleep_seconds": self.sleep_seconds,
            "resp_sleep_seconds": self.resp_sleep_seconds,
            "scored_seconds": self.scored_seconds,
            "lost_since": dict(self.lost_since),
            "summary": asdict(self.summary) if self.summary is not None else None,
            "stage_filter": self.stage_filter.state_dict() if self.stage_filter is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` snapshot (raises EventError when it belongs elsewhere)."""
        if state.get("version") != STATE_VERSION:
            raise EventError(f"detector state version {state.get('version')!r} != {STATE_VERSION}")
        if str(state.get("bed")) != self.bed or tuple(state.get("modalities", ())) != self.modalities:
            raise EventError(f"detector state is for bed {state.get('bed')!r} with modalities "
                             f"{state.get('modalities')}, not bed {self.bed!r} with {list(self.modalities)}")
        self.last_index = state["last_index"]
        self.last_stage = state["last_stage"]
        self.episodes = {k: (_Episode(**v) if v is not None else None) for k, v in state["episodes"].items()}
        self.n_events = {k: int(v) for k, v in state["n_events"].items()}
        self.sleep_seconds = float(state["sleep_seconds"])
        self.resp_sleep_seconds = float(state.get("resp_sleep_seconds", self.sleep_seconds))
        self.scored_seconds = float(state["scored_seconds"])
        self.lost_since = {k: float(v) for k, v in state["lost_since"].items()}
        s = state.get("summary")
        self.summary = EpochSummary(**s) if s is not None else None
        if self.stage_filter is not None:
            try:
                self.stage_filter.load_state_dict(state["stage_filter"])
            except (KeyError, TypeError, ValueError) as exc:
                raise EventError(f"detector state has no usable stage filter belief ({exc})") from None


def _describe_quality(bits: int) -> str:
    """'flat|gap' text for Quality bits; 'absent' when no bit says why."""
    return Quality.describe(bits) if bits else "absent"
