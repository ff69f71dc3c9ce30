"""The montage: which modalities the model knows and how real channel labels map onto them.

Each modality is one channel in the model (SynthSleepNet's SHHS setup: one EEG derivation, one
EOG, chin EMG, ECG, and the respiratory channels). Real recordings name their channels in many
ways; ``resolve_channels`` maps them, in a documented order of preference.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

MODALITY_NAMES: tuple[str, ...] = ("eeg", "eog", "emg", "ecg", "airflow", "thorax", "abdomen", "spo2")
CORE_MODALITIES: tuple[str, ...] = ("eeg", "eog", "emg", "ecg")
RESPIRATORY_MODALITIES: tuple[str, ...] = ("airflow", "thorax", "abdomen", "spo2")


class MontageError(ValueError):
    """A recording's channels cannot be mapped onto the montage."""


@dataclass(frozen=True)
class Modality:
    """One modality of the montage.

    Attributes:
        name: canonical name (``eeg`` ...).
        lsl_type: LSL/EDF signal type (EEG, EOG, EMG, ECG, RESP, SPO2).
        band: (low, high) band-pass in Hz applied at 100 Hz, or None (no filter).
        unit: physical unit the samples must be in (``uV`` or ``%``).
        optional: a recording may lack it (the model masks it).
        norm: ``robust`` (causal running median/IQR) or ``fixed`` (``offset``/``scale``).
        plausible: largest plausible robust amplitude (IQR) in ``unit``; above it the units
            are probably wrong and the modality is flagged IMPLAUSIBLE.
        flat: below this standard deviation (in ``unit``) the channel is FLAT.
    """

    name: str
    lsl_type: str
    band: tuple[float, float] | None
    unit: str
    optional: bool
    norm: str = "robust"
    offset: float = 0.0
    scale: float = 1.0
    plausible: float = 5000.0
    flat: float = 0.1

    @property
    def min_rate(self) -> float:
        """Lowest plausible native rate (Hz): 1.25 x the band's upper edge (and at least 2.5 x its
        lower edge). EEG/EOG (0.5-40 Hz) need >= 50 Hz, so DREAMS' 50-Hz EEG is accepted and 7 Hz
        is not; EMG (25-49 Hz) needs 62.5 Hz (at 50 Hz its band lies above Nyquist); ECG 37.5 Hz;
        respiratory channels 1.25 Hz; SpO2 (no band) any rate."""
        return 0.0 if self.band is None else 1.25 * max(self.band[1], 2.0 * self.band[0])


MODALITIES: dict[str, Modality] = {
    "eeg": Modality("eeg", "EEG", (0.5, 40.0), "uV", False, plausible=2000.0, flat=0.5),
    "eog": Modality("eog", "EOG", (0.5, 40.0), "uV", False, plausible=5000.0, flat=0.5),
    "emg": Modality("emg", "EMG", (25.0, 49.0), "uV", False, plausible=5000.0, flat=0.05),
    "ecg": Modality("ecg", "ECG", (3.0, 30.0), "uV", False, plausible=20000.0, flat=1.0),
    "airflow": Modality("airflow", "RESP", (0.05, 1.0), "uV", True, plausible=1e7, flat=1e-6),
    "thorax": Modality("thorax", "RESP", (0.05, 1.0), "uV", True, plausible=1e7, flat=1e-6),
    "abdomen": Modality("abdomen", "RESP", (0.05, 1.0), "uV", True, plausible=1e7, flat=1e-6),
    "spo2": Modality("spo2", "SPO2", None, "%", True, norm="fixed", offset=95.0, scale=5.0,
                     plausible=100.0, flat=-1.0),
}

# Known labels per modality, most preferred first. Matching is case-insensitive and ignores
# spaces, dashes, dots, colons, slashes and underscores (see ``normalise_label``); the EDF+
# ``TYPE DERIVATION`` form ("EEG C3-A1", "EMG Chin1") of any label here is known too (see
# ``SIGNAL_TYPES``). The datasets' conventions: SHHS (EEG = C4-A1, EEG(sec) = C3-A2, EOG(L),
# THOR RES, NEW AIR, SaO2), MESA (EEG1 = Fz-Cz, EEG2 = Cz-Oz, EEG3 = C4-M1, E1, Chin, EKG, Flow,
# Thor, Abdo, SpO2), MASS (EEG C3-CLE / -LER, EOG Left Horiz, EMG Chin1, ECG ECGI), Sleep-EDF
# (EEG Fpz-Cz, EOG horizontal, EMG submental, Resp oro-nasal), DREAMS (C3-A1, EOG1-A1, EMG1,
# NAF1, VTH, VAB), ISRUC (C4-A1, LOC-A2, X1 = chin EMG, X2 = ECG), NSRR harmonised names (C4_M1,
# E1_M2, chin, nas_pres, thor_res, abdo_res), AASM derivations (F4-M1, C4-M1, O2-M1, E1-M2).
LABELS: dict[str, tuple[str, ...]] = {
    # EEG: C4-M1, then C3-M2 (AASM's recommended derivations; A1/A2 earlobes stand for M1/M2),
    # then other central derivations, then the rest
    "eeg": (
        "C4-M1", "C4-A1", "EEG",  # SHHS: C4-A1
        "EEG3",  # MESA: C4-M1
        "C3-M2", "C3-A2", "EEG(sec)",  # SHHS: C3-A2
        "C4-CLE", "C3-CLE", "C4-LER", "C3-LER",  # MASS: computed / physical linked ears
        "C4-A2", "C3-A1", "C4-M2", "C3-M1",
        "EEG2",  # MESA: Cz-Oz (SHHS's secondary C3-A2 in some files): central either way
        "Cz-Oz", "Cz-A1", "CZ-A1", "Cz-M1", "Cz-M2", "Cz-A2", "Cz-CLE", "C4", "C3", "Cz",
        "Fpz-Cz",  # Sleep-EDF
        "Pz-Oz", "F4-M1", "F3-M2", "F4-A1", "F3-A2", "Fz-Cz", "EEG1",  # MESA: Fz-Cz
        "O2-M1", "O1-M2", "O2-A1", "O1-A2", "O1-A1", "FP1-A1", "FP1-A2", "FP2-A1", "Fp1", "Fp2",
    ),
    "eog": (
        "E1-M2", "EOG(L)", "EOG L", "LOC-A2", "LOC-M2", "LOC", "E1", "EOG1-A1", "EOG1",  # DREAMS
        "EOG horizontal",  # Sleep-EDF
        "EOG Left Horiz",  # MASS
        "E2-M1", "E2-M2", "EOG(R)", "EOG R", "ROC-A1", "ROC-M1", "ROC-A2", "ROC", "E2", "EOG2-A1", "EOG2",
        "EOG Right Horiz",
    ),
    "emg": (
        "EMG Chin", "EMG", "EMG submental", "EMG1", "Chin", "Chin1-Chin2", "CHIN1", "Chin1", "Chin2",
        "Chin3", "EMG1-EMG2", "Chin EMG", "EMG Chin1-Chin2", "Submental", "cchin", "cchin_l", "L Chin",
        "R Chin", "Lchin", "Rchin",
        "X1",  # ISRUC
    ),
    "ecg": ("ECG II", "ECG", "EKG", "ECG1", "ECG L", "ECG I", "ECGI", "ECGII", "ECG1-ECG2", "EKG1-EKG2",
            "ECG2", "ECG R",
            "X2"),  # ISRUC
    "airflow": (
        "Resp Airflow", "NEW AIR", "AIRFLOW", "Airflow", "NAF1", "Flow", "Nasal Pressure",
        "NASAL PRES", "nas_pres", "Resp oro-nasal", "Flow Patient", "Nasal", "Thermistor",
        "Resp nasal", "Cannula Flow",
    ),
    "thorax": ("Resp Thorax", "THOR RES", "Thor", "Thorax", "VTH", "Chest", "RIP Thora",
               "Effort THO", "Resp thoracic", "Thoracic", "THOR EFFORT", "Resp Belt Thor"),
    "abdomen": ("Resp Abdomen", "ABDO RES", "Abdo", "Abdomen", "VAB", "ABD", "RIP Abdom",
                "Effort ABD", "Resp abdominal", "Abdominal", "ABDO EFFORT", "Resp Belt Abdo"),
    "spo2": ("SpO2", "SaO2", "SAO2", "SPO2", "Sa02", "SAT", "Saturation", "Oxygen saturation",
             "OSAT", "SpO2 %"),
}

#: EDF+ signal types (the first word of a ``TYPE DERIVATION`` label) and the modalities each may name
SIGNAL_TYPES: dict[str, tuple[str, ...]] = {
    "eeg": ("eeg",), "eog": ("eog",), "emg": ("emg",), "ecg": ("ecg",), "ekg": ("ecg",),
    "resp": ("airflow", "thorax", "abdomen"), "spo2": ("spo2",), "sao2": ("spo2",),
}


def normalise_label(label: str) -> str:
    """Case-folded label without spaces, dashes, dots, colons, slashes or underscores."""
    return re.sub(r"[\s\-_.:/]+", "", label.strip()).casefold()


_TYPED = re.compile(r"^\s*(" + "|".join(SIGNAL_TYPES) + r")[\s_]+(\S.*)$", re.IGNORECASE)
_LOOKUP: dict[str, list[tuple[int, str]]] = {}
for _mod, _labels in LABELS.items():
    for _rank, _lab in enumerate(_labels):
        _LOOKUP.setdefault(normalise_label(_lab), []).append((_rank, _mod))


def match_label(label: str) -> tuple[str, int] | None:
    """(modality, preference rank: lower is better) of a channel label, or None when unknown.

    The label as written is looked up first; failing that, an EDF+ ``TYPE DERIVATION`` label
    (``EEG C3-A1``) is looked up without its type, for a modality of that type.
    """
    hits = _LOOKUP.get(normalise_label(label))
    if hits:
        rank, mod = min(hits)
        return mod, rank
    typed = _TYPED.match(label)
    if typed:
        allowed, rest = SIGNAL_TYPES[typed.group(1).casefold()], typed.group(2)
        hits = [(r, m) for r, m in _LOOKUP.get(normalise_label(rest), []) if m in allowed]
        if hits:
            rank, mod = min(hits)
            return mod, rank
    return None


def modality_of(label: str) -> str | None:
    """The modality a channel label names, or None when unknown."""
    hit = match_label(label)
    return hit[0] if hit else None


def resolve_channels(
    labels: Sequence[str],
    overrides: Mapping[str, str] | None = None,
    required: Iterable[str] = ("eeg",),
    wanted: Iterable[str] = MODALITY_NAMES,
    source: str = "recording",
) -> dict[str, str]:
    """Map a recording's channel labels onto montage modalities.

    Args:
        labels: channel labels as the file/stream names them.
        overrides: ``{modality: label}`` chosen by the user; wins over the built-in map.
        required: modalities that must be found.
        wanted: modalities to look for.
        source: what the labels came from (file name, stream name), for error messages.

    Returns:
        ``{modality: label}`` for every wanted modality found (most preferred label first).

    Raises:
        MontageError: an override names a label that does not exist, a modality is unknown, or
            a required modality is missing; the message lists what was found and what is needed.
    """
    labels = list(labels)
    wanted = tuple(wanted)
    by_norm = {normalise_label(lab): lab for lab in reversed(labels)}
    result: dict[str, str] = {}
    for mod, lab in (overrides or {}).items():
        if mod not in MODALITIES:
            raise MontageError(f"{source}: unknown modality {mod!r} in channel overrides; "
                               f"known modalities: {', '.join(MODALITY_NAMES)}")
        real = by_norm.get(normalise_label(lab))
        if real is None:
            raise MontageError(f"{source}: channel override {mod}={lab!r} names no channel; "
                               f"channels found: {', '.join(labels) or '(none)'}")
        result[mod] = real
    best: dict[str, tuple[int, int, str]] = {}  # modality -> (rank, position in file, label)
    for pos, lab in enumerate(labels):
        hit = match_label(lab)
        if hit is None or lab in result.values():
            continue
        mod, rank = hit
        if mod in wanted and mod not in result and (mod not in best or (rank, pos) < best[mod][:2]):
            best[mod] = (rank, pos, lab)
    for mod in wanted:
        if mod in best and mod not in result:
            result[mod] = best[mod][2]
    missing = [m for m in required if m not in result]
    if missing:
        raise MontageError(
            f"{source}: no channel for required modality {', '.join(missing)}. "
            f"Channels found: {', '.join(labels) or '(none)'}. "
            + " ".join(f"{m} is looked for as one of: {', '.join(LABELS[m][:8])}, ..." for m in missing)
            + " Map a channel explicitly with an override, e.g. --channel eeg=<label>."
        )
    return result


def describe_mapping(mapping: Mapping[str, str], labels: Sequence[str],
                     wanted: Iterable[str] = MODALITY_NAMES) -> str:
    """One line: what was mapped (``eeg=EEG C4-M1``), the channels left out, the modalities
    with no channel."""
    used = set(mapping.values())
    left = [lab for lab in labels if lab not in used]
    missing = [m for m in wanted if m not in mapping]
    return ("channels " + (", ".join(f"{m}={lab}" for m, lab in mapping.items()) or "(none)")
            + "; not used: " + (", ".join(left) or "none")
            + "; no channel for: " + (", ".join(missing) or "none"))


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """Parse CLI ``modality=label`` pairs into an overrides mapping."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise MontageError(f"channel override {item!r} must look like modality=label, e.g. eeg='C3-A2'")
        mod, lab = item.split("=", 1)
        out[mod.strip().lower()] = lab.strip()
    return out
