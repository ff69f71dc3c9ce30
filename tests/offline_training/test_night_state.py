"""Whole-night training carries the Mamba state across chunks and resets it at a night boundary.

The real ``NightTrainer`` runs passes over tiny synthetic nights (chunks of 4 epochs, 2 lanes,
several nights per lane, half of them entered mid-night). A spy around ``model.temporal`` (it
calls the real method) records, per chunk, the lane items, the state the model is given and the
state it returns. Every lane item must then see either a zero state (first chunk of a night,
including a mid-night entry, or an idle lane) or exactly the state its lane returned at the
previous chunk, detached (truncated backprop). A trainer that restarted every chunk from zero,
forgot to reset at a new night, or let gradients flow across chunks fails here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _train_fixtures import shared_shards, tiny_overrides

from synthsleep.offline_training.config import load_run_config
from synthsleep.offline_training.lanes import plan_lanes
from synthsleep.offline_training.night_trainer import NightTrainer, build_model, embed_nights
from synthsleep.offline_training.shards import load_nights
from synthsleep.offline_training.tasks import build_task_loss
from synthsleep.offline_training.trainer import DistInfo, MetricsLog

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return shared_shards(tmp_path_factory)


def _record_pass(shards, tmp_path, mid_start: float, passes: int = 2) -> list[dict[str, Any]]:
    """Run ``passes`` real whole-night passes; one record per chunk (items, state in, state out)."""
    rc = load_run_config(None, tiny_overrides(**{"finetune.chunk": 4, "finetune.lanes": 2,
                                                 "finetune.mid_start": mid_start}))
    device = torch.device("cpu")
    model, cfg = build_model(rc, None, device)
    nights = [n for n in load_nights(shards, "train", cfg.modalities) if n.labelled]
    nights = nights + nights  # more nights than lanes: every lane crosses a night boundary
    embeds = embed_nights(model, nights, device)
    fcfg = rc.finetune
    trainer = NightTrainer(model, nights, embeds, build_task_loss(nights, "all", fcfg), fcfg,
                           rc.seed, DistInfo(), device)
    records: list[dict[str, Any]] = []
    real_embed, real_temporal = trainer._embed_chunk, model.temporal

    def embed_spy(items):
        records.append({"items": list(items)})
        return real_embed(items)

    def temporal_spy(e, state=None):
        h, new = real_temporal(e, state)
        rec = records[-1]
        rec["in"] = None if state is None else tuple(s.detach().clone() for s in state)
        rec["in_grad"] = state is not None and any(s.requires_grad for s in state)
        rec["out"] = tuple(s.detach().clone() for s in new)
        return h, new

    trainer._embed_chunk = embed_spy
    model.temporal = temporal_spy
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-2)
    log = MetricsLog(tmp_path, enabled=False)
    for p in range(passes):
        records.append({"pass_start": True})
        trainer.run_pass(p, opt, params, model.train, log, 0)
    return records


def _check(records: list[dict[str, Any]]) -> tuple[int, int]:
    """Assert the carry/reset rule on every lane of every chunk; returns (carried, reset) counts."""
    carried = reset = 0
    prev = None
    for rec in records:
        if rec.get("pass_start"):
            prev = None  # a pass starts every lane on a new night
            continue
        conv_in, ssm_in = rec["in"] if rec["in"] is not None else (None, None)
        assert not rec["in_grad"], "the carried state must be detached (truncated backprop)"
        for lane, (night, _start, fresh) in enumerate(rec["items"]):
            if prev is None:
                assert fresh or night < 0, f"lane {lane}: a pass must start each lane on a new night"
            if fresh or night < 0:
                if conv_in is not None:
                    assert torch.count_nonzero(conv_in[:, lane]) == 0, f"lane {lane}: no reset at night {night}"
                    assert torch.count_nonzero(ssm_in[:, lane]) == 0, f"lane {lane}: no reset at night {night}"
                reset += 1
            else:
                assert conv_in is not None, "state not carried into the next chunk"
                torch.testing.assert_close(conv_in[:, lane], prev[0][:, lane], rtol=0, atol=0)
                torch.testing.assert_close(ssm_in[:, lane], prev[1][:, lane], rtol=0, atol=0)
                assert torch.count_nonzero(ssm_in[:, lane]) > 0  # a real state, not zeros
                carried += 1
        prev = rec["out"]
    return carried, reset


def test_state_carried_across_chunks_and_reset_per_night(shards, tmp_path):
    records = _record_pass(shards, tmp_path, mid_start=0.0)
    carried, reset = _check(records)
    assert carried > 0 and reset > 0
    # within a lane nights follow each other: some resets happen in the middle of a pass
    later = [r for prev, r in zip(records, records[1:]) if "items" in r and "items" in prev]
    assert any(f and i >= 0 for r in later for i, _, f in r["items"])


def test_mid_night_entries_reset_where_they_enter(shards, tmp_path):
    records = _record_pass(shards, tmp_path, mid_start=1.0)
    carried, reset = _check(records)
    entries = [s for r in records if "items" in r for i, s, f in r["items"] if f and i >= 0]
    assert carried > 0 and any(s > 0 for s in entries)


def test_the_check_fails_without_carry_or_reset(shards, tmp_path):
    """The rule above can fail: a trainer restarting every chunk from zero, and one never
    resetting, are both caught."""
    records = _record_pass(shards, tmp_path, mid_start=0.0, passes=1)
    chunks = [r for r in records if "items" in r]
    zeroed = [{**r, "in": tuple(torch.zeros_like(s) for s in r["out"])} for r in chunks]
    with pytest.raises(AssertionError):
        _check([{"pass_start": True}, *zeroed])
    never_reset = [chunks[0]] + [{**r, "in": prev["out"]} for prev, r in zip(chunks, chunks[1:])]
    with pytest.raises(AssertionError):
        _check([{"pass_start": True}, *never_reset])


def test_plan_is_the_one_the_trainer_runs(shards, tmp_path):
    """The lanes the trainer ran are plan_lanes' plan for that pass (same seed stream)."""
    records = _record_pass(shards, tmp_path, mid_start=0.5, passes=1)
    ran = [r["items"] for r in records if "items" in r]
    rc = load_run_config(None, tiny_overrides())
    lengths = [len(n) for n in load_nights(shards, "train", ("eeg",)) if n.labelled] * 2
    plan = plan_lanes(lengths, 2, 4, np.random.default_rng([rc.seed, 0, 0xA11]), 0.5)
    assert ran == [list(step) for step in zip(*plan)]
