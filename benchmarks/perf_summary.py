"""The throughput targets (issue 11) against the latest benchmark results, as one table.

    python benchmarks/perf_summary.py [--readme README.md] [--throughput F] [--paper F] [--live F]

Reads the JSON the benchmarks write (nothing is typed in by hand):

- ``bench_throughput.py --out benchmarks/results/throughput.json``: ``score`` of an 8-h night vs
  YASA in the same run, step time at epoch 10 / 900, small-model int8 step;
- ``bench_paper_cpu.py --out benchmarks/results/paper_int8.json``: the paper-size model per epoch
  on one thread, fp32 and every int8 variant;
- ``bench_live_capacity.py --cases light:25 light:300 --out benchmarks/results/live_capacity_300.md`` (JSON beside it): real-time
  beds, p99 from an epoch's last sample to its event, every epoch once, memory per extra bed;

and times ``synthsleep --help`` itself (5 runs, median). Prints the table; with ``--readme``
rewrites the block between ``<!-- perf-summary:begin -->`` and ``<!-- perf-summary:end -->``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
BEGIN, END = "<!-- perf-summary:begin -->", "<!-- perf-summary:end -->"
BUNDLED = "synthsleep/assets/model.onnx"


def help_seconds(runs: int = 5) -> float:
    """Median wall time of ``synthsleep --help`` (the environment's console script) in a fresh process."""
    exe = str(Path(sys.executable).with_name("synthsleep"))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([exe, "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _row(target: str, measured: str, met: bool | None, source: str) -> dict[str, Any]:
    return {"target": target, "measured": measured, "met": met, "source": source}


def throughput_rows(d: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """Score vs YASA, small int8 step and the step-time ratio of the bundled model."""
    key = next(k for k in d["score"] if k.endswith(BUNDLED))
    score, steps, yasa = d["score"][key], d["steps"][key], d["yasa"]["seconds"]
    # what `synthsleep score` runs by default: the encoder on every core, prefetching
    name, run = next((k, v) for k, v in score.items() if k.startswith("new, encoder on") and k.endswith("threads"))
    ratio = run["seconds"] / yasa
    step_ratio = steps["step_epoch900_ms"] / steps["step_epoch10_ms"]
    when = f"{source} ({d['when']})"
    return [
        _row("`score` of an 8-h night <= 0.5 x YASA `SleepStaging`, same run",
             f"{run['seconds']:.1f} s vs YASA {yasa:.1f} s = **{ratio:.2f} x** ({name})", ratio <= 0.5, when),
        _row("small model int8 step <= 5 ms (1 thread)",
             f"dynamic int8 {steps['small_int8_dynamic_step_ms']:.1f} ms (fp32 {steps['small_fp32_step_ms']:.1f} ms)",
             steps["small_int8_dynamic_step_ms"] <= 5.0, when),
        _row("step time at epoch 900 / epoch 10 <= 1.1",
             f"{steps['step_epoch900_ms']:.1f} / {steps['step_epoch10_ms']:.1f} ms = {step_ratio:.2f}",
             step_ratio <= 1.1, when),
    ]


def paper_rows(results: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """Paper-size model per epoch, 1 thread: the fastest int8 variant of each backbone mode, over
    the encoder exports measured (plain, stacked)."""
    rows = []
    for mode in dict.fromkeys(r["mode"] for r in results):
        variants = [(f"{r['encoder']} {k.removeprefix('int8_')}", v, r["fp32_ms"]) for r in results
                    if r["mode"] == mode for k, v in r.items() if k.startswith("int8_")]
        name, best, fp32 = min(variants, key=lambda t: t[1]["ms"])
        label = {"frames": "27 windows, published", "epoch": "backbone once per epoch"}[mode]
        rows.append(_row(
            f"paper-size model <= 200 ms per epoch per thread, ORT int8 ({label})",
            f"{name} {best['ms']:.0f} ms (fp32 {fp32:.0f} ms; most likely stage as fp32 in "
            f"{best['stage_agreement']:.0%} of the synthetic test epochs; random weights: accuracy not measurable)",
            best["ms"] <= 200.0, source))
    return rows


def live_rows(d: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """300 real-time beds: p99 and exactly-once per case with >= 300 beds; memory per bed."""
    rows = []
    for r in d["results"]:
        if r["beds"] < 300:
            continue
        once = r["missing"] == 0 and r["doubled"] == 0
        rows.append(_row(
            f"{r['beds']} beds at real time on 2 cores ({r['case']}, {r['monitors']} monitor process(es)): "
            "every epoch once, p99 epoch end -> event <= 1 s",
            f"{r['epochs']} epochs, missing {r['missing']}, doubled {r['doubled']}; p99 {r['p99']:.2f} s",
            once and r["p99"] <= 1.0, source))
    if d.get("per_extra_light_bed_mb") is not None:
        mb = d["per_extra_light_bed_mb"]
        rows.append(_row("monitor memory <= 5 MB per extra bed", f"{mb:.2f} MB per extra light bed", mb <= 5.0,
                         source))
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| target | measured | met | from |", "| --- | --- | --- | --- |"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        lines.append(f"| {r['target']} | {r['measured']} | {met} | {r['source']} |")
    return "\n".join(lines)


def rewrite_block(readme: Path, text: str) -> None:
    """Replace what lies between the markers in ``readme`` with ``text``."""
    doc = readme.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{readme}: markers {BEGIN} / {END} not found")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--throughput", type=Path, default=RESULTS / "throughput.json")
    ap.add_argument("--paper", type=Path, default=RESULTS / "paper_int8.json")
    ap.add_argument("--live", type=Path, default=RESULTS / "live_capacity_300.json")
    ap.add_argument("--readme", type=Path, default=None, help="rewrite the summary block of this README")
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for path, make in ((args.throughput, throughput_rows), (args.paper, paper_rows), (args.live, live_rows)):
        if not path.is_file():
            print(f"{path}: missing (run the benchmark that writes it); its targets are left out", file=sys.stderr)
            continue
        rows += make(json.loads(path.read_text()), f"`{path.name}`")
    h = help_seconds()
    rows.append(_row("`synthsleep --help` <= 0.5 s", f"{h:.2f} s (median of 5 fresh processes)", h <= 0.5,
                     "this run"))
    text = table(rows)
    print(text)
    if args.readme:
        rewrite_block(args.readme, text)
        print(f"rewrote the summary block of {args.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
