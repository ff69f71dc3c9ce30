"""Which sensor rules the output: a model's stage accuracy on DREAMS excerpt3.edf (30 min of real
PSG, all channels at 50 Hz) with each modality masked out, and with EEG plus each one alone.

    python benchmarks/bench_modality_ablation.py [--model A.onnx]

The file is read and preprocessed once with the artifact's own parameters, then stepped through
the artifact with the state carried, each time with one modality's ``present`` flag cleared (its
row is then ignored by the model). Accuracy is argmax against the expert stages (the stage
confidence threshold is not applied, so no epoch is ``unknown`` here). The DREAMS labels are used
for scoring only; needs ../shared/data/real/dreams (not copied into this repository).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

DREAMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "dreams"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="artifact (default: the bundled model)")
    ap.add_argument("--dreams", type=Path, default=DREAMS)
    args = ap.parse_args(argv)
    edf = args.dreams / "excerpt3.edf"
    if not edf.exists():
        print(f"no DREAMS data at {args.dreams}: nothing to measure")
        return 0
    from synthsleep.bed_session import resolve_model_path
    from synthsleep.export.runtime import StepRuntime
    from synthsleep.psg.annotations import epoch_labels, load_scoring
    from synthsleep.psg.epoch import STAGES
    from synthsleep.psg.montage import resolve_channels
    from synthsleep.psg.preprocess import PreprocessParams, iter_recording_epochs
    from synthsleep.psg.recording import open_recording

    rt = StepRuntime(resolve_model_path(args.model), threads=1)
    rec = open_recording(edf)
    params = PreprocessParams.from_dict(rt.preprocess_params)
    cmap = resolve_channels([c.label for c in rec.channels], required=("eeg",), wanted=params.modalities)
    epochs = list(iter_recording_epochs(rec, cmap, params))
    x, present, side = rt.inputs_from_epochs(epochs)
    truth, _, _ = epoch_labels(load_scoring(edf), len(epochs))

    def run(mask: np.ndarray) -> tuple[float, np.ndarray]:
        state, pred = rt.new_state(1), []
        for t in range(len(x)):
            out, state = rt.step(x[t:t + 1], present[t:t + 1] & mask[None], state, side[t:t + 1])
            pred.append(int(np.argmax(out.stage_prob[0])))
        p, ok = np.array(pred), truth >= 0
        return float(np.mean(p[ok] == truth[ok])), np.bincount(p, minlength=len(STAGES))

    names = list(rt.modalities)
    usable = [m for i, m in enumerate(names) if present[:, i].any()]
    print(f"model {args.model or 'bundled'}; usable in the file: {', '.join(usable)}")
    print(f"expert stages: {dict(zip(STAGES, np.bincount(truth[truth >= 0], minlength=len(STAGES)).tolist()))}")
    rows = [("all channels", np.ones(len(names), bool))]
    for i, m in enumerate(names):
        if m in usable and m != "eeg":
            drop = np.ones(len(names), bool)
            drop[i] = False
            pair = np.zeros(len(names), bool)
            pair[[names.index("eeg"), i]] = True
            rows += [(f"all but {m}", drop), (f"eeg + {m}", pair)]
    rows.append(("eeg alone", np.array([m == "eeg" for m in names])))
    print(f"{'input':22s} {'accuracy':>8s}  predicted " + " ".join(f"{s:>4s}" for s in STAGES))
    for label, mask in rows:
        acc, counts = run(mask)
        print(f"{label:22s} {acc:8.3f}            " + " ".join(f"{c:4d}" for c in counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
