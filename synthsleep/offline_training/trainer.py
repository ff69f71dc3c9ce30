"""Shared machinery of the training loops: devices, seeding, DDP, AMP, metrics logs, the step loop.

Determinism and exact resume: every optimizer step ``s`` reseeds torch / numpy / python from
``(seed, s, rank)`` before it draws anything (batch indices, masks, dropout), so a run resumed
from the checkpoint written after step ``s`` computes exactly the same loss at step ``s + 1`` as
the uninterrupted run (the RNG states are saved in train_state.json as well, for inspection).

DDP: launched by ``torchrun`` (env RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT),
backend gloo on CPU and nccl on CUDA. The global batch is split evenly over ranks
(``shard_rows``); gradients are averaged over ranks by ``average_gradients`` after every
backward (the one DDP strategy, also of whole-night training). Every rank builds the same model
from the same seed, so the parameters start equal without a broadcast. Only rank 0 writes logs
and checkpoints.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from .checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- devices
def select_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def setup_threads(n: int) -> None:
    """torch intra-op threads (0 = keep torch's default, or OMP_NUM_THREADS when set)."""
    if n > 0:
        torch.set_num_threads(n)


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """A 31-bit seed unique to (run seed, step, rank)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0] & 0x7FFFFFFF)


def seed_everything(seed: int) -> None:
    """Seed python, numpy (global) and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA when enabled; a no-op on CPU (fp32 training there)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------- DDP
@dataclass
class DistInfo:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_name: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = select_device(device_name)
    if world <= 1:
        return DistInfo(), device
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    log.info("DDP rank %d/%d on %s", rank, world, device)
    return DistInfo(rank, world, local), device


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(di: DistInfo) -> None:
    if di.enabled:
        dist.barrier()


def any_rank(flag: bool, di: DistInfo) -> bool:
    """True if ``flag`` is True on any rank (so all ranks stop together)."""
    if not di.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def average_gradients(params: list[Tensor], di: DistInfo) -> None:
    """Average the gradients of ``params`` over the DDP ranks (in place; no-op on one process).

    The one DDP strategy of every training loop: each rank computes the loss of its own rows
    (normalised by the GLOBAL label count, see ``tasks.TaskLoss``), calls ``backward``, then this
    before clipping and the optimizer step. A parameter without a gradient on some ranks (a
    modality absent from one rank's batch) counts as zero there; one without a gradient on every
    rank keeps ``grad = None``, as in a single process. Every rank must pass the same list.
    """
    if not di.enabled:
        return
    has = torch.tensor([q.grad is not None for q in params], dtype=torch.float32)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    for q, any_grad in zip(params, has.tolist()):
        if not any_grad:
            continue
        if q.grad is None:
            q.grad = torch.zeros_like(q)
        dist.all_reduce(q.grad)
        q.grad /= di.world


def shard_rows(n_global: int, di: DistInfo) -> slice:
    """This rank's contiguous slice of a global batch of ``n_global`` rows (must divide evenly)."""
    if n_global % di.world:
        raise ValueError(f"global batch {n_global} is not divisible by {di.world} DDP ranks")
    per = n_global // di.world
    return slice(di.rank * per, (di.rank + 1) * per)


# ---------------------------------------------------------------------------------- metrics
class MetricsLog:
    """Per-step metrics to ``metrics.jsonl`` (flushed per row) and ``metrics.csv`` (rank 0 only)."""

    def __init__(self, out_dir: str | Path, enabled: bool = True, name: str = "metrics",
                 resume: bool = False) -> None:
        self.enabled = enabled
        self.rows: list[dict[str, Any]] = []
        self.jsonl = Path(out_dir) / f"{name}.jsonl"
        self.csv = Path(out_dir) / f"{name}.csv"
        if enabled:
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
            if not resume:  # a fresh run starts a fresh log
                self.jsonl.unlink(missing_ok=True)
                self.csv.unlink(missing_ok=True)
            elif self.jsonl.exists():  # resumed run: keep the history
                for line in self.jsonl.read_text().splitlines():
                    with contextlib.suppress(json.JSONDecodeError):
                        self.rows.append(json.loads(line))

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {k: (float(v) if isinstance(v, (Tensor, np.floating)) else v) for k, v in row.items()}
        self.rows.append(row)
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self._write_csv()

    def _write_csv(self) -> None:
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        with self.csv.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)


# ---------------------------------------------------------------------------------- optimizers
def make_optimizer(params: Iterator[nn.Parameter] | list, lr: float, weight_decay: float
                   ) -> torch.optim.Optimizer:
    """AdamW; biases and norm parameters (ndim < 2) get no weight decay."""
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def warmup_cosine(opt: torch.optim.Optimizer, warmup: int, total: int,
                  floor: float = 0.05) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up for ``warmup`` steps then cosine down to ``floor`` × lr at ``total``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        t = min(1.0, (step - warmup) / max(total - warmup, 1))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(opt, f)


# ---------------------------------------------------------------------------------- the step loop
@dataclass
class LoopResult:
    steps_done: int
    stopped_early: bool
    seconds: float
    samples_per_s: float
    last: dict[str, float]


def train_steps(*, model: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler,
                loss_fn: Callable[[int], dict[str, Tensor]], total_steps: int, out_dir: Path,
                seed: int, di: DistInfo, device: torch.device, samples_per_step: int,
                grad_clip: float = 1.0, log_every: int = 10, ckpt_every: int = 100,
                max_minutes: float = 0.0, amp: bool = True, resume: bool = False,
                desc: str = "train", extra_state: dict[str, Any] | None = None,
                stop_at: int | None = None, train_mode: Callable[[], None] | None = None
                ) -> LoopResult:
    """Run optimizer steps ``[start, total_steps)``; ``loss_fn(step)`` builds its own batch.

    ``model`` is the module whose parameters train (gradients averaged over DDP ranks); checkpoints go to
    ``out_dir/checkpoint`` every ``ckpt_every`` steps and at the end. With ``resume`` the loop
    restarts after the last checkpointed step. ``samples_per_step`` (global) gives throughput.
    ``stop_at``: stop (with a checkpoint) after this step, as if interrupted (tests, budgets).
    ``train_mode``: called instead of ``model.train()`` (e.g. to keep frozen parts in eval).
    """
    from tqdm import tqdm

    ckpt = out_dir / "checkpoint"
    start = 0
    if resume:
        st = load_checkpoint(ckpt, model, optimizer, scheduler)
        start = int(st["step"])
        log.info("%s: resumed from %s at step %d", desc, ckpt, start)
    metrics = MetricsLog(out_dir, di.is_main, resume=resume)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    t0 = time.monotonic()
    last: dict[str, float] = {}
    stopped = False
    step = start
    bar = tqdm(total=total_steps, initial=start, desc=desc, disable=not di.is_main, leave=False)
    window_t, window_n = time.monotonic(), 0
    (train_mode or model.train)()
    while step < total_steps:
        seed_everything(step_seed(seed, step, di.rank))
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            out = loss_fn(step)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss is {loss.item()} at step {step}")
        loss.backward()
        average_gradients(params, di)
        gnorm = torch.nn.utils.clip_grad_norm_(params, grad_clip) if grad_clip > 0 else torch.tensor(0.0)
        optimizer.step()
        scheduler.step()
        step += 1
        window_n += samples_per_step
        last = {k: float(v.detach()) if isinstance(v, Tensor) else float(v) for k, v in out.items()}
        bar.update(1)
        bar.set_postfix(loss=f"{last['loss']:.4f}")
        if step % log_every == 0 or step == total_steps:
            now = time.monotonic()
            row = {"step": step, **last, "lr": optimizer.param_groups[0]["lr"],
                   "grad_norm": float(gnorm), "samples_per_s": window_n / max(now - window_t, 1e-9),
                   "elapsed_s": now - t0}
            metrics.log(row)
            window_t, window_n = now, 0
        over = max_minutes > 0 and (time.monotonic() - t0) > 60 * max_minutes
        over = any_rank(over, di) or (stop_at is not None and step >= stop_at)
        if step % ckpt_every == 0 or step == total_steps or over:
            if di.is_main:
                save_checkpoint(ckpt, model, optimizer,
                                {"step": step, "total_steps": total_steps, "seed": seed,
                                 "job": desc, **(extra_state or {})}, scheduler)
            barrier(di)
        if over:
            stopped = True
            why = f"stop_at={stop_at}" if stop_at is not None and step >= stop_at else \
                f"time budget of {max_minutes:.2f} min"
            log.warning("%s: stopped at step %d/%d (%s); checkpoint written", desc, step,
                        total_steps, why)
            break
    bar.close()
    secs = time.monotonic() - t0
    done = step - start
    return LoopResult(step, stopped, secs, done * samples_per_step / max(secs, 1e-9), last)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
