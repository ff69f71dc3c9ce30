"""The whole-night trainer (phase 2 of fine-tuning, DESIGN defect 4) and its model helpers.

Every training night is played in order, cut into chunks of ``chunk`` epochs, ``lanes`` nights
side by side (``lanes.plan_lanes``); truncated backprop through each chunk with the Mamba conv/SSM
state carried (detached) from one chunk to the next and reset only where a lane starts a new
night (at its start, or with ``mid_start`` at a random epoch of its first half, as a monitor
started mid-night), so the state the live monitor carries all night is the state the model was
trained with. With a frozen encoder the per-epoch fused embeddings are computed once
(``embed_nights``, encoder in eval mode) and each pass costs only the Mamba2 + heads; otherwise
the encoder is trained through every chunk. Under DDP each rank plays its block of lanes and the
gradients are averaged by ``trainer.average_gradients``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..psg.side_features import N_SIDE, night_side_features
from .config import FinetuneConfig, RunConfig
from .lanes import LaneItem, plan_lanes, rank_lanes
from .shards import Night
from .tasks import TASKS, TaskLoss
from .trainer import DistInfo, MetricsLog, autocast, average_gradients, seed_everything, step_seed

log = logging.getLogger(__name__)


def build_model(run_cfg: RunConfig, init: str | Path | None, device: torch.device
                ) -> tuple[nn.Module, Any]:
    """(SleepModel, its ModelConfig) from ``init`` (a run dir, checkpoint dir or model base path),
    or a fresh one from the run config's model config and overrides."""
    from synthsleep.model import SleepModel, load_config, load_model

    if init:
        base = Path(init)
        for cand in (base / "model", base / "checkpoint" / "model", base):
            if cand.with_suffix(".json").exists():
                model, cfg = load_model(cand, map_location=device)
                log.info("initialised from %s (config %s)", cand, cfg.name)
                return model.to(device), cfg
        raise FileNotFoundError(f"--init {init}: no model.json / model.safetensors found there")
    cfg = load_config(run_cfg.model, run_cfg.model_overrides or None)
    return SleepModel(cfg).to(device), cfg


def set_bn_eval(module: nn.Module) -> None:
    """BatchNorm layers to eval mode (running statistics used and not updated)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _per_night(keep: Sequence[np.ndarray] | np.ndarray | None, n: int) -> list[np.ndarray | None]:
    """``keep`` (one bool [M] sensor set for all nights, one per night, or None) as one per night."""
    return [keep] * n if keep is None or isinstance(keep, np.ndarray) else list(keep)


@torch.no_grad()
def embed_nights(model: nn.Module, nights: Sequence[Night], device: torch.device,
                 batch: int = 64, desc: str = "embed",
                 keep: Sequence[np.ndarray] | np.ndarray | None = None) -> list[Tensor]:
    """Fused per-epoch embeddings of every night (encoder in eval mode): list of [T, d] (CPU).

    ``keep``: bool [M] sensor set applied to every epoch (one for all nights, or one per night);
    the other modalities are treated as absent, as for a recording without those channels.
    """
    from tqdm import tqdm

    was = model.training
    model.eval()
    out = []
    for n, kp in tqdm(list(zip(nights, _per_night(keep, len(nights)))), desc=desc, leave=False, disable=len(nights) < 2):
        parts = []
        for s in range(0, len(n), batch):
            present = n.present[s:s + batch] if kp is None else n.present[s:s + batch] & kp[None]
            xb = n.x[s:s + batch].astype(np.float32)  # float16 -> float32 copy, zeroed in place
            xb *= present[..., None]
            x = torch.from_numpy(xb).to(device)
            pr = torch.from_numpy(present).to(device)
            parts.append(model.encode_epochs(x, pr).float().cpu())
        out.append(torch.cat(parts) if parts else torch.zeros(0, model.cfg.fusion_dim))
    model.train(was)
    return out


def night_presents(nights: Sequence[Night], keep: Sequence[np.ndarray] | np.ndarray | None = None
                   ) -> list[Tensor]:
    """The sensor set each epoch of ``embed_nights(nights, keep=keep)`` was encoded with: list of
    bool [T, M] (what ``temporal_heads`` needs to pick the stage readout)."""
    return [torch.from_numpy(n.present if kp is None else n.present & kp[None])
            for n, kp in zip(nights, _per_night(keep, len(nights)))]


def night_sides(nights: Sequence[Night], presents: Sequence[np.ndarray], modalities: tuple[str, ...]
                ) -> list[Tensor]:
    """What the stage readouts read (``psg.side_features.night_side_features``: EEG side features
    and their context from the night's start) for each night's epochs read with sensor sets
    ``presents`` (bool [T, M] per night): list of float32 [T, N_SIDE], zeros where the EEG is not
    present, NaN rows for shards written before ``log_scale`` (the readout then leaves them to
    the shared head)."""
    return [torch.from_numpy(night_side_features(n.x, np.asarray(pr), n.log_scale, modalities))
            for n, pr in zip(nights, presents)]


State = tuple[Tensor, Tensor]  # (conv [L, B, conv_dim, d_conv], ssm [L, B, H, P, N])


def temporal_heads(model: nn.Module, e: Tensor, state: State | None = None, present: Tensor | None = None,
                   side: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, State]:
    """Fused embeddings e [B, T, d] through Mamba2 (from ``state``, zeros when None) and the heads
    -> (stage_logits [B, T, 5], apnea_logit [B, T], hypopnea_logit [B, T], new state).

    ``present`` bool [B, T, M]: the sensor set each embedding came from (it picks the stage
    readouts, ``model.heads``); None reads every epoch with the shared heads. ``side``
    float [B, T, N_SIDE]: the EEG side features that readout reads (None: unknown, the shared heads).
    """
    b, t, _ = e.shape
    h, new_state = model.temporal(e, state)
    st, ap, hy = model.heads(h.reshape(b * t, -1), None if present is None else present.reshape(b * t, -1),
                             None if side is None else side.reshape(b * t, -1))
    return st.reshape(b, t, -1), ap.reshape(b, t), hy.reshape(b, t), new_state


class NightTrainer:
    """Whole-night truncated-BPTT training over lanes of nights (see module docstring)."""

    def __init__(self, model: nn.Module, nights: Sequence[Night], embeds: list[Tensor] | None,
                 loss: TaskLoss, fcfg: FinetuneConfig, seed: int, di: DistInfo,
                 device: torch.device, amp: bool = False, presents: list[Tensor] | None = None) -> None:
        """``embeds``: cached embeddings per night (frozen encoder) or None (encoded per chunk);
        ``presents``: the bool [T, M] sensor set each cached embedding came from (default: the
        nights' own ``present``); the EEG side features the EEG-alone readout reads follow from
        them and the nights (``night_sides``)."""
        self.model, self.nights, self.embeds = model, [n for n in nights], embeds
        self.presents = presents if presents is not None else night_presents(self.nights)
        self.sides = night_sides(self.nights, [p.numpy() for p in self.presents], tuple(model.cfg.modalities))
        self.loss, self.fcfg, self.seed, self.di, self.device = loss, fcfg, seed, di, device
        self.chunk = int(fcfg.chunk)
        self.lanes_global = int(fcfg.lanes) * di.world
        self.labelled = [i for i, n in enumerate(self.nights) if n.labelled]
        self.amp = amp

    def _embed_chunk(self, items: list[LaneItem]) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """e [B, chunk, d], the sensor set it came from (bool [B, chunk, M]), its EEG side
        features [B, chunk, N_SIDE] and labels [B, chunk] (padding: zeros / False / zeros / -1)."""
        c, b = self.chunk, len(items)
        d, m = self.model.cfg.fusion_dim, self.model.cfg.n_modalities
        labels = {k: torch.full((b, c), -1, dtype=torch.long) for k in TASKS}
        side = torch.zeros(b, c, N_SIDE)
        if self.embeds is not None:
            e = torch.zeros(b, c, d)
            pr = torch.zeros(b, c, m, dtype=torch.bool)
            for j, (i, s, _) in enumerate(items):
                if i < 0:
                    continue
                seg = self.embeds[self.labelled[i]][s:s + c]
                e[j, : len(seg)] = seg
                pr[j, : len(seg)] = self.presents[self.labelled[i]][s:s + c]
        else:  # encoder trained through the chunk
            from synthsleep.model import drop_modalities

            x = torch.zeros(b, c, m, 3000)
            pr = torch.zeros(b, c, m, dtype=torch.bool)
            for j, (i, s, _) in enumerate(items):
                if i < 0:
                    continue
                n = self.nights[self.labelled[i]]
                seg = torch.from_numpy(n.x[s:s + c].astype(np.float32))
                x[j, : len(seg)] = seg
                pr[j, : len(seg)] = torch.from_numpy(n.present[s:s + c])
            flat = pr.reshape(b * c, m).to(self.device)
            if self.model.training:
                flat = drop_modalities(flat, self.model.cfg.modality_dropout)
            e = self.model.encode_epochs(x.reshape(b * c, m, 3000).to(self.device), flat)
            e, pr = e.reshape(b, c, -1), flat.reshape(b, c, m)
        # labels, and side features: the readouts read them only where the EEG is present, so
        # the night's own (computed once) serve whatever modality dropout removed
        for j, (i, s, _) in enumerate(items):
            if i < 0:
                continue
            n = self.nights[self.labelled[i]]
            sd = self.sides[self.labelled[i]][s:s + c]
            side[j, : len(sd)] = sd
            for k in TASKS:
                seg = torch.from_numpy(getattr(n, k)[s:s + c].astype(np.int64))
                labels[k][j, : len(seg)] = seg
        return (e.to(self.device), pr.to(self.device), side.to(self.device),
                {k: v.to(self.device) for k, v in labels.items()})

    def run_pass(self, p: int, optimizer: torch.optim.Optimizer, params: list[Tensor],
                 train_mode: Callable[[], None], metrics: MetricsLog, step0: int) -> tuple[int, float]:
        """One pass over every labelled training night; returns (optimizer steps, epochs/s)."""
        rng = np.random.default_rng([self.seed, p, 0xA11])
        lengths = [len(self.nights[i]) for i in self.labelled]
        plan = plan_lanes(lengths, self.lanes_global, self.chunk, rng,
                          float(self.fcfg.mid_start))
        mine = rank_lanes(plan, self.di.rank, self.di.world)
        width = len(mine[0]) if mine else 0
        state = None
        train_mode()
        t0, n_ep, step = time.monotonic(), 0, step0
        for k in range(width):
            seed_everything(step_seed(self.seed, step, self.di.rank))
            items = [lane[k] for lane in mine]
            e, pr, side, lab = self._embed_chunk(items)
            b = len(items)
            if state is None:
                state = self.model.allocate_state(b, self.device)
            # reset the state of lanes starting a new night (or idle)
            fresh = torch.tensor([f or i < 0 for i, _, f in items], device=self.device)
            keep = (~fresh).to(state[0].dtype)
            state = (state[0] * keep[None, :, None, None], state[1] * keep[None, :, None, None, None])
            optimizer.zero_grad(set_to_none=True)
            with autocast(self.device, self.amp):
                st, ap, hy, new_state = temporal_heads(self.model, e, state, pr, side)
            new_state = (new_state[0].float(), new_state[1].float())
            out = self.loss(st.reshape(-1, st.shape[-1]), ap.reshape(-1), hy.reshape(-1),
                            lab["stage"].reshape(-1), lab["apnea"].reshape(-1),
                            lab["hypopnea"].reshape(-1))
            out["loss"].backward()
            average_gradients(params, self.di)  # lanes differ per rank
            torch.nn.utils.clip_grad_norm_(params, float(self.fcfg.grad_clip))
            optimizer.step()
            state = (new_state[0].detach(), new_state[1].detach())
            step += 1
            n_ep += sum(min(self.chunk, len(self.nights[self.labelled[i]]) - s) for i, s, _ in items if i >= 0)
            if step % int(self.fcfg.log_every) == 0:
                metrics.log({"phase": "night", "pass": p, "step": step,
                             **{kk: float(v.detach()) for kk, v in out.items()},
                             "lr": optimizer.param_groups[0]["lr"]})
        secs = time.monotonic() - t0
        return step - step0, n_ep * self.di.world / max(secs, 1e-9)
