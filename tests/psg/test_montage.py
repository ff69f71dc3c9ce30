import pytest

from synthsleep.psg.montage import (
    MontageError,
    describe_mapping,
    match_label,
    modality_of,
    parse_overrides,
    resolve_channels,
)


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


def _eeg(labels):
    return resolve_channels(labels)["eeg"]


def test_edf_plus_type_derivation_form_of_any_known_label():
    for lab in ("C3-A1", "C4-M1", "Cz-Oz", "O2-M1", "LOC-A2", "Chin1", "ECGI"):
        assert modality_of("EEG " + lab if modality_of(lab) == "eeg" else lab) == modality_of(lab)
    assert modality_of("EEG C3-A1") == modality_of("C3-A1") == "eeg"
    assert resolve_channels(["EEG C3-A1", "EOG LOC-A2", "EMG Chin1-Chin2"]) == {
        "eeg": "EEG C3-A1", "eog": "EOG LOC-A2", "emg": "EMG Chin1-Chin2"}
    assert match_label("EEG C3-A1") == match_label("C3-A1")
    # the type must agree with the derivation's modality: an "EMG" prefix does not make an EEG
    assert modality_of("EMG C3-A1") is None and modality_of("Resp SpO2") is None
    assert modality_of("ECG X2") == "ecg" and modality_of("Resp Thor") == "thorax"


def test_eeg_preference_c4m1_c3m2_central_then_others():
    assert _eeg(["Fpz-Cz", "C3-M2", "C4-M1", "Cz-Oz"]) == "C4-M1"
    assert _eeg(["EEG O1-M2", "EEG C3-M2", "EEG F3-M2"]) == "EEG C3-M2"
    assert _eeg(["EEG F4-M1", "EEG O2-M1", "EEG C3-A1"]) == "EEG C3-A1"  # central beats frontal
    assert _eeg(["Fpz-Cz", "Pz-Oz"]) == "Fpz-Cz"
    assert _eeg(["C3-A2", "C4-A1"]) == "C4-A1"  # earlobes as mastoids
    assert _eeg(["O1-A2", "Cz"]) == "Cz"
    # the label order in the file does not matter, only the preference
    for labels in (["F4-M1", "C4-M1", "C3-M2"], ["C3-M2", "F4-M1", "C4-M1"]):
        assert _eeg(labels) == "C4-M1"


def test_shhs_conventions():
    m = resolve_channels(["EEG(sec)", "EEG", "EOG(L)", "EOG(R)", "EMG", "ECG", "THOR RES", "ABDO RES",
                          "NEW AIR", "SaO2"])
    assert m["eeg"] == "EEG"  # SHHS's EEG is C4-A1; EEG(sec) is C3-A2
    assert resolve_channels(["EEG(sec)", "EOG(L)"])["eeg"] == "EEG(sec)"


def test_mesa_conventions():
    labels = ["EKG", "E1", "E2", "Chin", "EEG1", "EEG2", "EEG3", "Pres", "Flow", "Snore", "Thor",
              "Abdo", "Leg", "Therm", "Pos", "EKG_Off", "SpO2", "HR", "Pleth"]
    m = resolve_channels(labels)
    assert m == {"eeg": "EEG3", "eog": "E1", "emg": "Chin", "ecg": "EKG", "airflow": "Flow",
                 "thorax": "Thor", "abdomen": "Abdo", "spo2": "SpO2"}
    assert _eeg(["EEG1", "EEG2"]) == "EEG2"  # Cz-Oz (central) over Fz-Cz


def test_mass_conventions():
    labels = ["EEG Fp1-CLE", "EEG F3-CLE", "EEG O1-CLE", "EEG C3-CLE", "EEG C4-CLE", "EOG Left Horiz",
              "EOG Right Horiz", "EMG Chin1", "EMG Chin2", "EMG Chin3", "ECG ECGI", "Resp Belt Thor",
              "Resp Belt Abdo"]
    m = resolve_channels(labels)
    assert m == {"eeg": "EEG C4-CLE", "eog": "EOG Left Horiz", "emg": "EMG Chin1", "ecg": "ECG ECGI",
                 "thorax": "Resp Belt Thor", "abdomen": "Resp Belt Abdo"}
    assert _eeg(["EEG C3-LER", "EEG O1-LER"]) == "EEG C3-LER"


def test_isruc_and_nsrr_conventions():
    isruc = ["LOC-A2", "ROC-A1", "F3-A2", "C3-A2", "O1-A2", "F4-A1", "C4-A1", "O2-A1", "X1", "X2", "X3", "SaO2"]
    assert resolve_channels(isruc) == {"eeg": "C4-A1", "eog": "LOC-A2", "emg": "X1", "ecg": "X2", "spo2": "SaO2"}
    isruc3 = ["E1-M2", "E2-M1", "F3-M2", "C3-M2", "O1-M2", "F4-M1", "C4-M1", "O2-M1", "X1", "X2"]
    assert resolve_channels(isruc3)["eeg"] == "C4-M1" and resolve_channels(isruc3)["eog"] == "E1-M2"
    nsrr = ["C3_M2", "C4_M1", "E1_M2", "E2_M1", "chin", "ECG", "nas_pres", "thor_res", "abdo_res", "SpO2"]
    assert resolve_channels(nsrr) == {"eeg": "C4_M1", "eog": "E1_M2", "emg": "chin", "ecg": "ECG",
                                      "airflow": "nas_pres", "thorax": "thor_res", "abdomen": "abdo_res",
                                      "spo2": "SpO2"}
    assert resolve_channels(["cchin_l", "C4", "LOC"])["emg"] == "cchin_l"


def test_describe_mapping_names_mapped_unused_and_missing():
    labels = ["EEG C4-M1", "EEG C3-M2", "EOG E1-M2", "Leg 1"]
    m = resolve_channels(labels, wanted=("eeg", "eog", "emg"))
    text = describe_mapping(m, labels, ("eeg", "eog", "emg"))
    assert text == ("channels eeg=EEG C4-M1, eog=EOG E1-M2; not used: EEG C3-M2, Leg 1; "
                    "no channel for: emg")
