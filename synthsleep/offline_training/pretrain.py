"""Self-supervised pretraining (``synthsleep pretrain unimodal|multimodal``).

* ``unimodal``: one NeuroNet per modality (masked frame-feature reconstruction + NT-Xent between
  two maskings of the same epoch) on the training split's epochs where that modality is present.
  The run saves a SleepModel whose config reads only that modality (``model.safetensors`` +
  ``model.json``); only its ``encoders.<modality>`` weights are trained.
* ``multimodal``: SynthSleepNet fusion (cross-modal masked prediction of each modality's NeuroNet
  tokens + NT-Xent between the fused and each modality's mean token) over all modalities,
  initialised from the unimodal runs' encoders (``--unimodal DIR`` holds ``<modality>/`` runs).

Labels are never read. Batches are drawn per step from (seed, step), so a resumed run is exact.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .config import PretrainConfig, RunConfig, add_config_arguments, load_run_config
from .shards import load_nights
from .trainer import (
    DistInfo,
    count_parameters,
    init_distributed,
    make_optimizer,
    seed_everything,
    setup_threads,
    shard_rows,
    shutdown_distributed,
    train_steps,
    warmup_cosine,
)

log = logging.getLogger(__name__)


class _UnimodalLoss(nn.Module):
    """forward(x [N, 3000]) -> NeuroNet pretrain losses (a Module so DDP can wrap it)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.encoder.pretrain_loss(x)


class _MultimodalLoss(nn.Module):
    """forward(x [N, M, 3000], present [N, M]) -> SynthSleepNet fusion pretrain losses."""

    def __init__(self, model: nn.Module, freeze_unimodal: bool) -> None:
        super().__init__()
        self.model = model
        self.freeze = freeze_unimodal

    def forward(self, x: Tensor, present: Tensor) -> dict[str, Tensor]:
        if self.freeze:
            self.model.encoders.eval()
            with torch.no_grad():
                tokens = self.model.neuronet_tokens(x, present)
        else:
            tokens = self.model.neuronet_tokens(x, present)
        return self.model.fusion.pretrain_loss(tokens, present)


def _epoch_pool(nights, max_epochs: int, seed: int, min_present: int = 1
                ) -> tuple[np.ndarray, np.ndarray]:
    """Epochs with >= ``min_present`` modalities present, at most ``max_epochs`` (seeded subsample).

    Returns (x float16 [N, M, 3000], present bool [N, M]).
    """
    xs, ps = [], []
    for n in nights:
        ok = n.present.sum(1) >= min_present
        xs.append(n.x[ok])
        ps.append(n.present[ok])
    if not xs or sum(len(x) for x in xs) == 0:
        return np.zeros((0, 1, 3000), np.float16), np.zeros((0, 1), bool)
    x, p = np.concatenate(xs), np.concatenate(ps)
    if len(x) > max_epochs:
        idx = np.sort(np.random.default_rng([seed, 0x5EED]).choice(len(x), max_epochs, replace=False))
        x, p = x[idx], p[idx]
    return x, p


def _common(section: PretrainConfig, run_cfg: RunConfig) -> dict[str, Any]:
    """The ``train_steps`` arguments every pretraining job takes from its section."""
    return dict(grad_clip=section.grad_clip, log_every=section.log_every,
                ckpt_every=section.ckpt_every, max_minutes=section.max_minutes, amp=run_cfg.amp)


def pretrain_unimodal(shard_dir: str | Path, out_dir: str | Path, run_cfg: RunConfig, modality: str,
                      resume: bool = False, di: DistInfo | None = None, device: torch.device | None = None,
                      stop_at: int | None = None) -> dict[str, Any]:
    """Pretrain the NeuroNet of ``modality``; writes ``out_dir/model.*`` and returns a summary."""
    from synthsleep.model import SleepModel, load_config, save_model

    di = di or DistInfo()
    device = device or torch.device("cpu")
    sec = run_cfg.pretrain_unimodal
    seed = int(run_cfg.seed)
    seed_everything(seed)
    ov = dict(run_cfg.model_overrides)
    ov["modalities"] = [modality]
    ov["eeg_stage_head"] = False  # one modality's encoder; no stage is read from this model
    cfg = load_config(run_cfg.model, ov)
    model = SleepModel(cfg).to(device)
    nights = load_nights(shard_dir, "train", (modality,))
    x, _ = _epoch_pool(nights, int(sec.max_epochs_in_memory), seed)
    if len(x) < 2:
        raise ValueError(f"{shard_dir}: fewer than 2 training epochs with modality {modality!r} present")
    x = x[:, 0]
    gb = int(sec.batch_size)
    rows = shard_rows(gb, di)
    lossmod = _UnimodalLoss(model.encoders[modality])  # gradients averaged over ranks by train_steps

    def loss_fn(step: int) -> dict[str, Tensor]:
        idx = np.random.default_rng([seed, step, 0x0E]).integers(0, len(x), gb)[rows]
        return lossmod(torch.from_numpy(x[idx].astype(np.float32)).to(device))

    steps = int(sec.steps)
    params = list(model.encoders[modality].parameters())
    opt = make_optimizer(params, float(sec.lr), float(sec.weight_decay))
    sched = warmup_cosine(opt, int(sec.warmup_steps), steps)
    out = Path(out_dir)
    res = train_steps(model=model, optimizer=opt, scheduler=sched, loss_fn=loss_fn, total_steps=steps,
                      out_dir=out, seed=seed, di=di, device=device, samples_per_step=gb,
                      resume=resume, desc=f"pretrain {modality}", stop_at=stop_at,
                      extra_state={"modality": modality}, **_common(sec, run_cfg))
    summary = {"modality": modality, "train_epochs": int(len(x)), "steps": res.steps_done,
               "stopped_early": res.stopped_early, "seconds": res.seconds,
               "epochs_per_s": res.samples_per_s, "last": res.last,
               "encoder_parameters": count_parameters(model.encoders[modality])}
    if di.is_main:
        save_model(model, cfg, out / "model", metadata={"job": "pretrain_unimodal", **summary})
        (out / "pretrain_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _unimodal_source(unimodal: str | Path, modality: str) -> Path | None:
    """``<dir>/<modality>/model.safetensors`` (or ``<dir>/<modality>/checkpoint/...``)."""
    for cand in (Path(unimodal) / modality / "model.safetensors",
                 Path(unimodal) / modality / "checkpoint" / "model.safetensors"):
        if cand.exists():
            return cand
    return None


def pretrain_multimodal(shard_dir: str | Path, out_dir: str | Path, run_cfg: RunConfig,
                        unimodal: str | Path | None = None, resume: bool = False,
                        di: DistInfo | None = None, device: torch.device | None = None,
                        stop_at: int | None = None) -> dict[str, Any]:
    """Pretrain the fusion (and, unless frozen, the encoders) over all modalities."""
    from safetensors.torch import load_file

    from synthsleep.model import SleepModel, load_config, save_model

    di = di or DistInfo()
    device = device or torch.device("cpu")
    sec = run_cfg.pretrain_multimodal
    seed = int(run_cfg.seed)
    seed_everything(seed)
    cfg = load_config(run_cfg.model, run_cfg.model_overrides or None)
    model = SleepModel(cfg).to(device)
    loaded = []
    if unimodal is not None:
        for m in cfg.modalities:
            src = _unimodal_source(unimodal, m)
            if src is None:
                log.warning("no unimodal run for %s under %s: its encoder starts from scratch", m, unimodal)
                continue
            sd = {k[len(f"encoders.{m}."):]: v for k, v in load_file(str(src)).items()
                  if k.startswith(f"encoders.{m}.")}
            try:
                model.encoders[m].load_state_dict(sd)
            except RuntimeError as e:
                raise ValueError(f"unimodal run {src} does not fit model config {cfg.name!r} "
                                 f"(made with other sizes?): {str(e).splitlines()[0]}") from None
            loaded.append(m)
    nights = load_nights(shard_dir, "train", cfg.modalities)
    x, present = _epoch_pool(nights, int(sec.max_epochs_in_memory), seed, min_present=2)
    if len(x) < 2:
        raise ValueError(f"{shard_dir}: fewer than 2 training epochs with >= 2 modalities present")
    gb = int(sec.batch_size)
    rows = shard_rows(gb, di)
    freeze = bool(sec.freeze_unimodal)
    lossmod = _MultimodalLoss(model, freeze)  # gradients averaged over ranks by train_steps

    def loss_fn(step: int) -> dict[str, Tensor]:
        idx = np.random.default_rng([seed, step, 0x33]).integers(0, len(x), gb)[rows]
        return lossmod(torch.from_numpy(x[idx].astype(np.float32)).to(device),
                       torch.from_numpy(present[idx]).to(device))

    steps = int(sec.steps)
    params = list(model.fusion.parameters()) + ([] if freeze else list(model.encoders.parameters()))
    opt = make_optimizer(params, float(sec.lr), float(sec.weight_decay))
    sched = warmup_cosine(opt, int(sec.warmup_steps), steps)
    out = Path(out_dir)
    res = train_steps(model=model, optimizer=opt, scheduler=sched, loss_fn=loss_fn, total_steps=steps,
                      out_dir=out, seed=seed, di=di, device=device, samples_per_step=gb,
                      resume=resume, desc="pretrain multimodal", stop_at=stop_at,
                      **_common(sec, run_cfg))
    summary = {"modalities": list(cfg.modalities), "initialised_from_unimodal": loaded,
               "train_epochs": int(len(x)), "steps": res.steps_done, "stopped_early": res.stopped_early,
               "seconds": res.seconds, "epochs_per_s": res.samples_per_s, "last": res.last,
               "parameters": count_parameters(model)}
    if di.is_main:
        save_model(model, cfg, out / "model", metadata={"job": "pretrain_multimodal", **summary})
        (out / "pretrain_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


# ======================================================================================= CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    u = sub.add_parser("unimodal", help="NeuroNet of one modality")
    u.add_argument("--modality", required=True, help="eeg, eog, emg, ecg, airflow, thorax, abdomen or spo2")
    m = sub.add_parser("multimodal", help="SynthSleepNet fusion over all modalities")
    m.add_argument("--unimodal", metavar="DIR", default=None,
                   help="folder holding the unimodal runs as DIR/<modality>/ (default: from scratch)")
    for p in (u, m):
        p.add_argument("--shards", required=True, metavar="DIR", help="prepared folder (manifest.json + shards/)")
        p.add_argument("--out", required=True, metavar="RUN", help="output run folder")
        p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint")
        add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    rc = load_run_config(args.config, args.overrides)
    setup_threads(int(rc.threads))
    di, device = init_distributed(rc.device)
    t0 = time.monotonic()
    try:
        if args.stage == "unimodal":
            s = pretrain_unimodal(args.shards, args.out, rc, args.modality, args.resume, di, device)
        else:
            s = pretrain_multimodal(args.shards, args.out, rc, args.unimodal, args.resume, di, device)
    finally:
        shutdown_distributed()
    if di.is_main:
        print(f"pretrain {args.stage} -> {args.out}/model.safetensors: {s['steps']} steps, "
              f"{s['train_epochs']} training epochs, last loss {s['last'].get('loss', float('nan')):.4f}, "
              f"{s['epochs_per_s']:.1f} epochs/s, {time.monotonic() - t0:.0f} s"
              + (" (stopped by the time budget)" if s["stopped_early"] else ""))
    return 0
