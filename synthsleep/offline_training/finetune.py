"""Fine-tuning (``synthsleep finetune``): the entry point and its two phases.

Both phases are optional through the run config (``[finetune]``, ``config.FinetuneConfig``):

1. **windows** (``window_steps`` > 0): the whole model end to end (per-modality encoders,
   fusion, Mamba2, heads) on short windows of ``window_len`` epochs from a zero state. It adapts
   the self-supervised encoder to the tasks; it is NOT how the temporal model is finally trained.
2. **whole nights** (``night_passes`` > 0, DESIGN defect 4): ``night_trainer.NightTrainer``,
   truncated backprop over every training night in lanes with the Mamba state carried between
   chunks and reset per night; validated every ``eval_every`` passes on the VALIDATION split and
   the best pass kept (``selection``).

Losses (``tasks.TaskLoss``): stage cross entropy (optional inverse-frequency class weights from
the training labels), apnea / hypopnea BCE with ``pos_weight`` = n_neg / n_pos from the training
labels; label -1 is ignored by every loss. ``--labels`` keeps the labels of that fraction of the
training SUBJECTS for every task (``shards.label_subjects``, DESIGN defect 6). The other parts:
``shards`` (reading nights), ``lanes`` (the lane plan), ``probe`` (the linear probe).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .augment import augment_epochs, corrupt_modality, draw_montage, montage_dropout
from .checkpoint import load_checkpoint, save_checkpoint
from .config import FinetuneConfig, RunConfig, add_config_arguments, load_run_config
from .lanes import plan_lanes
from .metrics import jsonable
from .night_trainer import NightTrainer, build_model, embed_nights, night_presents, set_bn_eval
from .selection import evaluate_embedded, selection_score, short_metrics
from .shards import Night, load_nights
from .tasks import TASKS, TaskLoss, build_task_loss, task_weights
from .trainer import (
    DistInfo,
    MetricsLog,
    any_rank,
    barrier,
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


@dataclass
class _Job:
    """What both phases of one fine-tuning run share."""

    model: nn.Module
    cfg: Any  # the model's ModelConfig
    run_cfg: RunConfig
    loss: TaskLoss
    weights: dict[str, float]
    di: DistInfo
    device: torch.device
    out: Path
    resume: bool
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def fcfg(self) -> FinetuneConfig:
        return self.run_cfg.finetune

    @property
    def seed(self) -> int:
        return self.run_cfg.seed


# ======================================================================================= phase 1
def _window_loss_fn(model: nn.Module, nights: Sequence[Night], loss: TaskLoss, fcfg: FinetuneConfig,
                    seed: int, di: DistInfo, device: torch.device) -> Callable[[int], dict[str, Tensor]]:
    """Batch of ``window_batch`` random windows (same on every rank; each rank takes its rows)."""
    wl, gb = fcfg.window_len, fcfg.window_batch
    lab = [i for i, n in enumerate(nights) if n.labelled and len(n) >= wl]
    if not lab:
        raise ValueError(f"no labelled training night has >= window_len={wl} epochs")
    rows = shard_rows(gb, di)
    mods = tuple(model.cfg.modalities)

    def fn(step: int) -> dict[str, Tensor]:
        rng = np.random.default_rng([seed, step, 0xF1])
        idx = rng.choice(lab, size=gb)
        starts = [int(rng.integers(0, len(nights[i]) - wl + 1)) for i in idx]
        sel = list(zip(idx, starts))[rows]
        x = np.stack([nights[i].x[s:s + wl] for i, s in sel]).astype(np.float32)
        pr = np.stack([nights[i].present[s:s + wl] for i, s in sel])
        if fcfg.augment:
            x, pr = augment_epochs(x, pr, rng, mods)
        if fcfg.montage_dropout > 0:
            pr = montage_dropout(pr, rng, mods, fcfg.montage_dropout, fcfg.montage_weights)
            x = x * pr[..., None]
        if fcfg.corrupt_modality > 0:
            x = corrupt_modality(x, pr, rng, mods, fcfg.corrupt_modality)
        lb = {k: torch.from_numpy(np.stack([getattr(nights[i], k)[s:s + wl] for i, s in sel])
                                  .astype(np.int64)).to(device).reshape(-1) for k in TASKS}
        out, _ = model(torch.from_numpy(x).to(device), torch.from_numpy(pr).to(device))
        return loss(out.stage_logits.reshape(-1, out.stage_logits.shape[-1]),
                    out.apnea_logit.reshape(-1), out.hypopnea_logit.reshape(-1),
                    lb["stage"], lb["apnea"], lb["hypopnea"])

    return fn


def _window_phase(job: _Job, lab_train: list[Night]) -> None:
    """Phase 1: ``window_steps`` optimizer steps end to end on short windows (``out/window``)."""
    fcfg, model = job.fcfg, job.model

    def train_mode() -> None:
        model.train()
        if fcfg.freeze_bn:
            set_bn_eval(model)

    t0 = time.monotonic()
    opt = make_optimizer(model.parameters(), fcfg.window_lr, fcfg.weight_decay)
    sched = warmup_cosine(opt, max(1, fcfg.window_steps // 10), fcfg.window_steps)
    wdir = job.out / "window"
    res = train_steps(model=model, optimizer=opt, scheduler=sched,
                      loss_fn=_window_loss_fn(model, lab_train, job.loss, fcfg, job.seed, job.di, job.device),
                      total_steps=fcfg.window_steps, out_dir=wdir, seed=job.seed, di=job.di,
                      device=job.device, samples_per_step=fcfg.window_batch * fcfg.window_len,
                      grad_clip=fcfg.grad_clip, log_every=fcfg.log_every,
                      ckpt_every=max(fcfg.window_steps // 4, 1), max_minutes=fcfg.window_max_minutes,
                      amp=job.run_cfg.amp,
                      resume=job.resume and (wdir / "checkpoint" / "train_state.json").exists(),
                      desc="finetune windows", train_mode=train_mode)
    job.timings["window_s"] = time.monotonic() - t0
    job.summary["window"] = {"steps": res.steps_done, "stopped_early": res.stopped_early,
                             "epochs_per_s": res.samples_per_s, "last": res.last}


# ======================================================================================= phase 2
_TEMPORAL = ("temporal_norm.", "mamba.", "heads.")


def _night_phase(job: _Job, lab_train: list[Night], val: list[Night],
                 stop_at_pass: int | None) -> tuple[list[Tensor] | None, int, list[dict[str, Any]], list[float]]:
    """Phase 2: whole-night passes, validated and the best pass kept (``out/night``).

    Returns (validation embeddings when the encoder is frozen, chunk, history rows, epochs/s per pass).
    """
    fcfg, model, di, device = job.fcfg, job.model, job.di, job.device
    frozen = fcfg.freeze_encoder
    t0 = time.monotonic()
    embeds_train = embed_nights(model, lab_train, device, desc="embed train") if frozen else None
    night_train = list(lab_train)
    presents = night_presents(lab_train)
    if frozen and fcfg.montage_dropout > 0:
        # extra copies of some training nights, each embedded with one reduced sensor set, so the
        # temporal model learns the embeddings of partial montages too (labels are the same)
        rng = np.random.default_rng([job.seed, 0x3D])
        picks = [(n, draw_montage(rng, tuple(job.cfg.modalities), fcfg.montage_weights))
                 for n in lab_train
                 if rng.random() < fcfg.montage_dropout]
        if picks:
            embeds_train += embed_nights(model, [n for n, _ in picks], device, desc="embed reduced",
                                         keep=[k for _, k in picks])
            night_train += [n for n, _ in picks]
            presents += night_presents([n for n, _ in picks], [k for _, k in picks])
        job.summary["reduced_montage_nights"] = len(picks)
    embeds_val = embed_nights(model, val, device, desc="embed val")
    job.timings["embed_s"] = time.monotonic() - t0
    if frozen:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(_TEMPORAL))
        params = [p for name, p in model.named_parameters() if name.startswith(_TEMPORAL)]
    else:
        params = [p for p in model.parameters() if p.requires_grad]

    def train_mode() -> None:
        model.train()
        if frozen:
            model.encoders.eval()
            model.fusion.eval()
        if fcfg.freeze_bn:
            set_bn_eval(model)

    def validate() -> dict[str, Any]:
        return evaluate_embedded(model, embeds_val if frozen else embed_nights(model, val, device),
                                 val, "carried", tune=True, presents=night_presents(val))

    passes = fcfg.night_passes
    nt = NightTrainer(model, night_train, embeds_train, job.loss, fcfg, job.seed, di, device, job.run_cfg.amp,
                      presents=presents)
    opt = make_optimizer(params, fcfg.night_lr, fcfg.weight_decay)
    steps_per_pass = len(plan_lanes([len(n) for n in night_train], nt.lanes_global, nt.chunk,
                                    np.random.default_rng(0))[0]) if lab_train else 1
    sched = warmup_cosine(opt, max(1, steps_per_pass // 2), max(passes * steps_per_pass, 1))
    ndir = job.out / "night"
    ckpt = ndir / "checkpoint"
    resuming = job.resume and (ckpt / "train_state.json").exists()
    metrics = MetricsLog(ndir, di.is_main, resume=resuming)
    start_pass, step, best, best_sd, history = 0, 0, -1e9, None, []
    if resuming:
        st = load_checkpoint(ckpt, model, opt, sched)
        start_pass, step, best, history = int(st["pass"]), int(st["step"]), float(st["best"]), st["history"]
        if (ndir / "best" / "model.safetensors").exists():
            from safetensors.torch import load_file

            best_sd = load_file(str(ndir / "best" / "model.safetensors"))
        log.info("resumed whole-night training at pass %d", start_pass)
    t0 = time.monotonic()
    eps = []
    for p in range(start_pass, passes):
        n_steps, ep_s = nt.run_pass(p, opt, params, train_mode, metrics, step)
        for _ in range(n_steps):
            sched.step()
        step += n_steps
        eps.append(ep_s)
        row: dict[str, Any] = {"pass": p + 1, "step": step, "epochs_per_s": ep_s}
        if (p + 1) % fcfg.eval_every == 0 or p + 1 == passes:
            m = validate()
            score = selection_score(m, job.weights)
            row.update({"val_score": score, "val_kappa": m["stage"].get("kappa"),
                        "val_acc": m["stage"].get("accuracy"), "val_apnea_f1": m["apnea"]["f1"],
                        "val_hypopnea_f1": m["hypopnea"]["f1"], "thresholds": m["thresholds"]})
            if score > best:
                best = score
                best_sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                row["best"] = True
                job.summary["val"] = m
                if di.is_main:
                    from synthsleep.model import save_model

                    save_model(model, job.cfg, ndir / "best" / "model",
                               metadata={"val": short_metrics(m), "pass": p + 1})
        history.append(row)
        metrics.log({"phase": "val", **{k: v for k, v in row.items() if k != "thresholds"}})
        log.info("pass %d/%d: %s", p + 1, passes, {k: (round(v, 4) if isinstance(v, float) else v)
                                                   for k, v in row.items() if k != "thresholds"})
        if di.is_main:
            save_checkpoint(ckpt, model, opt, {"phase": "night", "pass": p + 1, "step": step,
                                               "best": best, "history": history, "seed": job.seed}, sched)
        barrier(di)
        over = fcfg.night_max_minutes > 0 and time.monotonic() - t0 > 60 * fcfg.night_max_minutes
        if any_rank(over, di) or (stop_at_pass is not None and p + 1 >= stop_at_pass):
            break
    job.timings["night_s"] = time.monotonic() - t0
    if best_sd is not None:
        model.load_state_dict(best_sd)
    for q in model.parameters():
        q.requires_grad_(True)
    return (embeds_val if frozen else None), nt.chunk, history, eps


# ======================================================================================= the job
def finetune(shard_dir: str | Path, out_dir: str | Path, run_cfg: RunConfig, task: str = "all",
             labels: float = 1.0, init: str | Path | None = None, resume: bool = False,
             di: DistInfo | None = None, device: torch.device | None = None,
             stop_at_pass: int | None = None) -> dict[str, Any]:
    """Fine-tune on ``shard_dir``'s train split, select on val; write ``out_dir/model.*``.

    Returns the summary (also written to ``out_dir/finetune_summary.json``).
    """
    di = di or DistInfo()
    device = device or torch.device("cpu")
    fcfg, seed = run_cfg.finetune, run_cfg.seed
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    model, cfg = build_model(run_cfg, init, device)
    t_load = time.monotonic()
    train = load_nights(shard_dir, "train", cfg.modalities, labels, seed)
    val = load_nights(shard_dir, "val", cfg.modalities)
    lab_train = [n for n in train if n.labelled]
    if not lab_train:
        raise ValueError(f"{shard_dir}: no labelled training night (labels={labels})")
    if not val:
        raise ValueError(f"{shard_dir}: the validation split is empty; model selection needs it")
    loss = build_task_loss(lab_train, task, fcfg)
    loss.world = di.world
    job = _Job(model, cfg, run_cfg, loss, task_weights(task, fcfg), di, device, out, resume,
               timings={"load_s": time.monotonic() - t_load},
               summary={"task": task, "labels": labels, "init": str(init) if init else None,
                        "train_nights": len(train), "labelled_train_nights": len(lab_train),
                        "labelled_train_subjects": len({n.subject for n in lab_train}),
                        "val_nights": len(val), "selection": "val: kappa + mean resp F1"})
    if fcfg.window_steps > 0:
        _window_phase(job, lab_train)
    embeds_val, chunk, history, eps = _night_phase(job, lab_train, val, stop_at_pass)
    # the final validation metrics of the selected model (thresholds tuned on val)
    val_m = evaluate_embedded(model, embeds_val if embeds_val is not None else embed_nights(model, val, device),
                              val, "carried", tune=True, presents=night_presents(val))
    summary = job.summary
    summary.update({"val": val_m, "thresholds": val_m["thresholds"], "history": history,
                    "night_epochs_per_s": float(np.mean(eps)) if eps else None,
                    "timings_s": job.timings, "frozen_encoder_cached": fcfg.freeze_encoder,
                    "chunk": chunk, "lanes": fcfg.lanes, "passes_done": len(history)})
    if di.is_main:
        from synthsleep.model import save_model

        save_model(model, cfg, out / "model",
                   metadata={"task": task, "labels": labels, "thresholds": val_m["thresholds"],
                             "val": short_metrics(val_m), "run_config": run_cfg.to_dict()})
        (out / "finetune_summary.json").write_text(json.dumps(jsonable(summary), indent=1))
    return summary


# ======================================================================================= CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", required=True, metavar="DIR", help="prepared folder (manifest.json + shards/)")
    parser.add_argument("--out", required=True, metavar="RUN", help="output run folder")
    parser.add_argument("--init", metavar="RUN", default=None,
                        help="initialise from a run folder (e.g. the multimodal pretraining run); "
                             "default: from scratch")
    parser.add_argument("--task", default="all", choices=[*TASKS, "all"], help="task(s) to train (default all)")
    parser.add_argument("--labels", type=float, default=1.0, metavar="FRACTION",
                        help="fraction of training SUBJECTS whose labels are used, for every task "
                             "(e.g. 0.01, 0.05, 1.0; default 1.0)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN's checkpoints")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    rc = load_run_config(args.config, args.overrides)
    setup_threads(rc.threads)
    di, device = init_distributed(rc.device)
    try:
        s = finetune(args.shards, args.out, rc, args.task, args.labels, args.init, args.resume, di, device)
    finally:
        shutdown_distributed()
    if di.is_main:
        v = short_metrics(s["val"])
        print(f"finetune {args.task} (labels {args.labels:g}) -> {args.out}/model.safetensors")
        print(f"  validation (state carried all night): accuracy {v['accuracy']:.3f}  macro-F1 "
              f"{v['macro_f1']:.3f}  kappa {v['kappa']:.3f}  apnea F1 {v['apnea_f1']:.3f}  "
              f"hypopnea F1 {v['hypopnea_f1']:.3f}  AHI MAE {v['ahi_mae']}")
        print(f"  whole-night training: {s['passes_done']} passes, "
              f"{s['night_epochs_per_s'] or 0:.0f} epochs/s; timings {s['timings_s']}")
    return 0
