"""Weights on disk: ``<path>.safetensors`` (tensors) + ``<path>.json`` (config, metadata).

Never pickles: safetensors for tensors, JSON for everything else.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .config import ConfigError, ModelConfig
from .sleep_model import SleepModel

log = logging.getLogger(__name__)

FORMAT = "synthsleep-model"
FORMAT_VERSION = 1


def _base(path: str | Path) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".safetensors", ".json") else p


def save_model(model: SleepModel, cfg: ModelConfig, path: str | Path,
               metadata: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``path.safetensors`` and ``path.json``; returns both paths.

    ``metadata``: extra JSON-able provenance (stored under "metadata" in the JSON).
    """
    base = _base(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    st, js = base.with_suffix(".safetensors"), base.with_suffix(".json")
    save_file(tensors, str(st), metadata={"format": FORMAT, "version": str(FORMAT_VERSION)})
    doc = {"format": FORMAT, "version": FORMAT_VERSION, "config": cfg.to_dict(),
           "metadata": metadata or {}}
    js.write_text(json.dumps(doc, indent=2, sort_keys=True))
    log.info("saved model %s (%d tensors) to %s", cfg.name, len(tensors), st)
    return st, js


def load_config_json(path: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """Read ``path.json`` -> (config, metadata)."""
    js = _base(path).with_suffix(".json")
    if not js.is_file():
        raise FileNotFoundError(f"model config {js} not found (expected next to the .safetensors)")
    try:
        doc = json.loads(js.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{js}: not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "config" not in doc:
        raise ConfigError(f"{js}: not a {FORMAT} config file")
    if doc.get("version") != FORMAT_VERSION:
        raise ConfigError(f"{js}: format version {doc.get('version')} unsupported "
                          f"(this code reads {FORMAT_VERSION})")
    return ModelConfig.from_dict(doc["config"], source=str(js)), doc.get("metadata", {})


def load_model(path: str | Path, map_location: str | torch.device = "cpu", skip: tuple[str, ...] = ()
               ) -> tuple[SleepModel, ModelConfig]:
    """Load ``path.safetensors`` + ``path.json`` -> (SleepModel in eval mode, config).

    ``skip``: name prefixes of weights that are about to be refitted (e.g. the stage readouts,
    ``offline_training.readout``): neither read nor required, left at their initial values, so a
    checkpoint whose readouts predate the current side features still loads for that refit.
    """
    base = _base(path)
    cfg, _ = load_config_json(base)
    st = base.with_suffix(".safetensors")
    if not st.is_file():
        raise FileNotFoundError(f"model weights {st} not found")
    tensors = {k: v for k, v in load_file(str(st), device=str(map_location)).items() if not k.startswith(skip)}
    model = SleepModel(cfg)
    init = model.state_dict()
    tensors.update({k: v for k, v in init.items() if k.startswith(skip)})
    want = {k: tuple(v.shape) for k, v in init.items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    wrong = sorted(f"{k}: {got[k]} != {want[k]}" for k in set(want) & set(got) if want[k] != got[k])
    if missing or unexpected or wrong:
        raise ConfigError(
            f"{st}: weights do not match config {cfg.name!r}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}"
            f"{' (lists truncated)' if max(len(missing), len(unexpected), len(wrong)) > 5 else ''}")
    model.load_state_dict(tensors, strict=True)
    model.to(map_location).eval()
    return model, cfg
