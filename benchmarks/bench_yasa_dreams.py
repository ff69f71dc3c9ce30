"""YASA's ``SleepStaging`` on the real DREAMS excerpts: the reference to beat, with its kappa.

    python benchmarks/bench_yasa_dreams.py

Issue 9 quotes YASA's accuracy on these recordings (0.68 on the 8 single-EEG excerpts, 0.60 on
excerpt3.edf); accuracy on excerpts that are 60 % N2 says little without kappa (every epoch N2
scores 0.600 and 0.650, kappa 0). This prints both for YASA, scored exactly as
``bench_real_transfer.py`` scores our models (same hypnograms, same 30-s epochs, accuracy per
excerpt averaged, the pooled confusion of the 8 after them; YASA stages every epoch, so nothing
counts as ``unknown``):

1. the 8 single-EEG excerpts, YASA with the EEG alone;
2. excerpt3.edf with YASA's full input (C3-A1, EOG1-A1, chin EMG1; all at 50 Hz there) and with
   its EEG alone.

YASA refuses rates under 80 Hz: the 50-Hz recordings (excerpt 3, excerpt3.edf) are upsampled
to 100 Hz first (``resample_poly``; adds no content above 25 Hz). The signals are read by the
project's own reader (``open_recording``: units parsed, ``UV`` is
microvolts) or from the text excerpts in uV, and handed to YASA in volts. DREAMS labels are used
for scoring only. Needs ../shared/data/real/dreams and ``yasa`` (installed with ``.[dev]``).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from bench_real_transfer import DREAMS, accuracy, print_confusion, read_excerpts

from synthsleep.psg.epoch import STAGES

#: YASA's stage names (0.8 writes WAKE, older versions W; R for REM) -> our stage codes
YASA_STAGE = {**{s: i for i, s in enumerate(STAGES)}, "WAKE": STAGES.index("W"), "R": STAGES.index("REM")}


def yasa_stages(signals: dict[str, tuple[float, np.ndarray]], eeg: str, eog: str | None = None,
                emg: str | None = None) -> np.ndarray:
    """YASA's stage per 30-s epoch (int, our stage codes) for signals {name: (rate Hz, uV)} of
    one rate (under 80 Hz: upsampled to 100 Hz, YASA's floor)."""
    import mne
    import yasa
    from scipy.signal import resample_poly

    warnings.filterwarnings("ignore", module="sklearn")  # YASA's classifier, pickled by another sklearn
    signals = {c: (100.0, resample_poly(x, 100, int(fs))) if fs < 80 else (fs, x) for c, (fs, x) in signals.items()}
    names = list(signals)
    rates = {rate for rate, _ in signals.values()}
    if len(rates) != 1:
        raise ValueError(f"YASA wants one sampling rate; got {sorted(rates)} Hz for {names}")
    n = min(len(x) for _, x in signals.values())
    info = mne.create_info(names, rates.pop(), ["eeg"] * len(names))
    raw = mne.io.RawArray(np.stack([signals[c][1][:n] for c in names]) * 1e-6, info, verbose=False)
    hypno = yasa.SleepStaging(raw, eeg_name=eeg, eog_name=eog, emg_name=emg).predict()
    return np.array([YASA_STAGE[str(s)] for s in getattr(hypno, "hypno", hypno)], int)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dreams", type=Path, default=DREAMS)
    args = ap.parse_args(argv)
    if not (args.dreams / "excerpt3.edf").exists():
        print(f"no DREAMS data at {args.dreams}: nothing to measure")
        return 0
    from synthsleep.psg.annotations import epoch_labels, find_scoring_for, load_scoring
    from synthsleep.psg.clinical import confusion_matrix
    from synthsleep.psg.recording import open_recording
    from synthsleep.report import stage_agreement

    def row(what: str, pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
        acc = [accuracy(p, t) for p, t in pairs]
        kappa = [stage_agreement(p, t).kappa for p, t in pairs]
        print(f"YASA SleepStaging  {what:44s} accuracy {np.mean(acc):.3f}  kappa {np.nanmean(kappa):.3f}")
        if len(pairs) > 1:
            print("   per excerpt: " + " ".join(f"{a:.2f}" for a in acc))
            print_confusion(sum(confusion_matrix(t[:len(p)], p[:len(t)], len(STAGES) + 1)[:len(STAGES)]
                                for p, t in pairs))

    pairs = [(yasa_stages({label: (fs, x)}, label), truth) for label, fs, x, truth in read_excerpts(args.dreams)]
    row("8 EEG-only excerpts (mean)", pairs)

    edf3 = args.dreams / "excerpt3.edf"
    with open_recording(edf3) as rec:
        truth3, _, _ = epoch_labels(load_scoring(find_scoring_for(edf3), recording=rec, n_epochs=60), 60)
        sig = {c: (rec.channel(c).rate, rec.read(c)) for c in ("C3-A1", "EOG1-A1", "EMG1")}
    row("excerpt3.edf, EEG + EOG + EMG", [(yasa_stages(sig, "C3-A1", "EOG1-A1", "EMG1"), truth3)])
    row("excerpt3.edf, EEG only", [(yasa_stages({"C3-A1": sig["C3-A1"]}, "C3-A1"), truth3)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
