"""SynthSleepNet model: frame backbone, NeuroNet, fusion, Mamba2 (scan + step), heads, losses.

Public API (see docs/CONTRACTS.md, Model section)::

    cfg = load_config("small")                   # or "paper", or a .toml path; overrides={...}
    model = SleepModel(cfg)
    out, state = model(x, present, state)        # x [B, T, M, 3000], present bool [B, T, M]
    probs = model.step(x, present, side, *model.allocate_state(B))  # side: psg.side_features
    save_model(model, cfg, "runs/m"); model, cfg = load_model("runs/m")
"""

from .config import CANONICAL_MODALITIES, ConfigError, ModelConfig, available_configs, load_config
from .frame_backbone import FrameBackbone
from .fusion import Fusion, FusionPass, drop_modalities
from .heads import Heads
from .io import load_config_json, load_model, save_model
from .losses import class_weights, masked_bce, masked_mse, nt_xent, pos_weight, weighted_ce
from .mamba2 import Mamba2, cuda_kernels_available, ssd_scan
from .neuronet import NeuroNet
from .sleep_model import EncoderWrapper, SleepModel, SleepOutputs, State, StepWrapper, TemporalWrapper

__all__ = [
    "CANONICAL_MODALITIES", "ConfigError", "ModelConfig", "available_configs", "load_config",
    "FrameBackbone", "Fusion", "FusionPass", "drop_modalities", "Heads", "load_config_json",
    "load_model", "save_model", "class_weights", "masked_bce", "masked_mse", "nt_xent",
    "pos_weight", "weighted_ce", "Mamba2", "cuda_kernels_available", "ssd_scan", "NeuroNet",
    "SleepModel", "SleepOutputs", "State", "StepWrapper", "EncoderWrapper", "TemporalWrapper",
]
