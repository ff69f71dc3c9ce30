import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from synthsleep.cli import main
from synthsleep.export.runtime import StepRuntime
from synthsleep.psg.recording import open_recording, read_edf_annotations
from synthsleep.score import score_recording


def test_score_writes_every_output(tiny_artifact, synthetic_edf, tmp_path, capsys):
    out = tmp_path / "scored"
    rc = main(["score", str(synthetic_edf), "--out", str(out), "--model", str(tiny_artifact)])
    assert rc == 0
    lines = (out / "hypnogram.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,onset,stage,p_W,p_N1,p_N2,p_N3,p_REM,apnea_prob,hypopnea_prob")
    assert len(lines) == 1 + 20
    probs = np.array([[float(v) for v in line.split(",")[3:8]] for line in lines[1:]])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    stage_events = [e for e in events if e["type"] == "stage"]
    assert [e["epoch_index"] for e in stage_events] == list(range(20))
    assert all(set(e) == {"bed", "type", "onset", "duration", "value", "epoch_index", "model_hash", "session",
                             "time"}
               for e in events)
    # clinical time: the EDF's start date (the synthetic night starts 2020-01-01 22:30:00) + onset
    assert [e["time"] for e in stage_events[:3]] == ["2020-01-01T22:30:00.000Z", "2020-01-01T22:30:30.000Z",
                                                     "2020-01-01T22:31:00.000Z"]
    assert all(e["time"] == _iso(e["onset"]) for e in events)
    assert lines[0].endswith(",scored,time") and lines[2].endswith(",2020-01-01T22:30:30.000Z")
    anns = read_edf_annotations(out / "annotations.edf")
    assert sum(a.text.startswith("Sleep stage") for a in anns) == 20
    head = (out / "annotations.edf").read_bytes()[:256].decode("ascii")
    assert head[168:184] == "01.01.2022.30.00" and "Startdate 01-JAN-2020" in head[88:168]  # the night's start
    report = json.loads((out / "report.json").read_text())
    assert report["start_time"] == "2020-01-01T22:30:00.000Z"
    assert report["statistics"]["epochs"] == 20
    assert report["agreement"]["epochs"] == 20  # compared with the night's own scoring
    assert (out / "hypnogram.png").stat().st_size > 5000
    text = capsys.readouterr().out
    assert "agreement with the file's own scoring" in text
    # what was mapped and what was left out, printed (not only logged)
    assert "channels eeg=EEG C4-M1, eog=EOG E1-M2, emg=EMG Chin; not used: EEG C3-M2, EOG E2-M2" in text


def _iso(onset: float) -> str:
    t = datetime(2020, 1, 1, 22, 30, tzinfo=timezone.utc) + timedelta(seconds=onset)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_score_is_deterministic_and_matches_runtime_loop(tiny_artifact, synthetic_edf):
    rt = StepRuntime(tiny_artifact)
    a, _, _ = score_recording(synthetic_edf, rt)
    b, _, _ = score_recording(synthetic_edf, rt)
    np.testing.assert_array_equal(np.stack([s.stage_prob for s in a]), np.stack([s.stage_prob for s in b]))
    # the carried state matters: epoch 10 scored from a fresh state differs
    from synthsleep.psg.montage import resolve_channels
    from synthsleep.psg.preprocess import PreprocessParams, iter_recording_epochs

    rec = open_recording(synthetic_edf)
    params = PreprocessParams.from_dict(rt.preprocess_params)
    cmap = resolve_channels([c.label for c in rec.channels], wanted=params.modalities)
    ep10 = list(iter_recording_epochs(rec, cmap, params))[10]
    fresh, _ = rt.step(ep10.data[None], ep10.present[None], rt.new_state(1))
    assert np.abs(fresh.stage_prob[0] - a[10].stage_prob).max() > 1e-4


@pytest.mark.parametrize("split", [False, True])
def test_a_model_on_a_subset_of_the_preprocessed_modalities_scores_by_name(tiny_artifact, subset_artifact,
                                                                            synthetic_edf, split):
    """Its preprocessing makes eight rows in reverse order, the model reads three: the rows are
    picked by modality name, so it scores exactly as the same weights with its own preprocessing."""
    own, _, _ = score_recording(synthetic_edf, StepRuntime(tiny_artifact), split=split)
    subset_rt = StepRuntime(subset_artifact)
    assert len(subset_rt.preprocess_params["modalities"]) == 8 and len(subset_rt.modalities) == 3
    subset, _, _ = score_recording(synthetic_edf, subset_rt, split=split)
    assert [s.index for s in subset] == [s.index for s in own] and len(own) == 20
    np.testing.assert_allclose(np.stack([s.stage_prob for s in subset]), np.stack([s.stage_prob for s in own]),
                               atol=1e-5)
    # the session reports every preprocessed modality, the model reads its three
    assert len(subset[0].present) == 8 and len(own[0].present) == 3


def test_score_bad_inputs_are_one_line_errors(tiny_artifact, tmp_path, capsys):
    bad = tmp_path / "garbage.edf"
    bad.write_bytes(b"not an edf at all" * 10)
    assert main(["score", str(bad), "--out", str(tmp_path / "o"), "--model", str(tiny_artifact)]) == 2
    err = capsys.readouterr().err
    assert "garbage.edf" in err and "Traceback" not in err
    assert main(["score", str(bad), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "none.onnx")]) == 2
    assert "none.onnx" in capsys.readouterr().err


def test_score_unknown_channels_names_them(tiny_artifact, tmp_path, capsys):
    from synthsleep.psg.recording import Signal, write_edf

    path = write_edf(tmp_path / "odd.edf", [Signal("Brainwave 1", 100, np.random.default_rng(0).normal(0, 20, 6000))])
    assert main(["score", str(path), "--out", str(tmp_path / "o"), "--model", str(tiny_artifact)]) == 2
    err = capsys.readouterr().err
    assert "Brainwave 1" in err and "eeg" in err


def test_missing_sensors_are_not_reported_lost(tiny_artifact, synthetic_edf, tmp_path):
    from synthsleep.psg.recording import Signal, write_edf

    rec = open_recording(synthetic_edf)
    eeg = next(c for c in rec.channels if c.label.startswith("EEG"))
    path = write_edf(tmp_path / "eeg-only.edf", [Signal(eeg.label, eeg.rate, rec.read(eeg.label))])
    scored, events, _ = score_recording(path, StepRuntime(tiny_artifact))
    assert len(scored) == 20 and all(s.stage >= 0 for s in scored)
    assert not [e for e in events if e.type == "signal_lost"]
    assert not [e for e in events if e.type == "alert_raised" and e.value["kind"] == "signal_lost"]


def test_score_a_folder_reports_a_bad_file_and_scores_the_others(tiny_artifact, synthetic_edf, tmp_path, capsys):
    import shutil

    nights = tmp_path / "nights"
    (nights / "sub").mkdir(parents=True)
    shutil.copy(synthetic_edf, nights / "a.edf")
    shutil.copy(synthetic_edf, nights / "sub" / "b.edf")
    (nights / "broken.edf").write_bytes(b"not an edf" * 50)
    (nights / "a-Hypnogram.edf").write_bytes(b"")  # annotation files are not recordings
    out = tmp_path / "scored"
    rc = main(["score", str(nights), "--out", str(out), "--model", str(tiny_artifact), "--workers", "2"])
    assert rc == 1  # one file failed
    text = capsys.readouterr().out
    assert "FAILED  broken.edf" in text and "scored 2 of 3 recordings, 40 epochs" in text
    single = tmp_path / "single"
    assert main(["score", str(synthetic_edf), "--out", str(single), "--model", str(tiny_artifact)]) == 0
    ref = (single / "hypnogram.csv").read_text()
    assert (out / "a" / "hypnogram.csv").read_text() == ref == (out / "sub" / "b" / "hypnogram.csv").read_text()
    assert (out / "sub" / "b" / "report.json").is_file() and not (out / "broken" / "report.json").exists()


def test_prefetched_keeps_order_raises_at_the_failing_item_and_stops_early():
    import threading

    from synthsleep.score import _prefetched

    assert list(_prefetched(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        yield 2
        raise ValueError("bad.edf: channel 'EEG' rate 7 Hz")

    got = []
    with pytest.raises(ValueError, match="bad.edf"):
        for v in _prefetched(failing()):
            got.append(v)
    assert got == [1, 2]  # everything before the failure was delivered

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    gen = _prefetched(endless(), depth=1)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()  # the consumer stops: the producer thread must end, not block forever
    assert not any(t.name == "score-prefetch" and t.is_alive() for t in threading.enumerate())
    assert len(produced) <= 3 + 2  # it ran at most its queue's depth ahead
