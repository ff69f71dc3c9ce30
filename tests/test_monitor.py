"""The monitor's invariants with real LSL on loopback, real ONNX Runtime and a real HTTP scrape."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from prometheus_helpers import scrape

from synthsleep.alerts.metrics import MonitorMetrics, start_metrics_server
from synthsleep.export.runtime import StepRuntime
from synthsleep.monitor import (
    BedSpec,
    Monitor,
    load_beds_config,
    parse_hostport,
    parse_shard,
    shard_beds,
    shard_path,
)
from synthsleep.score import score_recording
from synthsleep.stream.lsl_inlet import parse_units
from synthsleep.stream.player import ReplayPlayer

REPO = Path(__file__).resolve().parents[1]


def _stage_events(path: Path) -> list[dict]:
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["type"] == "stage"]


@pytest.mark.parametrize("artifact", ["tiny_artifact", "subset_artifact"])
def test_replay_into_monitor_equals_offline_score(artifact, synthetic_edf, tmp_path, request):
    """Same artifact, same preprocessing, same state sequence: live == offline (float32 transport).
    ``subset_artifact``: a model reading 3 of the 8 modalities its preprocessing makes (rows by name)."""
    rt = StepRuntime(request.getfixturevalue(artifact))
    offline, offline_events, _ = score_recording(synthetic_edf, rt)
    name = f"test-replay-{uuid.uuid4().hex[:8]}"
    metrics = MonitorMetrics()
    server = start_metrics_server(metrics, port=0)
    player = ReplayPlayer(str(synthetic_edf), name=name, speed=float("inf"))
    started = time.time()
    player.start()
    try:
        mon = Monitor([BedSpec("b1", name)], rt, tmp_path / "events.jsonl", metrics=metrics,
                      markers=False, max_buflen=3600)
        mon.beds["b1"].session.keep_history = True
        before = scrape(server.url)
        mon.run(threading.Event(), idle_exit=3.0)
        mon.close(flush=True)
        after = scrape(server.url)
    finally:
        player.stop()
        server.stop()
    live = mon.beds["b1"].session.scored
    assert [s.index for s in live] == [s.index for s in offline] == list(range(20))
    np.testing.assert_allclose(np.stack([s.stage_prob for s in live]), np.stack([s.stage_prob for s in offline]),
                               atol=1e-4)
    np.testing.assert_allclose([s.apnea_prob for s in live], [s.apnea_prob for s in offline], atol=1e-4)
    assert [s.stage for s in live] == [s.stage for s in offline]
    # the JSONL holds the same events as offline scoring (same types per epoch)
    written = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    live_types = [(e["epoch_index"], e["type"]) for e in written]
    assert live_types == [(e.epoch_index, e.type) for e in offline_events]
    # clinical time: the stream clock mapped to the system clock (the replay stamps its first
    # sample with the LSL clock of now), 30 s apart like the onsets
    times = [datetime.fromisoformat(e["time"].replace("Z", "+00:00")) for e in written if e["type"] == "stage"]
    assert abs(times[0].timestamp() - started) < 120
    assert all(abs((b - a).total_seconds() - 30.0) < 0.002 for a, b in zip(times, times[1:]))
    # metrics moved with the epochs, and parse as Prometheus text format
    key = ("synthsleep_epochs_processed_total", (("bed", "b1"),))
    assert before.get(key, 0.0) == 0.0 and after[key] == 20.0
    assert after[("synthsleep_samples_received_total", (("bed", "b1"),))] > 0
    assert any(k[0] == "synthsleep_step_latency_seconds_count" for k in after)
    # the per-bed end-to-end latency is exported: one observation per scored epoch
    assert after[("synthsleep_epoch_latency_seconds_count", (("bed", "b1"),))] == 20.0


def _monitor_cmd(artifact: Path, name: str, events: Path, state: Path) -> list[str]:
    return [sys.executable, "-m", "synthsleep.cli", "monitor", "--stream", name, "--bed", "b1", "--model",
            str(artifact), "--events", str(events), "--state-dir", str(state), "--no-console", "--no-markers",
            "--idle-exit", "6"]


def test_kill_9_and_restart_loses_and_doubles_nothing(tiny_artifact, synthetic_edf, tmp_path):
    name = f"test-kill-{uuid.uuid4().hex[:8]}"
    events, state = tmp_path / "events.jsonl", tmp_path / "state"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # 10 min of signal in 40 s, pushed only once the first monitor is connected (a cold start of
    # the monitor must not cut the night's head off); outlets stay open 15 s after the last push
    # so a slow consumer drains them
    player = ReplayPlayer(str(synthetic_edf), name=name, speed=15.0, linger=15.0, wait_consumers=120.0)
    player.start()
    first = subprocess.Popen(_monitor_cmd(tiny_artifact, name, events, state), env=env, cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if events.exists() and len(_stage_events(events)) >= 6:
                break
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        n_before = len(_stage_events(events))
        assert 6 <= n_before < 20
        time.sleep(1.5)  # the stream runs on while the monitor is dead
        second = subprocess.run(_monitor_cmd(tiny_artifact, name, events, state), env=env, cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr[-2000:]
    finally:
        player.stop()
    idx = [e["epoch_index"] for e in _stage_events(events)]
    assert idx == sorted(set(idx)), "an epoch was written twice or out of order"
    assert idx == list(range(idx[-1] + 1)), "an epoch is missing"
    assert idx[-1] >= 18, f"the restarted monitor stopped at epoch {idx[-1]}:\n{second.stderr[-3000:]}"
    # epochs lost while the monitor was down are there, flagged unscored (no data), not skipped
    lost = [e for e in _stage_events(events) if e["value"]["stage"] == "unknown"]
    assert all(n_before <= e["epoch_index"] for e in lost)


def test_sigterm_stops_cleanly_with_state_saved(tiny_artifact, synthetic_edf, tmp_path):
    name = f"test-term-{uuid.uuid4().hex[:8]}"
    events, state = tmp_path / "events.jsonl", tmp_path / "state"
    player = ReplayPlayer(str(synthetic_edf), name=name, speed=20.0, wait_consumers=120.0)
    with socket.socket() as s:  # a free port for the ward view
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # PYTHONFAULTHANDLER: a monitor that ignores SIGTERM is sent SIGABRT below and prints where it hung
    proc = subprocess.Popen(_monitor_cmd(tiny_artifact, name, events, state) + ["--http", str(port)], cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    player.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (events.exists() and len(_stage_events(events)) >= 3):
            time.sleep(0.1)
        # --http: the ward view of the running monitor, on 127.0.0.1
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/ward", timeout=10) as r:
            ward = json.loads(r.read())
        assert [b["bed"] for b in ward["beds"]] == ["b1"] and ward["beds"][0]["epoch"] >= 2
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            out, err = proc.communicate(timeout=30)
            pytest.fail(f"the monitor did not stop within 60 s of SIGTERM; its threads:\n{err[-6000:]}")
    finally:
        player.stop()
        if proc.poll() is None:  # a failed check above: do not leave the monitor running
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err[-2000:]
    assert "epochs scored" in out and "Traceback" not in err
    assert f"ward view at http://127.0.0.1:{port}/" in out
    mapped = next(line for line in out.splitlines() if line.startswith("bed b1: channels "))
    assert mapped.startswith("bed b1: channels eeg=EEG C4-M1, eog=EOG E1-M2, emg=EMG Chin; not used: ")
    assert "EEG C3-M2" in mapped and mapped.endswith("; no channel for: none")
    assert (state / "bed-b1.npz").exists()
    idx = [e["epoch_index"] for e in _stage_events(events)]
    assert idx == list(range(len(idx))) and len(idx) >= 3


def test_beds_config_and_hostport(tmp_path):
    cfg = tmp_path / "beds.toml"
    cfg.write_text('[monitor]\nmetrics = "127.0.0.1:9200"\n\n[[bed]]\nid = "1"\nstream = "bed1"\n'
                   'channels = { eeg = "C3-A2" }\n\n[[bed]]\nid = "2"\nsource_ids = ["x-256Hz"]\n')
    beds, opts = load_beds_config(cfg)
    assert [b.bed for b in beds] == ["1", "2"] and beds[0].channels == {"eeg": "C3-A2"}
    assert opts["metrics"] == "127.0.0.1:9200"
    assert parse_hostport("9109") == ("127.0.0.1", 9109)
    assert parse_hostport("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_hostport("[::]") == ("::", 9109) and parse_hostport("[::1]:9200") == ("::1", 9200)
    for bad in ("::1:9109", "[::1", "host:99999", "host:port"):
        with pytest.raises(ValueError, match="--metrics"):
            parse_hostport(bad)
    cfg.write_text('[[bed]]\nid = "1"\n')
    with pytest.raises(ValueError, match="needs an id and a stream"):
        load_beds_config(cfg)
    cfg.write_text('[[bed]]\nid = "1"\nstream = "a"\n[[bed]]\nid = "1"\nstream = "b"\n')
    with pytest.raises(ValueError, match="unique"):
        load_beds_config(cfg)
    # unknown keys are errors naming the file and the key, never silently ignored
    for text, key in (('[monitor]\nmetrcs = "9200"\n[[bed]]\nid = "1"\nstream = "a"\n', "monitor.metrcs"),
                      ('[[bed]]\nid = "1"\nstrem = "a"\nstream = "a"\n', "strem"),
                      ('[[beds]]\nid = "1"\n', "beds")):
        cfg.write_text(text)
        with pytest.raises(ValueError, match=f"beds.toml.*'{key}'"):
            load_beds_config(cfg)
    cfg.write_text('[monitor]\nevents = 3\n[[bed]]\nid = "1"\nstream = "a"\n')
    with pytest.raises(ValueError, match="monitor.events must be a string"):
        load_beds_config(cfg)


def test_command_line_wins_over_the_beds_file(tiny_artifact, tmp_path):
    """--events names a file another writer holds: the monitor must refuse it (exit 2) rather
    than take the beds file's free one and run."""
    from synthsleep.alerts.sinks import JsonlSink

    held = JsonlSink(tmp_path / "cli.jsonl")
    cfg = tmp_path / "beds.toml"
    cfg.write_text(f'[monitor]\nevents = "{tmp_path / "file.jsonl"}"\nmodel = "{tiny_artifact}"\n\n'
                   f'[[bed]]\nid = "1"\nstream = "nobody-{uuid.uuid4().hex[:8]}"\n')
    try:
        proc = subprocess.run([sys.executable, "-m", "synthsleep.cli", "monitor", "--config", str(cfg),
                               "--events", str(tmp_path / "cli.jsonl"), "--no-console", "--no-markers"],
                              cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                              text=True, timeout=60)
    finally:
        held.close()
    assert proc.returncode == 2 and "cli.jsonl" in proc.stderr and "in use" in proc.stderr, proc.stderr[-800:]
    assert not (tmp_path / "file.jsonl").exists()


def test_a_bed_without_stream_does_not_hold_up_the_others(tiny_artifact, synthetic_edf, tmp_path):
    """Resolving an absent bed's stream (5 s timeout per attempt) runs off the polling thread."""
    name = f"test-absent-{uuid.uuid4().hex[:8]}"
    player = ReplayPlayer(str(synthetic_edf), name=name, speed=float("inf"))
    player.start()
    try:
        mon = Monitor([BedSpec("live", name), BedSpec("off", f"nobody-{uuid.uuid4().hex[:8]}")],
                      StepRuntime(tiny_artifact), tmp_path / "events.jsonl", markers=False,
                      resolve_timeout=5.0, max_buflen=3600)
        slowest, t_end = 0.0, time.monotonic() + 60
        while time.monotonic() < t_end and mon.beds["live"].session.detector.last_index != 19:
            t = time.perf_counter()
            mon.poll_once()
            slowest = max(slowest, time.perf_counter() - t)
            time.sleep(0.02)
        mon.close(flush=True)
    finally:
        player.stop()
    assert mon.beds["live"].session.detector.last_index == 19  # the whole night, scored live
    assert mon.beds["off"].stream is None
    assert slowest < 2.5, f"one polling round took {slowest:.1f} s (a blocking resolve?)"


def test_batched_steps_hold_at_most_max_batch_beds(tiny_artifact, tmp_path):
    """Beds with epochs ready are stepped at most ``max_batch`` at a time (ONNX Runtime keeps
    memory for the largest batch it ran), one epoch per bed per pass, and every bed's outputs
    are those of stepping that bed alone, with its state carried."""
    from synthsleep.psg.epoch import Epoch
    from synthsleep.psg.stage_filter import filter_night

    rt = StepRuntime(tiny_artifact)
    mods = rt.modalities
    specs = [BedSpec(f"b{i}", f"nobody-{uuid.uuid4().hex[:8]}") for i in range(5)]
    mon = Monitor(specs, rt, tmp_path / "events.jsonl", markers=False, resolve_timeout=0.5, max_batch=2)
    rng = np.random.default_rng(0)
    epochs = {s.bed: [Epoch(k, 30.0 * k, mods, rng.normal(0, 1, (len(mods), 3000)).astype(np.float32),
                            np.zeros(len(mods), np.uint8), np.ones(len(mods), bool),
                            np.zeros(len(mods), np.float32)) for k in range(3)]
              for s in specs}
    for name, bed in mon.beds.items():
        bed.session.keep_history = True
        bed.pending.extend((ep, time.perf_counter()) for ep in epochs[name])
    try:
        assert mon.poll_once() == 15
    finally:
        mon.close(flush=False)
    assert mon.steps == 3 * 3  # 3 passes (an epoch per bed each) of 5 beds in batches of 2, 2, 1
    for name, bed in mon.beds.items():
        state, alone = rt.new_state(1), []
        for ep in epochs[name]:
            x, present, side = rt.inputs_from_epochs([ep])
            out, state = rt.step(x, present, state, side)
            alone.append(out.stage_prob[0])
        assert [s.index for s in bed.session.scored] == [0, 1, 2]
        # what the bed kept is after its stage filter (psg.stage_filter), fed the same outputs
        np.testing.assert_allclose(np.stack([s.stage_prob for s in bed.session.scored]),
                                   filter_night(np.stack(alone)), atol=1e-5)
    with pytest.raises(ValueError, match="max_batch"):
        Monitor(specs, rt, tmp_path / "events2.jsonl", markers=False, max_batch=0)


def test_unit_overrides_reach_the_inlet(tiny_artifact, synthetic_edf, tmp_path):
    """--unit MODALITY=UNIT / beds.toml units: checked at start, applied to the bed's channels."""
    assert parse_units(["eeg=V", "EOG = -3"]) == {"eeg": "V", "eog": "-3"}
    for bad, words in ((["eeg"], "MODALITY=UNIT"), (["brain=V"], "unknown modality"), (["eeg=mmHg"], "not a voltage")):
        with pytest.raises(ValueError, match=words):
            parse_units(bad)
    cfg = tmp_path / "beds.toml"
    cfg.write_text('[[bed]]\nid = "1"\nstream = "s"\nunits = { eeg = "-6", ecg = "mV" }\n')
    assert load_beds_config(cfg)[0][0].units == {"eeg": "-6", "ecg": "mV"}
    cfg.write_text('[[bed]]\nid = "1"\nstream = "s"\nunits = { eeg = "furlongs" }\n')
    with pytest.raises(ValueError, match="beds.toml: \\[\\[bed\\]\\] 1: .*furlongs"):
        load_beds_config(cfg)
    name = f"test-units-{uuid.uuid4().hex[:8]}"
    player = ReplayPlayer(str(synthetic_edf), name=name, speed=1.0)
    player.start()
    try:
        mon = Monitor([BedSpec("b1", name, units={"eeg": "mV"})], StepRuntime(tiny_artifact),
                      tmp_path / "events.jsonl", markers=False)
        deadline = time.monotonic() + 60
        while mon.beds["b1"].stream is None and time.monotonic() < deadline:
            mon.poll_once()
            time.sleep(0.05)
        routes = {r.modality: r for r in mon.beds["b1"].stream.inlet.routes}
        mon.close(flush=False)
    finally:
        player.stop()
    assert (routes["eeg"].unit, routes["eeg"].factor) == ("mV", 1e3)
    assert routes["eog"].factor == 1.0  # the others keep the unit their stream describes (uV)


def test_short_idle_exit_waits_for_silence_not_for_an_epoch(tiny_artifact, synthetic_edf, tmp_path):
    """--idle-exit shorter than an epoch: the monitor runs on while samples arrive (an epoch every
    5 s here, idle-exit 2 s), and stops on its own once the stream falls silent."""
    name = f"test-idle-{uuid.uuid4().hex[:8]}"
    player = ReplayPlayer(str(synthetic_edf), name=name, speed=6.0, wait_consumers=60.0)
    player.start()
    mon = Monitor([BedSpec("b1", name)], StepRuntime(tiny_artifact), tmp_path / "events.jsonl", markers=False)
    runner = threading.Thread(target=mon.run, args=(threading.Event(),), kwargs={"idle_exit": 2.0}, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and runner.is_alive() and (mon.beds["b1"].session.detector.last_index or 0) < 1:
            time.sleep(0.1)
        assert runner.is_alive(), f"stopped after epoch {mon.beds['b1'].session.detector.last_index} mid-stream"
        assert mon.beds["b1"].session.detector.last_index >= 1
    finally:
        player.stop()  # the stream falls silent
    runner.join(60)
    assert not runner.is_alive(), "did not stop once no sample arrived"
    mon.close(flush=True)


def test_shard_options(tmp_path, capsys):
    beds = [BedSpec(str(i), f"s{i}") for i in range(5)]
    assert [b.bed for b in shard_beds(beds, parse_shard("1/2"))] == ["0", "2", "4"]
    assert [b.bed for b in shard_beds(beds, parse_shard("2/2"))] == ["1", "3"]
    assert sorted(b.bed for i in (1, 2, 3) for b in shard_beds(beds, (i, 3))) == [b.bed for b in beds]
    assert shard_path("out/events.jsonl", (1, 2)) == "out/events.shard1of2.jsonl"
    assert shard_path("state", (2, 2), folder=True) == "state/shard2of2" and shard_path("e.jsonl", None) == "e.jsonl"
    for bad in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    from synthsleep.cli import main

    cfg = tmp_path / "beds.toml"
    cfg.write_text('[[bed]]\nid = "1"\nstream = "a"\n')
    assert main(["monitor", "--config", str(cfg), "--shard", "2/3", "--no-console"]) == 2
    err = capsys.readouterr().err
    assert "no bed falls in this shard" in err and "Traceback" not in err
    assert main(["monitor", "--stream", "a", "--shard", "1/2", "--no-console"]) == 2
    assert "--shard needs --config" in capsys.readouterr().err


def test_ward_sharded_over_two_monitor_processes(tiny_artifact, synthetic_edf, tmp_path):
    """One beds.toml, two monitor processes (--shard 1/2, 2/2): every bed scored by exactly one of
    them, each with its own events file, metrics endpoint and marker stream."""
    from synthsleep.alerts.sinks import marker_source_id
    from synthsleep.stream import resolve_stream

    tag = uuid.uuid4().hex[:8]
    names = [f"test-shard-{tag}-{i}" for i in range(4)]
    cfg = tmp_path / "beds.toml"
    cfg.write_text("".join(f'[[bed]]\nid = "b{i}"\nstream = "{n}"\n\n' for i, n in enumerate(names)))
    players = [ReplayPlayer(str(synthetic_edf), name=n, speed=float("inf"), wait_consumers=120.0, linger=60.0)
               for n in names]
    for pl in players:
        pl.start()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "synthsleep.cli", "monitor", "--config", str(cfg), "--shard",
                               f"{i}/2", "--model", str(tiny_artifact), "--events", str(tmp_path / "events.jsonl"),
                               "--metrics", "127.0.0.1:0", "--no-console"], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    try:
        urls = []
        for p in procs:
            for line in p.stdout:
                if line.startswith("metrics at "):
                    urls.append(line.split()[-1])
                    break
        files = [tmp_path / "events.shard1of2.jsonl", tmp_path / "events.shard2of2.jsonl"]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if all(f.exists() and len(_stage_events(f)) >= 40 for f in files):
                break
            time.sleep(0.2)
        sids = [marker_source_id(["b0", "b2"], (1, 2)), marker_source_id(["b1", "b3"], (2, 2))]
        markers = [resolve_stream(source_id=sid, name="synthsleep-events", timeout=10)[0] for sid in sids]
        scraped = [scrape(u) for u in urls]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=60) for p in procs]
        for pl in players:
            pl.stop()
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    beds = [{e["bed"] for e in _stage_events(f)} for f in files]
    assert beds == [{"b0", "b2"}, {"b1", "b3"}]
    for f in files:
        by_bed: dict[str, list[int]] = {}
        for e in _stage_events(f):
            by_bed.setdefault(e["bed"], []).append(e["epoch_index"])
        assert all(v == list(range(20)) for v in by_bed.values()), by_bed
    counted = [{dict(k[1])["bed"]: v for k, v in sc.items() if k[0] == "synthsleep_epochs_processed_total"}
               for sc in scraped]
    assert counted == [{"b0": 20.0, "b2": 20.0}, {"b1": 20.0, "b3": 20.0}]
    assert [m.type() for m in markers] == ["Markers", "Markers"]  # one marker stream per shard


def test_replay_restarted_under_the_same_name_starts_a_new_session(tiny_artifact, synthetic_edf, tmp_path):
    """Issue 10 #6: a replay started again under the same name stamps its data minutes before the
    epochs already scored. Before, that data was dropped as 'already scored' until the clock caught
    up (no epoch for ~60 s at 10x). Now the old timeline closes and a new session scores the new
    data from its first epoch; nothing of the first session is lost or doubled."""
    name = f"test-restart-{uuid.uuid4().hex[:8]}"
    events = tmp_path / "events.jsonl"
    mon = Monitor([BedSpec("b1", name)], StepRuntime(tiny_artifact), events, markers=False, max_buflen=600)
    stop = threading.Event()
    runner = threading.Thread(target=mon.run, args=(stop,), daemon=True)
    runner.start()

    def wait_for(cond, what: str, deadline: float = 120.0) -> None:
        t_end = time.monotonic() + deadline
        while not cond():
            assert time.monotonic() < t_end, f"timed out waiting for {what}"
            time.sleep(0.2)

    def stage_events() -> list[dict]:
        return _stage_events(events) if events.exists() else []

    first = ReplayPlayer(str(synthetic_edf), name=name, speed=20.0)
    first.start()
    try:
        wait_for(lambda: len(stage_events()) >= 4, "4 epochs of the first replay")
    finally:
        first.stop()
    second = ReplayPlayer(str(synthetic_edf), name=name, speed=20.0)
    second.start()
    try:
        wait_for(lambda: len({e["session"] for e in stage_events()}) == 2
                 and sum(e["session"] != stage_events()[0]["session"] for e in stage_events()) >= 20,
                 "the whole second replay in a new session")
    finally:
        second.stop()
        stop.set()
        runner.join(30)
        mon.close(flush=True)
    evs = stage_events()
    sessions = list(dict.fromkeys(e["session"] for e in evs))
    assert len(sessions) == 2
    one = [e["epoch_index"] for e in evs if e["session"] == sessions[0]]
    two = [e["epoch_index"] for e in evs if e["session"] == sessions[1]]
    assert one == list(range(len(one))) and len(one) >= 4  # the first session: contiguous, once each
    assert two == list(range(20))  # the new data from its first epoch, none dropped as 'already scored'
