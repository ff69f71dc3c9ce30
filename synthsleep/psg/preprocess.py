"""Epoch preprocessing: the ONE path from raw samples to model epochs, offline and live.

Samples arrive per modality in chunks of any size with the time of their first sample; they are
placed by time on one clock, so a gap never shifts later epochs. When an epoch is complete (or
its data is late by ``max_delay`` on the live clock) it is processed on its own:

1. quality checks on the raw samples (missing, gap, NaN/Inf, flat, clipped, implausible units);
2. resampling to 100 Hz, polyphase (``scipy.signal.resample_poly``) for rational rate ratios;
3. zero-phase band-pass *within the epoch* (SynthSleepNet's bands; the epoch is complete before
   it is scored, so this is causal at epoch granularity);
4. causal normalisation, per modality one of:
   - *per epoch* (the modalities in ``params.epoch_norm``; none by default): the epoch's own
     robust statistics (median, IQR/1.349). The encoder then sees the signal's shape and
     spectrum, never its amplitude, so the input does not depend on how the night started, the
     derivation, the gain or the subject's age. Measured (``benchmarks/bench_real_transfer.py``,
     ``make model --epoch-norm eeg,eog,ecg``): it cost 4-5 points of kappa on synthetic
     validation and did not make real EEG-only excerpts better (0.30 vs 0.41 accuracy), while it
     did help the real full montage and unsupervised adaptation; so it is an option, not the
     default.
   - *running* (the montage's ``robust`` modalities not in ``epoch_norm``): running
     robust statistics (median, IQR) of the filtered epochs seen so far, this one included,
     cumulative for the first ``norm_warmup`` present epochs, then an exponential average with a
     ``norm_horizon``-epoch time constant. Absent epochs never update them.
   - *fixed* (SpO2): a constant offset and scale.
   Never whole-night statistics. Each epoch carries the ln of the scale each row was divided by
   (``Epoch.log_scale``), so the absolute amplitude stays recoverable (``psg.side_features``).

Because every step depends only on the epoch's own samples and the statistics carried from
earlier epochs, feeding a recording whole or in random chunk sizes gives identical epochs.

Why one module (~570 lines): filters, resampling, quality checks, the causal normaliser and the
assembler are the one path from samples to epochs that live and offline share; kept together so
the two cannot drift apart (``psg/preprocess_batch.py`` is the vectorised offline twin, tested equal).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import signal

from .epoch import EPOCH_SAMPLES, EPOCH_SECONDS, TARGET_RATE, Epoch, Quality
from .montage import MODALITIES, MODALITY_NAMES

if TYPE_CHECKING:  # pragma: no cover
    from .recording import Recording

log = logging.getLogger(__name__)


#: Above this fraction of bad (missing / non-finite) samples a modality is absent, whatever the
#: parameters say: 12 s of lost airflow zero-filled looks exactly like an apnea.
MAX_BAD_FRACTION = 0.1
#: Above this fraction of samples at the epoch's extremes a channel is saturated (at the rails):
#: CLIPPED and absent. Below it, CLIPPED only flags the epoch.
RAIL_FRACTION = 0.5
#: At most this many distinct values in an epoch: a frozen or square signal (calibration pulse,
#: stuck amplifier), FLAT. Fast channels (EEG, EOG, EMG, ECG) are also frozen when more than
#: ``HOLD_FRACTION`` of consecutive samples repeat (a sample-and-hold of a stalled converter).
FROZEN_DISTINCT, HOLD_FRACTION = 4, 0.8
_FAST_MODALITIES = ("eeg", "eog", "emg", "ecg")


class PreprocessError(ValueError):
    """A stream or recording cannot be preprocessed (e.g. a rate that cannot make 30-s epochs)."""


@dataclass(frozen=True)
class PreprocessParams:
    """Everything that decides what an epoch looks like; travels in shard manifests and artifacts.

    Attributes:
        modalities: modalities produced, in row order of ``Epoch.data``.
        target_rate: output rate, Hz.
        epoch_seconds: epoch length, s.
        filter_order: Butterworth order of the band-pass (applied forward and backward).
        epoch_norm: modalities normalised by their own epoch's robust statistics (shape only);
            the others by running statistics (or fixed, per the montage).
        norm_warmup: present epochs averaged cumulatively before the exponential average starts.
        norm_horizon: time constant of the exponential average of the statistics, in epochs.
        clip: normalised values are clipped to [-clip, clip].
        max_bad_fraction: above this fraction of missing/non-finite samples a modality is absent
            (never more than :data:`MAX_BAD_FRACTION`, whatever an older artifact says).
        clip_fraction: above this fraction of samples at the epoch's extremes, CLIPPED is set.
        max_delay: live only: seconds after an epoch's end before it closes without late data.
    """

    modalities: tuple[str, ...] = MODALITY_NAMES
    target_rate: float = TARGET_RATE
    epoch_seconds: float = EPOCH_SECONDS
    filter_order: int = 4
    epoch_norm: tuple[str, ...] = ()
    norm_warmup: int = 20
    norm_horizon: int = 240
    clip: float = 20.0
    max_bad_fraction: float = 0.1
    clip_fraction: float = 0.05
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown:
            raise PreprocessError(f"unknown modalities {unknown}; known: {', '.join(MODALITY_NAMES)}")
        unknown = [m for m in self.epoch_norm if m not in MODALITIES]
        if unknown:
            raise PreprocessError(f"epoch_norm names unknown modalities {unknown}")
        if self.target_rate * self.epoch_seconds != EPOCH_SAMPLES:
            raise PreprocessError("the model expects 30-s epochs at 100 Hz (3000 samples)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        d["epoch_norm"] = list(self.epoch_norm)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessParams:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "modalities" in kw:
            kw["modalities"] = tuple(kw["modalities"])
        # artifacts and shards written before per-epoch normalisation existed used running
        # statistics for every modality
        kw["epoch_norm"] = tuple(kw.get("epoch_norm", ()))
        return cls(**kw)


# ----------------------------------------------------------------------------------------------
# Normaliser: causal running robust statistics, explicit JSON-able state
# ----------------------------------------------------------------------------------------------


@dataclass
class NormaliserState:
    """Per-modality running statistics: ``count`` present epochs seen, ``center`` (running
    median, in the modality's unit) and ``log_scale`` (running log of IQR/1.349)."""

    count: dict[str, int] = field(default_factory=dict)
    center: dict[str, float] = field(default_factory=dict)
    log_scale: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"count": dict(self.count), "center": dict(self.center), "log_scale": dict(self.log_scale)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NormaliserState:
        return cls(dict(d.get("count", {})), dict(d.get("center", {})), dict(d.get("log_scale", {})))


def _robust_stats(x: np.ndarray) -> tuple[float, float]:
    """(median, IQR / 1.349) of a 1-D array: the robust mean and standard deviation."""
    q25, q50, q75 = np.percentile(x, [25.0, 50.0, 75.0])
    return float(q50), float(max(q75 - q25, 1e-12) / 1.349)


def _update_normaliser(state: NormaliserState, mod: str, center: float, scale: float,
                       params: PreprocessParams) -> None:
    """Fold one present epoch's (median, robust sd) into the running statistics of ``mod``."""
    n = state.count.get(mod, 0) + 1
    alpha = 1.0 / n if n <= params.norm_warmup else 1.0 / params.norm_horizon
    if n == 1:
        state.center[mod], state.log_scale[mod] = center, math.log(scale)
    else:
        state.center[mod] += alpha * (center - state.center[mod])
        state.log_scale[mod] += alpha * (math.log(scale) - state.log_scale[mod])
    state.count[mod] = n


# ----------------------------------------------------------------------------------------------
# One epoch of one modality
# ----------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _band_sos(low: float, high: float, rate: float, order: int) -> np.ndarray:
    high = min(high, 0.499 * rate)
    return signal.butter(order, [low, high], btype="bandpass", fs=rate, output="sos")


@lru_cache(maxsize=64)
def _poly_fir(up: int, down: int) -> np.ndarray:
    """The anti-aliasing FIR ``resample_poly`` would design (cached: designing it per epoch
    cost more than the resampling itself)."""
    m = max(up, down)
    h = signal.firwin(2 * 10 * m + 1, 1.0 / m, window=("kaiser", 5.0))
    h.setflags(write=False)
    return h


@lru_cache(maxsize=64)
def _sos_zi(sos_key: bytes, n_sections: int) -> np.ndarray:
    sos = np.frombuffer(sos_key).reshape(n_sections, 6)
    return signal.sosfilt_zi(sos)


def _sosfiltfilt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``scipy.signal.sosfiltfilt`` (odd extension, default pad length) with the filter's
    initial conditions cached instead of recomputed per call."""
    zi = _sos_zi(sos.tobytes(), sos.shape[0])
    ntaps = 2 * sos.shape[0] + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    edge = min(3 * ntaps, x.shape[0] - 1)
    ext = np.concatenate([2 * x[0] - x[edge:0:-1], x, 2 * x[-1] - x[-2:-edge - 2:-1]])
    y, _ = signal.sosfilt(sos, ext, zi=zi * ext[0])
    y = y[::-1]
    y, _ = signal.sosfilt(sos, y, zi=zi * y[0])
    return y[::-1][edge:-edge]


@lru_cache(maxsize=64)
def _rate_ratio(rate: float, target: float) -> tuple[int, int] | None:
    """(up, down) for polyphase resampling, or None if the ratio is not a small rational."""
    frac = Fraction(target / rate).limit_denominator(1000)
    if abs(float(frac) * rate - target) > 1e-9 * target:
        return None
    return frac.numerator, frac.denominator


def samples_per_epoch(rate: float, epoch_seconds: float = EPOCH_SECONDS) -> int:
    """Samples of one epoch at ``rate`` Hz; PreprocessError if the rate can't make whole epochs."""
    n = rate * epoch_seconds
    if rate <= 0 or not math.isfinite(rate) or abs(n - round(n)) > 1e-6 * max(n, 1.0):
        raise PreprocessError(
            f"sampling rate {rate!r} Hz gives {n:g} samples per {epoch_seconds:g}-s epoch; "
            "need a positive rate with a whole number of samples per epoch")
    return int(round(n))


def _resample(x: np.ndarray, rate: float, params: PreprocessParams) -> np.ndarray:
    """[n] at ``rate`` Hz → float64 [3000] at the target rate."""
    if rate == params.target_rate:
        return x.astype(np.float64, copy=False)
    ratio = _rate_ratio(rate, params.target_rate)
    y = signal.resample_poly(x, *ratio, window=_poly_fir(*ratio)) if ratio else signal.resample(x, EPOCH_SAMPLES)
    if y.shape[0] != EPOCH_SAMPLES:  # rounding of odd lengths
        y = np.pad(y, (0, max(0, EPOCH_SAMPLES - y.shape[0])), mode="edge")[:EPOCH_SAMPLES]
    return y


def _fill_bad(x: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Linear interpolation over bad samples (edges held), so filters see no NaN."""
    if good.all():
        return x
    idx = np.arange(x.shape[0])
    return np.interp(idx, idx[good], x[good])


def _frozen(vals: np.ndarray, fast: bool) -> bool:
    """A frozen or square signal: few distinct values, or (``fast``) mostly repeated samples."""
    if np.unique(vals).size <= FROZEN_DISTINCT:
        return True
    return fast and vals.size > 1 and np.count_nonzero(np.diff(vals) == 0) > HOLD_FRACTION * (vals.size - 1)


def preprocess_modality(
    mod: str,
    raw: np.ndarray | None,
    received: np.ndarray | None,
    rate: float,
    norm: NormaliserState,
    params: PreprocessParams,
) -> tuple[np.ndarray, int, bool, float]:
    """Turn one modality's raw epoch into the model's input; updates ``norm`` in place.

    Args:
        mod: modality name.
        raw: float [n] physical samples at ``rate`` Hz covering the epoch (None = no channel).
        received: bool [n], sample arrived (False for stream gaps); None = all arrived.
        rate: native sampling rate, Hz.
        norm: running normaliser statistics (updated when the modality is present).
        params: preprocessing parameters.

    Returns:
        (float32 [3000] normalised signal, Quality bits, present, log_scale): log_scale is ln of
        the scale (the modality's unit, e.g. uV) the signal was divided by: ``norm``'s running
        log scale after this epoch (running normalisation), ln of the epoch's own robust scale
        (``params.epoch_norm``), ln(spec.scale) (fixed, SpO2); 0.0 when absent. The filtered
        signal in its unit is (signal * exp(log_scale)) + a centre, up to the clip.
    """
    spec = MODALITIES[mod]
    zeros = np.zeros(EPOCH_SAMPLES, np.float32)
    if raw is None or raw.size == 0:
        return zeros, int(Quality.MISSING), False, 0.0
    q = Quality.OK
    if rate < spec.min_rate:
        return zeros, int(Quality.LOW_RATE), False, 0.0
    raw = np.asarray(raw, dtype=np.float64)
    got = np.ones(raw.shape[0], bool) if received is None else np.asarray(received, bool)
    finite = np.isfinite(raw)
    if not got.all():
        q |= Quality.GAP
    if not finite[got].all():
        q |= Quality.NONFINITE
    good = got & finite
    if 1.0 - good.mean() > min(params.max_bad_fraction, MAX_BAD_FRACTION):
        return zeros, int(q | (Quality.MISSING if not got.any() else 0)), False, 0.0
    vals = raw[good]
    if spec.flat >= 0 and float(np.std(vals)) < spec.flat:
        return zeros, int(q | Quality.FLAT), False, 0.0
    if spec.norm != "fixed" and _frozen(vals, mod in _FAST_MODALITIES):
        return zeros, int(q | Quality.FLAT), False, 0.0
    lo, hi = float(vals.min()), float(vals.max())
    if hi > lo and spec.norm != "fixed":  # SpO2 sits at its integer maximum for hours: not clipping
        tol = 1e-6 * (hi - lo)
        at_edge = np.count_nonzero(vals >= hi - tol) + np.count_nonzero(vals <= lo + tol)
        if at_edge > params.clip_fraction * vals.size and at_edge > 4:
            q |= Quality.CLIPPED
        if at_edge > RAIL_FRACTION * vals.size:  # saturated: mostly at the rails
            return zeros, int(q), False, 0.0
    x = _resample(_fill_bad(raw, good), rate, params)
    if spec.band is not None:
        x = _sosfiltfilt(_band_sos(*spec.band, params.target_rate, params.filter_order), x)
    if spec.norm == "fixed":
        if not (0.0 <= float(np.median(vals)) <= spec.plausible * 1.0001):
            return zeros, int(q | Quality.IMPLAUSIBLE), False, 0.0
        y = (x - spec.offset) / spec.scale
        log_scale = math.log(spec.scale)
    else:
        center, scale = _robust_stats(x)
        if scale * 1.349 > spec.plausible:
            return zeros, int(q | Quality.IMPLAUSIBLE), False, 0.0
        if mod in params.epoch_norm:
            y = (x - center) / scale
            log_scale = math.log(scale)
        else:
            _update_normaliser(norm, mod, center, scale, params)
            y = (x - norm.center[mod]) / math.exp(norm.log_scale[mod])
            log_scale = norm.log_scale[mod]
    if not good.all():  # zero where nothing real was measured (after resampling to 100 Hz)
        bad100 = _resample((~good).astype(np.float64), rate, params) > 0.5
        y[bad100] = 0.0
    y = np.clip(y, -params.clip, params.clip)
    return y.astype(np.float32), int(q), True, log_scale


# ----------------------------------------------------------------------------------------------
# Incremental assembly: chunks of any size in, epochs out
# ----------------------------------------------------------------------------------------------


class _ModalityBuffer:
    """Per-modality sample placement by time: epoch index → (samples, received mask).

    Samples are kept as float32 while every chunk placed was float32 (a live float32 stream:
    half the memory of float64, and exact, since ``preprocess_modality`` widens them to float64
    first); the first chunk of any other type widens the open epochs to float64 for good, so no
    value is ever rounded.
    """

    def __init__(self, rate: float, epoch_seconds: float) -> None:
        self.rate = float(rate)
        self.n = samples_per_epoch(rate, epoch_seconds)
        self.epochs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.next_sample: int | None = None  # global index after the last sample placed
        self.late_samples = 0
        self.dtype: type[np.floating] = np.float32

    def _widen(self, dtype: np.dtype) -> None:
        """Hold float64 from now on when ``dtype`` is not float32 (open epochs converted exactly)."""
        if self.dtype is np.float32 and dtype != np.float32:
            self.dtype = np.float64
            self.epochs = {e: (v.astype(np.float64), got) for e, (v, got) in self.epochs.items()}

    def place(self, samples: np.ndarray, t0: float, origin: float, first_open_epoch: int) -> None:
        self._widen(samples.dtype)
        k0 = int(round((t0 - origin) * self.rate))
        # a chunk starting within 20 ms of the previous one's end continues it (rounding, a slowly
        # drifting clock). Gaps are not counted here: the live inlet's dejitter detects and counts
        # them (synthsleep.stream.dejitter), once.
        if self.next_sample is not None and abs(k0 - self.next_sample) <= max(2, int(0.02 * self.rate)):
            k0 = self.next_sample
        if self.next_sample is not None and k0 < self.next_sample:  # overlap: keep what we had
            skip = self.next_sample - k0
            samples, k0 = samples[skip:], self.next_sample
        if samples.size == 0:
            return
        first_allowed = first_open_epoch * self.n
        if k0 < first_allowed:
            skip = min(first_allowed - k0, samples.size)
            self.late_samples += skip
            samples, k0 = samples[skip:], k0 + skip
        self.next_sample = max(self.next_sample or 0, k0 + samples.size)
        pos = 0
        while pos < samples.size:
            k = k0 + pos
            e, off = divmod(k, self.n)
            take = min(self.n - off, samples.size - pos)
            buf = self.epochs.get(e)
            if buf is None:
                buf = (np.full(self.n, np.nan, self.dtype), np.zeros(self.n, bool))
                self.epochs[e] = buf
            buf[0][off : off + take] = samples[pos : pos + take]
            buf[1][off : off + take] = True
            pos += take

    def high_water(self, origin: float) -> float:
        """Clock time just after the last sample placed (−inf before any)."""
        return -math.inf if self.next_sample is None else origin + self.next_sample / self.rate


class EpochAssembler:
    """Chunks of samples per modality in, preprocessed ``Epoch`` objects out, in order.

    Args:
        rates: native rate (Hz) of each modality that has a channel; modalities of
            ``params.modalities`` not in ``rates`` are always MISSING.
        params: preprocessing parameters.
        origin: clock time (s) of epoch 0's start.

    Offline: ``push`` everything, collect ``pop()`` as you go, ``flush()`` at the end. Live: also
    call ``advance(now)`` with the current stream clock so epochs whose data is late by more
    than ``params.max_delay`` close anyway (their missing part flagged).
    """

    def __init__(self, rates: Mapping[str, float], params: PreprocessParams | None = None,
                 origin: float = 0.0) -> None:
        self.params = params or PreprocessParams()
        unknown = [m for m in rates if m not in self.params.modalities]
        if unknown:
            raise PreprocessError(f"rates given for modalities not in the montage: {unknown}")
        self.origin = float(origin)
        self.buffers = {m: _ModalityBuffer(r, self.params.epoch_seconds) for m, r in rates.items()}
        self.next_epoch = 0
        self.clock = -math.inf
        self.norm = NormaliserState()
        self._ready: list[Epoch] = []

    # -- input -----------------------------------------------------------------------------
    def push(self, modality: str, samples: np.ndarray, t0: float) -> None:
        """Add ``samples`` (float [n], physical units, contiguous at the modality's rate) whose
        first sample is at clock time ``t0`` seconds. float32 samples are buffered as float32
        (exact), anything else as float64."""
        buf = self.buffers.get(modality)
        if buf is None:
            raise PreprocessError(f"no rate registered for modality {modality!r}")
        x = np.asarray(samples)
        x = x if x.dtype == np.float32 else x.astype(np.float64, copy=False)
        buf.place(x.reshape(-1), float(t0), self.origin, self.next_epoch)
        self._close(final=False)

    def advance(self, now: float) -> None:
        """Tell the assembler the live clock reads ``now`` seconds (closes late epochs)."""
        self.clock = max(self.clock, float(now))
        self._close(final=False)

    # -- output ----------------------------------------------------------------------------
    def pop(self) -> list[Epoch]:
        """Epochs closed since the last call, in index order."""
        out, self._ready = self._ready, []
        return out

    def flush(self) -> list[Epoch]:
        """End of data: close every epoch that has any data (a trailing epoch with less than
        half of its samples in every modality is dropped). Returns all epochs not yet popped."""
        self._close(final=True)
        return self.pop()

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for resume: the next epoch to close and the normaliser statistics."""
        return {"next_epoch": self.next_epoch, "origin": self.origin, "norm": self.norm.to_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.next_epoch = int(state["next_epoch"])
        self.origin = float(state.get("origin", self.origin))
        self.norm = NormaliserState.from_dict(state["norm"])
        for buf in self.buffers.values():
            buf.epochs = {e: b for e, b in buf.epochs.items() if e >= self.next_epoch}

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        """Per-modality counter: samples dropped as too late (their epoch was already closed)."""
        return {m: {"late_samples": b.late_samples} for m, b in self.buffers.items()}

    # -- internals -------------------------------------------------------------------------
    def _epoch_end(self, e: int) -> float:
        return self.origin + (e + 1) * self.params.epoch_seconds

    def _close(self, final: bool) -> None:
        if final:
            last = max((max(b.epochs) for b in self.buffers.values() if b.epochs), default=-1)
        while True:
            e = self.next_epoch
            end = self._epoch_end(e)
            complete = bool(self.buffers) and all(b.high_water(self.origin) >= end - 1e-9
                                                   for b in self.buffers.values())
            late = self.clock >= end + self.params.max_delay
            if not (complete or late or (final and e <= last)):
                return
            if final and not complete and e == last and not self._has_half(e):
                self._drop(e)
                self.next_epoch += 1
                return
            self._ready.append(self._build(e))
            self.next_epoch += 1

    def _has_half(self, e: int) -> bool:
        return any(b.epochs[e][1].mean() >= 0.5 for b in self.buffers.values() if e in b.epochs)

    def _drop(self, e: int) -> None:
        for b in self.buffers.values():
            b.epochs.pop(e, None)

    def _build(self, e: int) -> Epoch:
        p = self.params
        data = np.zeros((len(p.modalities), EPOCH_SAMPLES), np.float32)
        quality = np.zeros(len(p.modalities), np.uint8)
        present = np.zeros(len(p.modalities), bool)
        log_scale = np.zeros(len(p.modalities), np.float32)
        for i, mod in enumerate(p.modalities):
            buf = self.buffers.get(mod)
            raw = received = None
            rate = 0.0
            if buf is not None:
                rate = buf.rate
                got = buf.epochs.pop(e, None)
                # a channel that exists but sent nothing in this epoch: a gap, not a missing sensor
                raw, received = got if got is not None else (np.full(buf.n, np.nan), np.zeros(buf.n, bool))
            data[i], quality[i], present[i], log_scale[i] = preprocess_modality(
                mod, raw, received, rate, self.norm, p)
        return Epoch(e, self.origin + e * p.epoch_seconds, p.modalities, data, quality, present, log_scale)


# ----------------------------------------------------------------------------------------------
# Offline: a whole recording
# ----------------------------------------------------------------------------------------------


def iter_recording_epochs(
    recording: Recording,
    channel_map: Mapping[str, str],
    params: PreprocessParams | None = None,
    chunk_seconds: float = 600.0,
    vectorised: bool = True,
) -> Iterator[Epoch]:
    """Epochs of a recording, read lazily ``chunk_seconds`` at a time.

    Args:
        recording: an open ``Recording``.
        channel_map: ``{modality: channel label}`` (from ``montage.resolve_channels``).
        params: preprocessing parameters.
        chunk_seconds: read size; results do not depend on it.
        vectorised: a continuous recording's epochs are computed many at once
            (``preprocess_batch``; the same numbers, several times faster); False: epoch by
            epoch through ``EpochAssembler``, as live.
    """
    params = params or PreprocessParams()
    if vectorised and getattr(recording, "continuous", False):
        from .preprocess_batch import iter_recording_epochs_batched

        yield from iter_recording_epochs_batched(recording, channel_map, params, chunk_seconds)
        return
    chans = {c.label: c for c in recording.channels}
    used = {m: lab for m, lab in channel_map.items() if m in params.modalities}
    asm = EpochAssembler({m: chans[lab].rate for m, lab in used.items()}, params)
    t = 0.0
    duration = float(recording.duration)
    while t < duration:
        stop = min(t + chunk_seconds, duration)
        for mod, lab in used.items():
            asm.push(mod, recording.read(lab, t, stop), t)
        yield from asm.pop()
        t = stop
    yield from asm.flush()
