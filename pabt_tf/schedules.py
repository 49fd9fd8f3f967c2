"""Pruning schedules: when to prune, and how many binary convolutions remain.

A schedule maps a training step to `(should_prune, remaining_fraction)`, in the spirit of
`tfmot.sparsity.keras.PolynomialDecay`. `remaining_fraction` goes from 1 (nothing
pruned) to 0 (every layer at its target); `PaBTPruningCallback` turns it into a count of
active binary convolutions,

    count = target + remaining_fraction · (total − target)

with `total = Σ M·N` and `target = Σ target_per_layer`. Schedules run in Python: the
callback evaluates them between training steps (pruning events are rare).

Unlike tfmot, a schedule always prunes at `end_step`, even when `end_step − begin_step`
is not a multiple of `frequency`, so the target is always reached at `end_step`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from pabt_tf._validation import check_int

__all__ = ["PruningSchedule", "PolynomialDecay", "LinearDecay", "OneShot"]


def _check_step(step: Any) -> int:
    if tf.is_tensor(step) or isinstance(step, np.ndarray):
        step = np.asarray(step).item()
    return check_int("step", step, 0)


class PruningSchedule:
    """Base class: `schedule(step) -> (should_prune, remaining_fraction)`.

    Subclasses implement `remaining_fraction(step)`, `should_prune(step)` and
    `get_config()`; `begin_step` and `end_step` bound the pruning range.
    """

    begin_step: int
    end_step: int

    def __call__(self, step: int) -> tuple[bool, float]:
        """# Arguments
            step: the training step (number of training batches done), an integer >= 0.

        # Returns
            `(should_prune, remaining_fraction)`: whether `step` is a pruning event, and
            the fraction of the prunable binary convolutions that remain active there.

        # Raises
            ValueError: on a negative or non-integer `step`.
        """
        step = _check_step(step)
        return self.should_prune(step), self.remaining_fraction(step)

    def should_prune(self, step: int) -> bool:
        raise NotImplementedError

    def remaining_fraction(self, step: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> "PruningSchedule":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class PolynomialDecay(PruningSchedule):
    """Polynomial decay of the remaining binary convolutions (tfmot's `PolynomialDecay`).

    \\[
    r(s) = \\left(1 - \\frac{s - s_0}{s_1 - s_0}\\right)^{p},\\quad s_0 \\le s \\le s_1
    \\]

    `r = 1` before `begin_step` and `0` after `end_step`. With `power > 1` most pruning
    happens early, while there is much redundancy; the last layers to become binary get
    the most time to adapt. Pruning events are every `frequency` steps from `begin_step`
    up to `end_step`, and always at `end_step`.

    # Arguments
        begin_step: first pruning event (integer >= 0).
        end_step: last pruning event, where `r` reaches 0 (integer > begin_step).
        power: exponent `p > 0` (3 by default; 1 is linear).
        frequency: steps between pruning events (integer >= 1).

    # Raises
        ValueError: on an invalid argument, naming it.
    """

    def __init__(self, begin_step: int, end_step: int, power: float = 3, frequency: int = 100):
        self.begin_step = check_int("begin_step", begin_step, 0)
        self.end_step = check_int("end_step", end_step, 0)
        if self.end_step <= self.begin_step:
            raise ValueError(
                f"`end_step` must be greater than `begin_step`, got end_step={end_step!r} "
                f"<= begin_step={begin_step!r}."
            )
        if isinstance(power, bool) or not isinstance(power, (int, float, np.integer, np.floating)):
            raise ValueError(f"`power` must be a positive number, got {power!r}.")
        if not np.isfinite(power) or power <= 0:
            raise ValueError(f"`power` must be a positive number, got {power!r}.")
        self.power = float(power)
        self.frequency = check_int("frequency", frequency, 1)

    def should_prune(self, step: int) -> bool:
        if step < self.begin_step or step > self.end_step:
            return False
        return step == self.end_step or (step - self.begin_step) % self.frequency == 0

    def remaining_fraction(self, step: int) -> float:
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        progress = min(max(progress, 0.0), 1.0)
        return float((1.0 - progress) ** self.power)

    def get_config(self) -> dict:
        return {
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class LinearDecay(PolynomialDecay):
    """Linear decay of the remaining binary convolutions: `PolynomialDecay` with power 1.

    # Arguments
        begin_step: first pruning event (integer >= 0).
        end_step: last pruning event, where the remaining fraction reaches 0.
        frequency: steps between pruning events (integer >= 1).

    # Raises
        ValueError: on an invalid argument, naming it.
    """

    def __init__(self, begin_step: int, end_step: int, frequency: int = 100):
        super().__init__(begin_step, end_step, power=1, frequency=frequency)

    def get_config(self) -> dict:
        return {
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class OneShot(PruningSchedule):
    """Prune to the target at one step (like tfmot's `ConstantSparsity`).

    The remaining fraction is 1 before `begin_step` and 0 from it on; the only pruning
    event is `begin_step` (`end_step == begin_step`).

    # Arguments
        begin_step: the pruning step (integer >= 0).

    # Raises
        ValueError: on an invalid `begin_step`.
    """

    def __init__(self, begin_step: int):
        self.begin_step = check_int("begin_step", begin_step, 0)
        self.end_step = self.begin_step

    def should_prune(self, step: int) -> bool:
        return step == self.begin_step

    def remaining_fraction(self, step: int) -> float:
        return 1.0 if step < self.begin_step else 0.0

    def get_config(self) -> dict:
        return {"begin_step": self.begin_step}


def deserialize(config: Any, custom_objects: dict | None = None) -> PruningSchedule:
    """A schedule from its Keras serialization (`tf.keras.utils.serialize_keras_object`,
    `{"class_name": ..., "config": ...}`); a schedule instance is returned as is.

    # Raises
        ValueError: if the result is not a `PruningSchedule`.
    """
    if isinstance(config, PruningSchedule):
        return config
    schedule = tf.keras.utils.deserialize_keras_object(
        config, module_objects=globals(), custom_objects=custom_objects,
        printable_module_name="pruning schedule",
    )
    if not isinstance(schedule, PruningSchedule):
        raise ValueError(f"`schedule` must be a PruningSchedule, got {config!r}.")
    return schedule
