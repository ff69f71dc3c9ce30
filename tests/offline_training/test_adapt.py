"""``synthsleep adapt``: AdaBN on a site's unlabelled recordings, a new traceable artifact."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from synthsleep.offline_training.adapt import adapt, read_epochs, reestimate_batchnorm

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base_artifact(tmp_path_factory) -> Path:
    """The tiny random model (eeg, eog, emg) saved as weights + exported artifact side by side."""
    sys.path.insert(0, str(TESTS / "export"))
    from export_fixtures import PROVENANCE, THRESHOLDS, tiny_model

    from synthsleep.export.onnx_export import export_step
    from synthsleep.model import save_model
    from synthsleep.psg.preprocess import PreprocessParams

    torch.set_num_threads(1)
    model, cfg = tiny_model()
    out = tmp_path_factory.mktemp("base") / "tiny.onnx"
    save_model(model, cfg, out.with_suffix(""))
    export_step(model, cfg, out, PROVENANCE, PreprocessParams(modalities=tuple(cfg.modalities)), THRESHOLDS,
                exporter="torchscript")
    return out


@pytest.fixture(scope="module")
def site_edf(tmp_path_factory) -> Path:
    """A 'site' recording with EEG and EOG only (no chin EMG), at 200 Hz with a gain of 3."""
    from scipy.signal import resample_poly

    from synthsleep.psg.recording import Signal, write_edf
    from synthsleep.psg.synthetic import synthesize_night

    night = synthesize_night(seed=5, hours=8 / 60)
    sigs = []
    for label in ("EEG C4-M1", "EOG E1-M2"):
        s = night.signal(label)
        sigs.append(Signal(label, 200.0, 3.0 * resample_poly(np.asarray(s.data), 25, 32)))
    return write_edf(tmp_path_factory.mktemp("site") / "site-night.edf", sigs)


def _bn_input_means(model, x, present, bn):
    """Mean of ``bn``'s input per forward batch, as ``reestimate_batchnorm`` batches them."""
    means = []
    hook = bn.register_forward_hook(lambda m, inp, out: means.append(inp[0].transpose(0, 1).reshape(
        inp[0].shape[1], -1).mean(dim=1)))
    model.train()
    with torch.no_grad():
        for s in range(0, len(x), 64):
            model.encode_epochs(torch.from_numpy(x[s:s + 64]), torch.from_numpy(present[s:s + 64]))
    hook.remove()
    model.eval()
    return torch.stack(means).mean(dim=0)


def test_batchnorm_statistics_become_the_sites_and_unrecorded_modalities_keep_theirs(base_artifact, site_edf):
    from synthsleep.model import load_model
    from synthsleep.psg.preprocess import PreprocessParams

    model, cfg = load_model(base_artifact.with_suffix(""))
    params = PreprocessParams(modalities=tuple(cfg.modalities))
    x, present, side = read_epochs(site_edf, params)
    assert present[:, 0].all() and present[:, 1].all() and not present[:, 2].any()  # eeg, eog; no emg
    eeg_bn = next(m for m in model.encoders["eeg"].modules() if isinstance(m, torch.nn.BatchNorm1d))
    emg_before = [b.running_mean.clone() for b in model.encoders["emg"].modules()
                  if isinstance(b, torch.nn.BatchNorm1d)]
    before = eeg_bn.running_mean.clone()
    stats = reestimate_batchnorm(model, [(x, present, side)])
    assert stats["epochs"] == len(x) and stats["kept"] >= len(emg_before) > 0
    assert not torch.allclose(eeg_bn.running_mean, before, atol=1e-3)
    want = _bn_input_means(model, x, present, eeg_bn)  # the site's own statistics, measured
    torch.testing.assert_close(eeg_bn.running_mean, want, atol=1e-4, rtol=1e-4)
    emg_after = [b.running_mean for b in model.encoders["emg"].modules() if isinstance(b, torch.nn.BatchNorm1d)]
    for a, b in zip(emg_before, emg_after):
        torch.testing.assert_close(a, b)
    assert not model.training


def test_adapt_writes_a_traceable_artifact_that_scores(base_artifact, site_edf, tmp_path):
    from synthsleep.export.artifact import read_artifact
    from synthsleep.export.runtime import StepRuntime
    from synthsleep.score import score_recording

    out = tmp_path / "site" / "tiny-site.onnx"
    record = adapt([site_edf], base_artifact, out)
    info, base = read_artifact(out), read_artifact(base_artifact)
    assert info.hash_ok and info.content_hash != base.content_hash
    rec = info.provenance["adapted"]
    assert rec["base_model"] == base.content_hash and rec == json.loads(json.dumps(record))
    assert rec["recordings"][0]["file"] == "site-night.edf" and len(rec["recordings"][0]["sha256"]) == 64
    assert rec["recordings"][0]["modalities"] == ["eeg", "eog"]
    assert any("whole nights" in w for w in rec["warnings"])  # 8 minutes: statistics that follow the stage mix
    assert info.provenance["data_fingerprint"] == base.provenance["data_fingerprint"]  # base provenance kept
    assert out.with_suffix(".safetensors").is_file() and out.with_suffix(".json").is_file()
    adapted, _, _ = score_recording(site_edf, StepRuntime(out, threads=1))
    original, _, _ = score_recording(site_edf, StepRuntime(base_artifact, threads=1))
    assert len(adapted) == len(original) == rec["epochs"]
    assert not np.allclose([s.stage_prob for s in adapted], [s.stage_prob for s in original], atol=1e-4)


def test_adapt_cli_bad_input_is_a_clear_error(tmp_path, capsys, base_artifact, site_edf):
    from synthsleep.cli import main

    empty = tmp_path / "nothing-here"
    empty.mkdir()
    assert main(["adapt", "--in", str(empty), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "no EDF/BDF recordings found in" in capsys.readouterr().out
    lone = tmp_path / "lone.onnx"  # an artifact without its weights beside it
    lone.write_bytes(base_artifact.read_bytes())
    assert main(["adapt", "--in", str(site_edf), "--model", str(lone), "--out", str(tmp_path / "y.onnx")]) == 2
    assert "lone.safetensors" in capsys.readouterr().out
    assert not (tmp_path / "y.onnx").exists()


def test_adapt_cli_warns_about_short_recordings(tmp_path, capsys, base_artifact, site_edf):
    from synthsleep.cli import main

    out = tmp_path / "short.onnx"
    assert main(["adapt", "--in", str(site_edf), "--model", str(base_artifact), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed
    assert "warning: recordings of 8 min on average: adapt on whole nights (>= 4 h)" in printed


def test_predict_stages_is_what_score_stages(base_artifact, site_edf):
    from synthsleep.export.runtime import StepRuntime
    from synthsleep.model import load_model
    from synthsleep.offline_training.adapt import predict_stages
    from synthsleep.psg.preprocess import PreprocessParams
    from synthsleep.score import score_recording

    model, cfg = load_model(base_artifact.with_suffix(""))
    x, present, side = read_epochs(site_edf, PreprocessParams(modalities=tuple(cfg.modalities)))
    scored, _, _ = score_recording(site_edf, StepRuntime(base_artifact, threads=1))
    np.testing.assert_array_equal(predict_stages(model, x, present, side),
                                  np.argmax([s.stage_prob for s in scored], axis=1))


def test_stage_balanced_statistics_mix_each_predicted_stage_by_the_training_mix(base_artifact, site_edf, monkeypatch):
    import copy

    from synthsleep.model import load_model
    from synthsleep.offline_training import adapt as adapt_mod
    from synthsleep.psg.preprocess import PreprocessParams

    model, cfg = load_model(base_artifact.with_suffix(""))
    x, present, side = read_epochs(site_edf, PreprocessParams(modalities=tuple(cfg.modalities)))
    # the tiny random model calls every epoch one stage: give the 16 epochs three predicted stages
    # (checked against score in the test above), 3 of them too few to count
    stages = np.array([1] * 3 + [2] * 10 + [4] * 3)
    monkeypatch.setattr(adapt_mod, "MIN_STAGE_EPOCHS", 3)
    monkeypatch.setattr(adapt_mod, "predict_stages", lambda *a: stages)
    mix = np.array([0.1, 0.1, 0.5, 0.1, 0.2])
    seen = np.array([1, 2, 4])
    w = mix[seen] / mix[seen].sum()
    want_mean, want_sq = 0.0, 0.0
    for c, wc in zip(seen, w):  # each stage's statistics alone, by plain AdaBN on its epochs
        alone = copy.deepcopy(model)
        reestimate_batchnorm(alone, [(x[stages == c], present[stages == c], side[stages == c])])
        bn = next(m for m in alone.encoders["eeg"].modules() if isinstance(m, torch.nn.BatchNorm1d))
        want_mean = want_mean + wc * bn.running_mean
        want_sq = want_sq + wc * (bn.running_var + bn.running_mean ** 2)
    stats = reestimate_batchnorm(model, [(x, present, side)], stage_mix=mix.tolist())
    assert stats["predicted_stage_epochs"] == [0, 3, 10, 0, 3] and stats["epochs"] == 16
    assert stats["stage_weights"] == pytest.approx([0, w[0], w[1], 0, w[2]], abs=1e-4)
    eeg_bn = next(m for m in model.encoders["eeg"].modules() if isinstance(m, torch.nn.BatchNorm1d))
    torch.testing.assert_close(eeg_bn.running_mean, want_mean, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(eeg_bn.running_var, want_sq - want_mean ** 2, atol=1e-5, rtol=1e-4)
    assert stats["kept"] > 0  # the EMG encoder saw nothing and kept its statistics
    monkeypatch.setattr(adapt_mod, "MIN_STAGE_EPOCHS", 4)  # now only N2 counts: its statistics alone
    alone = copy.deepcopy(model)
    reestimate_batchnorm(alone, [(x[stages == 2], present[stages == 2], side[stages == 2])])
    stats = reestimate_batchnorm(model, [(x, present, side)], stage_mix=mix.tolist())
    assert stats["stage_weights"] == [0, 0, 1, 0, 0]
    for a, b in zip(adapt_mod._encoder_batchnorms(model), adapt_mod._encoder_batchnorms(alone)):
        torch.testing.assert_close(a.running_mean, b.running_mean, atol=1e-5, rtol=1e-4)


def test_adapt_balances_to_the_artifacts_training_stage_mix(base_artifact, site_edf, tmp_path):
    from synthsleep.export.artifact import read_artifact
    from synthsleep.export.onnx_export import export_step
    from synthsleep.model import load_model, save_model

    model, cfg = load_model(base_artifact.with_suffix(""))
    info = read_artifact(base_artifact)
    with_mix = tmp_path / "with-mix.onnx"
    save_model(model, cfg, with_mix.with_suffix(""))
    export_step(model, cfg, with_mix, {**info.provenance, "train_stage_mix": [0.2, 0.1, 0.4, 0.1, 0.2]},
                info.preprocess, info.thresholds, exporter="torchscript")
    rec = adapt([site_edf], with_mix, tmp_path / "site.onnx", method="balanced")
    assert rec["method"].startswith("stage-balanced") and sum(rec["predicted_stage_epochs"]) == rec["epochs"] == 16
    assert not any("plain AdaBN" in w for w in rec["warnings"])
    plain = adapt([site_edf], with_mix, tmp_path / "site-plain.onnx")  # the default
    assert plain["method"].startswith("AdaBN") and "stage_weights" not in plain
    without = adapt([site_edf], base_artifact, tmp_path / "no-mix.onnx", method="balanced")
    assert without["method"].startswith("AdaBN") and any("plain AdaBN" in w for w in without["warnings"])
    with pytest.raises(ValueError, match="adapt method"):
        adapt([site_edf], with_mix, tmp_path / "x.onnx", method="magic")
