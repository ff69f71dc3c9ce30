"""The linear probe (``synthsleep probe``): how much a frozen encoder's embeddings hold.

Frozen encoder (cached fused embeddings, ``night_trainer.embed_nights``), one linear layer for
the 7 outputs (5 stage logits, apnea, hypopnea) trained with ``tasks.TaskLoss`` on the labelled
training nights (``--labels``: fraction of training subjects, ``shards.label_subjects``), scored
per epoch without temporal context on the validation split (thresholds tuned there).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import RunConfig, add_config_arguments, load_run_config
from .metrics import binary_metrics, jsonable, staging_metrics
from .night_trainer import build_model, embed_nights
from .selection import best_threshold
from .shards import load_nights
from .tasks import TASKS, build_task_loss
from .trainer import seed_everything, setup_threads


def probe(shard_dir: str | Path, out_dir: str | Path, run_cfg: RunConfig, init: str | Path | None,
          labels: float = 1.0, device: torch.device | None = None) -> dict[str, Any]:
    """Linear probe: frozen encoder (cached fused embeddings), one linear layer per task,
    trained on the labelled train nights, scored per epoch (no temporal context) on val."""
    device = device or torch.device("cpu")
    pcfg, fcfg = run_cfg.probe, run_cfg.finetune
    seed = int(run_cfg.seed)
    seed_everything(seed)
    model, cfg = build_model(run_cfg, init, device)
    train = [n for n in load_nights(shard_dir, "train", cfg.modalities, labels, seed) if n.labelled]
    val = load_nights(shard_dir, "val", cfg.modalities)
    if not train or not val:
        raise ValueError(f"{shard_dir}: probe needs labelled train nights and a val split")
    et = torch.cat(embed_nights(model, train, device, desc="embed train"))
    ev = torch.cat(embed_nights(model, val, device, desc="embed val"))
    lab = {k: torch.from_numpy(np.concatenate([getattr(n, k) for n in train]).astype(np.int64)) for k in TASKS}
    labv = {k: np.concatenate([getattr(n, k) for n in val]) for k in TASKS}
    mu, sd = et.mean(0), et.std(0).clamp_min(1e-6)
    head = nn.Linear(cfg.fusion_dim, 7).to(device)
    loss = build_task_loss(train, "all", fcfg)
    opt = torch.optim.AdamW(head.parameters(), lr=float(pcfg.lr), weight_decay=float(pcfg.weight_decay))
    xt = ((et - mu) / sd).to(device)
    bs = int(pcfg.batch_size)
    for step in range(int(pcfg.steps)):
        idx = torch.from_numpy(np.random.default_rng([seed, step]).integers(0, len(xt), bs))
        o = head(xt[idx])
        res = loss(o[:, :5], o[:, 5], o[:, 6], *(lab[k][idx].to(device) for k in TASKS))
        opt.zero_grad()
        res["loss"].backward()
        opt.step()
    with torch.no_grad():
        o = head(((ev - mu) / sd).to(device)).cpu()
    pa, ph = torch.sigmoid(o[:, 5]).numpy(), torch.sigmoid(o[:, 6]).numpy()
    result = {"labels": labels, "init": str(init) if init else None, "val_epochs": int(len(ev)),
              "stage": staging_metrics(labv["stage"], o[:, :5].argmax(1).numpy()),
              "apnea": binary_metrics(labv["apnea"], pa, best_threshold(labv["apnea"], pa)),
              "hypopnea": binary_metrics(labv["hypopnea"], ph, best_threshold(labv["hypopnea"], ph))}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(jsonable(result), indent=1))
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", required=True, metavar="DIR", help="prepared folder")
    parser.add_argument("--init", metavar="RUN", default=None, help="pretrained run folder (default: random encoder)")
    parser.add_argument("--out", required=True, metavar="DIR", help="where probe.json goes")
    parser.add_argument("--labels", type=float, default=1.0, metavar="FRACTION",
                        help="fraction of training subjects with labels (default 1.0)")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    rc = load_run_config(args.config, args.overrides)
    setup_threads(rc.threads)
    r = probe(args.shards, args.out, rc, args.init, args.labels)
    s = r["stage"]
    print(f"linear probe -> {args.out}/probe.json (validation, per epoch, no temporal context)")
    print(f"  staging accuracy {s.get('accuracy', 0):.3f}  macro-F1 {s.get('macro_f1', 0):.3f}  "
          f"kappa {s.get('kappa', 0):.3f}  apnea F1 {r['apnea']['f1']:.3f}  hypopnea F1 {r['hypopnea']['f1']:.3f}")
    return 0
