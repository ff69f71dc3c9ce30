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

from ..psg.clinical import (
    STAGES,
    cohen_kappa,
    confusion_matrix,
    count_runs,
    events_per_hour,
    macro_f1,
    per_class_f1,
    sleep_hours,
)
from .metrics import roc_auc
from .night_trainer import temporal_heads
from .shards import Night


def auroc(y: np.ndarray, s: np.ndarray) -> float | None:
    """Area under the ROC curve; None (JSON null) when one class is missing."""
    v = roc_auc(y, s)
    return None if math.isnan(v) else v


def stage_metrics(y: np.ndarray, p: np.ndarray, k: int = 5) -> dict[str, Any]:
    """Accuracy, macro-F1, Cohen's kappa, per-class F1 of stage predictions (y = -1 ignored)."""
    cm = confusion_matrix(y, p, k)
    n = cm.sum()
    if n == 0:
        return {"n": 0}
    f1 = np.nan_to_num(per_class_f1(cm))
    return {"n": int(n), "accuracy": float(np.trace(cm) / n), "macro_f1": macro_f1(cm),
            "kappa": cohen_kappa(cm),
            "f1_per_class": {STAGES[i]: float(f1[i]) for i in range(k)},
            "confusion": cm.astype(int).tolist()}


def binary_metrics(y: np.ndarray, prob: np.ndarray, thr: float) -> dict[str, Any]:
    """F1, precision, recall, AUROC of per-epoch binary predictions (y = -1 ignored)."""
    ok = y >= 0
    y, prob = y[ok], prob[ok]
    pred = prob >= thr
    tp = float(np.sum(pred & (y == 1)))
    fp = float(np.sum(pred & (y == 0)))
    fn = float(np.sum(~pred & (y == 1)))
    prec = tp / max(tp + fp, 1e-12)
    rec = tp / max(tp + fn, 1e-12)
    return {"n": int(ok.sum()), "positives": int((y == 1).sum()), "threshold": float(thr),
            "f1": 2 * prec * rec / max(prec + rec, 1e-12), "precision": prec, "recall": rec,
            "accuracy": float(np.mean(pred == (y == 1))) if len(y) else None,
            "auroc": auroc(y, prob)}


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
def predict_embedded(model: nn.Module, e: Tensor, mode: str = "carried", window: int = 20
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities for one night from its embeddings e [T, d] (model in eval mode).

    mode ``carried``: one scan over the whole night from a zero state (equal to the live step
    loop); ``window``: consecutive non-overlapping windows of ``window`` epochs, each from a zero
    state (the original SynthSleepNet protocol). Returns (stage [T,5], apnea [T], hypopnea [T]).
    """
    was = model.training
    model.eval()
    d = next(model.parameters()).device
    if mode == "carried":
        parts = [e]
    elif mode == "window":
        parts = list(torch.split(e, window))
    else:
        raise ValueError(f"mode must be 'carried' or 'window', got {mode!r}")
    sp, ap, hp = [], [], []
    for p in parts:
        st, a, h, _ = temporal_heads(model, p[None].to(d))
        sp.append(torch.softmax(st[0].float(), -1).cpu())
        ap.append(torch.sigmoid(a[0].float()).cpu())
        hp.append(torch.sigmoid(h[0].float()).cpu())
    model.train(was)
    return torch.cat(sp).numpy(), torch.cat(ap).numpy(), torch.cat(hp).numpy()


def evaluate_embedded(model: nn.Module, embeds: Sequence[Tensor], nights: Sequence[Night],
                      mode: str = "carried", window: int = 20,
                      thresholds: dict[str, float] | None = None, tune: bool = False
                      ) -> dict[str, Any]:
    """Stage / apnea / hypopnea / AHI metrics over nights (labels -1 ignored).

    ``tune``: choose the apnea/hypopnea thresholds maximising F1 on these nights (validation only).
    AHI: predicted = runs of consecutive positive epochs (apnea + hypopnea) per hour of predicted
    sleep; true = scored events per hour of scored sleep. MAE over nights, events/h.
    """
    ys, ps, ya, pa, yh, ph = [], [], [], [], [], []
    ahi_err, ahi_rows = [], []
    per_night = []
    for e, n in zip(embeds, nights):
        sprob, aprob, hprob = predict_embedded(model, e, mode, window)
        ys.append(n.stage), ps.append(sprob.argmax(1))
        ya.append(n.apnea), pa.append(aprob)
        yh.append(n.hypopnea), ph.append(hprob)
        per_night.append((n, sprob, aprob, hprob))
    thr = dict(thresholds or {"apnea": 0.5, "hypopnea": 0.5})
    y_a, p_a, y_h, p_h = map(np.concatenate, (ya, pa, yh, ph))
    if tune:
        thr = {"apnea": best_threshold(y_a, p_a), "hypopnea": best_threshold(y_h, p_h)}
    for n, sprob, aprob, hprob in per_night:
        true_events = n.n_apnea_events + n.n_hypopnea_events
        if true_events == 0 and (n.apnea >= 0).any():  # no events column: runs of labels
            true_events = count_runs(n.apnea == 1) + count_runs(n.hypopnea == 1)
        if not (n.stage >= 0).any():
            continue
        t_ahi = events_per_hour(true_events, sleep_hours(n.stage))
        p_events = count_runs(aprob >= thr["apnea"]) + count_runs(hprob >= thr["hypopnea"])
        p_ahi = events_per_hour(p_events, sleep_hours(sprob.argmax(1)))
        if t_ahi is not None and p_ahi is not None:
            ahi_err.append(abs(p_ahi - t_ahi))
            ahi_rows.append({"night": n.night, "true_ahi": round(t_ahi, 2), "pred_ahi": round(p_ahi, 2)})
    return {
        "mode": mode, "window": window if mode == "window" else None, "nights": len(nights),
        "stage": stage_metrics(np.concatenate(ys), np.concatenate(ps)),
        "apnea": binary_metrics(y_a, p_a, thr["apnea"]),
        "hypopnea": binary_metrics(y_h, p_h, thr["hypopnea"]),
        "ahi_mae": float(np.mean(ahi_err)) if ahi_err else None,
        "ahi_per_night": ahi_rows, "thresholds": thr,
    }


def selection_score(m: dict[str, Any], weights: dict[str, float]) -> float:
    """kappa (if staging trains) + mean F1 of the trained respiratory tasks."""
    score = 0.0
    if weights["stage"] > 0:
        score += m["stage"].get("kappa", 0.0)
    resp = [m[t]["f1"] for t in ("apnea", "hypopnea") if weights[t] > 0]
    return score + (float(np.mean(resp)) if resp else 0.0)


def short_metrics(m: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of an evaluate_embedded result."""
    s = m["stage"]
    return {"accuracy": s.get("accuracy"), "macro_f1": s.get("macro_f1"), "kappa": s.get("kappa"),
            "apnea_f1": m["apnea"]["f1"], "hypopnea_f1": m["hypopnea"]["f1"],
            "ahi_mae": m["ahi_mae"], "thresholds": m["thresholds"], "mode": m["mode"]}
