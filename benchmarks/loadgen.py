"""Load generator for the live-capacity benchmark: N real-time LSL beds in ONE separate process.

    python benchmarks/loadgen.py --light 300 [--full 5] --prefix lg --seconds 300 --log rounds.csv

Beds, shaped like ``synthsleep replay`` beds (same description: ``desc/channels/channel/{label,
unit,type}`` and ``desc/synthsleep/{bed, main, streams}``, the stream with the EEG named like the
bed, the others ``<bed>-<rate>Hz``):

* light bed ``<prefix>-<i>``: ONE 8-channel 100-Hz float32 stream (EEG, EOG, EMG, ECG, airflow,
  thorax, abdomen, SpO2);
* full bed ``<prefix>-f<j>``: a synthetic night's layout, 4 streams: 512 Hz (EMG, ECG), 256 Hz
  (2 EEG, 2 EOG), 32 Hz (airflow, thorax, abdomen), 1 Hz (SpO2) - 10 channels.

Every ``--chunk`` seconds (0.1) one round pushes, to every outlet, the samples whose time has come
(real time, scheduled against the start, never drifting), stamped ``start + i / rate`` on the LSL
clock. Beds are phase-staggered like a real ward (patients are not connected in the same second):
bed k starts pushing ``k / N * 30`` s after the start (``--aligned``: all at once). The signal is a
fixed random 30-s block per stream (noise + a rhythm in plausible amplitudes), repeated.

``--log`` gets one CSV row per round: ``stamp_end`` (the LSL time up to which samples were pushed)
and ``pushed_at`` (``local_clock()`` once the round's pushes returned). The benchmark maps each
epoch end to the round that pushed its last sample (the generator's own delays are then not
blamed on the monitor). The first line of stdout is ``ready <start>`` once the outlets exist.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import time

import numpy as np
import pylsl

LIGHT = [("EEG C4-M1", "uV", "EEG", 30.0), ("EOG E1-M2", "uV", "EOG", 40.0), ("EMG Chin", "uV", "EMG", 8.0),
         ("ECG II", "uV", "ECG", 400.0), ("Resp Airflow", "uV", "RESP", 150.0),
         ("Resp Thorax", "uV", "RESP", 150.0), ("Resp Abdomen", "uV", "RESP", 150.0), ("SpO2", "%", "SPO2", 0.0)]
FULL = {512.0: [("EMG Chin", "uV", "EMG", 8.0), ("ECG II", "uV", "ECG", 400.0)],
        256.0: [("EEG C4-M1", "uV", "EEG", 30.0), ("EEG C3-M2", "uV", "EEG", 30.0),
                ("EOG E1-M2", "uV", "EOG", 40.0), ("EOG E2-M2", "uV", "EOG", 40.0)],
        32.0: [("Resp Airflow", "uV", "RESP", 150.0), ("Resp Thorax", "uV", "RESP", 150.0),
               ("Resp Abdomen", "uV", "RESP", 150.0)],
        1.0: [("SpO2", "%", "SPO2", 0.0)]}
EPOCH = 30.0


def _block(chans: list[tuple[str, str, str, float]], rate: float, rng: np.random.Generator) -> np.ndarray:
    """float32 [30 s x rate, channels]: noise plus a rhythm (SpO2: 96 % +- 0.5)."""
    n = int(EPOCH * rate)
    t = np.arange(n) / rate
    cols = []
    for _label, _, ctype, amp in chans:
        if ctype == "SPO2":
            cols.append(96.0 + 0.5 * np.sin(2 * np.pi * t / 30.0))
            continue
        f = 0.25 if ctype == "RESP" else (1.1 if ctype == "ECG" else 8.0)
        cols.append(amp * (rng.normal(0, 1, n) + np.sin(2 * np.pi * f * t)))
    return np.ascontiguousarray(np.stack(cols, axis=1), dtype=np.float32)


class _Outlet:
    def __init__(self, bed: str, name: str, sid: str, rate: float, chans, siblings: str, main: str,
                 rng: np.random.Generator) -> None:
        info = pylsl.StreamInfo(name, "PSG", len(chans), rate, "float32", sid)
        ch = info.desc().append_child("channels")
        for label, unit, ctype, _ in chans:
            c = ch.append_child("channel")
            c.append_child_value("label", label)
            c.append_child_value("unit", unit)
            c.append_child_value("type", ctype)
        meta = info.desc().append_child("synthsleep")
        meta.append_child_value("bed", bed)
        meta.append_child_value("main", main)
        meta.append_child_value("streams", siblings)
        self.outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=60)
        self.rate = rate
        self.block = _block(chans, rate, rng)
        self.pushed = 0  # samples pushed so far


class _Bed:
    def __init__(self, bed: str, layout: dict[float, list], offset: float, rng: np.random.Generator) -> None:
        self.offset = offset
        sids = {r: f"{bed}-{r:g}Hz" for r in layout}
        main = next(r for r, ch in layout.items() if any(c[2] == "EEG" for c in ch))
        siblings = ",".join(sids.values())
        self.outlets = [_Outlet(bed, bed if r == main else sids[r], sids[r], r, ch, siblings, sids[main], rng)
                        for r, ch in layout.items()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--light", type=int, default=0, help="light beds (one 8-channel 100-Hz stream each)")
    p.add_argument("--full", type=int, default=0, help="full beds (4 streams, 10 channels, up to 512 Hz)")
    p.add_argument("--prefix", default="lg", help="bed names: PREFIX-<i> (light), PREFIX-f<j> (full)")
    p.add_argument("--seconds", type=float, default=300.0, help="seconds to push after the start (then exit)")
    p.add_argument("--chunk", type=float, default=0.1, help="seconds per push round (0.1)")
    p.add_argument("--aligned", action="store_true", help="all beds start together (epochs close at once)")
    p.add_argument("--log", default=None, help="CSV of rounds: stamp_end,pushed_at (LSL clock, s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    n = args.light + args.full
    if n <= 0:
        p.error("give --light and/or --full")
    beds: list[_Bed] = []
    for k in range(n):
        full = k >= args.light
        name = f"{args.prefix}-f{k - args.light}" if full else f"{args.prefix}-{k}"
        offset = 0.0 if args.aligned else (k / n) * EPOCH
        beds.append(_Bed(name, FULL if full else {100.0: LIGHT}, offset, rng))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log = open(args.log, "w", buffering=1 << 16) if args.log else None  # noqa: SIM115
    if log:
        log.write("stamp_end,pushed_at\n")
    start = pylsl.local_clock() + 1.0
    print(f"ready {start:.6f}", flush=True)
    r = 0
    while not stop.is_set():
        r += 1
        t_end = r * args.chunk  # signal seconds up to which this round pushes
        if t_end > args.seconds + 1e-9:
            break
        wait = start + t_end - pylsl.local_clock()
        if wait > 0:
            stop.wait(wait)
        for bed in beds:
            local = t_end - bed.offset
            if local <= 0:
                continue
            for o in bed.outlets:
                k1 = int(math.floor(local * o.rate + 1e-9))
                if k1 <= o.pushed:
                    continue
                idx = np.arange(o.pushed, k1) % len(o.block)
                # stamp of the chunk's last sample; liblsl back-fills the others at the nominal rate
                o.outlet.push_chunk(o.block[idx], start + bed.offset + (k1 - 1) / o.rate)
                o.pushed = k1
        if log:
            log.write(f"{start + t_end:.6f},{pylsl.local_clock():.6f}\n")
            if r % 50 == 0:
                log.flush()
    if log:
        log.close()
    time.sleep(3.0)  # let the consumers drain the last pushes before the outlets go
    sys.stdout.flush()
    os._exit(0)  # skip tearing down hundreds of outlets one by one (tens of seconds on a loaded machine)


if __name__ == "__main__":
    sys.exit(main())
