"""The one reader of prepared Parquet shards, for training and evaluation alike.

A prepared folder (``synthsleep prepare``: ``manifest.json`` + ``shards/<night>.parquet``, one row
per 30-s epoch) is read night by night into ``Night`` objects in a model's modality order:

- ``split_files``: the manifest entries of one subject-level split, in (subject, night) order;
- ``label_subjects``: THE choice of the subjects that keep their labels at a label fraction
  (DESIGN defect 6: every task loses its labels together), seeded;
- ``read_shard``: one shard -> ``Night`` (modalities the shard lacks are absent everywhere;
  ``present`` is the shard's ``present_<modality>`` column, or inferred for older shards by
  ``infer_present``; ``log_scale`` its ``log_scale_<modality>`` column, NaN for older shards);
- ``iter_nights`` (one night in memory at a time: evaluation) and ``load_nights`` (all of them:
  training, where embeddings are cached per night).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..psg.clinical import N_STAGES, count_respiratory_events
from ..psg.epoch import EPOCH_SAMPLES, Quality

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: Quality bits that make a modality absent (for shards written before ``present_<modality>``).
ABSENT_BITS = int(Quality.MISSING | Quality.FLAT | Quality.IMPLAUSIBLE | Quality.LOW_RATE)


@dataclass
class Night:
    """One prepared night in memory, in the model's modality order.

    x: [T, M, 3000] normalised signals (float16 for training, which halves the memory and is cast
    per batch; float32 for evaluation); present: bool [T, M]; log_scale: float32 [T, M], ln of
    the scale (the modality's unit, e.g. uV) each row of x was divided by (``Epoch.log_scale``;
    0 where absent; NaN: shard predates log_scale; re-run prepare); stage / apnea / hypopnea: int8 [T]
    (-1 unknown or label withheld); events: the scored events whose onset lies in the night
    (``{type, onset, duration}``, type lower-case); n_apnea_events / n_hypopnea_events: how many
    of them are apneas / hypopneas.
    """

    night: str
    subject: str
    x: np.ndarray
    present: np.ndarray
    log_scale: np.ndarray
    stage: np.ndarray
    apnea: np.ndarray
    hypopnea: np.ndarray
    n_apnea_events: int = 0
    n_hypopnea_events: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def labelled(self) -> bool:
        return bool((self.stage >= 0).any() or (self.apnea >= 0).any() or (self.hypopnea >= 0).any())

    def withhold_labels(self) -> None:
        """Drop every label of this night (label-fraction experiments)."""
        self.stage = np.full_like(self.stage, -1)
        self.apnea = np.full_like(self.apnea, -1)
        self.hypopnea = np.full_like(self.hypopnea, -1)


def infer_present(quality: np.ndarray, signal: np.ndarray) -> np.ndarray:
    """Present mask of one modality of a shard without ``present_<modality>`` columns.

    quality uint8 [T] (Quality bits), signal [T, 3000]. Absent when a disqualifying bit is set
    (missing, flat, implausible, low rate) or the row is all zeros (``prepare`` zero-fills an
    absent modality: a partial or saturated one leaves only zeros behind).
    """
    q = np.asarray(quality).astype(np.uint8)
    return ((q & ABSENT_BITS) == 0) & (np.abs(signal).max(axis=1) > 0)


def parse_events(column: list[str | None], path: Path | str = "") -> list[dict[str, Any]]:
    """The events of a shard's per-epoch ``events`` JSON column, types lower-cased (a cell
    that is not valid JSON is skipped with a warning naming the shard)."""
    out: list[dict[str, Any]] = []
    for s in column:
        if not s or s == "[]":
            continue
        try:
            evs = json.loads(s)
        except json.JSONDecodeError:
            log.warning("%s: an events cell is not valid JSON; skipped", path)
            continue
        out += [{**e, "type": str(e.get("type", "")).lower()} for e in evs]
    return out


def read_shard(path: Path, modalities: tuple[str, ...], dtype: type = np.float16) -> Night:
    """One Parquet shard -> Night with ``x`` of ``dtype`` in ``modalities`` order.

    ``log_scale`` of a modality the shard lacks is 0 (absent); of a shard written before the
    ``log_scale_<modality>`` columns it is NaN (a warning says to re-run ``prepare``).

    Raises:
        ValueError: the file cannot be read, lacks a label/id column, or a signal row does not
            hold 3000 samples (the message names the shard and the column).
    """
    import pyarrow.parquet as pq

    try:
        have = set(pq.read_schema(path).names)
        wanted = [c for c in ("subject", "night", "stage", "apnea", "hypopnea", "events") if c in have]
        wanted += [f"{p}_{m}" for m in modalities for p in ("sig", "qual", "present", "log_scale")
                   if f"{p}_{m}" in have]
        table = pq.read_table(path, columns=wanted)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise ValueError(f"cannot read shard {path}: {e}") from None
    names = set(table.column_names)
    for col in ("stage", "apnea", "hypopnea", "subject", "night"):
        if col not in names:
            raise ValueError(f"shard {path} has no column {col!r} (columns: {sorted(names)})")
    n = table.num_rows
    stale = [m for m in modalities if f"sig_{m}" in names and f"log_scale_{m}" not in names]
    if stale:
        log.warning("shard %s predates log_scale (no log_scale_<modality> for %s): NaN; re-run prepare",
                    path, ", ".join(stale))
    x = np.zeros((n, len(modalities), EPOCH_SAMPLES), dtype)
    present = np.zeros((n, len(modalities)), bool)
    log_scale = np.zeros((n, len(modalities)), np.float32)
    for i, m in enumerate(modalities):
        if f"sig_{m}" not in names:
            continue
        arr = table.column(f"sig_{m}").combine_chunks()
        vals = arr.flatten().to_numpy(zero_copy_only=False).reshape(n, -1)
        if vals.shape[1] != EPOCH_SAMPLES:
            raise ValueError(f"shard {path}: sig_{m} rows have {vals.shape[1]} samples, "
                             f"expected {EPOCH_SAMPLES}")
        x[:, i] = vals
        if f"present_{m}" in names:
            present[:, i] = table.column(f"present_{m}").to_numpy(zero_copy_only=False)
        else:
            present[:, i] = infer_present(table.column(f"qual_{m}").to_numpy(), vals)
        col = f"log_scale_{m}"
        log_scale[:, i] = table.column(col).to_numpy(zero_copy_only=False) if col in names else np.nan
    lab = {c: table.column(c).to_numpy(zero_copy_only=False).astype(np.int8)
           for c in ("stage", "apnea", "hypopnea")}
    events = parse_events(table.column("events").to_pylist(), path) if "events" in names else []
    n_ap, n_hy = count_respiratory_events(events)
    subject = str(table.column("subject")[0].as_py()) if n else ""
    night = str(table.column("night")[0].as_py()) if n else path.stem
    return Night(night, subject, x, present, log_scale, lab["stage"], lab["apnea"], lab["hypopnea"],
                 n_ap, n_hy, events)


def label_subjects(subjects: list[str], fraction: float, seed: int) -> set[str]:
    """Seeded choice of ``fraction`` of the subjects (at least one) whose labels are kept.

    The one definition used by every job that withholds labels (fine-tuning, the probe): the same
    (fraction, seed) picks the same subjects everywhere.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    subs = sorted(set(subjects))
    if fraction >= 1.0:
        return set(subs)
    k = max(1, int(round(fraction * len(subs))))
    rng = np.random.default_rng([seed, 0x1AB])
    return set(rng.choice(subs, size=k, replace=False).tolist())


def split_files(shard_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """Manifest entries (status ok, with a shard) of one split, sorted by (subject, night).

    Raises:
        FileNotFoundError: no manifest.json, or a listed shard file is missing.
        ValueError: the manifest has no such split.
    """
    from .prepare import load_manifest

    shard_dir = Path(shard_dir)
    man = load_manifest(shard_dir)
    if split not in man.split:
        raise ValueError(f"{shard_dir}/manifest.json has no split {split!r} (has {sorted(man.split)})")
    subjects = set(man.split[split])
    files = [f for f in man.ok_files if f["subject"] in subjects and f.get("shard")]
    for f in files:
        if not (shard_dir / f["shard"]).exists():
            raise FileNotFoundError(f"{shard_dir / f['shard']}: shard of night {f['night']} listed in "
                                    "the manifest is missing")
    return sorted(files, key=lambda f: (f["subject"], f["night"]))


def stage_mix(shard_dir: str | Path, split: str) -> list[float]:
    """Fraction of each stage (W, N1, N2, N3, REM) among the scored epochs of a split: [5].

    The training split's mix goes into a model's provenance (``train_stage_mix``): the stage mix
    its BatchNorm statistics were estimated on, which ``synthsleep adapt`` balances to.
    """
    counts = np.zeros(N_STAGES, np.int64)
    for f in split_files(shard_dir, split):
        st = read_shard(Path(shard_dir) / f["shard"], ()).stage
        counts += np.bincount(st[st >= 0], minlength=N_STAGES)[:N_STAGES]
    if not counts.sum():
        raise ValueError(f"{shard_dir}: split {split!r} has no scored epoch")
    return [round(float(c), 4) for c in counts / counts.sum()]


def iter_nights(shard_dir: str | Path, split: str, modalities: tuple[str, ...],
                label_fraction: float = 1.0, seed: int = 0, max_nights: int | None = None,
                dtype: type = np.float16) -> Iterator[Night]:
    """The nights of one subject-level split (``train``/``val``/``test``), one at a time.

    With ``label_fraction`` < 1 only that fraction of the split's SUBJECTS (``label_subjects``)
    keep their labels (stage, apnea and hypopnea alike); the other nights keep their signals,
    labels set to -1.
    """
    shard_dir = Path(shard_dir)
    files = split_files(shard_dir, split)
    if max_nights is not None:
        files = files[:max_nights]
    keep = label_subjects([f["subject"] for f in files], label_fraction, seed) if files else set()
    for f in files:
        nt = read_shard(shard_dir / f["shard"], modalities, dtype)
        if nt.subject not in keep:
            nt.withhold_labels()
        yield nt


def load_nights(shard_dir: str | Path, split: str, modalities: tuple[str, ...],
                label_fraction: float = 1.0, seed: int = 0, max_nights: int | None = None,
                dtype: type = np.float16) -> list[Night]:
    """Every night of a split in memory (``iter_nights`` collected; see there)."""
    nights = list(iter_nights(shard_dir, split, modalities, label_fraction, seed, max_nights, dtype))
    log.info("loaded %d %s nights (%d epochs; labels kept for %d subjects)", len(nights), split,
             sum(len(n) for n in nights), len({n.subject for n in nights if n.labelled}))
    return nights
