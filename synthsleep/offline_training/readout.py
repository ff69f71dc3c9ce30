"""The EEG-alone stage readout, refitted last on frozen features of EEG-only training nights.

A single EEG channel is the commonest real recording (the 8 DREAMS excerpts are EEG only) and the
sensor set the shared stage head reads worst: it is trained mostly on fuller montages. A linear
probe fitted on EEG-alone features of the frozen model beat the model's own head on held-out
synthetic EEG-only nights (``benchmarks/bench_eeg_probe.py``). ``fit_eeg_readout`` builds that
probe into the model:

1. the TRAIN nights are embedded with EEG alone (every other sensor treated as absent) and run
   through the temporal model with the state carried from each night's start, as live;
2. ``heads.stage_eeg`` (one Linear on [h, side] [d + 7] -> 5 stages: the temporal output and
   the epoch's EEG side features, ``psg.side_features``, the absolute amplitude the normalised
   input hides) is fitted as an L2-regularised multinomial logistic regression on standardised
   [h, side], the standardisation then folded into its weights; nothing else changes;
3. the regularisation strength C is chosen on the VALIDATION nights with EEG alone (state carried);
   the test split and real recordings are never used.

``SleepModel`` routes an epoch to this readout exactly when EEG is its only present modality, in
every path (live step, split graphs, training, evaluation). On the bundled model's validation
nights (EEG alone, state carried) the shared head scores 0.813, a readout on h alone 0.821 and
this one, on [h, side], 0.834 (C = 0.3).

    python -m synthsleep.offline_training.readout --model-dir DIR --shards SHARDS
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

from .augment import montage_mask
from .night_trainer import embed_nights, night_sides
from .shards import Night, load_nights

log = logging.getLogger(__name__)

#: candidate inverse L2 strengths (scikit-learn's C: loss summed over epochs + 0.5 |W|^2 / C)
DEFAULT_CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


@torch.no_grad()
def eeg_alone_features(model: torch.nn.Module, nights: Sequence[Night], desc: str) -> tuple[Tensor, Tensor]:
    """What the EEG-alone readout reads for ``nights`` with EEG alone, state carried over each
    night: ([h, side] float32 [sum T, d + 7], stage int64 [sum T], -1 = unscored).

    Raises:
        ValueError: the shards predate ``log_scale`` (no side features: re-run prepare).
    """
    mods = tuple(model.cfg.modalities)
    keep = montage_mask(("eeg",), mods)
    sides = night_sides(nights, [n.present & keep[None] for n in nights], mods)
    fs, ys = [], []
    for n, e, sd in zip(nights, embed_nights(model, nights, torch.device("cpu"), desc=desc, keep=keep), sides):
        if not torch.isfinite(sd).all():
            raise ValueError(f"night {n.night}: no EEG side features (its shard predates the log_scale "
                             f"columns); re-run prepare")
        h, _ = model.temporal(e[None])
        fs.append(torch.cat([h[0], sd], -1))
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


def fit_eeg_readout(model_dir: Path, shards: Path, cs: Sequence[float] = DEFAULT_CS) -> dict[str, Any]:
    """Fit ``heads.stage_eeg`` of ``model_dir/model`` (see module docstring) and save the model in
    place, its config with ``eeg_stage_head = true``. Returns the report (also stored in the
    model's metadata under ``eeg_readout``): chosen C and validation accuracies."""
    from synthsleep.model import SleepModel, load_model, save_model
    from synthsleep.model.io import load_config_json

    old, cfg = load_model(model_dir / "model")
    _, meta = load_config_json(model_dir / "model")
    cfg = dataclasses.replace(cfg, eeg_stage_head=True)
    model = SleepModel(cfg)
    model.load_state_dict(old.state_dict(), strict=False)  # all but a first readout (refit: all)
    model.eval()
    train = [n for n in load_nights(shards, "train", cfg.modalities) if n.labelled]
    val = [n for n in load_nights(shards, "val", cfg.modalities) if n.labelled]
    if not train or not val:
        raise ValueError(f"{shards}: the EEG-alone readout needs labelled train and val nights "
                         f"(got {len(train)} / {len(val)})")
    h_tr, y_tr = eeg_alone_features(model, train, "embed train, EEG alone")
    h_va, y_va = eeg_alone_features(model, val, "embed val, EEG alone")
    ok_tr, ok_va = y_tr >= 0, y_va >= 0
    mu, sd = h_tr[ok_tr].mean(0), h_tr[ok_tr].std(0).clamp_min(1e-6)
    z_tr, z_va = (h_tr[ok_tr] - mu) / sd, (h_va[ok_va] - mu) / sd
    with torch.no_grad():
        shared = float((model.heads.stage(h_va[ok_va, :cfg.fusion_dim]).argmax(1) == y_va[ok_va]).float().mean())
    tried = []
    for c in cs:
        w, b = fit_logistic(z_tr, y_tr[ok_tr], cfg.n_stages, float(c))
        acc = float(((z_va @ w.T + b).argmax(1) == y_va[ok_va]).float().mean())
        tried.append({"C": float(c), "val_accuracy": acc, "w": w, "b": b})
        log.info("EEG-alone readout C=%g: val accuracy %.3f (shared head %.3f)", c, acc, shared)
    best = max(tried, key=lambda r: (r["val_accuracy"], -r["C"]))  # ties: the stronger L2
    with torch.no_grad():
        model.heads.stage_eeg.weight.copy_(best["w"] / sd)
        model.heads.stage_eeg.bias.copy_(best["b"] - (best["w"] / sd) @ mu)
    report = {"C": best["C"], "val_accuracy": best["val_accuracy"], "val_accuracy_shared_head": shared,
              "tried": [{"C": r["C"], "val_accuracy": r["val_accuracy"]} for r in tried],
              "train_epochs": int(ok_tr.sum()), "val_epochs": int(ok_va.sum()),
              "train_nights": len(train), "val_nights": len(val)}
    save_model(model, cfg, model_dir / "model", metadata={**meta, "eeg_readout": report})
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, required=True, help="folder with model.safetensors + model.json")
    ap.add_argument("--shards", type=Path, required=True, help="the shards the model was trained on")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rep = fit_eeg_readout(args.model_dir, args.shards)
    print(f"EEG-alone readout: C={rep['C']:g}, validation accuracy (EEG alone, state carried) "
          f"{rep['val_accuracy']:.3f} against the shared head's {rep['val_accuracy_shared_head']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
