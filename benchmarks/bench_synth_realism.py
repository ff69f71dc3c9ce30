"""How realistic are the synthetic nights?  Measured, not asserted.

Sections (each prints a table and goes into the JSON report):
 1. spectra: per-stage EEG spectra of synthetic C4-M1 vs real EEG (DREAMS excerpts with expert
    hypnograms for W/N1/N2/N3; YASA N2/N3 snippets) and REM EOG vs the real LOC/ROC snippet:
    relative band powers and the correlation of mean log-spectra (0.5-30 Hz);
 2. stage statistics of sampled hypnograms vs the 22 real (wake-trimmed) hypnograms;
 3. YASA SleepStaging (pretrained on real PSG) on synthetic nights: accuracy / kappa vs our truth;
 4. a feature baseline (band powers + logistic regression, +-1 epoch context) trained on some
    synthetic subjects, tested on others; the same baseline on the real DREAMS excerpts
    (leave-one-excerpt-out) as the reference for "how hard should it be";
 5. a respiratory baseline (airflow/effort/SpO2 features + logistic regression): per-epoch
    apnea and hypopnea F1 on held-out subjects;
 6. heart rate: RR statistics (mean HR, SDNN, RMSSD, within-minute HR range in apnea vs normal
    minutes) of synthetic severe-apnea nights vs the real Apnea-ECG a02 QRS detections.

Usage: ``python benchmarks/bench_synth_realism.py [--subjects 10] [--hours 8] [--yasa-nights 3]
[--out benchmarks/results/synth_realism.json]``.  Needs ../shared/data/real for sections 1, 2, 4-real.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly, welch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synthsleep.psg.synthetic import hypnogram_stats, sample_hypnogram, synthesize_night  # noqa: E402
from synthsleep.psg.synthetic.cli import night_seed, subject_params  # noqa: E402
from synthsleep.psg.synthetic.hypnogram import read_simple_hypnogram, read_sleep_edf_csv, trim_wake  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"
STAGES = ("W", "N1", "N2", "N3", "REM")
BANDS = {"delta": (0.5, 2.0), "delta2": (2.0, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 12.0),
         "sigma": (12.0, 16.0), "beta": (16.0, 30.0)}
FGRID = np.arange(0.5, 30.01, 0.25)
log = logging.getLogger("bench_synth_realism")


# ------------------------------------------------------------------------------------------------
# spectra
# ------------------------------------------------------------------------------------------------

def psd_grid(x: np.ndarray, fs: float) -> np.ndarray:
    """Welch PSD (4-s windows) of [k, n] epochs interpolated onto FGRID -> [k, len(FGRID)] uV^2/Hz."""
    x = np.atleast_2d(x)
    f, p = welch(x - x.mean(axis=1, keepdims=True), fs=fs, nperseg=int(min(4 * fs, x.shape[1])), axis=1)
    return np.stack([np.interp(FGRID, f, row) for row in p])


def rel_bands(p: np.ndarray) -> dict[str, float]:
    """Relative band powers of a mean PSD on FGRID."""
    tot = p.sum()
    return {k: float(p[(FGRID >= a) & (FGRID < b)].sum() / tot) for k, (a, b) in BANDS.items()}


def real_dreams_epochs() -> dict[int, list[tuple[np.ndarray, float, int]]]:
    """Real 30-s EEG epochs from the DREAMS excerpts by stage: stage -> [(samples, fs, excerpt)]."""
    rk = {5: 0, 4: 4, 3: 1, 2: 2, 1: 3, 0: 3}
    out: dict[int, list] = {k: [] for k in range(5)}
    for i in range(1, 9):
        sig_p, hyp_p = REAL / "dreams" / f"excerpt{i}.txt", REAL / "dreams" / f"Hypnogram_excerpt{i}.txt"
        if not sig_p.exists() or not hyp_p.exists():
            continue
        x = np.loadtxt(sig_p, skiprows=1)
        fs = x.size / 1800.0
        fs = round(fs / 50) * 50  # 50, 100 or 200 Hz
        h = np.loadtxt(hyp_p, skiprows=1).astype(int)
        for e in range(h.size // 6):
            codes = h[6 * e: 6 * e + 6]
            if (codes == codes[0]).all() and codes[0] in rk:
                seg = x[int(e * 30 * fs): int((e + 1) * 30 * fs)]
                if seg.size == int(30 * fs):
                    out[rk[int(codes[0])]].append((seg, float(fs), i))
    return out


def spectra_section(nights: list[dict], real_epochs: dict) -> dict:
    """Per-stage synthetic vs real spectra: relative band powers and log-spectrum correlation."""
    res: dict = {}
    syn_psd = {k: [] for k in range(5)}
    for nt in nights:
        p = psd_grid(nt["eeg100"], 100.0)
        for k in range(5):
            syn_psd[k].append(p[nt["stages"] == k])
    syn_mean = {k: np.concatenate(v).mean(axis=0) for k, v in syn_psd.items() if sum(len(a) for a in v)}
    real_mean = {}
    for k, items in real_epochs.items():
        items = [it for it in items if it[1] >= 100]  # the 50-Hz excerpt cannot show beta
        if len(items) >= 3:
            real_mean[k] = np.mean([psd_grid(seg, fs)[0] for seg, fs, _ in items], axis=0)
    for k in range(5):
        row = {"n_synthetic_epochs": int(sum(len(a) for a in syn_psd[k]))}
        if k in syn_mean:
            row["synthetic_rel"] = rel_bands(syn_mean[k])
            row["synthetic_rms_uv"] = float(np.sqrt(syn_mean[k].sum() * 0.25))
        if k in real_mean:
            row["real_dreams_rel"] = rel_bands(real_mean[k])
            row["real_dreams_rms_uv"] = float(np.sqrt(real_mean[k].sum() * 0.25))
            row["real_n_epochs"] = len([it for it in real_epochs[k] if it[1] >= 100])
            if k in syn_mean:
                row["logspec_corr"] = float(np.corrcoef(np.log(syn_mean[k]), np.log(real_mean[k]))[0, 1])
        res[STAGES[k]] = row
    # YASA snippets
    snip = REAL / "snippets"
    if (snip / "data_N2_spindles_15sec_200Hz.txt").exists():
        n2 = np.loadtxt(snip / "data_N2_spindles_15sec_200Hz.txt")
        pr = psd_grid(n2, 200.0)[0]
        res["N2"]["real_snippet_rel"] = rel_bands(pr)
        res["N2"]["snippet_logspec_corr"] = float(np.corrcoef(np.log(syn_mean[2]), np.log(pr))[0, 1])
        n3 = np.loadtxt(snip / "data_N3_no-spindles_30sec_100Hz.txt")
        pr = psd_grid(n3, 100.0)[0]
        res["N3"]["real_snippet_rel"] = rel_bands(pr)
        res["N3"]["snippet_logspec_corr"] = float(np.corrcoef(np.log(syn_mean[3]), np.log(pr))[0, 1])
        d = np.load(snip / "data_EOGs_REM_256Hz.npz")
        eog = d["data"]
        pr = psd_grid(eog[0][: eog.shape[1] // 7680 * 7680].reshape(-1, 7680), 256.0).mean(axis=0)
        syn_eog = np.concatenate([psd_grid(nt["eog100"][nt["stages"] == 4], 100.0) for nt in nights
                                  if (nt["stages"] == 4).any()]).mean(axis=0)
        r_syn = np.concatenate([nt["eog_corr"][nt["stages"] == 4] for nt in nights])
        res["REM_EOG"] = {
            "real_rel": rel_bands(pr), "synthetic_rel": rel_bands(syn_eog),
            "logspec_corr": float(np.corrcoef(np.log(syn_eog), np.log(pr))[0, 1]),
            "real_rms_uv": float(eog[0].std()), "synthetic_rms_uv": float(np.sqrt(syn_eog.sum() * 0.25)),
            "real_loc_roc_corr": float(np.corrcoef(eog)[0, 1]),
            "synthetic_e1_e2_corr_median": float(np.median(r_syn)),
        }
    return res


# ------------------------------------------------------------------------------------------------
# stage statistics
# ------------------------------------------------------------------------------------------------

def stage_stats_section(n_synth: int = 60, hours: float = 8.0) -> dict:
    hyp = REAL / "hypnograms"
    real = [trim_wake(s) for s in read_sleep_edf_csv(hyp / "sleep-edf-sc-20nights.csv").values()]
    real += [trim_wake(read_simple_hypnogram(hyp / f)) for f in ("data_full_6hrs_100Hz_hypno_30s.txt",)]
    rs = [hypnogram_stats(s) for s in real if s.size]
    ss = [hypnogram_stats(sample_hypnogram(np.random.default_rng(1000 + i), int(hours * 120))) for i in range(n_synth)]
    out = {}
    for key in rs[0]:
        rv = np.array([s.get(key, np.nan) for s in rs], dtype=float)
        sv = np.array([s.get(key, np.nan) for s in ss], dtype=float)
        out[key] = {"real_mean": float(np.nanmean(rv)), "real_sd": float(np.nanstd(rv)),
                    "synthetic_mean": float(np.nanmean(sv)), "synthetic_sd": float(np.nanstd(sv))}
    out["_n"] = {"real": len(rs), "synthetic": len(ss)}
    return out


# ------------------------------------------------------------------------------------------------
# nights and features
# ------------------------------------------------------------------------------------------------

def make_night(subject: int, hours: float, seed: int) -> dict:
    """One synthetic night reduced to what the sections need (100-Hz EEG/EOG epochs, EMG power, resp)."""
    params = subject_params(seed, subject, None)
    night = synthesize_night(night_seed(seed, subject, 0), hours, params)
    n = night.stages.size
    sig = {s.label: s for s in night.signals}
    eeg100 = resample_poly(sig["EEG C4-M1"].data.astype(float), 25, 64)[: n * 3000].reshape(n, 3000)
    e1 = resample_poly(sig["EOG E1-M2"].data.astype(float), 25, 64)[: n * 3000].reshape(n, 3000)
    e2 = resample_poly(sig["EOG E2-M2"].data.astype(float), 25, 64)[: n * 3000].reshape(n, 3000)
    emg = sig["EMG Chin"].data.astype(float)[: n * 15360].reshape(n, 15360)
    r = np.array([np.corrcoef(a, b)[0, 1] if a.std() > 0 and b.std() > 0 else 0.0 for a, b in zip(e1, e2)])
    ap = np.zeros(n, dtype=np.int8)
    hy = np.zeros(n, dtype=np.int8)
    for e in night.resp_events():
        i0, i1 = int(e.onset // 30), min(n - 1, int((e.end - 1e-6) // 30))
        (hy if e.type == "hypopnea" else ap)[i0: i1 + 1] = 1
    return {"subject": subject, "stages": night.stages, "eeg100": eeg100, "eog100": e1, "eog_corr": r,
            "emg_logvar": np.log(emg.var(axis=1) + 1e-3), "ahi": night.ahi(),
            "emg_raw": sig["EMG Chin"].data, "eeg_raw": sig["EEG C4-M1"].data, "eog_raw": sig["EOG E1-M2"].data,
            "flow": sig["Resp Airflow"].data.astype(float), "thorax": sig["Resp Thorax"].data.astype(float),
            "abdomen": sig["Resp Abdomen"].data.astype(float), "spo2": sig["SpO2"].data.astype(float),
            "apnea": ap, "hypopnea": hy, "r_peaks": night.r_peaks}


def _zscore(f: np.ndarray) -> np.ndarray:
    med = np.median(f, axis=0)
    iqr = np.subtract(*np.percentile(f, [75, 25], axis=0))
    return (f - med) / np.where(iqr > 1e-9, iqr, 1.0)


def _context(f: np.ndarray) -> np.ndarray:
    prev = np.vstack([f[:1], f[:-1]])
    nxt = np.vstack([f[1:], f[-1:]])
    return np.hstack([f, prev, nxt])


def stage_features(eeg: np.ndarray, fs: float, eog: np.ndarray | None = None,
                   emg_logvar: np.ndarray | None = None) -> np.ndarray:
    """Per-epoch features: log absolute and relative band powers of EEG (+ EOG low-band power, EMG)."""
    p = psd_grid(eeg, fs)
    cols = []
    tot = p.sum(axis=1)
    for a, b in BANDS.values():
        bp = p[:, (FGRID >= a) & (FGRID < b)].sum(axis=1)
        cols += [np.log(bp + 1e-6), bp / tot]
    cols.append(np.log(tot))
    if eog is not None:
        q = psd_grid(eog, fs)
        cols += [np.log(q[:, FGRID < 2].sum(axis=1) + 1e-6), np.log(q[:, (FGRID >= 2) & (FGRID < 8)].sum(axis=1) + 1e-6)]
    if emg_logvar is not None:
        cols.append(emg_logvar)
    return np.column_stack(cols)


def _fit_eval(xtr, ytr, xte, yte) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import cohen_kappa_score, confusion_matrix, f1_score
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(xtr)
    clf = LogisticRegression(max_iter=2000, C=0.5).fit(sc.transform(xtr), ytr)
    pred = clf.predict(sc.transform(xte))
    return {"accuracy": float(np.mean(pred == yte)), "kappa": float(cohen_kappa_score(yte, pred)),
            "f1_per_stage": dict(zip([STAGES[k] for k in sorted(set(yte) | set(pred))],
                                     map(float, f1_score(yte, pred, average=None, labels=sorted(set(yte) | set(pred)))))),
            "confusion": confusion_matrix(yte, pred, labels=list(range(5))).tolist(), "n_test": int(yte.size)}


def baseline_section(nights: list[dict]) -> dict:
    """Feature baseline trained on the first ~60 % of subjects, tested on the rest."""
    feats = [_context(_zscore(stage_features(nt["eeg100"], 100.0, nt["eog100"], nt["emg_logvar"]))) for nt in nights]
    k = max(1, int(round(0.6 * len(nights))))
    xtr, ytr = np.vstack(feats[:k]), np.concatenate([nt["stages"] for nt in nights[:k]])
    xte, yte = np.vstack(feats[k:]), np.concatenate([nt["stages"] for nt in nights[k:]])
    out = {"with_context": _fit_eval(xtr, ytr, xte, yte)}
    n0 = stage_features(nights[0]["eeg100"], 100.0).shape[1] + 3
    out["no_context"] = _fit_eval(xtr[:, :n0], ytr, xte[:, :n0], yte)
    eeg_only = stage_features(nights[0]["eeg100"], 100.0).shape[1]
    out["eeg_only_no_context"] = _fit_eval(xtr[:, :eeg_only], ytr, xte[:, :eeg_only], yte)
    out["train_subjects"], out["test_subjects"] = k, len(nights) - k
    return out


def real_baseline_section(real_epochs: dict) -> dict:
    """The same EEG-only baseline on the real DREAMS excerpts, leave-one-excerpt-out (the realism target)."""
    rows = []
    for k, items in real_epochs.items():
        for seg, fs, exc in items:
            if fs >= 100:
                seg100 = resample_poly(seg, 1, int(fs // 100)) if fs > 100 else seg
                rows.append((exc, k, seg100))
    if not rows:
        return {}
    exc = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    x = stage_features(np.stack([r[2] for r in rows]), 100.0)
    for e in np.unique(exc):
        x[exc == e] = _zscore(x[exc == e])
    preds_true = []
    for e in np.unique(exc):
        tr, te = exc != e, exc == e
        if len(set(y[tr])) < 2:
            continue
        res = _fit_eval(x[tr], y[tr], x[te], y[te])
        preds_true.append((res["accuracy"], int(te.sum())))
    acc = sum(a * n for a, n in preds_true) / sum(n for _, n in preds_true)
    return {"eeg_only_no_context_accuracy": float(acc), "n_epochs": int(y.size),
            "stage_counts": {STAGES[k]: int((y == k).sum()) for k in range(5)},
            "note": "DREAMS excerpts: 30 min each, mostly N2/N3/W/N1, one derivation (C3-A1/Cz-A1), "
                    "leave-one-excerpt-out; not directly comparable (few epochs, hardly any REM)"}


def yasa_section(nights: list[dict], k: int) -> dict:
    """YASA's pretrained SleepStaging on synthetic nights vs our ground truth."""
    try:
        import mne
        import yasa
    except ImportError as exc:
        return {"skipped": f"yasa/mne not importable: {exc}"}
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    accs, kappas, conf = [], [], np.zeros((5, 5), dtype=int)
    t0 = time.perf_counter()
    for nt in nights[:k]:
        emg = resample_poly(nt["emg_raw"].astype(float), 1, 2)
        n = min(nt["eeg_raw"].size, emg.size)
        data = np.vstack([nt["eeg_raw"][:n], nt["eog_raw"][:n], emg[:n]]) * 1e-6
        raw = mne.io.RawArray(data, mne.create_info(["C4", "E1", "EMG"], 256.0, ["eeg", "eog", "emg"]), verbose="error")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = yasa.SleepStaging(raw, eeg_name="C4", eog_name="E1", emg_name="EMG").predict()
        p = np.asarray(pred.as_int().values if hasattr(pred, "as_int") else pred)
        m = min(p.size, nt["stages"].size)
        y = nt["stages"][:m]
        accs.append(float(np.mean(p[:m] == y)))
        kappas.append(float(cohen_kappa_score(y, p[:m])))
        conf += confusion_matrix(y, p[:m], labels=list(range(5)))
    return {"nights": len(accs), "accuracy_per_night": accs, "kappa_per_night": kappas,
            "accuracy_mean": float(np.mean(accs)), "kappa_mean": float(np.mean(kappas)),
            "confusion_rows_truth_cols_yasa": conf.tolist(), "seconds": time.perf_counter() - t0}


def resp_features(nt: dict) -> np.ndarray:
    """Per-epoch respiratory features (relative to the night): flow/effort amplitude, SpO2 drop, paradox."""
    n = nt["stages"].size
    flow = nt["flow"][: n * 960].reshape(n, 960)
    th = nt["thorax"][: n * 960].reshape(n, 960)
    ab = nt["abdomen"][: n * 960].reshape(n, 960)
    # 10-s windows: smallest flow amplitude in the epoch relative to the night median
    w = flow.reshape(n, 3, 320)
    amp = np.percentile(w, 95, axis=2) - np.percentile(w, 5, axis=2)
    base = np.median(amp)
    fmin = np.log(amp.min(axis=1) / base + 1e-3)
    fmean = np.log(amp.mean(axis=1) / base + 1e-3)
    te = th.reshape(n, 3, 320)
    tamp = np.percentile(te, 95, axis=2) - np.percentile(te, 5, axis=2)
    tmin = np.log(tamp.min(axis=1) / np.median(tamp) + 1e-3)
    par = np.array([np.corrcoef(a, b)[0, 1] if a.std() > 0 and b.std() > 0 else 0 for a, b in zip(th, ab)])
    spo2 = nt["spo2"]
    s = spo2[: n * 30].reshape(n, 30)
    nxt = np.vstack([s[1:], s[-1:]])
    nxt2 = np.vstack([s[2:], s[-2:]])
    drop = np.max(np.hstack([s, nxt]), axis=1) - np.min(np.hstack([nxt, nxt2]), axis=1)
    f = np.column_stack([fmin, fmean, tmin, par, drop, nt["stages"] == 0])
    return _context(f)


def resp_section(nights: list[dict]) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import StandardScaler

    k = max(1, int(round(0.6 * len(nights))))
    x = [resp_features(nt) for nt in nights]
    out = {}
    for target in ("apnea", "hypopnea"):
        ytr = np.concatenate([nt[target] for nt in nights[:k]])
        yte = np.concatenate([nt[target] for nt in nights[k:]])
        if ytr.sum() == 0 or yte.sum() == 0:
            out[target] = {"skipped": "no positive epochs"}
            continue
        sc = StandardScaler().fit(np.vstack(x[:k]))
        clf = LogisticRegression(max_iter=2000, class_weight="balanced").fit(sc.transform(np.vstack(x[:k])), ytr)
        pred = clf.predict(sc.transform(np.vstack(x[k:])))
        out[target] = {"f1": float(f1_score(yte, pred)), "positive_rate_test": float(yte.mean())}
    out["ahi_per_night"] = [float(nt["ahi"]) for nt in nights]
    return out


def rr_stats(r_times: np.ndarray, apnea_minutes: np.ndarray | None = None) -> dict:
    """Heart-rate statistics from R-peak times (s): robust (outlier RR removed) mean HR, SDNN, RMSSD,
    and the mean within-minute HR range in apnea vs normal minutes (cyclic variation of heart rate)."""
    rr = np.diff(r_times)
    t = r_times[1:]
    ok = (rr > 0.3) & (rr < 2.0)
    ok[1:] &= np.abs(np.diff(rr)) < 0.2 * rr[1:]
    rr, t = rr[ok], t[ok]
    out = {"hr_mean_bpm": float(60.0 / rr.mean()), "sdnn_ms": float(rr.std() * 1000),
           "rmssd_ms": float(np.sqrt(np.mean(np.diff(rr) ** 2)) * 1000), "beats": int(rr.size)}
    if apnea_minutes is not None:
        minute = (t // 60).astype(int)
        hr = 60.0 / rr
        ranges = {True: [], False: []}
        for m in np.unique(minute):
            if m < apnea_minutes.size:
                sel = hr[minute == m]
                if sel.size > 10:
                    ranges[bool(apnea_minutes[m])].append(float(np.percentile(sel, 95) - np.percentile(sel, 5)))
        out["hr_range_apnea_min_bpm"] = float(np.mean(ranges[True])) if ranges[True] else float("nan")
        out["hr_range_normal_min_bpm"] = float(np.mean(ranges[False])) if ranges[False] else float("nan")
    return out


def cardiac_section(nights: list[dict]) -> dict:
    """Synthetic RR statistics vs the real Apnea-ECG a02 QRS detections (an apnea patient)."""
    out: dict = {}
    base = REAL / "apnea-ecg" / "a02"
    try:
        import wfdb

        qrs = wfdb.rdann(str(base), "qrs")
        apn = wfdb.rdann(str(base), "apn")
        ap_min = np.array([s == "A" for s in apn.symbol])
        out["real_a02"] = rr_stats(qrs.sample / qrs.fs, ap_min) | {"apnea_minutes_pct": float(100 * ap_min.mean())}
    except Exception as exc:  # noqa: BLE001 - reference data optional
        out["real_a02"] = {"skipped": str(exc)}
    syn = []
    for nt in nights:
        n_min = nt["stages"].size // 2
        ap_min = np.array([(nt["apnea"][2 * m: 2 * m + 2] | nt["hypopnea"][2 * m: 2 * m + 2]).any() for m in range(n_min)])
        syn.append(rr_stats(nt["r_peaks"], ap_min) | {"apnea_minutes_pct": float(100 * ap_min.mean()), "ahi": nt["ahi"]})
    out["synthetic_per_night"] = syn
    sev = [x for x in syn if x["ahi"] >= 30]
    if sev:
        out["synthetic_severe_mean"] = {k: float(np.nanmean([x[k] for x in sev])) for k in sev[0]}
    return out


# ------------------------------------------------------------------------------------------------

def _print_report(rep: dict) -> None:
    print("\n== 1. spectra (relative band power, synthetic | real DREAMS) ==")
    for st in STAGES:
        row = rep["spectra"].get(st, {})
        if "synthetic_rel" not in row:
            continue
        syn, real = row["synthetic_rel"], row.get("real_dreams_rel", {})
        bands = " ".join(f"{b}={syn[b]:.3f}|{real.get(b, float('nan')):.3f}" for b in BANDS)
        print(f"{st:4s} rms={row.get('synthetic_rms_uv', 0):5.1f}|{row.get('real_dreams_rms_uv', float('nan')):5.1f}uV "
              f"logspec_r={row.get('logspec_corr', float('nan')):.3f}  {bands}")
    for st in ("N2", "N3"):
        row = rep["spectra"].get(st, {})
        if "snippet_logspec_corr" in row:
            print(f"{st} vs YASA snippet: logspec_r={row['snippet_logspec_corr']:.3f} real_rel={row['real_snippet_rel']}")
    if "REM_EOG" in rep["spectra"]:
        r = rep["spectra"]["REM_EOG"]
        print(f"REM EOG: logspec_r={r['logspec_corr']:.3f} rms syn/real={r['synthetic_rms_uv']:.1f}/{r['real_rms_uv']:.1f} uV "
              f"E1-E2 corr syn={r['synthetic_e1_e2_corr_median']:.2f} real LOC-ROC={r['real_loc_roc_corr']:.2f}")
    print("\n== 2. stage statistics (real mean±sd | synthetic mean±sd) ==")
    for key, v in rep["stage_stats"].items():
        if key.startswith("_"):
            continue
        print(f"{key:18s} {v['real_mean']:7.2f}±{v['real_sd']:5.2f} | {v['synthetic_mean']:7.2f}±{v['synthetic_sd']:5.2f}")
    if "yasa" in rep:
        y = rep["yasa"]
        print(f"\n== 3. YASA on synthetic: acc={y.get('accuracy_mean', float('nan')):.3f} "
              f"kappa={y.get('kappa_mean', float('nan')):.3f} ({y.get('nights', 0)} nights) {y.get('skipped', '')}")
    b = rep["baseline"]
    print("\n== 4. feature baseline (logistic regression, held-out subjects) ==")
    for key in ("with_context", "no_context", "eeg_only_no_context"):
        print(f"{key:22s} acc={b[key]['accuracy']:.3f} kappa={b[key]['kappa']:.3f} f1={ {k: round(v, 2) for k, v in b[key]['f1_per_stage'].items()} }")
    if rep.get("real_baseline"):
        print(f"real DREAMS EEG-only baseline acc={rep['real_baseline']['eeg_only_no_context_accuracy']:.3f} "
              f"({rep['real_baseline']['n_epochs']} epochs)")
    r = rep["resp"]
    print(f"\n== 5. respiratory baseline: apnea F1={r['apnea'].get('f1', float('nan')):.3f} "
          f"hypopnea F1={r['hypopnea'].get('f1', float('nan')):.3f}")
    c = rep.get("cardiac", {})
    keys = ("hr_mean_bpm", "sdnn_ms", "rmssd_ms", "hr_range_apnea_min_bpm", "hr_range_normal_min_bpm", "apnea_minutes_pct")
    if "synthetic_severe_mean" in c and "hr_mean_bpm" in c.get("real_a02", {}):
        print("\n== 6. heart rate: real Apnea-ECG a02 | synthetic severe (AHI>=30) nights ==")
        for k in keys:
            print(f"{k:24s} {c['real_a02'][k]:7.1f} | {c['synthetic_severe_mean'][k]:7.1f}")
    print(f"\ngeneration: {rep['generation']['seconds_per_8h_night']:.1f} s per 8-h night")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=10)
    ap.add_argument("--hours", type=float, default=8.0)
    ap.add_argument("--yasa-nights", type=int, default=3)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "synth_realism.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not REAL.exists():
        print(f"real reference data not found at {REAL}; sections 1, 2 and the real baseline need it", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    nights = []
    gen_times = []
    for s in range(args.subjects):
        t = time.perf_counter()
        nights.append(make_night(s, args.hours, args.seed))
        gen_times.append(time.perf_counter() - t)
        log.info("night %d/%d: %.1f s (AHI %.1f)", s + 1, args.subjects, gen_times[-1], nights[-1]["ahi"])
    real_epochs = real_dreams_epochs()
    rep = {"config": vars(args) | {"out": str(args.out)},
           "generation": {"seconds_per_night_incl_reduction": gen_times,
                          "seconds_per_8h_night": float(np.median(gen_times)) * 8.0 / args.hours,
                          "cpu_threads": os.environ.get("OMP_NUM_THREADS", "unset")}}
    rep["spectra"] = spectra_section(nights, real_epochs)
    rep["stage_stats"] = stage_stats_section()
    rep["baseline"] = baseline_section(nights)
    rep["real_baseline"] = real_baseline_section(real_epochs)
    rep["resp"] = resp_section(nights)
    rep["cardiac"] = cardiac_section(nights)
    if args.yasa_nights > 0:
        rep["yasa"] = yasa_section(nights, args.yasa_nights)
    rep["seconds_total"] = time.perf_counter() - t0
    _print_report(rep)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rep, indent=1, default=float))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
