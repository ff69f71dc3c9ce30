"""The paper-size model (published SynthSleepNet sizes, random weights) on one CPU thread.

    python benchmarks/bench_paper_cpu.py [--work /tmp/paper-cpu] [--modes frames,epoch]
        [--encoders plain,stacked] [--int8 dynamic,static,hybrid]

For each frame-backbone mode (``frames``: the published 27 overlapping 4-s windows; ``epoch``:
the backbone once over the epoch, pooled into the frames, ``backbone_mode = "epoch"``) it exports
the step artifact (torchscript exporter, no split graphs), writes the int8 variants of
``export.quantize`` (dynamic: MatMul/Gemm; static QDQ: Conv/MatMul/Gemm; hybrid: Conv static,
MatMul/Gemm dynamic; the calibrated ones on 16 epochs of a synthetic night), then times one
step per variant on 1 thread (ORT) and compares each int8 variant with fp32 on 24 further
epochs (largest stage-probability difference, how often the most likely stage agrees).
Each mode is exported twice (``--encoders``): ``plain``, the M per-modality encoders one after
another as ``encode_epochs`` is written, and ``stacked`` (``model.stacked.StackedEncoder``, what
``export_step`` writes by default: the modalities as one network, the same function).
Random weights: accuracy cannot be measured here, only agreement with fp32. Artifacts are kept
in ``--work`` and reused by later runs of the same model and export code (the export takes
minutes on 2 cores; the file names carry a hash of that code).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def calibration_epochs(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """x float32 [n, 8, 3000], present bool [n, 8]: preprocessed epochs of a synthetic night."""
    from synthsleep.export.quantize import synthetic_calibration_epochs

    return synthetic_calibration_epochs(None, n, seed)


@functools.cache
def code_tag() -> str:
    """Short hash of the model and export code. Cached exports are named by it, so a change to
    either is never timed with a stale export."""
    import hashlib

    root = Path(__file__).resolve().parents[1] / "synthsleep"
    h = hashlib.sha256()
    for p in sorted([*(root / "model").glob("*.py"), *(root / "export").glob("*.py")]):
        h.update(p.read_bytes())
    return h.hexdigest()[:10]


def export_paper(work: Path, mode: str, stacked: bool) -> Path:
    """fp32 step artifact of the paper config with ``backbone_mode = mode`` (random weights)."""
    import torch

    from synthsleep.export.onnx_export import export_step
    from synthsleep.model import SleepModel, load_config

    path = work / f"paper-{mode}{'-stacked' if stacked else ''}-{code_tag()}.onnx"
    if path.is_file():
        return path
    torch.manual_seed(0)
    cfg = load_config("paper", {"backbone_mode": mode})
    model = SleepModel(cfg).eval()
    t0 = time.perf_counter()
    export_step(model, cfg, path, {"note": "random weights, benchmark only"}, None, exporter="torchscript",
                split=False, stacked=stacked)
    print(f"  exported {path.name} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s",
          flush=True)
    del model
    return path


def verify_paper(fp32: Path, mode: str) -> dict[str, Any]:
    """``verify_artifact`` of the fp32 export against the same random PyTorch model (rebuilt from
    the seed), 3 steps, state carried; cached in ``work``."""
    import torch

    from synthsleep.export.verify import verify_artifact
    from synthsleep.model import SleepModel, load_config

    cache = fp32.with_suffix(".verify.json")
    if cache.is_file():
        return json.loads(cache.read_text())
    torch.manual_seed(0)
    cfg = load_config("paper", {"backbone_mode": mode})
    model = SleepModel(cfg).eval()
    rep = verify_artifact(fp32, model=model, steps=3, batch=1)
    out = {"ok": bool(rep.ok), "max_abs_diff": {k: float(v) for k, v in rep.max_abs_diff.items()},
           "summary": rep.summary()}
    cache.write_text(json.dumps(out, indent=1))
    print(f"  verify {fp32.name} vs PyTorch: {'ok' if rep.ok else 'FAILED'} "
          f"(largest differences {out['max_abs_diff']})", flush=True)
    return out


def time_step(path: Path, x: np.ndarray, present: np.ndarray, reps: int = 12) -> tuple[float, list[np.ndarray]]:
    """Median seconds of one step (batch 1, 1 thread, state carried) and the stage probabilities
    of every epoch in ``x`` (in order)."""
    from synthsleep.export.runtime import StepRuntime

    rt = StepRuntime(path, providers="cpu", threads=1)
    state = rt.new_state(1)
    probs, times = [], []
    for i in range(x.shape[0]):
        t0 = time.perf_counter()
        out, state = rt.step(x[i:i + 1], present[i:i + 1], state)
        times.append(time.perf_counter() - t0)
        probs.append(out.stage_prob[0])
    return float(np.median(times[1:1 + reps] if len(times) > reps else times)), probs


def run_mode(work: Path, mode: str, cal: tuple[np.ndarray, np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
             stacked: bool = False, int8: tuple[str, ...] = ("dynamic", "static", "hybrid")) -> dict[str, Any]:
    """Export, quantise (``int8``: dynamic, static QDQ, hybrid) and time one mode; returns the figures."""
    from synthsleep.export.quantize import (
        quantize_artifact,
        quantize_artifact_hybrid,
        quantize_artifact_static,
    )

    fp32 = export_paper(work, mode, stacked)
    variants = {name: (key, fp32.with_suffix(suffix), write) for name, key, suffix, write in (
        ("dynamic", "int8_dynamic", ".int8.onnx", lambda src, dst: quantize_artifact(src, dst)),
        ("static", "int8_static_qdq", ".qdq.onnx", lambda src, dst: quantize_artifact_static(src, *cal, dst=dst)),
        ("hybrid", "int8_hybrid", ".hybrid.onnx", lambda src, dst: quantize_artifact_hybrid(src, *cal, dst=dst)),
    ) if name in int8}
    for name, (_, path, write) in variants.items():
        if not path.is_file():
            t0 = time.perf_counter()
            write(fp32, path)
            print(f"  {name} int8 {path.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    res: dict[str, Any] = {"mode": mode, "encoder": "stacked" if stacked else "plain",
                           "fp32_mb": fp32.stat().st_size / 1e6, "verify": verify_paper(fp32, mode)}
    t_fp32, p_fp32 = time_step(fp32, *test)
    res["fp32_ms"] = 1e3 * t_fp32
    for key, path, _ in variants.values():
        t, p = time_step(path, *test)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(p, p_fp32))
        agree = float(np.mean([int(np.argmax(a) == np.argmax(b)) for a, b in zip(p, p_fp32)]))
        res[key] = {"ms": 1e3 * t, "mb": path.stat().st_size / 1e6, "max_stage_prob_diff": diff,
                    "stage_agreement": agree}
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/paper-cpu"))
    ap.add_argument("--modes", default="frames,epoch")
    ap.add_argument("--encoders", default="plain,stacked", help="plain and/or stacked (see above)")
    ap.add_argument("--int8", default="dynamic,static,hybrid", help="int8 variants to write and time")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    x, present, side = calibration_epochs(40)
    cal, test = (x[:16], present[:16], side[:16]), (x[16:], present[16:])
    results = []
    int8 = tuple(v for v in args.int8.split(",") if v)
    for mode in args.modes.split(","):
        for enc in args.encoders.split(","):
            print(f"paper config, backbone_mode={mode}, {enc} encoder:", flush=True)
            r = run_mode(args.work, mode, cal, test, stacked=enc == "stacked", int8=int8)
            results.append(r)
            print(format_row(r), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


def format_row(r: dict[str, Any]) -> str:
    cells = [f"  paper {r['mode']:6s} {r['encoder']:7s} per epoch, 1 thread: fp32 {r['fp32_ms']:.0f} ms "
             f"({r['fp32_mb']:.0f} MB)"]
    for key, name in (("int8_dynamic", "dynamic int8"), ("int8_static_qdq", "static QDQ int8"),
                      ("int8_hybrid", "hybrid int8")):
        if key in r:
            v = r[key]
            cells.append(f"{name} {v['ms']:.0f} ms (max dp {v['max_stage_prob_diff']:.3f}, agree "
                         f"{v['stage_agreement']:.2f})")
    return " | ".join(cells)


if __name__ == "__main__":
    raise SystemExit(main())
