"""The EEG-alone stage readout: the logistic fit, and the readout fitted into a saved model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _train_fixtures import TINY_MODEL, shared_shards

from synthsleep.model import SleepModel, load_config, load_model, save_model
from synthsleep.offline_training.augment import montage_mask
from synthsleep.offline_training.night_trainer import embed_nights, night_presents, night_sides
from synthsleep.offline_training.readout import fit_logistic, fit_stage_readouts, readout_features
from synthsleep.offline_training.selection import predict_embedded
from synthsleep.offline_training.shards import load_nights
from synthsleep.psg.side_features import N_EPOCH_SIDE, N_SIDE


def test_fit_logistic_separates_classes_and_l2_shrinks_the_weights():
    rng = np.random.default_rng(0)
    centres = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    y = rng.integers(0, 3, 600)
    x = torch.from_numpy((centres[y] + rng.normal(0, 0.5, (600, 3))).astype(np.float32))
    y = torch.from_numpy(y)
    w, b = fit_logistic(x, y, 3, c=1.0)
    assert ((x @ w.T + b).argmax(1) == y).float().mean() == 1.0
    w_strong, _ = fit_logistic(x, y, 3, c=1e-3)
    assert w_strong.norm() < 0.5 * w.norm()


def test_readout_fitted_on_train_chosen_on_val_and_saved(tmp_path_factory, tmp_path):
    shards = shared_shards(tmp_path_factory)
    torch.manual_seed(0)
    cfg = load_config("small", {**TINY_MODEL, "eeg_stage_head": False})
    before = SleepModel(cfg).eval()
    save_model(before, cfg, tmp_path / "model", metadata={"kept": 1})

    reps = fit_stage_readouts(tmp_path, shards, cs=(0.01, 1.0))
    rep = reps["eeg"]

    model, cfg2 = load_model(tmp_path / "model")
    assert cfg2.eeg_stage_head and cfg2.montage_stage_head and not cfg.eeg_stage_head
    d = cfg2.fusion_dim
    for r, linear in ((rep, model.heads.stage_eeg), (reps["montage"], model.heads.stage_montage)):
        assert r["C"] in (0.01, 1.0) and r["val_accuracy"] == max(t["val_accuracy"] for t in r["tried"])
        assert r["train_epochs"] > 0 and r["val_epochs"] > 0
        assert {t["context"] for t in r["tried"]} == {True, False}  # with and without the moving averages
        context_weights = linear.weight[:, d + N_EPOCH_SIDE:d + N_SIDE]
        assert bool(context_weights.abs().sum() > 0) == r["context"]  # not chosen: not read
    # everything but the readout is the model it started from
    for k, v in before.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v)
    # the saved readout (standardisation folded in) is what the model uses for EEG-alone epochs:
    # read through the normal evaluation path, validation accuracy is the reported one
    val = [n for n in load_nights(shards, "val", cfg2.modalities) if n.labelled]
    keep = montage_mask(("eeg",), tuple(cfg2.modalities))
    right = total = 0
    presents = night_presents(val, keep)
    sides = night_sides(val, [p.numpy() for p in presents], tuple(cfg2.modalities))
    blind = []
    for n, e, pr, sd in zip(val, embed_nights(model, val, torch.device("cpu"), keep=keep), presents, sides):
        assert torch.isfinite(sd).all() and sd[:, -1].abs().sum() > 0  # the shards carry log scales
        st, _, _ = predict_embedded(model, e, "carried", present=pr, side=sd)
        blind.append(predict_embedded(model, e, "carried", present=pr, side=sd * 0)[0])
        ok = n.stage >= 0
        right += int((st.argmax(1)[ok] == n.stage[ok]).sum())
        total += int(ok.sum())
    assert right / total == pytest.approx(rep["val_accuracy"], abs=1.5 / total)
    # the readout reads the side features: zeroing them changes its output
    st_all = np.concatenate([predict_embedded(model, e, "carried", present=pr, side=sd)[0] for e, pr, sd in
                             zip(embed_nights(model, val, torch.device("cpu"), keep=keep), presents, sides)])
    assert np.abs(st_all - np.concatenate(blind)).max() > 1e-3
    # with every sensor the montage readout reads them (its own fit, reproduced through the
    # evaluation path), and without side features the shared head, as before the fit
    feats, _ = readout_features(model, val[:1], keep, "check", False)
    assert feats.shape[1] == cfg2.fusion_dim + N_SIDE  # [h, side]
    full_present = night_presents(val[:1])[0]
    e_full = embed_nights(model, val[:1], torch.device("cpu"))[0]
    full, _, _ = predict_embedded(model, e_full, "carried", present=full_present,
                                  side=night_sides(val[:1], [full_present.numpy()], tuple(cfg2.modalities))[0])
    f_full, _ = readout_features(model, val[:1], None, "check", True)
    with torch.no_grad():
        np.testing.assert_allclose(full, torch.softmax(model.heads.stage_montage(f_full), -1).numpy(), atol=1e-5)
    blind, _, _ = predict_embedded(model, e_full, "carried", present=full_present)
    plain, _, _ = predict_embedded(before, embed_nights(before, val[:1], torch.device("cpu"))[0], "carried")
    np.testing.assert_allclose(blind, plain, atol=1e-5)


def test_readouts_of_older_side_features_are_refitted(tmp_path_factory, tmp_path):
    """A checkpoint whose readouts read fewer side features (an older ``SIDE_NAMES``) does not load
    as it is (a clear error), and the readout refit, which reads everything else, makes it current."""
    from safetensors.torch import load_file, save_file

    from synthsleep.model.config import ConfigError
    from synthsleep.model.io import load_config_json

    shards = shared_shards(tmp_path_factory)
    torch.manual_seed(1)
    cfg = load_config("small", {**TINY_MODEL, "eeg_stage_head": True, "montage_stage_head": True})
    save_model(SleepModel(cfg).eval(), cfg, tmp_path / "model")
    tensors = load_file(str(tmp_path / "model.safetensors"))
    for name in ("heads.stage_eeg.weight", "heads.stage_montage.weight"):
        tensors[name] = tensors[name][:, :-3].contiguous()  # three side features fewer
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError, match="wrong shapes.*stage_"):
        load_model(tmp_path / "model")
    fit_stage_readouts(tmp_path, shards, cs=(1.0,))
    model, _ = load_model(tmp_path / "model")
    assert model.heads.stage_eeg.weight.shape[1] == cfg.fusion_dim + N_SIDE
    for k, v in tensors.items():  # all but the readouts as saved
        if not k.startswith(("heads.stage_eeg.", "heads.stage_montage.")):
            torch.testing.assert_close(model.state_dict()[k], v)
    # refitting the EEG-alone readout only keeps the montage readout as it was
    montage_report = load_config_json(tmp_path / "model")[1]["stage_readouts"]["montage"]
    fit_stage_readouts(tmp_path, shards, cs=(0.01,), montage=False)
    again, _ = load_model(tmp_path / "model")
    assert load_config_json(tmp_path / "model")[1]["stage_readouts"]["montage"] == montage_report
    torch.testing.assert_close(again.heads.stage_montage.weight, model.heads.stage_montage.weight)
    assert not torch.equal(again.heads.stage_eeg.weight, model.heads.stage_eeg.weight)
