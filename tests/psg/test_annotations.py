"""Scorings: EDF+ hypnograms, NSRR XML (incl. hostile XML), DREAMS, CSV, labels, round trips."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from synthsleep.psg.annotations import (
    AnnotationError,
    NightAnnotations,
    RespEvent,
    epoch_labels,
    find_scoring_for,
    load_csv_nights,
    load_scoring,
    parse_event,
    parse_stage,
    write_scoring_annotations,
)
from synthsleep.psg.recording import Signal, open_recording, write_edf

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
DREAMS = SHARED / "data" / "real" / "dreams"
HYPNOS = SHARED / "data" / "real" / "hypnograms"
needs_dreams = pytest.mark.skipif(not (DREAMS / "excerpt3.edf").is_file(), reason="../shared DREAMS data absent")


def _tiny_signals(seconds: int) -> list[Signal]:
    return [Signal("EEG C4-M1", 100, np.random.default_rng(0).normal(0, 20, seconds * 100))]


# ---------------------------------------------------------------------------------------------
# Text parsing
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "code"), [
    ("Sleep stage W", 0), ("Sleep stage 1", 1), ("Sleep stage 2", 2), ("Sleep stage 3", 3),
    ("Sleep stage 4", 3), ("Sleep stage R", 4), ("Sleep stage ?", -1), ("Movement time", -1),
    ("Sleep stage N1", 1), ("Sleep stage N2", 2), ("Sleep stage N3", 3), ("sleep stage r", 4),
    ("Wake|0", 0), ("Stage 1 sleep|1", 1), ("Stage 4 sleep|4", 3), ("REM sleep|5", 4),
    ("W", 0), ("N2", 2), ("REM", 4), ("S3", 3), ("Obstructive apnea", None), ("Lights off", None)])
def test_parse_stage(text: str, code: int | None) -> None:
    assert parse_stage(text) == code


@pytest.mark.parametrize(("text", "kind"), [
    ("Obstructive apnea", "obstructive_apnea"), ("OBSTRUCTIVE APNEA", "obstructive_apnea"),
    ("Obstructive apnea|Obstructive Apnea", "obstructive_apnea"), ("Central apnea", "central_apnea"),
    ("Central Apnea|Central Apnea", "central_apnea"), ("Mixed apnea", "mixed_apnea"),
    ("Apnea Mixed", "mixed_apnea"), ("Hypopnea", "hypopnea"), ("Obstructive Hypopnea", "hypopnea"),
    ("Oxygen desaturation", "desaturation"), ("SpO2 desaturation|SpO2 desaturation", "desaturation"),
    ("Arousal", "arousal"), ("Arousal|Arousal ()", "arousal"), ("SpO2 artifact|SpO2 artifact", None),
    ("Sleep stage W", None)])
def test_parse_event(text: str, kind: str | None) -> None:
    assert parse_event(text) == kind


# ---------------------------------------------------------------------------------------------
# EDF+ hypnograms
# ---------------------------------------------------------------------------------------------


def test_sleep_edf_style_annotation_only_hypnogram(tmp_path: Path) -> None:
    """Annotation-only EDF+ (like Sleep-EDF *-Hypnogram.edf): stages of arbitrary durations."""
    edfio = pytest.importorskip("edfio")
    anns = [edfio.EdfAnnotation(0, 90, "Sleep stage W"), edfio.EdfAnnotation(90, 60, "Sleep stage 1"),
            edfio.EdfAnnotation(150, 45, "Sleep stage 3"), edfio.EdfAnnotation(195, 45, "Sleep stage 4"),
            edfio.EdfAnnotation(240, 30, "Movement time"), edfio.EdfAnnotation(270, 60, "Sleep stage R"),
            edfio.EdfAnnotation(330, 30, "Sleep stage ?")]
    path = tmp_path / "SC4001EC-Hypnogram.edf"
    edfio.Edf([], annotations=anns).write(path)
    sc = load_scoring(path)
    assert sc.stages.tolist() == [0, 0, 0, 1, 1, 3, 3, 3, -1, 4, 4, -1]  # by epoch midpoint
    st, ap, hy = epoch_labels(sc, 15)
    assert st.tolist()[-2:] == [-1, -1]
    assert (ap == -1).all() and (hy == -1).all()  # no respiratory scoring at all


def test_find_sleep_edf_pair(tmp_path: Path) -> None:
    edfio = pytest.importorskip("edfio")
    psg = write_edf(tmp_path / "SC4001E0-PSG.edf", _tiny_signals(60))
    edfio.Edf([], annotations=[edfio.EdfAnnotation(0, 60, "Sleep stage W")]).write(
        tmp_path / "SC4001EC-Hypnogram.edf")
    edfio.Edf([], annotations=[edfio.EdfAnnotation(0, 60, "Sleep stage W")]).write(
        tmp_path / "SC4011EH-Hypnogram.edf")
    assert find_scoring_for(psg) == tmp_path / "SC4001EC-Hypnogram.edf"
    sc = load_scoring(find_scoring_for(psg), recording=open_recording(psg))
    assert sc.stages.tolist() == [0, 0]


def test_own_edf_plus_round_trip_and_mne(tmp_path: Path) -> None:
    stages = np.array([0, 0, 1, 2, 2, 2, 3, 3, 4, 4, -1, 2], np.int8)
    events = [RespEvent(95.0, 20.0, "obstructive_apnea"), RespEvent(200.0, 12.0, "central_apnea"),
              RespEvent(250.0, 15.0, "hypopnea"), RespEvent(300.0, 10.0, "mixed_apnea")]
    sc = NightAnnotations(stages, events, source="test")
    anns = write_scoring_annotations(sc)
    assert anns[0] == (0.0, 60.0, "Sleep stage W")
    assert (95.0, 20.0, "Obstructive apnea") in anns and (250.0, 15.0, "Hypopnea") in anns
    texts = {t for _, _, t in anns}
    assert texts <= {"Sleep stage W", "Sleep stage N1", "Sleep stage N2", "Sleep stage N3", "Sleep stage R",
                     "Sleep stage ?", "Obstructive apnea", "Central apnea", "Mixed apnea", "Hypopnea",
                     "Respiratory events scored"}
    path = write_edf(tmp_path / "night.edf", _tiny_signals(360), anns)
    assert find_scoring_for(path) == path
    back = load_scoring(path, recording=open_recording(path))
    np.testing.assert_array_equal(back.stages, stages)
    assert back.events == events
    st, ap, hy = epoch_labels(back, 12)
    assert ap.tolist() == [0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0]  # 95-115 → 3; 200-212 → 6, 7; 300-310 → 10
    assert hy.tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]  # 250-265 → epoch 8
    mne = pytest.importorskip("mne")
    raw = mne.io.read_raw_edf(path, verbose="error")
    desc = list(raw.annotations.description)
    assert "Obstructive apnea" in desc and "Sleep stage N3" in desc


def test_events_past_end_and_negative_onsets_are_clipped_and_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    anns = [(0, 120, "Sleep stage W"), (-10, 20, "Hypopnea"), (100, 40, "Obstructive apnea"),
            (500, 10, "Central apnea"), (60, 200, "Sleep stage N2")]
    path = write_edf(tmp_path / "short.edf", _tiny_signals(120), anns)
    with caplog.at_level(logging.WARNING, logger="synthsleep.psg.annotations"):
        sc = load_scoring(path, recording=open_recording(path))
    assert sc.n_epochs == 4
    assert sc.stages.tolist() == [0, 0, 2, 2]
    assert sc.n_clipped >= 3
    kinds = {e.type: (e.onset, e.duration) for e in sc.events}
    assert kinds["hypopnea"] == (0.0, 10.0)
    assert kinds["obstructive_apnea"] == (100.0, 20.0)
    assert "central_apnea" not in kinds  # wholly past the end: dropped
    msgs = " ".join(r.getMessage() for r in caplog.records)
    assert "past the recording end" in msgs and "negative onset" in msgs


# ---------------------------------------------------------------------------------------------
# NSRR XML
# ---------------------------------------------------------------------------------------------

NSRR_XML = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<PSGAnnotation>
<SoftwareVersion>Compumedics</SoftwareVersion>
<EpochLength>30</EpochLength>
<ScoredEvents>
<ScoredEvent><EventType/><EventConcept>Recording Start Time</EventConcept><Start>0</Start>
<Duration>270.0</Duration><ClockTime>00.00.00 22.00.00</ClockTime></ScoredEvent>
<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Wake|0</EventConcept><Start>0.0</Start><Duration>60.0</Duration></ScoredEvent>
<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Stage 1 sleep|1</EventConcept><Start>60.0</Start><Duration>30.0</Duration></ScoredEvent>
<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Stage 2 sleep|2</EventConcept><Start>90.0</Start><Duration>60.0</Duration></ScoredEvent>
<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Stage 3 sleep|3</EventConcept><Start>150.0</Start><Duration>30.0</Duration></ScoredEvent>
<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Stage 4 sleep|4</EventConcept><Start>180.0</Start><Duration>30.0</Duration></ScoredEvent>
<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>REM sleep|5</EventConcept><Start>210.0</Start><Duration>60.0</Duration></ScoredEvent>
<ScoredEvent><EventType>Respiratory|Respiratory</EventType><EventConcept>Obstructive apnea|Obstructive Apnea</EventConcept><Start>95.5</Start><Duration>15.2</Duration><SignalLocation>ABDO RES</SignalLocation></ScoredEvent>
<ScoredEvent><EventType>Respiratory|Respiratory</EventType><EventConcept>Central apnea|Central Apnea</EventConcept><Start>160</Start><Duration>11</Duration></ScoredEvent>
<ScoredEvent><EventType>Respiratory|Respiratory</EventType><EventConcept>Mixed apnea|Mixed Apnea</EventConcept><Start>190</Start><Duration>12</Duration></ScoredEvent>
<ScoredEvent><EventType>Respiratory|Respiratory</EventType><EventConcept>Hypopnea|Hypopnea</EventConcept><Start>215</Start><Duration>20</Duration></ScoredEvent>
<ScoredEvent><EventType>Respiratory|Respiratory</EventType><EventConcept>SpO2 desaturation|SpO2 desaturation</EventConcept><Start>112</Start><Duration>9</Duration></ScoredEvent>
<ScoredEvent><EventType>Respiratory|Respiratory</EventType><EventConcept>SpO2 artifact|SpO2 artifact</EventConcept><Start>10</Start><Duration>9</Duration></ScoredEvent>
<ScoredEvent><EventType>Respiratory|Respiratory</EventType><EventConcept>Unsure|Unsure</EventConcept><Start>20</Start><Duration>9</Duration></ScoredEvent>
<ScoredEvent><EventType>Arousals|Arousals</EventType><EventConcept>Arousal|Arousal ()</EventConcept><Start>70</Start><Duration>5</Duration></ScoredEvent>
</ScoredEvents>
</PSGAnnotation>
"""


def test_nsrr_xml(tmp_path: Path) -> None:
    path = tmp_path / "shhs1-200001-nsrr.xml"
    path.write_text(NSRR_XML)
    sc = load_scoring(path)
    assert sc.stages.tolist() == [0, 0, 1, 2, 2, 3, 3, 4, 4]
    got = [(e.type, e.onset, e.duration) for e in sc.events]
    assert got == [("arousal", 70.0, 5.0), ("obstructive_apnea", 95.5, 15.2), ("desaturation", 112.0, 9.0),
                   ("central_apnea", 160.0, 11.0), ("mixed_apnea", 190.0, 12.0), ("hypopnea", 215.0, 20.0)]
    st, ap, hy = epoch_labels(sc, 10)
    assert st.tolist() == [0, 0, 1, 2, 2, 3, 3, 4, 4, -1]
    assert ap.tolist() == [0, 0, 0, 1, 0, 1, 1, 0, 0, -1]
    assert hy.tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 0, -1]
    # round trip through our EDF+ writer and reader
    edf = write_edf(tmp_path / "rt.edf", _tiny_signals(270), write_scoring_annotations(sc))
    back = load_scoring(edf)
    np.testing.assert_array_equal(back.stages, sc.stages)
    assert [(e.type, e.onset, e.duration) for e in back.events] == got
    # SHHS companion naming
    psg = write_edf(tmp_path / "shhs1-200001.edf", _tiny_signals(270))
    assert find_scoring_for(psg) == path


def _load_with_deadline(path: Path, seconds: float = 20.0) -> BaseException | None:
    box: list[BaseException | None] = [None]

    def work() -> None:
        try:
            load_scoring(path)
        except BaseException as exc:  # noqa: BLE001
            box[0] = exc

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "XML parsing hung (entity expansion?)"
    return box[0]


def test_xml_bomb_rejected(tmp_path: Path) -> None:
    lol = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">' for i in range(1, 10))
    bomb = f'<?xml version="1.0"?>\n<!DOCTYPE PSGAnnotation [{lol}]>\n<PSGAnnotation>&lol9;</PSGAnnotation>'
    path = tmp_path / "bomb.xml"
    path.write_text(bomb)
    exc = _load_with_deadline(path)
    assert isinstance(exc, AnnotationError) and "bomb.xml" in str(exc)


def test_xxe_rejected_and_secret_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    xxe = (f'<?xml version="1.0"?>\n<!DOCTYPE PSGAnnotation [<!ENTITY x SYSTEM "file://{secret}">]>\n'
           "<PSGAnnotation><ScoredEvents><ScoredEvent><EventType>Stages|Stages</EventType>"
           "<EventConcept>&x;</EventConcept><Start>0</Start><Duration>30</Duration></ScoredEvent>"
           "</ScoredEvents></PSGAnnotation>")
    path = tmp_path / "xxe.xml"
    path.write_text(xxe)
    exc = _load_with_deadline(path)
    assert isinstance(exc, AnnotationError)
    assert "xxe.xml" in str(exc) and "TOP-SECRET" not in str(exc)


def test_malformed_xml(tmp_path: Path) -> None:
    path = tmp_path / "broken.xml"
    path.write_text("<PSGAnnotation><ScoredEvents><ScoredEvent>")
    with pytest.raises(AnnotationError, match="broken.xml.*not well-formed"):
        load_scoring(path)
    other = tmp_path / "other.xml"
    other.write_text("<html><body/></html>")
    with pytest.raises(AnnotationError, match="no ScoredEvents"):
        load_scoring(other)


# ---------------------------------------------------------------------------------------------
# CSV and text
# ---------------------------------------------------------------------------------------------


def test_csv_formats(tmp_path: Path) -> None:
    a = tmp_path / "a.csv"
    a.write_text("epoch,stage\n0,W\n1,N1\n2,S2\n3,3\n4,REM\n6,R\n")
    assert load_scoring(a).stages.tolist() == [0, 1, 2, 3, 4, -1, 4]
    b = tmp_path / "b.csv"
    b.write_text("onset,duration,stage\n0,60,W\n60,90,N2\n150,30,Sleep stage 4\n90,20,Obstructive apnea\n")
    sc = load_scoring(b)
    assert sc.stages.tolist() == [0, 0, 2, 2, 2, 3]
    assert sc.events == [RespEvent(90.0, 20.0, "obstructive_apnea")]
    c = tmp_path / "c.csv"
    c.write_text("night,epoch,stage\nN1x,0,W\nN1x,1,N1\nN2x,0,N3\nN2x,1,REM\n")
    with pytest.raises(AnnotationError, match="2 nights"):
        load_scoring(c)
    assert load_scoring(c, night="N2x").stages.tolist() == [3, 4]
    d = tmp_path / "d.csv"
    d.write_text("epoch,stage\n0,W\n1,banana\n")
    with pytest.raises(AnnotationError, match="d.csv.*row 3.*banana"):
        load_scoring(d)


def test_numeric_scheme_with_5_is_rk(tmp_path: Path) -> None:
    p = tmp_path / "h.txt"
    p.write_text("# R&K\n0\n1\n4\n5\n")
    assert load_scoring(p).stages.tolist() == [0, 1, 3, 4]
    q = tmp_path / "y.txt"
    q.write_text("0\n1\n3\n4\n")
    assert load_scoring(q).stages.tolist() == [0, 1, 3, 4]


def test_n_epochs_pads_and_clips(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / "e.csv"
    p.write_text("epoch,stage\n0,W\n1,N1\n2,N2\n3,N2\n")
    assert load_scoring(p, n_epochs=6).stages.tolist() == [0, 1, 2, 2, -1, -1]
    with caplog.at_level(logging.WARNING, logger="synthsleep.psg.annotations"):
        sc = load_scoring(p, n_epochs=2)
    assert sc.stages.tolist() == [0, 1] and sc.n_clipped == 1
    assert any("past the end" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(not (HYPNOS / "sleep-edf-sc-20nights.csv").is_file(), reason="../shared hypnograms absent")
def test_real_hypnogram_files() -> None:
    nights = load_csv_nights(HYPNOS / "sleep-edf-sc-20nights.csv")
    assert len(nights) == 20 and sum(s.n_epochs for s in nights.values()) == 52647
    assert all(set(np.unique(s.stages)) <= {-1, 0, 1, 2, 3, 4} for s in nights.values())
    yasa = load_scoring(HYPNOS / "data_full_6hrs_100Hz_hypno_30s.txt")
    assert yasa.n_epochs == 720 and (yasa.stages >= 0).all()
    assert load_scoring(HYPNOS / "sub-02_hypno_30s.txt").n_epochs == 98


# ---------------------------------------------------------------------------------------------
# DREAMS
# ---------------------------------------------------------------------------------------------


def test_dreams_5s_text_majority(tmp_path: Path) -> None:
    p = tmp_path / "Hypnogram_excerptX.txt"
    # epoch 0: 5,5,5,5,4,4 → W; epoch 1: 2,2,2,1,1,1 tie → first seen (S2 → N2); epoch 2: 0,1,0,1,0,-2 → N3
    p.write_text("[Hypnogram]\n" + "\n".join(map(str, [5, 5, 5, 5, 4, 4, 2, 2, 2, 1, 1, 1, 0, 1, 0, 1, 0, -2])) + "\n")
    sc = load_scoring(p)
    assert sc.stages.tolist() == [0, 2, 3]
    assert not sc.has_resp


@needs_dreams
def test_dreams_channel_and_text_hypnograms_agree() -> None:
    rec = open_recording(DREAMS / "excerpt3.edf")
    assert find_scoring_for(rec.path) == rec.path  # in-file channels
    in_file = load_scoring(rec)
    text = load_scoring(DREAMS / "Hypnogram_excerpt3.txt", recording=rec)
    assert in_file.n_epochs == text.n_epochs == 60
    np.testing.assert_array_equal(in_file.stages, text.stages)
    assert set(np.unique(in_file.stages)) <= {0, 1, 2, 3, 4} and (in_file.stages == 2).sum() > 20
    # per second, too: the 1 Hz channel equals the 5-s codes repeated
    codes = np.array([float(x) for x in (DREAMS / "Hypnogram_excerpt3.txt").read_text().split()[1:]])
    np.testing.assert_array_equal(np.repeat(codes, 5), rec.read("hypnogram"))
    # event_pneumo: nonzero runs → events; their kind is undocumented → 'unspecified', labels -1
    assert in_file.has_resp and len(in_file.events) == 39
    assert {e.type for e in in_file.events} == {"unspecified"}
    _, ap, hy = epoch_labels(in_file, 60)
    assert set(np.unique(ap)) == {-1, 0} and (ap == hy).all()
    typed = load_scoring(rec, pneumo_codes={10: "hypopnea", 3: "obstructive_apnea", 1: "central_apnea"})
    _, ap2, hy2 = epoch_labels(typed, 60)
    assert hy2.sum() > 30 and ap2.sum() >= 3 and set(np.unique(ap2)) <= {0, 1}


@needs_dreams
@pytest.mark.parametrize("n", [1, 2, 4])
def test_dreams_text_hypnograms_load(n: int) -> None:
    sc = load_scoring(DREAMS / f"Hypnogram_excerpt{n}.txt")
    assert sc.n_epochs == 60 and (sc.stages >= -1).all() and (sc.stages <= 4).all()


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="no such file"):
        load_scoring(tmp_path / "none.xml")
    p = tmp_path / "x.bin"
    p.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(AnnotationError, match="x.bin"):
        load_scoring(p)
    edf = write_edf(tmp_path / "plain.edf", _tiny_signals(30))
    with pytest.raises(AnnotationError, match="no scoring inside"):
        load_scoring(edf)
    assert find_scoring_for(edf) is None


def test_night_scored_without_events_keeps_zero_labels(tmp_path):
    """A night scored for breathing with no event must give apnea/hypopnea 0, not unknown."""
    from synthsleep.psg.annotations import (
        NightAnnotations,
        epoch_labels,
        load_scoring,
        write_scoring_annotations,
    )
    from synthsleep.psg.recording import write_edf

    sc = NightAnnotations(np.array([0, 1, 2, 2], np.int8), [], resp_scored=True)
    path = write_edf(tmp_path / "quiet.edf", [], write_scoring_annotations(sc))
    back = load_scoring(path, n_epochs=4)
    _, apnea, hyp = epoch_labels(back, 4)
    assert apnea.tolist() == [0, 0, 0, 0] and hyp.tolist() == [0, 0, 0, 0]
    unscored = NightAnnotations(np.array([0, 1], np.int8), [])
    assert all(t != "Respiratory events scored" for _, _, t in write_scoring_annotations(unscored))
