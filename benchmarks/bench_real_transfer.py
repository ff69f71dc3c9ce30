"""How the bundled model does on the only real recordings available here (DREAMS, expert-scored).

    python benchmarks/bench_real_transfer.py [--model PATH]

1. ``excerpt3.edf``: 30 min of real PSG (all channels at 50 Hz, so EMG is flagged LOW_RATE)
   scored by ``score_recording`` with every modality the file has, and with EEG only.
2. ``excerpt1..8.txt``: 30 min of one real EEG channel each (50-200 Hz), written as EDF and
   scored EEG-only, against the expert hypnograms (5-s scoring → 30-s epochs).
Needs ../shared/data/real/dreams (DREAMS licence: not copied into this repository).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

DREAMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "dreams"
TEXT_RATES = {1: 100.0, 3: 50.0}  # the others are 200 Hz (README of the data folder)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--dreams", type=Path, default=DREAMS)
    args = ap.parse_args(argv)
    if not (args.dreams / "excerpt3.edf").exists():
        print(f"no DREAMS data at {args.dreams}: nothing to measure")
        return 0

    from synthsleep.export.runtime import StepRuntime
    from synthsleep.psg.annotations import epoch_labels, find_scoring_for, load_scoring
    from synthsleep.psg.recording import Signal, open_recording, write_edf
    from synthsleep.report import stage_agreement
    from synthsleep.score import score_recording
    from synthsleep.scoring import resolve_model_path

    rt = StepRuntime(resolve_model_path(args.model), threads=1)
    print(f"model {rt.model_hash.split(':')[-1][:12]}")
    edf = args.dreams / "excerpt3.edf"
    rec = open_recording(edf)
    truth, _, _ = epoch_labels(load_scoring(find_scoring_for(edf), recording=rec, n_epochs=60), 60)
    for name, overrides in (("all modalities in the file", None), ("EEG only (C3-A1)", "eeg")):
        if overrides:
            tmp = Path(tempfile.mkdtemp()) / "eeg.edf"
            write_edf(tmp, [Signal("C3-A1", 50.0, rec.read("C3-A1"))])
            scored, _, _ = score_recording(tmp, rt)
        else:
            scored, _, _ = score_recording(edf, rt)
        a = stage_agreement([s.stage for s in scored], truth)
        print(f"excerpt3.edf, {name:28s}: accuracy {a.accuracy:.3f}, kappa {a.kappa:.3f} ({a.epochs} epochs)")
    accs, kappas = [], []
    for k in range(1, 9):
        lines = (args.dreams / f"excerpt{k}.txt").read_text().split("\n")
        label = lines[0].strip().strip("[]")
        x = np.array([float(v) for v in lines[1:] if v.strip()])
        fs = TEXT_RATES.get(k, 200.0)
        path = write_edf(Path(tempfile.mkdtemp()) / f"excerpt{k}.edf", [Signal(label, fs, x)])
        n = int(len(x) / fs // 30)
        stages, _, _ = epoch_labels(load_scoring(args.dreams / f"Hypnogram_excerpt{k}.txt"), n)
        scored, _, _ = score_recording(path, rt)
        a = stage_agreement([s.stage for s in scored], stages)
        accs.append(a.accuracy)
        kappas.append(a.kappa)
        print(f"excerpt{k}.txt ({label}, {fs:g} Hz), EEG only: accuracy {a.accuracy:.3f}, kappa {a.kappa:.3f}")
    print(f"mean over the 8 EEG-only excerpts: accuracy {np.mean(accs):.3f}, kappa {np.mean(kappas):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
