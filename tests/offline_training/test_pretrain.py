"""Unimodal pretraining of each modality's encoder, whatever the full model's heads are."""

from __future__ import annotations

import json

from _train_fixtures import shared_shards, tiny_overrides

from synthsleep.offline_training.config import load_run_config
from synthsleep.offline_training.pretrain import pretrain_unimodal


def test_a_non_eeg_encoder_pretrains_under_a_config_with_an_eeg_readout(tmp_path_factory, tmp_path):
    """``small`` has an EEG-alone stage readout, which needs EEG among a model's modalities; the
    one-modality models of unimodal pretraining (here airflow) are built without it."""
    rc = load_run_config(None, tiny_overrides(**{"model_overrides.eeg_stage_head": True}))
    summary = pretrain_unimodal(shared_shards(tmp_path_factory), tmp_path, rc, "airflow")
    cfg = json.loads((tmp_path / "model.json").read_text())["config"]
    assert cfg["modalities"] == ["airflow"] and cfg["eeg_stage_head"] is False
    assert summary["steps"] >= 1
