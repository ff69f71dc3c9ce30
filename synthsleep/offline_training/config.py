"""Run configuration of the training jobs: a typed dataclass, a TOML file, ``--set`` overrides.

``RunConfig`` holds every key with its default, here and only here; a run config file
(``synthsleep/configs/train_small.toml``, ``train_paper.toml``) overrides some of them, one table
per job::

    model = "small"
    seed = 0
    [pretrain_unimodal]
    steps = 300
    lr = 1e-3

A file or override may only set known keys of the right type (a typo is a ``RunConfigError``
naming the file and the key). Overrides are ``section.key=value`` with a TOML value
(``finetune.night_lr=3e-4``, ``finetune.freeze_encoder=false``, ``model="paper"``), applied after
the file (the command line wins); a value that is not valid TOML is taken as a string.
``model_overrides`` is a free table passed to ``synthsleep.model.load_config`` (e.g.
``model_overrides.modality_dropout=0.2``). Loading goes through ``synthsleep.tomlconfig``, the
loader of every TOML file of the project.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..tomlconfig import ConfigError, from_table, parse_override, parse_value, read_toml, set_path

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

__all__ = ["RunConfig", "PretrainConfig", "MultimodalPretrainConfig", "FinetuneConfig", "ProbeConfig", "RunConfigError",
           "load_run_config", "parse_value", "add_config_arguments", "resolve_path", "CONFIG_DIR"]


class RunConfigError(ConfigError):
    """A run config that cannot be used (bad file, unknown key, bad override)."""


@dataclass
class PretrainConfig:
    """``[pretrain_unimodal]``: one NeuroNet per modality, self-supervised."""

    steps: int = 300  # optimizer steps (global batches)
    batch_size: int = 32  # global batch, epochs (split over DDP ranks)
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20
    grad_clip: float = 1.0
    max_minutes: float = 0.0  # wall-clock budget; 0 = none (stops early, checkpoint saved)
    log_every: int = 10
    ckpt_every: int = 100
    max_epochs_in_memory: int = 20000  # epochs sampled from the train split into memory


@dataclass
class MultimodalPretrainConfig(PretrainConfig):
    """``[pretrain_multimodal]``: the SynthSleepNet fusion over every modality."""

    batch_size: int = 16
    lr: float = 5e-4
    freeze_unimodal: bool = False  # keep the NeuroNet encoders fixed while fusing


@dataclass
class FinetuneConfig:
    """``[finetune]``: phase 1 (windows, end to end) and phase 2 (whole nights, state carried)."""

    # phase 1: end-to-end on short windows (encoder + temporal + heads), from zero state
    window_steps: int = 200
    window_len: int = 8  # epochs per window
    window_batch: int = 8  # windows per global batch
    window_lr: float = 5e-4
    window_max_minutes: float = 0.0
    augment: bool = False  # gain/noise/low-pass/sensor-drop augmentation in the window phase
    # chance per training window (phase 1) and per training night (phase 2, an extra copy of the
    # night embedded with that montage) of a reduced sensor set (augment.REDUCED_MONTAGES)
    montage_dropout: float = 0.0
    # relative chance of each reduced sensor set, in augment.REDUCED_MONTAGES order: EEG, EEG+EOG,
    # EEG+EOG+EMG, EEG+EOG+EMG+ECG, cardiorespiratory without EMG, all but SpO2, EEG+EOG+EMG+ECG+SpO2
    # (EEG alone and EEG+EOG: headbands, single-channel recordings, the DREAMS excerpts)
    montage_weights: list[float] = field(default_factory=lambda: [3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    # chance per training window (phase 1) that one present sensor other than the EEG carries a
    # foreign signal (noise, another sensor's signal, a shuffled copy) while marked present: no
    # single sensor may rule the output (augment.corrupt_modality)
    corrupt_modality: float = 0.0
    # phase 2: chance per night and pass of entering it mid-night (random epoch of its first
    # half, state reset there) instead of at its start, as a monitor started mid-night does
    mid_start: float = 0.0
    # phase 2: whole nights in order, truncated backprop, state carried (detached)
    night_passes: int = 10  # passes over every training night
    chunk: int = 64  # epochs per TBPTT chunk
    lanes: int = 4  # nights processed in parallel (per rank)
    night_lr: float = 1e-3
    night_max_minutes: float = 0.0
    freeze_encoder: bool = True  # phase 2 encoder frozen -> per-epoch embeddings cached
    freeze_bn: bool = False  # BatchNorm layers use running statistics while fine-tuning
    eval_window: int = 20  # epochs per window of the zero-state evaluation mode
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    stage_class_weights: bool = True  # inverse-frequency CE weights from the training labels
    pos_weight: bool = True  # apnea / hypopnea BCE pos_weight = n_neg / n_pos (train labels)
    max_pos_weight: float = 20.0
    loss_stage: float = 1.0  # task loss weights (a task not trained gets 0)
    loss_apnea: float = 1.0
    loss_hypopnea: float = 1.0
    eval_every: int = 1  # validate every N passes (phase 2); selection on VAL only
    log_every: int = 10


@dataclass
class ProbeConfig:
    """``[probe]``: the linear probe on frozen fused embeddings."""

    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    log_every: int = 20


@dataclass
class RunConfig:
    """Every key of a run config, with its default (the one place the defaults live)."""

    model: str = "small"  # model config name (synthsleep/configs/<name>.toml) or path
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default
    amp: bool = True  # bfloat16 autocast on CUDA (never on CPU)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # -> model.load_config overrides
    pretrain_unimodal: PretrainConfig = field(default_factory=PretrainConfig)
    pretrain_multimodal: MultimodalPretrainConfig = field(default_factory=MultimodalPretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    #: the file the config was read from (None: defaults and overrides only); not settable
    source: str | None = field(default=None, metadata={"internal": True})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able nested dict (model metadata, provenance); ``_source`` names the file."""
        d = dataclasses.asdict(self)
        src = d.pop("source")
        if src is not None:
            d["_source"] = src
        return d

    def copy(self) -> RunConfig:
        """A deep copy (a job may change its own copy)."""
        return copy.deepcopy(self)


def resolve_path(name_or_path: str | Path) -> Path:
    """``train_small`` -> synthsleep/configs/train_small.toml; an existing path is returned as is."""
    p = Path(name_or_path)
    if p.exists():
        return p
    cand = CONFIG_DIR / (p.name if p.suffix == ".toml" else f"{p.name}.toml")
    if cand.exists():
        return cand
    raise RunConfigError(f"run config {str(name_or_path)!r} not found (looked in . and {CONFIG_DIR})")


def load_run_config(name_or_path: str | Path | None = "train_small",
                    overrides: list[str] | dict[str, Any] | None = None) -> RunConfig:
    """Defaults <- TOML file <- overrides (the command line wins).

    Args:
        name_or_path: shipped name (``train_small``) or a TOML path; None = defaults only.
        overrides: ``["finetune.night_lr=3e-4", ...]`` or a flat dict ``{"finetune.night_lr": 3e-4}``.

    Raises:
        RunConfigError: missing file, invalid TOML, unknown key or wrong type (naming the file
            or ``--set KEY`` and the key).
    """
    try:
        cfg = RunConfig()
        if name_or_path is not None:
            p = resolve_path(name_or_path)
            cfg = from_table(RunConfig, read_toml(p, "run config"), str(p))
            cfg.source = str(p)
        items = (list(overrides.items()) if isinstance(overrides, dict)
                 else [parse_override(ov) for ov in overrides or ()])
        for key, val in items:
            set_path(cfg, key, val, f"--set {key}")
    except RunConfigError:
        raise
    except ConfigError as e:
        raise RunConfigError(str(e)) from None
    return cfg


def add_config_arguments(parser: Any) -> None:
    """``--config`` and ``--set`` for an argparse parser."""
    parser.add_argument("--config", default="train_small",
                        help="run config: shipped name (train_small, train_paper) or TOML path "
                             "(default: train_small)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a run config key, e.g. --set finetune.night_lr=3e-4 "
                             "(repeatable; TOML values; applied after the file)")
