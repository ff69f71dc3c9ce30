"""Shared fixtures for the model tests: one thread, fixed seeds, a tiny config."""

from __future__ import annotations

import pytest
import torch

from synthsleep.model import ModelConfig, load_config

torch.set_num_threads(1)

# Same architecture as "small", tiny sizes: every test here runs in well under a second or two.
TINY = {
    "backbone_channels": [4, 8],
    "backbone_stem_stride": 8,
    "frame_dim": 16,
    "nn_dim": 16, "nn_depth": 1, "nn_heads": 2, "nn_mlp_ratio": 2.0,
    "nn_decoder_dim": 16, "nn_decoder_depth": 1, "nn_decoder_heads": 2,
    "nn_proj_hidden": 16, "nn_proj_dim": 8,
    "fusion_dim": 16, "fusion_depth": 1, "fusion_heads": 2, "fusion_mlp_ratio": 2.0,
    "fusion_decoder_dim": 16, "fusion_decoder_depth": 1, "fusion_decoder_heads": 2,
    "mamba_d_state": 8, "mamba_headdim": 8, "mamba_chunk_size": 4,
    "head_hidden": 16,
}


def tiny_config(**overrides) -> ModelConfig:
    return load_config("small", {**TINY, **overrides})


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    return tiny_config()


@pytest.fixture
def make_cfg():
    """Factory: tiny config with extra overrides."""
    return tiny_config
