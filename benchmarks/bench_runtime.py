"""Step cost of the artifact: ONNX Runtime vs PyTorch eager, epoch 10 vs epoch 900, batch scaling.

    python benchmarks/bench_runtime.py [--model synthsleep/assets/model.onnx] [--steps 900]

The step is O(1) in the night's length (the Mamba state has a fixed size), so the time at epoch
900 should equal the time at epoch 10. Everything runs on 1 thread (DESIGN: per-step latency).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def _median_ms(times: list[float]) -> float:
    return 1e3 * float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="artifact (default: the bundled model)")
    ap.add_argument("--checkpoint", default=None, help="safetensors checkpoint (default: next to the artifact)")
    ap.add_argument("--steps", type=int, default=900)
    args = ap.parse_args(argv)

    from synthsleep.bed_session import resolve_model_path
    from synthsleep.export.runtime import StepRuntime

    path = resolve_model_path(args.model)
    rt = StepRuntime(path, threads=1)
    m = len(rt.modalities)
    rng = np.random.default_rng(0)

    def epochs(b: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.normal(0, 1, (b, m, 3000)).astype(np.float32), np.ones((b, m), bool)

    # -- epoch 10 vs epoch 900 (state carried) -------------------------------------------------
    state = rt.new_state(1)
    per_step = []
    for _ in range(args.steps + 5):
        x, p = epochs(1)
        t0 = time.perf_counter()
        _, state = rt.step(x, p, state)
        per_step.append(time.perf_counter() - t0)
    early, late = per_step[5:16], per_step[args.steps - 5: args.steps + 5]
    print(f"artifact {Path(path).name} ({rt.model_hash[:12]}), {m} modalities, ONNX Runtime 1 thread")
    print(f"step at epochs 5-15:   median {_median_ms(early):7.2f} ms")
    print(f"step at epochs {args.steps - 5}-{args.steps + 5}: median {_median_ms(late):7.2f} ms "
          f"(ratio {np.median(late) / np.median(early):.2f})")

    # -- batch scaling ---------------------------------------------------------------------------
    print("beds per call | ms per call | ms per bed")
    for b in (1, 4, 16, 64):
        st = rt.new_state(b)
        x, p = epochs(b)
        rt.step(x, p, st)
        ts = []
        for _ in range(max(3, 40 // b)):
            t0 = time.perf_counter()
            rt.step(x, p, st)
            ts.append(time.perf_counter() - t0)
        print(f"{b:13d} | {_median_ms(ts):11.2f} | {_median_ms(ts) / b:10.2f}")

    # -- ONNX Runtime vs PyTorch eager -----------------------------------------------------------
    ckpt = args.checkpoint or str(Path(path).with_suffix(""))
    if not Path(ckpt + ".safetensors").exists():
        print(f"(no checkpoint {ckpt}.safetensors: PyTorch comparison skipped)")
        return 0
    import torch

    from synthsleep.model import load_model

    torch.set_num_threads(1)
    model, _ = load_model(ckpt)
    conv, ssm = model.allocate_state(1)
    ort_t, pt_t = [], []
    st = rt.new_state(1)
    with torch.inference_mode():
        for i in range(60):
            x, p = epochs(1)
            t0 = time.perf_counter()
            _, st = rt.step(x, p, st)
            t1 = time.perf_counter()
            out = model.step(torch.from_numpy(x), torch.from_numpy(p), conv, ssm)
            conv, ssm = out[3], out[4]
            t2 = time.perf_counter()
            if i >= 10:
                ort_t.append(t1 - t0)
                pt_t.append(t2 - t1)
    print(f"step, batch 1: ONNX Runtime {_median_ms(ort_t):.2f} ms vs PyTorch eager {_median_ms(pt_t):.2f} ms "
          f"(PyTorch/ORT = {np.median(pt_t) / np.median(ort_t):.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
