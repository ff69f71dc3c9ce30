"""Tiny SleepModel helpers shared by the export tests (imported by conftest and tests)."""

from __future__ import annotations

import torch

from synthsleep.model import SleepModel, load_config

#: "small" shrunk further so that an export takes seconds
TINY = dict(
    modalities=["eeg", "eog", "emg"], backbone_channels=[8, 8, 8, 16], frame_dim=32, nn_dim=32,
    nn_depth=1, nn_heads=2, nn_decoder_dim=16, nn_decoder_heads=2, nn_proj_hidden=32, nn_proj_dim=16,
    fusion_dim=32, fusion_depth=1, fusion_heads=2, fusion_decoder_dim=16, fusion_decoder_heads=2,
    mamba_headdim=16, head_hidden=16,
)
PROVENANCE = {"data_fingerprint": "sha256:feedbeef", "metrics": {"val_kappa": 0.5}}
THRESHOLDS = {"apnea": 0.4, "hypopnea": 0.6}


def tiny_model(seed: int = 0, **overrides: object) -> tuple[SleepModel, object]:
    """Random tiny model with non-trivial BatchNorm statistics and slow SSM decay (the state
    matters); ``overrides``: config keys beyond ``TINY``."""
    torch.manual_seed(seed)
    cfg = load_config("small", overrides={**TINY, **overrides})
    model = SleepModel(cfg)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
        for mamba in model.mamba:
            mamba.A_log.fill_(-2.0)  # decay exp(-dt * 0.14): the state carries over many steps
    return model.eval(), cfg
