"""``synthsleep adapt``: unsupervised adaptation of a model to a site's own recordings.

    synthsleep adapt --in site_recordings/ --model model.onnx --out model-site.onnx

A site's amplifiers, derivations, filters and patients differ from the nights a model was trained
on. The per-epoch encoders (frame backbones, NeuroNets, fusion projections) normalise their
activations with BatchNorm statistics estimated on the training nights; on another site's
recordings those statistics are off. ``adapt`` re-estimates them on the site's own epochs (AdaBN,
Li et al. 2016) and writes a new artifact. **No label is read**: hypnograms and event files
beside the recordings are ignored, so the recordings to adapt on may be the very nights that
will be scored.

What is re-estimated: every BatchNorm of the per-epoch encoder (``model.encoders`` and
``model.fusion``), from the present rows of each modality only (as in training); a modality the
site never records keeps the source statistics. The temporal BatchNorm and the heads are left
as trained: their inputs are the encoder's embeddings, which the new statistics bring back to
the training distribution, and re-estimating them would bake the site's stage mix into the
decision (a site whose excerpts are mostly N2 would shift every stage boundary).

Stage-balanced (``method="balanced"``, measured worse, not the default): the encoder's
statistics follow the stage mix of what they are estimated on (an average N2 epoch is not an
average epoch), so plain AdaBN on short, stage-skewed recordings moves the model with the stage
mix, not the site (``benchmarks/bench_adapt_synthetic.py``). The balanced method first stages
every epoch with the unadapted model (state carried over each recording), re-estimates the
statistics on each predicted stage's epochs apart, and mixes them with the training nights'
stage mix (provenance ``train_stage_mix``): mean = sum_c w_c mean_c, var = sum_c w_c (var_c +
mean_c^2) - mean^2, over the stages with at least ``MIN_STAGE_EPOCHS`` epochs (their weights
renormalised). Still no label is read: the groups are the model's own predictions, and that is
where it fails: on held-out randomised nights, EEG only, it scored 0.725 after adapting on the
whole night (plain 0.811, as is 0.707) and 0.637 after a 30-min N2-rich snippet (plain 0.706):
the unadapted model's stages are wrong on 20-40 % of the epochs, so the groups are not stages.
An artifact without ``train_stage_mix`` (made before 2026-11-30) cannot be balanced (plain, with
a warning).

Tried after AdaBN and not kept (2026-11-30, bundled H, the same four held-out randomised nights,
EEG only, adapted on the whole night; mean accuracy of the PyTorch model, state carried, no
``unknown``: as is 0.719, plain AdaBN 0.818; a one-off
script, not in the repository):
- the self-supervised losses continued on the site's epochs (NeuroNet masked reconstruction +
  contrastive, BatchNorm statistics frozen, 40 steps of 32 epochs): all encoder weights at lr 1e-4
  0.683; the transformers only at lr 3e-5 0.818 (no change); without AdaBN first 0.585. The
  pretext tasks do not move the features toward what the stage head reads.
- information maximisation (SHOT-like; no label): per-epoch entropy down, the night's mean stage
  distribution pulled to ``train_stage_mix`` (KL), 40 steps on 40-epoch windows with the state
  carried: BatchNorm affines only 0.706 (0.646 without AdaBN), all encoder weights at lr 1e-4
  0.698. Entropy minimisation sharpens the model's own errors (20-40 % of epochs here).

The new artifact's provenance names the base model (content hash), the method, and each
recording adapted on (name, SHA-256, epochs), so a score can always be traced to what the model
saw. The weights are written beside it (``.safetensors`` + ``.json``) so it can be adapted or
verified again.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..psg.epoch import stack_for_model
from ..psg.montage import parse_overrides, resolve_channels
from ..psg.preprocess import PreprocessParams, iter_recording_epochs
from ..psg.recording import open_recording
from ..psg.side_features import night_side_features
from .prepare import sha256_of

log = logging.getLogger(__name__)

RECORDING_SUFFIXES = (".edf", ".bdf", ".rec")
#: recordings shorter than this on average (hours) get a warning: BatchNorm
#: statistics from short, stage-skewed recordings move the model with the stage mix, not the site
#: (``benchmarks/bench_adapt_synthetic.py``: held-out randomised nights, EEG only, 0.707 as is,
#: 0.811 adapted on the whole night, 0.706 adapted on a 30-min N2-rich snippet of it; DREAMS
#: leave-one-out on 30-min excerpts made every model worse)
MIN_MEAN_HOURS = 4.0
#: a predicted stage with fewer epochs than this is left out of the stage-balanced statistics
MIN_STAGE_EPOCHS = 10
METHODS = ("plain", "balanced")


def find_recordings(inputs: Sequence[str | Path]) -> list[Path]:
    """Files given, plus the EDF/BDF files in each folder given (sorted). ValueError if none."""
    out: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in RECORDING_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise ValueError(f"{p}: no such file or folder")
    if not out:
        raise ValueError(f"no EDF/BDF recordings found in {', '.join(map(str, inputs))}")
    return out


def read_epochs(path: Path, params: PreprocessParams, overrides: dict[str, str] | None = None,
                modalities: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One recording's preprocessed epochs: (x float32 [T, M, 3000], present bool [T, M], side
    float32 [T, N_SIDE] EEG side features with their context, ``psg.side_features``), rows in the order of ``modalities``
    (the model's; default: the preprocessing's)."""
    with open_recording(path) as rec:
        chmap = resolve_channels([c.label for c in rec.channels], overrides, required=("eeg",),
                                 wanted=params.modalities, source=str(path))
        eps = list(iter_recording_epochs(rec, chmap, params))
    if not eps:
        raise ValueError(f"{path}: no complete 30-s epoch")
    mods = tuple(modalities or params.modalities)
    x, present, log_scale = stack_for_model(eps, mods)
    return x, present, night_side_features(x, present, log_scale, mods)


def _encoder_batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for part in (model.encoders, model.fusion) for m in part.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _batchnorm_pass(model: nn.Module, bns: list[nn.modules.batchnorm._BatchNorm],
                    nights: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], batch: int) -> int:
    """Reset ``bns`` and run the encoder over ``nights`` in batch mode, so each BatchNorm's running
    statistics become the cumulative average over the epochs (present rows only). Returns the
    number of epochs with any modality."""
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average
    model.train()  # present rows only through each encoder, BatchNorm in batch mode
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    n = 0
    for x, present, _ in nights:
        for s in range(0, len(x), batch):
            xb = torch.from_numpy(np.ascontiguousarray(x[s:s + batch], dtype=np.float32))
            pb = torch.from_numpy(np.ascontiguousarray(present[s:s + batch]))
            if pb.any():
                model.encode_epochs(xb, pb)
                n += int(pb.any(dim=1).sum())
    model.eval()
    return n


@torch.no_grad()
def embed_epochs(model: nn.Module, x: np.ndarray, present: np.ndarray, batch: int = 64) -> torch.Tensor:
    """Per-epoch embeddings of one recording (x [T, M, 3000], present [T, M]) in batches of
    ``batch`` epochs, the model in eval mode: [T, fusion_dim]."""
    model.eval()
    return torch.cat([model.encode_epochs(torch.from_numpy(np.ascontiguousarray(x[s:s + batch], dtype=np.float32)),
                                          torch.from_numpy(np.ascontiguousarray(present[s:s + batch])))
                      for s in range(0, len(x), batch)])


def predict_stages(model: nn.Module, x: np.ndarray, present: np.ndarray, side: np.ndarray,
                   batch: int = 64) -> np.ndarray:
    """The model's stage per epoch of one recording (x [T, M, 3000], present [T, M], side [T, N_SIDE]:
    ``read_epochs``), the temporal state carried from its start, as ``score`` runs it: int [T] (0-4)."""
    from .selection import predict_embedded

    return predict_embedded(model, embed_epochs(model, x, present, batch), "carried",
                            present=torch.from_numpy(np.ascontiguousarray(present)),
                            side=torch.from_numpy(np.ascontiguousarray(side)))[0].argmax(axis=1)


def _stage_groups(model: nn.Module, nights: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                  stage_mix: Sequence[float], batch: int
                  ) -> tuple[list[tuple[float, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]], dict[str, Any]]:
    """The epochs split by the stage the unadapted model predicts, each group with its weight from
    ``stage_mix`` (stages with fewer than ``MIN_STAGE_EPOCHS`` epochs left out, the rest
    renormalised; all epochs as one group when no stage has enough): ([(weight, nights)], record)."""
    prior = np.asarray(stage_mix, dtype=float)
    stages = [predict_stages(model, x, p, sd, batch) for x, p, sd in nights]
    counts = np.bincount(np.concatenate(stages), minlength=len(prior))[:len(prior)]
    w = np.where(counts >= MIN_STAGE_EPOCHS, prior, 0.0)
    if not w.any():  # no stage has enough epochs: all of them as one group (plain AdaBN)
        groups = [(1.0, list(nights))]
        w = np.eye(len(prior))[int(counts.argmax())]
    else:
        w = w / w.sum()
        groups = [(float(w[c]), [(x[st == c], p[st == c], sd[st == c]) for (x, p, sd), st in zip(nights, stages)
                                 if (st == c).any()])
                  for c in np.flatnonzero(w)]
    return groups, {"predicted_stage_epochs": counts.tolist(), "stage_weights": [round(float(v), 4) for v in w]}


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, nights: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                         batch: int = 64, stage_mix: Sequence[float] | None = None) -> dict[str, Any]:
    """AdaBN on the per-epoch encoder, in place; the model is left in eval mode.

    Plain (``stage_mix`` None): every BatchNorm's running statistics become the average over the
    given epochs (cumulative, every batch weighted alike). Stage-balanced (``stage_mix``: the
    training nights' fraction of each stage, [5]): the statistics of each predicted stage's
    epochs, mixed with those weights (module docstring).

    Args:
        model: a ``SleepModel``.
        nights: per recording (x float32 [T, M, 3000], present bool [T, M], side [T, N_SIDE]) as
            ``read_epochs`` gives them (side is read by the balanced method's stage predictions).
        batch: epochs per forward pass.
        stage_mix: weights of the stages W, N1, N2, N3, REM, or None.

    Returns:
        {"epochs": epochs seen, "batchnorms": layers re-estimated, "kept": layers that saw no
        data (a modality the site does not record, the unused pretraining projectors) and kept
        their trained statistics}; balanced also {"predicted_stage_epochs": [5], "stage_weights":
        [5] (0 for a stage left out)}.
    """
    bns = _encoder_batchnorms(model)
    saved = [(bn.running_mean.clone(), bn.running_var.clone(), bn.momentum) for bn in bns]
    groups, out = ([(1.0, list(nights))], {}) if stage_mix is None else _stage_groups(model, nights, stage_mix, batch)
    # per layer: weighted sums of the groups' means and second moments, and of the weights seen
    # (float64: var = E[x^2] - mean^2 would cancel away a small variance under a large mean)
    acc = [[torch.zeros_like(bn.running_mean, dtype=torch.float64),
            torch.zeros_like(bn.running_var, dtype=torch.float64), 0.0] for bn in bns]
    n = 0
    for weight, group in groups:
        n += _batchnorm_pass(model, bns, group, batch)
        for a, bn in zip(acc, bns):
            if int(bn.num_batches_tracked):  # this layer saw data of the group
                mean = bn.running_mean.double()
                a[0] += weight * mean
                a[1] += weight * (bn.running_var.double() + mean ** 2)
                a[2] += weight
    kept = 0
    for bn, (mean, var, momentum), (m1, m2, seen) in zip(bns, saved, acc):
        if seen:  # weights renormalised over the groups a layer saw
            bn.running_mean.copy_(m1 / seen)
            bn.running_var.copy_((m2 / seen - (m1 / seen) ** 2).clamp(min=0))
        else:
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            kept += 1
        bn.momentum = momentum
    model.eval()
    return {"epochs": n, **out, "batchnorms": len(bns) - kept, "kept": kept}


def adapt(recordings: Sequence[Path], model_path: str | Path, out: str | Path,
          overrides: dict[str, str] | None = None, progress: bool = False,
          method: str = "plain") -> dict[str, Any]:
    """Adapt the artifact ``model_path`` (its weights beside it) to ``recordings``; write ``out``.

    ``method``: ``plain`` (AdaBN over all epochs) or ``balanced`` (stage-balanced; plain with a
    warning when the artifact's provenance has no ``train_stage_mix``; module docstring).

    Returns the adaptation record stored in the new artifact's provenance.

    Raises:
        ValueError (RecordingError, MontageError, ...) naming the file for bad input;
        FileNotFoundError when the artifact's weights are not beside it.
    """
    from synthsleep.export.artifact import read_artifact
    from synthsleep.export.onnx_export import export_step
    from synthsleep.model import load_model, save_model

    model_path, out = Path(model_path), Path(out)
    info = read_artifact(model_path)
    weights = model_path.with_suffix(".safetensors")
    if not weights.is_file():
        raise FileNotFoundError(f"{model_path}: its PyTorch weights {weights.name} (and .json) must lie "
                                "beside the artifact to adapt it")
    model, cfg = load_model(model_path.with_suffix(""))
    params = PreprocessParams.from_dict(info.preprocess)
    nights, files = [], []
    it = recordings
    if progress:
        from tqdm import tqdm

        it = tqdm(recordings, unit="file", desc="reading")
    for path in it:
        x, present, side = read_epochs(Path(path), params, overrides, cfg.modalities)
        nights.append((x, present, side))
        files.append({"file": Path(path).name, "sha256": sha256_of(Path(path)), "epochs": len(x),
                      "modalities": [m for m, k in zip(cfg.modalities, present.any(axis=0)) if k]})
    if method not in METHODS:
        raise ValueError(f"adapt method must be one of {', '.join(METHODS)}, got {method!r}")
    mix = info.provenance.get("train_stage_mix") if method == "balanced" else None
    warnings = []
    if method == "balanced" and mix is None:
        warnings.append(f"{model_path.name} does not record its training stage mix (provenance "
                        "train_stage_mix): plain AdaBN instead of stage-balanced")
        log.warning("%s", warnings[-1])
    stats = reestimate_batchnorm(model, nights, stage_mix=mix)
    how = ("stage-balanced AdaBN: per-epoch encoder BatchNorm statistics re-estimated per predicted stage, "
           "mixed with the training stage mix, no labels" if mix is not None else
           "AdaBN: per-epoch encoder BatchNorm statistics re-estimated, no labels")
    record = {"method": how, "base_model": info.content_hash, "recordings": files, **stats}
    mean_hours = stats["epochs"] * params.epoch_seconds / 3600 / max(1, len(files))
    if mean_hours < MIN_MEAN_HOURS:
        warnings.append(f"recordings of {60 * mean_hours:.0f} min on average: adapt on whole nights "
                        f"(>= {MIN_MEAN_HOURS:g} h); statistics from short recordings follow their "
                        "stage mix and can make the model worse")
        log.warning("%s", warnings[-1])
    if warnings:
        record["warnings"] = warnings
    provenance = dict(info.provenance)
    provenance["adapted"] = record
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, cfg, out.with_suffix(""), metadata={"adapted": record})
    export_step(model, cfg, out, provenance, params, info.thresholds, exporter="torchscript")
    log.info("adapted %s on %d recordings (%d epochs) -> %s", model_path, len(files), stats["epochs"], out)
    return record


# ---------------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--in", dest="inputs", nargs="+", required=True, metavar="PATH",
                   help="the site's recordings: EDF/BDF files or folders of them (labels are never read)")
    p.add_argument("--model", default=None, help="artifact to adapt (default: the bundled model); "
                   "its .safetensors/.json must lie beside it")
    p.add_argument("--out", required=True, help="the adapted artifact to write (.onnx)")
    p.add_argument("--channel", action="append", default=[], metavar="MODALITY=LABEL",
                   help="channel override, e.g. --channel eeg=C3-A1 (repeatable)")
    p.add_argument("--method", choices=METHODS, default="plain",
                   help="plain (default): BatchNorm statistics of all epochs together (AdaBN); "
                        "balanced: per stage the model predicts, mixed with the training stage mix "
                        "(experimental: worse on held-out synthetic nights, bench_adapt_synthetic.py)")


def run(args: argparse.Namespace) -> int:
    from synthsleep.bed_session import resolve_model_path

    try:
        files = find_recordings(args.inputs)
        record = adapt(files, resolve_model_path(args.model), args.out, parse_overrides(args.channel),
                       progress=True, method=args.method)
    except (ValueError, FileNotFoundError) as e:
        print(f"synthsleep adapt: {e}")
        return 2
    print(f"adapted on {len(record['recordings'])} recordings, {record['epochs']} epochs: "
          f"{record['batchnorms']} BatchNorm layers re-estimated, {record['kept']} kept "
          f"(no data: modalities not recorded)\nwrote {args.out} (+ .safetensors, .json)")
    for w in record.get("warnings", []):
        print(f"warning: {w}")
    return 0
