"""EEG side features: the absolute amplitude that the running normaliser takes out of the input.

The encoders see each signal divided by its running robust scale (``psg.preprocess``), so they
cannot tell a 75-uV slow wave (AASM N3) from a 40-uV one in a quieter night, and their view of
the night depends on how it started. These seven numbers per epoch give that back, explicitly:

* the log power (uV^2/Hz, Welch: 4-s Hann windows, 50 % overlap) of the EEG in six bands,
  ``SIDE_BANDS`` (slow 0.5-2, delta 2-4, theta, alpha, sigma, beta): absolute, in uV;
* the running log scale itself (ln uV): where the night's reference sits.

They are computed from what an epoch already carries, its normalised EEG row and the log scale
it was divided by (``Epoch.log_scale``): power of (y * s) = power of y * s^2, so the features
equal those of the filtered signal in uV (up to the input clip). The stage readouts
(``model.heads``) read them beside the temporal output, with their recent past:

* **context**: two causal exponential moving averages of the seven, time constants
  ``CONTEXT_EPOCHS`` (4 and 30 epochs: 2 and 15 min), over the epochs with an EEG. A scorer
  looks at the epochs around the one it scores (YASA's features are rolling windows too); the
  Mamba state carries the past of the *embeddings*, which transfer worse than these numbers. The
  moving averages are state of their own (``SIDE_CONTEXT_STATE`` floats per bed: both averages
  and the count of EEG epochs seen, which makes the first epochs a plain running mean), kept by
  whoever steps the model (``export.runtime.StepState.side_context``) and computed over a whole
  night by the same function (``add_side_context``), so live and offline agree bit for bit.
  Prototype (the bundled model's frozen features, EEG-alone readout refitted on its training
  shards, C chosen on its validation nights; the 8 EEG-only synthetic selection sets): [h, side]
  0.836, [h, side, 4-epoch average] 0.841, [h, side, 4- and 30-epoch averages] 0.854.

The graph's ``side`` input is the 21 of ``SIDE_NAMES``: the epoch's seven, then each average. A prototype on fresh synthetic nights
(EEG only, state carried; 24 training, 8 validation nights) raised a linear readout on the
temporal output from 0.756 to 0.813 validation accuracy with these features (0.797 with the
relative band powers only, without the absolute scale); in the bundled model, on its own
validation nights, 0.821 -> 0.834.
"""

from __future__ import annotations

import numpy as np

from .epoch import TARGET_RATE

#: (low, high) Hz of the band powers, in feature order
SIDE_BANDS: tuple[tuple[float, float], ...] = ((0.5, 2.0), (2.0, 4.0), (4.0, 8.0), (8.0, 12.0),
                                               (12.0, 16.0), (16.0, 30.0))
#: the seven features of one epoch, in order
EPOCH_SIDE_NAMES: tuple[str, ...] = tuple(f"log_power_{lo:g}_{hi:g}hz" for lo, hi in SIDE_BANDS) + ("log_scale",)
N_EPOCH_SIDE = len(EPOCH_SIDE_NAMES)
#: time constants (epochs) of the causal moving averages of the epoch features
CONTEXT_EPOCHS: tuple[int, ...] = (4, 30)
#: what the stage readouts read (the graph's ``side`` input): the epoch's features, then each average
SIDE_NAMES: tuple[str, ...] = EPOCH_SIDE_NAMES + tuple(
    f"ema{k}_{name}" for k in CONTEXT_EPOCHS for name in EPOCH_SIDE_NAMES)
N_SIDE = len(SIDE_NAMES)
#: floats of context state per bed: each moving average, then the count of EEG epochs averaged
SIDE_CONTEXT_STATE = N_EPOCH_SIDE * len(CONTEXT_EPOCHS) + 1
_WELCH_SAMPLES = 400  # 4 s at 100 Hz


def eeg_side_features(eeg: np.ndarray, log_scale: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Side features of N epochs.

    Args:
        eeg: float [N, 3000], the normalised EEG rows (``Epoch.data`` of the EEG) at 100 Hz.
        log_scale: float [N], ln of the scale (uV) each row was divided by (``Epoch.log_scale``).
        present: bool [N], the EEG is present (absent rows get zeros; the readout never reads them).

    Returns:
        float32 [N, N_EPOCH_SIDE]: ln band power (uV^2/Hz) per ``SIDE_BANDS``, then the ln scale.
    """
    eeg = np.asarray(eeg, np.float64)
    out = np.zeros((eeg.shape[0], N_EPOCH_SIDE), np.float32)
    rows = np.flatnonzero(np.asarray(present, bool))
    if rows.size == 0:
        return out
    from scipy import signal  # imported here: the CLI's start-up does not pay for scipy.signal

    f, p = signal.welch(eeg[rows], fs=TARGET_RATE, nperseg=_WELCH_SAMPLES, axis=-1)
    ls = np.asarray(log_scale, np.float64)[rows]
    for j, (lo, hi) in enumerate(SIDE_BANDS):
        out[rows, j] = np.log(p[:, (f >= lo) & (f < hi)].mean(axis=1) + 1e-12) + 2.0 * ls
    out[rows, -1] = ls
    return out


def side_features_for_rows(x: np.ndarray, present: np.ndarray, log_scale: np.ndarray,
                           modalities: tuple[str, ...]) -> np.ndarray:
    """``eeg_side_features`` of model input rows: x [N, M, 3000], present bool [N, M], log_scale
    [N, M] in ``modalities`` order -> float32 [N, N_EPOCH_SIDE] (zeros for a model without EEG)."""
    if "eeg" not in modalities:
        return np.zeros((x.shape[0], N_EPOCH_SIDE), np.float32)
    i = modalities.index("eeg")
    return eeg_side_features(x[:, i], log_scale[:, i], present[:, i])


def new_side_context(batch: int) -> np.ndarray:
    """The context state of ``batch`` beds at the start of a night: float64 [batch, SIDE_CONTEXT_STATE]."""
    return np.zeros((batch, SIDE_CONTEXT_STATE), np.float64)


def side_context_step(side: np.ndarray, eeg_present: np.ndarray, state: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One epoch of B beds: their epoch features and context state -> (what the readouts read, new state).

    Args:
        side: float [B, N_EPOCH_SIDE] epoch features (``side_features_for_rows``); a row with a NaN
            is unknown.
        eeg_present: bool [B], the epoch has an EEG.
        state: float64 [B, SIDE_CONTEXT_STATE] (``new_side_context``); not modified.

    Returns:
        (float32 [B, N_SIDE], float64 [B, SIDE_CONTEXT_STATE]). A bed with an EEG and known
        features gets [features, averages updated with them]; one without an EEG zeros, one with
        unknown features NaN (the shared stage head reads both); neither moves its state. The
        k-epoch average weighs the new epoch by max(1/k, 1/n), n the EEG epochs seen so far.
    """
    side = np.asarray(side, np.float64)
    eeg = np.asarray(eeg_present, bool)
    ok = eeg & np.isfinite(side).all(-1)
    new = np.array(state, np.float64, copy=True)
    n = new[:, -1] + ok
    out = np.zeros((side.shape[0], N_SIDE))
    out[eeg & ~ok] = np.nan
    out[ok, :N_EPOCH_SIDE] = side[ok]
    for j, k in enumerate(CONTEXT_EPOCHS):
        cols = slice(j * N_EPOCH_SIDE, (j + 1) * N_EPOCH_SIDE)
        w = np.maximum(1.0 / k, 1.0 / np.maximum(n[ok], 1.0))[:, None]
        new[ok, cols] += w * (side[ok] - new[ok, cols])
        out[ok, N_EPOCH_SIDE * (j + 1):N_EPOCH_SIDE * (j + 2)] = new[ok, cols]
    new[:, -1] = n
    return out.astype(np.float32), new


def add_side_context(side: np.ndarray, present: np.ndarray, modalities: tuple[str, ...]) -> np.ndarray:
    """The readout input of one night's epochs in order, from the start of the night: side float
    [T, N_EPOCH_SIDE], present bool [T, M] in ``modalities`` order -> float32 [T, N_SIDE]
    (``side_context_step`` epoch by epoch: equal to stepping them live)."""
    eeg = (np.asarray(present, bool)[:, modalities.index("eeg")] if "eeg" in modalities
           else np.zeros(len(side), bool))
    out = np.empty((len(side), N_SIDE), np.float32)
    state = new_side_context(1)
    for t in range(len(side)):
        out[t:t + 1], state = side_context_step(side[t:t + 1], eeg[t:t + 1], state)
    return out


def night_side_features(x: np.ndarray, present: np.ndarray, log_scale: np.ndarray,
                        modalities: tuple[str, ...]) -> np.ndarray:
    """What the stage readouts read for one night's model input rows (x [T, M, 3000], present
    [T, M], log_scale [T, M]) from its start: float32 [T, N_SIDE]."""
    return add_side_context(side_features_for_rows(x, present, log_scale, modalities), present, modalities)
