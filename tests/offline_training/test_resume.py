"""Exact resume: a run interrupted after a checkpoint and resumed computes the same next losses
and ends with the same weights as the uninterrupted run (same process, CPU, bit-exact)."""

from __future__ import annotations

import json

import pytest
import torch
from _train_fixtures import read_metrics, shared_shards, tiny_overrides
from safetensors.torch import load_file

from synthsleep.offline_training.checkpoint import load_checkpoint, save_checkpoint
from synthsleep.offline_training.config import load_run_config
from synthsleep.offline_training.finetune import finetune
from synthsleep.offline_training.pretrain import pretrain_unimodal

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return shared_shards(tmp_path_factory)


def _weights_equal(a, b) -> bool:
    wa, wb = load_file(str(a)), load_file(str(b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_pretrain_resume_gives_same_next_loss(shards, tmp_path):
    rc = load_run_config(None, tiny_overrides())
    full, part = tmp_path / "full", tmp_path / "part"
    pretrain_unimodal(shards, full, rc, "eeg")
    pretrain_unimodal(shards, part, rc, "eeg", stop_at=2)
    st = json.loads((part / "checkpoint" / "train_state.json").read_text())
    assert st["step"] == 2 and "rng" in st and isinstance(st["rng"]["torch"], list)
    assert (part / "checkpoint" / "optimizer.safetensors").exists()
    assert not list(part.rglob("*.pt")) and not list(part.rglob("*.pkl"))
    pretrain_unimodal(shards, part, rc, "eeg", resume=True)
    a = {r["step"]: r["loss"] for r in read_metrics(full / "metrics.jsonl")}
    b = {r["step"]: r["loss"] for r in read_metrics(part / "metrics.jsonl")}
    assert sorted(b) == [1, 2, 3, 4]
    assert b[3] == a[3] and b[4] == a[4]  # bit-exact next losses
    assert _weights_equal(full / "model.safetensors", part / "model.safetensors")


def test_pretrain_resume_differs_without_optimizer_state(shards, tmp_path):
    """The check above can fail: resuming with a fresh optimizer gives a different step-3 loss."""
    rc = load_run_config(None, tiny_overrides())
    full, part = tmp_path / "full", tmp_path / "part"
    pretrain_unimodal(shards, full, rc, "eeg")
    pretrain_unimodal(shards, part, rc, "eeg", stop_at=2)
    (part / "checkpoint" / "optimizer.safetensors").unlink()
    st_path = part / "checkpoint" / "train_state.json"
    st = json.loads(st_path.read_text())
    del st["optimizer"]
    st_path.write_text(json.dumps(st))
    pretrain_unimodal(shards, part, rc, "eeg", resume=True)
    a = {r["step"]: r["loss"] for r in read_metrics(full / "metrics.jsonl")}
    b = {r["step"]: r["loss"] for r in read_metrics(part / "metrics.jsonl")}
    assert b[4] != a[4]


def test_whole_night_resume_at_pass_boundary(shards, tmp_path):
    rc = load_run_config(None, tiny_overrides(**{"finetune.night_passes": 3}))
    full, part = tmp_path / "full", tmp_path / "part"
    s_full = finetune(shards, full, rc)
    finetune(shards, part, rc, stop_at_pass=1)
    s_part = finetune(shards, part, rc, resume=True)
    assert [h["pass"] for h in s_part["history"]] == [1, 2, 3]
    assert [h["val_score"] for h in s_part["history"]] == [h["val_score"] for h in s_full["history"]]
    assert _weights_equal(full / "night" / "checkpoint" / "model.safetensors",
                          part / "night" / "checkpoint" / "model.safetensors")


def test_checkpoint_roundtrip_restores_optimizer_and_rng(tmp_path):
    torch.manual_seed(0)
    from _train_fixtures import TINY_MODEL

    from synthsleep.model import SleepModel, load_config

    m = SleepModel(load_config("small", TINY_MODEL))
    opt = torch.optim.AdamW(m.heads.parameters(), lr=1e-3)
    m.heads(torch.randn(4, 16))[0].sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "ck", m, opt, {"step": 7})
    expect = torch.rand(3)
    m2 = SleepModel(load_config("small", TINY_MODEL))
    opt2 = torch.optim.AdamW(m2.heads.parameters(), lr=1e-3)
    st = load_checkpoint(tmp_path / "ck", m2, opt2)
    assert st["step"] == 7
    assert torch.equal(torch.rand(3), expect)  # RNG restored to the save point
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k]["exp_avg"], s2[k]["exp_avg"])
    for (ka, va), (kb, vb) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
