"""Where a monitored bed's memory goes: per-component bytes per extra bed, measured.

    python benchmarks/bench_bed_memory.py [--beds 2 20] [--kind full] [--seconds 120] [--buffer 120]
        [--aligned] [--out after.json] [--baseline before.json ...] [--render]

For each N in ``--beds`` a fresh child process builds what ``synthsleep monitor`` builds for N
beds (``Monitor`` with the bundled model, Prometheus metrics and the LSL marker stream on, no
state folder), its beds fed in real time over LSL loopback by ``benchmarks/loadgen.py`` in another
process (full bed = a night's 4 streams: 512 Hz EMG/ECG, 256 Hz 2 EEG + 2 EOG, 32 Hz 3 resp,
1 Hz SpO2; light = one 8-channel 100-Hz stream; beds phase-staggered over the epoch, or with
``--aligned`` all closing their epochs together, so the monitor steps them in batches). After every
bed is connected, the monitor runs for ``--seconds`` (several epochs per bed) and the child
reports, at its end:

* RSS (now and the peak, sampled every 0.5 s) and threads;
* Python allocations (``tracemalloc``, one frame) grouped by component (the file that allocated;
  numpy arrays are charged to the line that created them); ``tracemalloc``'s own bookkeeping is
  taken off the RSS;
* native memory not seen by tracemalloc: thread stacks (the 8-MiB anonymous mappings of
  ``/proc/self/smaps``), liblsl's sample queues (16 bytes per slot, ``buffer`` x rate slots per
  inlet, preallocated: computed) and the rest (liblsl's preallocated sample pools, sockets and
  resolvers, ONNX Runtime's arena, allocator overhead);
* the live ``ContinuousResolver`` objects and the largest batched model step.

The parent prints one table: component -> kB per extra bed = (value at the largest N - value at
the smallest N) / (difference in beds), with a column per ``--baseline`` file (an earlier run's
``--out``) beside this run's; ``--render`` prints only the baselines' table. Linux only
(``/proc``, glibc).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: file path fragment -> component (first match wins; a file matching none is "other Python")
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("synthsleep/stream/lsl_inlet.py", "inlet (Python: pulled chunks)"),
    ("synthsleep/stream/dejitter.py", "inlet (Python: pulled chunks)"),
    ("pylsl/", "pylsl wrapper (pull buffers, infos)"),
    ("synthsleep/psg/preprocess.py", "epoch assembly + preprocessing (numpy)"),
    ("synthsleep/stream/assembler.py", "epoch assembly + preprocessing (numpy)"),
    ("scipy/", "epoch assembly + preprocessing (numpy)"),
    ("numpy/", "epoch assembly + preprocessing (numpy)"),
    ("synthsleep/bed_session.py", "session: events, alerts, model state"),
    ("synthsleep/events.py", "session: events, alerts, model state"),
    ("synthsleep/alerts/rules.py", "session: events, alerts, model state"),
    ("synthsleep/export/runtime.py", "session: events, alerts, model state"),
    ("prometheus_client/", "Prometheus metrics"),
    ("synthsleep/alerts/metrics.py", "Prometheus metrics"),
    ("synthsleep/monitor.py", "monitor loop (_Bed, pending epochs)"),
    ("concurrent/futures", "monitor loop (_Bed, pending epochs)"),
    ("threading.py", "monitor loop (_Bed, pending epochs)"),
)
STACK_KB = 8192  # glibc's default thread stack mapping (RLIMIT_STACK 8 MiB)


def smaps() -> dict[str, int]:
    """Resident bytes of this process by mapping kind: thread stacks, [heap], other anonymous, files."""
    out = {"stacks": 0, "heap": 0, "anon": 0, "files": 0}
    kind, size_kb = "files", 0
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                path = head[5] if len(head) > 5 else ""
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                size_kb = (hi - lo) // 1024
                if path == "[heap]":
                    kind = "heap"
                elif path.startswith("/"):
                    kind = "files"
                elif path == "" and size_kb == STACK_KB:
                    kind = "stacks"
                else:
                    kind = "anon"
            elif head[0] == "Rss:":
                out[kind] += int(head[1]) * 1024
    return out


def component(filename: str) -> str:
    """The component a Python allocation is charged to, by the file that made it."""
    name = filename.replace(os.sep, "/")
    for frag, comp in COMPONENTS:
        if frag in name:
            return comp
    return "other Python"


def child(args: argparse.Namespace) -> dict:
    """One measurement: N beds in this process (fresh interpreter), loadgen in another."""
    import psutil

    from synthsleep.alerts.metrics import MonitorMetrics
    from synthsleep.bed_session import resolve_model_path
    from synthsleep.export.runtime import StepRuntime
    from synthsleep.monitor import BedSpec, Monitor

    tracemalloc.start(1)
    n = args.child
    prefix = f"mem{uuid.uuid4().hex[:5]}"
    light, full = (n, 0) if args.kind == "light" else (0, n)
    names = [f"{prefix}-{i}" for i in range(light)] + [f"{prefix}-f{j}" for j in range(full)]
    gen = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "loadgen.py"), "--light", str(light),
                            "--full", str(full), "--prefix", prefix, "--seconds", str(args.seconds + 400),
                            *(["--aligned"] if args.aligned else [])],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        gen.stdout.readline()
        runtime = StepRuntime(resolve_model_path(None), threads=1)
        batches: list[int] = []
        step = runtime.step

        def counting_step(x, present, state):  # the batch sizes the monitor used (ORT's arena follows the largest)
            batches.append(len(x))
            return step(x, present, state)

        runtime.step = counting_step
        proc = psutil.Process()
        work = Path(tempfile.mkdtemp(prefix="bedmem-"))
        mon = Monitor([BedSpec(b, b) for b in names], runtime, work / "events.jsonl", None, MonitorMetrics(),
                      markers=True, resolve_timeout=10.0, max_buflen=args.buffer)
        t0 = time.monotonic()
        while any(b.stream is None for b in mon.beds.values()):
            mon.poll_once()
            time.sleep(0.02)
            if time.monotonic() - t0 > 300:
                raise RuntimeError("beds did not connect within 300 s")
        connect_s = time.monotonic() - t0
        peak, next_sample = 0, 0.0
        t1 = time.monotonic()
        while time.monotonic() - t1 < args.seconds:
            mon.poll_once()
            now = time.monotonic()
            if now >= next_sample:
                next_sample = now + 0.5
                peak = max(peak, proc.memory_info().rss - tracemalloc.get_tracemalloc_memory())
            time.sleep(0.02)
        snap = tracemalloc.take_snapshot()
        py: dict[str, int] = {}
        for st in snap.statistics("filename"):
            comp = component(st.traceback[0].filename)
            py[comp] = py.get(comp, 0) + st.size
        rss = proc.memory_info().rss - tracemalloc.get_tracemalloc_memory()
        res = {"beds": n, "rss": rss, "rss_peak": max(peak, rss), "threads": proc.num_threads(),
               "python": py, "python_total": sum(py.values()), "epochs": mon.epochs_done,
               "connect_s": connect_s, **smaps(),
               "tracemalloc_overhead": tracemalloc.get_tracemalloc_memory()}
        streams = [lk for b in mon.beds.values() if b.stream for lk in b.stream.inlet._links]  # noqa: SLF001
        res["lsl_queue_computed"] = sum(16 * int(lk.rate * mon.max_buflen) for lk in streams)
        res["streams"] = len(streams)
        res["resolvers"] = sum(lk.resolver is not None for lk in streams)
        res["max_batch"] = max(batches, default=0)
        mon.close(flush=False)
        return res
    finally:
        gen.kill()
        gen.wait(30)


def per_bed(a: dict, b: dict, key: str) -> float:
    """(value at the larger N - value at the smaller N) / difference in beds."""
    return (b[key] - a[key]) / (b["beds"] - a["beds"])


def rows(results: list[dict]) -> list[tuple[str, str]]:
    """(component, per-extra-bed figure) rows of one measurement (its smallest and largest N)."""
    a, b = results[0], results[-1]
    comps = sorted(set(a["python"]) | set(b["python"]))
    pyd = {c: (b["python"].get(c, 0) - a["python"].get(c, 0)) / (b["beds"] - a["beds"]) for c in comps}
    py_total, rss = per_bed(a, b, "python_total"), per_bed(a, b, "rss")
    stacks, queue = per_bed(a, b, "stacks"), per_bed(a, b, "lsl_queue_computed")
    out = [(f"Python: {c}", f"{pyd[c] / 1e3:.0f}") for c in sorted(comps, key=lambda c: -pyd[c])]
    out += [
        ("**Python allocations (tracemalloc), total**", f"**{py_total / 1e3:.0f}**"),
        ("native: thread stacks (threads per bed)", f"{stacks / 1e3:.0f} ({per_bed(a, b, 'threads'):.1f})"),
        ("native: liblsl sample queues (16 B x buffer s x rate, computed)", f"{queue / 1e3:.0f}"),
        ("native: the rest (liblsl inlets' sample pools, sockets, resolvers; ONNX Runtime arena; "
         "allocator overhead)", f"{(rss - py_total - stacks - queue) / 1e3:.0f}"),
        ("**RSS, end of run**", f"**{rss / 1e3:.0f}**"),
        ("RSS, peak of 0.5-s samples", f"{per_bed(a, b, 'rss_peak') / 1e3:.0f}"),
        ("live ContinuousResolvers per bed", f"{per_bed(a, b, 'resolvers'):.2f}"),
        ("largest batched model step (beds), few -> many", f"{a['max_batch']} -> {b['max_batch']}"),
    ]
    return out


def report(runs: list[tuple[str, list[dict]]]) -> str:
    """A Markdown table, one column per measurement: component -> kB per extra bed."""
    tables = [dict(rows(res)) for _, res in runs]
    keys = list(tables[-1]) + [k for t in tables[:-1] for k in t if k not in tables[-1]]
    lines = ["| component (kB per extra bed) | " + " | ".join(label for label, _ in runs) + " |",
             "| --- |" + " ---: |" * len(runs)]
    lines += [f"| {k} | " + " | ".join(t.get(k, "-") for t in tables) + " |" for k in keys]
    heads = []
    for label, res in runs:
        a, b = res[0], res[-1]
        rss = per_bed(a, b, "rss")
        heads.append(f"{label}: {a['beds']} -> {b['beds']} {b.get('kind', 'full')} beds, RSS "
                     f"{a['rss'] / 2**20:.1f} -> {b['rss'] / 2**20:.1f} MiB, epochs scored {a['epochs']} / "
                     f"{b['epochs']}: **{rss / 1e6:.2f} MB ({rss / 2**20:.2f} MiB) per extra bed**")
    return "\n".join(heads) + "\n\n" + "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--beds", type=int, nargs=2, default=[2, 20], metavar=("FEW", "MANY"))
    p.add_argument("--kind", choices=("full", "light"), default="full")
    p.add_argument("--seconds", type=float, default=120.0, help="run time after every bed connected")
    p.add_argument("--buffer", type=int, default=120, help="monitor inlet buffer, s (its --buffer)")
    p.add_argument("--aligned", action="store_true", help="every bed's epochs close together (batched steps)")
    p.add_argument("--out", default=None, help="also write the raw measurements (JSON) here")
    p.add_argument("--baseline", nargs="*", default=[], metavar="JSON",
                   help="earlier --out files: their columns are printed beside this run's")
    p.add_argument("--render", action="store_true", help="only print the table of the --baseline files")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(child(args)))
        return 0
    runs = [(Path(f).stem, json.loads(Path(f).read_text())) for f in args.baseline]
    if args.render:
        print(report(runs))
        return 0
    results = []
    for n in args.beds:
        print(f"measuring {n} {args.kind} beds ({args.seconds:g} s after connecting) ...", file=sys.stderr,
              flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--kind", args.kind, "--seconds",
                              str(args.seconds), "--buffer", str(args.buffer),
                              *(["--aligned"] if args.aligned else [])], env=env, check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        r["kind"] = args.kind
        results.append(r)
    text = report([*runs, ("this run", results)])
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
