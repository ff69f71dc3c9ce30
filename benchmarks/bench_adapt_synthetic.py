"""Does ``synthsleep adapt`` help when it sees whole nights, and hurt on short stage-skewed snippets?

    python benchmarks/bench_adapt_synthetic.py [--model M.onnx]

On DREAMS, leave-one-excerpt-out AdaBN made every model worse (``bench_real_transfer.py
--adapt``). The adaptation sets there are 7 x 30-min excerpts, mostly N2. Re-estimated BatchNorm
means then move an average N2 epoch toward the training nights' average epoch: a label shift
rather than a site shift. This benchmark separates the two on held-out domain-randomised
synthetic nights (4 h and 8 h, 2 subjects each, seed 9999, EEG only; the stages are used only to
score and to find the snippet). For each night:

1. the night scored by the model as it is;
2. the model adapted on that whole night (transductive: no label read, as a site would run
   ``adapt`` on the nights it will score), the night scored again;
3. the model adapted on the night's most N2-rich contiguous 30-min snippet (as a DREAMS excerpt
   is), the whole night scored with it.

2 and 3 each with plain AdaBN and with the stage-balanced statistics (``adapt --method``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SNIPPET_EPOCHS = 60  # 30 min


def accuracy(model: Path, edf: Path, truth: np.ndarray) -> float:
    from bench_real_transfer import accuracy as acc

    from synthsleep.export.runtime import StepRuntime
    from synthsleep.score import score_recording

    scored, _, _ = score_recording(edf, StepRuntime(model, threads=1))
    return acc(np.array([s.stage for s in scored]), truth)


def n2_snippet(edf: Path, truth: np.ndarray, out: Path) -> tuple[Path, float]:
    """The most N2-rich contiguous 30 min of a one-channel EDF, written to ``out``; its N2 share."""
    from synthsleep.psg.clinical import STAGE_CODES
    from synthsleep.psg.recording import Signal, open_recording, write_edf

    n2 = np.asarray(truth) == STAGE_CODES["N2"]
    start = max(range(0, len(n2) - SNIPPET_EPOCHS, 10), key=lambda i: n2[i:i + SNIPPET_EPOCHS].mean())
    rec = open_recording(edf)
    ch = rec.channels[0]
    x = rec.read(ch.label, start * 30.0, (start + SNIPPET_EPOCHS) * 30.0)
    return write_edf(out, [Signal(ch.label, ch.rate, np.asarray(x))]), float(n2[start:start + SNIPPET_EPOCHS].mean())


def main(argv: list[str] | None = None) -> int:
    from bench_real_transfer import synthetic_nights

    from synthsleep.bed_session import BUNDLED_MODEL
    from synthsleep.offline_training.adapt import adapt

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path(BUNDLED_MODEL), help="artifact with weights beside it")
    args = ap.parse_args(argv)
    rows = []
    cols = ("as is", "whole night, plain", "whole night, balanced", "N2 snippet, plain", "N2 snippet, balanced")
    with tempfile.TemporaryDirectory(prefix="bench_adapt_") as tmp:
        work = Path(tmp)
        for name, nights in synthetic_nights(work, randomize=True, per_length=2)[1:]:  # 4 h and 8 h
            for j, (_, eeg_only, truth) in enumerate(nights):
                tag = f"{name.split(' (')[0]} #{j}"
                snippet, share = n2_snippet(eeg_only, truth, work / f"snippet-{len(truth)}-{j}.edf")
                accs = [accuracy(args.model, eeg_only, truth)]
                for what, rec in (("whole", eeg_only), ("snippet", snippet)):
                    for method in ("plain", "balanced"):
                        adapted = work / f"{what}-{method}-{len(truth)}-{j}.onnx"
                        adapt([rec], args.model, adapted, method=method)
                        accs.append(accuracy(adapted, eeg_only, truth))
                rows.append(accs)
                print(f"{tag} (snippet {share:.0%} N2): " + " | ".join(f"{c} {a:.3f}" for c, a in zip(cols, accs)),
                      flush=True)
    a = np.array(rows).mean(axis=0)
    print("mean (EEG only): " + " | ".join(f"{c} {v:.3f}" for c, v in zip(cols, a)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
