"""``synthsleep synth``: write synthetic PSG nights as EDF+ files with their scoring annotations.

Nights of the same subject share ``SubjectParams`` (so subject-level splits mean something);
everything is determined by ``--seed``. Files: ``synth-s<subject>-n<night>.edf`` and a
``synth_manifest.json`` (seed, subject parameters, AHI and stage percentages per night).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from synthsleep.psg.clinical import RESPIRATORY_EVENT_TYPES
from synthsleep.psg.synthetic.night import synthesize_night, write_night
from synthsleep.psg.synthetic.stats import STAGE_NAMES
from synthsleep.psg.synthetic.subject import SubjectParams

logger = logging.getLogger(__name__)


def subject_params(seed: int, subject: int, ahi_range: tuple[float, float] | None) -> SubjectParams:
    """The parameters of subject ``subject`` of a run seeded ``seed`` (same for all its nights)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0, int(subject)]))
    return SubjectParams.draw(rng, ahi_range)


def night_seed(seed: int, subject: int, night: int) -> int:
    """The generator seed of night ``night`` of subject ``subject``."""
    return int(np.random.SeedSequence([int(seed), 1, int(subject), int(night)]).generate_state(1)[0])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``synthsleep synth``."""
    parser.add_argument("--nights", type=int, default=1, help="number of nights to write (default 1)")
    parser.add_argument("--hours", type=float, default=8.0, help="recording length per night in hours (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default 0)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if needed)")
    parser.add_argument("--ahi-range", nargs=2, type=float, metavar=("LO", "HI"), default=None,
                        help="draw each subject's AHI uniformly in [LO, HI] events/h "
                             "(default: a clinic-like mix from healthy to severe, 0-60)")
    parser.add_argument("--subjects", type=int, default=None,
                        help="number of distinct subjects; nights are dealt out round-robin "
                             "(default: one subject per night)")
    parser.add_argument("--workers", type=int, default=1,
                        help="generate nights in this many processes (same files as with 1; default 1)")
    parser.add_argument("--no-artifacts", action="store_true", help="clean signals (no line noise, movements, lead-off)")
    parser.add_argument("--validate", action="store_true",
                        help="after writing, compare stage statistics with the shipped real-hypnogram means")


def _check(args: argparse.Namespace) -> str | None:
    if args.nights < 1:
        return f"--nights must be >= 1, got {args.nights}"
    if not (0 < args.hours <= 48):
        return f"--hours must be in (0, 48], got {args.hours}"
    if args.workers < 1:
        return f"--workers must be >= 1, got {args.workers}"
    if args.subjects is not None and not (1 <= args.subjects <= args.nights):
        return f"--subjects must be between 1 and --nights ({args.nights}), got {args.subjects}"
    if args.ahi_range is not None:
        lo, hi = args.ahi_range
        if not (0 <= lo <= hi <= 200):
            return f"--ahi-range needs 0 <= LO <= HI <= 200, got {lo} {hi}"
    return None


def run(args: argparse.Namespace) -> int:
    """Generate and write the nights; print a summary table. Returns the exit status."""
    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    console = Console(stderr=True)
    err = _check(args)
    if err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        console.print(f"[red]error:[/red] cannot create output folder {args.out}: {exc}")
        return 2
    k = args.subjects or args.nights
    ahi_range = tuple(args.ahi_range) if args.ahi_range else None
    rows = []
    manifest = {"seed": args.seed, "hours": args.hours, "subjects": k, "ahi_range": ahi_range, "nights": []}
    t0 = time.perf_counter()
    jobs = [(i % k, i // k) for i in range(args.nights)]
    specs = [(args.seed, subj, nno, ahi_range, args.hours, not args.no_artifacts, str(args.out)) for subj, nno in jobs]
    try:
        if args.workers > 1 and len(specs) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=min(args.workers, len(specs))) as pool:
                results = list(tqdm(pool.map(_make_one, specs), total=len(specs), desc="synthetic nights", unit="night"))
        else:
            results = [_make_one(sp) for sp in tqdm(specs, desc="synthetic nights", unit="night")]
    except (OSError, ValueError) as exc:
        console.print(f"[red]error:[/red] cannot write a night to {args.out}: {exc}")
        return 1
    for entry in results:
        rows.append((entry["file"], entry["subject"], entry["hours"], entry["ahi"], entry["stage_pct"]))
        manifest["nights"].append(entry)
    (args.out / "synth_manifest.json").write_text(json.dumps(manifest, indent=1))
    table = Table(title=f"{args.nights} synthetic night(s) in {args.out} ({time.perf_counter() - t0:.1f} s)")
    table.add_column("file", no_wrap=True, min_width=max(len(r[0]) for r in rows))
    for col in ("hours", "AHI", *(f"{s} %" for s in STAGE_NAMES)):
        table.add_column(col, justify="right")
    for name, _subj, hours, ahi, pct in rows:
        table.add_row(name, f"{hours:.2f}", f"{ahi:.1f}", *(f"{pct[s]:.1f}" for s in STAGE_NAMES))
    Console().print(table)
    if args.validate:
        _validate(args.out, [r[0] for r in rows], Console())
    return 0


def _make_one(spec: tuple) -> dict:
    """Generate and write one night (top-level so worker processes can run it); its manifest entry."""
    seed0, subj, nno, ahi_range, hours, artifacts, out = spec
    params = subject_params(seed0, subj, ahi_range)
    seed = night_seed(seed0, subj, nno)
    night = synthesize_night(seed, hours, params, artifacts=artifacts)
    path = Path(out) / f"synth-s{subj:03d}-n{nno}.edf"
    write_night(night, path)
    pct = {name: 100.0 * float(np.mean(night.stages == c)) for c, name in enumerate(STAGE_NAMES)}
    n_ev = {t: sum(e.type == t for e in night.events) for t in RESPIRATORY_EVENT_TYPES}
    logger.info("wrote %s (%.2f h, AHI %s)", path, night.duration / 3600, night.ahi())
    return {"file": path.name, "subject": f"s{subj:03d}", "night": nno, "seed": seed,
            "hours": night.duration / 3600, "ahi": night.ahi(), "stage_pct": pct, "events": n_ev,
            "lead_off": [vars(x) for x in night.lead_off], "subject_params": params.to_dict()}


def _validate(out: Path, files: list[str], console) -> None:
    """Stage statistics of the written nights next to the real-hypnogram means shipped with the model."""
    from rich.table import Table

    from synthsleep.psg.annotations import load_scoring
    from synthsleep.psg.recording import open_recording
    from synthsleep.psg.synthetic.hypnogram import load_hypnogram_model
    from synthsleep.psg.synthetic.stats import hypnogram_stats

    real = load_hypnogram_model().get("real_stats", {})
    stats = []
    for f in files:
        sc = load_scoring(open_recording(out / f))
        stats.append(hypnogram_stats(sc.stages))
    table = Table(title="validation: stage statistics (synthetic read back from EDF vs real Sleep-EDF means)")
    for col in ("statistic", "synthetic", "real"):
        table.add_column(col)
    for key, val in real.items():
        vals = [s.get(key, np.nan) for s in stats]
        syn = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        table.add_row(key, f"{syn:.2f}", f"{val:.2f}")
    console.print(table)
