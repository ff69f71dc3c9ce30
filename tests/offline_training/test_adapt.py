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
    x, present = read_epochs(site_edf, params)
    assert present[:, 0].all() and present[:, 1].all() and not present[:, 2].any()  # eeg, eog; no emg
    eeg_bn = next(m for m in model.encoders["eeg"].modules() if isinstance(m, torch.nn.BatchNorm1d))
    emg_before = [b.running_mean.clone() for b in model.encoders["emg"].modules()
                  if isinstance(b, torch.nn.BatchNorm1d)]
    before = eeg_bn.running_mean.clone()
    stats = reestimate_batchnorm(model, [(x, present)])
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
    assert "whole nights" in rec["warning"]  # 8 minutes: statistics that follow the stage mix
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
