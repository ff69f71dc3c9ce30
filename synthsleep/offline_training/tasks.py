"""The fine-tuning tasks and their loss: stage (5-class CE), apnea and hypopnea (BCE).

Every term ignores label -1 (unknown, or withheld by a label fraction). Class weights and
``pos_weight`` come from the TRAINING labels only (``build_task_loss``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .config import FinetuneConfig
from .shards import Night

log = logging.getLogger(__name__)

TASKS = ("stage", "apnea", "hypopnea")


@dataclass
class TaskLoss:
    """Weighted multi-task loss; -1 labels are ignored by every term.

    Each term is a sum over the valid epochs divided by the GLOBAL normaliser (number of valid
    labels, or the sum of the class weights of the valid targets for weighted CE, as in
    ``F.cross_entropy``): under DDP the normalisers are all-reduced and the loss is multiplied by
    the world size, so DDP's gradient average equals the single-process gradient exactly even
    when ranks hold different numbers of valid labels.
    """

    stage_weight: Tensor | None
    apnea_pos_weight: Tensor | None
    hypopnea_pos_weight: Tensor | None
    w_stage: float = 1.0
    w_apnea: float = 1.0
    w_hypopnea: float = 1.0
    world: int = 1  # > 1: normalisers are all-reduced over the process group

    def __call__(self, stage_logits: Tensor, apnea_logit: Tensor, hypopnea_logit: Tensor,
                 stage: Tensor, apnea: Tensor, hypopnea: Tensor) -> dict[str, Tensor]:
        """logits [N, 5], [N], [N]; labels long [N] with -1 = ignore -> {loss, loss_stage, ...}."""
        import torch.nn.functional as F

        lg, tg = stage_logits.reshape(-1, stage_logits.shape[-1]).float(), stage.reshape(-1).long()
        vs = tg >= 0
        w = self.stage_weight.to(lg.device) if self.stage_weight is not None else None
        num_s = F.cross_entropy(lg[vs], tg[vs], weight=w, reduction="sum") if vs.any() else lg.sum() * 0
        den_s = (w[tg[vs]].sum() if w is not None else vs.sum()).float()
        nums, dens = [num_s], [den_s]
        for logit, y, pw in ((apnea_logit, apnea, self.apnea_pos_weight),
                             (hypopnea_logit, hypopnea, self.hypopnea_pos_weight)):
            lo, yy = logit.reshape(-1).float(), y.reshape(-1)
            v = yy >= 0
            pwt = pw.to(lo.device) if pw is not None else None
            nums.append(F.binary_cross_entropy_with_logits(lo[v], yy[v].float(), pos_weight=pwt,
                                                           reduction="sum") if v.any() else lo.sum() * 0)
            dens.append(v.sum().float())
        den = torch.stack(dens).detach()
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(den)
        terms = [n / d.clamp_min(1.0) * self.world for n, d in zip(nums, den)]
        total = self.w_stage * terms[0] + self.w_apnea * terms[1] + self.w_hypopnea * terms[2]
        return {"loss": total, "loss_stage": terms[0].detach() / self.world,
                "loss_apnea": terms[1].detach() / self.world,
                "loss_hypopnea": terms[2].detach() / self.world}


def task_weights(task: str, fcfg: FinetuneConfig) -> dict[str, float]:
    """Loss weight per task: ``all`` = the config's weights, one task = only that one."""
    if task not in (*TASKS, "all"):
        raise ValueError(f"--task must be one of {[*TASKS, 'all']}, got {task!r}")
    w = {t: float(getattr(fcfg, f"loss_{t}")) for t in TASKS}
    return w if task == "all" else {t: (w[t] if t == task else 0.0) for t in TASKS}


def build_task_loss(nights: Sequence[Night], task: str, fcfg: FinetuneConfig) -> TaskLoss:
    """Class weights and pos_weights from the TRAINING labels of ``nights``."""
    from synthsleep.model import class_weights, pos_weight

    st = np.concatenate([n.stage for n in nights]) if nights else np.zeros(0, np.int8)
    counts = [int(np.sum(st == k)) for k in range(5)]
    sw = class_weights(counts) if fcfg.stage_class_weights else None
    pws = {}
    for name in ("apnea", "hypopnea"):
        y = np.concatenate([getattr(n, name) for n in nights]) if nights else np.zeros(0, np.int8)
        pws[name] = (pos_weight(int(np.sum(y == 1)), int(np.sum(y == 0)), fcfg.max_pos_weight)
                     if fcfg.pos_weight else None)
    w = task_weights(task, fcfg)
    log.info("training labels: stage counts %s, class weights %s, pos_weight apnea %s hypopnea %s",
             counts, None if sw is None else [round(float(v), 2) for v in sw],
             pws["apnea"], pws["hypopnea"])
    return TaskLoss(sw, pws["apnea"], pws["hypopnea"], w["stage"], w["apnea"], w["hypopnea"])
