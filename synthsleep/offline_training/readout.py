"""The stage readouts, refitted last on frozen features of the training nights.

A single EEG channel is the commonest real recording (the 8 DREAMS excerpts are EEG only) and the
sensor set the shared stage head reads worst: it is trained mostly on fuller montages. A linear
probe fitted on EEG-alone features of the frozen model beat the model's own head on held-out
synthetic EEG-only nights (``benchmarks/bench_eeg_probe.py``). ``fit_stage_readouts`` builds such
probes into the model:

1. ``heads.stage_eeg``, read by the epochs whose only sensor is the EEG: the TRAIN nights are
   embedded with EEG alone and run through the temporal model with the state carried from each
   night's start, as live; the readout, one Linear on [h, side] [d + N_SIDE] -> 5 stages (the
   temporal output, the epoch's EEG side features and their moving averages, ``psg.side_features``:
   the absolute amplitude the normalised input hides, and its recent past), is fitted as an L2-regularised multinomial logistic regression on the
   standardised features, the standardisation then folded into its weights;
2. ``heads.stage_montage`` (``cfg.montage_stage_head``), read by every other epoch with an EEG:
   one Linear on [h, side, present as 0/1], fitted alike on every other TRAIN night read with
   each of ``MONTAGE_READOUT_SETS`` (as recorded, EEG+EOG+EMG+ECG, EEG+EOG+EMG, EEG+EOG), pooled;
3. each regularisation strength C, and whether the readout reads the side features' moving
   averages, is chosen on the VALIDATION nights read the same way (state carried); nothing else
   changes; the test split and real recordings are never used.

``SleepModel`` routes an epoch to a readout by its sensor set in every path (live step, split
graphs, training, evaluation). On the bundled model's validation nights, EEG alone, the shared
head scores 0.813, a readout on h alone 0.821, one on [h, side] without the moving averages
0.834 (C = 0.3) and with them 0.842 (C = 0.03); with the four sensor sets pooled the shared head
0.875, the montage readout 0.881 without the averages (C = 0.01) and 0.878 with them (so it
reads none: ``_fit_into`` chooses).

    python -m synthsleep.offline_training.readout --model-dir DIR --shards SHARDS [--eeg-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..psg.side_features import N_EPOCH_SIDE, N_SIDE
from .augment import montage_mask
from .night_trainer import embed_nights, night_presents, night_sides
from .shards import Night, load_nights

log = logging.getLogger(__name__)

#: candidate inverse L2 strengths (scikit-learn's C: loss summed over epochs + 0.5 |W|^2 / C)
DEFAULT_CS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
#: sensor sets the montage readout is fitted on, pooled (None: each night as recorded, the full
#: montage here): the common PSG subsets with an EEG; it is read by any set with EEG + more
MONTAGE_READOUT_SETS: tuple[tuple[str, ...] | None, ...] = (
    None, ("eeg", "eog", "emg", "ecg"), ("eeg", "eog", "emg"), ("eeg", "eog"))


@torch.no_grad()
def readout_features(model: torch.nn.Module, nights: Sequence[Night], keep: np.ndarray | None, desc: str,
                     with_present: bool) -> tuple[Tensor, Tensor]:
    """What a stage readout reads for ``nights`` read with the sensor set ``keep`` (bool [M]; None:
    each night as recorded), state carried over each night: ([h, side] or, ``with_present``,
    [h, side, present as 0/1] float32 [sum T, d + N_SIDE (+ M)], stage int64 [sum T], -1 = unscored).

    Raises:
        ValueError: the shards predate ``log_scale`` (no side features: re-run prepare).
    """
    mods = tuple(model.cfg.modalities)
    presents = night_presents(nights, keep)
    sides = night_sides(nights, [p.numpy() for p in presents], mods)
    embeds = embed_nights(model, nights, torch.device("cpu"), desc=desc, keep=keep)
    fs, ys = [], []
    for n, e, pr, sd in zip(nights, embeds, presents, sides):
        if not torch.isfinite(sd).all():
            raise ValueError(f"night {n.night}: no EEG side features (its shard predates the log_scale "
                             f"columns); re-run prepare")
        h, _ = model.temporal(e[None])
        fs.append(torch.cat([h[0], sd] + ([pr.float()] if with_present else []), -1))
        ys.append(torch.from_numpy(n.stage.astype(np.int64)))
    return torch.cat(fs), torch.cat(ys)


def fit_logistic(x: Tensor, y: Tensor, n_classes: int, c: float, iters: int = 200) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression, L2 on the weights (not the bias): minimises
    ``sum CE + 0.5 |W|^2 / c`` by L-BFGS. x [N, d] (standardised), y int [N] -> (W [K, d], b [K])."""
    w = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    xd = x.double()
    opt = torch.optim.LBFGS([w, b], max_iter=iters, tolerance_grad=1e-7, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = (torch.nn.functional.cross_entropy(xd @ w.T + b, y, reduction="sum") + 0.5 * (w * w).sum() / c) / len(y)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach().float(), b.detach().float()


def _fit_into(linear: torch.nn.Linear, shared: torch.nn.Module, train: tuple[Tensor, Tensor],
              val: tuple[Tensor, Tensor], cs: Sequence[float], what: str) -> dict[str, Any]:
    """Fit ``linear`` as an L2 logistic regression on standardised features (C chosen on ``val``),
    the standardisation folded into its weights. The side features' moving averages (columns
    ``d + N_EPOCH_SIDE`` to ``d + N_SIDE``) are a choice too, made on ``val`` with C: without
    them their weights are zero (measured: they help the EEG-alone readout, 0.834 -> 0.842 on the
    bundled model's validation nights, and not the montage one, 0.881 -> 0.878). ``shared``: the
    shared stage head, scored on the same validation epochs (its input: the first d features)."""
    (f_tr, y_tr), (f_va, y_va) = train, val
    ok_tr, ok_va = y_tr >= 0, y_va >= 0
    mu, sd = f_tr[ok_tr].mean(0), f_tr[ok_tr].std(0).clamp_min(1e-6)
    z_tr, z_va = (f_tr[ok_tr] - mu) / sd, (f_va[ok_va] - mu) / sd
    d = shared[0].in_features
    with torch.no_grad():
        shared_acc = float((shared(f_va[ok_va, :d]).argmax(1) == y_va[ok_va]).float().mean())
    with_context = torch.ones(f_tr.shape[1], dtype=torch.bool)
    without = with_context.clone()
    without[d + N_EPOCH_SIDE:d + N_SIDE] = False
    tried = []
    for context, cols in ((True, with_context), (False, without)):
        for c in cs:
            wc, b = fit_logistic(z_tr[:, cols], y_tr[ok_tr], linear.out_features, float(c))
            w = torch.zeros(linear.out_features, f_tr.shape[1])
            w[:, cols] = wc
            acc = float(((z_va @ w.T + b).argmax(1) == y_va[ok_va]).float().mean())
            tried.append({"C": float(c), "context": context, "val_accuracy": acc, "w": w, "b": b})
            log.info("%s readout C=%g%s: val accuracy %.3f (shared head %.3f)", what, c,
                     "" if context else " without the side context", acc, shared_acc)
    # ties: fewer inputs, then the stronger L2
    best = max(tried, key=lambda r: (r["val_accuracy"], not r["context"], -r["C"]))
    with torch.no_grad():
        linear.weight.copy_(best["w"] / sd)
        linear.bias.copy_(best["b"] - (best["w"] / sd) @ mu)
    return {"C": best["C"], "context": best["context"], "val_accuracy": best["val_accuracy"],
            "val_accuracy_shared_head": shared_acc,
            "tried": [{"C": r["C"], "context": r["context"], "val_accuracy": r["val_accuracy"]} for r in tried],
            "train_epochs": int(ok_tr.sum()), "val_epochs": int(ok_va.sum())}


def fit_stage_readouts(model_dir: Path, shards: Path, cs: Sequence[float] = DEFAULT_CS,
                       montage: bool = True) -> dict[str, Any]:
    """Fit ``heads.stage_eeg`` and (``montage``) ``heads.stage_montage`` of ``model_dir/model``
    (see module docstring) and save the model in place, its config with ``eeg_stage_head`` (and
    ``montage_stage_head``) true. Returns the report (also stored in the model's metadata under
    ``stage_readouts``): per readout the chosen C and validation accuracies."""
    from synthsleep.model import SleepModel, load_model, save_model
    from synthsleep.model.io import load_config_json

    # the readouts refitted here are not read from the checkpoint (they may read other side features)
    refitted = ("heads.stage_eeg.",) + (("heads.stage_montage.",) if montage else ())
    old, cfg = load_model(model_dir / "model", skip=refitted)
    _, meta = load_config_json(model_dir / "model")
    cfg = dataclasses.replace(cfg, eeg_stage_head=True, montage_stage_head=montage or cfg.montage_stage_head)
    model = SleepModel(cfg)
    model.load_state_dict(old.state_dict(), strict=False)  # all but new readouts (refit: all)
    model.eval()
    mods = tuple(cfg.modalities)
    train = [n for n in load_nights(shards, "train", mods) if n.labelled]
    val = [n for n in load_nights(shards, "val", mods) if n.labelled]
    if not train or not val:
        raise ValueError(f"{shards}: the stage readouts need labelled train and val nights "
                         f"(got {len(train)} / {len(val)})")
    eeg = montage_mask(("eeg",), mods)
    report = {"eeg": _fit_into(model.heads.stage_eeg, model.heads.stage,
                               readout_features(model, train, eeg, "embed train, EEG alone", False),
                               readout_features(model, val, eeg, "embed val, EEG alone", False),
                               cs, "EEG-alone")}
    if montage:  # --eeg-only leaves a montage readout the model has as it is
        sets = [None if s is None else montage_mask(s, mods) for s in MONTAGE_READOUT_SETS
                if s is None or all(m in mods for m in s)]
        parts = [(readout_features(model, train[::2], k, "embed train, a sensor set", True),
                  readout_features(model, val, k, "embed val, a sensor set", True)) for k in sets]
        pooled = [tuple(torch.cat([p[i][j] for p in parts]) for j in range(2)) for i in range(2)]
        report["montage"] = _fit_into(model.heads.stage_montage, model.heads.stage, pooled[0], pooled[1],
                                      cs, "sensor-set")
    report.update({"train_nights": len(train), "val_nights": len(val)})
    # over the earlier report: a readout not refitted here (--eeg-only) keeps its entry
    save_model(model, cfg, model_dir / "model",
               metadata={**meta, "stage_readouts": {**meta.get("stage_readouts", {}), **report}})
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, required=True, help="folder with model.safetensors + model.json")
    ap.add_argument("--shards", type=Path, required=True, help="the shards the model was trained on")
    ap.add_argument("--eeg-only", action="store_true", help="fit the EEG-alone readout only")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rep = fit_stage_readouts(args.model_dir, args.shards, montage=not args.eeg_only)
    for name, what in (("eeg", "EEG alone"), ("montage", "EEG with other sensors")):
        if name in rep:
            r = rep[name]
            print(f"{what}: C={r['C']:g}, validation accuracy (state carried) {r['val_accuracy']:.3f} "
                  f"against the shared head's {r['val_accuracy_shared_head']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
