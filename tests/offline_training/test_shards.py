"""The one shard reader (training and evaluation) and the one lane planner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from synthsleep.offline_training.lanes import IDLE, plan_lanes, rank_lanes
from synthsleep.offline_training.prepare import (
    SHARD_DIR,
    Manifest,
    ShardWriter,
    split_subjects,
    write_json_atomic,
)
from synthsleep.offline_training.shards import (
    infer_present,
    iter_nights,
    label_subjects,
    load_nights,
    read_shard,
    stage_mix,
)
from synthsleep.psg.epoch import Quality
from synthsleep.psg.preprocess import PreprocessParams

MODS = ("eeg", "eog", "emg")


def _value(night_no: int, epoch: int) -> float:
    return night_no * 1000.0 + epoch


def _log_scale(night_no: int, epoch: int) -> np.ndarray:
    """log_scale of (eeg, eog, emg) written for epoch e of the i-th night (emg 0 when absent)."""
    return np.array([night_no + 0.25, epoch * 0.5, 1.5 if epoch % 2 == 0 else 0.0], np.float32)


def make_shards(root: Path, nights: dict[str, tuple[str, int]], split: dict[str, list[str]] | None = None,
                row_group: int = 5) -> Path:
    """Write fake shards: sig_eeg of epoch e of the i-th night is filled with i*1000+e, stage = e % 5,
    apnea = e % 2, hypopnea = (e+1) % 2; emg absent (FLAT) on odd epochs; log_scale ``_log_scale``."""
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
                w.add(e, 30.0 * e, data, qual, pres, _log_scale(i, e), e % 5, e % 2, (e + 1) % 2)
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


def _order(root: Path) -> list[str]:
    return [n.night for n in iter_nights(root, "train", MODS)]


def test_read_shard_every_epoch_in_order(shards: Path) -> None:
    nights = load_nights(shards, "train", MODS, dtype=np.float32)
    assert [n.night for n in nights] == ["a1", "a2", "b1", "c1", "d1"]  # by (subject, night)
    k = {"a1": 0, "a2": 1, "b1": 2, "c1": 3, "d1": 4}  # order written by make_shards
    for n in nights:  # every epoch, across row-group borders (groups of 5)
        assert n.x.dtype == np.float32 and n.x.shape == (len(n), 3, 3000)
        assert n.x[:, 0, 0].tolist() == [_value(k[n.night], e) for e in range(len(n))]
        assert n.stage.tolist() == [e % 5 for e in range(len(n))]
        assert n.apnea.tolist() == [e % 2 for e in range(len(n))]
        assert n.present[:, 2].tolist() == [e % 2 == 0 for e in range(len(n))]
        assert n.present[:, :2].all()
        assert n.log_scale.dtype == np.float32 and n.log_scale.shape == (len(n), 3)
        np.testing.assert_array_equal(n.log_scale, [_log_scale(k[n.night], e) for e in range(len(n))])
    # training keeps float16 (half the memory); the values are the same epochs
    f16 = read_shard(shards / SHARD_DIR / "a2.parquet", MODS)
    assert f16.x.dtype == np.float16 and f16.x[3, 0, 0] == np.float16(_value(1, 3))


def test_stage_mix_counts_every_scored_epoch_of_the_split(tmp_path: Path) -> None:
    nights = {"a1": ("A", 23), "b1": ("B", 12), "c1": ("C", 30)}  # stage = epoch % 5
    root = make_shards(tmp_path, nights, {"train": ["A", "B"], "val": ["C"], "test": []})
    want = np.bincount(np.r_[np.arange(23) % 5, np.arange(12) % 5], minlength=5) / 35
    assert stage_mix(root, "train") == pytest.approx(want, abs=1e-4)
    assert stage_mix(root, "val") == pytest.approx([0.2] * 5, abs=1e-4)
    with pytest.raises(ValueError, match="no scored epoch"):
        stage_mix(make_shards(tmp_path / "none", {"d1": ("D", 4)}, {"train": [], "val": ["D"], "test": []}), "train")


def test_modality_order_and_missing_modality(shards: Path) -> None:
    n = read_shard(shards / SHARD_DIR / "b1.parquet", ("emg", "airflow", "eeg"), np.float32)
    assert n.x.shape == (12, 3, 3000)
    assert n.x[4, 2, 0] == _value(2, 4) and not n.present[:, 1].any() and not n.x[:, 1].any()
    assert n.present[:, 0].tolist() == [e % 2 == 0 for e in range(12)]
    np.testing.assert_array_equal(n.log_scale[:, 2], [_log_scale(2, e)[0] for e in range(12)])  # eeg
    np.testing.assert_array_equal(n.log_scale[:, 0], [_log_scale(2, e)[2] for e in range(12)])  # emg
    assert not n.log_scale[:, 1].any()  # a modality the shard lacks: absent, 0


def test_shards_written_before_log_scale_read_as_nan(shards: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = shards / SHARD_DIR / "c1.parquet"
    t = pq.read_table(path)
    pq.write_table(t.drop([f"log_scale_{m}" for m in MODS]), path)
    n = read_shard(path, ("eeg", "airflow"), np.float32)
    assert np.isnan(n.log_scale[:, 0]).all() and not n.log_scale[:, 1].any()
    assert "predates log_scale" in caplog.text and "re-run prepare" in caplog.text


def test_present_inferred_for_shards_without_present_columns(shards: Path) -> None:
    path = shards / SHARD_DIR / "c1.parquet"
    t = pq.read_table(path)
    pq.write_table(t.drop([f"present_{m}" for m in MODS]), path)
    n = read_shard(path, MODS, np.float32)
    assert n.present[:, 0].all() and n.present[:, 1].all()  # CLIPPED alone keeps eog present
    assert not n.present[:, 2].any()  # emg: all zeros (and FLAT on odd epochs)
    q = np.array([0, 0, int(Quality.GAP), int(Quality.MISSING)], np.uint8)
    sig = np.ones((4, 3000), np.float32)
    sig[1] = 0.0  # an all-zero row: prepare zero-filled an absent modality
    assert infer_present(q, sig).tolist() == [True, False, True, False]


def test_label_fraction_by_subject_for_every_task(tmp_path: Path) -> None:
    nights = {f"s{i}n{j}": (f"S{i}", 6) for i in range(10) for j in range(2)}
    root = make_shards(tmp_path, nights)
    got = load_nights(root, "train", MODS, label_fraction=0.3, seed=5)
    kept = {n.subject for n in got if n.labelled}
    assert kept == label_subjects([f"S{i}" for i in range(10)], 0.3, 5) and len(kept) == 3
    assert {n.subject for n in load_nights(root, "train", MODS, 0.3, 6) if n.labelled} != kept
    for n in got:
        if n.subject in kept:  # every task keeps its labels
            assert (n.stage >= 0).all() and (n.apnea >= 0).all() and (n.hypopnea >= 0).all()
        else:  # every task loses them: stage, apnea and hypopnea alike
            assert (n.stage == -1).all() and (n.apnea == -1).all() and (n.hypopnea == -1).all()
            assert n.present.any()  # the signals stay
    assert len({n.subject for n in load_nights(root, "train", MODS, 0.01) if n.labelled}) == 1


def test_split_selects_subjects(tmp_path: Path) -> None:
    nights = {f"s{i}": (f"S{i}", 3) for i in range(6)}
    split = split_subjects([s for s, _ in nights.values()], seed=2)
    root = make_shards(tmp_path, nights, split=split)
    got = {name: {n.subject for n in iter_nights(root, name, MODS)} for name in ("train", "val", "test")}
    assert got == {k: set(v) for k, v in split.items()}
    with pytest.raises(ValueError, match="split"):
        load_nights(root, "dev", MODS)


def test_missing_manifest_or_shard_is_clear(tmp_path: Path, shards: Path) -> None:
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_nights(tmp_path / "nothing", "train", MODS)
    (shards / SHARD_DIR / "b1.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="b1"):
        load_nights(shards, "train", MODS)


def test_evaluation_reads_what_training_reads(tmp_path: Path) -> None:
    """``evaluate.run_split`` takes its nights from the same reader as training."""
    from synthsleep.offline_training.evaluate import run_split

    class Echo:  # a predictor that returns its input's first sample as probabilities
        modalities = ("eeg", "emg")
        thresholds: dict[str, float] = {}

        def carried(self, x, present, side):
            n = len(x)
            return np.tile(x[:, :1, 0], (1, 5)), present[:, 1].astype(float), np.zeros(n)

        def windows(self, x, present, side, window):
            return self.carried(x, present, side)

    root = make_shards(tmp_path, {"a": ("A", 9), "b": ("B", 5)},
                       split={"train": ["A"], "val": [], "test": ["A", "B"]})
    truth, carried, _ = run_split(Echo(), root, "test")
    ref = load_nights(root, "test", Echo.modalities, dtype=np.float32)
    assert [t.night for t in truth] == [n.night for n in ref] == ["a", "b"]
    for t, c, n in zip(truth, carried, ref):
        assert t.stage.tolist() == n.stage.tolist() and t.hypopnea.tolist() == n.hypopnea.tolist()
        assert c.stage_prob[:, 0].tolist() == n.x[:, 0, 0].tolist()
        assert c.apnea_prob.tolist() == n.present[:, 1].astype(float).tolist()


def test_lanes_play_each_night_in_order_and_ranks_split_them() -> None:
    lengths = [23, 7, 12, 30, 4]
    plan = plan_lanes(lengths, 4, 8, np.random.default_rng(3))
    pos: dict[int, tuple[int, int]] = {}
    for lane_no, lane in enumerate(plan):
        for night, start, fresh in lane:
            if night < 0:
                assert (night, start, fresh) == IDLE
                continue
            if fresh:
                assert start == 0
            else:  # state carry: same lane, same night, next chunk
                assert pos[lane_no] == (night, start - 8)
            pos[lane_no] = (night, start)
    ranks = [rank_lanes(plan, r, 2) for r in range(2)]
    assert ranks[0] + ranks[1] == plan and len(ranks[0]) == len(ranks[1]) == 2
    with pytest.raises(ValueError, match="3 DDP ranks"):
        rank_lanes(plan, 0, 3)
