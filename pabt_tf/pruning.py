"""Which binary convolutions to prune: pure functions of importances, masks and MACs.

`PaBTPruningCallback` reads each layer's state, asks `plan_pruning` what to deactivate
at a pruning event, and applies the answer through the layers' own operations (as
tfmot's callback leaves the mask computation to `pruning_impl`). Nothing here touches
a layer or a variable: every input is a NumPy array or a number, so the selection can
be tested, and replayed, on its own.

Terms: a layer's *kept* binary convolutions are the active ones not being soft-pruned
(what a schedule counts); its *floor* is the number it never drops below.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "NORMALIZATIONS",
    "ORDERS",
    "LatencyGoal",
    "RANKINGS",
    "PruningPlan",
    "mac_weighted_mean",
    "next_candidate",
    "plan_pruning",
    "ranking_scores",
    "scheduled_count",
    "unmeasured_layers",
]

RANKINGS = ("global", "layerwise")
NORMALIZATIONS = ("sum", "max", "none")
# "convolution": any kept binary convolution may go next. "activation_bases": within a
# layer only those of one activation base until it is empty (the partly emptied base
# first, else the one of lowest total score): an empty activation base is one
# convolution over the layer's input that is no longer computed, so training gets
# cheaper as soon as pruning starts.
ORDERS = ("convolution", "activation_bases")
_EPS = 1e-9


@dataclasses.dataclass(frozen=True)
class PruningPlan:
    """What one pruning event deactivates.

    # Attributes
        goal: the scheduled number of kept binary convolutions (an int), or with a
            `"global"` budget the scheduled MAC-weighted mean of kept ones (a float).
        chosen: `(layer index, m, n)` of the binary convolutions to prune, in order.
        counts_before, counts_after: kept binary convolutions per layer.
        ranked: per layer, whether the selection compared its importances (it could
            lose binary convolutions at this event).
    """

    goal: int | float
    chosen: list[tuple[int, int, int]]
    counts_before: list[int]
    counts_after: list[int]
    ranked: list[bool]


@dataclasses.dataclass(frozen=True)
class LatencyGoal:
    """A latency target for `plan_pruning`.

    # Attributes
        predict: kept masks (one `(M, N)` bool array per layer) → predicted ms.
        start_ms: the predicted latency the schedule starts from (unpruned).
        target_ms: where it ends (`remaining_fraction = 0`).
    """

    predict: Callable[[list], float]
    start_ms: float
    target_ms: float

    def goal(self, remaining_fraction: float) -> float:
        return self.target_ms + remaining_fraction * (self.start_ms - self.target_ms)


def mac_weighted_mean(macs: Sequence[float], counts: Sequence[float]) -> float:
    """`Σ macs·counts / Σ macs`: the MAC-weighted mean of per-layer counts."""
    macs = np.asarray(macs, np.float64)
    return float((macs * np.asarray(counts, np.float64)).sum() / macs.sum())


def scheduled_count(total: int, target: int, remaining_fraction: float) -> int:
    """Kept binary convolutions at `remaining_fraction`: `ceil(target + r·(total − target))`."""
    return int(math.ceil(target + remaining_fraction * (total - target) - _EPS))


def ranking_scores(
    importances: Sequence[np.ndarray],
    kept: Sequence[np.ndarray],
    macs: Sequence[float],
    normalization: str = "sum",
    mac_weighted: bool = False,
) -> list[np.ndarray]:
    """Per layer `(M, N)` scores the `"global"` ranking compares (lower is pruned first).

    # Arguments
        importances: each layer's importances.
        kept: each layer's kept binary convolutions (bool); the others score `inf`.
        macs: each layer's MACs per binary convolution.
        normalization: `"sum"` (divide by the layer's total over its kept binary
            convolutions), `"max"` (by their maximum) or `"none"`.
        mac_weighted: also divide by the layer's MACs relative to the mean over layers.

    # Returns
        One float64 array per layer.
    """
    scores = []
    mean_macs = float(np.mean(macs))
    for imp, keep, layer_macs in zip(importances, kept, macs):
        imp = np.asarray(imp, np.float64)
        if normalization == "sum":
            denom = imp[keep].sum() if keep.any() else 0.0
        elif normalization == "max":
            denom = imp[keep].max() if keep.any() else 0.0
        else:
            denom = 1.0
        score = imp / denom if denom > 0 else np.zeros_like(imp)
        if mac_weighted:
            score = score / (layer_macs / mean_macs)
        scores.append(np.where(keep, score, np.inf))
    return scores


def unmeasured_layers(
    importances: Sequence[np.ndarray], kept: Sequence[np.ndarray], ranked: Sequence[bool]
) -> list[int]:
    """Indices of the ranked layers with no importance measured: over their kept binary
    convolutions the importances are all zero (never updated) or not all finite.
    Ranking those would prune by index order."""
    missing = []
    for i, (imp, keep, was_ranked) in enumerate(zip(importances, kept, ranked)):
        values = np.asarray(imp, np.float64)[keep]
        if was_ranked and (not np.all(np.isfinite(values)) or not np.any(values > 0)):
            missing.append(i)
    return missing


def next_candidate(scores: np.ndarray, kept: np.ndarray, order: str = "convolution") -> tuple[int, int]:
    """`(m, n)` of the kept binary convolution of one layer that is pruned next.

    `"convolution"`: the lowest score (ties by index order). `"activation_bases"`: the
    lowest score within one activation base (a column `n`): the kept base with the
    fewest kept binary convolutions (one already being emptied), ties going to the
    lowest summed score, then the lowest `n`.

    # Arguments
        scores: `(M, N)` scores (lower goes first).
        kept: `(M, N)` bool, at least one True.
        order: one of `ORDERS`.
    """
    allowed = kept
    if order == "activation_bases":
        columns = [
            (int(kept[:, n].sum()), float(np.sum(scores[kept[:, n], n])), n)
            for n in range(kept.shape[1])
            if kept[:, n].any()
        ]
        focus = min(columns)[2]
        allowed = np.zeros_like(kept)
        allowed[:, focus] = kept[:, focus]
    m, n = min((float(scores[m, n]), int(m), int(n)) for m, n in zip(*np.nonzero(allowed)))[1:]
    return m, n


def plan_pruning(
    importances: Sequence[np.ndarray],
    kept: Sequence[np.ndarray],
    macs: Sequence[float],
    floors: Sequence[int],
    remaining_fraction: float,
    ranking: str = "global",
    normalization: str = "sum",
    mac_weighted: bool = False,
    budget: float | None = None,
    order: str = "convolution",
    latency: LatencyGoal | None = None,
) -> PruningPlan:
    """Choose the binary convolutions a pruning event deactivates.

    `"global"`: the lowest `ranking_scores` across layers go until the network keeps
    `scheduled_count(Σ M·N, Σ floors, r)` binary convolutions, or, with a `budget`, until
    the MAC-weighted mean of kept ones is at or below `budget + r·(full − budget)`, or,
    with a `latency` goal, until the predicted latency is at or below `latency.goal(r)`.
    `"layerwise"`: every layer goes to `ceil(end + r·(M·N − end))` by its own lowest
    importances, `end` being its floor (or `ceil(budget)` clipped to its `M·N`). No layer
    drops below its floor. Ties go by layer, then index order. `order` restricts which
    binary convolutions of a layer may go next (see `next_candidate`).

    # Arguments
        importances, kept, macs: per layer, as for `ranking_scores`.
        floors: per layer, the fewest kept binary convolutions allowed.
        remaining_fraction: the schedule's `r` at this event.
        ranking, normalization, mac_weighted, budget, order: as
            `PaBTPruningCallback`'s.
        latency: with `"global"` ranking, prune until the predicted latency of the kept
            masks is at or below `latency.goal(r)` (instead of a count or `budget`);
            `macs` then holds each layer's cost per binary convolution.

    # Returns
        A `PruningPlan`.

    # Raises
        ValueError: on an unknown `order`.
    """
    if order not in ORDERS:
        raise ValueError(f"`order` must be one of {ORDERS}, got {order!r}.")
    kept = [np.asarray(k, bool).copy() for k in kept]
    counts = np.array([k.sum() for k in kept], np.int64)
    before = counts.copy()
    sizes = [k.size for k in kept]
    chosen: list[tuple[int, int, int]] = []

    def take(i: int, scores: np.ndarray) -> None:
        """Prune layer `i`'s next candidate (by `order`)."""
        m, n = next_candidate(scores, kept[i], order)
        counts[i] -= 1
        kept[i][m, n] = False
        chosen.append((i, m, n))

    if ranking == "global":
        scores = ranking_scores(importances, kept, macs, normalization, mac_weighted)
        if latency is not None:
            goal = latency.goal(remaining_fraction)
            done = lambda: latency.predict(kept) <= goal + _EPS  # noqa: E731
        elif budget is None:
            goal = scheduled_count(sum(sizes), int(np.sum(floors)), remaining_fraction)
            done = lambda: counts.sum() <= goal  # noqa: E731
        else:
            full = mac_weighted_mean(macs, sizes)
            goal = budget + remaining_fraction * (full - budget)
            done = lambda: mac_weighted_mean(macs, counts) <= goal + _EPS  # noqa: E731
        # The layers that may lose binary convolutions at this event.
        ranked = [bool(c > f) and not done() for c, f in zip(counts, floors)]
        while not done():
            # The lowest next candidate over the layers above their floor; ties go by
            # layer, then index order.
            best = None
            for i, s in enumerate(scores):
                if counts[i] > floors[i]:
                    m, n = next_candidate(s, kept[i], order)
                    best = min(best or (np.inf, i, m, n), (float(s[m, n]), i, m, n))
            if best is None:
                break
            take(best[1], scores[best[1]])
    else:
        goal = 0
        ranked = []
        for i, size in enumerate(sizes):
            end = floors[i]
            if budget is not None:
                end = max(end, min(size, math.ceil(budget - _EPS)))
            goal_i = scheduled_count(size, end, remaining_fraction)
            goal += goal_i
            ranked.append(bool(counts[i] > goal_i))
            imp = np.asarray(importances[i], np.float64)
            while counts[i] > goal_i:
                take(i, imp)
    return PruningPlan(goal, chosen, before.tolist(), counts.tolist(), ranked)
