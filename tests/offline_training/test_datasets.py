"""Shard reading: order of whole-night chunks, lanes with state carry, label fraction by subject."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from synthsleep.offline_training.datasets import (
    BlockShuffleSampler,
    EpochDataset,
    NightLanes,
    NightSequenceDataset,
    ShardIndex,
)
from synthsleep.offline_training.prepare import (
    SHARD_DIR,
    Manifest,
    ShardWriter,
    split_subjects,
    write_json_atomic,
)
from synthsleep.psg.epoch import Quality
from synthsleep.psg.preprocess import PreprocessParams

torch.set_num_threads(1)
MODS = ("eeg", "eog", "emg")


def _value(night_no: int, epoch: int) -> float:
    return night_no * 1000.0 + epoch


def make_shards(root: Path, nights: dict[str, tuple[str, int]], split: dict[str, list[str]] | None = None,
                row_group: int = 5) -> Path:
    """Write fake shards: sig_eeg of epoch e of the i-th night is filled with i*1000+e, stage = e % 5,
    apnea = e % 2, hypopnea = (e+1) % 2; emg absent (FLAT) on odd epochs."""
    (root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    files = []
    for i, (night, (subject, n)) in enumerate(nights.items()):
        with ShardWriter(root / SHARD_DIR / f"{night}.parquet", subject, night, MODS, row_group=row_group) as w:
            for e in range(n):
                data = np.zeros((3, 3000), np.float32)
                data[0] = _value(i, e)
                data[1] = -1.0
                qual = np.array([0, int(Quality.CLIPPED), int(Quality.FLAT) if e % 2 else 0], np.uint8)
                pres = np.array([True, True, e % 2 == 0])
                w.add(e, 30.0 * e, data, qual, pres, e % 5, e % 2, (e + 1) % 2)
            w.commit()
        files.append({"path": f"/x/{night}.edf", "sha256": "0", "size": 1, "subject": subject, "night": night,
                      "shard": f"{SHARD_DIR}/{night}.parquet", "n_epochs": n, "status": "ok", "error": None})
    subjects = sorted({s for s, _ in nights.values()})
    split = split or {"train": subjects, "val": [], "test": []}
    m = Manifest(params=PreprocessParams(modalities=MODS).to_dict(), modalities=list(MODS), files=files, split=split)
    write_json_atomic(root / "manifest.json", m.to_dict())
    return root


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    nights = {"a1": ("A", 23), "a2": ("A", 7), "b1": ("B", 12), "c1": ("C", 30), "d1": ("D", 4)}
    return make_shards(tmp_path, nights)


def test_epoch_dataset_reads_every_epoch_once(shards: Path) -> None:
    ds = EpochDataset(ShardIndex(shards, "train"))
    assert len(ds) == 23 + 7 + 12 + 30 + 4
    s = ds[23 + 3]  # night a2 (second), epoch 3
    assert s.x.shape == (3, 3000) and s.x.dtype == torch.float32
    assert float(s.x[0, 0]) == _value(1, 3)
    assert s.present.tolist() == [True, True, False]
    assert s.labels.tolist() == [3, 1, 0]
    seen = set()
    sampler = BlockShuffleSampler(ds, seed=1)
    order = list(sampler)
    assert sorted(order) == list(range(len(ds))) and order != list(range(len(ds)))
    for i in order[:40]:
        k, row = ds.locate(i)
        assert float(ds[i].x[0, 0]) == _value(k, row)
        seen.add(i)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch.x.shape == (4, 3, 3000) and batch.stage.tolist() == [0, 1, 2, 3]


def test_night_sequence_chunks_in_order(shards: Path) -> None:
    ds = NightSequenceDataset(ShardIndex(shards, "train"), seq_len=8)
    assert len(ds) == 3 + 1 + 2 + 4 + 1
    got = [(c.night, c.chunk, c.x.shape[0]) for c in ds]
    assert got[:4] == [("a1", 0, 8), ("a1", 1, 8), ("a1", 2, 7), ("a2", 0, 7)]
    for ch in ds:  # chunk c holds epochs c*8 ... consecutively, across row-group borders (size 5)
        k = [n.night for n in ds.index.nights].index(ch.night)
        want = [_value(k, ch.chunk * 8 + t) for t in range(ch.x.shape[0])]
        assert ch.x[:, 0, 0].tolist() == want
        assert ch.stage.tolist() == [(ch.chunk * 8 + t) % 5 for t in range(ch.x.shape[0])]
        assert ch.present.shape == (ch.x.shape[0], 3)


def test_lanes_carry_nights_in_order(shards: Path) -> None:
    ds = NightSequenceDataset(ShardIndex(shards, "train"), seq_len=8)
    lanes = NightLanes(ds, lanes=2, shuffle=True, seed=3)
    pos: dict[int, tuple[str, int]] = {}
    seen: dict[str, list[int]] = {}
    steps = list(lanes)
    assert len(steps) == len(lanes)
    for step in steps:
        assert step.x.shape == (2, 8, 3, 3000) and step.mask.shape == (2, 8)
        for b in range(2):
            night, c = step.nights[b], step.chunks[b]
            if night is None:
                assert not step.mask[b].any() and (step.stage[b] == -1).all()
                continue
            if step.reset[b]:
                assert c == 0
            else:  # state carry: same lane, same night, next chunk
                assert pos[b] == (night, c - 1)
            pos[b] = (night, c)
            seen.setdefault(night, []).append(c)
            t = int(step.mask[b].sum())
            assert step.mask[b, :t].all() and not step.mask[b, t:].any()
            k = [n.night for n in ds.index.nights].index(night)
            assert step.x[b, :t, 0, 0].tolist() == [_value(k, c * 8 + i) for i in range(t)]
            assert (step.stage[b, t:] == -1).all()
    assert {n: sorted(v) for n, v in seen.items()} == {n.night: list(range(ds.n_chunks(i)))
                                                       for i, n in enumerate(ds.index.nights)}
    # ranks partition the nights
    r0 = NightLanes(ds, lanes=1, rank=0, world_size=2).night_order()
    r1 = NightLanes(ds, lanes=1, rank=1, world_size=2).night_order()
    assert sorted(r0 + r1) == list(range(5)) and not set(r0) & set(r1)


def test_label_fraction_by_subject(tmp_path: Path) -> None:
    nights = {f"s{i}n{j}": (f"S{i}", 6) for i in range(10) for j in range(2)}
    root = make_shards(tmp_path, nights)
    idx = ShardIndex(root, "train", label_fraction=0.3, seed=5)
    assert len(idx.labelled_subjects) == 3
    assert ShardIndex(root, "train", label_fraction=0.3, seed=5).labelled_subjects == idx.labelled_subjects
    assert ShardIndex(root, "train", label_fraction=0.3, seed=6).labelled_subjects != idx.labelled_subjects
    ds = NightSequenceDataset(idx, seq_len=6)
    for ch in ds:
        subject = next(n.subject for n in idx.nights if n.night == ch.night)
        if subject in idx.labelled_subjects:  # every task keeps its labels
            assert (ch.stage >= 0).all() and (ch.apnea >= 0).all() and (ch.hypopnea >= 0).all()
        else:  # every task loses them: stage, apnea and hypopnea alike
            assert (ch.stage == -1).all() and (ch.apnea == -1).all() and (ch.hypopnea == -1).all()
    eds = EpochDataset(idx)
    lab = [int(eds[i].labels[0]) >= 0 for i in range(len(eds))]
    assert sum(lab) == 3 * 2 * 6
    tiny = ShardIndex(root, "train", label_fraction=0.01)
    assert len(tiny.labelled_subjects) == 1  # at least one subject keeps labels


def test_split_selects_subjects(tmp_path: Path) -> None:
    nights = {f"s{i}": (f"S{i}", 3) for i in range(6)}
    split = split_subjects([s for s, _ in nights.values()], seed=2)
    root = make_shards(tmp_path, nights, split=split)
    got = {name: {n.subject for n in ShardIndex(root, name).nights} for name in ("train", "val", "test")}
    assert got == {k: set(v) for k, v in split.items()}
    with pytest.raises(ValueError, match="split"):
        ShardIndex(root, "dev")


def test_missing_manifest_is_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        ShardIndex(tmp_path)


def test_block_sampler_ranks_partition(shards: Path) -> None:
    ds = EpochDataset(ShardIndex(shards, "train"))
    parts = [list(BlockShuffleSampler(ds, seed=4, rank=r, world_size=2)) for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == -(-len(ds) // 2)
    assert not set(parts[0]) & set(parts[1])  # windows go to one rank each; padding repeats own items
    assert len(set(parts[0]) | set(parts[1])) >= len(ds) - 20  # at most one 4-group window is cut
    s = BlockShuffleSampler(ds, seed=4)
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first and sorted(list(s)) == list(range(len(ds)))
