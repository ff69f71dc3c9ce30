"""A stream from mne-lsl's PlayerLSL (another producer's conventions: one stream of every channel
at one rate, all typed 'eeg', units as power-of-ten codes, data in volts, float64) scored by the
monitor."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest

from synthsleep.export.runtime import StepRuntime
from synthsleep.monitor import BedSpec, Monitor

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
