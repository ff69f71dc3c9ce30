"""Offline scoring of an 8-h synthetic night: ``synthsleep score`` vs YASA ``SleepStaging``.

    python benchmarks/bench_score_vs_yasa.py [--hours 8] [--model PATH]

Both read the same EDF in the same process (warm imports), both end with a stage per 30-s
epoch; we also print each one's agreement with the synthetic ground truth. YASA is a `dev`
extra (a staging model trained on real PSG), the baseline a user would otherwise pick.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from bench_yasa_dreams import YASA_STAGE  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=77)
    ap.add_argument("--model", default=None)
    args = ap.parse_args(argv)

    from synthsleep.bed_session import resolve_model_path
    from synthsleep.export.runtime import StepRuntime
    from synthsleep.psg.synthetic import synthesize_night, write_night
    from synthsleep.report import stage_agreement
    from synthsleep.score import score_recording

    work = Path(tempfile.mkdtemp(prefix="bench_score_"))
    edf = work / "night.edf"
    night = synthesize_night(seed=args.seed, hours=args.hours)
    write_night(night, edf)
    truth = np.asarray(night.stages)

    rt = StepRuntime(resolve_model_path(args.model), threads=1)
    t0 = time.perf_counter()
    scored, _, _ = score_recording(edf, rt)
    t_ours = time.perf_counter() - t0
    ours = np.array([s.stage for s in scored])

    import mne
    import yasa

    t0 = time.perf_counter()
    raw = mne.io.read_raw_edf(edf, include=["EEG C4-M1", "EOG E1-M2", "EMG Chin"], preload=True, verbose=False)
    sls = yasa.SleepStaging(raw, eeg_name="EEG C4-M1", eog_name="EOG E1-M2", emg_name="EMG Chin")
    pred = sls.predict()
    t_yasa = time.perf_counter() - t0
    labels = getattr(pred, "hypno", pred)  # yasa >= 0.7 returns a Hypnogram object
    yasa_codes = np.array([YASA_STAGE[str(p)] for p in list(labels)])

    a_ours, a_yasa = stage_agreement(ours, truth), stage_agreement(yasa_codes, truth)
    print(f"{args.hours:g}-h synthetic night ({truth.size} epochs), 1 thread")
    print(f"synthsleep score (ONNX step, all modalities): {t_ours:6.2f} s, accuracy {a_ours.accuracy:.3f}, "
          f"kappa {a_ours.kappa:.3f}")
    print(f"YASA SleepStaging (EEG+EOG+EMG):              {t_yasa:6.2f} s, accuracy {a_yasa.accuracy:.3f}, "
          f"kappa {a_yasa.kappa:.3f}")
    print(f"time ratio synthsleep / YASA = {t_ours / t_yasa:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
