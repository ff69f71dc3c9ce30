"""``synthsleep demo``: the whole product on one machine, no amplifier needed.

A synthetic night with known truth is written as EDF+, replayed live over LSL on loopback at
accelerated speed, monitored with the bundled model (console view, Prometheus metrics, JSONL
events, LSL markers), and at the end the live output is compared with the truth and a night
report is written.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from .alerts.metrics import MonitorMetrics, start_metrics_server
from .bed_session import resolve_model_path, write_hypnogram_csv
from .export.runtime import StepRuntime
from .monitor import BedSpec, Monitor, parse_hostport, render_console
from .psg.clinical import count_respiratory_events, events_per_hour, sleep_hours
from .report import format_statistics, sleep_statistics, stage_agreement, write_report

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hours", type=float, default=6.0, help="length of the synthetic night (default 6)")
    p.add_argument("--seed", type=int, default=2024, help="seed of the synthetic night (default 2024)")
    p.add_argument("--speed", type=float, default=240.0,
                   help="replay speed, x real time (default 240: 6 h in 90 s)")
    p.add_argument("--edf", default=None, help="replay this EDF instead of a synthetic night")
    p.add_argument("--model", default=None, help="ONNX artifact (default: the bundled model)")
    p.add_argument("--out", default="demo-out", help="output folder (default ./demo-out)")
    p.add_argument("--metrics", default="127.0.0.1:9109", metavar="HOST:PORT",
                   help="Prometheus endpoint (default 127.0.0.1:9109; port 0 picks a free one)")
    p.add_argument("--http", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="ward view web page (default: 127.0.0.1 on a free port, printed)")
    p.add_argument("--no-http", action="store_true", help="do not serve the ward view")
    p.add_argument("--no-console", action="store_true", help="no live console view")


def _night(args: argparse.Namespace, out: Path):
    """(edf path, truth stages per epoch or None, true respiratory events or None)."""
    if args.edf:
        return Path(args.edf), None, None
    from .psg.synthetic import synthesize_night, write_night

    path = out / f"synthetic-night-seed{args.seed}-{args.hours:g}h.edf"
    print(f"synthesising a {args.hours:g}-hour night (seed {args.seed}) ...", flush=True)
    night = synthesize_night(seed=args.seed, hours=args.hours)
    if not path.exists():
        write_night(night, path)
    return path, np.asarray(night.stages), list(night.events)


def run(args: argparse.Namespace) -> int:
    from .stream.player import ReplayPlayer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runtime = StepRuntime(resolve_model_path(args.model), threads=1)
    edf, truth, true_events = _night(args, out)
    name = f"synthsleep-demo-{uuid.uuid4().hex[:8]}"
    metrics = MonitorMetrics()
    host, port = parse_hostport(args.metrics)
    try:
        server = start_metrics_server(metrics, port=port, host=host)
    except OSError:
        server = start_metrics_server(metrics, port=0, host=host)
    events_path = out / "events.jsonl"
    events_path.unlink(missing_ok=True)
    player = ReplayPlayer(str(edf), name=name, speed=args.speed, wait_consumers=30.0, linger=20.0)
    player.start()
    mon = Monitor([BedSpec("demo", name)], runtime, events_path, metrics=metrics, resolve_timeout=10.0,
                  max_buflen=int(6 * 3600))
    mon.beds["demo"].session.keep_history = True
    ward = None
    if not args.no_http:
        from .ward.server import serve_monitor

        ward = serve_monitor(mon, *parse_hostport(args.http, 0, "--http"))
    print(f"replaying {edf.name} at {args.speed:g}x as LSL stream '{name}'; metrics at {server.url}"
          + (f"; ward view at {ward.url}" if ward else ""), flush=True)
    stop = threading.Event()
    t0 = time.monotonic()
    try:
        if args.no_console:
            mon.run(stop, idle_exit=8.0)
        else:
            from rich.live import Live

            with Live(render_console(mon), refresh_per_second=4) as live:
                mon.run(stop, idle_exit=8.0, on_round=lambda m: live.update(render_console(m)))
    except KeyboardInterrupt:
        stop.set()
    finally:
        player.stop()
        mon.close(flush=True)
        if ward:
            ward.stop()
    wall = time.monotonic() - t0
    scraped = _scrape(server.url)
    server.stop()

    session = mon.beds["demo"].session
    scored = session.scored
    stages = [s.stage for s in scored]
    from .alerts.sinks import read_events

    events = [e.to_dict() for e in read_events(events_path)]
    write_hypnogram_csv(out / "hypnogram.csv", scored)
    ref = truth[: len(stages)] if truth is not None else None
    meta = {"recording": str(edf), "model": runtime.model_hash, "replay_speed": args.speed,
            "wall_seconds": wall, "start_time": scored[0].time if scored else None}
    if true_events is not None:
        meta["true_ahi"] = events_per_hour(sum(count_respiratory_events(true_events)), sleep_hours(truth))
    write_report(out, stages, np.stack([s.stage_prob for s in scored]) if scored else None,
                          events, ref, meta, title=f"synthsleep demo — {edf.name}",
                          origin=scored[0].onset - 30.0 * scored[0].index if scored else 0.0)
    stats = sleep_statistics(stages, events)
    print()
    print(f"== synthsleep demo: {len(scored)} epochs ({len(scored) / 120:.1f} h of signal) scored live in {wall:.0f} s")
    print(format_statistics(stats))
    if ref is not None:
        agree = stage_agreement(stages, ref)
        if agree:
            print(f"live vs truth: staging accuracy {agree.accuracy:.3f}, kappa {agree.kappa:.3f}; per-stage F1 "
                  + ", ".join(f"{k} {v:.2f}" for k, v in agree.per_stage_f1.items()))
        def per_hour(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.1f}/h"

        print(f"AHI: estimated {per_hour(stats.ahi)}, true {per_hour(meta.get('true_ahi'))}")
    counts: dict[str, int] = {}
    for e in events:
        counts[e["type"]] = counts.get(e["type"], 0) + 1
    print("events: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if scraped:
        print(f"metrics scraped from {server.url}: {scraped}")
    print(f"wrote {out}/events.jsonl, hypnogram.csv, report.json, hypnogram.png")
    return 0


def _scrape(url: str) -> str:
    """A one-line digest of the metrics endpoint (proves it served real numbers)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
    except OSError as exc:
        return f"(scrape failed: {exc})"
    vals = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in ("synthsleep_epochs_processed_total", "synthsleep_ahi"):
                vals[s.name] = s.value
    return ", ".join(f"{k} {v:g}" for k, v in vals.items())
