"""Throughput, side by side in one run (issue 11): offline score old vs new vs YASA, step times,
int8, the paper-size model on one CPU thread, the frame backbone once per epoch.

    python benchmarks/bench_throughput.py [--work /tmp/bench-throughput] [--hours 8] [--no-paper]
        [--model A.onnx --model B.onnx ...] [--out benchmarks/results/throughput.md]

1. An 8-h synthetic night written to EDF with the project's generator (``psg.synthetic``).
2. ``score`` of it with the bundled model (or each ``--model``, side by side): the old path (preprocessing epoch by epoch, the ONNX
   step graph once per epoch at batch 1), the new path (preprocessing vectorised over epochs,
   the encoder graph batched over 64 epochs, the temporal step per epoch) on 1 thread and on
   every core, and YASA ``SleepStaging`` (EEG+EOG+EMG) on the same EDF, warm, same process.
   The bundled artifact's split graphs are exported from ``model.safetensors`` into ``--work``
   when the artifact has none.
3. Step graph at epoch 10 vs epoch 900 (state carried), the temporal step alone, the small
   model's dynamic int8 step; 1 thread.
4. The frame backbone over 27 windows vs once per epoch (``backbone_mode``): encoder ms/epoch
   of ``small`` (random weights); for ``paper`` the step times of 5. compare the modes.
5. ``benchmarks/bench_paper_cpu.py``: the paper config fp32 / dynamic int8 / static QDQ int8,
   per epoch, 1 thread (artifacts cached in ``--work``).

The machine is shared and noisy: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_paper_cpu import code_tag  # noqa: E402


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.1f} ms"


def setup_model(work: Path, source: Path) -> Path:
    """A copy of the artifact ``source`` (``model.onnx`` beside its ``model.safetensors``) with
    its split graphs in ``work`` (reused when present; exported from the checkpoint when the
    artifact has none)."""
    from synthsleep.export.split import split_paths

    work.mkdir(parents=True, exist_ok=True)
    model = work / "model.onnx"
    if not model.is_file() or model.read_bytes() != source.read_bytes():
        shutil.copy(source, model)
        for p in (*split_paths(model), model.with_name("model.int8.onnx")):  # derived from the old one
            p.unlink(missing_ok=True)
    source_split = split_paths(source)
    if all(p.is_file() for p in source_split):
        for src, dst in zip(source_split, split_paths(model)):
            shutil.copy(src, dst)
    elif not all(p.is_file() for p in split_paths(model)):
        import torch

        from synthsleep.export.onnx_export import export_split
        from synthsleep.model import load_model

        torch.set_num_threads(1)
        net, cfg = load_model(source.with_suffix(""))
        export_split(net, cfg, model, exporter="torchscript")
    return model


def setup_night(work: Path, hours: float, seed: int) -> tuple[Path, np.ndarray]:
    """(EDF of a synthetic night, its true stages) in ``work`` (reused when present)."""
    from synthsleep.psg.synthetic import synthesize_night, write_night

    work.mkdir(parents=True, exist_ok=True)
    edf = work / f"night-{hours:g}h-s{seed}.edf"
    stages_path = edf.with_suffix(".stages.npy")
    if not edf.is_file() or not stages_path.is_file():
        night = synthesize_night(seed=seed, hours=hours)
        write_night(night, edf)
        np.save(stages_path, np.asarray(night.stages))
    return edf, np.load(stages_path)


def bench_score(model: Path, edf: Path, truth: np.ndarray, repeats: int = 5) -> dict[str, Any]:
    from synthsleep.export.runtime import StepRuntime
    from synthsleep.export.split import load_split
    from synthsleep.psg.montage import resolve_channels
    from synthsleep.psg.preprocess import PreprocessParams, iter_recording_epochs
    from synthsleep.psg.recording import open_recording
    from synthsleep.report import stage_agreement
    from synthsleep.score import score_recording

    res: dict[str, Any] = {}
    rt = StepRuntime(model, threads=1)
    cores = os.cpu_count() or 1
    params = PreprocessParams.from_dict(rt.preprocess_params)
    for vec in (False, True):  # read + preprocessing alone
        rec = open_recording(edf)
        cmap = resolve_channels([c.label for c in rec.channels], wanted=params.modalities)
        t0 = time.perf_counter()
        n = sum(1 for _ in iter_recording_epochs(rec, cmap, params, vectorised=vec))
        dt = time.perf_counter() - t0
        res[f"preprocess_{'vectorised' if vec else 'per_epoch'}_s"] = dt
        print(f"  read + preprocess {'vectorised over epochs' if vec else 'epoch by epoch'}: {dt:.2f} s "
              f"({1e3 * dt / n:.1f} ms/epoch)", flush=True)
    runs = [("old: per-epoch preprocessing + step graph per epoch, 1 thread", dict(split=False, vectorised=False)),
            ("new: vectorised preprocessing + batched encoder + temporal step, 1 thread",
             dict(split=load_split(rt, threads=1))),
            (f"new, encoder on {cores} threads, no prefetch", dict(split=load_split(rt, threads=cores),
                                                                   prefetch=False)),
            (f"new, encoder on {cores} threads", dict(split=load_split(rt, threads=cores)))]
    probs: dict[str, np.ndarray] = {}
    times: dict[str, list[float]] = {name: [] for name, _ in runs}
    last: dict[str, Any] = {}
    # the two 1-thread paths once; the two default-path variants `repeats` times, interleaved
    # (this VM's timings drift by 10-20 % between runs; the median of pairs compares them)
    for name, kw in runs[:2] + runs[2:] * repeats:
        t0 = time.perf_counter()
        last[name], _, _ = score_recording(edf, rt, **kw)
        times[name].append(time.perf_counter() - t0)
    for name, _ in runs:
        scored = last[name]
        probs[name] = np.stack([s.stage_prob for s in scored])
        acc = stage_agreement(np.array([s.stage for s in scored]), truth).accuracy
        res[name] = {"seconds": float(np.median(times[name])), "runs_s": times[name], "epochs": len(scored),
                     "accuracy": acc}
        print(f"  {name}: {res[name]['seconds']:.2f} s (median of {len(times[name])}; {len(scored)} epochs, "
              f"accuracy {acc:.3f})", flush=True)
    names = [n for n, _ in runs]
    res["max_prob_diff_old_vs_new"] = float(np.abs(probs[names[0]] - probs[names[1]]).max())
    print(f"  largest stage-probability difference old vs new: {res['max_prob_diff_old_vs_new']:.1e}")
    return res


def bench_yasa(edf: Path, truth: np.ndarray) -> dict[str, Any]:
    """YASA ``SleepStaging`` (EEG+EOG+EMG) on the same EDF, warm, this process."""
    from synthsleep.report import stage_agreement

    try:
        import mne
        import yasa
    except ImportError as e:
        print(f"  YASA not installed ({e})")
        return {"error": f"not installed: {e}"}
    t0 = time.perf_counter()
    raw = mne.io.read_raw_edf(edf, include=["EEG C4-M1", "EOG E1-M2", "EMG Chin"], preload=True, verbose=False)
    pred = yasa.SleepStaging(raw, eeg_name="EEG C4-M1", eog_name="EOG E1-M2", emg_name="EMG Chin").predict()
    dt = time.perf_counter() - t0
    letters = {"W": 0, "N1": 1, "N2": 2, "N3": 3, "R": 4, "REM": 4}
    codes = np.array([letters.get(str(p), -1) for p in list(getattr(pred, "hypno", pred))])
    acc = stage_agreement(codes, truth).accuracy
    print(f"  YASA {yasa.__version__} SleepStaging (EEG+EOG+EMG), warm: {dt:.2f} s (accuracy {acc:.3f})", flush=True)
    return {"seconds": dt, "accuracy": acc, "version": yasa.__version__}


def bench_steps(model: Path, steps: int = 900) -> dict[str, Any]:
    from synthsleep.export.quantize import quantize_artifact
    from synthsleep.export.runtime import StepRuntime
    from synthsleep.export.split import SplitRuntime

    rt = StepRuntime(model, threads=1)
    sp = SplitRuntime(rt, threads=1)
    rng = np.random.default_rng(0)
    m = len(rt.modalities)
    x = rng.normal(0, 1, (1, m, 3000)).astype(np.float32)
    present = np.ones((1, m), bool)
    res: dict[str, Any] = {}

    def at_10_and_900(step: Any, inp: tuple[np.ndarray, ...]) -> tuple[float, float]:
        """Median ms of one step from the state after 10 and after ``steps`` epochs, timed in
        alternation from the two saved states (the same load for both; the state has a fixed
        size, so only its values differ)."""
        state, saved = rt.new_state(1), {}
        for i in range(1, steps + 1):
            _, state = step(*inp, state)
            if i in (10, steps):
                saved[i] = state
        times: dict[int, list[float]] = {10: [], steps: []}
        for _ in range(30):
            for i in (10, steps):
                t0 = time.perf_counter()
                step(*inp, saved[i])
                times[i].append(time.perf_counter() - t0)
        return 1e3 * float(np.median(times[10])), 1e3 * float(np.median(times[steps]))

    res["step_epoch10_ms"], res["step_epoch900_ms"] = at_10_and_900(rt.step, (x, present))
    res["temporal_epoch10_ms"], res["temporal_epoch900_ms"] = at_10_and_900(sp.step, (sp.encode(x, present), present))
    q = model.with_name("model.int8.onnx")
    if not q.is_file():
        quantize_artifact(model, q)
    qrt = StepRuntime(q, threads=1)
    state, qtimes, ftimes = qrt.new_state(1), [], []
    fstate = rt.new_state(1)
    for _ in range(40):  # interleaved: the same load for both
        t0 = time.perf_counter()
        _, state = qrt.step(x, present, state)
        qtimes.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _, fstate = rt.step(x, present, fstate)
        ftimes.append(time.perf_counter() - t0)
    res["small_fp32_step_ms"] = 1e3 * float(np.median(ftimes[5:]))
    res["small_int8_dynamic_step_ms"] = 1e3 * float(np.median(qtimes[5:]))
    print(f"  step graph at epoch 10: {res['step_epoch10_ms']:.2f} ms, at epoch {steps}: "
          f"{res['step_epoch900_ms']:.2f} ms (ratio {res['step_epoch900_ms'] / res['step_epoch10_ms']:.2f})")
    print(f"  temporal step alone at epoch 10: {res['temporal_epoch10_ms']:.3f} ms, at epoch {steps}: "
          f"{res['temporal_epoch900_ms']:.3f} ms")
    print(f"  small model step, interleaved: fp32 {res['small_fp32_step_ms']:.2f} ms, dynamic int8 "
          f"{res['small_int8_dynamic_step_ms']:.2f} ms", flush=True)
    return res


def bench_backbone_modes(work: Path, configs: tuple[str, ...]) -> dict[str, Any]:
    """Encoder graph ms/epoch (batch 16, 1 thread) with each backbone_mode, random weights."""
    import torch

    from synthsleep.export.onnx_export import export_step
    from synthsleep.export.runtime import StepRuntime
    from synthsleep.export.split import SplitRuntime
    from synthsleep.model import SleepModel, load_config

    torch.set_num_threads(1)
    res: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    for name in configs:
        for mode in ("frames", "epoch"):
            path = work / f"enc-{name}-{mode}-{code_tag()}.onnx"  # re-exported when the code changes
            if not path.is_file():
                torch.manual_seed(0)
                cfg = load_config(name, {"backbone_mode": mode})
                export_step(SleepModel(cfg).eval(), cfg, path, {"note": "random weights"}, None,
                            exporter="torchscript")
            sp = SplitRuntime(StepRuntime(path, threads=1), threads=1)
            n = 16 if name == "small" else 4
            x = rng.normal(0, 1, (n, len(sp.step_runtime.modalities), 3000)).astype(np.float32)
            pr = np.ones(x.shape[:2], bool)
            sp.encode(x[:1], pr[:1])
            times = []
            for _ in range(3 if name == "small" else 1):
                t0 = time.perf_counter()
                sp.encode(x, pr, batch=n)
                times.append((time.perf_counter() - t0) / n)
            res[f"{name}_{mode}_encoder_ms"] = 1e3 * min(times)
        if name == "small":  # the whole step of the epoch-mode model: fp32 vs static QDQ int8
            from synthsleep.export.quantize import quantize_artifact_static, synthetic_calibration_epochs

            src = work / f"enc-small-epoch-{code_tag()}.onnx"
            qdq = src.with_suffix(".qdq.onnx")
            cx, cp, cs = synthetic_calibration_epochs(None, 40)
            if not qdq.is_file():
                quantize_artifact_static(src, cx[:16], cp[:16], cs[:16], dst=qdq)
            a, b = StepRuntime(src, threads=1), StepRuntime(qdq, threads=1)
            sa, sb, ta, tb = a.new_state(1), b.new_state(1), [], []
            for i in range(16, 40):
                t0 = time.perf_counter()
                _, sa = a.step(cx[i:i + 1], cp[i:i + 1], sa, cs[i:i + 1])
                ta.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                _, sb = b.step(cx[i:i + 1], cp[i:i + 1], sb, cs[i:i + 1])
                tb.append(time.perf_counter() - t0)
            res["small_epoch_step_fp32_ms"] = 1e3 * float(np.median(ta[2:]))
            res["small_epoch_step_int8_static_ms"] = 1e3 * float(np.median(tb[2:]))
            print(f"  small, once per epoch, whole step, interleaved: fp32 {res['small_epoch_step_fp32_ms']:.2f} ms, "
                  f"static QDQ int8 {res['small_epoch_step_int8_static_ms']:.2f} ms", flush=True)
        f, e = res[f"{name}_frames_encoder_ms"], res[f"{name}_epoch_encoder_ms"]
        print(f"  {name} encoder per epoch, 1 thread: 27 windows {f:.1f} ms, once per epoch {e:.1f} ms "
              f"({f / e:.1f}x)", flush=True)
    return res


def bench_score_epoch_mode(model: Path, edf: Path) -> dict[str, Any]:
    """The new score path with a ``small`` model whose backbone runs once per epoch (random
    weights: the time is what counts, not the stages)."""
    from synthsleep.export.runtime import StepRuntime
    from synthsleep.export.split import load_split
    from synthsleep.score import score_recording

    rt = StepRuntime(model, threads=1)
    t0 = time.perf_counter()
    scored, _, _ = score_recording(edf, rt, split=load_split(rt, threads=1))
    dt = time.perf_counter() - t0
    print(f"  score of the same night, new path, small model with backbone_mode=epoch: {dt:.2f} s "
          f"({len(scored)} epochs)", flush=True)
    return {"seconds": dt, "epochs": len(scored)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-throughput"))
    ap.add_argument("--paper-work", type=Path, default=Path("/tmp/paper-cpu"))
    ap.add_argument("--hours", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=77)
    ap.add_argument("--no-paper", action="store_true", help="skip the paper-size model")
    ap.add_argument("--repeats", type=int, default=5,
                    help="runs of each default-path score variant, interleaved (median reported)")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures (JSON beside it)")
    ap.add_argument("--model", type=Path, action="append", default=None,
                    help="artifact (model.onnx) to score and time, repeatable: each side by side with "
                         "the others and YASA (default: the bundled model)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    results: dict[str, Any] = {"host": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                               "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(f"synthsleep throughput ({results['host']}, {results['when']})", flush=True)
    from synthsleep.bed_session import BUNDLED_MODEL

    sources = args.model or [BUNDLED_MODEL]
    models = [setup_model(args.work if k == 0 else args.work / f"model{k}", Path(src)) for k, src in enumerate(sources)]
    edf, truth = setup_night(args.work, args.hours, args.seed)
    print(f"offline score of a {args.hours:g}-h synthetic night ({truth.size} epochs, {edf.name}):", flush=True)
    results["score"] = {}
    for src, model in zip(sources, models):
        print(f" model {src}:", flush=True)
        results["score"][str(src)] = bench_score(model, edf, truth, args.repeats)
    results["yasa"] = bench_yasa(edf, truth)
    if "seconds" in results["yasa"]:
        for src, r in results["score"].items():
            print(f"  x YASA, {src}:", flush=True)
            for name, v in r.items():
                if isinstance(v, dict):
                    print(f"    {name}: {v['seconds'] / results['yasa']['seconds']:.2f}", flush=True)
    results["steps"] = {}
    for src, model in zip(sources, models):
        print(f"step times (model {src}, 1 thread):", flush=True)
        results["steps"][str(src)] = bench_steps(model)
    print("frame backbone: 27 overlapping 4-s windows vs once per epoch, pooled (random weights):", flush=True)
    results["backbone"] = bench_backbone_modes(args.work, ("small",))
    results["score_epoch_mode"] = bench_score_epoch_mode(args.work / f"enc-small-epoch-{code_tag()}.onnx", edf)
    if not args.no_paper:
        import bench_paper_cpu

        print("paper-size model per epoch, 1 thread (random weights):", flush=True)
        x, present = bench_paper_cpu.calibration_epochs(40)
        results["paper"] = []
        for mode in ("frames", "epoch"):
            r = bench_paper_cpu.run_mode(args.paper_work, mode, (x[:16], present[:16]), (x[16:], present[16:]))
            results["paper"].append(r)
            print(bench_paper_cpu.format_row(r), flush=True)
        f, e = results["paper"]
        print(f"  paper, once per epoch vs 27 windows: fp32 {f['fp32_ms'] / e['fp32_ms']:.1f}x faster, static QDQ "
              f"int8 {f['int8_static_qdq']['ms'] / e['int8_static_qdq']['ms']:.1f}x faster", flush=True)
    results["seconds"] = time.perf_counter() - t_start
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
