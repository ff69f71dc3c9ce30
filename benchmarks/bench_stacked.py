"""The stacked encoder vs the per-modality one, side by side: the same weights, the same function.

    python benchmarks/bench_stacked.py [--model synthsleep/assets/model.onnx ...] [--steps 120]

For each artifact (default: the bundled model) its checkpoint (``model.safetensors`` beside it) is
exported twice into a temporary folder, ``export_step(stacked=False)`` (the M per-modality
encoders one after another, as ``encode_epochs`` is written) and ``stacked=True`` (what every
export writes: ``model.stacked.StackedEncoder``), each with its dynamic int8 variant. Then one
step per graph at batch 1, 1 thread, state carried, the graphs interleaved so each sees the same
load; median ms, the nodes ORT executes per step, the file size, and the largest difference
between the two fp32 graphs' stage probabilities over the run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def export_both(src: Path, work: Path) -> tuple[dict[str, Path], str]:
    """({variant name: artifact}, backbone_mode): fp32 and dynamic int8 of the per-modality and
    the stacked export."""
    import torch

    from synthsleep.export.artifact import read_artifact
    from synthsleep.export.onnx_export import export_step
    from synthsleep.export.quantize import quantize_artifact
    from synthsleep.model import load_model

    torch.set_num_threads(1)
    info = read_artifact(src)
    model, cfg = load_model(src.with_suffix(""))
    out = {}
    for stacked in (False, True):
        name = "stacked" if stacked else "per-modality"
        path = work / f"{name}.onnx"
        export_step(model, cfg, path, info.provenance, info.preprocess, info.thresholds, exporter="torchscript",
                    split=False, stacked=stacked)
        out[f"{name} fp32"] = path
        out[f"{name} int8"] = quantize_artifact(path, work / f"{name}.int8.onnx").path
    return out, cfg.backbone_mode


def executed_nodes(path: Path) -> int:
    """Nodes in ORT's optimised graph of ``path`` (what runs per step)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        opts.log_severity_level = 3  # no warning about the host-specific optimised copy
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        import onnx

        return len(onnx.load(opts.optimized_model_filepath).graph.node)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append", default=None,
                    help="artifact with its checkpoint beside it (repeatable; default: the bundled model)")
    ap.add_argument("--steps", type=int, default=120)
    args = ap.parse_args(argv)
    from synthsleep.bed_session import BUNDLED_MODEL
    from synthsleep.export.runtime import StepRuntime

    x = np.random.default_rng(0).normal(0, 1, (1, 8, 3000)).astype(np.float32)
    present = np.ones((1, 8), bool)
    for src in args.model or [BUNDLED_MODEL]:
        with tempfile.TemporaryDirectory() as tmp:
            paths, mode = export_both(Path(src), Path(tmp))
            rts = {name: StepRuntime(p, threads=1) for name, p in paths.items()}
            states = {name: rt.new_state(1) for name, rt in rts.items()}
            times: dict[str, list[float]] = {name: [] for name in rts}
            diff = 0.0
            for _ in range(args.steps):
                probs = {}
                for name, rt in rts.items():
                    t0 = time.perf_counter()
                    out, states[name] = rt.step(x, present, states[name])
                    times[name].append(time.perf_counter() - t0)
                    probs[name] = out.stage_prob
                diff = max(diff, float(np.abs(probs["stacked fp32"] - probs["per-modality fp32"]).max()))
            print(f"{src} (backbone_mode={mode}), {args.steps} steps, 1 thread, interleaved:")
            base = float(np.median(times["per-modality fp32"][5:]))
            for name, p in paths.items():
                med = float(np.median(times[name][5:]))
                print(f"  {name:18s} {1e3 * med:6.2f} ms/step ({base / med:.2f}x)  {executed_nodes(p):5d} nodes  "
                      f"{p.stat().st_size / 1e6:5.1f} MB")
            print(f"  largest stage-probability difference, stacked vs per-modality fp32: {diff:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
