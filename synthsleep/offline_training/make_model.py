"""``make model``: the whole offline pipeline on synthetic nights, ending in the shipped artifact.

    python -m synthsleep.offline_training.make_model --out synthsleep/assets [--work runs/make_model]

Stages (each timed; a summary table is printed at the end and stored in eval_report.json):

1. synthesise nights (``--subjects`` sleepers, some with two nights, ``--hours`` each) as EDF+;
   ``--late-start P``: that fraction recorded from a random point of the night; ``--subject
   FIELD=VALUE`` pins a sleeper field for all;
2. prepare them into Parquet shards (subject-level train/val/test split);
3. pretrain one NeuroNet per modality (short, time-boxed by the run config);
4. pretrain the SynthSleepNet fusion, initialised from the unimodal encoders;
5. fine-tune all tasks: end-to-end windows, then whole-night truncated BPTT with the state
   carried; model selection and apnea/hypopnea thresholds on the VALIDATION split; the thresholds
   are then folded into the heads' output biases so that probability 0.5 is the decision point;
   with ``eeg_stage_head`` in the model config the stage readouts (EEG alone; EEG with other
   sensors) are fitted on frozen features of the train nights, their L2 strengths chosen on val
   (``readout.py``);
6. evaluate on the held-out TEST subjects, (a) 20-epoch windows from a zero state and (b) the
   state carried all night (PyTorch), then the ONNX artifact through ONNX Runtime;
7. export ``model.onnx`` and copy ``model.safetensors``,
   ``model.json``, ``eval_report.json`` and plots into ``--out``.

8. the 1 %-labels comparison (pretrained vs random encoder, both frozen; ``--no-label-study``
   skips it).
Designed to finish in under 45 minutes on 2 CPU cores with the defaults.

Why one module (~480 lines): it is one script, the pipeline in order; each stage calls the job
modules (prepare, pretrain, finetune, evaluate, export) and only the glue lives here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import RunConfig, load_run_config
from .finetune import finetune
from .metrics import jsonable
from .night_trainer import embed_nights, night_presents, night_sides
from .pretrain import pretrain_multimodal, pretrain_unimodal
from .readout import fit_stage_readouts
from .selection import evaluate_embedded, predict_embedded, short_metrics
from .shards import load_nights, stage_mix
from .trainer import setup_threads

log = logging.getLogger(__name__)


class Timer:
    """Stage timings in seconds, in order."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, float]] = []
        self.t0 = time.monotonic()

    def run(self, name: str, fn, *a, **kw):
        t = time.monotonic()
        print(f"[make model] {name} ...", flush=True)
        out = fn(*a, **kw)
        dt = time.monotonic() - t
        self.stages.append((name, dt))
        print(f"[make model] {name}: {dt:.1f} s (total {time.monotonic() - self.t0:.0f} s)", flush=True)
        return out

    def table(self) -> str:
        total = sum(s for _, s in self.stages)
        lines = [f"{'stage':<34}{'seconds':>10}{'share':>8}"]
        lines += [f"{n:<34}{s:>10.1f}{100 * s / max(total, 1e-9):>7.1f}%" for n, s in self.stages]
        lines.append(f"{'total':<34}{total:>10.1f}{'':>8}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------- data
#: A late-started recording begins this many hours into the night, at least (at most half of it).
LATE_START_MIN_H = 1 / 6


def _night_file(s: int, k: int, skip_h: float) -> str:
    """``synth-s<S>-n<K>.edf``; ``-n<K>late`` for a recording started mid-night."""
    return f"synth-s{s:03d}-n{k}{'late' if skip_h else ''}.edf"


def _synth_one(job: tuple[int, int, float, float, str, int, bool, dict[str, float]]) -> str:
    from dataclasses import replace

    from synthsleep.psg.synthetic import SubjectParams, synthesize_night, write_night

    s, k, hours, skip_h, out, seed, randomize, pinned = job
    subj = replace(SubjectParams.draw(np.random.default_rng([seed, s, 0x5B]), None, randomize=randomize), **pinned)
    night = synthesize_night(seed=seed * 100_000 + s * 100 + k, hours=hours + skip_h, subject=subj)
    if skip_h:
        night = night.starting_at(int(skip_h * 3600 // 30))
    path = Path(out) / _night_file(s, k, skip_h)
    write_night(night, path)
    return str(path)


def synthesise(out: Path, subjects: int, two_night_subjects: int, hours: float, seed: int,
               workers: int, randomize: bool = False, late_start: float = 0.0,
               pinned: dict[str, float] | None = None) -> int:
    """EDF+ nights ``synth-s<S>-n<K>.edf``; returns the number written (existing files kept).

    Args:
        randomize: subjects with domain randomisation (``SubjectParams.draw``).
        late_start: fraction of the nights recorded from a random point of the night (10 min to
            half of it) instead of lights-off, still ``hours`` long: the recording, and so the
            causal normaliser, starts in whatever stage the sleeper is in, as a monitor switched
            on mid-night or a real excerpt does (``-n<K>late.edf``).
        pinned: subject fields set to these values after the draw (``--subject FIELD=VALUE``),
            e.g. ``delta_hi_hz=2`` to keep a domain field at its unrandomised value.
    """
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for s in range(subjects):
        for k in range(2 if s < two_night_subjects else 1):
            rng = np.random.default_rng([seed, s, k, 0x1A7E])
            skip_h = float(rng.uniform(LATE_START_MIN_H, hours / 2)) if rng.random() < late_start else 0.0
            jobs.append((s, k, hours, skip_h, str(out), seed, randomize, dict(pinned or {})))
    todo = [j for j in jobs if not (out / _night_file(j[0], j[1], j[3])).exists()]
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_synth_one, todo))
    else:
        for j in todo:
            _synth_one(j)
    return len(jobs)


# ---------------------------------------------------------------------------------- evaluation
#: Reduced sensor sets reported on the test split (name, modalities).
REPORTED_MONTAGES = (("eeg", ("eeg",)), ("eeg+eog+emg", ("eeg", "eog", "emg")),
                     ("no respiratory", ("eeg", "eog", "emg", "ecg")))


def evaluate_test(model_dir: Path, shards: Path, window: int, reduced: bool = True) -> dict[str, Any]:
    """Both evaluation modes on the TEST split with the fine-tuned PyTorch model."""
    from synthsleep.model import load_model

    model, cfg = load_model(model_dir / "model")
    test = load_nights(shards, "test", cfg.modalities)
    emb = embed_nights(model, test, torch.device("cpu"), desc="embed test")
    presents = night_presents(test)
    res = {"carried": evaluate_embedded(model, emb, test, "carried", presents=presents),
           f"window{window}": evaluate_embedded(model, emb, test, "window", window, presents=presents)}
    # the same test nights with fewer sensors (state carried): how gracefully staging degrades
    from .augment import montage_mask

    res["reduced_montages"] = {}
    for name, montage in REPORTED_MONTAGES if reduced else ():
        keep = montage_mask(montage, tuple(cfg.modalities))
        emb_r = embed_nights(model, test, torch.device("cpu"), desc=f"embed test {name}", keep=keep)
        res["reduced_montages"][name] = evaluate_embedded(model, emb_r, test, "carried",
                                                          presents=night_presents(test, keep))
    res["test_nights"] = len(test)
    res["test_subjects"] = len({n.subject for n in test})
    res["test_epochs"] = int(sum(len(n) for n in test))
    return res


def fold_thresholds(model_dir: Path, thresholds: dict[str, float]) -> None:
    """Shift the apnea/hypopnea output biases by -logit(threshold): afterwards p >= 0.5 holds
    exactly where the old p >= threshold did, so every consumer can use 0.5."""
    from synthsleep.model import load_model, save_model
    from synthsleep.model.io import load_config_json

    model, cfg = load_model(model_dir / "model")
    _, meta = load_config_json(model_dir / "model")
    with torch.no_grad():
        for name in ("apnea", "hypopnea"):
            t = min(max(float(thresholds[name]), 1e-4), 1 - 1e-4)
            getattr(model.heads, name)[-1].bias -= float(np.log(t / (1 - t)))
    meta = dict(meta)
    meta["thresholds_folded"] = thresholds
    meta["thresholds"] = {"apnea": 0.5, "hypopnea": 0.5}
    save_model(model, cfg, model_dir / "model", metadata=meta)


def stage_confidence_threshold(model_dir: Path, shards: Path, max_unknown: float = 0.05) -> dict[str, Any]:
    """Below which top stage probability an epoch's stage is reported ``unknown``, chosen on the
    VALIDATION nights (full montage and EEG only, state carried): the largest threshold on a
    0.05 grid below which the model is wrong more often than right, as long as at most
    ``max_unknown`` of the validation epochs fall below it (0.0 when no such threshold)."""
    from synthsleep.model import load_model

    from .augment import montage_mask

    model, cfg = load_model(model_dir / "model")
    val = load_nights(shards, "val", cfg.modalities)
    conf, right = [], []
    for keep in (None, montage_mask(("eeg",), tuple(cfg.modalities))):
        embeds = embed_nights(model, val, torch.device("cpu"), desc="embed val", keep=keep)
        presents = night_presents(val, keep)
        sides = night_sides(val, [p.numpy() for p in presents], tuple(cfg.modalities))
        for n, e, pr, sd in zip(val, embeds, presents, sides):
            st, _, _ = predict_embedded(model, e, "carried", present=pr, side=sd)
            m = n.stage >= 0
            conf.append(st.max(-1)[m])
            right.append(st.argmax(-1)[m] == n.stage[m])
    c, ok = np.concatenate(conf), np.concatenate(right)
    t = 0.0
    for cand in np.arange(0.25, 0.701, 0.05):
        below = c < cand
        if below.mean() > max_unknown:
            break
        if below.any() and ok[below].mean() < 0.5:
            t = round(float(cand), 2)
    below = c < t
    return {"stage_confidence": t, "val_unknown_fraction": float(below.mean()),
            "val_accuracy_below": float(ok[below].mean()) if below.any() else None,
            "val_accuracy_above": float(ok[~below].mean()), "val_epochs": int(c.size)}


def export_and_check(model_dir: Path, out: Path, shards: Path, provenance: dict[str, Any],
                     window: int, thresholds: dict[str, float]) -> dict[str, Any]:
    """ONNX export + evaluation of the artifact through ONNX Runtime (its evaluation report)."""
    from synthsleep.export.onnx_export import export_step
    from synthsleep.model import load_model

    from .evaluate import evaluate_model
    from .prepare import load_manifest

    model, cfg = load_model(model_dir / "model")
    params = load_manifest(shards).params
    export_step(model, cfg, out / "model.onnx", provenance, params, thresholds)
    return evaluate_model(out / "model.onnx", shards, out / "eval_onnx", "test", window)


# ---------------------------------------------------------------------------------- the pipeline
def _finetune_cfg(rc: RunConfig, budget_scale: float) -> RunConfig:
    """A copy of ``rc`` with every time budget multiplied by ``budget_scale``."""
    rc = rc.copy()
    rc.pretrain_unimodal.max_minutes *= budget_scale
    rc.pretrain_multimodal.max_minutes *= budget_scale
    rc.finetune.window_max_minutes *= budget_scale
    rc.finetune.night_max_minutes *= budget_scale
    return rc


def make_model(out: Path, work: Path, rc: RunConfig, subjects: int, two_night: int, hours: float,
               workers: int, label_study: bool, epoch_norm: tuple[str, ...] | None = None,
               randomize: bool = False, late_start: float = 0.0,
               pinned: dict[str, float] | None = None) -> dict[str, Any]:
    timer = Timer()
    seed = rc.seed
    nights_dir, shards = work / "nights", work / "shards"
    n_nights = timer.run("synthesise nights", synthesise, nights_dir, subjects, two_night, hours, seed, workers,
                         randomize, late_start, pinned)

    from synthsleep.psg.preprocess import PreprocessParams

    from .prepare import prepare

    params = PreprocessParams(epoch_norm=epoch_norm or ())
    man = timer.run("prepare shards", prepare, nights_dir, shards, params, workers=workers, seed=seed)
    summary = man.extra.get("summary", {})
    print(f"[make model] data: {n_nights} nights, {summary.get('epochs')} epochs, subjects "
          f"{summary.get('subjects')}", flush=True)

    from synthsleep.model import load_config

    cfg = load_config(rc.model, rc.model_overrides or None)
    # freeze the model config for the whole run (the shipped TOML may change meanwhile)
    snap = work / "model_config.toml"
    snap.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in cfg.to_dict().items()))
    rc = rc.copy()
    rc.model, rc.model_overrides = str(snap), {}
    uni = {}
    for m in cfg.modalities:
        uni[m] = timer.run(f"pretrain unimodal {m}", pretrain_unimodal, shards, work / "unimodal" / m, rc, m)
    mm = timer.run("pretrain multimodal", pretrain_multimodal, shards, work / "multimodal", rc, work / "unimodal")
    ft = timer.run("fine-tune all tasks (windows + nights)", finetune, shards, work / "finetune", rc, "all",
                   1.0, work / "multimodal")
    thresholds = ft["thresholds"]
    timer.run("fold val thresholds into heads", fold_thresholds, work / "finetune", thresholds)
    readout = None
    if cfg.eeg_stage_head:
        readout = timer.run("fit stage readouts (EEG alone, EEG + more)", fit_stage_readouts,
                            work / "finetune", shards)
    window = rc.finetune.eval_window
    confidence = timer.run("stage confidence threshold on val", stage_confidence_threshold,
                           work / "finetune", shards)
    test = timer.run("evaluate test split (torch)", evaluate_test, work / "finetune", shards, window)

    out.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "model.json"):
        shutil.copyfile(work / "finetune" / name, out / name)
        os.chmod(out / name, 0o644)
    fingerprint = {f["night"]: f["sha256"] for f in man.ok_files}
    provenance = {
        "data": "synthetic nights (synthsleep.psg.synthetic)", "nights": n_nights,
        "domain_randomisation": randomize, "late_start": late_start, "subject_fields_pinned": dict(pinned or {}),
        "data_fingerprint": _fingerprint(fingerprint), "split": man.split,
        "run_config": rc.to_dict(), "metrics": {"test_carried": short_metrics(test["carried"]),
                                                 f"test_window{window}": short_metrics(test[f"window{window}"]),
                                                 "val": short_metrics(ft["val"])},
        "thresholds_folded": thresholds, "stage_confidence": confidence, "stage_readouts": readout,
        "train_stage_mix": stage_mix(shards, "train"),  # what synthsleep adapt balances to
    }
    onnx_rep = timer.run("export ONNX + evaluate artifact (ORT)", export_and_check, work / "finetune", out,
                         shards, provenance, window,
                         {"apnea": 0.5, "hypopnea": 0.5, "stage_confidence": confidence["stage_confidence"]})

    study = None
    if label_study:
        study = timer.run("label study (1 % labels)", run_label_study, shards, work, rc, window)

    report = {
        "test": test, "val": ft["val"], "onnx_eval": _onnx_short(onnx_rep),
        "pretrain": {"unimodal": uni, "multimodal": mm},
        "finetune": {k: v for k, v in ft.items() if k not in ("val",)},
        "label_study": study, "data": summary, "timings_s": dict(timer.stages),
        "threads": torch.get_num_threads(), "provenance": provenance,
    }
    (out / "eval_report.json").write_text(json.dumps(jsonable(report), indent=1))
    _plots(work, out, test)
    print("\n" + timer.table())
    _print_metrics(test, window, onnx_rep)
    return report


def _fingerprint(d: dict[str, str]) -> str:
    import hashlib

    h = hashlib.sha256()
    for k in sorted(d):
        h.update(f"{k}:{d[k]}\n".encode())
    return h.hexdigest()


def _onnx_short(rep: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of ``evaluate_model``'s report, per mode."""
    out = {}
    for mode in ("carried", "windows"):
        r = rep[mode]
        out[mode] = {"accuracy": r["staging"].get("accuracy"), "macro_f1": r["staging"].get("macro_f1"),
                     "kappa": r["staging"].get("kappa"), "apnea_f1": r["apnea"].get("f1"),
                     "hypopnea_f1": r["hypopnea"].get("f1"), "ahi_mae": r["ahi"].get("mae")}
    return out


def run_label_study(shards: Path, work: Path, rc: RunConfig, window: int) -> dict[str, Any]:
    """1 % of the training SUBJECTS keep their labels (at least one), for every task: the
    pretrained encoder vs a randomly initialised one, both frozen (cached embeddings) with the
    whole-night temporal model + heads trained on the labelled nights (phase 1 off, so the
    comparison isolates the representation and costs minutes). Validation-selected, then
    scored on the TEST split with the state carried all night."""
    rc = rc.copy()
    rc.finetune.window_steps = 0
    rc.finetune.night_max_minutes = min(rc.finetune.night_max_minutes, 1.5)
    res: dict[str, Any] = {"labels": 0.01, "protocol": "frozen encoder, whole-night TBPTT only"}
    for name, init in (("pretrained", work / "multimodal"), ("scratch", None)):
        d = work / f"label1pct_{name}"
        s = finetune(shards, d, rc, "all", 0.01, init)
        fold_thresholds(d, s["thresholds"])
        t = evaluate_test(d, shards, window, reduced=False)
        res[name] = {"labelled_subjects": s["labelled_train_subjects"], "val": short_metrics(s["val"]),
                     "test_carried": short_metrics(t["carried"])}
    return res


def _read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def _plots(work: Path, out: Path, test: dict[str, Any]) -> None:
    """Training curves: self-supervised pretraining losses (NeuroNet per modality, the fusion),
    the whole-night phase's loss and its validation scores per pass."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _read_rows(work / "finetune" / "night" / "metrics.jsonl")
    val = [r for r in rows if r.get("phase") == "val" and r.get("val_score") is not None]
    tr = [r for r in rows if r.get("phase") == "night"]
    fig, ax = plt.subplots(1, 3, figsize=(15, 3.8))
    for d in sorted((work / "unimodal").glob("*")) + [work / "multimodal"]:
        pts = [(r["step"], r["loss"]) for r in _read_rows(d / "metrics.jsonl") if "loss" in r and "step" in r]
        if pts:
            ax[0].plot(*zip(*pts), label=d.name, lw=2.5 if d.name == "multimodal" else 1.0)
    ax[0].set(title="self-supervised pretraining loss", xlabel="step", ylabel="loss", yscale="log")
    ax[0].legend(fontsize=7, ncol=2)
    if tr:
        ax[1].plot([r["step"] for r in tr], [r["loss"] for r in tr])
    ax[1].set(title="whole-night TBPTT training loss", xlabel="step", ylabel="loss")
    if val:
        for k in ("val_acc", "val_kappa", "val_apnea_f1", "val_hypopnea_f1"):
            ax[2].plot([r["pass"] for r in val], [r[k] for r in val], label=k[4:])
        ax[2].legend()
    ax[2].set(title="validation (state carried all night)", xlabel="pass")
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=100)
    plt.close(fig)


def _print_metrics(test: dict[str, Any], window: int, onnx_rep: dict[str, Any]) -> None:
    print(f"\nheld-out TEST subjects: {test['test_subjects']} ({test['test_nights']} nights, "
          f"{test['test_epochs']} epochs)")
    print(f"{'mode':<28}{'acc':>7}{'mF1':>7}{'kappa':>7}{'apF1':>7}{'hyF1':>7}{'AHI MAE':>9}")
    rows = [("torch, state carried", short_metrics(test["carried"])),
            (f"torch, {window}-ep windows", short_metrics(test[f"window{window}"]))]
    rows += [(f"torch, carried, {k} only" if k != "no respiratory" else "torch, carried, no resp.",
              short_metrics(v)) for k, v in test.get("reduced_montages", {}).items()]
    on = _onnx_short(onnx_rep)
    rows += [("ONNX, state carried", on["carried"]), (f"ONNX, {window}-ep windows", on["windows"])]
    for name, m in rows:
        f = lambda v: f"{v:.3f}" if isinstance(v, float) else "  -  "  # noqa: E731
        print(f"{name:<28}{f(m['accuracy']):>7}{f(m['macro_f1']):>7}{f(m['kappa']):>7}"
              f"{f(m['apnea_f1']):>7}{f(m['hypopnea_f1']):>7}{f(m['ahi_mae']):>9}")


def parse_pinned(items: list[str]) -> dict[str, float]:
    """``["delta_hi_hz=2", ...]`` -> {field: value}; an unknown field or a bad value is a
    ``ValueError`` naming it."""
    from dataclasses import fields

    from synthsleep.psg.synthetic import SubjectParams

    known = {f.name for f in fields(SubjectParams)}
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name.strip() not in known:
            raise ValueError(f"--subject {item!r}: want FIELD=VALUE with FIELD one of {', '.join(sorted(known))}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--subject {item!r}: {value!r} is not a number") from None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m synthsleep.offline_training.make_model",
                                 description="synthesise, prepare, pretrain, fine-tune, evaluate and "
                                             "export the shipped model")
    ap.add_argument("--out", default="synthsleep/assets", help="artifact folder (default synthsleep/assets)")
    ap.add_argument("--work", default="runs/make_model", help="working folder (data, runs)")
    ap.add_argument("--config", default="train_small", help="run config (default train_small)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--subjects", type=int, default=24, help="synthetic subjects (default 24)")
    ap.add_argument("--two-night-subjects", type=int, default=4,
                    help="how many of them get a second night (default 4)")
    # whole nights: 3-h nights are a third N3 and 3 %% REM (real nights ~15-20 %% / 20-25 %%)
    ap.add_argument("--hours", type=float, default=7.0, help="hours per night (default 7)")
    ap.add_argument("--workers", type=int, default=2, help="processes for synthesis / prepare")
    ap.add_argument("--epoch-norm", default=None, metavar="MODS",
                    help="modalities normalised per epoch, comma-separated (e.g. eeg,eog,ecg), or "
                         "'none' for running statistics everywhere (the default, as the bundled model)")
    ap.add_argument("--domain-randomisation", dest="randomize", action="store_true",
                    help="subjects with domain randomisation (1/f slope and knee, scalp muscle, eye "
                         "leak, native rates, polarity, ECG morphology and heart-rate coupling, EEG in "
                         "the EOG; SubjectParams.draw): the bundled model (make model)")
    ap.add_argument("--late-start", type=float, default=0.0, metavar="P",
                    help="fraction of nights recorded from a random point of the night instead of "
                         "lights-off (the normaliser then starts in any stage; default 0)")
    ap.add_argument("--subject", dest="pinned", action="append", default=[], metavar="FIELD=VALUE",
                    help="set this SubjectParams field for every synthetic subject (repeatable), e.g. "
                         "delta_hi_hz=2 keeps slow waves below 2 Hz as the bundled model's recipe does")
    ap.add_argument("--budget-scale", type=float, default=1.0,
                    help="multiply every time budget of the run config (default 1)")
    ap.add_argument("--no-label-study", dest="label_study", action="store_false",
                    help="skip the 1 %%-labels comparison (pretrained vs from scratch, ~4 min)")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rc = _finetune_cfg(load_run_config(a.config, a.overrides), a.budget_scale)
    setup_threads(rc.threads or min(2, os.cpu_count() or 1))
    try:
        pinned = parse_pinned(a.pinned)
    except ValueError as e:
        print(f"make model: error: {e}", file=sys.stderr)
        return 2
    epoch_norm = () if a.epoch_norm in (None, "none") else tuple(m.strip() for m in a.epoch_norm.split(",") if m.strip())
    try:
        make_model(Path(a.out), Path(a.work), rc, a.subjects, a.two_night_subjects, a.hours, a.workers,
                   a.label_study, epoch_norm, a.randomize, a.late_start, pinned)
    except (ValueError, FileNotFoundError) as e:
        print(f"make model: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
