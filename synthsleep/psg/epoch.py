"""The 30-second multimodal epoch: the unit everything downstream of preprocessing works on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntFlag

import numpy as np

EPOCH_SECONDS = 30.0
TARGET_RATE = 100.0
EPOCH_SAMPLES = 3000  # EPOCH_SECONDS * TARGET_RATE
STAGES = ("W", "N1", "N2", "N3", "REM")
UNKNOWN = -1


class Quality(IntFlag):
    """Per-modality quality bits of one epoch (stored as uint8)."""

    OK = 0
    MISSING = 1  # no channel, or more than half the epoch never arrived
    FLAT = 2  # (near) constant signal: lead off, disconnected amplifier
    CLIPPED = 4  # many samples at the recording's extremes; still scored
    NONFINITE = 8  # NaN / Inf samples
    GAP = 16  # part of the epoch never arrived (stream gap)
    IMPLAUSIBLE = 32  # amplitude impossible for the modality (wrong units?)
    LOW_RATE = 64  # native rate too low for the modality's band

    @classmethod
    def describe(cls, bits: int) -> str:
        """'flat|gap' style text for logs and reports; 'ok' when no bit is set."""
        names = [q.name.lower() for q in cls if q.value and bits & q.value]
        return "|".join(names) if names else "ok"


@dataclass
class Epoch:
    """One bed's 30-s window after preprocessing.

    Attributes:
        index: epoch number since the recording/stream origin (0-based, never shifted by gaps).
        start: start time in seconds on the recording/stream clock.
        modalities: modality names, the row order of ``data``.
        data: float32 [M, 3000], normalised signals at 100 Hz; 0 where a modality is absent.
        quality: uint8 [M] ``Quality`` bits.
        present: bool [M], modality usable by the model.
        log_scale: float32 [M], ln of the scale (the modality's unit, e.g. uV) each row of data
            was divided by: the running normaliser's scale after this epoch for
            running-normalised modalities, the epoch's own robust scale for
            per-epoch-normalised ones, ln(spec.scale) for fixed-normalised ones (SpO2); 0 where
            the modality is absent.
    """

    index: int
    start: float
    modalities: tuple[str, ...]
    data: np.ndarray
    quality: np.ndarray
    present: np.ndarray
    log_scale: np.ndarray

    def __getitem__(self, modality: str) -> np.ndarray:
        """[1, 3000] view of one modality's signal."""
        i = self.modalities.index(modality)
        return self.data[i : i + 1]

    @property
    def end(self) -> float:
        return self.start + EPOCH_SECONDS

    def quality_of(self, modality: str) -> Quality:
        return Quality(int(self.quality[self.modalities.index(modality)]))

    @property
    def any_present(self) -> bool:
        return bool(self.present.any())


def stack_for_model(epochs: Sequence[Epoch], modalities: Sequence[str]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack epochs into a model's input rows, picked by modality name.

    The preprocessing may produce more modalities, or another order, than a model was trained on
    (a model trained on a subset of the montage): rows are matched by name, never by position.
    A modality an epoch lacks, or holds absent, is an absent row (zeros, False, log scale 0).

    Args:
        epochs: one or more ``Epoch`` (e.g. one per bed, or consecutive epochs of one night).
        modalities: the model's modalities, in its row order.

    Returns:
        (x float32 [B, M, 3000], present bool [B, M], log_scale float32 [B, M]) with
        M = len(modalities); log_scale is ``Epoch.log_scale`` (ln of the scale, in the
        modality's unit, each row was divided by).
    """
    x = np.zeros((len(epochs), len(modalities), EPOCH_SAMPLES), np.float32)
    present = np.zeros((len(epochs), len(modalities)), np.bool_)
    log_scale = np.zeros((len(epochs), len(modalities)), np.float32)
    for b, ep in enumerate(epochs):
        rows = {name: i for i, name in enumerate(ep.modalities)}
        for j, name in enumerate(modalities):
            i = rows.get(name)
            if i is not None and bool(ep.present[i]):
                x[b, j] = ep.data[i]
                present[b, j] = True
                log_scale[b, j] = ep.log_scale[i]
    return x, present, log_scale
