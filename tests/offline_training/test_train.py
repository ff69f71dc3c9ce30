"""Training-loop behaviour: masked labels, loss goes down, TBPTT carry, lanes, run configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _train_fixtures import TINY_MODEL, read_metrics, shared_shards, tiny_overrides

from synthsleep.offline_training.config import RunConfigError, load_run_config, parse_value
from synthsleep.offline_training.finetune import finetune
from synthsleep.offline_training.lanes import plan_lanes
from synthsleep.offline_training.metrics import binary_metrics
from synthsleep.offline_training.night_trainer import build_model, embed_nights, temporal_heads
from synthsleep.offline_training.selection import best_threshold, selection_score
from synthsleep.offline_training.shards import label_subjects
from synthsleep.offline_training.tasks import TaskLoss

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return shared_shards(tmp_path_factory)


def _loss() -> TaskLoss:
    return TaskLoss(torch.tensor([1.0, 2.0, 1.0, 1.0, 1.5]), torch.tensor(5.0), torch.tensor(3.0))


def test_masked_labels_contribute_nothing():
    torch.manual_seed(0)
    n = 12
    st = torch.randn(n, 5, requires_grad=True)
    ap = torch.randn(n, requires_grad=True)
    hy = torch.randn(n, requires_grad=True)
    ys = torch.randint(0, 5, (n,))
    ya = torch.randint(0, 2, (n,))
    yh = torch.randint(0, 2, (n,))
    masked = torch.zeros(n, dtype=torch.bool)
    masked[::3] = True
    ys[masked], ya[masked], yh[masked] = -1, -1, -1
    out = _loss()(st, ap, hy, ys, ya, yh)
    out["loss"].backward()
    # no gradient reaches a masked epoch's logits ...
    assert st.grad[masked].abs().max() == 0 and ap.grad[masked].abs().max() == 0
    assert hy.grad[masked].abs().max() == 0
    assert st.grad[~masked].abs().max() > 0
    # ... and changing them leaves the loss unchanged
    st2, ap2, hy2 = st.detach().clone(), ap.detach().clone(), hy.detach().clone()
    st2[masked] += 100.0
    ap2[masked] -= 50.0
    hy2[masked] += 50.0
    assert torch.equal(_loss()(st2, ap2, hy2, ys, ya, yh)["loss"], out["loss"].detach())
    # the same loss as computing on the unmasked epochs only
    ref = _loss()(st.detach()[~masked], ap.detach()[~masked], hy.detach()[~masked],
                  ys[~masked], ya[~masked], yh[~masked])
    assert torch.allclose(ref["loss"], out["loss"].detach())
    # all masked: zero loss, finite
    allm = _loss()(st, ap, hy, torch.full((n,), -1), torch.full((n,), -1), torch.full((n,), -1))
    assert float(allm["loss"].detach()) == 0.0


def test_short_finetune_reduces_loss(shards, tmp_path):
    rc = load_run_config(None, tiny_overrides(**{"finetune.night_passes": 12, "finetune.night_lr": 3e-3,
                                                 "finetune.eval_every": 12}))
    finetune(shards, tmp_path / "ft", rc)
    rows = [r for r in read_metrics(tmp_path / "ft" / "night" / "metrics.jsonl") if r["phase"] == "night"]
    losses = np.array([r["loss"] for r in rows])
    k = max(3, len(losses) // 5)
    assert np.isfinite(losses).all()
    assert losses[-k:].mean() < 0.8 * losses[:k].mean(), losses


def test_window_phase_trains_end_to_end(shards, tmp_path):
    rc = load_run_config(None, tiny_overrides(**{"finetune.window_steps": 6, "finetune.night_passes": 1,
                                                 "finetune.window_lr": 3e-3}))
    s = finetune(shards, tmp_path / "ft", rc)
    assert s["window"]["steps"] == 6
    rows = read_metrics(tmp_path / "ft" / "window" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert (tmp_path / "ft" / "model.safetensors").exists() and (tmp_path / "ft" / "model.json").exists()


def test_montage_dropout_runs_both_phases(shards, tmp_path):
    from synthsleep.offline_training.make_model import stage_confidence_threshold

    rc = load_run_config(None, tiny_overrides(**{"finetune.window_steps": 2, "finetune.night_passes": 1,
                                                 "finetune.montage_dropout": 1.0, "finetune.corrupt_modality": 1.0,
                                                 "finetune.mid_start": 1.0}))
    s = finetune(shards, tmp_path / "ft", rc)
    # every labelled training night got a reduced-montage copy for the whole-night phase
    assert s["reduced_montage_nights"] == s["labelled_train_nights"] > 0
    # the stage confidence threshold follows its rule on the validation nights
    c = stage_confidence_threshold(tmp_path / "ft", shards)
    assert 0.0 <= c["stage_confidence"] <= 0.7 and c["val_epochs"] > 0
    assert c["val_unknown_fraction"] <= 0.05
    if c["stage_confidence"] > 0:
        assert c["val_accuracy_below"] < 0.5


def test_embed_nights_keep_equals_a_recording_without_those_sensors(shards):
    from synthsleep.offline_training.augment import montage_mask
    from synthsleep.offline_training.shards import Night, load_nights

    rc = load_run_config(None, tiny_overrides())
    model, cfg = build_model(rc, None, torch.device("cpu"))
    night = load_nights(shards, "val", cfg.modalities)[0]
    keep = montage_mask(("eeg",), tuple(cfg.modalities))
    stripped = Night(night.night, night.subject, night.x * keep[None, :, None], night.present & keep[None],
                     night.log_scale * keep[None], night.stage, night.apnea, night.hypopnea)
    a = embed_nights(model, [night], torch.device("cpu"), keep=keep)[0]
    b = embed_nights(model, [stripped], torch.device("cpu"))[0]
    full = embed_nights(model, [night], torch.device("cpu"))[0]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, full)


def test_chunked_carry_equals_whole_night_scan():
    """TBPTT chunks with the state carried give the same outputs as one scan (eval mode)."""
    from synthsleep.model import SleepModel, load_config

    torch.manual_seed(1)
    m = SleepModel(load_config("small", TINY_MODEL)).eval()
    e = torch.randn(2, 29, 16)
    with torch.no_grad():
        whole, *_ = temporal_heads(m, e)
        state, parts = None, []
        for s in range(0, 29, 8):
            st, _, _, state = temporal_heads(m, e[:, s:s + 8], state)
            parts.append(st)
    assert torch.allclose(torch.cat(parts, 1), whole, atol=1e-5)
    with torch.no_grad():  # and a zero state per chunk is NOT the same (the check can fail)
        cut = torch.cat([temporal_heads(m, e[:, s:s + 8])[0] for s in range(0, 29, 8)], 1)
    assert not torch.allclose(cut, whole, atol=1e-3)


def test_plan_lanes_covers_every_chunk_once_in_order():
    lengths = [50, 17, 64, 3, 100]
    plan = plan_lanes(lengths, 3, 16, np.random.default_rng(0))
    assert len({len(lane) for lane in plan}) == 1
    seen = [it for lane in plan for it in lane if it[0] >= 0]
    want = [(i, s, s == 0) for i, n in enumerate(lengths) for s in range(0, n, 16)]
    assert sorted(seen) == sorted(want) and len(seen) == len(want)
    for lane in plan:  # each night's chunks are consecutive and in order within its lane
        items = [it for it in lane if it[0] >= 0]
        for a, b in zip(items, items[1:]):
            assert (b[0] == a[0] and b[1] == a[1] + 16 and not b[2]) or (b[0] != a[0] and b[2])


def test_plan_lanes_mid_night_starts_reset_the_state_where_they_enter():
    lengths = [200] * 40
    plan = plan_lanes(lengths, 4, 16, np.random.default_rng(1), mid_start=0.5)
    firsts = {}
    for lane in plan:
        for i, s, fresh in lane:
            if i >= 0 and fresh:
                assert i not in firsts  # one entry per night
                firsts[i] = s
            elif i >= 0:
                assert i in firsts and s > firsts[i]  # continues the night it entered
    assert set(firsts) == set(range(40))
    mid = [s for s in firsts.values() if s > 0]
    assert 8 <= len(mid) <= 32 and all(s < 100 for s in mid)  # about half, in the first half
    covered = {i: {s for ln in plan for j, s, _ in ln if j == i} for i in firsts}
    for i, s0 in firsts.items():  # from the entry point every later chunk is there, in steps
        assert covered[i] == set(range(s0, 200, 16))


def test_label_fraction_by_subject():
    subs = [f"s{i}" for i in range(200)]
    k1 = label_subjects(subs, 0.01, 0)
    assert len(k1) == 2 and k1 <= set(subs)
    assert label_subjects(subs, 0.05, 0) != label_subjects(subs, 0.05, 1)
    assert len(label_subjects(subs[:10], 0.01, 0)) == 1  # at least one subject
    with pytest.raises(ValueError):
        label_subjects(subs, 0.0, 0)


def test_label_fraction_applies_to_every_task(shards, tmp_path):
    from synthsleep.offline_training.shards import load_nights

    nights = load_nights(shards, "train", ("eeg",), label_fraction=0.01, seed=0)
    labelled = [n for n in nights if n.labelled]
    assert len(labelled) == 1
    for n in nights:
        if not n.labelled:
            assert (n.stage == -1).all() and (n.apnea == -1).all() and (n.hypopnea == -1).all()


def test_run_config_overrides_and_errors(tmp_path):
    rc = load_run_config("train_small", ["finetune.chunk=32", "finetune.freeze_encoder=false",
                                         "model_overrides.head_dropout=0.0", "model=\"paper\""])
    assert rc.finetune.chunk == 32 and rc.finetune.freeze_encoder is False
    assert rc.model_overrides == {"head_dropout": 0.0} and rc.model == "paper"
    assert parse_value("1e-3") == 1e-3 and parse_value("abc") == "abc"
    with pytest.raises(RunConfigError, match="finetune.chnk"):
        load_run_config("train_small", ["finetune.chnk=3"])
    with pytest.raises(RunConfigError, match="must be a number"):
        load_run_config("train_small", ["finetune.chunk=\"x\""])
    bad = tmp_path / "bad.toml"
    bad.write_text("[finetune]\nlanes = 2\nbogus = 1\n")
    with pytest.raises(RunConfigError, match="bogus"):
        load_run_config(bad)
    paper = load_run_config("train_paper")
    assert paper.model == "paper" and paper.finetune.chunk >= 64


def test_selection_score_gives_nothing_for_an_undefined_metric():
    """An F1 or kappa that is undefined (nan: no positive anywhere) earns no score, so it can
    neither win a selection nor poison it."""
    nan = float("nan")
    weights = {"stage": 1.0, "apnea": 1.0, "hypopnea": 1.0}
    m = {"stage": {"kappa": 0.5}, "apnea": {"f1": nan}, "hypopnea": {"f1": 0.8}}
    assert selection_score(m, weights) == 0.5 + 0.4
    m["stage"]["kappa"] = nan
    assert selection_score(m, {**weights, "apnea": 0.0}) == 0.8


def test_best_threshold_maximises_f1():
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.05).astype(np.int8)
    prob = np.clip(0.9 + 0.05 * y + 0.02 * rng.standard_normal(500), 0, 1)  # all high: 0.5 is bad
    y[:5] = -1
    t = best_threshold(y, prob)
    f_t = binary_metrics(y, prob, t)["f1"]
    assert t > 0.9 and f_t > binary_metrics(y, prob, 0.5)["f1"]
    for cand in np.linspace(0.01, 0.99, 99):
        assert binary_metrics(y, prob, cand)["f1"] <= f_t + 1e-12


def test_shipped_run_configs_only_override_defaults():
    """The defaults live in RunConfig alone: a shipped file sets only keys it changes."""
    from synthsleep.offline_training.config import CONFIG_DIR, RunConfig
    from synthsleep.tomlconfig import read_toml

    defaults = RunConfig().to_dict()
    for name in ("train_small", "train_paper"):
        for section, table in read_toml(CONFIG_DIR / f"{name}.toml").items():
            if not isinstance(table, dict):
                continue
            same = [k for k, v in table.items() if defaults[section][k] == v]
            assert not same, f"{name}.toml [{section}] repeats defaults: {same}"


def test_probe_cli_writes_metrics(shards, tmp_path, capsys):
    import json

    from synthsleep.cli import main

    sets = [f"--set={k}={json.dumps(v)}" for k, v in tiny_overrides().items()]
    assert main(["probe", "--shards", str(shards), "--out", str(tmp_path / "p"), "--labels", "0.5",
                 "--config", "train_small", *sets]) == 0
    r = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert r["val_epochs"] > 0 and r["stage"]["n"] > 0 and 0 <= r["apnea"]["threshold"] <= 1
    assert "linear probe" in capsys.readouterr().out
