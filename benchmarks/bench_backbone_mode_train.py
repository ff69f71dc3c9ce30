"""Short training comparison of ``backbone_mode`` = ``frames`` (published) vs ``epoch`` (the
frame backbone once per epoch, pooled into the 27 frames).

    python benchmarks/bench_backbone_mode_train.py [--nights 4] [--hours 3] [--steps 150]

A rough check, not ``make model``: the ``small`` model trained from scratch, supervised on stages
only (no pretraining), on windows of 8 consecutive epochs from ``nights - 1`` synthetic nights
(all modalities present), the same seed, data, batches and number of steps for both modes;
then scored on the held-out night with the state carried all night (as the monitor runs).
Prints accuracy, kappa, training seconds and the number of parameters of each.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def night_arrays(seed: int, hours: float, work: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x float32 [T, 8, 3000], present bool [T, 8], stages int [T]) of one synthetic night,
    preprocessed exactly as ``score`` does (EDF written and read back)."""
    from synthsleep.psg.montage import resolve_channels
    from synthsleep.psg.preprocess import PreprocessParams, iter_recording_epochs
    from synthsleep.psg.recording import open_recording
    from synthsleep.psg.synthetic import synthesize_night, write_night

    night = synthesize_night(seed=seed, hours=hours)
    path = write_night(night, work / f"n{seed}.edf")
    rec = open_recording(path)
    params = PreprocessParams()
    cmap = resolve_channels([c.label for c in rec.channels], wanted=params.modalities)
    eps = list(iter_recording_epochs(rec, cmap, params))
    n = min(len(eps), len(night.stages))
    return (np.stack([e.data for e in eps[:n]]), np.stack([e.present for e in eps[:n]]),
            np.asarray(night.stages[:n], np.int64))


def train_eval(mode: str, train: list, test: tuple, steps: int, seed: int, window: int = 8,
               batch: int = 4) -> dict:
    import torch

    from synthsleep.model import SleepModel, load_config
    from synthsleep.psg.clinical import cohen_kappa, confusion_matrix

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    cfg = load_config("small", {"backbone_mode": mode})
    model = SleepModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    model.train()
    for _ in range(steps):
        xs, ps, ys = [], [], []
        for _ in range(batch):
            x, p, y = train[rng.integers(len(train))]
            i = int(rng.integers(0, len(y) - window))
            xs.append(x[i:i + window]), ps.append(p[i:i + window]), ys.append(y[i:i + window])
        out, _ = model(torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ps)))
        loss = torch.nn.functional.cross_entropy(out.stage_logits.reshape(-1, 5), torch.from_numpy(np.stack(ys)).reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    model.eval()
    x, p, y = test
    preds, state = [], None
    with torch.no_grad():
        for i in range(0, len(y), 64):  # the whole night, state carried between chunks
            out, state = model(torch.from_numpy(x[None, i:i + 64]), torch.from_numpy(p[None, i:i + 64]), state)
            preds.append(out.stage_logits[0].argmax(-1).numpy())
    pred = np.concatenate(preds)
    return {"mode": mode, "accuracy": float((pred == y).mean()), "kappa": float(cohen_kappa(confusion_matrix(y, pred))),
            "train_seconds": seconds, "steps": steps, "final_loss": float(loss.detach()),
            "parameters": sum(p.numel() for p in model.parameters())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nights", type=int, default=4)
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = [night_arrays(100 + i, args.hours, Path(tmp)) for i in range(args.nights)]
    train, test = data[:-1], data[-1]
    print(f"{len(train)} training nights ({sum(len(d[2]) for d in train)} epochs), test night {len(test[2])} "
          f"epochs; {args.steps} steps of 4 x 8-epoch windows", flush=True)
    rows = []
    for mode in ("frames", "epoch"):
        r = train_eval(mode, train, test, args.steps, args.seed)
        rows.append(r)
        print(f"  backbone_mode={mode:6s}: accuracy {r['accuracy']:.3f}, kappa {r['kappa']:.3f}, "
              f"training {r['train_seconds']:.0f} s, final loss {r['final_loss']:.3f}, "
              f"{r['parameters'] / 1e6:.2f} M parameters", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
