"""Live capacity: how many real-time beds one monitor (or a ward sharded over 2) holds on this machine.

    python benchmarks/bench_live_capacity.py [--cases light:25 light:100 light:300 full:10 shard:300]
        [--window 120] [--out benchmarks/results/live_capacity.md]

Each case runs, as separate processes: ``benchmarks/loadgen.py`` (N real-time LSL beds, light =
one 8-channel 100-Hz stream, full = a synthetic night's 4 streams up to 512 Hz; bed phases
staggered over the 30-s epoch like a real ward) and ``synthsleep monitor --config beds.toml``
(the bundled model, 1 ORT thread, events JSONL fsynced per epoch, state not saved, LSL markers on,
Prometheus metrics on). ``shard:N`` runs the same beds.toml as 2 monitor processes
(``--shard 1/2``, ``--shard 2/2``), both scraped by a real Prometheus when one is installed.
This process reads the monitors' shared LSL marker stream(s) (one per monitor) for the times
events were written.

Measured, after a warm-up (every bed connected and scored once), over ``--window`` seconds:

* latency: from the push of an epoch's last sample (the loadgen logs when each round's pushes
  returned) to its stage event on the marker stream (pushed right after the JSONL write+fsync);
* every complete epoch of every bed scored exactly once (from the events files: missing, doubled),
  and epochs scored 'unknown' for want of data (samples lost on the way);
* CPU of the monitor process(es) and of the load generator (% of one core), RSS, threads;
  RSS per extra bed from the light cases (slope between the smallest and the largest N).

Targets (issue 11): p99 <= 1 s, <= 5 MB per extra bed, every epoch exactly once. The machine is
shared (2 cores): the load average of the run is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import psutil
import pylsl

REPO = Path(__file__).resolve().parents[1]
EPOCH = 30.0
SPAWNED: list[subprocess.Popen] = []  # every child process, killed if a case fails half-way


class MarkerReader(threading.Thread):
    """Reads every ``synthsleep-events`` marker stream (one per monitor) into a list."""

    def __init__(self, expected: int, source_ids: set[str]) -> None:
        super().__init__(daemon=True)
        self.expected, self.source_ids = expected, source_ids
        self.rows: list[tuple[float, dict]] = []  # (LSL push time, event)
        self.stop = threading.Event()
        self.inlets: list[pylsl.StreamInlet] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        seen: set[str] = set()
        while not self.stop.is_set() and len(seen) < self.expected:
            for info in pylsl.resolve_byprop("name", "synthsleep-events", minimum=self.expected, timeout=1.0):
                if info.source_id() in self.source_ids and info.source_id() not in seen:
                    inlet = pylsl.StreamInlet(info, max_buflen=600, recover=False)
                    inlet.open_stream(timeout=10)
                    self.inlets.append(inlet)
                    seen.add(info.source_id())
        while not self.stop.is_set():
            got = False
            for inlet in self.inlets:
                try:
                    data, ts = inlet.pull_chunk(timeout=0.0)
                except Exception:  # noqa: BLE001 - the monitor went away at the end
                    continue
                if ts:
                    got = True
                    with self.lock:
                        self.rows.extend((t, json.loads(d[0])) for d, t in zip(data, ts))
            if not got:
                self.stop.wait(0.05)

    def stage(self) -> list[tuple[float, dict]]:
        with self.lock:
            return [(t, e) for t, e in self.rows if e["type"] == "stage"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def _prometheus(targets: list[str], work: Path) -> tuple[subprocess.Popen | None, str | None]:
    exe = shutil.which("prometheus")
    if not exe:
        return None, None
    port = _free_port()
    cfg = work / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 2s\nscrape_configs:\n  - job_name: synthsleep\n    static_configs:\n"
                   f"      - targets: {json.dumps(targets)}\n")
    proc = subprocess.Popen([exe, f"--config.file={cfg}", f"--storage.tsdb.path={work / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    SPAWNED.append(proc)
    return proc, f"http://127.0.0.1:{port}"


def _prom_query(url: str, q: str) -> list:
    with urllib.request.urlopen(f"{url}/api/v1/query?query={urllib.parse.quote(q)}", timeout=5) as r:
        return json.load(r)["data"]["result"]


def run_case(kind: str, n: int, window: float, work: Path, model: str | None,
             monitor_args: tuple[str, ...] = ()) -> dict:
    shards = 2 if kind == "shard" else 1
    light, full = (n, 0) if kind in ("light", "shard") else (0, n)
    prefix = f"cap{uuid.uuid4().hex[:5]}"
    names = [f"{prefix}-{i}" for i in range(light)] + [f"{prefix}-f{j}" for j in range(full)]
    (work / "beds.toml").write_text("".join(f'[[bed]]\nid = "{b}"\nstream = "{b}"\n\n' for b in names))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    warm_max = 150.0
    gen = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "loadgen.py"), "--light", str(light),
                            "--full", str(full), "--prefix", prefix, "--seconds", str(warm_max + window + 5),
                            "--log", str(work / "rounds.csv")],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    SPAWNED.append(gen)
    gen.stdout.readline()  # "ready <start>": outlets exist
    mons, urls = [], []
    for i in range(1, shards + 1):
        cmd = [sys.executable, "-m", "synthsleep.cli", "monitor", "--config", str(work / "beds.toml"),
               "--no-console", "--events", str(work / "events.jsonl"), "--metrics", "127.0.0.1:0"]
        if model:
            cmd += ["--model", model]
        if shards > 1:
            cmd += ["--shard", f"{i}/{shards}"]
        cmd += list(monitor_args)
        m = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(work / f"monitor{i}.log", "w"),  # noqa: SIM115
                             text=True, env=env, cwd=work)
        SPAWNED.append(m)
        mons.append(m)
    for m in mons:
        for line in m.stdout:
            if line.startswith("metrics at "):
                urls.append(line.split()[-1].rstrip("/"))
                break
        threading.Thread(target=lambda s=m.stdout: [None for _ in s], daemon=True).start()  # drain stdout
    from synthsleep.alerts.sinks import marker_source_id
    from synthsleep.monitor import BedSpec, shard_beds

    specs = [BedSpec(b, b) for b in names]
    sids = ({marker_source_id(names)} if shards == 1 else
            {marker_source_id([b.bed for b in shard_beds(specs, (i, shards))], (i, shards)) for i in (1, 2)})
    reader = MarkerReader(shards, sids)
    reader.start()
    prom, prom_url = _prometheus([u.split("//")[1].split("/")[0] for u in urls], work) if shards > 1 else (None, None)
    procs = [psutil.Process(m.pid) for m in mons]
    gproc = psutil.Process(gen.pid)
    # warm-up: every bed connected and scored once
    t_start = time.monotonic()
    while time.monotonic() - t_start < warm_max:
        if len({e["bed"] for _, e in reader.stage()}) >= len(names):
            break
        time.sleep(0.5)
    warm = time.monotonic() - t_start
    w0_lsl, w0 = pylsl.local_clock(), time.monotonic()
    c0, g0 = _cpu(procs), _cpu([gproc])
    load0 = os.getloadavg()[0]
    rss_peak, threads = 0.0, 0
    while time.monotonic() - w0 < window:
        time.sleep(2.0)
        rss_peak = max(rss_peak, sum(p.memory_info().rss for p in procs) / 2**20)
        threads = max(threads, sum(p.num_threads() for p in procs))
    c1, g1, w1 = _cpu(procs), _cpu([gproc]), time.monotonic()
    w1_lsl = pylsl.local_clock()
    load1 = os.getloadavg()[0]
    prom_result = None
    if prom_url:
        try:
            up = _prom_query(prom_url, "up")
            series = _prom_query(prom_url, "count by (instance) (synthsleep_epochs_processed_total)")
            total = _prom_query(prom_url, "sum(synthsleep_epochs_processed_total)")
            prom_result = {"targets_up": sum(int(float(r["value"][1])) for r in up),
                           "beds_per_instance": sorted(int(float(r["value"][1])) for r in series),
                           "epochs_total": float(total[0]["value"][1]) if total else 0.0}
        except Exception as exc:  # noqa: BLE001
            prom_result = {"error": str(exc)}
        prom.terminate()
    gen.send_signal(15)  # stop pushing; then let the monitors finish the complete epochs
    try:
        gen.wait(60)
    except subprocess.TimeoutExpired:
        gen.kill()
        gen.wait(30)
    rounds = np.loadtxt(work / "rounds.csv", delimiter=",", skiprows=1, ndmin=2)
    stamp_end, pushed_at = rounds[:, 0], rounds[:, 1]
    last_stamp = float(stamp_end[-1])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done = {(e["bed"], e["epoch_index"]) for _, e in reader.stage()}
        if all(any(k[0] == b for k in done) for b in names):
            break
        time.sleep(0.5)
    time.sleep(3.0)
    for m in mons:
        m.terminate()
    for m in mons:
        try:
            m.wait(90)
        except subprocess.TimeoutExpired:
            m.kill()
    reader.stop.set()
    # latency: stage marker push time - push time of the round holding the epoch's last sample
    max_rate = 512.0 if full else 100.0
    lat = []
    for t, e in reader.stage():
        end = e["onset"] + EPOCH
        if not (w0_lsl <= end <= w1_lsl):
            continue
        r = int(np.searchsorted(stamp_end, end - 1.0 / max_rate + 1e-6))
        if r < len(pushed_at):
            lat.append(t - pushed_at[r])
    lat = np.array(lat) if lat else np.array([np.nan])
    # exactly once, from the events files
    files = sorted(work.glob("events*.jsonl"))
    by_bed: dict[str, list[int]] = {}
    origin: dict[str, float] = {}
    unscored = 0
    beds_in_files: dict[str, set[str]] = {}
    for f in files:
        for line in f.read_text().splitlines():
            e = json.loads(line)
            if e["type"] != "stage":
                continue
            by_bed.setdefault(e["bed"], []).append(e["epoch_index"])
            beds_in_files.setdefault(e["bed"], set()).add(f.name)
            origin.setdefault(e["bed"], e["onset"] - EPOCH * e["epoch_index"])
            if str(e["value"].get("reason", "")).startswith("no usable") and e["onset"] + EPOCH <= last_stamp:
                unscored += 1  # a complete epoch (not the one cut by the generator's stop) without data
    missing = doubled = epochs = 0
    for b in names:
        got = by_bed.get(b, [])
        epochs += len(got)
        doubled += len(got) - len(set(got))
        if b in origin:
            complete = int((last_stamp - origin[b]) // EPOCH)
            missing += len(set(range(min(got), complete)) - set(got))
        else:
            missing += 1
    split = sorted(len([b for b in beds_in_files if f.name in beds_in_files[b]]) for f in files)
    return {
        "case": f"{kind}:{n}" + (f" ({' '.join(monitor_args)})" if monitor_args else ""), "beds": n, "streams": light + 4 * full, "monitors": shards, "warmup_s": warm,
        "window_s": w1 - w0, "epochs": epochs, "missing": missing, "doubled": doubled, "unscored_no_data": unscored,
        "p50": float(np.nanpercentile(lat, 50)), "p99": float(np.nanpercentile(lat, 99)), "max": float(np.nanmax(lat)),
        "latency_n": int(np.isfinite(lat).sum()), "cpu_monitor": 100 * (c1 - c0) / (w1 - w0),
        "cpu_loadgen": 100 * (g1 - g0) / (w1 - w0), "rss_mb": rss_peak, "threads": threads,
        "load": (load0 + load1) / 2, "beds_per_shard": split, "prometheus": prom_result,
    }


def table(results: list[dict]) -> str:
    rows = ["| case | beds | streams | monitors | epochs scored | missing | doubled | unscored (no data) | "
            "latency p50 / p99 / max (s) | monitor CPU (% of a core) | loadgen CPU | monitor RSS (MB) | threads | "
            "load avg |", "|" + " --- |" * 14]
    for r in results:
        rows.append(f"| {r['case']} | {r['beds']} | {r['streams']} | {r['monitors']} | {r['epochs']} | {r['missing']} | "
                    f"{r['doubled']} | {r['unscored_no_data']} | {r['p50']:.2f} / {r['p99']:.2f} / {r['max']:.2f} | "
                    f"{r['cpu_monitor']:.0f} % | {r['cpu_loadgen']:.0f} % | {r['rss_mb']:.0f} | {r['threads']} | "
                    f"{r['load']:.1f} |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=["light:25", "light:100", "light:300", "full:10", "shard:300"],
                   help="KIND:N with KIND light, full or shard (2 monitor processes, light beds)")
    p.add_argument("--window", type=float, default=120.0, help="measured seconds per case, after the warm-up")
    p.add_argument("--model", default=None, help="ONNX artifact (default: the bundled model)")
    p.add_argument("--out", default=None, help="also write the table (Markdown) here, and the figures as JSON "
                                               "beside it (read by perf_summary.py)")
    p.add_argument("--monitor-args", default="", help="extra monitor options, e.g. '--buffer 120'")
    args = p.parse_args()
    results = []
    for case in args.cases:
        kind, _, n = case.partition(":")
        with tempfile.TemporaryDirectory(prefix="livecap-") as d:
            print(f"running {case} ({args.window:g} s window) ...", file=sys.stderr, flush=True)
            try:
                r = run_case(kind, int(n), args.window, Path(d), args.model, tuple(args.monitor_args.split()))
            finally:
                for proc in SPAWNED:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait(30)
                SPAWNED.clear()
            results.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    lines = [table(results), ""]
    light = sorted((r for r in results if r["case"].startswith("light")), key=lambda r: r["beds"])
    per_bed = None
    if len(light) >= 2 and light[-1]["beds"] > light[0]["beds"]:
        per_bed = (light[-1]["rss_mb"] - light[0]["rss_mb"]) / (light[-1]["beds"] - light[0]["beds"])
        lines.append(f"RSS per extra light bed: {per_bed:.2f} MB ({light[0]['case']} -> {light[-1]['case']}).")
    full = [r for r in results if r["case"].startswith("full")]
    if full and light:
        f, l0 = full[0], light[0]
        lines.append(f"RSS per full bed (vs {l0['case']}, light beds ~ per-bed slope): "
                     f"{(f['rss_mb'] - l0['rss_mb'] + (per_bed or 0) * l0['beds']) / f['beds']:.2f} MB.")
    for r in results:
        if r["prometheus"]:
            lines.append(f"{r['case']}: beds per monitor {r['beds_per_shard']}; Prometheus scraping both: "
                         f"{json.dumps(r['prometheus'])}.")
    for r in results:
        ok = r["p99"] <= 1.0 and r["missing"] == 0 and r["doubled"] == 0
        lines.append(f"{r['case']}: p99 {'<=' if r['p99'] <= 1.0 else '>'} 1 s, "
                     f"{'every epoch exactly once' if r['missing'] == r['doubled'] == 0 else 'NOT exactly once'} "
                     f"({r['latency_n']} epochs timed, warm-up {r['warmup_s']:.0f} s, window {r['window_s']:.0f} s)"
                     f" -> {'meets' if ok else 'misses'} the target.")
    if per_bed is not None:
        lines.append(f"memory: {per_bed:.2f} MB per extra bed {'<=' if per_bed <= 5 else '>'} 5 MB target.")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps(
            {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": results,
             "per_extra_light_bed_mb": per_bed}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
