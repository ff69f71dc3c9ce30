"""Is the model's EEG-only stage head the weak part?  A linear probe on its frozen embedding.

    python benchmarks/bench_eeg_probe.py [--model M.onnx] [--train-nights 8]

The bundled model's per-epoch encoder turns an EEG-only epoch into an embedding; its own stage
head reads it through the Mamba context. Issue 9 (item 4) suspected that EEG-only input is barely
trained: reduced montages are a minority of the window phase and the whole-night phase trains on
full-montage embeddings. This benchmark trains per-epoch heads on the frozen embedding (and/or
log relative EEG band powers, 0.5-2-4-8-12-16-30 Hz) on domain-randomised synthetic EEG-only
nights (seed 4242, subjects no other run draws), then scores, per epoch:
- the held-out randomised nights of ``bench_real_transfer.py`` (1, 4 and 8 h, EEG only): the
  selection data;
- the 8 DREAMS excerpts (their hypnograms used to score only), reported, never used to choose;
beside the model's own head from a zero state each epoch and with the state carried. A probe's
probabilities are also averaged causally over the last 3 epochs (the crudest temporal context).
One more probe is trained on the same nights with every sensor present and scored on EEG alone:
whether a readout fitted to EEG-only embeddings is what matters.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

BANDS_HZ = ((0.5, 2.0), (2.0, 4.0), (4.0, 8.0), (8.0, 12.0), (12.0, 16.0), (16.0, 30.0))
TRAIN_SEED = 4242


def band_powers(x: np.ndarray) -> np.ndarray:
    """Log relative EEG band powers of preprocessed epochs x [T, M, 3000] (EEG in row 0): [T, 6]."""
    from scipy import signal

    f, p = signal.welch(x[:, 0], 100.0, nperseg=400, axis=-1)
    total = p[:, (f >= 0.5) & (f <= 30.0)].sum(1, keepdims=True) + 1e-12
    return np.log(np.stack([p[:, (f >= lo) & (f < hi)].sum(1) for lo, hi in BANDS_HZ], 1) / total + 1e-6)


def causal_mean(prob: np.ndarray, k: int = 3) -> np.ndarray:
    """Each row averaged with the k - 1 rows before it (fewer at the start): [T, C]."""
    c = np.cumsum(np.vstack([np.zeros((1, prob.shape[1])), prob]), 0)
    i = np.arange(1, len(prob) + 1)
    lo = np.maximum(0, i - k)
    return (c[i] - c[lo]) / (i - lo)[:, None]


def main(argv: list[str] | None = None) -> int:
    import torch
    from bench_real_transfer import DREAMS, excerpt_edfs, synthetic_nights
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from synthsleep.bed_session import BUNDLED_MODEL
    from synthsleep.export.artifact import read_artifact
    from synthsleep.model import load_model
    from synthsleep.offline_training.adapt import embed_epochs, read_epochs
    from synthsleep.offline_training.selection import predict_embedded
    from synthsleep.psg.preprocess import PreprocessParams
    from synthsleep.psg.recording import Signal, write_edf
    from synthsleep.psg.synthetic import SubjectParams, synthesize_night, write_night

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path(BUNDLED_MODEL), help="artifact with weights beside it")
    ap.add_argument("--train-nights", type=int, default=8, help="randomised 4-h EEG-only training nights")
    args = ap.parse_args(argv)

    info = read_artifact(args.model)
    model, _ = load_model(args.model.with_suffix(""))
    model.eval()
    params = PreprocessParams.from_dict(info.preprocess)

    def load(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """(embedding [T, d], band powers [T, 6], (present [T, M], side [T, 7])) of one recording."""
        x, p, side = read_epochs(path, params)
        return embed_epochs(model, x, p).numpy(), band_powers(x), (p, side)

    def own_head(e: np.ndarray, present_side: tuple[np.ndarray, np.ndarray], mode: str) -> np.ndarray:
        """The model's own stage per epoch from embeddings [T, d] (its EEG-alone readout where it
        has one, with the side features): from a zero state every epoch (``window``) or with the
        state carried: [T]."""
        present, side = present_side
        return predict_embedded(model, torch.from_numpy(e), mode, 1, torch.from_numpy(present),
                                torch.from_numpy(side))[0].argmax(1)

    with tempfile.TemporaryDirectory(prefix="bench_eeg_probe_") as tmp:
        work = Path(tmp)
        emb, bp, ys, emb_full = [], [], [], []
        for j in range(args.train_nights):
            subj = SubjectParams.draw(np.random.default_rng([TRAIN_SEED, j]), None, randomize=True)
            night = synthesize_night(seed=TRAIN_SEED * 100 + j, hours=4.0, subject=subj)
            eeg = night.signal("EEG C4-M1")
            e, f, _ = load(write_edf(work / f"train{j}.edf", [Signal(eeg.label, eeg.rate, np.asarray(eeg.data))]))
            n = min(len(e), len(night.stages))
            emb_full.append(load(write_night(night, work / f"train{j}-full.edf"))[0][:n])
            emb.append(e[:n])
            bp.append(f[:n])
            ys.append(np.asarray(night.stages)[:n])
        train = {"embedding": np.concatenate(emb), "band powers": np.concatenate(bp)}
        train["both"] = np.hstack([train["embedding"], train["band powers"]])
        full = np.concatenate(emb_full)  # the same nights with every sensor: is EEG-only training the point?
        y = np.concatenate(ys)
        print(f"trained on {args.train_nights} randomised 4-h EEG-only nights ({int((y >= 0).sum())} epochs)")

        sets = {"synthetic randomised, held out, EEG only": [(only, np.asarray(st)) for _, nights in
                                                            synthetic_nights(work, randomize=True, per_length=2)
                                                            for _, only, st in nights],
                "DREAMS 8 excerpts (score only)": excerpt_edfs(DREAMS, work)}
        for name, recs in sets.items():
            loaded = [(load(path), truth) for path, truth in recs]
            truth = [np.asarray(t[:len(r[0])]) for r, t in loaded]
            feats = {"embedding": [r[0][:len(t)] for (r, _), t in zip(loaded, truth)],
                     "band powers": [r[1][:len(t)] for (r, _), t in zip(loaded, truth)]}
            feats["both"] = [np.hstack([a, b]) for a, b in zip(feats["embedding"], feats["band powers"])]
            ty = np.concatenate(truth)
            keep = ty >= 0

            def acc(pred: np.ndarray, ty: np.ndarray = ty, keep: np.ndarray = keep) -> float:
                return float((pred[keep] == ty[keep]).mean())

            pres = [(r[2][0][:len(t)], r[2][1][:len(t)]) for (r, _), t in zip(loaded, truth)]
            own1 = np.concatenate([own_head(e, p, "window") for e, p in zip(feats["embedding"], pres)])
            carried = np.concatenate([own_head(e, p, "carried") for e, p in zip(feats["embedding"], pres)])
            print(f"\n{name} ({int(keep.sum())} epochs)")
            print(f"  model's own head, zero state each epoch  {acc(own1):.3f}")
            print(f"  model's own head, state carried          {acc(carried):.3f}")
            for what in ("embedding", "band powers", "both"):
                ok = y >= 0
                probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
                probe.fit(train[what][ok], y[ok])
                per_epoch = np.concatenate([probe.predict(x) for x in feats[what]])
                smoothed = np.concatenate([causal_mean(probe.predict_proba(x)).argmax(1) for x in feats[what]])
                print(f"  linear probe on {what:12s}             {acc(per_epoch):.3f}  (causal 3-epoch mean {acc(smoothed):.3f})")
            probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1)).fit(full[y >= 0], y[y >= 0])
            print(f"  linear probe on embedding, trained on the full montage  "
                  f"{acc(np.concatenate([probe.predict(x) for x in feats['embedding']])):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
