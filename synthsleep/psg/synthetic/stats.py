"""Sleep statistics of a stage sequence, used to compare synthetic with real hypnograms."""

from __future__ import annotations

import numpy as np

STAGE_NAMES = ("W", "N1", "N2", "N3", "REM")


def hypnogram_stats(stages: np.ndarray, epoch_seconds: float = 30.0) -> dict[str, float]:
    """Summary statistics of one night.

    Args:
        stages: int [n] stage codes 0..4 (-1 ignored).

    Returns:
        dict with ``pct_<stage>`` (% of sleep-period time, i.e. from sleep onset to the last sleep
        epoch), ``tst_h`` (hours), ``rem_latency_min`` (sleep onset to first REM; NaN if none),
        ``n3_first_third`` / ``n3_last_third`` (% of N3 epochs in the first/last third of the
        sleep period), ``transitions_per_h`` (stage changes per hour of sleep period),
        ``bout_<stage>_min`` (mean bout length in minutes; NaN if no bout).
    """
    s = np.asarray(stages)
    s = s[s >= 0]
    sleep = np.flatnonzero(s > 0)
    out: dict[str, float] = {}
    if sleep.size == 0:
        return {"tst_h": 0.0}
    sp = s[sleep[0] : sleep[-1] + 1]
    ep_min = epoch_seconds / 60.0
    for k, name in enumerate(STAGE_NAMES):
        out[f"pct_{name}"] = 100.0 * float(np.mean(sp == k))
    out["tst_h"] = float(np.sum(sp > 0)) * ep_min / 60.0
    rem = np.flatnonzero(sp == 4)
    out["rem_latency_min"] = float(rem[0] * ep_min) if rem.size else float("nan")
    thirds = np.array_split(sp, 3)
    n3 = max(1, int(np.sum(sp == 3)))
    out["n3_first_third"] = 100.0 * float(np.sum(thirds[0] == 3)) / n3
    out["n3_last_third"] = 100.0 * float(np.sum(thirds[2] == 3)) / n3
    changes = np.flatnonzero(np.diff(sp) != 0)
    out["transitions_per_h"] = float(changes.size) / (sp.size * ep_min / 60.0)
    starts = np.r_[0, changes + 1]
    ends = np.r_[changes + 1, sp.size]
    lengths = (ends - starts) * ep_min
    labels = sp[starts]
    for k, name in enumerate(STAGE_NAMES):
        sel = lengths[labels == k]
        out[f"bout_{name}_min"] = float(sel.mean()) if sel.size else float("nan")
    return out
