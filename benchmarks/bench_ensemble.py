"""Would averaging several models help? Stage probabilities of N artifacts averaged per epoch.

    python benchmarks/bench_ensemble.py A.onnx B.onnx [C.onnx ...] [--dreams-only]

On the 8 real single-EEG DREAMS excerpts and on held-out randomised synthetic 4-h nights (from
lights-off and started mid-night, full montage and EEG only; the sets of
``bench_real_transfer.py --synthetic``), prints each member's accuracy as ``synthsleep score``
gives it (an ``unknown`` epoch counts as wrong), each member's accuracy by the argmax of its stage
probabilities (no abstention, comparable with the ensemble's), and the argmax of the members'
mean probabilities. Every model runs ``score_recording``'s own path. DREAMS labels are used for
scoring only.

Then, per set, how the members' errors overlap (stages as ``score`` picks them, ``unknown`` is
wrong): the share of epochs on which every member picks the same stage, on which every member is
wrong, and on which every member is wrong *with the same stage*. Builds of one recipe with other
seeds that are all wrong alike on an epoch share a bias of their training data (the generator's);
what only some of them get wrong is the spread between builds.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from bench_real_transfer import DREAMS, accuracy, excerpt_edfs, synthetic_nights  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--dreams", type=Path, default=DREAMS)
    ap.add_argument("--dreams-only", action="store_true", help="skip the synthetic sets")
    args = ap.parse_args(argv)
    if not (args.dreams / "excerpt1.txt").exists():
        print(f"no DREAMS data at {args.dreams}: nothing to measure")
        return 0
    from synthsleep.export.runtime import StepRuntime
    from synthsleep.score import score_recording

    work = Path(tempfile.mkdtemp(prefix="bench_ensemble_"))
    sets = [("8 EEG-only excerpts", excerpt_edfs(args.dreams, work))]
    synthetic = [] if args.dreams_only else synthetic_nights(work, True, 2)[1:2] + synthetic_nights(work, True, 2, late=True)
    for name, nights in synthetic:
        sets += [(f"{name}, full montage", [(f, st) for f, _, st in nights]),
                 (f"{name}, EEG only", [(e, st) for _, e, st in nights])]
    print(f"{'set':58s} {'members (score)':>24s} | {'members (argmax)':>24s} | ensemble | "
          "same stage, all wrong, all wrong alike")
    for name, recordings in sets:
        scored, argmax, ensemble = [[] for _ in args.models], [[] for _ in args.models], []
        picked, truths = [], []  # per recording: int [members, epochs], int [epochs]
        for path, truth in recordings:
            probs, stages = [], []
            for i, model in enumerate(args.models):
                epochs, _, _ = score_recording(path, StepRuntime(model, threads=1))
                p = np.array([e.stage_prob for e in epochs])
                stages.append(np.array([e.stage for e in epochs], int))
                scored[i].append(accuracy(stages[-1], truth))
                argmax[i].append(accuracy(p.argmax(1), truth))
                probs.append(p)
            ensemble.append(accuracy(np.mean(probs, 0).argmax(1), truth))
            n = min(len(truth), *(len(s) for s in stages))
            picked.append(np.stack([s[:n] for s in stages]))
            truths.append(np.asarray(truth[:n], int))
        overlap = error_overlap(np.concatenate(picked, 1), np.concatenate(truths))
        cells = lambda a: " ".join(f"{np.mean(x):.3f}" for x in a)  # noqa: E731
        print(f"{name:58s} {cells(scored):>24s} | {cells(argmax):>24s} | {np.mean(ensemble):.3f}    | "
              + ", ".join(f"{v:.3f}" for v in overlap), flush=True)
    return 0


def error_overlap(picked: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """How several models' stages agree on the scored epochs (``truth >= 0``).

    picked: int [models, epochs], the stage each model picked (-1 = ``unknown``, which is wrong);
    truth: int [epochs]. Returns the shares of those epochs on which every model picks the same
    stage, every model is wrong, and every model is wrong with the same stage.
    """
    keep = truth >= 0
    picked, truth = picked[:, keep], truth[keep]
    same = (picked == picked[0]).all(0)
    wrong = (picked != truth).all(0)
    return float(same.mean()), float(wrong.mean()), float((wrong & same).mean())


if __name__ == "__main__":
    raise SystemExit(main())
