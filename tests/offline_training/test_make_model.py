"""make model's synthesis step: the training nights it writes (plain and started mid-night)."""

from __future__ import annotations

import numpy as np
import pytest

from synthsleep.offline_training.make_model import synthesise
from synthsleep.offline_training.prepare import subject_night_ids
from synthsleep.psg.annotations import load_scoring
from synthsleep.psg.recording import open_recording


def _stages(path):
    rec = open_recording(path)
    return load_scoring(rec).stages


def test_late_started_nights_are_as_long_but_begin_mid_night(tmp_path):
    plain, late = tmp_path / "plain", tmp_path / "late"
    assert synthesise(plain, 3, 1, 1.0, seed=5, workers=1) == 4
    assert synthesise(late, 3, 1, 1.0, seed=5, workers=1, late_start=1.0) == 4
    plain_files = sorted(plain.glob("*.edf"))
    late_files = sorted(late.glob("*.edf"))
    assert [p.name for p in plain_files] == ["synth-s000-n0.edf", "synth-s000-n1.edf", "synth-s001-n0.edf",
                                             "synth-s002-n0.edf"]
    assert [p.name for p in late_files] == [p.name.replace(".edf", "late.edf") for p in plain_files]
    # a late night is its own night of the same subject (the subject split keeps them together)
    assert subject_night_ids(late_files[1]) == ("synth-s000", "synth-s000-n1late")
    first = []
    for p, q in zip(plain_files, late_files):
        a, b = _stages(p), _stages(q)
        assert b.size == a.size == 120  # still an hour long
        assert a[0] == 0  # lights-off: the plain night starts awake
        first.append(int(b[0]))
    # the late ones start 10-30 min into the night: mostly past sleep onset already ...
    assert sum(s > 0 for s in first) >= 2, first
    # ... and is the same sleeper's night recorded from later: its signals are not the plain ones
    assert not np.array_equal(open_recording(plain_files[0]).read("EEG C4-M1")[:3000],
                              open_recording(late_files[0]).read("EEG C4-M1")[:3000])


def test_pinned_subject_fields_reach_the_nights_and_bad_ones_are_named(tmp_path):
    from synthsleep.offline_training.make_model import parse_pinned

    def eeg_rate(folder):
        rec = open_recording(next(folder.glob("*.edf")))
        return next(c.rate for c in rec.channels if c.label == "EEG C4-M1")

    # the randomised draw picks a native EEG rate per subject; pinned, every subject has this one
    for rate in (100.0, 200.0):
        out = tmp_path / f"r{rate:g}"
        synthesise(out, 1, 0, 0.1, seed=3, workers=1, randomize=True,
                   pinned=parse_pinned([f"eeg_rate={rate:g}", "delta_hi_hz=2"]))
        assert eeg_rate(out) == rate
    for bad, what in (("delta_hi=2", "FIELD=VALUE"), ("delta_hi_hz", "FIELD=VALUE"), ("delta_hi_hz=x", "not a number")):
        with pytest.raises(ValueError, match=what):
            parse_pinned([bad])
