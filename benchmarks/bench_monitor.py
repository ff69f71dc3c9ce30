"""Live monitor latency and capacity on this machine (real LSL on loopback, real ONNX Runtime).

    python benchmarks/bench_monitor.py [--model PATH] [--beds 1 8 16] [--speed 30] [--minutes 20]

For each N in --beds: a separate process replays N synthetic nights (one LSL bed each) at
--speed x real time; this process monitors all N beds (one batched step per round, 1 ORT thread).
Latency = wall time from the moment an epoch closes (its last sample polled) to its events being
written (JSONL fsynced, state saved atomically); add up to one poll interval (20 ms) for the
sample to be noticed. Replay load runs in the other process (separated). Load scales with
N x speed: a bed replayed at 30x costs what 30 beds at real time cost, so 'real-time bed
equivalents' = N x speed, as long as p99 latency stays far below the 30-s epoch.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

PLAYERS = """
import sys, time
from synthsleep.stream.player import ReplayPlayer
edf, speed, names = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
ps = [ReplayPlayer(edf, name=n, speed=speed, markers=False) for n in names]
for p in ps: p.start()
for p in ps: p.join()
"""


def run_beds(rt, edf: Path, n: int, speed: float, workdir: Path) -> dict:
    from synthsleep.monitor import BedSpec, Monitor

    names = [f"bench-{uuid.uuid4().hex[:6]}-{i}" for i in range(n)]
    proc = subprocess.Popen([sys.executable, "-c", PLAYERS, str(edf), str(speed), *names],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lat: list[float] = []
    mon = Monitor([BedSpec(f"b{i}", nm) for i, nm in enumerate(names)], rt, workdir / f"events-{n}.jsonl",
                  state_dir=workdir / f"state-{n}", markers=False, resolve_timeout=10.0, max_buflen=3600)
    t0 = time.perf_counter()
    stop = threading.Event()

    def collect(m: Monitor) -> None:
        for b in m.beds.values():
            if b.last and b.last.get("epoch") != b.last.get("_seen"):
                lat.append(b.last["latency"])
                b.last["_seen"] = b.last["epoch"]

    mon.run(stop, idle_exit=6.0, on_round=collect)
    mon.close(flush=False)
    wall = time.perf_counter() - t0 - 6.0
    proc.wait(30)
    a = np.array(lat) * 1e3
    return {"beds": n, "speed": speed, "epochs": mon.epochs_done, "wall_s": wall,
            "p50_ms": float(np.percentile(a, 50)) if a.size else float("nan"),
            "p99_ms": float(np.percentile(a, 99)) if a.size else float("nan"),
            "max_ms": float(a.max()) if a.size else float("nan")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--beds", type=int, nargs="+", default=[1, 8, 16])
    ap.add_argument("--speed", type=float, default=30.0)
    ap.add_argument("--minutes", type=float, default=20.0)
    args = ap.parse_args(argv)

    from synthsleep.bed_session import resolve_model_path
    from synthsleep.export.runtime import StepRuntime
    from synthsleep.psg.synthetic import synthesize_night, write_night

    rt = StepRuntime(resolve_model_path(args.model), threads=1)
    work = Path(tempfile.mkdtemp(prefix="bench_monitor_"))
    edf = work / "night.edf"
    write_night(synthesize_night(seed=5, hours=args.minutes / 60), edf)
    print(f"model {rt.model_hash[:12]}; {args.minutes:g}-min synthetic night replayed at {args.speed:g}x per bed")
    print("beds | equiv. real-time beds | epochs | p50 latency | p99 latency | max")
    for n in args.beds:
        r = run_beds(rt, edf, n, args.speed, work)
        print(f"{n:4d} | {n * args.speed:21.0f} | {r['epochs']:6d} | {r['p50_ms']:8.1f} ms | "
              f"{r['p99_ms']:8.1f} ms | {r['max_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
