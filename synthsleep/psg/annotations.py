"""Sleep scorings from every source into one form: ``NightAnnotations`` (30-s stages + respiratory events).

Sources (``load_scoring`` detects which):

- EDF+ annotations: Sleep-EDF hypnograms (``Sleep stage W/1/2/3/4/R/?``, ``Movement time``),
  AASM texts (``Sleep stage N1/N2/N3``), respiratory events (``Obstructive apnea``, ``Central
  apnea``, ``Mixed apnea``, ``Hypopnea``, ``Oxygen desaturation``, ``Arousal``; any case, common
  variants). Stage annotations of any duration are spread onto the 30-s epochs whose midpoint
  they cover.
- NSRR XML (SHHS, MESA): ``PSGAnnotation/ScoredEvents/ScoredEvent``, parsed with defusedxml
  (DTDs, entities and external references refused: ``AnnotationError``).
- DREAMS: the 1 Hz ``hypnogram`` / ``event_pneumo`` channels inside the EDF, and the 5-s
  ``Hypnogram_excerptN.txt`` files (first line ``[Hypnogram]``). R&K codes 5=W, 4=REM, 3=S1,
  2=S2, 1=S3, 0=S4; anything else unknown. Finer-than-30-s stages become 30-s epochs by the
  most frequent value in the epoch (ties: the one seen first). ``event_pneumo`` codes are not
  documented with the data, so nonzero runs become events of type ``"unspecified"`` (an
  extension of the contract's type set): such epochs get apnea/hypopnea label -1 (an event, of
  unknown kind) unless ``pneumo_codes`` maps the codes to types.
- CSV: ``epoch,stage``, ``onset,duration,stage`` (rows whose label is an event become events),
  ``night,epoch,stage`` (pick one night with ``night=``; ``load_csv_nights`` gives them all).
- Plain text, one stage per line per 30-s epoch (``#`` comments allowed; YASA style).

Stage codes: 0=W, 1=N1, 2=N2, 3=N3 (R&K S3+S4), 4=REM, -1 unknown (``?``, movement time,
unscored). Bare numbers in CSV/text are AASM codes 0..4, unless a 5 occurs in the file, in which
case the R&K/NSRR numbering 0=W, 1..4=S1..S4, 5=REM is used (logged).

Why one module (~840 lines): one ``NightAnnotations`` type read from five formats (EDF+, NSRR XML, DREAMS,
CSV, YASA) and written as EDF+; each reader is short, they share the event vocabulary and clipping
rules.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .clinical import APNEA_TYPES, STAGE_EDF_TEXT
from .epoch import EPOCH_SECONDS, STAGES, UNKNOWN

if TYPE_CHECKING:  # pragma: no cover
    from .recording import Recording

log = logging.getLogger(__name__)

__all__ = [
    "AnnotationError",
    "EVENT_TYPES",
    "Hypnogram",
    "RespEvent",
    "NightAnnotations",
    "epoch_labels",
    "find_scoring_for",
    "load_csv_nights",
    "load_scoring",
    "parse_event",
    "parse_stage",
    "write_scoring_annotations",
]

EVENT_TYPES = ("obstructive_apnea", "central_apnea", "mixed_apnea", "hypopnea", "desaturation", "arousal",
               "unspecified")
W, N1, N2, N3, REM = range(5)

# DREAMS / R&K numeric codes (hypnogram channel and Hypnogram_excerptN.txt)
DREAMS_STAGE_CODES = {5: W, 4: REM, 3: N1, 2: N2, 1: N3, 0: N3}


class AnnotationError(ValueError):
    """A scoring file cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = str(path)
        self.problem = message
        super().__init__(f"{self.path}: {message}")


@dataclass(frozen=True)
class RespEvent:
    """A scored event: ``onset`` and ``duration`` in seconds, ``type`` in ``EVENT_TYPES``."""

    onset: float
    duration: float
    type: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "onset", float(self.onset))
        object.__setattr__(self, "duration", float(self.duration))
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}; known: {', '.join(EVENT_TYPES)}")

    @property
    def end(self) -> float:
        return self.onset + self.duration


@dataclass
class NightAnnotations:
    """One night's expert (or model) stage and event annotations.

    Attributes:
        stages: int8 [n_epochs], 0=W 1=N1 2=N2 3=N3 4=REM, -1 unknown.
        events: respiratory events / arousals, sorted by onset.
        epoch_seconds: stage epoch length, s.
        source: where it came from (path and format), for logs and manifests.
        resp_scored: whether respiratory events were scored at all (None: infer, True iff
            ``events`` is non-empty). Without respiratory scoring, apnea/hypopnea labels are -1.
        n_clipped: annotations clipped or dropped because they did not fit the recording.
    """

    stages: np.ndarray
    events: list[RespEvent] = field(default_factory=list)
    epoch_seconds: float = EPOCH_SECONDS
    source: str = ""
    resp_scored: bool | None = None
    n_clipped: int = 0

    def __post_init__(self) -> None:
        self.stages = np.asarray(self.stages, dtype=np.int8).reshape(-1)
        self.events = sorted(self.events, key=lambda e: (e.onset, e.type))

    @property
    def n_epochs(self) -> int:
        return int(self.stages.shape[0])

    @property
    def has_resp(self) -> bool:
        return bool(self.events) if self.resp_scored is None else bool(self.resp_scored)


Hypnogram = NightAnnotations


# ----------------------------------------------------------------------------------------------
# Text → stage / event
# ----------------------------------------------------------------------------------------------

_STAGE_WORDS = {
    "w": W, "wake": W, "awake": W, "wakefulness": W, "0": W, "s0": W,
    "n1": N1, "s1": N1, "1": N1, "stage 1": N1, "stage1": N1, "nrem1": N1,
    "n2": N2, "s2": N2, "2": N2, "stage 2": N2, "stage2": N2, "nrem2": N2,
    "n3": N3, "s3": N3, "s4": N3, "3": N3, "4": N3, "stage 3": N3, "stage 4": N3, "stage3": N3,
    "stage4": N3, "nrem3": N3, "sws": N3,
    "r": REM, "rem": REM, "stage r": REM, "stage rem": REM, "5": REM,
    "?": UNKNOWN, "movement time": UNKNOWN, "movement": UNKNOWN, "mt": UNKNOWN, "m": UNKNOWN,
    "unscored": UNKNOWN, "unknown": UNKNOWN, "-1": UNKNOWN,
}
_RK_DIGITS = {0: W, 1: N1, 2: N2, 3: N3, 4: N3, 5: REM}
_STAGE_PREFIX = re.compile(r"^(sleep stage|sleep_stage|stage)\s*", re.I)


def parse_stage(text: str, numeric: str = "aasm") -> int | None:
    """Stage code of a label, or None if the text is not a stage at all.

    Understands ``W``, ``Wake``, ``N1``..``N3``, ``S1``..``S4``, ``R``/``REM``, ``Sleep stage X``,
    ``Stage 2 sleep``, NSRR ``Wake|0``-style concepts, ``Movement time``/``?`` (→ -1). Bare digits
    follow ``numeric``: ``"aasm"`` 0=W 1=N1 2=N2 3=N3 4=REM, or ``"rk"`` 0=W 1..4=S1..S4 5=REM.
    """
    t = text.strip().lower()
    if "|" in t:  # NSRR concept "Stage 2 sleep|2": the number is R&K
        name, _, code = t.partition("|")
        code = code.strip()
        if code.isdigit():
            c = int(code)
            return _RK_DIGITS.get(c, UNKNOWN)
        t = name.strip()
    t = re.sub(r"\s+", " ", t)
    if t.isdigit() or t == "-1":
        c = int(t)
        if numeric == "rk":
            return _RK_DIGITS.get(c, UNKNOWN)
        return c if 0 <= c <= 4 else UNKNOWN
    if t in _STAGE_WORDS:
        return _STAGE_WORDS[t]
    m = re.fullmatch(r"stage ([0-5]) sleep", t)  # NSRR "Stage 2 sleep": R&K digits
    if m:
        return _RK_DIGITS[int(m.group(1))]
    if t in ("rem sleep", "paradoxical sleep", "stage r sleep", "stage rem sleep"):
        return REM
    m = _STAGE_PREFIX.match(t)
    if m:
        rest = t[m.end():].strip()
        if rest in _STAGE_WORDS:
            return _STAGE_WORDS[rest]
        return UNKNOWN
    return None


def parse_event(text: str) -> str | None:
    """Event type of an annotation/concept text, or None if it is not a respiratory event/arousal.

    ``Obstructive apnea``, ``OSA``, ``Apnea Obstructive``, ``Central apnea``, ``Mixed apnea``,
    ``Hypopnea`` (incl. ``Obstructive/Central hypopnea``), ``Oxygen desaturation``,
    ``SpO2 desaturation``, ``Arousal`` variants (``Arousal ()``, ``ASDA arousal``). A plain
    ``Apnea`` counts as obstructive (the staging model's apnea label lumps the three kinds).
    Artefacts (``SpO2 artifact``) and limb movements are not events.
    """
    t = text.strip().lower().split("|")[0]
    t = re.sub(r"[\s_\-]+", " ", t)
    if "artifact" in t or "artefact" in t:
        return None
    if "hypopnea" in t or "hypopnoea" in t:
        return "hypopnea"
    if "apnea" in t or "apnoea" in t or t in ("osa", "oa", "ca", "ma", "csa"):
        if "central" in t or t in ("ca", "csa"):
            return "central_apnea"
        if "mixed" in t or t == "ma":
            return "mixed_apnea"
        return "obstructive_apnea"
    if "desat" in t:
        return "desaturation"
    if "arousal" in t:
        return "arousal"
    return None


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------


def _stages_from_intervals(
    intervals: Iterable[tuple[float, float, int]], n_epochs: int | None, source: str,
    epoch_seconds: float = EPOCH_SECONDS,
) -> tuple[np.ndarray, int]:
    """(onset s, duration s, stage) intervals → int8 [n] stages by epoch midpoint; (stages, clipped)."""
    items = sorted(intervals, key=lambda x: x[0])
    clipped = 0
    end = max((o + d for o, d, _ in items), default=0.0)
    n = int(math.floor(end / epoch_seconds + 1e-9)) if n_epochs is None else int(n_epochs)
    out = np.full(n, UNKNOWN, dtype=np.int8)
    mids = (np.arange(n) + 0.5) * epoch_seconds
    for onset, dur, stage in items:
        if onset < 0:
            clipped += 1
            log.warning("%s: stage annotation at negative onset %.1f s clipped to 0", source, onset)
        if n_epochs is not None and onset + dur > n * epoch_seconds + epoch_seconds / 2:
            clipped += 1
            log.warning("%s: stage annotation %.1f–%.1f s runs past the recording end (%.1f s); clipped",
                        source, onset, onset + dur, n * epoch_seconds)
        sel = (mids >= onset) & (mids < onset + dur)
        out[sel] = stage
    return out, clipped


def _stages_from_codes(
    codes: np.ndarray, seconds_per_value: float, mapping: Mapping[int, int],
    epoch_seconds: float = EPOCH_SECONDS,
) -> np.ndarray:
    """Fine-grained numeric stage codes → int8 [n] 30-s stages, most frequent value (ties: first)."""
    per = epoch_seconds / seconds_per_value
    k = int(round(per))
    if k < 1 or abs(per - k) > 1e-6:
        raise ValueError(f"{seconds_per_value} s per value does not divide {epoch_seconds} s epochs")
    vals = np.array([mapping.get(int(c), UNKNOWN) if np.isfinite(c) and c == round(c) else UNKNOWN
                     for c in np.asarray(codes, dtype=np.float64)], dtype=np.int8)
    n = vals.size // k
    if vals.size % k:
        log.debug("dropping %d trailing values that do not fill a %g-s epoch", vals.size % k, epoch_seconds)
    out = np.empty(n, dtype=np.int8)
    for i in range(n):
        chunk = vals[i * k : (i + 1) * k].tolist()
        best = max(dict.fromkeys(chunk), key=chunk.count)  # dict keeps first-seen order: ties → first
        out[i] = best
    return out


def _clip_events(events: Iterable[RespEvent], duration: float | None, source: str) -> tuple[list[RespEvent], int]:
    """Events inside [0, duration): negative onsets clipped, events past the end dropped/clipped."""
    kept: list[RespEvent] = []
    clipped = 0
    for e in events:
        onset, end = e.onset, e.end
        if e.duration < 0:
            clipped += 1
            log.warning("%s: %s at %.1f s has negative duration %.1f s; dropped", source, e.type, onset, e.duration)
            continue
        if onset < 0:
            clipped += 1
            log.warning("%s: %s at negative onset %.1f s clipped to 0", source, e.type, onset)
            onset = 0.0
            if end <= 0:
                continue
        if duration is not None and end > duration:
            clipped += 1
            if onset >= duration:
                log.warning("%s: %s at %.1f s is past the recording end (%.1f s); dropped",
                            source, e.type, onset, duration)
                continue
            log.warning("%s: %s %.1f–%.1f s runs past the recording end (%.1f s); clipped",
                        source, e.type, onset, end, duration)
            end = duration
        if onset == e.onset and end == e.end:
            kept.append(e)  # untouched: keep the exact values
        else:
            kept.append(RespEvent(onset, max(end - onset, 0.0), e.type))
    return kept, clipped


def _finish(
    stages: np.ndarray, events: list[RespEvent], source: str, n_epochs: int | None,
    duration: float | None, resp_scored: bool | None, clipped: int = 0,
) -> NightAnnotations:
    """Fit stages to ``n_epochs`` (−1 padding, clipping logged) and events to the duration."""
    if n_epochs is not None:
        if stages.size > n_epochs:
            extra = stages[n_epochs:]
            if np.any(extra != UNKNOWN):
                clipped += 1
                log.warning("%s: scoring has %d epochs, recording %d; %d scored epochs past the end dropped",
                            source, stages.size, n_epochs, int(np.count_nonzero(extra != UNKNOWN)))
            stages = stages[:n_epochs]
        elif stages.size < n_epochs:
            stages = np.concatenate([stages, np.full(n_epochs - stages.size, UNKNOWN, np.int8)])
        if duration is None:
            duration = n_epochs * EPOCH_SECONDS
    events, c2 = _clip_events(events, duration, source)
    return NightAnnotations(stages, events, EPOCH_SECONDS, source, resp_scored, clipped + c2)


# ----------------------------------------------------------------------------------------------
# EDF+ annotations
# ----------------------------------------------------------------------------------------------


def scoring_from_annotations(
    annotations: Iterable[tuple[float, float, str]] | Iterable[object], source: str,
    n_epochs: int | None = None, duration: float | None = None,
) -> NightAnnotations:
    """Stages and events from EDF+ annotations (objects with onset/duration/text, or tuples).

    Stage annotations with zero duration last until the next stage annotation (or one epoch).
    ``resp_scored`` is True when any respiratory event text is present.
    """
    stage_iv: list[tuple[float, float, int]] = []
    events: list[RespEvent] = []
    anns = []
    for a in annotations:
        onset, dur, text = (a.onset, a.duration, a.text) if hasattr(a, "text") else a  # type: ignore[attr-defined]
        anns.append((float(onset), float(dur or 0.0), str(text)))
    anns.sort(key=lambda x: x[0])
    stage_anns = [(o, d, parse_stage(t)) for o, d, t in anns if _is_stage_text(t)]
    for i, (o, d, st) in enumerate(stage_anns):
        if d <= 0:  # point stage marks: until the next one
            nxt = stage_anns[i + 1][0] if i + 1 < len(stage_anns) else o + EPOCH_SECONDS
            d = max(nxt - o, EPOCH_SECONDS)
        stage_iv.append((o, d, UNKNOWN if st is None else st))
    for o, d, t in anns:
        if _is_stage_text(t):
            continue
        ev = parse_event(t)
        if ev is not None:
            events.append(RespEvent(o, d, ev))
    if n_epochs is None and duration is not None:
        n_epochs = int(math.floor(duration / EPOCH_SECONDS + 1e-9))
    stages, clipped = _stages_from_intervals(stage_iv, n_epochs, source)
    # respiratory scoring present iff any apnea/hypopnea event is annotated (arousals alone: no)
    # or the file says so explicitly (a night scored for breathing with no event at all)
    resp = any(e.type in APNEA_TYPES or e.type in ("hypopnea", "unspecified") for e in events) or any(
        t.strip().lower() == RESP_SCORED_TEXT.lower() for _, _, t in anns)
    return _finish(stages, events, source, n_epochs, duration, resp, clipped)


def _is_stage_text(text: str) -> bool:
    t = text.strip().lower()
    return t.startswith(("sleep stage", "sleep_stage")) or t == "movement time" or (
        parse_stage(t) is not None and parse_event(t) is None and len(t) <= 12 and not t.isdigit())


# ----------------------------------------------------------------------------------------------
# NSRR XML
# ----------------------------------------------------------------------------------------------


def _parse_xml(path: Path):  # -> an ElementTree Element
    import defusedxml
    import defusedxml.ElementTree as DET

    try:
        return DET.parse(str(path), forbid_dtd=True, forbid_entities=True, forbid_external=True).getroot()
    except defusedxml.DTDForbidden:
        raise AnnotationError(path, "XML with a DTD/DOCTYPE is refused (possible entity expansion or "
                                    "external entity attack); NSRR annotation files have none") from None
    except (defusedxml.EntitiesForbidden, defusedxml.ExternalReferenceForbidden) as exc:
        raise AnnotationError(path, f"XML entities/external references are refused: {exc}") from None
    except defusedxml.DefusedXmlException as exc:
        raise AnnotationError(path, f"unsafe XML refused: {exc}") from None
    except DET.ParseError as exc:
        raise AnnotationError(path, f"not well-formed XML: {exc}") from None
    except OSError as exc:
        raise AnnotationError(path, f"cannot read: {exc.strerror or exc}") from None


def load_nsrr_xml(path: str | os.PathLike[str], n_epochs: int | None = None,
                  duration: float | None = None) -> NightAnnotations:
    """NightAnnotations from an NSRR XML file (SHHS/MESA ``PSGAnnotation/ScoredEvents/ScoredEvent``)."""
    p = Path(path)
    root = _parse_xml(p)
    scored = root.find("ScoredEvents")
    if scored is None:
        scored = root.find(".//ScoredEvents")
    if scored is None:
        raise AnnotationError(p, f"no ScoredEvents element under <{root.tag}>: not an NSRR annotation file")
    stage_iv: list[tuple[float, float, int]] = []
    events: list[RespEvent] = []
    bad = 0
    for ev in scored.iter("ScoredEvent"):
        etype = (ev.findtext("EventType") or "").strip().lower()
        concept = (ev.findtext("EventConcept") or "").strip()
        try:
            start = float(ev.findtext("Start") or "nan")
            dur = float(ev.findtext("Duration") or "0")
        except ValueError:
            bad += 1
            continue
        if not (math.isfinite(start) and math.isfinite(dur)):
            bad += 1
            continue
        is_stage = etype.startswith("stages") if etype else (
            parse_stage(concept) is not None and parse_event(concept) is None)
        if is_stage:
            st = parse_stage(concept)
            stage_iv.append((start, dur, UNKNOWN if st is None else st))
            continue
        kind = parse_event(concept)
        if kind is not None:
            events.append(RespEvent(start, dur, kind))
    if bad:
        log.warning("%s: %d ScoredEvent entries without a numeric Start/Duration skipped", p, bad)
    if n_epochs is None and duration is not None:
        n_epochs = int(math.floor(duration / EPOCH_SECONDS + 1e-9))
    stages, clipped = _stages_from_intervals(stage_iv, n_epochs, str(p))
    # NSRR files are scored for respiratory events (zero events is a scored night without any)
    return _finish(stages, events, f"{p} (NSRR XML)", n_epochs, duration, True, clipped + bad)


# ----------------------------------------------------------------------------------------------
# DREAMS
# ----------------------------------------------------------------------------------------------


def load_dreams_hypnogram_txt(path: str | os.PathLike[str], n_epochs: int | None = None) -> NightAnnotations:
    """DREAMS ``Hypnogram_excerptN.txt``: ``[Hypnogram]`` then one R&K code per 5 s → 30-s epochs."""
    p = Path(path)
    lines = _read_text(p).splitlines()
    if not lines or lines[0].strip().lower() != "[hypnogram]":
        raise AnnotationError(p, "not a DREAMS hypnogram (first line must be [Hypnogram])")
    try:
        codes = np.array([float(x) for x in lines[1:] if x.strip()])
    except ValueError as exc:
        raise AnnotationError(p, f"non-numeric stage code: {exc}") from None
    stages = _stages_from_codes(codes, 5.0, DREAMS_STAGE_CODES)
    return _finish(stages, [], f"{p} (DREAMS 5-s hypnogram)", n_epochs, None, False)


def scoring_from_dreams_channels(
    recording: Recording, n_epochs: int | None = None, pneumo_codes: Mapping[int, str] | None = None,
    hypnogram_channel: str = "hypnogram", pneumo_channel: str = "event_pneumo",
) -> NightAnnotations:
    """DREAMS in-file scoring: 1 Hz ``hypnogram`` (R&K codes) and ``event_pneumo`` channels.

    Runs of equal nonzero ``event_pneumo`` values become events, typed by ``pneumo_codes``
    (code → event type); unmapped codes give ``"unspecified"`` events.
    """
    labels = {c.label: c for c in recording.channels}
    src = f"{recording.path} (DREAMS channels)"
    if hypnogram_channel not in labels:
        raise AnnotationError(recording.path, f"no {hypnogram_channel!r} channel for a DREAMS hypnogram")
    h = labels[hypnogram_channel]
    stages = _stages_from_codes(recording.read(hypnogram_channel), 1.0 / h.rate, DREAMS_STAGE_CODES)
    events: list[RespEvent] = []
    resp = False
    if pneumo_channel in labels:
        resp = True
        rate = labels[pneumo_channel].rate
        x = np.nan_to_num(np.round(recording.read(pneumo_channel)))
        change = np.nonzero(np.diff(np.r_[0.0, x, 0.0]))[0]
        codes = pneumo_codes or {}
        unmapped: set[int] = set()
        for a, b in zip(change[:-1], change[1:]):
            code = int(x[a])
            if code == 0:
                continue
            kind = codes.get(code)
            if kind is None:
                unmapped.add(code)
                kind = "unspecified"
            events.append(RespEvent(a / rate, (b - a) / rate, kind))
        if unmapped:
            log.info("%s: event_pneumo codes %s have no documented meaning; events typed 'unspecified'",
                     recording.path, sorted(unmapped))
    duration = recording.duration
    if n_epochs is None:
        n_epochs = int(math.floor(duration / EPOCH_SECONDS + 1e-9))
    return _finish(stages, events, src, n_epochs, duration, resp)


# ----------------------------------------------------------------------------------------------
# CSV and plain text
# ----------------------------------------------------------------------------------------------


def _read_text(p: Path) -> str:
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise AnnotationError(p, f"cannot read: {exc.strerror or exc}") from None
    if b"\x00" in data[:4096]:
        raise AnnotationError(p, "binary data where a text scoring file was expected")
    return data.decode("utf-8-sig", errors="replace")


def _numeric_scheme(labels: Sequence[str], source: str) -> str:
    nums = {s.strip() for s in labels if s.strip().isdigit()}
    if "5" in nums:
        log.info("%s: numeric stages include 5: using R&K numbering (0=W 1-4=S1-S4 5=REM)", source)
        return "rk"
    return "aasm"


def _stage_or_error(label: str, scheme: str, p: Path, row: int) -> int:
    st = parse_stage(label, scheme)
    if st is None:
        raise AnnotationError(p, f"row {row}: {label!r} is not a sleep stage "
                                 f"(expected one of {', '.join(STAGES)}, R, 1-4, S1-S4, ?)")
    return st


def load_csv_nights(path: str | os.PathLike[str]) -> dict[str, NightAnnotations]:
    """Every night of a ``night,epoch,stage`` CSV (e.g. the Sleep-EDF 20-night file)."""
    p = Path(path)
    rows = list(csv.DictReader(io.StringIO(_read_text(p))))
    if not rows or "night" not in rows[0] or "stage" not in rows[0] or "epoch" not in rows[0]:
        raise AnnotationError(p, "expected a header night,epoch,stage")
    scheme = _numeric_scheme([r["stage"] for r in rows], str(p))
    by_night: dict[str, dict[int, int]] = {}
    for i, r in enumerate(rows, start=2):
        try:
            e = int(r["epoch"])
        except (TypeError, ValueError):
            raise AnnotationError(p, f"row {i}: epoch {r['epoch']!r} is not an integer") from None
        by_night.setdefault(r["night"], {})[e] = _stage_or_error(r["stage"] or "", scheme, p, i)
    out = {}
    for night, m in by_night.items():
        st = np.full(max(m) + 1, UNKNOWN, np.int8)
        for e, s in m.items():
            if e >= 0:
                st[e] = s
        out[night] = NightAnnotations(st, [], EPOCH_SECONDS, f"{p} night {night}", False)
    return out


def load_csv(path: str | os.PathLike[str], n_epochs: int | None = None, duration: float | None = None,
             night: str | None = None) -> NightAnnotations:
    """NightAnnotations from CSV: ``epoch,stage``, ``onset,duration,stage`` or ``night,epoch,stage``."""
    p = Path(path)
    text = _read_text(p)
    reader = csv.DictReader(io.StringIO(text))
    cols = [c.strip().lower() for c in (reader.fieldnames or [])]
    if "night" in cols:
        nights = load_csv_nights(p)
        if night is None:
            if len(nights) != 1:
                raise AnnotationError(p, f"{len(nights)} nights in the file; choose one with night= "
                                         f"({', '.join(list(nights)[:5])}{', ...' if len(nights) > 5 else ''})")
            night = next(iter(nights))
        if night not in nights:
            raise AnnotationError(p, f"no night {night!r}; nights: {', '.join(list(nights)[:10])}")
        sc = nights[night]
        return _finish(sc.stages, [], sc.source, n_epochs, duration, False)
    rows = [{k.strip().lower(): (v or "").strip() for k, v in r.items() if k} for r in reader]
    label_col = next((c for c in ("stage", "label", "event", "description", "annotation") if c in cols), None)
    if label_col is None:
        raise AnnotationError(p, f"no stage column; header {cols} (expected epoch,stage or onset,duration,stage)")
    scheme = _numeric_scheme([r.get(label_col, "") for r in rows], str(p))
    if "epoch" in cols:
        m: dict[int, int] = {}
        for i, r in enumerate(rows, start=2):
            try:
                m[int(r["epoch"])] = _stage_or_error(r[label_col], scheme, p, i)
            except ValueError as exc:
                if isinstance(exc, AnnotationError):
                    raise
                raise AnnotationError(p, f"row {i}: epoch {r['epoch']!r} is not an integer") from None
        neg = [e for e in m if e < 0]
        if neg:
            log.warning("%s: %d rows with negative epoch numbers ignored", p, len(neg))
        st = np.full(max(m, default=-1) + 1, UNKNOWN, np.int8)
        for e, s in m.items():
            if e >= 0:
                st[e] = s
        return _finish(st, [], f"{p} (CSV)", n_epochs, duration, False, len(neg))
    if "onset" in cols:
        anns = []
        for i, r in enumerate(rows, start=2):
            try:
                anns.append((float(r["onset"]), float(r.get("duration") or 0.0), r[label_col]))
            except ValueError:
                raise AnnotationError(p, f"row {i}: onset/duration {r.get('onset')!r}/{r.get('duration')!r} "
                                         "not numbers") from None
        unknown = [t for _, _, t in anns if parse_event(t) is None and parse_stage(t, scheme) is None]
        if unknown:
            log.warning("%s: %d rows with unrecognised labels ignored (e.g. %r)", p, len(unknown), unknown[0])
        norm = [(o, d, _normalise_label(t, scheme)) for o, d, t in anns]
        sc = scoring_from_annotations(norm, f"{p} (CSV)", n_epochs, duration)
        return sc
    raise AnnotationError(p, f"CSV header {cols}: expected epoch,stage or onset,duration,stage or night,epoch,stage")


def _normalise_label(text: str, scheme: str) -> str:
    """CSV label → an EDF+-style text that ``scoring_from_annotations`` understands."""
    if parse_event(text) is not None:
        return text
    st = parse_stage(text, scheme)
    if st is None:
        return text
    return "Sleep stage ?" if st == UNKNOWN else f"Sleep stage {('W', 'N1', 'N2', 'N3', 'R')[st]}"


def load_text_hypnogram(path: str | os.PathLike[str], n_epochs: int | None = None) -> NightAnnotations:
    """One stage per line per 30-s epoch (``#`` comments; digits or names)."""
    p = Path(path)
    labels = [ln.strip() for ln in _read_text(p).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not labels:
        raise AnnotationError(p, "no stages in the file")
    scheme = _numeric_scheme(labels, str(p))
    st = np.array([_stage_or_error(x, scheme, p, i + 1) for i, x in enumerate(labels)], np.int8)
    return _finish(st, [], f"{p} (text hypnogram)", n_epochs, None, False)


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------


def _is_recording(obj: object) -> bool:
    return hasattr(obj, "channels") and hasattr(obj, "read") and hasattr(obj, "annotations")


def load_scoring(
    path: str | os.PathLike[str] | Recording,
    recording: Recording | None = None,
    n_epochs: int | None = None,
    *,
    night: str | None = None,
    pneumo_codes: Mapping[int, str] | None = None,
) -> NightAnnotations:
    """Load a scoring from any supported source, detecting the format.

    Args:
        path: scoring file (EDF+/BDF+, NSRR ``.xml``, DREAMS ``[Hypnogram]`` text, ``.csv``,
            one-stage-per-line text) or an open ``Recording`` (its EDF+ annotations or DREAMS
            channels).
        recording: the recording the scoring belongs to; fixes ``n_epochs`` (whole 30-s epochs
            of its duration) and the end used to clip events.
        n_epochs: number of 30-s epochs wanted (stages padded with -1 or clipped, logged).
        night: for ``night,epoch,stage`` CSVs holding several nights.
        pneumo_codes: DREAMS ``event_pneumo`` code → event type.

    Raises:
        AnnotationError: unreadable, unsafe or unrecognised file (message names it).
    """
    duration = None
    if recording is not None:
        duration = float(recording.duration)
        if n_epochs is None:
            n_epochs = int(math.floor(duration / EPOCH_SECONDS + 1e-9))
    if _is_recording(path):
        return _from_recording(path, n_epochs, duration, pneumo_codes)  # type: ignore[arg-type]
    p = Path(path)  # type: ignore[arg-type]
    if not p.is_file():
        raise AnnotationError(p, "no such file" if not p.exists() else "not a regular file")
    with p.open("rb") as fh:
        head = fh.read(256)
    suffix = p.suffix.lower()
    if head[:4] == b"XDF:" or suffix == ".xdfz":  # LabRecorder: scoring from its marker streams
        from .recording import RecordingError, open_recording

        try:
            rec = open_recording(p)
        except RecordingError as exc:
            raise AnnotationError(p, exc.problem) from None
        return _from_recording(rec, n_epochs, duration, pneumo_codes)
    if head[:8] in (b"0       ", b"\xffBIOSEMI"):
        from .recording import RecordingError, open_recording, read_edf_annotations

        try:
            rec = open_recording(p)
        except RecordingError:
            try:  # annotation-only EDF+ (Sleep-EDF hypnogram)
                anns = read_edf_annotations(p)
            except RecordingError as exc:
                raise AnnotationError(p, exc.problem) from None
            return scoring_from_annotations(anns, f"{p} (EDF+ annotations)", n_epochs, duration)
        return _from_recording(rec, n_epochs, duration, pneumo_codes)
    if suffix == ".xml" or head.lstrip().startswith(b"<"):
        return load_nsrr_xml(p, n_epochs, duration)
    text_head = head.decode("utf-8-sig", errors="replace").lstrip()
    if text_head.lower().startswith("[hypnogram]"):
        return load_dreams_hypnogram_txt(p, n_epochs)
    first = text_head.splitlines()[0].lower() if text_head else ""
    if suffix == ".csv" or ("," in first and "stage" in first):
        return load_csv(p, n_epochs, duration, night)
    if suffix in (".txt", ".hyp", ".hypno", ""):
        return load_text_hypnogram(p, n_epochs)
    raise AnnotationError(p, "unrecognised scoring format (expected EDF+, NSRR XML, DREAMS [Hypnogram] text, "
                             "CSV or one stage per line)")


def _from_recording(rec: Recording, n_epochs: int | None, duration: float | None,
                    pneumo_codes: Mapping[int, str] | None) -> NightAnnotations:
    duration = float(rec.duration) if duration is None else duration
    if n_epochs is None:
        n_epochs = int(math.floor(duration / EPOCH_SECONDS + 1e-9))
    anns = list(rec.annotations)
    if any(_is_stage_text(a.text) for a in anns) or any(parse_event(a.text) for a in anns):
        kind = "XDF markers" if str(rec.path).lower().endswith((".xdf", ".xdfz")) else "EDF+ annotations"
        return scoring_from_annotations(anns, f"{rec.path} ({kind})", n_epochs, duration)
    if any(c.label == "hypnogram" for c in rec.channels):
        return scoring_from_dreams_channels(rec, n_epochs, pneumo_codes)
    raise AnnotationError(rec.path, "no scoring inside the recording (no stage/event annotations, "
                                    "no DREAMS hypnogram channel)")


def find_scoring_for(edf_path: str | os.PathLike[str]) -> Path | None:
    """The scoring that belongs to a recording, or None.

    Looks for, in order: a Sleep-EDF ``<first 7 chars>*-Hypnogram.edf`` next to ``*-PSG.edf``;
    NSRR ``<name>-nsrr.xml`` / ``<name>.xml``; the recording itself when it holds EDF+ stage/
    event annotations or DREAMS ``hypnogram`` channels; a DREAMS ``Hypnogram_<name>.txt``;
    ``<name>.csv`` / ``<name>-hypnogram.csv``.
    """
    p = Path(edf_path)
    d, stem = p.parent, p.stem
    base = re.sub(r"-PSG$", "", stem, flags=re.I)
    if stem.upper().endswith("-PSG"):
        for n in (7, 6):
            hits = sorted(d.glob(f"{glob_escape(base[:n])}*-Hypnogram.edf"))
            if hits:
                if len(hits) > 1:
                    log.warning("%s: several hypnograms match (%s); using %s", p,
                                ", ".join(h.name for h in hits), hits[0].name)
                return hits[0]
    for cand in (f"{base}-nsrr.xml", f"{base}.xml", f"{base}-profusion.xml"):
        if (d / cand).is_file():
            return d / cand
    try:
        from .recording import open_recording

        rec = open_recording(p)
        anns = rec.annotations
        if any(_is_stage_text(a.text) or parse_event(a.text) for a in anns) or any(
                c.label == "hypnogram" for c in rec.channels):
            return p
    except ValueError as exc:
        log.debug("%s: not readable while looking for in-file scoring: %s", p, exc)
    for cand in (f"Hypnogram_{base}.txt", f"{base}.csv", f"{base}-hypnogram.csv", f"{base}_hypnogram.csv"):
        if (d / cand).is_file():
            return d / cand
    return None


def glob_escape(s: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", s)


def epoch_labels(scoring: NightAnnotations, n_epochs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per 30-s epoch labels for training/evaluation.

    Returns:
        stage int8 [n] (-1 unknown or beyond the scoring); apnea int8 [n] (1 if any obstructive/
        central/mixed apnea overlaps the epoch, else 0); hypopnea int8 [n] likewise. apnea and
        hypopnea are -1 when there is no respiratory scoring, for epochs beyond the scored
        stages, and where only an ``unspecified`` event (DREAMS) overlaps.
    """
    n = int(n_epochs)
    starts = np.arange(n) * EPOCH_SECONDS
    if scoring.epoch_seconds == EPOCH_SECONDS:
        stage = np.full(n, UNKNOWN, np.int8)
        k = min(n, scoring.n_epochs)
        stage[:k] = scoring.stages[:k]
    else:  # the scoring epoch holding each 30-s epoch's midpoint
        idx = np.floor((starts + EPOCH_SECONDS / 2) / scoring.epoch_seconds).astype(np.int64)
        ok = idx < scoring.n_epochs
        stage = np.full(n, UNKNOWN, np.int8)
        stage[ok] = scoring.stages[idx[ok]]
    if not scoring.has_resp:
        return stage, np.full(n, UNKNOWN, np.int8), np.full(n, UNKNOWN, np.int8)
    apnea = np.zeros(n, np.int8)
    hyp = np.zeros(n, np.int8)
    unspec = np.zeros(n, bool)
    for e in scoring.events:
        a = int(max(math.floor(e.onset / EPOCH_SECONDS), 0))
        b = int(min(math.ceil(e.end / EPOCH_SECONDS), n)) if e.duration > 0 else a + 1
        sel = slice(a, min(b, n))
        if e.type in APNEA_TYPES:
            apnea[sel] = 1
        elif e.type == "hypopnea":
            hyp[sel] = 1
        elif e.type == "unspecified":
            unspec[sel] = True
    apnea[unspec & (apnea == 0)] = UNKNOWN  # an event of unknown kind: could be either
    hyp[unspec & (hyp == 0)] = UNKNOWN
    if scoring.n_epochs and scoring.n_epochs < n:
        scored_end = scoring.n_epochs * scoring.epoch_seconds
        beyond = starts >= scored_end
        apnea[beyond] = UNKNOWN
        hyp[beyond] = UNKNOWN
    return stage, apnea, hyp


#: EDF+ annotation saying respiratory events were scored (so a night without any event gets
#: apnea/hypopnea labels 0, not unknown)
RESP_SCORED_TEXT = "Respiratory events scored"

_EVENT_TEXT = {"obstructive_apnea": "Obstructive apnea", "central_apnea": "Central apnea",
               "mixed_apnea": "Mixed apnea", "hypopnea": "Hypopnea", "desaturation": "Oxygen desaturation",
               "arousal": "Arousal", "unspecified": "Respiratory event"}


def write_scoring_annotations(scoring: NightAnnotations) -> list[tuple[float, float, str]]:
    """EDF+ annotations in Sleep-EDF convention: one ``Sleep stage X`` per run of equal stages
    (W, N1, N2, N3, R, ? for unknown) then the events (``Obstructive apnea``, ``Central apnea``,
    ``Mixed apnea``, ``Hypopnea``, ``Oxygen desaturation``, ``Arousal``), as (onset s, duration s,
    text), sorted by onset."""
    out: list[tuple[float, float, str]] = []
    st = scoring.stages
    es = scoring.epoch_seconds
    i = 0
    while i < st.size:
        j = i
        while j + 1 < st.size and st[j + 1] == st[i]:
            j += 1
        out.append((i * es, (j - i + 1) * es, STAGE_EDF_TEXT[int(st[i])]))
        i = j + 1
    out.extend((e.onset, e.duration, _EVENT_TEXT[e.type]) for e in scoring.events)
    if scoring.has_resp:
        out.append((0.0, 0.0, RESP_SCORED_TEXT))
    out.sort(key=lambda x: (x[0], not x[2].startswith("Sleep stage")))
    return out
