"""Argument checks and warnings of `PaBTPruningCallback` that need more than a line:
the latency target, the reference input shape, and a schedule longer than the fit."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from pabt_tf.export.latency_tables import LatencyTable

__all__ = [
    "latency_arguments",
    "reference_shape_argument",
    "refuse_a_second_callback",
    "refuse_unmeasured",
    "warn_late_schedule",
]


def latency_arguments(
    budget_ms: Any, table: Any, budget: Any, mac_weighted: bool, ranking: str, floor: int
) -> tuple[float | None, LatencyTable | None]:
    """`(latency_budget_ms, LatencyTable)` checked, or `(None, None)`.

    # Raises
        ValueError: one without the other, a non-positive or non-finite target, a
            combination with `budget`, `mac_weighted` or `"layerwise"`, a table that
            does not load, or a target outside the range the table predicts (stated).
    """
    if budget_ms is None and table is None:
        return None, None
    if budget_ms is None or table is None:
        raise ValueError(
            "`latency_budget_ms` and `latency_table` go together: a target in "
            "milliseconds needs the table that predicts the latency, and a table is only "
            f"used with a target (got latency_budget_ms={budget_ms!r}, "
            f"latency_table={'given' if table is not None else None})."
        )
    if isinstance(budget_ms, bool) or not isinstance(budget_ms, (int, float, np.number)) or not (
        math.isfinite(budget_ms) and budget_ms > 0
    ):
        raise ValueError(f"`latency_budget_ms` must be a positive number, got {budget_ms!r}.")
    for name, value, allowed in (("budget", budget, None), ("mac_weighted", mac_weighted, False),
                                 ("ranking", ranking, "global")):  # fmt: skip
        if value != allowed:
            raise ValueError(
                f"`latency_budget_ms` cannot be combined with `{name}`={value!r}: the latency "
                "target sets the end point, and the global ranking weighs each binary "
                "convolution by its layer's measured cost."
            )
    table = LatencyTable.coerce(table)
    low, high = table.range_ms(floor)
    if not low - 1e-9 <= budget_ms <= high + 1e-9:
        raise ValueError(
            f"`latency_budget_ms`={budget_ms:g} ms is outside what the latency table predicts "
            f"this network can reach: {low:.3f} ms (every layer at {floor} binary "
            f"convolution(s)) to {high:.3f} ms (unpruned)."
        )
    return float(budget_ms), table


def reference_shape_argument(shape: Any) -> tuple[int, ...] | None:
    """# Raises
        ValueError: not a tuple/list of positive integers.
    """
    if shape is None:
        return None
    if not isinstance(shape, (tuple, list)) or not shape or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise ValueError(
            "`reference_input_shape` must be a tuple of positive integers (the model's input "
            f"shape, e.g. (1, 360, 480, 3)), got {shape!r}."
        )
    return tuple(int(d) for d in shape)


def warn_late_schedule(schedule, decay_steps: int, params: dict | None, start: int = 0) -> None:
    """Warn when the schedule's last event (or the soft pruning it starts) falls after
    the fit's last step, `start + params["epochs"] · params["steps"] − 1` (Keras'
    `params`; `start`: the pruning step stored in the layers, for a `fit` continuing
    another. A run resumed by `BackupAndRestore` has its step restored later, and the
    epochs are the run's total, so `start` 0 is right there too)."""
    params = params or {}
    steps, epochs = params.get("steps"), params.get("epochs")
    if not steps or not epochs:
        return  # unknown length (e.g. a dataset of unknown size): nothing to compare
    last = start + int(steps) * int(epochs) - 1  # the last batch begins after this many steps
    faded = schedule.end_step + max(decay_steps - 1, 0)
    if schedule.end_step > last:
        warnings.warn(
            f"PaBTPruningCallback: the schedule's last pruning event (step "
            f"{schedule.end_step}) falls after the last step of this fit (step {last}: "
            f"{epochs} epoch(s) x {steps} steps): the network will not reach its target. "
            "End the schedule earlier or train longer.",
            UserWarning,
            stacklevel=4,
        )
    elif faded > last + 1:
        warnings.warn(
            f"PaBTPruningCallback: soft pruning (decay_steps={decay_steps}) of the last "
            f"pruning event (step {schedule.end_step}) ends at step {faded}, after the last "
            f"step of this fit ({last}): some binary convolutions will still be fading out "
            "at the end.",
            UserWarning,
            stacklevel=4,
        )


def refuse_a_second_callback(callback, started) -> None:
    """Two callbacks in one `fit` would each run their schedule on the same masks, and
    the later one's target would silently break. Keras gives the callbacks of one `fit`
    the same `params` dict; a callback of an earlier (even interrupted) `fit` has
    another, so it does not count. `started`: every callback whose training began."""
    params = getattr(callback, "params", None)
    for other in list(started) if params is not None else []:
        same_fit = getattr(other, "params", None) is params and other.model is callback.model
        if other is not callback and same_fit:
            raise ValueError(
                f"PaBTPruningCallback: model {callback.model.name!r} is already driven by "
                f"another PaBTPruningCallback in this fit (target_per_layer="
                f"{other.target_per_layer}, budget={other.budget}); this one "
                f"(target_per_layer={callback.target_per_layer}, budget={callback.budget}) "
                "would prune the same layers on its own schedule and break the other's "
                "target. Pass one PaBTPruningCallback per fit."
            )
    started.add(callback)


def refuse_unmeasured(step: int, names: list, on_missing_importance: str) -> None:
    """Raise (`"error"`) or warn (`"skip"`) about layers to rank that have no importance
    measured."""
    message = (
        f"PaBTPruningCallback: pruning event at step {step}: no importance measured for "
        f"PaBT layers {names} (all zero or not finite), so ranking them would prune by "
        "index order. Importances accumulate in PaBTModel.train_step from finite "
        "gradients: train a pabt_tf.PaBTModel (or call pabt_tf.training.update_importance), "
        "check `model.nonfinite_steps` for training steps skipped on non-finite gradients "
        "(NaN/inf in the data?), and let the schedule begin after some training."
    )
    if on_missing_importance == "error":
        raise ValueError(message + " (on_missing_importance='skip' skips such events.)")
    warnings.warn(message + " Nothing pruned at this event.", UserWarning, stacklevel=4)
