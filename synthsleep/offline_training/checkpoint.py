"""Training checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint directory holds

* ``model.safetensors`` + ``model.json``: the weights and model config
  (``synthsleep.model.save_model``, read back by ``synthsleep.model.load_model``);
* ``optimizer.safetensors``: every tensor of the optimizer state, keyed ``<param index>.<name>``;
* ``train_state.json``: step, epoch, position in the epoch, optimizer param groups and scalar
  state, scheduler state, the RNG states of python / numpy / torch (CPU and CUDA) as lists, the
  run config and any extra fields of the job.

Restoring all of it gives exactly the same next loss (tested in tests/offline_training/test_resume.py).
Writes are atomic: into ``<dir>.tmp`` then renamed over ``<dir>``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

log = logging.getLogger(__name__)

TRAIN_STATE = "train_state.json"
OPTIMIZER = "optimizer.safetensors"
MODEL_WEIGHTS = "model.safetensors"


# ---------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """python, numpy (legacy global) and torch RNG states as JSON-able lists."""
    py = random.getstate()
    np_state = np.random.get_state()
    out: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        out["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


# ---------------------------------------------------------------------------------- optimizer
def optimizer_to_files(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``opt.state_dict()`` into (tensors for safetensors, JSON-able rest)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for name, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{pid}.{name}"] = val.detach().cpu().clone().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_files(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         meta: dict[str, Any]) -> None:
    """Load what :func:`optimizer_to_files` wrote into ``opt`` (same parameter layout)."""
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        pid, _, name = key.partition(".")
        state.setdefault(int(pid), {})[name] = val
    for pid, st in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# ---------------------------------------------------------------------------------- model
def save_model_files(model: nn.Module, directory: Path) -> None:
    """model.safetensors + model.json of a SleepModel (``synthsleep.model.save_model``)."""
    from synthsleep.model import save_model

    if not hasattr(model, "cfg"):
        raise TypeError(f"save_checkpoint needs a SleepModel (with .cfg), got {type(model).__name__}")
    directory.mkdir(parents=True, exist_ok=True)
    save_model(model, model.cfg, directory / "model")


def load_weights(model: nn.Module, directory: Path, strict: bool = True) -> list[str]:
    """Load model.safetensors from ``directory`` into ``model``; returns the missing keys."""
    path = Path(directory) / MODEL_WEIGHTS
    if not path.exists():
        raise FileNotFoundError(f"no {MODEL_WEIGHTS} in checkpoint directory {directory}")
    sd = load_file(str(path))
    res = model.load_state_dict(sd, strict=strict)
    return list(res.missing_keys)


# ---------------------------------------------------------------------------------- checkpoint
def save_checkpoint(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    state: dict[str, Any], scheduler: Any | None = None) -> Path:
    """Write a resumable checkpoint atomically. ``state`` holds step/epoch/... (JSON-able)."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_model_files(model, tmp)
    full = dict(state)
    full["rng"] = rng_state()
    if optimizer is not None:
        tensors, meta = optimizer_to_files(optimizer)
        save_file(tensors, str(tmp / OPTIMIZER))
        full["optimizer"] = meta
    if scheduler is not None:
        full["scheduler"] = scheduler.state_dict()
    with (tmp / TRAIN_STATE).open("w") as f:
        json.dump(full, f)
        f.flush()
        os.fsync(f.fileno())
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        if old.exists():
            shutil.rmtree(old)
        directory.rename(old)
    tmp.rename(directory)
    if old.exists():
        shutil.rmtree(old)
    log.debug("checkpoint written to %s (step %s)", directory, state.get("step"))
    return directory


def load_checkpoint(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    scheduler: Any | None = None, restore_rng: bool = True) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote; returns the train state dict."""
    directory = Path(directory)
    sp = directory / TRAIN_STATE
    if not sp.exists():
        raise FileNotFoundError(f"cannot resume: {sp} does not exist")
    try:
        state = json.loads(sp.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"cannot resume: {sp} is not valid JSON ({e})") from None
    load_weights(model, directory)
    if optimizer is not None and "optimizer" in state:
        optimizer_from_files(optimizer, load_file(str(directory / OPTIMIZER)), state["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng and "rng" in state:
        set_rng_state(state["rng"])
    return state
