"""Evaluation plots (PNG): a row-normalised confusion matrix and a hypnogram comparison."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..psg.epoch import STAGES


def plot_confusion(cm: np.ndarray | Sequence[Sequence[int]], path: Path | str, title: str = "") -> Path:
    """Row-normalised confusion matrix (counts annotated) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, np.float64)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(5, 4.4), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}\n{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(STAGES)), STAGES)
    ax.set_yticks(range(len(STAGES)), STAGES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true epochs")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


_PLOT_ORDER = (0, 4, 1, 2, 3)  # W, REM, N1, N2, N3 from top: the clinical hypnogram layout


def plot_hypnogram(true_stage: np.ndarray, predicted: Mapping[str, np.ndarray], path: Path | str,
                   title: str = "", epoch_seconds: float = 30.0) -> Path:
    """Hypnogram comparison PNG: the true stages and one row per predicted series.

    Args:
        true_stage: int [n] (-1 unknown, drawn as gaps).
        predicted: ``{label: int [n]}`` predicted stages.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    level = {s: len(_PLOT_ORDER) - 1 - i for i, s in enumerate(_PLOT_ORDER)}
    series = {"scored": np.asarray(true_stage), **{k: np.asarray(v) for k, v in predicted.items()}}
    fig, axes = plt.subplots(len(series), 1, figsize=(11, 1.6 * len(series) + 0.4), dpi=100, sharex=True,
                             squeeze=False)
    for ax, (name, st) in zip(axes[:, 0], series.items()):
        hours = np.arange(st.size + 1) * epoch_seconds / 3600.0
        y = np.array([level.get(int(s), np.nan) for s in st], np.float64)
        ax.stairs(y, hours, baseline=None, color="k" if name == "scored" else "tab:blue", linewidth=1.0)
        rem = st == 4
        if rem.any():
            ax.scatter(hours[:-1][rem] + epoch_seconds / 7200.0, y[rem], s=2, color="tab:red")
        ax.set_yticks([level[s] for s in _PLOT_ORDER], [STAGES[s] for s in _PLOT_ORDER])
        ax.set_ylim(-0.5, len(_PLOT_ORDER) - 0.5)
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    axes[-1, 0].set_xlabel("hours from recording start")
    fig.suptitle(title or "hypnogram")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
