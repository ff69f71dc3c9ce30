import pytest

from synthsleep.psg.montage import MontageError, modality_of, parse_overrides, resolve_channels


def test_shhs_labels_map():
    labels = ["SaO2", "H.R.", "EEG(sec)", "ECG", "EMG", "EOG(L)", "EOG(R)", "EEG", "THOR RES", "ABDO RES",
              "NEW AIR", "POSITION", "LIGHT"]
    m = resolve_channels(labels)
    assert m == {"eeg": "EEG", "eog": "EOG(L)", "emg": "EMG", "ecg": "ECG", "airflow": "NEW AIR",
                 "thorax": "THOR RES", "abdomen": "ABDO RES", "spo2": "SaO2"}


def test_sleep_edf_and_dreams_labels():
    m = resolve_channels(["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal", "Resp oro-nasal", "EMG submental",
                          "Temp rectal", "Event marker"])
    assert m["eeg"] == "EEG Fpz-Cz" and m["eog"] == "EOG horizontal" and m["emg"] == "EMG submental"
    assert m["airflow"] == "Resp oro-nasal" and "ecg" not in m
    d = resolve_channels(["O1-A1", "C3-A1", "FP1-A1", "EOG1-A1", "EOG2-A1", "EMG1", "ECG", "NAF1", "VTH",
                          "VAB", "SAO2", "PR", "hypnogram"])
    assert d["eeg"] == "C3-A1" and d["eog"] == "EOG1-A1" and d["thorax"] == "VTH" and d["spo2"] == "SAO2"


def test_case_and_punctuation_insensitive():
    assert modality_of("eeg  c4-m1") == "eeg"
    assert modality_of("Eog_E1.M2") == "eog"
    assert modality_of("Temp rectal") is None


def test_missing_required_lists_found_and_needed():
    with pytest.raises(MontageError) as err:
        resolve_channels(["Foo", "Bar"], required=("eeg", "eog"), source="night.edf")
    msg = str(err.value)
    assert "night.edf" in msg and "Foo" in msg and "eeg" in msg and "eog" in msg and "--channel" in msg


def test_overrides_win_and_are_checked():
    m = resolve_channels(["EEG", "MyEEG"], overrides={"eeg": "myeeg"})
    assert m["eeg"] == "MyEEG"
    with pytest.raises(MontageError, match="names no channel"):
        resolve_channels(["EEG"], overrides={"eeg": "nope"})
    with pytest.raises(MontageError, match="unknown modality"):
        resolve_channels(["EEG"], overrides={"brain": "EEG"})
    assert parse_overrides(["eeg=C3-A2", "EOG = LOC"]) == {"eeg": "C3-A2", "eog": "LOC"}
    with pytest.raises(MontageError):
        parse_overrides(["eeg"])
