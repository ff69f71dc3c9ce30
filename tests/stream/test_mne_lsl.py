"""mne-lsl both ways: a stream from mne-lsl's PlayerLSL (another producer's conventions: one stream
of every channel at one rate, all typed 'eeg', units as power-of-ten codes, data in volts, float64)
scored by the monitor; and ``synthsleep replay`` read by mne-lsl's ``StreamLSL`` by name."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest

from synthsleep.export.runtime import StepRuntime
from synthsleep.monitor import BedSpec, Monitor
from synthsleep.stream.player import ReplayPlayer

mne = pytest.importorskip("mne")
player_lsl = pytest.importorskip("mne_lsl.player")


@pytest.mark.slow  # the player runs in real time only: one 30-s epoch
def test_mne_lsl_player_into_monitor(tiny_artifact, synthetic_edf, tmp_path):
    # one epoch (the player runs in real time only), from where the night's chin EMG is active
    raw = mne.io.read_raw_edf(synthetic_edf, preload=True, verbose="error").crop(480.0, 512.0)
    name = f"mne-lsl-{uuid.uuid4().hex[:8]}"
    player = player_lsl.PlayerLSL(raw, chunk_size=32, n_repeat=1, name=name, source_id=name)
    mon = Monitor([BedSpec("m1", name)], StepRuntime(tiny_artifact), tmp_path / "events.jsonl", markers=False,
                  resolve_timeout=10.0)
    mon.beds["m1"].session.keep_history = True
    stop = threading.Event()
    runner = threading.Thread(target=mon.run, args=(stop,), kwargs={"idle_exit": 3.0}, daemon=True)
    runner.start()
    player.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not mon.beds["m1"].session.scored:
            time.sleep(0.2)
    finally:
        stop.set()
        runner.join(30)
        player.stop()
    mon.close(flush=False)
    bed = mon.beds["m1"]
    routes = {r.modality: r for r in bed.stream.inlet.routes}
    assert {m: (r.label, r.unit, r.factor) for m, r in routes.items()} == {
        "eeg": ("EEG C4-M1", "0", 1e6), "eog": ("EOG E1-M2", "0", 1e6), "emg": ("EMG Chin", "0", 1e6)}
    # volts read as volts: every channel usable (volts taken for microvolts would be flagged flat,
    # microvolts for volts implausible)
    first = bed.session.scored[0]
    assert first.index == 0 and first.present.all(), f"quality flags {first.quality}"
    assert not first.quality.any() and np.isclose(first.stage_prob.sum(), 1.0, atol=1e-4)


def test_replay_read_by_mne_lsl_stream_by_name(synthetic_edf):
    """``StreamLSL(name=bed)`` must attach to the bed's EEG stream, not to an arbitrary one of its
    rates (all of them used to share the bed's name, and mne-lsl took the first that answered)."""
    stream_mod = pytest.importorskip("mne_lsl.stream")
    name = f"replay-mne-{uuid.uuid4().hex[:8]}"
    player = ReplayPlayer(str(synthetic_edf), name=name, speed=1.0, loop=True)
    player.start()
    stream = stream_mod.StreamLSL(bufsize=5.0, name=name)
    try:
        stream.connect(acquisition_delay=0.05, timeout=10.0)
        assert stream.info["sfreq"] == 256.0
        assert "EEG C4-M1" in stream.ch_names and "SpO2" not in stream.ch_names
        # samples flow, in the file's units (uV on the wire: mne-lsl reads them as written)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and stream.n_new_samples < 256:
            time.sleep(0.05)
        data, _ = stream.get_data(winsize=1.0, picks=["EEG C4-M1"])
        assert data.shape == (1, 256) and np.isfinite(data).all() and data.std() > 0
        # the other rates are there under their own names
        other = stream_mod.StreamLSL(bufsize=5.0, name=f"{name}-1Hz").connect(timeout=10.0)
        try:
            assert other.ch_names == ["SpO2"]
        finally:
            other.disconnect()
    finally:
        if stream.connected:
            stream.disconnect()
        player.stop()
