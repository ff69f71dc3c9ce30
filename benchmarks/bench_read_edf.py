"""Benchmark: open + full read of every channel of a synthetic 8-h multi-rate PSG EDF.

Usage: python benchmarks/bench_read_edf.py [--hours 8] [--keep DIR]
Prints the write time, open time, read time, and read throughput (MB of EDF data per second).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from synthsleep.psg.recording import Signal, open_recording, write_edf

CHANNELS = [  # label, rate (Hz), unit
    ("EEG C4-M1", 256, "uV"), ("EEG C3-M2", 256, "uV"), ("EOG E1-M2", 256, "uV"), ("EOG E2-M2", 256, "uV"),
    ("EMG Chin", 256, "uV"), ("ECG II", 512, "uV"), ("Resp Airflow", 32, "uV"), ("Resp Thorax", 32, "uV"),
    ("Resp Abdomen", 32, "uV"), ("SpO2", 1, "%"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=8.0)
    ap.add_argument("--keep", type=Path, default=None, help="write the EDF here instead of a temp dir")
    args = ap.parse_args()
    seconds = int(args.hours * 3600)
    rng = np.random.default_rng(0)
    sigs = [Signal(lab, rate, rng.normal(95 if unit == "%" else 0, 1 if unit == "%" else 30, seconds * rate),
                   unit=unit) for lab, rate, unit in CHANNELS]
    with tempfile.TemporaryDirectory() as tmp:
        path = (args.keep or Path(tmp)) / "bench_8h.edf"
        t0 = time.perf_counter()
        write_edf(path, sigs)
        t_write = time.perf_counter() - t0
        size_mb = path.stat().st_size / 1e6
        del sigs
        t0 = time.perf_counter()
        rec = open_recording(path)
        t_open = time.perf_counter() - t0
        t0 = time.perf_counter()
        n = 0
        for ch in rec.channels:
            n += rec.read(ch.label).size
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        chunk = 0.0
        while chunk < rec.duration:  # the way preprocess reads: 10-min chunks, all channels
            for ch in rec.channels:
                rec.read(ch.label, chunk, min(chunk + 600, rec.duration))
            chunk += 600
        t_chunked = time.perf_counter() - t0
    print(f"{args.hours:g} h, {len(CHANNELS)} channels, {n:,} samples, file {size_mb:.1f} MB")
    print(f"write_edf        {t_write:7.2f} s")
    print(f"open_recording   {t_open:7.3f} s")
    print(f"read all (whole) {t_read:7.2f} s  {size_mb / t_read:7.1f} MB/s")
    print(f"read all (10-min chunks) {t_chunked:7.2f} s  {size_mb / t_chunked:7.1f} MB/s")


if __name__ == "__main__":
    main()
