"""How models do on the only real recordings here (DREAMS, expert-scored), side by side.

    python benchmarks/bench_real_transfer.py [--model A.onnx --model B.onnx ...] [--adapt] [--synthetic]
                                             [--no-stage-filter] [--gain 0.5 --gain 2]

For each model (default: the bundled one), every number from ``synthsleep score``'s own path
(``score_recording``: same preprocessing, artifact and state sequence as the monitor):

1. ``excerpt3.edf``: 30 min of real PSG (all channels at 50 Hz, so EMG is flagged LOW_RATE)
   with every modality the file has, and with its EEG (C3-A1) only.
2. ``excerpt1..8.txt``: 30 min of one real EEG channel each (50-200 Hz), written as EDF and
   scored EEG-only, against the expert hypnograms (5-s scoring -> 30-s epochs).
3. ``--synthetic``: held-out synthetic nights of 1, 4 and 8 hours (``--nights-per-length``
   subjects each, drawn from a seed no training run uses), from the plain and from the
   domain-randomised generator, full montage and EEG only (mean accuracy over the nights); and
   4-h recordings of each generator started 1-3 h into the night (``started mid-night``: the
   recording starts in sleep, as the real excerpts do). The mean over all of these rows
   is printed last: it is the rule models are selected by (never DREAMS).
4. ``--adapt``: ``synthsleep adapt`` (``--adapt-method``: plain, the default, or balanced)
   leave-one-excerpt-out: the model is adapted on the EEG of the 7 other excerpts (no label is
   read), then the 8th is scored; excerpt3.edf (all channels) is scored with the model adapted
   on the 7 excerpts other than excerpt3. The test excerpt is
   never in its own adaptation set.

5. ``--gain G`` (repeatable): the EEG-only sets again with the EEG multiplied by ``G`` before
   scoring (an amplifier's calibration, a derivation that reads the same brain at another
   amplitude: Cz-A1 against C3-A2, a child against an adult); the synthetic EEG-only rows too
   with ``--synthetic``. These rows are a robustness check and stay out of the selection rule.

First, a reference that reads no signal: every epoch called N2 (kappa 0). The excerpts are
mostly N2 (the 8: 288 of 480 scored epochs), so accuracy alone flatters a model that leans to N2:
read a model's accuracy against this row, and its kappa against 0.

After the 8 EEG-only excerpts, their pooled confusion matrix (reference rows, stages picked
columns, then ``unknown``) says where the errors are.

Stages are picked after the causal stage filter (``psg.stage_filter``), as ``score`` and the
monitor pick them; ``--no-stage-filter``: the model's most probable stage (the ablation).

Accuracy counts an epoch left ``unknown`` (no usable signal, or below the artifact's stage
confidence) as wrong; "staged" is the fraction of epochs that got a stage. The DREAMS labels are
used for scoring only. Needs ../shared/data/real/dreams (DREAMS licence:
not copied into this repository). Prints one table, one row per model and set.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from synthsleep.psg.clinical import confusion_matrix  # noqa: E402
from synthsleep.psg.epoch import STAGES  # noqa: E402

DREAMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "dreams"
TEXT_RATES = {1: 100.0, 3: 50.0}  # the others are 200 Hz (README of the data folder)
GAIN_TAG = ", EEG x"  # in the name of every ``--gain`` row: those stay out of the selection rule
SYNTH_SEED = 9999  # subjects no training run draws (make_model draws seed 0)


def read_excerpt(dreams: Path, k: int) -> tuple[str, float, np.ndarray]:
    """Single-EEG text excerpt ``k`` (1-8): (channel label, rate Hz, samples in uV)."""
    lines = (dreams / f"excerpt{k}.txt").read_text().split("\n")
    return lines[0].strip().strip("[]"), TEXT_RATES.get(k, 200.0), np.array([float(v) for v in lines[1:] if v.strip()])


def read_excerpts(dreams: Path) -> list[tuple[str, float, np.ndarray, np.ndarray]]:
    """The 8 single-EEG text excerpts: (channel label, rate Hz, samples in uV, expert stage per
    30-s epoch) each."""
    from synthsleep.psg.annotations import epoch_labels, load_scoring

    out = []
    for k in range(1, 9):
        label, fs, x = read_excerpt(dreams, k)
        stages, _, _ = epoch_labels(load_scoring(dreams / f"Hypnogram_excerpt{k}.txt"), int(len(x) / fs // 30))
        out.append((label, fs, x, stages))
    return out


def excerpt_edfs(dreams: Path, work: Path) -> list[tuple[Path, np.ndarray]]:
    """The 8 single-EEG text excerpts written as EDF, with their expert stages per 30-s epoch."""
    from synthsleep.psg.recording import Signal, write_edf

    return [(write_edf(work / f"excerpt{k}.edf", [Signal(label, fs, x)]), stages)
            for k, (label, fs, x, stages) in enumerate(read_excerpts(dreams), start=1)]


@dataclass
class Scored:
    """One recording scored against its reference: ``accuracy`` counts an epoch the model left
    ``unknown`` as wrong (so abstaining never raises it); ``kappa`` is over the scored epochs;
    ``coverage`` is the fraction of reference epochs that got a stage."""

    accuracy: float
    kappa: float
    coverage: float
    #: int [5, 6]: reference stage (rows) against the stage picked (columns), last column ``unknown``
    confusion: np.ndarray


def agreement(model: Path, edf: Path, truth: np.ndarray, stage_filter: bool = True) -> Scored:
    from synthsleep.export.runtime import StepRuntime
    from synthsleep.report import stage_agreement
    from synthsleep.score import score_recording

    scored, _, _ = score_recording(edf, StepRuntime(model, threads=1), stage_filter=stage_filter)
    ours = np.array([s.stage for s in scored], int)
    n = min(len(ours), len(truth))
    ours, ref = ours[:n], np.asarray(truth[:n], int)
    keep = ref >= 0
    a = stage_agreement(ours, ref)
    # ``unknown`` (-1) as a sixth predicted class, so the pooled table shows the abstentions too
    confusion = confusion_matrix(ref, np.where(ours >= 0, ours, len(STAGES)), len(STAGES) + 1)[:len(STAGES)]
    return Scored(accuracy(ours, ref), a.kappa if a else float("nan"), float((ours[keep] >= 0).mean()), confusion)


def print_confusion(confusion: np.ndarray) -> None:
    """Print a pooled [5, 6] confusion matrix (``Scored.confusion``) as a small table."""
    print("   reference \\ picked " + " ".join(f"{s:>5s}" for s in STAGES + ("unkn",)) + "   recall")
    for stage, row in zip(STAGES, confusion):
        recall = row[STAGES.index(stage)] / row.sum() if row.sum() else float("nan")
        print(f"   {stage:20s}" + " ".join(f"{v:5d}" for v in row) + f"   {recall:6.2f}")


def with_eeg_gain(edf: Path, gain: float, out: Path) -> Path:
    """A copy of a single-EEG EDF with the signal multiplied by ``gain``."""
    from synthsleep.psg.recording import Signal, open_recording, write_edf

    with open_recording(edf) as rec:
        ch = rec.channels[0]
        return write_edf(out, [Signal(ch.label, ch.rate, rec.read(ch.label) * gain)])


def display_names(models: list[Path]) -> list[str]:
    """Each model's name in the tables: the last two parts of its path (``assets/model.onnx``), or
    as many more as it takes to tell the models apart (two builds' ``assets/model.onnx`` would
    otherwise share one selection-rule line)."""
    for depth in range(2, max(len(m.parts) for m in models) + 1):
        names = ["/".join(m.parts[-depth:]) for m in models]
        if len(set(names)) == len(names):
            return names
    return [str(m) for m in models]


def accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of the scored reference epochs (truth >= 0) where ``pred`` agrees, over the
    length both cover; a prediction of -1 (``unknown``) counts as wrong."""
    n = min(len(pred), len(truth))
    ref = np.asarray(truth[:n], int)
    keep = ref >= 0
    return float((np.asarray(pred[:n])[keep] == ref[keep]).mean())


def synthetic_nights(work: Path, randomize: bool, per_length: int, late: bool = False
                     ) -> list[tuple[str, list[tuple[Path, Path, np.ndarray]]]]:
    """Held-out nights of 1, 4 and 8 h, ``per_length`` subjects each (plain or domain-randomised
    generator): (name, [(full-montage EDF, EEG-only EDF, stages), ...]) per length.

    ``late``: 4-h recordings started 1-3 h into the night instead (the normaliser and the state
    start in whatever stage the sleeper is in, as in a real excerpt or a mid-night monitor start).
    """
    from synthsleep.psg.recording import Signal, write_edf
    from synthsleep.psg.synthetic import SubjectParams, synthesize_night, write_night

    kind = "randomised" if randomize else "plain"
    out = []
    for i, hours in enumerate((4.0,) if late else (1.0, 4.0, 8.0)):
        nights = []
        i_seed = 3 + i if late else i  # other subjects than the lights-off nights
        for j in range(per_length):
            subj = SubjectParams.draw(np.random.default_rng([SYNTH_SEED, i_seed, j]), None, randomize=randomize)
            skip = int(np.random.default_rng([SYNTH_SEED, i_seed, j, 1]).integers(120, 361)) if late else 0
            night = synthesize_night(seed=SYNTH_SEED * 100 + 10 * i_seed + j, hours=hours + skip / 120, subject=subj)
            night = night.starting_at(skip) if skip else night
            name = f"synth-{kind}-{hours:g}h-{j}{'-late' if late else ''}"
            full = write_night(night, work / f"{name}.edf")
            eeg = night.signal("EEG C4-M1")
            only = write_edf(work / f"{name}-eeg.edf", [Signal(eeg.label, eeg.rate, np.asarray(eeg.data))])
            nights.append((full, only, np.asarray(night.stages)))
        out.append((f"synthetic {kind} {hours:g} h{' started mid-night' if late else ''} (x{per_length})", nights))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=None, help="artifact(s) to compare (default: bundled)")
    ap.add_argument("--dreams", type=Path, default=DREAMS)
    ap.add_argument("--adapt", action="store_true", help="also adapt leave-one-excerpt-out (needs weights beside)")
    ap.add_argument("--adapt-method", choices=("plain", "balanced"), default="plain",
                    help="synthsleep adapt --method (default plain)")
    ap.add_argument("--synthetic", action="store_true", help="also held-out synthetic nights of 1/4/8 h, "
                    "plain and domain-randomised generator")
    ap.add_argument("--nights-per-length", type=int, default=2, help="synthetic subjects per length (default 2)")
    ap.add_argument("--no-stage-filter", dest="stage_filter", action="store_false",
                    help="pick the model's most probable stage, without the causal stage filter")
    ap.add_argument("--gain", type=float, action="append", default=[],
                    help="also score the EEG-only sets with the EEG multiplied by this (repeatable)")
    args = ap.parse_args(argv)
    if not (args.dreams / "excerpt3.edf").exists():
        print(f"no DREAMS data at {args.dreams}: nothing to measure")
        return 0
    from synthsleep.bed_session import resolve_model_path
    from synthsleep.offline_training.adapt import adapt
    from synthsleep.psg.annotations import epoch_labels, find_scoring_for, load_scoring
    from synthsleep.psg.recording import Signal, open_recording, write_edf

    work = Path(tempfile.mkdtemp(prefix="bench_real_"))
    edf3 = args.dreams / "excerpt3.edf"
    rec = open_recording(edf3)
    truth3, _, _ = epoch_labels(load_scoring(find_scoring_for(edf3), recording=rec, n_epochs=60), 60)
    eeg3 = write_edf(work / "excerpt3-eeg.edf", [Signal("C3-A1", 50.0, rec.read("C3-A1"))])
    excerpts = excerpt_edfs(args.dreams, work)
    synth = [s for late in (False, True) for rnd in (False, True)
             for s in synthetic_nights(work, rnd, args.nights_per_length, late)] if args.synthetic else []
    models = [Path(resolve_model_path(m)) for m in (args.model or [None])]
    rows: list[tuple[str, str, float, float, float]] = []
    n2 = STAGES.index("N2")
    print(f"{'every epoch N2 (reference)':28s} {'excerpt3.edf':52s} accuracy {accuracy(np.full(len(truth3), n2), truth3):.3f}"
          "  kappa 0.000")
    print(f"{'every epoch N2 (reference)':28s} {'8 EEG-only excerpts (mean)':52s} accuracy "
          f"{np.mean([accuracy(np.full(len(st), n2), st) for _, st in excerpts]):.3f}  kappa 0.000", flush=True)

    def add(model_name: str, what: str, agreements: list[Scored]) -> None:
        acc = float(np.mean([a.accuracy for a in agreements]))
        kap = float(np.nanmean([a.kappa for a in agreements]))
        cov = float(np.mean([a.coverage for a in agreements]))
        rows.append((model_name, what, acc, kap, cov))
        print(f"{model_name:28s} {what:52s} accuracy {acc:.3f}  kappa {kap:.3f}  staged {cov:.2f}", flush=True)

    sf = args.stage_filter
    for model, name in zip(models, display_names(models)):
        name += "" if sf else " (no filter)"
        add(name, "excerpt3.edf, all channels", [agreement(model, edf3, truth3, sf)])
        add(name, "excerpt3.edf, EEG only", [agreement(model, eeg3, truth3, sf)])
        per = [agreement(model, p, st, sf) for p, st in excerpts]
        print("   per excerpt: " + " ".join(f"{a.accuracy:.2f}" for a in per))
        add(name, "8 EEG-only excerpts (mean)", per)
        print_confusion(sum(a.confusion for a in per))
        for g in args.gain:
            add(name, f"8 EEG-only excerpts{GAIN_TAG}{g:g}",
                [agreement(model, with_eeg_gain(p, g, work / f"gain-{p.name}"), st, sf) for p, st in excerpts])
        for label, nights in synth:
            add(name, f"{label}, full montage", [agreement(model, full, st, sf) for full, _, st in nights])
            add(name, f"{label}, EEG only", [agreement(model, only, st, sf) for _, only, st in nights])
            for g in args.gain:
                add(name, f"{label}, EEG only{GAIN_TAG}{g:g}",
                    [agreement(model, with_eeg_gain(only, g, work / f"gain-{only.name}"), st, sf)
                     for _, only, st in nights])
        if args.adapt:
            per_a = []
            for k, (path, st) in enumerate(excerpts):
                others = [p for j, (p, _) in enumerate(excerpts) if j != k]
                out = work / f"adapted-{model.stem}-loo{k + 1}.onnx"
                adapt(others, model, out, method=args.adapt_method)
                per_a.append(agreement(out, path, st, sf))
                if k == 2:  # the model adapted without excerpt3 also scores excerpt3.edf (all channels)
                    add(name, f"excerpt3.edf, all channels, adapted (LOO, {args.adapt_method})",
                        [agreement(out, edf3, truth3, sf)])
            print("   per excerpt, adapted: " + " ".join(f"{a.accuracy:.2f}" for a in per_a))
            add(name, f"8 EEG-only excerpts, adapted (LOO, {args.adapt_method}, mean)", per_a)
    print(f"\n{'model':28s} {'set':52s} {'accuracy':>8s} {'kappa':>7s} {'staged':>7s}")
    for m, w, a, k, c in rows:
        print(f"{m:28s} {w:52s} {a:8.3f} {k:7.3f} {c:7.2f}")
    if synth:
        print("\nselection rule: mean accuracy over the synthetic rows (lights-off rows only in brackets)")
        for model in dict.fromkeys(r[0] for r in rows):
            syn = [(w, a) for m, w, a, _, _ in rows if m == model and w.startswith("synthetic") and GAIN_TAG not in w]
            lights_off = [a for w, a in syn if "mid-night" not in w]
            print(f"{model:28s} {np.mean([a for _, a in syn]):.3f}  ({np.mean(lights_off):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
