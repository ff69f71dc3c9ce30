"""EDF folders → Parquet epoch shards + ``manifest.json`` (``synthsleep prepare``).

One shard per night, ``<out>/shards/<night>.parquet``, one row per 30-s epoch, produced by the
same ``psg.preprocess.iter_recording_epochs`` the live monitor uses. Columns (CONTRACTS.md, plus
the compatible ``present_<modality>`` and ``log_scale_<modality>`` additions):

====================  ===================================  ==========================================
column                type                                 meaning
====================  ===================================  ==========================================
subject               string                               subject id
night                 string                               night id (= shard file stem)
epoch                 int32                                epoch index since the recording start
start                 float64                              epoch start, s since the recording start
sig_<modality>        fixed_size_list<float32, 3000>       preprocessed signal (0 where absent)
qual_<modality>       uint8                                ``Quality`` bits
present_<modality>    bool                                 modality usable (exactly ``Epoch.present``)
log_scale_<modality>  float32                              ln of the scale (the modality's unit, e.g.
                                                           uV) ``sig_`` was divided by (exactly
                                                           ``Epoch.log_scale``; 0 where absent)
stage                 int8                                 0..4 = W,N1,N2,N3,REM; -1 unknown
apnea, hypopnea       int8                                 1 event in the epoch, 0 none, -1 unknown
events                string                               JSON list of the scored events whose
                                                           onset lies in this epoch:
                                                           ``[{"type", "onset", "duration"}]``, s
====================  ===================================  ==========================================

Only the modalities in ``params.modalities`` are stored. Each event is listed once (in the epoch
holding its onset), so a night's events can be counted from the shard (true AHI).

The run is parallel over files, resumable (a file whose shard exists and whose sha256 matches
the manifest is skipped, when the manifest has the same parameters, overrides and
``SCHEMA_VERSION``) and crash-safe (shards and the manifest are written under a temporary name
and renamed). A bad file is recorded as ``failed`` with its reason and never aborts the run; so
is a recording without a single usable epoch (no EEG/EOG signal anywhere: flat, missing,
saturated...), which would otherwise go into the split as "ok". Each file's result is appended
to ``progress.jsonl`` (fsync'ed) as soon as it finishes, so a killed run resumes where it was,
skipping the files already done; the journal is removed once the manifest is written. Worker
processes die with their parent (Linux ``PR_SET_PDEATHSIG``): a SIGTERM or kill -9 of
``prepare`` leaves no orphan converting files.

Why one module (~830 lines): discovery, per-file conversion, the resumable journal, the worker
pool and the subject split all read and write the one manifest, whose consistency (a file is in
it once, with its split and fingerprint) is this module's invariant; the shard format itself is
read by ``shards`` and the recordings by ``psg``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..psg.epoch import EPOCH_SAMPLES, EPOCH_SECONDS, Quality
from ..psg.montage import MODALITIES, MODALITY_NAMES, parse_overrides
from ..psg.preprocess import PreprocessParams

log = logging.getLogger(__name__)

#: 2: ``log_scale_<modality>`` columns. A run reuses only shards of this version.
SCHEMA_VERSION = 2
MANIFEST_NAME = "manifest.json"
PROGRESS_NAME = "progress.jsonl"
#: modalities that can stage sleep: a recording with none usable in any epoch is failed
_STAGE_MODALITIES = ("eeg", "eog")
SHARD_DIR = "shards"
ROW_GROUP_EPOCHS = 32  # ~3 MB per row group with 8 modalities: cheap random access
HYPOPNEA_TYPES = ("hypopnea",)
EDF_SUFFIXES = (".edf", ".bdf", ".rec")
_TMP_MARK = ".tmp-"


class PrepareError(ValueError):
    """A recording cannot be turned into a shard (the message names the file and the reason)."""


# ----------------------------------------------------------------------------------------------
# Shard schema and writing
# ----------------------------------------------------------------------------------------------


def shard_schema(modalities: Sequence[str]) -> pa.Schema:
    """The Arrow schema of a shard storing ``modalities`` (canonical order)."""
    cols: list[pa.Field] = [
        pa.field("subject", pa.string()),
        pa.field("night", pa.string()),
        pa.field("epoch", pa.int32()),
        pa.field("start", pa.float64()),
    ]
    for m in modalities:
        cols.append(pa.field(f"sig_{m}", pa.list_(pa.float32(), EPOCH_SAMPLES)))
    for m in modalities:
        cols.append(pa.field(f"qual_{m}", pa.uint8()))
    for m in modalities:
        cols.append(pa.field(f"present_{m}", pa.bool_()))
    for m in modalities:
        cols.append(pa.field(f"log_scale_{m}", pa.float32()))
    cols += [
        pa.field("stage", pa.int8()),
        pa.field("apnea", pa.int8()),
        pa.field("hypopnea", pa.int8()),
        pa.field("events", pa.string()),
    ]
    return pa.schema(cols, metadata={"synthsleep_schema_version": str(SCHEMA_VERSION)})


@dataclass
class EpochRows:
    """Column buffers of a batch of epochs of one night (what becomes one row group).

    Attributes:
        data: float32 [n, M, 3000]; quality uint8 [n, M]; present bool [n, M];
        log_scale float32 [n, M] (ln of the scale each row was divided by); epoch int [n];
        start float [n] (s); stage/apnea/hypopnea int8 [n]; events: n JSON strings.
    """

    epoch: list[int] = field(default_factory=list)
    start: list[float] = field(default_factory=list)
    data: list[np.ndarray] = field(default_factory=list)
    quality: list[np.ndarray] = field(default_factory=list)
    present: list[np.ndarray] = field(default_factory=list)
    log_scale: list[np.ndarray] = field(default_factory=list)
    stage: list[int] = field(default_factory=list)
    apnea: list[int] = field(default_factory=list)
    hypopnea: list[int] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.epoch)

    def to_table(self, subject: str, night: str, modalities: Sequence[str]) -> pa.Table:
        n = len(self)
        schema = shard_schema(modalities)
        data = np.stack(self.data).astype(np.float32, copy=False) if n else np.zeros((0, len(modalities), EPOCH_SAMPLES), np.float32)
        qual = np.stack(self.quality).astype(np.uint8) if n else np.zeros((0, len(modalities)), np.uint8)
        pres = np.stack(self.present).astype(bool) if n else np.zeros((0, len(modalities)), bool)
        scale = (np.stack(self.log_scale).astype(np.float32) if n
                 else np.zeros((0, len(modalities)), np.float32))
        arrays: list[pa.Array] = [
            pa.array([subject] * n, pa.string()),
            pa.array([night] * n, pa.string()),
            pa.array(np.asarray(self.epoch, np.int32)),
            pa.array(np.asarray(self.start, np.float64)),
        ]
        for i in range(len(modalities)):
            flat = np.ascontiguousarray(data[:, i, :]).reshape(-1)
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), EPOCH_SAMPLES))
        arrays += [pa.array(qual[:, i]) for i in range(len(modalities))]
        arrays += [pa.array(pres[:, i]) for i in range(len(modalities))]
        arrays += [pa.array(scale[:, i]) for i in range(len(modalities))]
        arrays += [pa.array(np.asarray(v, np.int8)) for v in (self.stage, self.apnea, self.hypopnea)]
        arrays.append(pa.array(self.events, pa.string()))
        return pa.Table.from_arrays(arrays, schema=schema)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}{_TMP_MARK}{os.getpid()}")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardWriter:
    """Writes one night's shard under a temporary name; ``commit()`` renames it into place.

    Use as a context manager: leaving the block without ``commit()`` (an error) deletes the
    temporary file, so no half-written shard ever carries the final name.
    """

    def __init__(self, path: Path, subject: str, night: str, modalities: Sequence[str],
                 row_group: int = ROW_GROUP_EPOCHS) -> None:
        self.path = Path(path)
        self.tmp = _tmp_name(self.path)
        self.subject, self.night, self.modalities = subject, night, tuple(modalities)
        self.row_group = row_group
        self.rows = EpochRows()
        self.n_rows = 0
        self._writer = pq.ParquetWriter(str(self.tmp), shard_schema(self.modalities), compression="zstd",
                                        compression_level=1, use_dictionary=["subject", "night"])

    def add(self, epoch: int, start: float, data: np.ndarray, quality: np.ndarray, present: np.ndarray,
            log_scale: np.ndarray, stage: int, apnea: int, hypopnea: int, events: str = "[]") -> None:
        """Append one epoch (data float32 [M, 3000], quality uint8 [M], present bool [M],
        log_scale float32 [M]: ``Epoch.log_scale``)."""
        r = self.rows
        r.epoch.append(int(epoch))
        r.start.append(float(start))
        r.data.append(data)
        r.quality.append(quality)
        r.present.append(present)
        r.log_scale.append(log_scale)
        r.stage.append(int(stage))
        r.apnea.append(int(apnea))
        r.hypopnea.append(int(hypopnea))
        r.events.append(events)
        if len(r) >= self.row_group:
            self._flush()

    def _flush(self) -> None:
        if len(self.rows):
            self._writer.write_table(self.rows.to_table(self.subject, self.night, self.modalities))
            self.n_rows += len(self.rows)
            self.rows = EpochRows()

    def commit(self) -> int:
        """Finish the file and rename it to its final name; returns the number of rows."""
        self._flush()
        self._writer.close()
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)
        self._writer = None
        return self.n_rows

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - already failing; only cleanup left
                pass
            self._writer = None
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._writer is not None:
            self.abort()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` via a temporary file + rename (never half-written)."""
    path = Path(path)
    tmp = _tmp_name(path)
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, sort_keys=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


# ----------------------------------------------------------------------------------------------
# Discovery: which files are nights, who is the subject, where are the labels
# ----------------------------------------------------------------------------------------------

_SYNTH_RE = re.compile(r"^synth-s(?P<subject>[A-Za-z0-9]+)-n(?P<night>[A-Za-z0-9]+)$", re.IGNORECASE)
_SLEEPEDF_RE = re.compile(r"^(?P<study>SC4|ST7)(?P<subject>\d\d)(?P<night>\d)", re.IGNORECASE)
_HYPNO_RE = re.compile(r"hypnogram|[-_]annotations?$|[-_]scoring$", re.IGNORECASE)


@dataclass(frozen=True)
class Candidate:
    """A recording found in the input folder, with its subject and night ids."""

    path: Path
    subject: str
    night: str


def subject_night_ids(path: Path) -> tuple[str, str]:
    """(subject, night) for a recording file name.

    ``synth-s<S>-n<N>.edf`` → (``synth-s<S>``, ``synth-s<S>-n<N>``); Sleep-EDF ``SC4ssN...`` →
    (``SC4ss``, ``SC4ssN``) (telemetry ``ST7ssN`` alike); anything else is its own subject and night
    (the file stem).
    """
    stem = path.stem
    m = _SYNTH_RE.match(stem)
    if m:
        return f"synth-s{m['subject']}", stem
    m = _SLEEPEDF_RE.match(stem)
    if m:
        sid = f"{m['study'].upper()}{m['subject']}"
        return sid, f"{sid}{m['night']}"
    return stem, stem


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._") or "night"


def discover(in_dir: Path) -> list[Candidate]:
    """Recordings under ``in_dir`` (recursive; EDF/BDF), hypnogram/annotation EDFs excluded.

    Night ids are unique: two files with the same id get their relative folder prepended.
    """
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise FileNotFoundError(f"input folder {in_dir} does not exist or is not a folder")
    files = sorted(p for p in in_dir.rglob("*") if p.is_file() and p.suffix.lower() in EDF_SUFFIXES
                   and not _HYPNO_RE.search(p.stem) and _TMP_MARK not in p.name)
    out: list[Candidate] = []
    seen: dict[str, int] = {}
    ids = [subject_night_ids(p) for p in files]
    counts: dict[str, int] = {}
    for _, night in ids:
        counts[night] = counts.get(night, 0) + 1
    for p, (subject, night) in zip(files, ids):
        if counts[night] > 1:  # same stem in different folders
            rel = p.relative_to(in_dir).with_suffix("")
            night = "__".join(rel.parts)
        night = _safe_id(night)
        k = seen.get(night, 0)
        seen[night] = k + 1
        if k:
            night = f"{night}_{k}"
        out.append(Candidate(p, _safe_id(subject), night))
    return out


def sha256_of(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# One file → one shard (runs in a worker process)
# ----------------------------------------------------------------------------------------------


def _event_fields(ev: Any) -> tuple[str, float, float]:
    return str(ev.type), float(ev.onset), float(ev.duration)


def _events_by_epoch(events: Iterable[Any], n: int) -> list[list[dict[str, Any]]]:
    """Scored events grouped by the epoch holding their onset (events past the end dropped)."""
    out: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    for ev in events:
        typ, onset, dur = _event_fields(ev)
        k = int(math.floor(onset / EPOCH_SECONDS))
        if 0 <= k < n:
            out[k].append({"type": typ, "onset": round(onset, 3), "duration": round(dur, 3)})
    return out


def _load_labels(path: Path, recording: Any) -> tuple[Any, str]:
    """(NightAnnotations, where it came from): a sidecar file found by ``find_scoring_for`` (Sleep-EDF
    hypnogram, NSRR XML, ...) or the recording's own annotations (synthetic EDF+, DREAMS hypnogram
    channel). PrepareError when there is none or it does not fit the recording."""
    from ..psg.annotations import find_scoring_for, load_scoring, parse_event, parse_stage

    n_max = int(math.ceil(float(recording.duration) / EPOCH_SECONDS))
    side = find_scoring_for(path)
    if side is None:
        raise PrepareError(f"{path.name}: no sleep scoring found (no stage/event annotations in the file, "
                           "no hypnogram/XML/CSV next to it)")
    if Path(side).resolve() == Path(path).resolve():
        end = float(recording.duration) + EPOCH_SECONDS
        late = [a for a in recording.annotations if a.onset >= end
                and (parse_stage(a.text) is not None or parse_event(a.text))]
        if late:
            raise PrepareError(
                f"{path.name}: annotation mismatch: {len(late)} scoring annotations start after the end "
                f"of the signals ({recording.duration:.0f} s), first {late[0].text!r} at {late[0].onset:.0f} s")
        scoring = load_scoring(recording)
        _check_scoring(scoring.stages, n_max, path.name)
        return scoring, "in-file"
    scoring = load_scoring(side)  # full length: a scoring longer than the signals is caught here
    _check_scoring(scoring.stages, n_max, f"{path.name} with {Path(side).name}")
    return scoring, str(side)


def _check_scoring(stages: np.ndarray, n_epochs: int, name: str) -> None:
    scored = np.flatnonzero(np.asarray(stages) >= 0)
    if scored.size == 0:
        raise PrepareError(f"{name}: the annotations hold no scored sleep stage")
    if scored[-1] > n_epochs:  # more than one epoch of scoring beyond the end of the signal
        raise PrepareError(
            f"{name}: annotation mismatch: stages are scored up to epoch {int(scored[-1])} "
            f"but the recording has only {n_epochs} epochs ({n_epochs * EPOCH_SECONDS:.0f} s)")


def prepare_file(cand: Candidate, shard_path: Path, params: PreprocessParams,
                 overrides: Mapping[str, str] | None = None,
                 previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Turn one recording into its shard; returns its manifest entry (never raises).

    ``previous`` is the file's entry in an earlier manifest: if its sha256 matches and the shard
    exists the file is skipped (``skipped: true`` in the returned entry).
    """
    t0 = time.perf_counter()
    entry: dict[str, Any] = {
        "path": str(cand.path), "sha256": None, "size": None, "subject": cand.subject,
        "night": cand.night, "shard": f"{SHARD_DIR}/{shard_path.name}", "n_epochs": 0,
        "status": "failed", "error": None, "scoring": None, "channels": {}, "seconds": 0.0,
    }
    try:
        entry["size"] = cand.path.stat().st_size
        entry["sha256"] = sha256_of(cand.path)
        if (previous and previous.get("status") == "ok" and previous.get("sha256") == entry["sha256"]
                and shard_path.exists()):
            done = dict(previous)
            done["skipped"] = True
            return done
        entry.update(_convert(cand, shard_path, params, overrides))
        entry["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a bad file must never abort the run
        msg = str(exc) or type(exc).__name__
        if str(cand.path.name) not in msg:
            msg = f"{cand.path.name}: {msg}"
        entry["error"] = f"{type(exc).__name__}: {msg}"
        log.info("skipping %s: %s", cand.path, entry["error"])
    entry["seconds"] = round(time.perf_counter() - t0, 3)
    return entry


def _convert(cand: Candidate, shard_path: Path, params: PreprocessParams,
             overrides: Mapping[str, str] | None) -> dict[str, Any]:
    from ..psg.annotations import epoch_labels
    from ..psg.montage import normalise_label, resolve_channels
    from ..psg.preprocess import iter_recording_epochs
    from ..psg.recording import open_recording

    rec = open_recording(cand.path)
    try:
        labels = [c.label for c in rec.channels]
        have = {normalise_label(lab) for lab in labels}
        # an override applies to the files that have its channel; the others use the built-in map
        usable = {m: lab for m, lab in (overrides or {}).items() if normalise_label(lab) in have}
        skipped = sorted(set(overrides or {}) - set(usable))
        if skipped:
            log.info("%s: channel overrides for %s name no channel here; using the built-in map",
                     cand.path.name, ", ".join(skipped))
        chmap = resolve_channels(labels, overrides=usable, required=("eeg",), wanted=params.modalities,
                                 source=str(cand.path.name))
        scoring, source = _load_labels(cand.path, rec)
        n_max = int(math.ceil(float(rec.duration) / EPOCH_SECONDS))
        stage, apnea, hyp = (np.asarray(a, np.int8) for a in epoch_labels(scoring, n_max + 1))
        events = _events_by_epoch(getattr(scoring, "events", ()), n_max + 1)
        n = 0
        staging = [i for i, m in enumerate(params.modalities) if m in _STAGE_MODALITIES]
        usable = 0
        reasons: dict[str, int] = {}
        with ShardWriter(shard_path, cand.subject, cand.night, params.modalities) as w:
            for ep in iter_recording_epochs(rec, chmap, params):
                k = ep.index
                w.add(k, ep.start, ep.data, ep.quality, ep.present, ep.log_scale, stage[k], apnea[k],
                      hyp[k], json.dumps(events[k]) if events[k] else "[]")
                n += 1
                if any(ep.present[i] for i in staging) or (not staging and ep.any_present):
                    usable += 1
                else:
                    for i in staging:
                        why = f"{params.modalities[i]} {Quality.describe(int(ep.quality[i]))}"
                        reasons[why] = reasons.get(why, 0) + 1
            if n == 0:
                raise PrepareError(f"{cand.path.name}: the recording is shorter than one 30-s epoch")
            if usable == 0:
                raise PrepareError(f"{cand.path.name}: no usable epoch: no EEG/EOG signal in any of its {n} "
                                   "epochs (" + ", ".join(f"{r}: {c}" for r, c in sorted(reasons.items())) + ")")
            w.commit()
    finally:
        close = getattr(rec, "close", None)
        if callable(close):
            close()
    return {"n_epochs": n, "scoring": source, "channels": dict(chmap)}


# ----------------------------------------------------------------------------------------------
# The split and the manifest
# ----------------------------------------------------------------------------------------------


def split_subjects(subjects: Iterable[str], fractions: Sequence[float] = (0.7, 0.15, 0.15),
                   seed: int = 0) -> dict[str, list[str]]:
    """Seeded subject-level split ``{train, val, test}`` (each sorted; no subject in two).

    With at least 3 subjects val and test each get at least one and train keeps at least one;
    with 2 subjects: one train, one val; with 1: train only.
    """
    subs = sorted(set(subjects))
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"split fractions must be three non-negative numbers, got {tuple(fractions)}")
    total = float(sum(fractions))
    n = len(subs)
    order = [subs[i] for i in np.random.default_rng(seed).permutation(n)]
    n_val = int(round(n * fractions[1] / total))
    n_test = int(round(n * fractions[2] / total))
    if n >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
        while n_val + n_test > n - 1:
            if n_val >= n_test:
                n_val -= 1
            else:
                n_test -= 1
    elif n == 2:
        n_val, n_test = 1, 0
    else:
        n_val = n_test = 0
    return {"train": sorted(order[n_val + n_test:]), "val": sorted(order[:n_val]),
            "test": sorted(order[n_val:n_val + n_test])}


@dataclass
class Manifest:
    """``manifest.json`` in memory. ``files``: per-file entries (path, sha256, size, subject,
    night, shard, n_epochs, status ok|failed, error, ...); ``split``: subjects per split."""

    params: dict[str, Any]
    modalities: list[str]
    files: list[dict[str, Any]]
    split: dict[str, list[str]]
    seed: int = 0
    schema_version: int = SCHEMA_VERSION
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "created": self.created, "params": self.params,
                "modalities": self.modalities, "seed": self.seed, "split": self.split,
                "files": self.files, **self.extra}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        known = {"schema_version", "created", "params", "modalities", "seed", "split", "files"}
        return cls(params=dict(d["params"]), modalities=list(d["modalities"]), files=list(d["files"]),
                   split={k: list(v) for k, v in d.get("split", {}).items()}, seed=int(d.get("seed", 0)),
                   schema_version=int(d.get("schema_version", 0)), created=str(d.get("created", "")),
                   extra={k: v for k, v in d.items() if k not in known})

    @property
    def ok_files(self) -> list[dict[str, Any]]:
        return [f for f in self.files if f.get("status") == "ok"]

    @property
    def failed_files(self) -> list[dict[str, Any]]:
        return [f for f in self.files if f.get("status") != "ok"]

    def split_of(self, subject: str) -> str | None:
        for name, subs in self.split.items():
            if subject in subs:
                return name
        return None


def load_manifest(shard_dir: Path | str) -> Manifest:
    """Read ``<shard_dir>/manifest.json``; FileNotFoundError / ValueError with the path if bad."""
    path = Path(shard_dir) / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {shard_dir} a folder made by 'synthsleep prepare'?")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        m = Manifest.from_dict(d)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a valid shard manifest ({exc})") from exc
    if m.schema_version > SCHEMA_VERSION:
        raise ValueError(f"{path}: shard schema version {m.schema_version} is newer than this "
                         f"synthsleep understands ({SCHEMA_VERSION})")
    return m


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """Worker initializer: SIGTERM this worker when the parent dies (Linux prctl), and exit at
    once if the parent is already gone."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pool's own shutdown is all there is
        pass
    if os.getppid() != parent:
        os._exit(1)


def _progress_key(params: PreprocessParams, overrides: Mapping[str, str] | None) -> str:
    """Journal key: entries of an interrupted run are reused only under the same parameters,
    overrides and shard schema version."""
    return json.dumps({"params": params.to_dict(), "overrides": dict(overrides or {}),
                       "schema_version": SCHEMA_VERSION}, sort_keys=True)


def _read_progress(path: Path, key: str) -> dict[str, dict[str, Any]]:
    """Entries of an interrupted run with the same parameters, by file path (a torn last line
    of a killed run is ignored)."""
    out: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
            if rec["key"] == key:
                entry = dict(rec["entry"])
                entry.pop("skipped", None)
                out[entry["path"]] = entry
        except (ValueError, KeyError, TypeError):
            continue
    if out:
        log.info("resuming an interrupted run: %d file(s) already done (%s)", len(out), path)
    return out


def _append_progress(path: Path, key: str, entry: Mapping[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"key": key, "entry": dict(entry)}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _cleanup_tmp(shard_dir: Path) -> None:
    for p in shard_dir.glob(f"*{_TMP_MARK}*"):
        log.info("removing leftover temporary file %s", p)
        p.unlink(missing_ok=True)


def prepare(
    in_dir: Path | str,
    out_dir: Path | str,
    params: PreprocessParams | None = None,
    workers: int | None = None,
    split: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    overrides: Mapping[str, str] | None = None,
    progress: bool = False,
) -> Manifest:
    """Convert every annotated recording under ``in_dir`` into shards under ``out_dir``.

    Args:
        in_dir: folder searched recursively for EDF/BDF recordings with annotations.
        out_dir: output folder (``manifest.json`` + ``shards/``), created if needed.
        params: preprocessing parameters; the stored modalities are ``params.modalities``.
        workers: worker processes, one recording each (1 = in this process; None = one per core).
        split: train/val/test fractions of the subjects.
        seed: split seed.
        overrides: ``{modality: channel label}`` forced for every file.
        progress: show a tqdm progress bar.

    Returns:
        The written ``Manifest`` (``extra["summary"]`` holds the run's numbers).
    """
    params = params or PreprocessParams()
    workers = workers or os.cpu_count() or 1
    bad = [m for m in (overrides or {}) if m not in MODALITIES]
    if bad:
        raise ValueError(f"channel overrides name unknown modalities {bad}; known: {', '.join(MODALITY_NAMES)}")
    in_dir, out_dir = Path(in_dir).resolve(), Path(out_dir)
    shard_dir = out_dir / SHARD_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    _cleanup_tmp(shard_dir)
    _cleanup_tmp(out_dir)
    t0 = time.perf_counter()
    cands = discover(in_dir)
    if not cands:
        log.warning("no EDF/BDF recordings found under %s", in_dir)

    previous: dict[str, dict[str, Any]] = {}
    try:
        old = load_manifest(out_dir)
        if (old.params == params.to_dict() and old.extra.get("overrides", {}) == dict(overrides or {})
                and old.schema_version == SCHEMA_VERSION):
            previous = {f["path"]: f for f in old.files}
        else:
            log.info("preprocessing parameters, channel overrides or the shard schema changed since "
                     "the last run: every file is redone")
    except FileNotFoundError:
        pass
    except ValueError as exc:
        log.warning("ignoring the old manifest: %s", exc)
    journal = out_dir / PROGRESS_NAME
    key = _progress_key(params, overrides)
    previous.update(_read_progress(journal, key))

    jobs = [(c, shard_dir / f"{c.night}.parquet", params, dict(overrides or {}), previous.get(str(c.path)))
            for c in cands]
    results: dict[int, dict[str, Any]] = {}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(jobs), unit="file", desc="prepare", dynamic_ncols=True)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for i, job in enumerate(jobs):
                results[i] = prepare_file(*job)
                _append_progress(journal, key, results[i])
                _tick(bar, results[i])
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), initializer=_die_with_parent,
                                     initargs=(os.getpid(),)) as pool:
                futs: dict[Future, int] = {pool.submit(prepare_file, *job): i for i, job in enumerate(jobs)}
                pending = set(futs)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        i = futs[f]
                        try:
                            results[i] = f.result()
                        except Exception as exc:  # noqa: BLE001 - a dead worker: record, go on
                            c = jobs[i][0]
                            results[i] = {"path": str(c.path), "sha256": None, "size": None,
                                          "subject": c.subject, "night": c.night, "shard": None,
                                          "n_epochs": 0, "status": "failed",
                                          "error": f"worker failed: {type(exc).__name__}: {exc}"}
                        _append_progress(journal, key, results[i])
                        _tick(bar, results[i])
    finally:
        if bar is not None:
            bar.close()

    files = [results[i] for i in range(len(jobs))]
    for f in files:  # a failed file must not leave a stale shard of an earlier version behind
        if f["status"] != "ok":
            f["shard"] = None
            stale = shard_dir / f"{f['night']}.parquet"
            if stale.exists():
                stale.unlink()
    skipped_nights = {f["night"] for f in files if f.pop("skipped", False)}
    skipped = len(skipped_nights)
    ok = [f for f in files if f["status"] == "ok"]
    n_done = sum(int(f["n_epochs"]) for f in ok if f["night"] not in skipped_nights)
    splits = split_subjects([f["subject"] for f in ok], split, seed)
    seconds = time.perf_counter() - t0
    n_epochs = sum(int(f["n_epochs"]) for f in ok)
    summary = {
        "files": len(files), "ok": len(ok), "failed": len(files) - len(ok), "skipped": skipped,
        "epochs": n_epochs, "epochs_processed": n_done, "seconds": round(seconds, 3),
        "epochs_per_second": round(n_done / seconds, 2) if seconds > 0 else None,
        "subjects": {k: len(v) for k, v in splits.items()},
        "nights": {k: sum(1 for f in ok if f["subject"] in set(v)) for k, v in splits.items()},
    }
    manifest = Manifest(params=params.to_dict(), modalities=list(params.modalities), files=files,
                        split=splits, seed=seed, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        extra={"split_fractions": list(split), "overrides": dict(overrides or {}),
                               "summary": summary})
    write_json_atomic(out_dir / MANIFEST_NAME, manifest.to_dict())
    journal.unlink(missing_ok=True)  # the manifest now records every file
    failed = [f for f in files if f["status"] != "ok"]
    if failed:
        log.warning("%d of %d files failed and were skipped (reasons in %s): %s", len(failed), len(files),
                    out_dir / MANIFEST_NAME, ", ".join(Path(f["path"]).name for f in failed[:10]))
    log.info("prepared %d/%d files (%d unchanged), %d epochs in %.1f s", len(ok), len(files), skipped,
             n_epochs, seconds)
    return manifest


def _tick(bar: Any, entry: Mapping[str, Any]) -> None:
    if bar is None:
        return
    bar.set_postfix_str(f"{entry.get('night')}: {entry.get('status')}", refresh=False)
    bar.update(1)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in", dest="in_dir", required=True, metavar="DIR",
                        help="folder of EDF/BDF recordings with annotations (searched recursively)")
    parser.add_argument("--out", required=True, metavar="SHARDS", help="output folder for manifest.json + shards/")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes, one recording each (default: one per core)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subject-level split (default 0)")
    parser.add_argument("--split", type=float, nargs=3, default=(0.7, 0.15, 0.15), metavar=("TRAIN", "VAL", "TEST"),
                        help="subject fractions (default 0.7 0.15 0.15)")
    parser.add_argument("--channel", action="append", default=[], metavar="MODALITY=LABEL",
                        help="force a channel for a modality, e.g. --channel eeg='EEG Fpz-Cz' (repeatable)")
    parser.add_argument("--modalities", nargs="+", default=None, metavar="M",
                        help="modalities to store (default: all montage modalities)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    overrides = parse_overrides(args.channel)
    params = PreprocessParams(modalities=tuple(args.modalities)) if args.modalities else PreprocessParams()
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    m = prepare(args.in_dir, args.out, params=params, workers=args.workers, split=tuple(args.split),
                seed=args.seed, overrides=overrides, progress=not args.no_progress)
    s = m.extra["summary"]
    con = Console()
    t = Table(title=f"synthsleep prepare → {args.out}")
    t.add_column("night")
    t.add_column("subject")
    t.add_column("split")
    t.add_column("status")
    t.add_column("epochs", justify="right")
    t.add_column("reason / scoring")
    for f in m.files:
        ok = f["status"] == "ok"
        t.add_row(f["night"], f["subject"], m.split_of(f["subject"]) or "-" if ok else "-",
                  "[green]ok[/green]" if ok else "[red]failed[/red]", str(f["n_epochs"]),
                  str(f.get("scoring")) if ok else str(f.get("error")))
    con.print(t)
    con.print(f"files: {s['files']} ({s['ok']} ok, {s['failed']} failed, {s['skipped']} unchanged and skipped)  "
              f"epochs: {s['epochs']}  subjects train/val/test: {s['subjects']['train']}/"
              f"{s['subjects']['val']}/{s['subjects']['test']}  time: {s['seconds']:.1f} s  "
              f"({s['epochs_processed']} epochs processed, {s['epochs_per_second'] or 0:.1f} epochs/s)")
    if s["files"] == 0:
        con.print(f"[yellow]no EDF/BDF recordings found under {args.in_dir}[/yellow]")
        return 1
    return 0 if s["ok"] > 0 else 1
