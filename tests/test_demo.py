"""The bundled model and the demo, end to end (real LSL, real ORT, real HTTP)."""

from __future__ import annotations

import json

import pytest

from synthsleep.bed_session import BUNDLED_MODEL
from synthsleep.cli import main
from synthsleep.export.artifact import read_artifact

pytestmark = pytest.mark.skipif(not BUNDLED_MODEL.exists(), reason="no bundled model (run 'make model')")


def test_bundled_artifact_is_complete():
    info = read_artifact(BUNDLED_MODEL, verify_hash=True)
    assert list(info.class_names["stage"]) == ["W", "N1", "N2", "N3", "REM"]
    assert info.modalities == ("eeg", "eog", "emg", "ecg", "airflow", "thorax", "abdomen", "spo2")
    assert info.provenance["data_fingerprint"] and "test_carried" in info.provenance["metrics"]
    mix = info.provenance["train_stage_mix"]  # what adapt balances to
    assert len(mix) == 5 and abs(sum(mix) - 1) < 1e-3 and min(mix) > 0
    assert BUNDLED_MODEL.stat().st_size < 8_000_000


def test_demo_runs_and_agrees_with_truth(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--hours", "1", "--speed", "300", "--no-console", "--out", str(out),
               "--metrics", "127.0.0.1:0", "--seed", "31"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "== synthsleep demo: 120 epochs" in text
    report = json.loads((out / "report.json").read_text())
    assert report["statistics"]["epochs"] == 120
    # the bundled model trained on synthetic nights stages an unseen synthetic night well
    assert report["agreement"]["accuracy"] > 0.75, report["agreement"]
    assert "synthsleep_epochs_processed_total 120" in text
    assert "ward view at http://127.0.0.1:" in text  # on by default, on a free port
    assert (out / "hypnogram.png").exists() and (out / "events.jsonl").exists()
