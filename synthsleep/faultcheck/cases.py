"""The faults of the fault matrix, each a small scenario on real LSL and real files.

Every case returns ``(verdict, detail)``: ``passed``; ``lost`` (an epoch's events are missing or
a usable signal was thrown away); ``doubled`` (an epoch written twice); ``garbage`` (confident
output from no usable signal, or a fault accepted silently); a case that raises is ``crashed``.
Cases use only the monitor's public API (``Monitor``, ``BedSpec``, ``poll_once``, ``close``) and
read the events file as raw JSON, so the same matrix runs against older versions of the code.
Why one module (~580 lines): it is the catalogue of the matrix, 34 small independent cases over
one harness; split, the matrix would no longer read as one table.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pylsl

from synthsleep.monitor import BedSpec, Monitor

from .harness import (
    EPOCH,
    LABELS,
    UNITS,
    connected,
    drive,
    make_outlet,
    push,
    read_jsonl,
    scored_up_to,
    signals,
    stage_events,
    unique_name,
)

Verdict = tuple[str, str]


@dataclass
class Ctx:
    """What every case gets: the artifact, a loaded runtime and a fresh folder."""

    artifact: Path
    runtime: Any
    tmp: Path


@dataclass
class BedFeed:
    """One bed's stream: its outlet, the samples it will push and whether it should be scored."""

    bed: str
    outlet: pylsl.StreamOutlet
    data: np.ndarray
    rate: float = 100.0
    good: bool = True
    t0: float = field(default_factory=pylsl.local_clock)


def _feed(bed: str, data: np.ndarray | None = None, rate: float = 100.0, good: bool = True,
          n_epochs: float = 4, **outlet_kw: Any) -> tuple[BedFeed, str]:
    name = unique_name()
    x = signals(n_epochs * EPOCH, rate) if data is None else data
    return BedFeed(bed, make_outlet(name, rate, **outlet_kw), x, rate, good), name


def _monitor(ctx: Ctx, streams: dict[str, str], events: Path, state: Path | None = None,
             metrics: Any = None) -> Monitor:
    return Monitor([BedSpec(b, s) for b, s in streams.items()], ctx.runtime, events, state, metrics,
                   markers=False, resolve_timeout=2.0, max_buflen=600)


def _night(ctx: Ctx, feeds: Sequence[BedFeed], streams: dict[str, str], events: Path,
           state: Path | None = None, metrics: Any = None, flush: bool = True) -> Monitor:
    """Connect, push every bed's data, score every good bed's complete epochs, close."""
    mon = _monitor(ctx, streams, events, state, metrics)
    try:
        good = [f for f in feeds if f.good]
        if not drive(mon, connected([f.outlet for f in good]), 30):
            raise TimeoutError("the monitor did not subscribe to the good beds' streams in 30 s")
        for f in feeds:
            push(f.outlet, f.data, f.rate, f.t0)
        for f in good:
            last = int(len(f.data) / f.rate // EPOCH) - 1
            drive(mon, scored_up_to(mon, f.bed, last), 30)
        bad = [f.bed for f in feeds if not f.good]
        if bad:  # give faulted beds time to be noticed (resolve + open)
            drive(mon, lambda: all(getattr(mon.beds[b], "faults", 0) for b in bad), 15)
    finally:
        mon.close(flush=flush)
    return mon


def _epochs(events: list[dict], bed: str) -> list[tuple[str, int]]:
    return [(str(e.get("session", "")), int(e["epoch_index"])) for e in stage_events(events, bed)]


def _count_check(events: list[dict], bed: str, want: int) -> Verdict:
    got = _epochs(events, bed)
    if len(set(got)) != len(got):
        return "doubled", f"{len(got) - len(set(got))} epoch(s) of bed {bed} written twice"
    if len(got) < want:
        return "lost", f"bed {bed}: {len(got)} of {want} epochs in the events file"
    return "passed", f"bed {bed}: {len(got)} epochs, {len({s for s, _ in got})} session(s)"


# -------------------------------------------------------------------------------------------------
# 1. state and sessions
# -------------------------------------------------------------------------------------------------


def _two_nights(ctx: Ctx, between: Callable[[Path], None] | None, state: bool = True) -> Verdict:
    events, sdir = ctx.tmp / "events.jsonl", (ctx.tmp / "state" if state else None)
    for night in range(2):
        if night == 1 and between is not None and sdir is not None:
            between(sdir / "bed-b.npz")
        feed, name = _feed("b", n_epochs=3)
        _night(ctx, [feed], {"b": name}, events, sdir)
    return _count_check(read_jsonl(events), "b", 6)


def second_night_same_events_file(ctx: Ctx) -> Verdict:
    """No state folder; a second night appended to the same events file."""
    return _two_nights(ctx, None, state=False)


def state_missing(ctx: Ctx) -> Verdict:
    """The state file is gone (deleted, new disk) but the events file has the first night."""
    return _two_nights(ctx, lambda p: p.unlink())


def state_truncated(ctx: Ctx) -> Verdict:
    def cut(p: Path) -> None:
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    verdict = _two_nights(ctx, cut)
    aside = list((ctx.tmp / "state").glob("bed-b.npz.corrupt-*"))
    if verdict[0] == "passed" and not aside:
        return "garbage", "the truncated state file was not moved aside"
    return verdict


def state_garbage_bytes(ctx: Ctx) -> Verdict:
    return _two_nights(ctx, lambda p: p.write_bytes(os.urandom(3000)))


def _edit_meta(path: Path, edit: Callable[[dict], None]) -> None:
    """Rewrite the ``meta`` JSON of a saved state (a valid file with a wrong content)."""
    import json

    with np.load(path, allow_pickle=False) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    edit(meta)
    arrays["meta"] = np.array(json.dumps(meta))
    with path.open("wb") as f:
        np.savez(f, **arrays)


def state_other_model(ctx: Ctx) -> Verdict:
    return _two_nights(ctx, lambda p: _edit_meta(p, lambda m: m.update(model_hash="sha256:another-model")))


def state_bad_stream_position(ctx: Ctx) -> Verdict:
    """A readable state whose stream position is nonsense: a new session, not a retry loop."""
    return _two_nights(ctx, lambda p: _edit_meta(p, lambda m: m["stream"].update(origin="abc")))


def resume_valid_state(ctx: Ctx) -> Verdict:
    """A monitor stopped after 3 epochs and restarted on the same stream: 6 epochs, once each."""
    events, sdir = ctx.tmp / "events.jsonl", ctx.tmp / "state"
    feed, name = _feed("b", n_epochs=6)
    first = BedFeed("b", feed.outlet, feed.data[: int(3 * EPOCH * feed.rate)], feed.rate, True, feed.t0)
    _night(ctx, [first], {"b": name}, events, sdir, flush=False)
    rest = BedFeed("b", feed.outlet, feed.data[int(3 * EPOCH * feed.rate):], feed.rate, True,
                   feed.t0 + 3 * EPOCH)
    mon = _monitor(ctx, {"b": name}, events, sdir)
    try:
        drive(mon, connected([feed.outlet]), 30)
        push(rest.outlet, rest.data, rest.rate, rest.t0)
        drive(mon, scored_up_to(mon, "b", 5), 30)
    finally:
        mon.close(flush=True)
    evs = read_jsonl(events)
    verdict = _count_check(evs, "b", 6)
    sessions = {s for s, _ in _epochs(evs, "b")}
    if verdict[0] == "passed" and len(sessions) != 1:
        return "garbage", f"a valid resume started a new session ({len(sessions)} sessions)"
    if verdict[0] == "passed" and sorted(i for _, i in _epochs(evs, "b")) != list(range(6)):
        return "lost", f"epochs {sorted(i for _, i in _epochs(evs, 'b'))}, expected 0..5"
    return verdict


def _second_monitor_refused(ctx: Ctx, same_events: bool) -> Verdict:
    first = _monitor(ctx, {"b": unique_name()}, ctx.tmp / "e1.jsonl", ctx.tmp / "state")
    try:
        second = _monitor(ctx, {"b": unique_name()}, ctx.tmp / ("e1.jsonl" if same_events else "e2.jsonl"),
                          None if same_events else ctx.tmp / "state")
    except Exception as exc:  # noqa: BLE001 - judged by its message
        msg = str(exc)
        return ("passed", msg[:120]) if "in use" in msg else ("crashed", f"{type(exc).__name__}: {msg[:200]}")
    finally:
        first.close(flush=False)
    second.close(flush=False)
    return "garbage", "a second monitor was allowed on the same " + ("events file" if same_events else "state folder")


def two_monitors_one_state_dir(ctx: Ctx) -> Verdict:
    return _second_monitor_refused(ctx, same_events=False)


def two_monitors_one_events_file(ctx: Ctx) -> Verdict:
    return _second_monitor_refused(ctx, same_events=True)


def _cli(ctx: Ctx, args: list[str]) -> subprocess.CompletedProcess | None:
    """The monitor CLI that should refuse to start; None when it ran on for 30 s instead."""
    cmd = [sys.executable, "-m", "synthsleep.cli", "monitor", "--stream", unique_name("nobody"), "--model",
           str(ctx.artifact), "--no-console", "--no-markers", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        return None


def _cli_verdict(proc: subprocess.CompletedProcess | None, want: str) -> Verdict:
    if proc is None:
        return "garbage", "accepted: the second monitor started and ran on"
    if "Traceback" in proc.stderr:
        return "crashed", proc.stderr.strip().splitlines()[-1][:200]
    if proc.returncode != 0 and want in proc.stderr:
        return "passed", proc.stderr.strip().splitlines()[-1][:160]
    return "garbage", f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"


def cli_events_file_locked(ctx: Ctx) -> Verdict:
    events = ctx.tmp / "events.jsonl"
    mon = _monitor(ctx, {"b": unique_name()}, events)
    try:
        return _cli_verdict(_cli(ctx, ["--events", str(events)]), "in use")
    finally:
        mon.close(flush=False)


def cli_state_dir_locked(ctx: Ctx) -> Verdict:
    mon = _monitor(ctx, {"b": unique_name()}, ctx.tmp / "e1.jsonl", ctx.tmp / "state")
    try:
        return _cli_verdict(_cli(ctx, ["--events", str(ctx.tmp / "e2.jsonl"), "--state-dir",
                                       str(ctx.tmp / "state")]), "in use")
    finally:
        mon.close(flush=False)


def cli_metrics_port_busy(ctx: Ctx) -> Verdict:
    from synthsleep.alerts.metrics import MonitorMetrics, start_metrics_server

    server = start_metrics_server(MonitorMetrics(), port=0)
    try:
        return _cli_verdict(_cli(ctx, ["--events", str(ctx.tmp / "e.jsonl"), "--metrics",
                                       f"127.0.0.1:{server.port}"]), "in use")
    finally:
        server.stop()


def metrics_ipv6_any(ctx: Ctx) -> Verdict:
    """``--metrics [::]:0``: served on IPv6, or a clear error (never a traceback)."""
    from synthsleep.alerts.metrics import MonitorMetrics, start_metrics_server
    from synthsleep.monitor import parse_hostport

    try:
        host, port = parse_hostport("[::]:0")
    except ValueError as exc:
        return "passed", f"clear error: {exc}"
    try:
        server = start_metrics_server(MonitorMetrics(), port=port, host=host)
    except OSError as exc:
        return "passed", f"clear error: {exc}"
    server.stop()
    return ("passed", f"served at {server.url}") if host == "::" else ("garbage", f"'[::]' parsed as {host!r}")


def events_file_private(ctx: Ctx) -> Verdict:
    events = ctx.tmp / "events.jsonl"
    _monitor(ctx, {"b": unique_name()}, events).close(flush=False)
    mode = events.stat().st_mode & 0o777
    return ("passed", "0600") if mode == 0o600 else ("garbage", f"events file created {mode:04o}, not 0600")


# -------------------------------------------------------------------------------------------------
# 2 + 4. quality: dropouts, flat, rails, frozen, rates
# -------------------------------------------------------------------------------------------------


def _one_bed(ctx: Ctx, data: np.ndarray, rate: float = 100.0, **kw: Any) -> list[dict]:
    feed, name = _feed("b", data=data, rate=rate, **kw)
    events = ctx.tmp / "events.jsonl"
    _night(ctx, [feed], {"b": name}, events)
    return read_jsonl(events)


def _resp_gated(events: list[dict], epoch: int) -> Verdict:
    st = [e for e in stage_events(events, "b") if e["epoch_index"] == epoch]
    if not st:
        return "lost", f"no stage event for epoch {epoch}"
    apneas = [e for e in events if e["type"] in ("apnea", "hypopnea")
              and e["value"]["first_epoch"] <= epoch <= e["value"]["last_epoch"]]
    if apneas:
        return "garbage", f"{apneas[0]['type']} scored in epoch {epoch} from a missing airflow stretch"
    if st[0]["value"].get("resp_scored", True):
        return "garbage", f"epoch {epoch} respiratory-scored with its airflow partly missing"
    return "passed", f"epoch {epoch}: resp_scored false ({st[0]['value'].get('resp_reason', 'airflow absent')})"


def airflow_dropout_12s(ctx: Ctx) -> Verdict:
    x = signals(4 * EPOCH)
    x[int(65 * 100):int(77 * 100), LABELS.index("Resp Airflow")] = np.nan  # 12 s inside epoch 2
    return _resp_gated(_one_bed(ctx, x), 2)


def airflow_nan_2s(ctx: Ctx) -> Verdict:
    x = signals(4 * EPOCH)
    x[int(70 * 100):int(72 * 100), LABELS.index("Resp Airflow")] = np.nan  # 2 s: present, partial
    return _resp_gated(_one_bed(ctx, x), 2)


def _all_unknown(events: list[dict], what: str) -> Verdict:
    st = stage_events(events, "b")
    if not st:
        return "lost", "no stage events"
    staged = [e for e in st if e["value"]["stage"] != "unknown"]
    if staged:
        return "garbage", f"{len(staged)}/{len(st)} epochs staged {staged[0]['value']['stage']} from {what}"
    resp = [e for e in events if e["type"] in ("apnea", "hypopnea")]
    if resp:
        return "garbage", f"{len(resp)} respiratory event(s) from {what}"
    return "passed", f"{len(st)} epochs unknown: {st[0]['value'].get('reason', '(no reason given)')[:100]}"


def all_channels_flat(ctx: Ctx) -> Verdict:
    x = np.tile(np.array([5.0, -3.0, 1.0, 20.0, 0.5, 0.5, 0.5, 97.0], np.float32), (int(4 * EPOCH * 100), 1))
    return _all_unknown(_one_bed(ctx, x), "flat channels")


def eeg_eog_flat(ctx: Ctx) -> Verdict:
    x = signals(4 * EPOCH)
    x[:, :2] = 3.0
    return _all_unknown(_one_bed(ctx, x), "EMG/ECG/respiration with EEG and EOG flat")


def eeg_eog_at_rails(ctx: Ctx) -> Verdict:
    x = signals(4 * EPOCH)
    x[:, :2] = np.clip(x[:, :2] * 50.0, -250.0, 250.0)  # saturated amplifier
    return _all_unknown(_one_bed(ctx, x), "EEG/EOG saturated at the rails")


def eeg_eog_square(ctx: Ctx) -> Verdict:
    x = signals(4 * EPOCH)
    t = np.arange(len(x)) / 100.0
    x[:, :2] = (50.0 * np.sign(np.sin(2 * np.pi * 1.0 * t)))[:, None]  # calibration square wave
    return _all_unknown(_one_bed(ctx, x), "a square calibration signal")


def all_nan(ctx: Ctx) -> Verdict:
    x = np.full((int(4 * EPOCH * 100), len(LABELS)), np.nan, np.float32)
    return _all_unknown(_one_bed(ctx, x), "NaN")


def eeg_7hz(ctx: Ctx) -> Verdict:
    return _all_unknown(_one_bed(ctx, signals(4 * EPOCH, rate=7.0), rate=7.0), "EEG sampled at 7 Hz")


def eeg_50hz_dreams(ctx: Ctx) -> Verdict:
    """DREAMS records everything at 50 Hz: its EEG must still be read. An epoch the model reads
    and is unsure of (``unknown`` for low confidence: a property of the model on this artificial
    signal) is read; one whose EEG was judged unusable is lost."""
    events = _one_bed(ctx, signals(4 * EPOCH, rate=50.0), rate=50.0)
    st = stage_events(events, "b")
    unread = [e for e in st if e["value"]["stage"] == "unknown"
              and not e["value"].get("reason", "").startswith("low confidence")]
    if len(st) < 4 or unread:
        return "lost", f"{len(unread)} of {len(st)} epochs of 50-Hz EEG not read " \
                       f"({unread[0]['value'].get('reason') if unread else 'missing stage events'})"
    unsure = sum(e["value"]["stage"] == "unknown" for e in st)
    return "passed", f"{len(st)} epochs of 50-Hz EEG read ({unsure} of them below the model's confidence)"


def partial_last_epoch(ctx: Ctx) -> Verdict:
    """The stream ends 18 s into epoch 3: that epoch must not come out confidently staged."""
    events = _one_bed(ctx, signals(3 * EPOCH + 18.0))
    st = [e for e in stage_events(events, "b") if e["epoch_index"] == 3]
    if not st:
        return "passed", "the partial epoch was not scored"
    if st[0]["value"]["stage"] != "unknown" or st[0]["value"].get("resp_scored"):
        return "garbage", f"partial epoch 3 staged {st[0]['value']['stage']}, resp_scored " \
                          f"{st[0]['value'].get('resp_scored')}"
    return "passed", "partial epoch 3 unknown"


# -------------------------------------------------------------------------------------------------
# 3. one bad bed never stops the others
# -------------------------------------------------------------------------------------------------


class _LogSize(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.longest = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.longest = max(self.longest, len(record.getMessage()))


def _isolation(ctx: Ctx, bad_works: bool = False, state_junk: bytes | None = None, **bad_kw: Any) -> Verdict:
    """A good bed and a bad one in one monitor: the good one is scored whole; the bad one is
    faulted with a ``bed_fault`` event (or, ``bad_works``, scored whole too)."""
    from synthsleep.alerts.metrics import MonitorMetrics

    good, gname = _feed("good")
    rate = bad_kw.pop("rate", 100.0)
    bad, bname = _feed("bad", rate=rate, good=bad_works, **bad_kw)
    events, sdir = ctx.tmp / "events.jsonl", ctx.tmp / "state"
    if state_junk is not None:
        sdir.mkdir(parents=True, exist_ok=True)
        (sdir / "bed-bad.npz").write_bytes(state_junk)
    metrics = MonitorMetrics()
    sizes = _LogSize()
    logging.getLogger().addHandler(sizes)
    try:
        _night(ctx, [good, bad], {"good": gname, "bad": bname}, events, sdir, metrics)
    finally:
        logging.getLogger().removeHandler(sizes)
    evs = read_jsonl(events)
    verdict = _count_check(evs, "good", 4)
    if verdict[0] != "passed":
        return verdict[0], "the good bed: " + verdict[1]
    if sizes.longest > 20000:
        return "garbage", f"a log line of {sizes.longest} characters"
    if bad_works:
        return _count_check(evs, "bad", 4)
    faults = [e for e in evs if e["type"] == "bed_fault" and e["bed"] == "bad"]
    if not faults:
        return "garbage", "the bad bed was neither scored nor reported faulted"
    gauge = metrics.registry.get_sample_value("synthsleep_bed_faulted", {"bed": "bad"})
    if gauge != 1.0:
        return "garbage", f"synthsleep_bed_faulted{{bed=bad}} is {gauge}"
    return "passed", "bad bed faulted: " + str(faults[0]["value"].get("reason", ""))[:120]


def bed_other_labels(ctx: Ctx) -> Verdict:
    return _isolation(ctx, labels=[f"X{i}" for i in range(8)])


def bed_unit_degc(ctx: Ctx) -> Verdict:
    return _isolation(ctx, units=["degC", *UNITS[1:]])


def bed_rate_36_57(ctx: Ctx) -> Verdict:
    return _isolation(ctx, rate=36.57, n_epochs=1)


def bed_label_1mb(ctx: Ctx) -> Verdict:
    return _isolation(ctx, labels=["E" * 1_000_000, *LABELS[1:]])


def _duration(text: str) -> Callable[[Ctx], Verdict]:
    def case(ctx: Ctx) -> Verdict:
        return _isolation(ctx, bad_works=True, synthsleep_desc={"speed": "inf", "duration": text})
    case.__doc__ = f"stream description duration {text}: ignored, the bed is scored"
    return case


def bed_recovers_after_fault(ctx: Ctx) -> Verdict:
    """A bed faulted by a wrongly labelled stream is retried (backoff) and scored once its
    stream is replaced by a good one; its faulted gauge goes back to 0."""
    from synthsleep.alerts.metrics import MonitorMetrics

    name = unique_name()
    bad = make_outlet(name, labels=[f"X{i}" for i in range(8)])
    metrics = MonitorMetrics()
    events = ctx.tmp / "events.jsonl"
    mon = _monitor(ctx, {"b": name}, events, None, metrics)
    try:
        if not drive(mon, lambda: getattr(mon.beds["b"], "faults", 0) > 0, 20):
            return "garbage", "the wrongly labelled stream was not reported"
        del bad  # the amplifier is fixed: the same stream name, now with the right labels
        good = make_outlet(name)
        if not drive(mon, connected([good]), 40):
            return "lost", "the bed was not retried after its fault"
        x = signals(2 * EPOCH)
        push(good, x, 100.0, pylsl.local_clock())
        drive(mon, scored_up_to(mon, "b", 1), 30)
    finally:
        mon.close(flush=True)
    verdict = _count_check(read_jsonl(events), "b", 2)
    gauge = metrics.registry.get_sample_value("synthsleep_bed_faulted", {"bed": "b"})
    if verdict[0] == "passed" and gauge != 0.0:
        return "garbage", f"synthsleep_bed_faulted{{bed=b}} still {gauge} after recovery"
    return verdict


def bed_truncated_state(ctx: Ctx) -> Verdict:
    return _isolation(ctx, bad_works=True, state_junk=b"PK\x03\x04" + b"\x00" * 60)


# -------------------------------------------------------------------------------------------------
# 6. idle exit
# -------------------------------------------------------------------------------------------------


def idle_exit_after_stream_end(ctx: Ctx, idle: float = 35.0) -> Verdict:
    """``--idle-exit 35``: the monitor stops ~35 s after the last sample (not never)."""
    feed, name = _feed("b", n_epochs=2)
    mon = _monitor(ctx, {"b": name}, ctx.tmp / "events.jsonl")
    stop = threading.Event()
    try:
        drive(mon, connected([feed.outlet]), 30)
        push(feed.outlet, feed.data, feed.rate, feed.t0)
        t = threading.Thread(target=mon.run, args=(stop,), kwargs={"idle_exit": idle}, daemon=True)
        t.start()
        t.join(idle + 40.0)
        alive = t.is_alive()
        stop.set()
        t.join(10)
    finally:
        mon.close(flush=False)
    if alive:
        return "garbage", f"still running {idle + 40:.0f} s after the stream ended (unknown epochs forever)"
    return "passed", "stopped after the stream ended"


# name -> (issue item, case)
CASES: dict[str, tuple[str, Callable[[Ctx], Verdict]]] = {
    "second_night_same_events_file": ("1 state", second_night_same_events_file),
    "state_missing": ("1 state", state_missing),
    "state_truncated": ("1 state", state_truncated),
    "state_garbage_bytes": ("1 state", state_garbage_bytes),
    "state_other_model": ("1 state", state_other_model),
    "state_bad_stream_position": ("1 state", state_bad_stream_position),
    "resume_valid_state": ("1 state", resume_valid_state),
    "two_monitors_one_state_dir": ("1 state", two_monitors_one_state_dir),
    "airflow_dropout_12s": ("2 dropout", airflow_dropout_12s),
    "airflow_nan_2s": ("2 dropout", airflow_nan_2s),
    "partial_last_epoch": ("2 dropout", partial_last_epoch),
    "bed_other_labels": ("3 isolation", bed_other_labels),
    "bed_duration_nan": ("3 isolation", _duration("nan")),
    "bed_duration_inf": ("3 isolation", _duration("inf")),
    "bed_duration_1e10": ("3 isolation", _duration("1e10")),
    "bed_unit_degC": ("3 isolation", bed_unit_degc),
    "bed_rate_36.57": ("3 isolation", bed_rate_36_57),
    "bed_label_1MB": ("3 isolation", bed_label_1mb),
    "bed_truncated_state": ("3 isolation", bed_truncated_state),
    "bed_recovers_after_fault": ("3 isolation", bed_recovers_after_fault),
    "all_channels_flat": ("4 no signal", all_channels_flat),
    "eeg_eog_flat": ("4 no signal", eeg_eog_flat),
    "eeg_eog_at_rails": ("4 no signal", eeg_eog_at_rails),
    "eeg_eog_square": ("4 no signal", eeg_eog_square),
    "all_nan": ("4 no signal", all_nan),
    "eeg_7hz": ("4 no signal", eeg_7hz),
    "eeg_50hz_dreams": ("4 no signal", eeg_50hz_dreams),
    "two_monitors_one_events_file": ("6 small", two_monitors_one_events_file),
    "cli_events_file_locked": ("6 small", cli_events_file_locked),
    "cli_state_dir_locked": ("6 small", cli_state_dir_locked),
    "cli_metrics_port_busy": ("6 small", cli_metrics_port_busy),
    "metrics_ipv6_any": ("6 small", metrics_ipv6_any),
    "events_file_private": ("6 small", events_file_private),
    "idle_exit_after_stream_end": ("6 small", idle_exit_after_stream_end),
}
#: cases that take longer than a few seconds by nature (left out of the quick run)
SLOW = frozenset({"idle_exit_after_stream_end"})


def run_case(name: str, ctx: Ctx) -> tuple[str, str, float]:
    """(verdict, detail, seconds); an exception is ``crashed``."""
    t0 = time.monotonic()
    try:
        verdict, detail = CASES[name][1](ctx)
    except Exception as exc:  # noqa: BLE001 - that is the verdict
        verdict, detail = "crashed", f"{type(exc).__name__}: {str(exc)[:200]}"
    return verdict, detail, time.monotonic() - t0
