"""The one lane planner of whole-night training: nights side by side in parallel lanes.

Whole-night training (DESIGN defect 4) plays every training night in order, cut into chunks of
``chunk`` epochs, several nights at once (one per lane, the batch dimension). Chunk k of a lane
continues chunk k-1 of the same lane with the Mamba state carried; a lane that starts a night
resets its state there. ``plan_lanes`` decides which chunk each lane plays at each step; under
DDP the global plan is cut into contiguous blocks of lanes per rank (``rank_lanes``), so every
rank runs the same number of steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: One lane item: (night index, first epoch of the chunk, fresh = the state is reset here).
#: An idle (padding) item is (-1, 0, True).
LaneItem = tuple[int, int, bool]
IDLE: LaneItem = (-1, 0, True)


def plan_lanes(lengths: Sequence[int], n_lanes: int, chunk: int, rng: np.random.Generator,
               mid_start: float = 0.0) -> list[list[LaneItem]]:
    """Assign nights (shuffled) to lanes, balancing chunk counts.

    Args:
        lengths: epochs per night.
        n_lanes: lanes (global, over every DDP rank).
        chunk: epochs per chunk.
        rng: the pass's generator (the order of the nights and the mid-night entries).
        mid_start: chance per night of entering it at a random epoch of its first half instead
            of its start, as a monitor started (or restarted without state) mid-night is.

    Returns:
        ``n_lanes`` lists of equal length: each lane's items in night order, ``fresh`` marking a
        night's first chunk (where the lane's state is reset); padded with ``IDLE``.
    """
    order = rng.permutation(len(lengths))
    lanes: list[list[LaneItem]] = [[] for _ in range(n_lanes)]
    for i in order:
        n = int(lengths[i])
        first = int(rng.integers(1, n // 2)) if n >= 4 and rng.random() < mid_start else 0
        lane = min(range(n_lanes), key=lambda k: len(lanes[k]))
        lanes[lane] += [(int(i), s, s == first) for s in range(first, n, chunk)]
    width = max(len(ln) for ln in lanes) if lanes else 0
    return [ln + [IDLE] * (width - len(ln)) for ln in lanes]


def rank_lanes(plan: list[list[LaneItem]], rank: int, world: int) -> list[list[LaneItem]]:
    """This DDP rank's contiguous block of the global plan (``len(plan)`` divisible by world)."""
    if len(plan) % world:
        raise ValueError(f"{len(plan)} lanes cannot be split evenly over {world} DDP ranks")
    per = len(plan) // world
    return plan[rank * per:(rank + 1) * per]
