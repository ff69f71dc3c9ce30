"""Model configuration: one flat dataclass with every size, read from TOML.

Two configurations ship in ``synthsleep/configs``:

* ``paper``: the sizes of SynthSleepNet / NeuroNet as published (frame backbone 64→128→128→256,
  NeuroNet 768-d, fusion 512-d, Mamba2 d_model 512).
* ``small``: the same architecture with much smaller sizes, for CPU training and tests.

A TOML file may hold the keys at top level or grouped in any tables (``[neuronet]`` ...): tables
are flattened, so key names must be unique. Unknown keys are an error that names the file and key.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import tomlconfig

log = logging.getLogger(__name__)

#: Canonical montage order (identical to ``synthsleep.psg.montage.MODALITY_NAMES``).
CANONICAL_MODALITIES: tuple[str, ...] = (
    "eeg", "eog", "emg", "ecg", "airflow", "thorax", "abdomen", "spo2",
)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(tomlconfig.ConfigError):
    """A model configuration that cannot be built (bad file, key or value)."""


@dataclass
class ModelConfig:
    """Every size of the SleepModel. Units: samples at ``sample_rate`` Hz unless stated."""

    name: str = "custom"
    modalities: tuple[str, ...] = CANONICAL_MODALITIES

    # --- epoch framing -------------------------------------------------------------------
    sample_rate: float = 100.0  # Hz
    epoch_samples: int = 3000  # 30 s
    frame_samples: int = 400  # 4 s frames
    frame_step: int = 100  # 1 s step -> 27 frames

    # --- frame backbone: multi-scale 1-D SE-ResNet --------------------------------------
    backbone_channels: tuple[int, ...] = (64, 128, 128, 256)  # stem, then one res block each
    backbone_kernels: tuple[int, ...] = (3, 5, 7)  # one branch per kernel size
    backbone_stem_stride: int = 2
    backbone_se_reduction: int = 8
    frame_dim: int = 768  # Linear -> ELU -> Linear output (the MAE target)
    #: "frames": the backbone runs on each of the 27 overlapping 4-s frames (published);
    #: "epoch": once over the whole epoch, its feature map pooled into the 27 frames (~3.6x
    #: fewer samples through the convolutions; see frame_backbone.py)
    backbone_mode: str = "frames"

    # --- NeuroNet (one per modality) -----------------------------------------------------
    nn_dim: int = 768
    nn_depth: int = 4
    nn_heads: int = 8
    nn_mlp_ratio: float = 4.0
    nn_decoder_dim: int = 256
    nn_decoder_depth: int = 3
    nn_decoder_heads: int = 8
    nn_mask_ratio: float = 0.8
    nn_proj_hidden: int = 1024
    nn_proj_dim: int = 512
    nn_temperature: float = 0.05
    nn_norm_target: bool = True  # per-token layer-norm of the (detached) MAE target

    # --- SynthSleepNet fusion ------------------------------------------------------------
    fusion_dim: int = 512
    fusion_depth: int = 4
    fusion_heads: int = 8
    fusion_mlp_ratio: float = 4.0
    fusion_decoder_dim: int = 256
    fusion_decoder_depth: int = 2
    fusion_decoder_heads: int = 8
    fusion_mask_ratio: float = 0.4
    fusion_temperature: float = 0.1
    modality_dropout: float = 0.1  # per (epoch, modality) probability while training

    # --- temporal context: Mamba2 --------------------------------------------------------
    mamba_layers: int = 1
    mamba_d_state: int = 16
    mamba_d_conv: int = 4
    mamba_expand: int = 2
    mamba_headdim: int = 64
    mamba_chunk_size: int = 64  # SSD chunk length for the training scan
    use_cuda_kernels: bool = True  # mamba-ssm kernels when importable and on CUDA

    # --- heads ---------------------------------------------------------------------------
    head_hidden: int = 256
    head_dropout: float = 0.1
    n_stages: int = 5
    #: a second stage readout (one Linear on the temporal output h) used for the epochs whose only
    #: present modality is EEG; ``make_model`` refits it last on EEG-only training nights with
    #: everything else frozen (``offline_training.readout``). A single-channel EEG is the common
    #: real recording and the one the shared head, trained mostly on fuller montages, reads worst.
    eeg_stage_head: bool = False
    #: a third stage readout for every other epoch with an EEG (EEG + any other sensors): one Linear on
    #: [h, EEG side features, present as 0/1] [d + N_SIDE + M] -> [n_stages]. Off while training (the
    #: shared head learns); ``make_model`` fits it last on frozen features of training nights read
    #: with several sensor sets (``offline_training.readout``) and turns it on. An epoch whose side
    #: features are unknown (NaN) keeps the shared head.
    montage_stage_head: bool = False

    dropout: float = 0.0  # transformer dropout

    #: export the per-epoch encoder with the modalities stacked (``stacked.StackedEncoder``: the
    #: same function, ~3x fewer graph nodes). Pays where per-node overhead dominates (``small``:
    #: step 1.14-1.43x faster); with the paper's widths ORT's grouped convolutions are slower
    #: than 8 separate ones (fp32 step 385 -> 492 ms), so ``paper.toml`` turns it off.
    export_stacked: bool = True

    # ---------------------------------------------------------------------------------------
    @property
    def n_modalities(self) -> int:
        return len(self.modalities)

    @property
    def n_frames(self) -> int:
        """Frames per epoch: (3000 - 400) / 100 + 1 = 27 for the defaults."""
        return (self.epoch_samples - self.frame_samples) // self.frame_step + 1

    @property
    def mamba_d_model(self) -> int:
        """Mamba2 width; equal to the fused epoch embedding width."""
        return self.fusion_dim

    @property
    def mamba_d_inner(self) -> int:
        return self.mamba_expand * self.fusion_dim

    @property
    def mamba_nheads(self) -> int:
        return self.mamba_d_inner // self.mamba_headdim

    @property
    def mamba_conv_dim(self) -> int:
        """Channels of the depthwise conv (x, B, C with ngroups=1)."""
        return self.mamba_d_inner + 2 * self.mamba_d_state

    def __post_init__(self) -> None:
        self.modalities = tuple(self.modalities)
        self.backbone_channels = tuple(int(c) for c in self.backbone_channels)
        self.backbone_kernels = tuple(int(k) for k in self.backbone_kernels)
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the offending field and value."""
        bad = [m for m in self.modalities if m not in CANONICAL_MODALITIES]
        if bad or not self.modalities:
            raise ConfigError(
                f"config {self.name!r}: modalities {list(self.modalities)} invalid; "
                f"each must be one of {list(CANONICAL_MODALITIES)}"
            )
        order = [CANONICAL_MODALITIES.index(m) for m in self.modalities]
        if order != sorted(set(order)):
            raise ConfigError(
                f"config {self.name!r}: modalities {list(self.modalities)} must be unique and in "
                f"canonical order {list(CANONICAL_MODALITIES)}"
            )
        if self.n_frames < 1 or self.frame_samples > self.epoch_samples:
            raise ConfigError(f"config {self.name!r}: frame_samples={self.frame_samples} too long")
        if len(self.backbone_channels) < 1 or len(self.backbone_kernels) < 1:
            raise ConfigError(f"config {self.name!r}: backbone_channels/kernels must not be empty")
        if self.backbone_mode not in ("frames", "epoch"):
            raise ConfigError(f"config {self.name!r}: backbone_mode={self.backbone_mode!r} must be "
                              f"'frames' or 'epoch'")
        for k in self.backbone_kernels:
            if k % 2 == 0:
                raise ConfigError(f"config {self.name!r}: backbone kernel {k} must be odd")
        for dim, heads, what in (
            (self.nn_dim, self.nn_heads, "nn_dim/nn_heads"),
            (self.nn_decoder_dim, self.nn_decoder_heads, "nn_decoder_dim/nn_decoder_heads"),
            (self.fusion_dim, self.fusion_heads, "fusion_dim/fusion_heads"),
            (self.fusion_decoder_dim, self.fusion_decoder_heads,
             "fusion_decoder_dim/fusion_decoder_heads"),
        ):
            if heads < 1 or dim % heads:
                raise ConfigError(f"config {self.name!r}: {what} = {dim}/{heads} is not an integer")
        if self.mamba_d_inner % self.mamba_headdim:
            raise ConfigError(
                f"config {self.name!r}: mamba d_inner={self.mamba_d_inner} not divisible by "
                f"mamba_headdim={self.mamba_headdim}"
            )
        for key in ("nn_mask_ratio", "fusion_mask_ratio"):
            r = getattr(self, key)
            if not 0.0 <= r < 1.0:
                raise ConfigError(f"config {self.name!r}: {key}={r} must be in [0, 1)")
        if self.eeg_stage_head and "eeg" not in self.modalities:
            raise ConfigError(f"config {self.name!r}: eeg_stage_head needs 'eeg' among the modalities")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ConfigError(f"config {self.name!r}: modality_dropout={self.modality_dropout}")
        if self.mamba_layers < 1 or self.mamba_chunk_size < 1 or self.mamba_d_conv < 1:
            raise ConfigError(f"config {self.name!r}: mamba sizes must be >= 1")
        for key in ("nn_temperature", "fusion_temperature"):
            if not getattr(self, key) > 0 or not math.isfinite(getattr(self, key)):
                raise ConfigError(f"config {self.name!r}: {key} must be > 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> ModelConfig:
        """Build from a flat dict; unknown keys raise ConfigError naming ``source``."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(
                f"{source}: unknown model config key(s) {unknown}; known keys: {sorted(known)}"
            )
        kwargs: dict[str, Any] = {}
        for k, v in d.items():
            default = known[k].default if known[k].default is not dataclasses.MISSING else None
            if isinstance(default, tuple):
                if not isinstance(v, (list, tuple)):
                    raise ConfigError(f"{source}: {k} must be a list, got {v!r}")
                v = tuple(v)
            elif isinstance(default, bool):
                if not isinstance(v, bool):
                    raise ConfigError(f"{source}: {k} must be true/false, got {v!r}")
            elif isinstance(default, int):
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ConfigError(f"{source}: {k} must be an integer, got {v!r}")
            elif isinstance(default, float):
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ConfigError(f"{source}: {k} must be a number, got {v!r}")
                v = float(v)
            kwargs[k] = v
        try:
            return cls(**kwargs)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None


def _flatten(table: dict[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in table.items():
        items = _flatten(v, source).items() if isinstance(v, dict) else [(k, v)]
        for kk, vv in items:
            if kk in out:
                raise ConfigError(f"{source}: key {kk!r} given twice")
            out[kk] = vv
    return out


def available_configs() -> list[str]:
    """Names of the model configs shipped in synthsleep/configs (other TOMLs there are skipped)."""
    names = []
    for p in sorted(CONFIG_DIR.glob("*.toml")):
        try:
            ModelConfig.from_dict(_flatten(tomlconfig.read_toml(p), str(p)), source=str(p))
        except (tomlconfig.ConfigError, TypeError):
            continue
        names.append(p.stem)
    return names


def load_config(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> ModelConfig:
    """Load ``small`` / ``paper`` (shipped) or a TOML file path, then apply flat ``overrides``.

    Raises:
        ConfigError: file missing or unreadable TOML, unknown key, wrong type or bad value.
    """
    p = Path(name_or_path)
    if p.suffix != ".toml" and not p.is_file():  # a name (a folder named "paper" is not a config)
        p = CONFIG_DIR / f"{name_or_path}.toml"
        if not p.exists():
            raise ConfigError(
                f"unknown model config {str(name_or_path)!r}: not a file and not one of "
                f"{available_configs()} in {CONFIG_DIR}"
            )
    if not p.is_file():
        raise ConfigError(f"model config file {p} does not exist")
    try:
        raw = tomlconfig.read_toml(p, "model config")
    except tomlconfig.ConfigError as e:
        raise ConfigError(str(e)) from None
    flat = _flatten(raw, str(p))
    flat.setdefault("name", p.stem)
    if overrides:
        flat.update(overrides)
    cfg = ModelConfig.from_dict(flat, source=str(p))
    log.debug("loaded model config %s from %s", cfg.name, p)
    return cfg
