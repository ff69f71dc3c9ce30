"""Throughput of ``synthsleep prepare``: synthetic EDF+ nights → Parquet shards.

Synthesises a few nights (all 10 channels at native rates: EEG/EOG 256 Hz, EMG/ECG 512 Hz,
respiration 32 Hz, SpO2 1 Hz), then times ``prepare`` with 1 and with 2 worker processes into
fresh output folders. Prints epochs/s, input MB/s and shard size.

    python benchmarks/bench_prepare.py --nights 3 --hours 1 --workers 1 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nights", type=int, default=3)
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from synthsleep.offline_training.prepare import prepare
    from synthsleep.psg.synthetic.night import synthesize_night, write_night

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    src = root / "in"
    src.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(args.nights):
        path = src / f"synth-s{i + 1}-n1.edf"
        if not path.exists():
            write_night(synthesize_night(100 + i, args.hours), path)
    mb = sum(p.stat().st_size for p in src.glob("*.edf")) / 1e6
    print(f"input: {args.nights} nights x {args.hours:g} h, {mb:.1f} MB EDF (synthesised in "
          f"{time.perf_counter() - t0:.1f} s)")
    print(f"{'workers':>7} {'epochs':>7} {'seconds':>8} {'epochs/s':>9} {'MB/s in':>8} {'shards MB':>9}")
    for w in args.workers:
        out = root / f"out-w{w}"
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        m = prepare(src, out, workers=w)
        dt = time.perf_counter() - t
        n = sum(f["n_epochs"] for f in m.ok_files)
        shard_mb = sum(p.stat().st_size for p in (out / "shards").glob("*.parquet")) / 1e6
        print(f"{w:>7} {n:>7} {dt:>8.2f} {n / dt:>9.1f} {mb / dt:>8.2f} {shard_mb:>9.1f}")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
