"""Run configuration for the training loops: a TOML file of sections plus ``--set`` overrides.

A run config (``synthsleep/configs/train_small.toml``, ``train_paper.toml``) names the model
config (``model = "small"``) and holds one table per job::

    model = "small"
    seed = 0
    [pretrain_unimodal]
    steps = 300
    lr = 1e-3

Every key has a default below; a file or override may only set known keys (a typo is an error
that names the file and the key). Overrides are ``section.key=value`` with a TOML value
(``finetune.lr=3e-4``, ``finetune.freeze_encoder=false``, ``model="paper"``); a value that is not
valid TOML is taken as a string. ``model_overrides`` is a free table passed to
``synthsleep.model.load_config`` (e.g. ``model_overrides.modality_dropout=0.2``).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

#: Every key a run config may hold, with its default. Sections are jobs.
DEFAULTS: dict[str, Any] = {
    "model": "small",  # model config name (synthsleep/configs/<name>.toml) or path
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda
    "threads": 0,  # torch intra-op threads; 0 = leave torch's default
    "amp": True,  # bfloat16 autocast on CUDA (never on CPU)
    "model_overrides": {},  # free table -> synthsleep.model.load_config overrides
    "pretrain_unimodal": {
        "steps": 300,  # optimizer steps (global batches)
        "batch_size": 32,  # global batch (split over DDP ranks)
        "lr": 1e-3,
        "weight_decay": 0.05,
        "warmup_steps": 20,
        "grad_clip": 1.0,
        "max_minutes": 0.0,  # wall-clock budget; 0 = none (stops early, checkpoint saved)
        "log_every": 10,
        "ckpt_every": 100,
        "max_epochs_in_memory": 20000,  # epochs sampled from the train split into memory
    },
    "pretrain_multimodal": {
        "steps": 300,
        "batch_size": 16,
        "lr": 5e-4,
        "weight_decay": 0.05,
        "warmup_steps": 20,
        "grad_clip": 1.0,
        "max_minutes": 0.0,
        "log_every": 10,
        "ckpt_every": 100,
        "max_epochs_in_memory": 20000,
        "freeze_unimodal": False,  # keep the NeuroNet encoders fixed while fusing
    },
    "finetune": {
        # phase 1: end-to-end on short windows (encoder + temporal + heads), from zero state
        "window_steps": 200,
        "window_len": 8,  # epochs per window
        "window_batch": 8,  # windows per global batch
        "window_lr": 5e-4,
        "window_max_minutes": 0.0,
        "augment": False,  # gain/noise/low-pass/sensor-drop augmentation in the window phase
        # chance per training window (phase 1) and per training night (phase 2, an extra copy of
        # the night embedded with that montage) of a reduced sensor set (augment.REDUCED_MONTAGES)
        "montage_dropout": 0.0,
        # chance per training window (phase 1) that one present sensor other than the EEG carries
        # a foreign signal (noise, another sensor's signal, a shuffled copy) while marked present:
        # no single sensor may rule the output (augment.corrupt_modality)
        "corrupt_modality": 0.0,
        # phase 2: chance per night and pass of entering it mid-night (random epoch of its first
        # half, state reset there) instead of at its start, as a monitor started mid-night does
        "mid_start": 0.0,
        # phase 2: whole nights in order, truncated backprop, state carried (detached)
        "night_passes": 10,  # passes over every training night
        "chunk": 64,  # epochs per TBPTT chunk
        "lanes": 4,  # nights processed in parallel (per rank)
        "night_lr": 1e-3,
        "night_max_minutes": 0.0,
        "freeze_encoder": True,  # phase 2 encoder frozen -> per-epoch embeddings cached
        "freeze_bn": False,  # BatchNorm layers use running statistics while fine-tuning
        "eval_window": 20,  # epochs per window of the zero-state evaluation mode
        "weight_decay": 0.01,
        "grad_clip": 1.0,
        "stage_class_weights": True,  # inverse-frequency CE weights from the training labels
        "pos_weight": True,  # apnea / hypopnea BCE pos_weight = n_neg / n_pos (train labels)
        "max_pos_weight": 20.0,
        "loss_stage": 1.0,  # task loss weights (a task not trained gets 0)
        "loss_apnea": 1.0,
        "loss_hypopnea": 1.0,
        "eval_every": 1,  # validate every N passes (phase 2) ; selection on VAL only
        "log_every": 10,
    },
    "probe": {
        "steps": 300,
        "batch_size": 64,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "log_every": 20,
    },
}


class RunConfigError(ValueError):
    """A run config that cannot be used (bad file, unknown key, bad override)."""


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML literal if it parses (1, 1e-3, true, "x", [1,2]), else the string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _merge(base: dict[str, Any], new: dict[str, Any], source: str, path: str = "") -> None:
    for k, v in new.items():
        where = f"{path}{k}"
        if path.startswith("model_overrides."):  # free table: any key, any value
            base[k] = v
            continue
        if k not in base:
            known = sorted(base)
            raise RunConfigError(f"{source}: unknown run config key {where!r}; known here: {known}")
        if isinstance(base[k], dict):
            if not isinstance(v, dict):
                raise RunConfigError(f"{source}: {where!r} must be a table")
            _merge(base[k], v, source, where + ".")
        else:
            default = base[k]
            if isinstance(default, bool) and not isinstance(v, bool):
                raise RunConfigError(f"{source}: {where} must be true/false, got {v!r}")
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise RunConfigError(f"{source}: {where} must be a number, got {v!r}")
                v = float(v) if isinstance(default, float) else v
                if isinstance(default, int) and isinstance(v, float) and not v.is_integer():
                    raise RunConfigError(f"{source}: {where} must be an integer, got {v!r}")
                v = int(v) if isinstance(default, int) else v
            base[k] = v


def resolve_path(name_or_path: str | Path) -> Path:
    """``train_small`` -> synthsleep/configs/train_small.toml; a path is returned as is."""
    p = Path(name_or_path)
    if p.suffix == ".toml" and p.exists():
        return p
    if p.exists():
        return p
    cand = CONFIG_DIR / (p.name if p.suffix == ".toml" else f"{p.name}.toml")
    if cand.exists():
        return cand
    raise RunConfigError(f"run config {str(name_or_path)!r} not found (looked in . and {CONFIG_DIR})")


def load_run_config(name_or_path: str | Path | None = "train_small",
                    overrides: list[str] | dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults <- TOML file <- overrides. Returns a nested dict (sections are dicts).

    Args:
        name_or_path: shipped name (``train_small``) or a TOML path; None = defaults only.
        overrides: ``["finetune.lr=3e-4", ...]`` or a flat dict ``{"finetune.lr": 3e-4}``.
    """
    cfg = copy.deepcopy(DEFAULTS)
    if name_or_path is not None:
        p = resolve_path(name_or_path)
        try:
            with p.open("rb") as f:
                raw = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise RunConfigError(f"{p}: invalid TOML: {e}") from None
        _merge(cfg, raw, str(p))
        cfg["_source"] = str(p)
    items: list[tuple[str, Any]] = []
    if isinstance(overrides, dict):
        items = list(overrides.items())
    elif overrides:
        for ov in overrides:
            key, eq, val = ov.partition("=")
            if not eq or not key.strip():
                raise RunConfigError(f"override {ov!r} must look like section.key=value")
            items.append((key.strip(), parse_value(val.strip())))
    for key, val in items:
        nested: Any = val
        for part in reversed(key.split(".")):
            nested = {part: nested}
        _merge(cfg, nested, f"--set {key}")
    return cfg


def add_config_arguments(parser: Any) -> None:
    """``--config`` and ``--set`` for an argparse parser."""
    parser.add_argument("--config", default="train_small",
                        help="run config: shipped name (train_small, train_paper) or TOML path "
                             "(default: train_small)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a run config key, e.g. --set finetune.night_lr=3e-4 "
                             "(repeatable; TOML values)")
