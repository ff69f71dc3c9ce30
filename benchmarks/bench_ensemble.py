"""Would averaging several models help? Stage probabilities of N artifacts averaged per epoch.

    python benchmarks/bench_ensemble.py A.onnx B.onnx [C.onnx ...]

On the 8 real single-EEG DREAMS excerpts and on held-out randomised synthetic 4-h nights (from
lights-off and started mid-night, full montage and EEG only; the sets of
``bench_real_transfer.py --synthetic``), prints each member's accuracy as ``synthsleep score``
gives it (an ``unknown`` epoch counts as wrong), each member's accuracy by the argmax of its stage
probabilities (no abstention, comparable with the ensemble's), and the argmax of the members'
mean probabilities. Every model runs ``score_recording``'s own path. DREAMS labels are used for
scoring only.
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
    args = ap.parse_args(argv)
    if not (args.dreams / "excerpt1.txt").exists():
        print(f"no DREAMS data at {args.dreams}: nothing to measure")
        return 0
    from synthsleep.export.runtime import StepRuntime
    from synthsleep.score import score_recording

    work = Path(tempfile.mkdtemp(prefix="bench_ensemble_"))
    sets = [("8 EEG-only excerpts", excerpt_edfs(args.dreams, work))]
    for name, nights in (synthetic_nights(work, True, 2)[1:2] + synthetic_nights(work, True, 2, late=True)):
        sets += [(f"{name}, full montage", [(f, st) for f, _, st in nights]),
                 (f"{name}, EEG only", [(e, st) for _, e, st in nights])]
    print(f"{'set':58s} {'members (score)':>24s} | {'members (argmax)':>24s} | ensemble")
    for name, recordings in sets:
        scored, argmax, ensemble = [[] for _ in args.models], [[] for _ in args.models], []
        for path, truth in recordings:
            probs = []
            for i, model in enumerate(args.models):
                epochs, _, _ = score_recording(path, StepRuntime(model, threads=1))
                p = np.array([e.stage_prob for e in epochs])
                scored[i].append(accuracy(np.array([e.stage for e in epochs]), truth))
                argmax[i].append(accuracy(p.argmax(1), truth))
                probs.append(p)
            ensemble.append(accuracy(np.mean(probs, 0).argmax(1), truth))
        cells = lambda a: " ".join(f"{np.mean(x):.3f}" for x in a)  # noqa: E731
        print(f"{name:58s} {cells(scored):>24s} | {cells(argmax):>24s} | {np.mean(ensemble):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
