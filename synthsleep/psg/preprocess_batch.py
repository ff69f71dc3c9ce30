"""Offline preprocessing vectorised over epochs: the same numbers as ``preprocess_modality``
epoch by epoch, computed for many epochs of one modality at once.

``psg.preprocess`` is the ONE definition of an epoch (offline and live). Offline, a continuous
recording's complete epochs are known up front, so the per-epoch work that does not depend on
the running normaliser (quality checks, resampling, the zero-phase band-pass within each epoch,
the epoch's robust statistics) is done on an [E, n] array with ``axis=-1`` calls of the same
scipy/numpy routines (``resample_poly``, ``sosfilt``, ``np.percentile`` ...), which compute each
row exactly as they compute a 1-D array. Only the running statistics are then folded in epoch
order. Epochs with anything unusual in them (missing or non-finite samples) go through
``preprocess_modality`` itself, in order, so the normaliser sees exactly the same sequence.
``tests/psg/test_preprocess_batch.py`` checks bit equality with the per-epoch path.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import numpy as np
from scipy import signal

from .epoch import EPOCH_SAMPLES, Epoch, Quality
from .montage import MODALITIES
from .preprocess import (
    _FAST_MODALITIES,
    FROZEN_DISTINCT,
    HOLD_FRACTION,
    RAIL_FRACTION,
    EpochAssembler,
    NormaliserState,
    PreprocessParams,
    _band_sos,
    _poly_fir,
    _rate_ratio,
    _sos_zi,
    _update_normaliser,
    preprocess_modality,
    samples_per_epoch,
)

if TYPE_CHECKING:  # pragma: no cover
    from .recording import Recording

log = logging.getLogger(__name__)


def _resample_rows(x: np.ndarray, rate: float, params: PreprocessParams) -> np.ndarray:
    """[E, n] at ``rate`` Hz -> float64 [E, 3000] (``preprocess._resample`` per row)."""
    if rate == params.target_rate:
        return x.astype(np.float64, copy=False)
    ratio = _rate_ratio(rate, params.target_rate)
    if ratio:
        y = signal.resample_poly(x, *ratio, window=_poly_fir(*ratio), axis=-1)
    else:  # FFT resampling: kept per row (a batched FFT may round differently)
        y = np.stack([signal.resample(r, EPOCH_SAMPLES) for r in x])
    if y.shape[1] != EPOCH_SAMPLES:
        y = np.pad(y, ((0, 0), (0, max(0, EPOCH_SAMPLES - y.shape[1]))), mode="edge")[:, :EPOCH_SAMPLES]
    return y


def _sosfiltfilt_rows(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``preprocess._sosfiltfilt`` on each row of x [E, n]."""
    zi = _sos_zi(sos.tobytes(), sos.shape[0])  # [S, 2]
    ntaps = 2 * sos.shape[0] + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    n = x.shape[1]
    edge = min(3 * ntaps, n - 1)
    ext = np.concatenate([2 * x[:, :1] - x[:, edge:0:-1], x, 2 * x[:, -1:] - x[:, -2:-edge - 2:-1]], axis=1)
    y, _ = signal.sosfilt(sos, ext, axis=-1, zi=zi[:, None, :] * ext[None, :, 0, None])
    y = y[:, ::-1]
    y, _ = signal.sosfilt(sos, y, axis=-1, zi=zi[:, None, :] * y[None, :, 0, None])
    return y[:, ::-1][:, edge:-edge]


def _few_distinct(vals: np.ndarray, probe: int = 64) -> np.ndarray:
    """bool [E]: row has at most ``FROZEN_DISTINCT`` distinct values (``np.unique(row).size``).
    Rows whose first ``probe`` samples already differ more are decided without a full sort."""
    if vals.shape[0] == 0:
        return np.zeros(0, bool)
    head = np.sort(vals[:, :probe], axis=1)
    maybe = 1 + np.count_nonzero(head[:, 1:] != head[:, :-1], axis=1) <= FROZEN_DISTINCT
    out = np.zeros(vals.shape[0], bool)
    if maybe.any():
        srt = np.sort(vals[maybe], axis=1)
        out[maybe] = 1 + np.count_nonzero(srt[:, 1:] != srt[:, :-1], axis=1) <= FROZEN_DISTINCT
    return out


def preprocess_modality_epochs(mod: str, raw: np.ndarray, rate: float, norm: NormaliserState,
                               params: PreprocessParams
                               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``preprocess_modality`` for E consecutive, fully received epochs of one modality.

    Args:
        mod: modality name.
        raw: float [E, n] physical samples at ``rate`` Hz (n samples per epoch), in epoch order.
        rate: native rate, Hz.
        norm: running statistics, updated in epoch order (as E calls would).
        params: preprocessing parameters.

    Returns:
        (float32 [E, 3000] data, uint8 [E] Quality bits, bool [E] present, float32 [E] log_scale
        (ln of the scale each row was divided by, 0 where absent)), equal to E calls of
        ``preprocess_modality(mod, raw[i], None, rate, norm, params)``.
    """
    spec = MODALITIES[mod]
    raw = np.asarray(raw, dtype=np.float64)
    n_ep = raw.shape[0]
    data = np.zeros((n_ep, EPOCH_SAMPLES), np.float32)
    quality = np.zeros(n_ep, np.uint8)
    present = np.zeros(n_ep, bool)
    log_scale = np.zeros(n_ep, np.float32)
    if n_ep == 0:
        return data, quality, present, log_scale
    if rate < spec.min_rate:
        quality[:] = int(Quality.LOW_RATE)
        return data, quality, present, log_scale
    clean = np.isfinite(raw).all(axis=1)  # others: per epoch, below
    vals = raw[clean]
    n = raw.shape[1]
    ok = np.ones(vals.shape[0], bool)
    q = np.zeros(vals.shape[0], np.uint8)
    if spec.flat >= 0:
        flat = np.std(vals, axis=1) < spec.flat
        q[flat] |= int(Quality.FLAT)
        ok &= ~flat
    if spec.norm != "fixed":
        frozen = _few_distinct(vals)
        if mod in _FAST_MODALITIES and n > 1:
            frozen |= np.count_nonzero(vals[:, 1:] == vals[:, :-1], axis=1) > HOLD_FRACTION * (n - 1)
        q[ok & frozen] |= int(Quality.FLAT)
        ok &= ~frozen
        lo, hi = vals.min(axis=1), vals.max(axis=1)
        tol = 1e-6 * (hi - lo)
        at_edge = (np.count_nonzero(vals >= (hi - tol)[:, None], axis=1)
                   + np.count_nonzero(vals <= (lo + tol)[:, None], axis=1))
        spread = hi > lo
        clipped = spread & (at_edge > params.clip_fraction * n) & (at_edge > 4)
        q[ok & clipped] |= int(Quality.CLIPPED)
        ok &= ~(spread & (at_edge > RAIL_FRACTION * n))
    x = _resample_rows(vals[ok], rate, params)
    if spec.band is not None and x.shape[0]:
        x = _sosfiltfilt_rows(_band_sos(*spec.band, params.target_rate, params.filter_order), x)
    if spec.norm == "fixed":
        medians = np.median(vals[ok], axis=1)
    else:
        q25, q50, q75 = np.percentile(x, [25.0, 50.0, 75.0], axis=1) if x.shape[0] else np.zeros((3, 0))
    rows = np.flatnonzero(clean)
    clean_pos = {int(r): j for j, r in enumerate(rows)}
    ok_index = np.cumsum(ok) - 1
    for i in range(n_ep):
        j = clean_pos.get(i)
        if j is None:  # non-finite samples: the per-epoch path (same order for the normaliser)
            data[i], quality[i], present[i], log_scale[i] = preprocess_modality(mod, raw[i], None, rate,
                                                                                 norm, params)
            continue
        quality[i] = q[j]
        if not ok[j]:
            continue
        k = int(ok_index[j])
        xi = x[k]
        if spec.norm == "fixed":
            if not (0.0 <= float(medians[k]) <= spec.plausible * 1.0001):
                quality[i] |= int(Quality.IMPLAUSIBLE)
                continue
            y = (xi - spec.offset) / spec.scale
            log_scale[i] = math.log(spec.scale)
        else:
            center, scale = float(q50[k]), float(max(q75[k] - q25[k], 1e-12) / 1.349)
            if scale * 1.349 > spec.plausible:
                quality[i] |= int(Quality.IMPLAUSIBLE)
                continue
            if mod in params.epoch_norm:
                y = (xi - center) / scale
                log_scale[i] = math.log(scale)
            else:
                _update_normaliser(norm, mod, center, scale, params)
                y = (xi - norm.center[mod]) / math.exp(norm.log_scale[mod])
                log_scale[i] = norm.log_scale[mod]
        data[i] = np.clip(y, -params.clip, params.clip).astype(np.float32)
        present[i] = True
    return data, quality, present, log_scale


def iter_recording_epochs_batched(recording: Recording, channel_map: Mapping[str, str],
                                  params: PreprocessParams, chunk_seconds: float = 600.0
                                  ) -> Iterator[Epoch]:
    """``iter_recording_epochs`` of a continuous recording, vectorised over the epochs of each
    ``chunk_seconds`` read; the trailing partial epoch (if any) goes through ``EpochAssembler``
    with the normaliser carried, as the per-epoch path would treat it."""
    chans = {c.label: c for c in recording.channels}
    used = {m: lab for m, lab in channel_map.items() if m in params.modalities}
    rates = {m: chans[lab].rate for m, lab in used.items()}
    per_epoch = {m: samples_per_epoch(r, params.epoch_seconds) for m, r in rates.items()}
    duration = float(recording.duration)
    n_full = int(math.floor(duration / params.epoch_seconds + 1e-9))
    if used:  # a channel shorter than the recording (should not happen in EDF): its epochs end first
        n_full = min([n_full] + [chans[lab].n_samples // per_epoch[m] for m, lab in used.items()])
    chunk = max(1, int(chunk_seconds // params.epoch_seconds))
    norm = NormaliserState()
    rows = {m: i for i, m in enumerate(params.modalities)}
    for e0 in range(0, n_full, chunk):
        e1 = min(n_full, e0 + chunk)
        n_ep = e1 - e0
        data = np.zeros((n_ep, len(params.modalities), EPOCH_SAMPLES), np.float32)
        quality = np.zeros((n_ep, len(params.modalities)), np.uint8)
        present = np.zeros((n_ep, len(params.modalities)), bool)
        log_scale = np.zeros((n_ep, len(params.modalities)), np.float32)
        for m in params.modalities:
            if m not in used:
                quality[:, rows[m]] = int(Quality.MISSING)
                continue
            t0, t1 = e0 * params.epoch_seconds, e1 * params.epoch_seconds
            raw = recording.read(used[m], t0, t1)[: n_ep * per_epoch[m]]
            if raw.shape[0] < n_ep * per_epoch[m]:  # fewer samples than the header promised
                raw = np.concatenate([raw, np.full(n_ep * per_epoch[m] - raw.shape[0], np.nan)])
            j = rows[m]
            data[:, j], quality[:, j], present[:, j], log_scale[:, j] = preprocess_modality_epochs(
                m, raw.reshape(n_ep, per_epoch[m]), rates[m], norm, params)
        for i in range(n_ep):
            e = e0 + i
            yield Epoch(e, e * params.epoch_seconds, params.modalities, data[i], quality[i], present[i],
                        log_scale[i])
    tail = n_full * params.epoch_seconds
    if tail < duration - 1e-9 and used:
        asm = EpochAssembler(rates, params)
        asm.load_state_dict({"next_epoch": n_full, "origin": 0.0, "norm": norm.to_dict()})
        for m, lab in used.items():
            asm.push(m, recording.read(lab, tail, duration), tail)
        yield from asm.flush()

