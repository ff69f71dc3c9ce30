"""``synthsleep score``: the live pipeline run offline over an EDF (or XDF) file.

Same artifact, same preprocessing (``psg.preprocess``), same state sequence and same event logic
(``bed_session.BedSession``) as the monitor, so its output is what the monitor would have said live.
Writes into the output folder: ``hypnogram.csv``, ``events.jsonl``, ``annotations.edf`` (EDF+
annotations, Sleep-EDF convention), ``report.json`` and ``hypnogram.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .alerts.rules import load_rules
from .alerts.sinks import JsonlSink
from .bed_session import BedSession, ScoredEpoch, resolve_model_path, write_hypnogram_csv
from .events import iso_utc
from .export.runtime import StepRuntime
from .export.split import DEFAULT_BATCH, SplitRuntime, load_split
from .psg.clinical import STAGE_EDF_TEXT, count_respiratory_events, events_per_hour, sleep_hours
from .psg.montage import describe_mapping, parse_overrides, resolve_channels
from .psg.preprocess import PreprocessParams, iter_recording_epochs
from .psg.recording import open_recording
from .report import format_statistics, sleep_statistics, write_report

log = logging.getLogger(__name__)


def score_recording(edf: str | Path, runtime: StepRuntime, overrides: dict[str, str] | None = None,
                    bed: str | None = None, rules_path: str | None = None,
                    progress: bool = False, on_mapping: Callable[[str], None] | None = None,
                    split: SplitRuntime | None | bool = True, batch: int = DEFAULT_BATCH,
                    vectorised: bool = True, prefetch: bool = True, stage_filter: bool = True
                    ) -> tuple[list[ScoredEpoch], list[Any], Any]:
    """Score one recording with the artifact; returns (scored epochs, events, recording).

    ``stage_filter``: stages are picked after the causal stage filter, as the monitor does
    (``psg.stage_filter``); False: the model's most probable stage (for comparison).

    ``on_mapping`` receives one line saying which channels were mapped and which were left out
    (``montage.describe_mapping``; the CLI prints it).

    ``split``: a :class:`SplitRuntime` of ``runtime``, True (load it when the artifact has one,
    :func:`load_split`) or False (the step graph epoch by epoch, as the live monitor runs it).
    With the split graphs the encoder runs over ``batch`` epochs per call and the temporal step
    per epoch after it; the per-epoch outputs equal the step graph's to float rounding (~1e-6).
    ``prefetch``: with the split graphs, the next chunk of epochs is read and preprocessed by a
    background thread while this one is encoded (the same numbers; 8-h night on 2 cores: 1.16x
    faster, ``benchmarks/bench_throughput.py``).

    Raises:
        RecordingError / MontageError / PreprocessError (all ValueError) for bad input.
    """
    rec = open_recording(edf)
    params = PreprocessParams.from_dict(runtime.preprocess_params)
    channel_map = resolve_channels([c.label for c in rec.channels], overrides, required=("eeg",),
                                   wanted=params.modalities, source=str(edf))
    mapping_text = f"{Path(edf).name}: " + describe_mapping(channel_map, [c.label for c in rec.channels],
                                                             params.modalities)
    log.info("%s", mapping_text)
    if on_mapping is not None:
        on_mapping(mapping_text)
    if split is True:
        split = load_split(runtime)
    session = BedSession(bed or Path(edf).stem, params.modalities, runtime.new_state(1),
                         runtime.model_hash, runtime.thresholds, load_rules(rules_path),
                         recorded=list(channel_map), stage_filter=stage_filter)
    session.time_origin = recording_start(rec)  # EDF onsets count from the recording's start
    events: list[Any] = []
    n_total = int(rec.duration // params.epoch_seconds)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_total, unit="epoch", desc=f"scoring {Path(edf).name}")

    def handle(epoch: Any, out: Any) -> None:
        nonlocal events
        events += session.handle(epoch, out.stage_prob[0], float(out.apnea_prob[0]),
                                 float(out.hypopnea_prob[0]))
        if bar is not None:
            bar.update(1)

    epochs = iter_recording_epochs(rec, channel_map, params, vectorised=vectorised)
    if not split:
        for epoch in epochs:
            x, present, side = runtime.inputs_from_epochs([epoch])
            out, session.model_state = runtime.step(x, present, session.model_state, side)
            handle(epoch, out)
    else:
        # one batch per encoder thread; the next chunk is read and preprocessed while this one
        # is encoded (ORT and most of numpy/scipy release the GIL)
        chunks = _chunks(epochs, batch * split.threads)
        for chunk in _prefetched(chunks) if prefetch else chunks:
            x, present, side = runtime.inputs_from_epochs(chunk)
            emb = split.encode(x, present, batch=batch)  # [n, D], the stateless part, batched
            for i, epoch in enumerate(chunk):
                out, session.model_state = split.step(emb[i:i + 1], present[i:i + 1], session.model_state,
                                                      side[i:i + 1])
                handle(epoch, out)
    if bar is not None:
        bar.close()
    events += session.finish()
    return session.scored, events, rec


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _prefetched(items: Iterator[Any], depth: int = 1) -> Iterator[Any]:
    """The items of ``items`` in order, computed up to ``depth`` ahead by a background thread.
    An exception raised while producing an item is raised here, at that item; a consumer that
    stops early stops the thread at its next item."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(kind: str, value: Any) -> bool:
        while not stop.is_set():
            try:
                q.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put("item", item):
                    return
            put("end", None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put("error", exc)

    worker = threading.Thread(target=produce, name="score-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        worker.join(timeout=5)


def _reference_stages(edf: Path, rec: Any, n_epochs: int) -> tuple[np.ndarray | None, float | None]:
    """The recording's own stages per epoch and true AHI, when it has a scoring."""
    try:
        from .psg.annotations import epoch_labels, find_scoring_for, load_scoring

        src = find_scoring_for(edf)
        if src is None:
            return None, None
        scoring = load_scoring(src, recording=rec, n_epochs=n_epochs)
        stages, _, _ = epoch_labels(scoring, n_epochs)
        if not (stages >= 0).any():
            return None, None
        typed = scoring.has_resp and not any(e.type == "unspecified" for e in scoring.events)
        # unknown event types: no AHI
        true_ahi = events_per_hour(sum(count_respiratory_events(scoring.events)), sleep_hours(stages)) \
            if typed else None
        return stages, true_ahi
    except (ValueError, OSError) as exc:
        log.warning("%s: its own annotations could not be read (%s); no agreement reported", edf, exc)
        return None, None


def recording_start(rec: Any) -> float | None:
    """The recording's start as seconds since 1970, UTC (EDF headers carry no time zone: the
    date-time written is taken as UTC); None when the header has none."""
    start = rec.start_datetime
    return None if start is None else start.replace(tzinfo=dt.timezone.utc).timestamp()


def write_annotations_edf(path: Path, scored: list[ScoredEpoch], events: list[Any],
                          start: dt.datetime | None = None) -> None:
    """EDF+ file of our scoring: stages in Sleep-EDF convention and respiratory episodes; ``start``:
    the scored recording's start date-time (its onsets count from there)."""
    from .psg.recording import write_edf

    ann = [(s.onset, 30.0, STAGE_EDF_TEXT[s.stage]) for s in scored]
    for e in events:
        if e.type == "apnea":
            ann.append((e.onset, e.duration, "Apnea"))
        elif e.type == "hypopnea":
            ann.append((e.onset, e.duration, "Hypopnea"))
    ann.sort(key=lambda a: a[0])
    write_edf(path, [], ann, start=start)


def score_to_folder(edf: str | Path, out: str | Path, runtime: StepRuntime, split: SplitRuntime | None | bool = True,
                    overrides: dict[str, str] | None = None, rules_path: str | None = None,
                    progress: bool = False, on_mapping: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Score ``edf`` and write ``hypnogram.csv``, ``events.jsonl``, ``annotations.edf``,
    ``report.json`` and ``hypnogram.png`` into ``out``; returns a summary (file, epochs,
    seconds, statistics, agreement, true AHI). Raises like :func:`score_recording`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    scored, events, rec = score_recording(edf, runtime, overrides, rules_path=rules_path, progress=progress,
                                          on_mapping=on_mapping, split=split)
    elapsed = time.perf_counter() - t0
    write_hypnogram_csv(out / "hypnogram.csv", scored)
    events_path = out / "events.jsonl"
    events_path.unlink(missing_ok=True)
    sink = JsonlSink(events_path)
    sink.write(events)
    sink.close()
    write_annotations_edf(out / "annotations.edf", scored, events, start=rec.start_datetime)
    stages = [s.stage for s in scored]
    reference, true_ahi = _reference_stages(Path(edf), rec, len(scored))
    event_dicts = [e.to_dict() for e in events]
    report = write_report(out, stages, np.stack([s.stage_prob for s in scored]) if scored else None,
                          event_dicts, reference,
                          meta={"recording": str(edf), "model": runtime.model_hash,
                                "start_time": iso_utc(t) if (t := recording_start(rec)) is not None else None,
                                "true_ahi": true_ahi, "seconds": elapsed},
                          title=f"{Path(edf).name} — synthsleep {runtime.model_hash[:12]}")
    return {"file": str(edf), "out": str(out), "epochs": len(scored), "seconds": elapsed,
            "statistics": sleep_statistics(stages, event_dicts), "agreement": report.get("agreement"),
            "true_ahi": true_ahi, "error": None}


def find_recordings(folder: str | Path) -> list[Path]:
    """EDF/BDF recordings under ``folder`` (recursive, sorted), annotation-only files
    (``*Hypnogram*``, ``*-annotations``, ``*_scoring``) left out."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in _EDF_SUFFIXES
                  and not _ANNOTATION_RE.search(p.stem))


_EDF_SUFFIXES = (".edf", ".bdf", ".rec", ".xdf", ".xdfz")  # XDF: LabRecorder (psg/xdf.py)
_ANNOTATION_RE = re.compile(r"hypnogram|[-_]annotations?$|[-_]scoring$", re.IGNORECASE)
_WORKER_RUNTIME: dict[str, tuple[StepRuntime, SplitRuntime | None]] = {}


def _score_one(edf: str, out: str, model: str, overrides: dict[str, str] | None, rules: str | None,
               threads: int) -> dict[str, Any]:
    """Worker: score one recording into ``out`` (artifact loaded once per process); never raises,
    a failure comes back as ``error``."""
    t0 = time.perf_counter()
    try:
        if model not in _WORKER_RUNTIME:
            rt = StepRuntime(model, threads=threads)
            _WORKER_RUNTIME[model] = (rt, load_split(rt, threads=threads))
        rt, split = _WORKER_RUNTIME[model]
        return score_to_folder(edf, out, rt, split if split is not None else False, overrides, rules)
    except Exception as exc:  # noqa: BLE001 - one bad file is reported, the others go on
        msg = str(exc) or type(exc).__name__
        if Path(edf).name not in msg:
            msg = f"{Path(edf).name}: {msg}"
        log.warning("%s", msg)
        return {"file": edf, "out": out, "epochs": 0, "seconds": time.perf_counter() - t0, "error": msg}


def score_folder(folder: str | Path, out: str | Path, model: str, overrides: dict[str, str] | None = None,
                 rules_path: str | None = None, workers: int | None = None, progress: bool = True
                 ) -> list[dict[str, Any]]:
    """Score every recording under ``folder`` into ``out/<relative path without suffix>/``,
    one recording per worker process (default: one per core, ONNX Runtime on 1 thread each).

    Returns the per-file summaries in file order (``error`` set for a file that failed).
    Raises FileNotFoundError when the folder holds no recording.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed

    folder, out = Path(folder), Path(out)
    files = find_recordings(folder)
    if not files:
        raise FileNotFoundError(f"no EDF/BDF recordings under {folder}")
    jobs = [(str(f), str(out / f.relative_to(folder).with_suffix("")), model, overrides, rules_path, 1)
            for f in files]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="file", desc=f"scoring {folder.name or folder}", dynamic_ncols=True)
    results: dict[int, dict[str, Any]] = {}
    try:
        if workers == 1:
            for i, job in enumerate(jobs):
                results[i] = _score_one(*job)
                if bar is not None:
                    bar.set_postfix_str(f"{Path(job[0]).name}: {'failed' if results[i]['error'] else 'ok'}")
                    bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futs = {pool.submit(_score_one, *job): i for i, job in enumerate(jobs)}
                for f in as_completed(futs):
                    i = futs[f]
                    try:
                        results[i] = f.result()
                    except Exception as exc:  # noqa: BLE001 - a dead worker: record, go on
                        results[i] = {"file": jobs[i][0], "out": jobs[i][1], "epochs": 0, "seconds": 0.0,
                                      "error": f"{Path(jobs[i][0]).name}: worker failed: {type(exc).__name__}: {exc}"}
                    if bar is not None:
                        bar.set_postfix_str(f"{Path(jobs[i][0]).name}: {'failed' if results[i]['error'] else 'ok'}")
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return [results[i] for i in range(len(jobs))]


def format_folder_summary(results: list[dict[str, Any]], seconds: float) -> str:
    """One line per recording (epochs, time, TST, AHI, agreement or the error), then the totals."""
    lines = []
    for r in results:
        name = Path(r["file"]).name
        if r["error"]:
            lines.append(f"  FAILED  {name}: {r['error']}")
            continue
        st = r["statistics"]
        ahi = st.ahi
        agree = r.get("agreement")
        lines.append(f"  ok      {name}: {r['epochs']} epochs in {r['seconds']:.1f} s"
                     + f", TST {st.total_sleep_time:.0f} min"
                     + (f", AHI {ahi:.1f}/h" if isinstance(ahi, (int, float)) else ", AHI n/a")
                     + (f", accuracy {agree['accuracy']:.3f} vs its own scoring" if agree else ""))
    ok = [r for r in results if not r["error"]]
    n_ep = sum(r["epochs"] for r in ok)
    lines.append(f"scored {len(ok)} of {len(results)} recordings, {n_ep} epochs in {seconds:.1f} s"
                 + (f" ({n_ep / seconds:.0f} epochs/s)" if seconds > 0 else "")
                 + (f"; {len(results) - len(ok)} failed" if len(ok) < len(results) else ""))
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("edf", help="recording to score (EDF, EDF+, BDF, or XDF from LabRecorder: its marker streams "
                                "are kept as annotations, i.e. as the file's own scoring when they hold stages), "
                                "or a folder of them (searched recursively)")
    p.add_argument("--out", required=True, help="output folder (for a folder: one sub-folder per recording)")
    p.add_argument("--model", default=None, help="ONNX artifact (default: the bundled model)")
    p.add_argument("--channel", action="append", default=[], metavar="MODALITY=LABEL",
                   help="map a channel explicitly, e.g. --channel eeg='C3-A2' (repeatable)")
    p.add_argument("--rules", default=None, help="alert rules TOML (default: the shipped rules)")
    p.add_argument("--threads", type=int, default=None,
                   help="one file: encoder batches run on this many threads at once (default: every "
                        "core; exact, the same numbers as 1; 8-h night on 2 cores: 1.5x faster)")
    p.add_argument("--workers", type=int, default=None,
                   help="for a folder: recordings scored at once, one process each (default: every core)")
    p.add_argument("--step-by-step", action="store_true",
                   help="run the step graph epoch by epoch (as live) instead of the batched encoder")


def run(args: argparse.Namespace) -> int:
    model = resolve_model_path(args.model)
    overrides = parse_overrides(args.channel)
    if Path(args.edf).is_dir():
        t0 = time.perf_counter()
        results = score_folder(args.edf, args.out, model, overrides, args.rules, workers=args.workers)
        print(format_folder_summary(results, time.perf_counter() - t0))
        return 0 if all(not r["error"] for r in results) else 1
    threads = max(1, int(args.threads or os.cpu_count() or 1))
    runtime = StepRuntime(model, threads=1)
    split: SplitRuntime | None | bool = False if args.step_by_step else load_split(runtime, threads=threads)
    if split is None:
        print(f"{model} has no (current) split encoder/temporal graphs: scoring epoch by epoch with the "
              f"step graph (same numbers, slower; re-export to get them)")
    res = score_to_folder(args.edf, args.out, runtime, split if split is not None else False, overrides,
                          args.rules, progress=True, on_mapping=print)
    out = Path(args.out)
    print(f"scored {res['epochs']} epochs of {args.edf} in {res['seconds']:.1f} s")
    print(format_statistics(res["statistics"]))
    agree = res["agreement"]
    if agree:
        true_ahi = res["true_ahi"]
        print(f"agreement with the file's own scoring: accuracy {agree['accuracy']:.3f}, "
              f"kappa {agree['kappa']:.3f} over {agree['epochs']} epochs"
              + (f"; true AHI {true_ahi:.1f}/h" if true_ahi is not None else ""))
    print(f"wrote {out}/hypnogram.csv, events.jsonl, annotations.edf, report.json, hypnogram.png")
    return 0
