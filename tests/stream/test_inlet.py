"""BedInlet and StreamEpochs with real LSL outlets on loopback."""

from __future__ import annotations

import json
import time

import numpy as np
import pylsl
import pytest
from stream_helpers import assert_same_epochs, direct_epochs, make_outlet, poll_until, push

from synthsleep.psg.epoch import Quality
from synthsleep.psg.montage import MontageError
from synthsleep.psg.preprocess import EpochAssembler, PreprocessError, PreprocessParams
from synthsleep.stream import BedInlet, StreamEpochs, StreamError, StreamNotFound, resolve_stream

LABELS_256 = ["EEG C4-M1", "EOG E1-M2", "EMG Chin"]


def _sig(seconds: float, rate: float, nch: int, seed: int, amp: float = 30.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    x = rng.normal(0, amp, (n, nch)) + amp * np.sin(2 * np.pi * 7.0 * t)[:, None]
    return x.astype(np.float32)


#: these tests push minutes of data at once (a source far faster than real time): the inlets
#: must hold all of it, as the monitor's own inlets do for a fast replay
BULK = 3600


def _bed(name: str, **kw) -> BedInlet:
    infos = resolve_stream(name=name, timeout=5.0)
    return BedInlet(infos, bed=name, max_buflen=BULK, **kw)


def test_multirate_equals_direct_assembler(uname):
    """EEG/EOG/EMG @256 Hz (uV), ECG @512 Hz in mV, SpO2 @1 Hz: epochs equal the direct path."""
    o256 = make_outlet(uname, 256, LABELS_256)
    o512 = make_outlet(uname, 512, ["ECG II"], ["mV"])
    o1 = make_outlet(uname, 1, ["SpO2"], ["%"])
    infos = resolve_stream(name=uname, minimum=3, timeout=5.0)
    bed = BedInlet(infos, bed="b1", max_buflen=BULK)
    assert bed.rates == {"eeg": 256.0, "eog": 256.0, "emg": 256.0, "ecg": 512.0, "spo2": 1.0}
    live = StreamEpochs(bed)
    secs = 90.0
    x256, x512 = _sig(secs, 256, 3, 1), _sig(secs, 512, 1, 2, amp=0.5)  # ECG in mV
    x1 = (96 + np.random.default_rng(3).normal(0, 0.5, (int(secs), 1))).astype(np.float32)
    start = pylsl.local_clock()
    got = []
    for k in range(3):  # interleave pushes with polls, like a live bed
        sl = slice(k * 30, (k + 1) * 30)
        push(o256, x256[sl.start * 256:sl.stop * 256], start + sl.start, 256)
        push(o512, x512[sl.start * 512:sl.stop * 512], start + sl.start, 512)
        push(o1, x1[sl], start + sl.start, 1)
        got += live.poll()
    got += poll_until(live.poll, lambda g: len(got) + len(g) >= 3, timeout=10)
    assert live.origin == pytest.approx(start, abs=1e-4)
    pushes = [(m, x256[:, i], start) for i, m in enumerate(("eeg", "eog", "emg"))]
    pushes += [("ecg", x512[:, 0].astype(np.float64) * 1000.0, start), ("spo2", x1[:, 0], start)]
    want = direct_epochs(bed.rates, pushes, origin=live.origin)
    assert len(want) == 3
    assert_same_epochs(got, want)
    assert all(e.present[[e.modalities.index(m) for m in bed.rates]].all() for e in got)
    st = bed.stats
    assert sum(s["samples"] for s in st.values()) == int(secs) * (256 + 512 + 1)
    assert all(s["gaps"] == 0 for s in st.values())
    lags = [s["lag"] for s in st.values()]
    assert all(np.isfinite(lags)) and max(lags) < 60.0
    bed.close()
    del o256, o512, o1


def test_gaps_never_shift_later_epochs(uname):
    """A 60-s and a 10-min hole in the timestamps: later epochs stay on the grid, holes flagged."""
    o = make_outlet(uname, 256, LABELS_256)
    o1 = make_outlet(uname, 1, ["SpO2"], ["%"])
    bed = BedInlet(resolve_stream(name=uname, minimum=2, timeout=5.0), bed="gap", max_buflen=BULK)
    live = StreamEpochs(bed)
    start = pylsl.local_clock()
    pieces = [(0.0, 60.0), (120.0, 60.0), (780.0, 60.0)]  # [t, t+60) with holes of 60 s and 600 s
    pushes = []
    for k, (t, d) in enumerate(pieces):
        x = _sig(d, 256, 3, 10 + k)
        s = (96 + np.random.default_rng(k).normal(0, 0.5, (int(d), 1))).astype(np.float32)
        push(o, x, start + t, 256)
        push(o1, s, start + t, 1)
        pushes += [(m, x[:, i], start + t) for i, m in enumerate(("eeg", "eog", "emg"))]
        pushes.append(("spo2", s[:, 0], start + t))
    got = poll_until(live.poll, lambda g: len(g) >= 28, timeout=15)
    assert [e.index for e in got] == list(range(28))
    assert [e.start - live.origin for e in got] == pytest.approx([30.0 * i for i in range(28)], abs=1e-6)
    want = direct_epochs(bed.rates, pushes, origin=live.origin)
    assert_same_epochs(got, want)
    hole = set(range(2, 4)) | set(range(6, 26))
    eeg = got[0].modalities.index("eeg")
    for e in got:
        if e.index in hole:
            assert not e.present[eeg] and Quality(int(e.quality[eeg])) & (Quality.GAP | Quality.MISSING)
            assert not e.any_present
        else:
            assert e.present[eeg] and e.quality[eeg] == 0
    for s in bed.stats.values():
        assert s["gaps"] == 2
        assert s["gap_seconds"] == pytest.approx(660.0, abs=0.05)


def test_outlet_vanishes_and_comes_back(uname):
    """The outlet is destroyed and re-created (same source_id): the inlet reconnects and places
    the new data by its timestamps; the hole in between is flagged."""
    sid = f"{uname}-256Hz"
    o = make_outlet(uname, 256, LABELS_256, source_id=sid)
    bed = BedInlet(resolve_stream(source_id=sid, timeout=5.0), bed="rec", max_buflen=BULK)
    live = StreamEpochs(bed, origin_wait=0.0)
    start = pylsl.local_clock()
    x1, x2 = _sig(40, 256, 3, 21), _sig(50, 256, 3, 22)
    push(o, x1, start, 256)
    got = poll_until(live.poll, lambda g: len(g) >= 1, timeout=10)
    del o  # the outlet vanishes
    poll_until(live.poll, lambda g: bed.lost, timeout=5)
    assert bed.lost
    o = make_outlet(uname, 256, LABELS_256, source_id=sid)  # a new outlet, same identity
    poll_until(live.poll, lambda g: not bed.lost, timeout=10)
    assert not bed.lost
    t_back = start + 70.0
    push(o, x2, t_back, 256)
    got += poll_until(live.poll, lambda g: len(g) >= 3, timeout=10)
    assert [e.index for e in got] == [0, 1, 2, 3]
    pushes = [(m, x1[:, i], start) for i, m in enumerate(("eeg", "eog", "emg"))]
    pushes += [(m, x2[:, i], t_back) for i, m in enumerate(("eeg", "eog", "emg"))]
    assert live.origin == pytest.approx(start, abs=1e-3)  # up to the clock correction
    assert_same_epochs(got, direct_epochs(bed.rates, pushes, origin=live.origin))
    eeg = got[0].modalities.index("eeg")
    assert not got[1].present[eeg] and got[1].quality[eeg] & Quality.GAP  # 10 s of 30
    assert not got[2].present[eeg] and got[2].quality[eeg] & Quality.GAP  # 20 s of 30: > 10 % missing
    assert got[3].quality[eeg] == 0
    (s,) = bed.stats.values()
    assert s["losses"] == 1 and s["reconnects"] == 1 and s["gaps"] == 1
    bed.close()


def test_nan_burst_and_flat_channel_flagged(uname):
    o = make_outlet(uname, 256, LABELS_256)
    live = StreamEpochs(_bed(uname), origin_wait=0.0)
    x = _sig(60, 256, 3, 5)
    x[256 * 5: 256 * 7, 0] = np.nan  # 2 s NaN in epoch 0 (under 10 %): flagged, still present
    x[256 * 32: 256 * 55, 0] = np.nan  # 23 s NaN in epoch 1: absent
    x[:, 1] = 12.5  # EOG flat (electrode off)
    push(o, x, pylsl.local_clock(), 256)
    got = poll_until(live.poll, lambda g: len(g) >= 2, timeout=10)
    assert len(got) == 2
    mods = got[0].modalities
    eeg, eog, emg = (mods.index(m) for m in ("eeg", "eog", "emg"))
    assert got[0].quality[eeg] & Quality.NONFINITE and got[0].present[eeg]
    assert np.isfinite(got[0].data).all()
    assert got[1].quality[eeg] & Quality.NONFINITE and not got[1].present[eeg]
    for e in got:
        assert e.quality[eog] & Quality.FLAT and not e.present[eog]
        assert e.present[emg]
        assert e.quality[mods.index("ecg")] & Quality.MISSING  # no ECG channel in this bed


def test_unknown_labels_named_in_error(uname):
    o = make_outlet(uname, 256, ["Fz-Xy", "Weird 2"])
    with pytest.raises(MontageError) as err:
        _bed(uname)
    msg = str(err.value)
    assert uname in msg and "Fz-Xy" in msg and "eeg" in msg
    del o


@pytest.mark.parametrize("rate, words", [(33.3333, "samples per"), (0.0, "irregular")])
def test_unusable_rate_clear_error(uname, rate, words):
    o = make_outlet(uname, rate, ["EEG C4-M1"])
    with pytest.raises(PreprocessError) as err:
        _bed(uname)
    assert uname in str(err.value) and words in str(err.value)
    del o


def test_units_converted_and_wrong_unit_refused(uname):
    o = make_outlet(uname, 100, ["EEG C4-M1", "EOG E1-M2"], ["V", "microvolts"])
    bed = _bed(uname)
    factors = {r.modality: r.factor for r in bed.routes}
    assert factors == {"eeg": 1e6, "eog": 1.0}
    x = np.full((100, 2), 1e-5, np.float32)
    push(o, x, pylsl.local_clock(), 100)
    got = poll_until(bed.poll, lambda g: sum(len(c[1]) for c in g if c[0] == "eeg") >= 100, timeout=5)
    eeg = np.concatenate([c[1] for c in got if c[0] == "eeg"])
    assert eeg == pytest.approx(np.full(100, 10.0), rel=1e-6)  # 1e-5 V = 10 uV
    bed.close()
    other = uname + "-b"
    o2 = make_outlet(other, 100, ["EEG C4-M1"], ["mmHg"])
    with pytest.raises(StreamError, match="mmHg"):
        _bed(other)
    del o, o2


def test_stream_not_found_lists_visible(uname):
    o = make_outlet(uname, 100, ["EEG C4-M1"])
    with pytest.raises(StreamNotFound) as err:
        resolve_stream(name=uname + "-absent", timeout=0.5)
    assert uname + "-absent" in str(err.value)
    assert uname in str(err.value).split("Visible streams:")[1]
    del o


def test_poll_does_not_block(uname):
    o = make_outlet(uname, 256, LABELS_256)
    bed = _bed(uname)
    t = time.perf_counter()
    for _ in range(100):
        assert isinstance(bed.poll(), list)
    assert (time.perf_counter() - t) / 100 < 0.01
    bed.close()
    del o


def test_silent_stream_closes_epochs_late_and_flagged(uname):
    """SpO2 stops after 30 s while EEG goes on: epochs close after max_delay with SpO2 flagged
    (never waiting forever); when everything stops the clock runs on and the last one closes."""
    o = make_outlet(uname, 256, LABELS_256)
    o1 = make_outlet(uname, 1, ["SpO2"], ["%"])
    params = PreprocessParams(max_delay=1.0)
    bed = BedInlet(resolve_stream(name=uname, minimum=2, timeout=5.0), bed="late", stale_after=0.5, max_buflen=BULK)
    live = StreamEpochs(bed, params=params)
    start = pylsl.local_clock()
    x = _sig(90, 256, 3, 7)
    push(o1, np.full((30, 1), 96.0, np.float32), start, 1)
    push(o, x, start, 256)
    got = poll_until(live.poll, lambda g: len(g) >= 3, timeout=15)
    assert [e.index for e in got] == [0, 1, 2]
    spo2, eeg = got[0].modalities.index("spo2"), got[0].modalities.index("eeg")
    assert got[0].present[spo2] and got[0].quality[spo2] == 0
    for e in got[1:]:
        assert not e.present[spo2] and e.quality[spo2] & (Quality.GAP | Quality.MISSING)
        assert e.present[eeg]
    pushes = [(m, x[:, i], start) for i, m in enumerate(("eeg", "eog", "emg"))]
    pushes.append(("spo2", np.full(30, 96.0), start))
    ref = EpochAssembler(bed.rates, params, origin=live.origin)
    for p in pushes:
        ref.push(*p)
    ref.advance(live.origin + 91.0)  # the reference closes them as late too
    assert_same_epochs(got, ref.pop())
    del o, o1


def test_resume_from_state_continues_the_grid(uname):
    """A restarted consumer given the saved state continues epoch numbering and statistics."""
    o = make_outlet(uname, 256, LABELS_256)
    x = _sig(90, 256, 3, 8)
    bed1 = _bed(uname)
    live1 = StreamEpochs(bed1)
    start = pylsl.local_clock()
    push(o, x[: 60 * 256], start, 256)
    first = poll_until(live1.poll, lambda g: len(g) >= 2, timeout=10)
    state = json.loads(json.dumps(live1.state_dict()))
    assert state["next_epoch"] == 2 and state["origin"] == pytest.approx(start, abs=1e-3)
    bed1.close()
    live2 = StreamEpochs(_bed(uname), state=state)
    push(o, x[50 * 256:], start + 50.0, 256)  # overlaps the scored part: dropped, not doubled
    second = poll_until(live2.poll, lambda g: len(g) >= 1, timeout=10)
    pushes = [(m, x[:, i], start) for i, m in enumerate(("eeg", "eog", "emg"))]
    want = direct_epochs(bed1.rates, pushes, origin=state["origin"])
    assert_same_epochs(first + second, want)
    assert live2.assembler.stats["eeg"]["late_samples"] == 10 * 256
    del o


def test_string_stream_refused(uname):
    info = pylsl.StreamInfo(uname, "Markers", 1, 0, "string", uname + "-m")
    o = pylsl.StreamOutlet(info)
    with pytest.raises(StreamError, match="strings"):
        BedInlet.resolve(name=uname, timeout=5.0)
    del o


def test_silent_outlet_replaced_by_new_one(uname):
    """The old outlet hangs (alive, silent); a new one with the same source_id takes over."""
    sid = f"{uname}-256Hz"
    old = make_outlet(uname, 256, LABELS_256, source_id=sid)
    bed = BedInlet(resolve_stream(source_id=sid, timeout=5.0), bed="hang", reconnect_after=0.5, max_buflen=BULK)
    live = StreamEpochs(bed, origin_wait=0.0)
    start = pylsl.local_clock()
    x = _sig(60, 256, 3, 31)
    push(old, x[: 30 * 256], start, 256)
    got = poll_until(live.poll, lambda g: len(g) >= 1, timeout=10)
    new = make_outlet(uname, 256, LABELS_256, source_id=sid)
    poll_until(live.poll, lambda g: bed.stats[f"{uname}@{sid}"]["reconnects"] == 1, timeout=10)
    push(new, x[30 * 256:], start + 30.0, 256)
    got += poll_until(live.poll, lambda g: len(g) >= 1, timeout=10)
    assert [e.index for e in got] == [0, 1]
    pushes = [(m, x[:, i], start) for i, m in enumerate(("eeg", "eog", "emg"))]
    assert_same_epochs(got, direct_epochs(bed.rates, pushes, origin=live.origin))
    st = bed.stats[f"{uname}@{sid}"]
    assert st["reconnects"] == 1 and st["losses"] == 0 and st["gaps"] == 0
    bed.close()
    del old, new


def test_resolver_of_a_silent_stream_released_when_it_speaks_again(uname):
    """A stream silent for ``reconnect_after`` gets a ContinuousResolver (looking for a newer
    stream with its identity); once its own data flows again the resolver is dropped, not kept for
    the rest of the night (a thread, sockets and ~120 kB each, and a network query every second)."""
    sid = f"{uname}-256Hz"
    o = make_outlet(uname, 256, LABELS_256, source_id=sid)
    bed = BedInlet(resolve_stream(source_id=sid, timeout=5.0), bed="quiet", reconnect_after=0.3, max_buflen=BULK)
    link = bed._links[0]
    poll_until(bed.poll, lambda g: link.resolver is not None, timeout=5)
    assert link.resolver is not None
    push(o, _sig(2, 256, 3, 41), pylsl.local_clock(), 256)
    got = poll_until(bed.poll, lambda g: sum(len(c[1]) for c in g if c[0] == "eeg") >= 512, timeout=5)
    assert sum(len(c[1]) for c in got if c[0] == "eeg") == 512
    assert link.resolver is None
    assert bed.stats[f"{uname}@{sid}"]["reconnects"] == 0
    bed.close()
    del o


def test_mne_lsl_power_of_ten_unit_codes(uname):
    """mne-lsl describes units as the power of ten of the SI unit: '0' V, '-3' mV, '-6' µV."""
    o = make_outlet(uname, 100, ["EEG C4-M1", "EOG E1-M2", "EMG Chin", "SpO2"], ["0", "-3", "-6", "0"])
    bed = _bed(uname)
    assert {r.modality: r.factor for r in bed.routes} == {"eeg": 1e6, "eog": 1e3, "emg": 1.0, "spo2": 1.0}
    push(o, np.tile(np.array([[2e-5, 2e-2, 20.0, 97.0]], np.float32), (100, 1)), pylsl.local_clock(), 100)
    got = poll_until(bed.poll, lambda g: sum(len(c[1]) for c in g if c[0] == "eog") >= 100, timeout=5)
    for mod in ("eeg", "eog"):
        x = np.concatenate([c[1] for c in got if c[0] == mod])
        assert x == pytest.approx(np.full(len(x), 20.0), rel=1e-5), mod  # 2e-5 V = 2e-2 mV = 20 uV
    # scaled channels come as float64; unscaled float32 ones stay float32 (exact, half the memory)
    assert {c[0]: c[1].dtype for c in got} == {"eeg": np.float64, "eog": np.float64, "emg": np.float32,
                                               "spo2": np.float32}
    assert np.concatenate([c[1] for c in got if c[0] == "emg"]).tolist() == [20.0] * 100
    bed.close()
    other = uname + "-b"
    o2 = make_outlet(other, 100, ["EEG C4-M1"], ["uV"])
    overridden = _bed(other, units={"eeg": "-3"})  # the description is wrong: the amplifier sends mV
    assert [(r.modality, r.unit, r.factor) for r in overridden.routes] == [("eeg", "-3", 1e3)]
    overridden.close()
    with pytest.raises(StreamError, match="not a voltage"):
        _bed(other, units={"eeg": "mmHg"})
    del o, o2


def test_a_replay_faster_than_real_time_scales_the_inlet_buffer():
    """--buffer is wall-clock stall time: a replay at s x real time needs s x as much stream
    time (at most the recording + 60 s; all of it at maximum speed); real time keeps it."""
    from synthsleep.stream.lsl_inlet import _replay_buflen

    assert _replay_buflen("1", 3600.0, 120) is None and _replay_buflen("0.5", 3600.0, 120) is None
    assert _replay_buflen("10", 3600.0, 120) == 1200
    assert _replay_buflen("240", 3600.0, 120) == 3660  # capped at the recording + 60 s
    assert _replay_buflen("inf", 600.0, 120) == 660
    assert _replay_buflen("inf", None, 120) is None and _replay_buflen("fast", 600.0, 120) is None
    assert _replay_buflen("240", None, 120) == 28800
    assert _replay_buflen("inf", 30.0, 120) is None  # the default already holds it
