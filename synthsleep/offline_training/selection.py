"""Model selection on the validation split: metrics of predictions, the apnea/hypopnea thresholds,
the selection score.

Selection uses the VALIDATION split only (DESIGN defect 3): score = Cohen's kappa + mean F1 of
apnea and hypopnea (only the trained tasks count), with the state carried over each whole
validation night. The apnea/hypopnea decision thresholds are chosen on the validation split as
well (``best_threshold``). Predictions run from cached per-epoch embeddings
(``night_trainer.embed_nights``) through the temporal model and heads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..psg.clinical import count_runs, events_per_hour, predicted_ahi, sleep_hours
from ..psg.stage_filter import filter_night
from .metrics import binary_metrics, staging_metrics
from .night_trainer import night_sides, temporal_heads
from .shards import Night


def best_threshold(y: np.ndarray, prob: np.ndarray) -> float:
    """The threshold maximising F1 on (y, prob) (validation data only; y = -1 ignored).

    Every distinct probability is a candidate cut; the threshold returned lies halfway between
    the lowest accepted and the highest rejected probability (0.5 when there is no positive).
    """
    ok = y >= 0
    y, prob = (y[ok] == 1), prob[ok].astype(np.float64)
    if not y.any() or len(y) == 0:
        return 0.5
    order = np.argsort(-prob, kind="mergesort")
    p_sorted, y_sorted = prob[order], y[order]
    tp = np.cumsum(y_sorted)
    k = np.arange(1, len(y_sorted) + 1)
    last = np.r_[p_sorted[1:] != p_sorted[:-1], True]  # cut only between distinct values
    f1 = np.where(last, 2 * tp / (k + y.sum()), -1.0)
    i = int(np.argmax(f1))
    nxt = p_sorted[i + 1] if i + 1 < len(p_sorted) else 0.0
    return float(min(max(0.5 * (p_sorted[i] + nxt), 1e-4), 1 - 1e-4))


@torch.no_grad()
def predict_embedded(model: nn.Module, e: Tensor, mode: str = "carried", window: int = 20,
                     present: Tensor | None = None, side: Tensor | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities for one night from its embeddings e [T, d] (model in eval mode).

    mode ``carried``: one scan over the whole night from a zero state (equal to the live step
    loop); ``window``: consecutive non-overlapping windows of ``window`` epochs, each from a zero
    state (the original SynthSleepNet protocol). ``present`` bool [T, M]: the sensor set the
    embeddings came from (picks the stage readout as the live step does; None: the shared heads);
    ``side`` float [T, N_SIDE]: what the readouts read (``night_sides``: EEG side features and their
    context from the night's start, also in window mode; None: unknown, shared heads).
    Returns (stage [T,5], apnea [T], hypopnea [T]).
    """
    was = model.training
    model.eval()
    d = next(model.parameters()).device
    if mode == "carried":
        parts = [(e, present, side)]
    elif mode == "window":
        es = torch.split(e, window)
        none = [None] * len(es)
        parts = list(zip(es, torch.split(present, window) if present is not None else none,
                         torch.split(side, window) if side is not None else none))
    else:
        raise ValueError(f"mode must be 'carried' or 'window', got {mode!r}")
    sp, ap, hp = [], [], []
    for p, pr, sd in parts:
        st, a, h, _ = temporal_heads(model, p[None].to(d), present=None if pr is None else pr[None].to(d),
                                     side=None if sd is None else sd[None].to(d))
        sp.append(torch.softmax(st[0].float(), -1).cpu())
        ap.append(torch.sigmoid(a[0].float()).cpu())
        hp.append(torch.sigmoid(h[0].float()).cpu())
    model.train(was)
    return torch.cat(sp).numpy(), torch.cat(ap).numpy(), torch.cat(hp).numpy()


def evaluate_embedded(model: nn.Module, embeds: Sequence[Tensor], nights: Sequence[Night],
                      mode: str = "carried", window: int = 20,
                      thresholds: dict[str, float] | None = None, tune: bool = False,
                      presents: Sequence[Tensor] | None = None) -> dict[str, Any]:
    """Stage / apnea / hypopnea / AHI metrics over nights (labels -1 ignored).

    ``presents``: per night the bool [T, M] sensor set its embeddings came from (picks the stage
    readout, see ``predict_embedded``; the readout's side features are computed from the night's
    EEG and log scale, ``night_sides``); None: the shared heads for every epoch.

    Stages are picked after the causal stage filter (``psg.stage_filter``), as the monitor picks
    them: over the whole night (``carried``) or each window from its start.

    ``tune``: choose the apnea/hypopnea thresholds maximising F1 on these nights (validation only).
    AHI: predicted = runs of consecutive positive epochs (apnea + hypopnea) per hour of predicted
    sleep; true = scored events per hour of scored sleep. MAE over nights, events/h.
    """
    ys, ps, ya, pa, yh, ph = [], [], [], [], [], []
    ahi_err, ahi_rows = [], []
    per_night = []
    for i, (e, n) in enumerate(zip(embeds, nights)):
        pr = None if presents is None else presents[i]
        sd = None if pr is None else night_sides([n], [pr.numpy()], tuple(model.cfg.modalities))[0]
        sprob, aprob, hprob = predict_embedded(model, e, mode, window, pr, sd)
        stages = filter_night(sprob, None if mode == "carried" else window).argmax(1)
        ys.append(n.stage), ps.append(stages)
        ya.append(n.apnea), pa.append(aprob)
        yh.append(n.hypopnea), ph.append(hprob)
        per_night.append((n, stages, aprob, hprob))
    thr = dict(thresholds or {"apnea": 0.5, "hypopnea": 0.5})
    y_a, p_a, y_h, p_h = map(np.concatenate, (ya, pa, yh, ph))
    if tune:
        thr = {"apnea": best_threshold(y_a, p_a), "hypopnea": best_threshold(y_h, p_h)}
    for n, stages, aprob, hprob in per_night:
        true_events = n.n_apnea_events + n.n_hypopnea_events
        if true_events == 0 and (n.apnea >= 0).any():  # no events column: runs of labels
            true_events = count_runs(n.apnea == 1) + count_runs(n.hypopnea == 1)
        if not (n.stage >= 0).any():
            continue
        t_ahi = events_per_hour(true_events, sleep_hours(n.stage))
        p_ahi = predicted_ahi(aprob >= thr["apnea"], hprob >= thr["hypopnea"], stages)
        if t_ahi is not None and p_ahi is not None:
            ahi_err.append(abs(p_ahi - t_ahi))
            ahi_rows.append({"night": n.night, "true_ahi": round(t_ahi, 2), "pred_ahi": round(p_ahi, 2)})
    return {
        "mode": mode, "window": window if mode == "window" else None, "nights": len(nights),
        "stage": staging_metrics(np.concatenate(ys), np.concatenate(ps)),
        "apnea": binary_metrics(y_a, p_a, thr["apnea"]),
        "hypopnea": binary_metrics(y_h, p_h, thr["hypopnea"]),
        "ahi_mae": float(np.mean(ahi_err)) if ahi_err else None,
        "ahi_per_night": ahi_rows, "thresholds": thr,
    }


def selection_score(m: dict[str, Any], weights: dict[str, float]) -> float:
    """kappa (if staging trains) + mean F1 of the trained respiratory tasks; an undefined value
    (nan: no scored epoch, no positive anywhere) earns nothing."""
    def defined(v: float) -> float:
        return 0.0 if math.isnan(v) else float(v)

    score = defined(m["stage"]["kappa"]) if weights["stage"] > 0 else 0.0
    resp = [defined(m[t]["f1"]) for t in ("apnea", "hypopnea") if weights[t] > 0]
    return score + (float(np.mean(resp)) if resp else 0.0)


def short_metrics(m: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of an evaluate_embedded result."""
    s = m["stage"]
    return {"accuracy": s["accuracy"], "macro_f1": s["macro_f1"], "kappa": s["kappa"],
            "apnea_f1": m["apnea"]["f1"], "hypopnea_f1": m["hypopnea"]["f1"],
            "ahi_mae": m["ahi_mae"], "thresholds": m["thresholds"], "mode": m["mode"]}
