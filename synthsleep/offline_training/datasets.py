"""Reading Parquet epoch shards for training and evaluation (torch datasets).

- ``ShardIndex``: the nights of one split from ``manifest.json``, with the label fraction applied
  by subject (DESIGN defect 6: the unlabelled subjects lose every task's labels).
- ``EpochDataset``: map-style over single epochs (pretraining, linear probes).
- ``NightSequenceDataset``: whole nights cut into consecutive ``seq_len``-epoch chunks, in order
  (truncated backprop through time with the state carried between chunks).
- ``NightLanes``: several nights side by side in parallel lanes, so chunk k of a lane follows
  chunk k-1 of the same lane; a lane that finishes a night starts the next one with ``reset``.

Shards are read lazily: files are memory-mapped, decoded one row group at a time, and only a
few open files and decoded row groups are kept (LRU). Nothing loads all shards into memory.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset, IterableDataset, Sampler

from ..psg.epoch import EPOCH_SAMPLES, Quality
from .prepare import Manifest, load_manifest

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# Quality bits that make a modality absent when the shard has no present_<mod> column (older
# shards). GAP/NONFINITE only make it absent above half an epoch, which the bits alone cannot
# tell: an all-zero signal row is taken as that case.
_ABSENT_BITS = int(Quality.MISSING | Quality.FLAT | Quality.IMPLAUSIBLE | Quality.LOW_RATE)
_PARTIAL_BITS = int(Quality.GAP | Quality.NONFINITE)


@dataclass(frozen=True)
class NightInfo:
    """One night of a split: ids, its shard file and its number of epochs."""

    night: str
    subject: str
    shard: Path
    n_epochs: int
    labelled: bool


class ShardIndex:
    """The nights of one split of a shard folder.

    Args:
        shard_dir: folder written by ``synthsleep prepare`` (``manifest.json`` + ``shards/``).
        split: ``train``, ``val``, ``test`` or ``all``.
        label_fraction: fraction (0, 1] of the split's SUBJECTS that keep their labels; the other
            subjects' epochs get -1 in stage, apnea and hypopnea alike. At least one subject keeps
            its labels.
        seed: which subjects keep their labels.

    Attributes:
        manifest, modalities (stored in the shards), nights (``NightInfo`` list, manifest order),
        subjects (sorted), labelled_subjects (set).
    """

    def __init__(self, shard_dir: Path | str, split: str = "train", label_fraction: float = 1.0,
                 seed: int = 0) -> None:
        if split not in (*SPLITS, "all"):
            raise ValueError(f"split must be one of train, val, test, all; got {split!r}")
        if not (0.0 < label_fraction <= 1.0):
            raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction!r}")
        self.shard_dir = Path(shard_dir)
        self.split = split
        self.label_fraction = float(label_fraction)
        self.seed = seed
        self.manifest: Manifest = load_manifest(self.shard_dir)
        self.modalities: tuple[str, ...] = tuple(self.manifest.modalities)
        wanted = (set().union(*map(set, self.manifest.split.values())) if split == "all"
                  else set(self.manifest.split.get(split, [])))
        files = [f for f in self.manifest.ok_files if f["subject"] in wanted]
        self.subjects: list[str] = sorted({f["subject"] for f in files})
        self.labelled_subjects: set[str] = self._choose_labelled(self.subjects, label_fraction, seed)
        self.nights: list[NightInfo] = []
        for f in files:
            path = self.shard_dir / f["shard"]
            if not path.exists():
                raise FileNotFoundError(f"{path}: shard of night {f['night']} listed in the manifest is missing")
            self.nights.append(NightInfo(f["night"], f["subject"], path, int(f["n_epochs"]),
                                         f["subject"] in self.labelled_subjects))
        if not self.nights:
            log.warning("%s: split %r has no nights", self.shard_dir, split)

    @staticmethod
    def _choose_labelled(subjects: Sequence[str], fraction: float, seed: int) -> set[str]:
        if not subjects:
            return set()
        n_keep = max(1, int(round(fraction * len(subjects))))
        order = np.random.default_rng(seed).permutation(len(subjects))
        return {subjects[i] for i in order[:n_keep]}

    @property
    def n_epochs(self) -> int:
        return sum(n.n_epochs for n in self.nights)

    def __len__(self) -> int:
        return len(self.nights)

    def __repr__(self) -> str:
        return (f"ShardIndex({str(self.shard_dir)!r}, split={self.split!r}, nights={len(self.nights)}, "
                f"subjects={len(self.subjects)}, labelled={len(self.labelled_subjects)}, epochs={self.n_epochs})")


# ----------------------------------------------------------------------------------------------
# Lazy shard reading
# ----------------------------------------------------------------------------------------------


@dataclass
class Block:
    """Decoded rows of one shard (numpy): x float32 [n, M, 3000], present bool [n, M],
    quality uint8 [n, M], stage/apnea/hypopnea int64 [n], epoch int64 [n], start float64 [n] (s),
    events: n JSON strings (only when asked for)."""

    x: np.ndarray
    present: np.ndarray
    quality: np.ndarray
    stage: np.ndarray
    apnea: np.ndarray
    hypopnea: np.ndarray
    epoch: np.ndarray
    start: np.ndarray
    events: list[str] | None = None

    def __len__(self) -> int:
        return int(self.stage.shape[0])

    def slice(self, a: int, b: int) -> Block:
        return Block(self.x[a:b], self.present[a:b], self.quality[a:b], self.stage[a:b], self.apnea[a:b],
                     self.hypopnea[a:b], self.epoch[a:b], self.start[a:b],
                     None if self.events is None else self.events[a:b])

    @staticmethod
    def concat(blocks: Sequence[Block]) -> Block:
        if len(blocks) == 1:
            return blocks[0]
        ev = None if any(b.events is None for b in blocks) else [e for b in blocks for e in b.events]
        return Block(*(np.concatenate([getattr(b, k) for b in blocks]) for k in
                       ("x", "present", "quality", "stage", "apnea", "hypopnea", "epoch", "start")), events=ev)


def _signal_matrix(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """fixed_size_list<float32, 3000> column → float32 [n, 3000] (zero-copy where possible)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(arr), EPOCH_SAMPLES)


class ShardFile:
    """One shard, memory-mapped, decoded by row group with a small LRU of decoded groups.

    Args:
        path: the ``.parquet`` shard.
        modalities: modalities wanted, in this row order (those the shard lacks come back as
            zeros with ``present`` False).
        cache_groups: decoded row groups kept.
    """

    def __init__(self, path: Path, modalities: Sequence[str], cache_groups: int = 4) -> None:
        self.path = Path(path)
        self.modalities = tuple(modalities)
        try:
            self.pf = pq.ParquetFile(str(self.path), memory_map=True)
        except (OSError, pa.ArrowException) as exc:
            raise ValueError(f"{self.path}: cannot read shard ({exc})") from exc
        names = set(self.pf.schema_arrow.names)
        self.stored = [m for m in self.modalities if f"sig_{m}" in names]
        self.has_present = all(f"present_{m}" in names for m in self.stored)
        self.has_events = "events" in names
        md = self.pf.metadata
        counts = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.n_rows = int(self.offsets[-1])
        self._cache: OrderedDict[tuple[int, bool], Block] = OrderedDict()
        self._cache_groups = cache_groups

    def _columns(self, events: bool) -> list[str]:
        cols = ["epoch", "start", "stage", "apnea", "hypopnea"]
        cols += [f"sig_{m}" for m in self.stored] + [f"qual_{m}" for m in self.stored]
        if self.has_present:
            cols += [f"present_{m}" for m in self.stored]
        if events and self.has_events:
            cols.append("events")
        return cols

    def _decode(self, t: pa.Table, events: bool) -> Block:
        n, M = t.num_rows, len(self.modalities)
        x = np.zeros((n, M, EPOCH_SAMPLES), np.float32)
        quality = np.full((n, M), int(Quality.MISSING), np.uint8)
        present = np.zeros((n, M), bool)
        for i, m in enumerate(self.modalities):
            if m not in self.stored:
                continue
            x[:, i] = _signal_matrix(t.column(f"sig_{m}"))
            quality[:, i] = t.column(f"qual_{m}").to_numpy()
            if self.has_present:
                present[:, i] = t.column(f"present_{m}").to_numpy(zero_copy_only=False)
            else:
                q = quality[:, i].astype(np.int64)
                zero_row = ~np.any(x[:, i] != 0.0, axis=1)
                present[:, i] = ((q & _ABSENT_BITS) == 0) & ~(((q & _PARTIAL_BITS) != 0) & zero_row)
        ev = t.column("events").to_pylist() if events and self.has_events else ([ "[]"] * n if events else None)
        return Block(x, present, quality,
                     *(t.column(k).to_numpy().astype(np.int64) for k in ("stage", "apnea", "hypopnea", "epoch")),
                     t.column("start").to_numpy().astype(np.float64), events=ev)

    def row_group(self, g: int, events: bool = False) -> Block:
        key = (g, events)
        blk = self._cache.get(key)
        if blk is not None:
            self._cache.move_to_end(key)
            return blk
        blk = self._decode(self.pf.read_row_group(g, columns=self._columns(events)), events)
        self._cache[key] = blk
        while len(self._cache) > self._cache_groups:
            self._cache.popitem(last=False)
        return blk

    def group_of(self, row: int) -> int:
        return int(np.searchsorted(self.offsets, row, side="right") - 1)

    def read(self, start: int, stop: int, events: bool = False) -> Block:
        """Rows [start, stop) decoded (row groups read as needed)."""
        start, stop = max(0, start), min(stop, self.n_rows)
        if stop <= start:
            raise IndexError(f"{self.path}: empty row range [{start}, {stop}) of {self.n_rows} rows")
        parts = []
        g = self.group_of(start)
        while g < len(self.offsets) - 1 and self.offsets[g] < stop:
            g0 = int(self.offsets[g])
            blk = self.row_group(g, events)
            parts.append(blk.slice(max(start - g0, 0), min(stop - g0, len(blk))))
            g += 1
        return Block.concat(parts)


class ShardCache:
    """LRU of open ``ShardFile`` objects (per process; rebuilt after pickling to a worker)."""

    def __init__(self, modalities: Sequence[str], max_open: int = 4, cache_groups: int = 4) -> None:
        self.modalities = tuple(modalities)
        self.max_open, self.cache_groups = max_open, cache_groups
        self._open: OrderedDict[Path, ShardFile] = OrderedDict()

    def get(self, path: Path) -> ShardFile:
        f = self._open.get(path)
        if f is None:
            f = ShardFile(path, self.modalities, self.cache_groups)
            self._open[path] = f
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(path)
        return f

    def __getstate__(self) -> dict[str, Any]:
        return {"modalities": self.modalities, "max_open": self.max_open, "cache_groups": self.cache_groups}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["modalities"], state["max_open"], state["cache_groups"])


def _labels_of(blk: Block, labelled: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if labelled:
        return blk.stage, blk.apnea, blk.hypopnea
    neg = np.full(len(blk), -1, np.int64)
    return neg, neg, neg


# ----------------------------------------------------------------------------------------------
# Single epochs
# ----------------------------------------------------------------------------------------------


class EpochSample(NamedTuple):
    """One epoch: x float32 [M, 3000], present bool [M], labels int64 [3] = (stage, apnea,
    hypopnea), -1 unknown/unlabelled. (After default collation every field gains a batch dim.)"""

    x: torch.Tensor
    present: torch.Tensor
    labels: torch.Tensor

    @property
    def stage(self) -> torch.Tensor:
        return self.labels[..., 0]

    @property
    def apnea(self) -> torch.Tensor:
        return self.labels[..., 1]

    @property
    def hypopnea(self) -> torch.Tensor:
        return self.labels[..., 2]


class EpochDataset(Dataset):
    """Map-style dataset over the single epochs of a split.

    Args:
        index: the split (``ShardIndex``).
        modalities: modality rows of ``x`` (default: the shards' modalities).
        max_open: shard files kept open per process.

    Random access decodes a row group (32 epochs) per miss; ``BlockShuffleSampler`` gives a
    shuffled order that reads each row group once per pass.
    """

    def __init__(self, index: ShardIndex, modalities: Sequence[str] | None = None, max_open: int = 4) -> None:
        self.index = index
        self.modalities = tuple(modalities or index.modalities)
        self._cache = ShardCache(self.modalities, max_open=max_open)
        counts = np.array([n.n_epochs for n in index.nights], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """(night number, row in its shard) of global epoch ``i``."""
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"epoch {i} out of range ({len(self)} epochs)")
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return k, int(i - self.offsets[k])

    def __getitem__(self, i: int) -> EpochSample:
        k, row = self.locate(int(i))
        night = self.index.nights[k]
        blk = self._cache.get(night.shard).read(row, row + 1)
        st, ap, hy = _labels_of(blk, night.labelled)
        return EpochSample(torch.from_numpy(np.array(blk.x[0])), torch.from_numpy(np.array(blk.present[0])),
                           torch.tensor([st[0], ap[0], hy[0]], dtype=torch.int64))

    def row_groups(self) -> list[np.ndarray]:
        """Global epoch indices grouped by shard row group (for block shuffling)."""
        out = []
        for k, night in enumerate(self.index.nights):
            f = self._cache.get(night.shard)
            for g in range(len(f.offsets) - 1):
                out.append(np.arange(f.offsets[g], f.offsets[g + 1]) + self.offsets[k])
        return out


class BlockShuffleSampler(Sampler[int]):
    """Shuffled epoch order with locality: row groups in random order, epochs shuffled within
    each window of ``window`` consecutive row groups. Call ``set_epoch(e)`` each pass.

    For DDP give ``rank``/``world_size``: windows go to the ranks round-robin and every rank
    yields exactly ``ceil(n / world_size)`` indices (its own list wrapped or cut), so all ranks
    run the same number of batches.
    """

    def __init__(self, dataset: EpochDataset, seed: int = 0, window: int = 4, rank: int = 0,
                 world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.groups = dataset.row_groups()
        self.seed, self.window, self.epoch = seed, max(1, int(window)), 0
        self.rank, self.world_size = rank, world_size
        self.n = sum(len(g) for g in self.groups)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.world_size)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(len(self.groups))
        mine: list[np.ndarray] = []
        for k, w in enumerate(range(0, len(order), self.window)):
            idx = np.concatenate([self.groups[g] for g in order[w:w + self.window]])
            perm = rng.permutation(idx)  # drawn on every rank: the same stream everywhere
            if k % self.world_size == self.rank:
                mine.append(perm)
        flat = np.concatenate(mine) if mine else np.zeros(0, np.int64)
        want = len(self)
        if flat.size and flat.size < want:
            flat = np.resize(flat, want)
        yield from (int(i) for i in flat[:want])


# ----------------------------------------------------------------------------------------------
# Whole nights in order
# ----------------------------------------------------------------------------------------------


class NightChunk(NamedTuple):
    """``seq_len`` consecutive epochs of one night (the last chunk may be shorter).

    night: night id; chunk: chunk number within the night (0, 1, ...); x float32 [T, M, 3000];
    present bool [T, M]; stage/apnea/hypopnea int64 [T] (-1 unknown/unlabelled).
    """

    night: str
    chunk: int
    x: torch.Tensor
    present: torch.Tensor
    stage: torch.Tensor
    apnea: torch.Tensor
    hypopnea: torch.Tensor


class NightSequenceDataset(Dataset):
    """Whole nights cut into consecutive ``seq_len``-epoch chunks, nights in index order and
    chunks in time order (``ds[j]`` is the j-th chunk overall; iterating yields that order).

    Args:
        index: the split.
        seq_len: epochs per chunk (T); the last chunk of a night holds the remainder.
        modalities: modality rows of ``x`` (default: the shards').
    """

    def __init__(self, index: ShardIndex, seq_len: int = 128, modalities: Sequence[str] | None = None,
                 max_open: int = 4) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        self.index, self.seq_len = index, int(seq_len)
        self.modalities = tuple(modalities or index.modalities)
        self._cache = ShardCache(self.modalities, max_open=max_open)
        self.chunks: list[tuple[int, int]] = [(k, c) for k, n in enumerate(index.nights)
                                              for c in range(self.n_chunks(k))]

    def n_chunks(self, night: int) -> int:
        """Chunks of night number ``night``."""
        return int(math.ceil(self.index.nights[night].n_epochs / self.seq_len))

    def __len__(self) -> int:
        return len(self.chunks)

    def chunk(self, night: int, c: int) -> NightChunk:
        """Chunk ``c`` of night number ``night``."""
        info = self.index.nights[night]
        a = c * self.seq_len
        blk = self._cache.get(info.shard).read(a, min(a + self.seq_len, info.n_epochs))
        st, ap, hy = _labels_of(blk, info.labelled)
        return NightChunk(info.night, c, torch.from_numpy(blk.x.copy()), torch.from_numpy(blk.present.copy()),
                          torch.from_numpy(st.copy()), torch.from_numpy(ap.copy()), torch.from_numpy(hy.copy()))

    def __getitem__(self, j: int) -> NightChunk:
        return self.chunk(*self.chunks[j])

    def __iter__(self) -> Iterator[NightChunk]:
        for k, c in self.chunks:
            yield self.chunk(k, c)

    def night(self, k: int, events: bool = False) -> Block:
        """All epochs of night number ``k`` as one numpy ``Block`` (evaluation, one night at a time)."""
        info = self.index.nights[k]
        return self._cache.get(info.shard).read(0, info.n_epochs, events=events)


class LaneBatch(NamedTuple):
    """One step of ``NightLanes``: B lanes × T epochs.

    x float32 [B, T, M, 3000]; present bool [B, T, M]; stage/apnea/hypopnea int64 [B, T]
    (-1 on padding); mask bool [B, T] (True = a real epoch); reset bool [B] (True = this lane
    starts a new night here: zero its state before this chunk); nights: B night ids (None for an
    idle lane); chunks: B chunk numbers (-1 for an idle lane).
    """

    x: torch.Tensor
    present: torch.Tensor
    stage: torch.Tensor
    apnea: torch.Tensor
    hypopnea: torch.Tensor
    mask: torch.Tensor
    reset: torch.Tensor
    nights: list[str | None]
    chunks: list[int]


class NightLanes(IterableDataset):
    """Nights in ``lanes`` parallel lanes for truncated BPTT with the state carried per lane.

    Each lane plays one night chunk after chunk; when a night ends the lane takes the next night
    from the queue (``reset`` True for that lane at that step; nights shorter than a multiple of
    ``seq_len`` are padded with ``mask`` False). When the queue is empty a lane idles (all-masked)
    until every lane is done. Use with ``DataLoader(lanes, batch_size=None)`` (0 or 1 worker).

    Args:
        dataset: a ``NightSequenceDataset``.
        lanes: batch size B.
        shuffle: shuffle the night order each pass (seeded by ``seed`` and ``set_epoch``).
        rank, world_size: for DDP, each rank takes nights ``rank::world_size`` of the order.
    """

    def __init__(self, dataset: NightSequenceDataset, lanes: int = 4, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if lanes < 1:
            raise ValueError(f"lanes must be positive, got {lanes}")
        self.ds, self.lanes, self.shuffle, self.seed = dataset, int(lanes), shuffle, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def night_order(self) -> list[int]:
        n = len(self.ds.index.nights)
        order = (np.random.default_rng((self.seed, self.epoch)).permutation(n) if self.shuffle
                 else np.arange(n))
        return [int(k) for k in order[self.rank::self.world_size]]

    def __len__(self) -> int:
        """Steps of one pass (exact: lanes are filled greedily in order)."""
        return sum(1 for _ in self._schedule())

    def _schedule(self) -> Iterator[list[tuple[int, int, bool] | None]]:
        queue = list(reversed(self.night_order()))
        cur: list[list[int] | None] = [None] * self.lanes  # [night, next chunk]
        while True:
            step: list[tuple[int, int, bool] | None] = []
            for b in range(self.lanes):
                reset = False
                if cur[b] is not None and cur[b][1] >= self.ds.n_chunks(cur[b][0]):
                    cur[b] = None
                if cur[b] is None and queue:
                    cur[b] = [queue.pop(), 0]
                    reset = True
                if cur[b] is None:
                    step.append(None)
                else:
                    step.append((cur[b][0], cur[b][1], reset))
                    cur[b][1] += 1
            if all(s is None for s in step):
                return
            yield step

    def __iter__(self) -> Iterator[LaneBatch]:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.num_workers > 1:
            raise RuntimeError("NightLanes must run in at most one DataLoader worker (lanes carry order)")
        T, M = self.ds.seq_len, len(self.ds.modalities)
        for step in self._schedule():
            B = self.lanes
            x = torch.zeros(B, T, M, EPOCH_SAMPLES)
            present = torch.zeros(B, T, M, dtype=torch.bool)
            labels = torch.full((3, B, T), -1, dtype=torch.int64)
            mask = torch.zeros(B, T, dtype=torch.bool)
            reset = torch.zeros(B, dtype=torch.bool)
            nights: list[str | None] = [None] * B
            chunks = [-1] * B
            for b, s in enumerate(step):
                if s is None:
                    continue
                k, c, r = s
                ch = self.ds.chunk(k, c)
                t = ch.x.shape[0]
                x[b, :t], present[b, :t] = ch.x, ch.present
                labels[0, b, :t], labels[1, b, :t], labels[2, b, :t] = ch.stage, ch.apnea, ch.hypopnea
                mask[b, :t] = True
                reset[b] = r
                nights[b], chunks[b] = ch.night, c
            yield LaneBatch(x, present, labels[0], labels[1], labels[2], mask, reset, nights, chunks)
