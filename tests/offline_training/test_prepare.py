"""prepare: EDF+ nights → Parquet shards + manifest (real files, real worker processes)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from synthsleep.offline_training.prepare import (
    load_manifest,
    prepare,
    shard_schema,
    split_subjects,
    subject_night_ids,
)
from synthsleep.offline_training.shards import read_shard
from synthsleep.psg import recording
from synthsleep.psg.montage import resolve_channels
from synthsleep.psg.preprocess import PreprocessParams, iter_recording_epochs

MODS = ("eeg", "eog", "emg", "ecg")
PARAMS = PreprocessParams(modalities=MODS)
STAGE_TEXT = {0: "Sleep stage W", 1: "Sleep stage 1", 2: "Sleep stage 2", 3: "Sleep stage 3", 4: "Sleep stage R"}
DREAMS = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "dreams" / "excerpt3.edf"


def write_night(path: Path, stages: list[int], seed: int, labels: tuple[str, ...] = ("EEG C4-M1", "EOG E1-M2",
                "EMG Chin", "ECG II"), apnea_at: tuple[float, ...] = (), hypopnea_at: tuple[float, ...] = (),
                extra_seconds: float = 0.0) -> Path:
    """A tiny EDF+ night with in-file stage annotations (one per epoch) and respiratory events."""
    rng = np.random.default_rng(seed)
    n = int(len(stages) * 30 * 100 + extra_seconds * 100)
    t = np.arange(n) / 100.0
    sigs = []
    for i, lab in enumerate(labels):
        x = 20.0 * rng.standard_normal(n) + 30.0 * np.sin(2 * np.pi * (1.5 + i) * t)
        sigs.append(recording.Signal(lab, 100.0, x, "uV"))
    ann = [(30.0 * k, 30.0, STAGE_TEXT[s]) for k, s in enumerate(stages)]
    ann += [(on, 15.0, "Obstructive Apnea") for on in apnea_at]
    ann += [(on, 15.0, "Hypopnea") for on in hypopnea_at]
    recording.write_edf(path, sigs, ann)
    return path


STAGES_A = [0, 0, 1, 2, 2, 3, 3, 2, 4, 4, 0, 2]


def make_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_night(root / "synth-s1-n1.edf", STAGES_A, 1, apnea_at=(95.0,), hypopnea_at=(185.0, 215.0))
    write_night(root / "synth-s1-n2.edf", STAGES_A[::-1], 2)
    write_night(root / "synth-s2-n1.edf", [2] * 10, 3)
    write_night(root / "synth-s3-n1.edf", [0, 1, 2, 2, 3, 4, 4, 2], 4)
    (root / "synth-s4-n1.edf").write_bytes(b"0       garbage that is not an EDF header" * 10)
    return root


def test_ids_and_split() -> None:
    assert subject_night_ids(Path("synth-s007-n2.edf")) == ("synth-s007", "synth-s007-n2")
    assert subject_night_ids(Path("SC4012E0-PSG.edf")) == ("SC401", "SC4012")
    assert subject_night_ids(Path("excerpt3.edf")) == ("excerpt3", "excerpt3")
    subs = [f"S{i}" for i in range(10)]
    sp = split_subjects(subs, seed=1)
    assert sorted(sp["train"] + sp["val"] + sp["test"]) == subs
    assert len(sp["val"]) == 2 and len(sp["test"]) == 2
    assert split_subjects(subs, seed=1) == sp and split_subjects(subs, seed=2) != sp
    three = split_subjects(["a", "b", "c"])
    assert all(len(v) == 1 for v in three.values())
    assert split_subjects(["a"]) == {"train": ["a"], "val": [], "test": []}


def test_prepare_synthetic_folder(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "in")
    out = tmp_path / "out"
    m = prepare(src, out, params=PARAMS, workers=2, seed=0)
    by_night = {f["night"]: f for f in m.files}
    assert set(by_night) == {"synth-s1-n1", "synth-s1-n2", "synth-s2-n1", "synth-s3-n1", "synth-s4-n1"}
    bad = by_night["synth-s4-n1"]
    assert bad["status"] == "failed" and "synth-s4-n1.edf" in bad["error"] and bad["shard"] is None
    assert not (out / "shards" / "synth-s4-n1.parquet").exists()
    ok = m.ok_files
    assert len(ok) == 4 and all(len(f["sha256"]) == 64 and f["size"] > 0 for f in ok)
    assert m.extra["summary"]["failed"] == 1
    # split by subject: 3 subjects -> one each, both nights of s1 together
    assert sorted(sum(m.split.values(), [])) == ["synth-s1", "synth-s2", "synth-s3"]
    assert all(len(v) == 1 for v in m.split.values())
    # shards: schema, order, labels
    f = by_night["synth-s1-n1"]
    assert f["subject"] == "synth-s1" and f["n_epochs"] == len(STAGES_A)
    t = pq.read_table(out / f["shard"])
    assert t.schema.equals(shard_schema(MODS), check_metadata=False)
    assert t.column("epoch").to_pylist() == list(range(len(STAGES_A)))
    assert t.column("stage").to_pylist() == STAGES_A
    ap = [0] * 12
    ap[3] = 1
    assert t.column("apnea").to_pylist() == ap
    hy = [0] * 12
    hy[6] = hy[7] = 1
    assert t.column("hypopnea").to_pylist() == hy
    ev = [json.loads(s) for s in t.column("events").to_pylist()]
    assert [e["type"] for e in ev[3]] == ["obstructive_apnea"] and ev[0] == []
    sig = np.asarray(t.column("sig_eeg")[5].values)
    assert sig.shape == (3000,) and sig.dtype == np.float32 and np.std(sig) > 0.1
    assert all(t.column(f"present_{mod}").to_pylist() == [True] * 12 for mod in MODS)
    assert set(t.column("subject").to_pylist()) == {"synth-s1"}
    # the shard holds exactly what preprocessing made, log scales (ln uV) included
    with recording.open_recording(src / "synth-s1-n1.edf") as rec:
        chmap = resolve_channels([c.label for c in rec.channels], wanted=MODS)
        eps = list(iter_recording_epochs(rec, chmap, PARAMS))
    night = read_shard(out / f["shard"], MODS, np.float32)
    np.testing.assert_array_equal(night.log_scale, np.stack([ep.log_scale for ep in eps]))
    np.testing.assert_array_equal(night.x, np.stack([ep.data for ep in eps]))
    assert night.log_scale.dtype == np.float32 and (night.log_scale[:, 0] > 2.0).all()  # EEG ~ 20-30 uV
    # the manifest on disk is the same, and nothing temporary survives
    assert load_manifest(out).files == m.files
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]

    # resume: unchanged files are skipped, a changed one is redone, the failed one retried
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    write_night(src / "synth-s2-n1.edf", [2] * 6 + [3] * 4, 9)
    m2 = prepare(src, out, params=PARAMS, workers=1, seed=0)
    assert m2.extra["summary"]["skipped"] == 3 and m2.extra["summary"]["ok"] == 4
    after = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    assert after["synth-s1-n1.parquet"] == mtimes["synth-s1-n1.parquet"]
    assert after["synth-s2-n1.parquet"] != mtimes["synth-s2-n1.parquet"]
    t2 = pq.read_table(out / "shards" / "synth-s2-n1.parquet", columns=["stage"])
    assert t2.column("stage").to_pylist() == [2] * 6 + [3] * 4
    assert m2.split == m.split

    # shards of an older schema (no log_scale columns) are never reused: every file is redone
    old = json.loads((out / "manifest.json").read_text())
    old["schema_version"] = 1
    (out / "manifest.json").write_text(json.dumps(old))
    m3 = prepare(src, out, params=PARAMS, workers=1, seed=0)
    assert m3.extra["summary"]["skipped"] == 0 and m3.extra["summary"]["ok"] == 4
    assert m3.schema_version == 2 and load_manifest(out).schema_version == 2


def test_bad_files_reported_not_fatal(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    write_night(src / "good.edf", [0, 2, 2], 1)
    write_night(src / "nochan.edf", [0, 2, 2], 2, labels=("Foo", "Bar"))
    shutil.copy(src / "good.edf", src / "copy.edf")
    (src / "empty.edf").write_bytes(b"")
    data = (src / "good.edf").read_bytes()
    (src / "truncated.edf").write_bytes(data[: len(data) // 2 + 7])
    (tmp_path / "out" / "shards").mkdir(parents=True)
    (tmp_path / "out" / "shards" / "old.parquet.tmp-99999").write_bytes(b"half a shard of a killed run")
    # an EDF with 2 epochs of signal but 8 epochs of scoring
    rec = recording
    rng = np.random.default_rng(0)
    rec.write_edf(src / "mismatch.edf", [rec.Signal("EEG C4-M1", 100.0, 20 * rng.standard_normal(6000))],
                  [(30.0 * k, 30.0, "Sleep stage 2") for k in range(8)])
    m = prepare(src, tmp_path / "out", params=PARAMS, workers=1)
    st = {f["night"]: f for f in m.files}
    assert st["good"]["status"] == "ok" and st["copy"]["status"] == "ok"
    assert st["nochan"]["status"] == "failed" and "Foo" in st["nochan"]["error"]
    assert st["mismatch"]["status"] == "failed" and "mismatch" in st["mismatch"]["error"]
    assert st["empty"]["status"] == "failed" and "empty.edf" in st["empty"]["error"]
    assert st["truncated"]["status"] == "failed" and "truncated.edf" in st["truncated"]["error"]
    assert not [p for p in (tmp_path / "out").rglob("*") if ".tmp-" in p.name]
    assert sorted(p.name for p in (tmp_path / "out" / "shards").iterdir()) == ["copy.parquet", "good.parquet"]
    # two one-night subjects: one train, one val
    assert len(m.split["train"]) == 1 and len(m.split["val"]) == 1


def test_cli_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from synthsleep.cli import main

    src = tmp_path / "in"
    src.mkdir()
    write_night(src / "synth-s1-n1.edf", [0, 1, 2, 2], 1)
    write_night(src / "synth-s2-n1.edf", [0, 2, 2, 2], 2, labels=("Weird EEG", "EOG E1-M2"))
    rc = main(["prepare", "--in", str(src), "--out", str(tmp_path / "out"), "--workers", "1",
               "--channel", "eeg=Weird EEG", "--modalities", "eeg", "eog", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "2 ok" in text and "epochs/s" in text
    m = load_manifest(tmp_path / "out")
    assert m.modalities == ["eeg", "eog"] and all(f["status"] == "ok" for f in m.files)
    t = pq.read_table(tmp_path / "out" / "shards" / "synth-s2-n1.parquet")
    assert "sig_emg" not in t.column_names and "sig_eog" in t.column_names
    assert main(["prepare", "--in", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")]) == 2


@pytest.mark.skipif(not DREAMS.is_file(), reason="../shared DREAMS data not present")
def test_dreams_excerpt3(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(DREAMS, src / "excerpt3.edf")
    os.chmod(src / "excerpt3.edf", 0o644)
    m = prepare(src, tmp_path / "out", params=PreprocessParams(), workers=1)
    f = m.files[0]
    assert f["status"] == "ok", f["error"]
    assert f["subject"] == "excerpt3" and f["n_epochs"] == 60  # 30 min
    t = pq.read_table(tmp_path / "out" / f["shard"])
    stages = np.asarray(t.column("stage"))
    assert (stages >= 0).mean() > 0.9 and len(set(stages.tolist()) - {-1}) >= 2
    assert all(t.column("present_eeg").to_pylist())
    assert f["channels"]["eeg"] in ("C3-A1", "O1-A1", "FP1-A1")


def test_prepare_generated_nights(tmp_path: Path) -> None:
    """Nights from the synthetic generator (all 8 modalities, native rates, in-file scoring)."""
    from synthsleep.psg.annotations import epoch_labels
    from synthsleep.psg.synthetic import night as synthetic

    src = tmp_path / "in"
    src.mkdir()
    nights = {}
    for subj, seed in (("1", 11), ("2", 14)):  # both nights hold apneas/hypopneas (see report)
        night = synthetic.synthesize_night(seed, hours=0.1)
        synthetic.write_night(night, src / f"synth-s{subj}-n1.edf")
        nights[f"synth-s{subj}-n1"] = night
    m = prepare(src, tmp_path / "out", workers=2)
    assert [f["status"] for f in m.files] == ["ok", "ok"], [f["error"] for f in m.files]
    for f in m.files:
        night = nights[f["night"]]
        t = pq.read_table(tmp_path / "out" / f["shard"])
        n = t.num_rows
        assert n == night.stages.size == f["n_epochs"]
        assert t.schema.equals(shard_schema(PreprocessParams().modalities), check_metadata=False)
        stage, apnea, hyp = epoch_labels(night.scoring(), n)
        assert t.column("stage").to_pylist() == night.stages.tolist() == stage.tolist()
        assert t.column("apnea").to_pylist() == apnea.tolist()
        assert t.column("hypopnea").to_pylist() == hyp.tolist()
        stored = [e for s in t.column("events").to_pylist() for e in json.loads(s)]
        want = [e for e in night.events if e.onset < n * 30.0]
        assert sorted(e["type"] for e in stored) == sorted(e.type for e in want)
        assert f["channels"]["eeg"] == "EEG C4-M1" and f["channels"]["spo2"] == "SpO2"
        present = np.array(t.column("present_eeg").to_pylist())
        off = [(lo.start, lo.stop) for lo in night.lead_off if lo.label == "EEG C4-M1"]
        inside = np.array([any(a <= 30 * i and 30 * (i + 1) <= b for a, b in off) for i in range(n)])
        assert not present[inside].any()  # a lead-off (flat EEG) epoch is never scored as present
        assert present[~inside].mean() > 0.5


NSRR_XML = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<PSGAnnotation><SoftwareVersion>Compumedics</SoftwareVersion><EpochLength>30</EpochLength><ScoredEvents>
<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Wake|0</EventConcept><Start>0</Start><Duration>60</Duration></ScoredEvent>
<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Stage 2 sleep|2</EventConcept><Start>60</Start><Duration>60</Duration></ScoredEvent>
<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>REM sleep|5</EventConcept><Start>120</Start><Duration>30</Duration></ScoredEvent>
<ScoredEvent><EventType>Respiratory|Respiratory</EventType><EventConcept>Hypopnea|Hypopnea</EventConcept><Start>65</Start><Duration>12</Duration></ScoredEvent>
</ScoredEvents></PSGAnnotation>
"""


def test_sidecar_scorings_sleepedf_and_nsrr(tmp_path: Path) -> None:
    """Sleep-EDF PSG + Hypnogram pairs and SHHS-style EDF + NSRR XML are found and paired."""
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(1)

    def sigs(labels: tuple[str, ...], seconds: int) -> list:
        return [recording.Signal(lab, 100.0, 20 * rng.standard_normal(seconds * 100)) for lab in labels]

    for night in ("SC4012E0", "SC4011E0"):  # subject 01, nights 2 and 1
        recording.write_edf(src / f"{night}-PSG.edf", sigs(("EEG Fpz-Cz", "EOG horizontal", "EMG submental"), 150))
        recording.write_edf(src / f"{night[:6]}EC-Hypnogram.edf", sigs(("Dummy",), 150),
                            [(0.0, 90.0, "Sleep stage W"), (90.0, 60.0, "Sleep stage 2")])
    recording.write_edf(src / "shhs1-200001.edf", sigs(("EEG", "EOG(L)", "EMG", "ECG"), 150))
    (src / "shhs1-200001-nsrr.xml").write_text(NSRR_XML)
    m = prepare(src, tmp_path / "out", params=PARAMS, workers=1)
    by = {f["night"]: f for f in m.files}
    assert set(by) == {"SC4011", "SC4012", "shhs1-200001"}, [f["path"] for f in m.files]
    assert all(f["status"] == "ok" for f in m.files), [f["error"] for f in m.files]
    assert by["SC4011"]["subject"] == by["SC4012"]["subject"] == "SC401"
    assert by["SC4012"]["scoring"].endswith("SC4012EC-Hypnogram.edf")
    assert by["shhs1-200001"]["channels"] == {"eeg": "EEG", "eog": "EOG(L)", "emg": "EMG", "ecg": "ECG"}
    t = pq.read_table(tmp_path / "out" / by["SC4012"]["shard"], columns=["stage", "apnea"])
    assert t.column("stage").to_pylist() == [0, 0, 0, 2, 2]
    assert t.column("apnea").to_pylist() == [-1] * 5  # no respiratory scoring in a Sleep-EDF hypnogram
    t = pq.read_table(tmp_path / "out" / by["shhs1-200001"]["shard"], columns=["stage", "hypopnea", "events"])
    assert t.column("stage").to_pylist() == [0, 0, 2, 2, 4]
    assert t.column("hypopnea").to_pylist() == [0, 0, 1, 0, 0]
    assert len(json.loads(t.column("events")[2].as_py())) == 1


def test_a_recording_without_a_usable_epoch_is_failed(tmp_path: Path) -> None:
    """Flat EEG and EOG all night: a failed file with its reason, not 'ok' into the split."""
    src = tmp_path / "in"
    src.mkdir()
    write_night(src / "good.edf", [0, 2, 2], 1)
    rng = np.random.default_rng(0)
    n = 3 * 3000
    recording.write_edf(src / "flat.edf", [recording.Signal("EEG C4-M1", 100.0, np.full(n, 3.0)),
                                           recording.Signal("EOG E1-M2", 100.0, np.zeros(n)),
                                           recording.Signal("EMG Chin", 100.0, 5 * rng.standard_normal(n))],
                        [(30.0 * k, 30.0, "Sleep stage 2") for k in range(3)])
    m = prepare(src, tmp_path / "out", params=PARAMS, workers=1)
    st = {f["night"]: f for f in m.files}
    assert st["good"]["status"] == "ok"
    assert st["flat"]["status"] == "failed" and "no usable epoch" in st["flat"]["error"]
    assert "eeg flat: 3" in st["flat"]["error"] and "flat.edf" in st["flat"]["error"]
    assert not (tmp_path / "out" / "shards" / "flat.parquet").exists()
    assert m.split_of("flat") is None and not (tmp_path / "out" / "progress.jsonl").exists()


def _children(pid: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_killed_run_leaves_no_worker_and_resumes(tmp_path: Path) -> None:
    """kill -9 of prepare: its workers die with it; the rerun skips the files already done."""
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "in"
    src.mkdir()
    for k in range(6):
        write_night(src / f"synth-s{k}-n1.edf", [2] * 120, k)
    out = tmp_path / "out"
    code = ("import sys; from synthsleep.offline_training.prepare import prepare; "
            "from synthsleep.psg.preprocess import PreprocessParams; "
            f"prepare(sys.argv[1], sys.argv[2], params=PreprocessParams(modalities={MODS!r}), workers=2)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(src), str(out)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    journal = out / "progress.jsonl"
    workers: set[int] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        workers |= _children(proc.pid)
        if journal.exists() and journal.read_text().count("\n") >= 1 and workers:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "prepare finished before it could be killed: make the files longer"
    assert workers, "no worker process seen"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.05)
    assert not [p for p in workers if _alive(p)], "worker processes outlived their killed parent"
    done = journal.read_text().count("\n")
    m = prepare(src, out, params=PARAMS, workers=1)
    assert m.extra["summary"]["ok"] == 6 and m.extra["summary"]["skipped"] >= done >= 1
    assert not journal.exists()
