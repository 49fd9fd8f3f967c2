"""The pruning state a PaBT layer owns, and the only operations that change it.

Four non-trainable layer weights hold it, so checkpoints, `model.save` and
`tf.distribute` carry it and a resumed run continues where it stopped:

- `mask` `(M, N)`, 0/1: the active binary convolutions;
- `importance_variable` `(M, N)`: the gradient importance `PaBTModel` accumulates;
- `gate_decay` `(M, N)`: soft pruning in progress (see below), 1 otherwise;
- `pruning_step` `()`: training batches done, the step the schedule reads.

Soft pruning of binary convolution `(m, n)` over `d` steps: it stops counting as kept at
once, its mask stays on while `gate_decay[m, n] = k / d` scales its gate, `k` being the
steps it has left (`d − 1` down to 1); when `k` reaches 0 its mask clears and its decay
returns to 1. `k` is read back as `rint(gate_decay · d)`, so `d` (the callback's
`decay_steps`) is an argument of the operations, not state. `set_binary_conv_mask` sets
the whole state and so ends soft pruning in progress: what it keeps on is kept at its
full gate (re-enabling a convolution that is fading out sticks), what it turns off is
off at once.

`PaBTPruningCallback` changes the state only through these methods (tfmot's callback
likewise only advances its wrappers' `pruning_step`); which convolutions to prune is
decided by the pure functions of `pabt_tf.pruning`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from pabt_tf._validation import check_int

__all__ = ["PruningState", "is_active"]


def is_active(mask: Any) -> Any:
    """Which binary convolutions a 0/1 mask keeps on, as bools.

    The one place that turns mask values into booleans (the mask is a float weight so
    that it multiplies the gates); works on NumPy arrays and TensorFlow tensors alike.
    """
    return mask > 0.5


class PruningState:
    """Mixin of `PaBTLayer`: its pruning state (module docstring) and operations on it.

    Expects `weight_bases`, `activation_bases`, `name`, `built` and `add_weight` from the
    layer; `_add_pruning_state` is called from `build`.
    """

    weight_bases: int
    activation_bases: int

    def _add_pruning_state(self) -> None:
        shape = (self.weight_bases, self.activation_bases)
        # ONLY_FIRST_REPLICA lets a replica context write values that are identical on
        # every replica (cross-replica gradients); autocast=False keeps them float32
        # under a mixed-precision policy.
        state = dict(
            trainable=False,
            synchronization=tf.VariableSynchronization.ON_WRITE,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            autocast=False,
        )
        self.mask = self.add_weight("mask", shape=shape, initializer="ones", **state)
        self.importance_variable = self.add_weight(
            "importance", shape=shape, initializer="zeros", **state
        )
        self.gate_decay = self.add_weight("gate_decay", shape=shape, initializer="ones", **state)
        self.pruning_step = self.add_weight(
            "pruning_step", shape=(), dtype=tf.int64, initializer="zeros", **state
        )

    @property
    def pruning_variables(self) -> tuple[tf.Variable, ...]:
        """The four state weights: `mask`, `importance_variable`, `gate_decay`,
        `pruning_step`."""
        return (self.mask, self.importance_variable, self.gate_decay, self.pruning_step)

    def _check_built(self, what: str) -> None:
        if not self.built:
            raise ValueError(f"{self.name}: build the layer before using `{what}`.")

    # -- reading ----------------------------------------------------------------------

    @property
    def binary_conv_mask(self) -> np.ndarray:
        """Bool `(M, N)`: which binary convolutions are active (computed), those being
        soft-pruned included."""
        self._check_built("binary_conv_mask")
        return is_active(np.asarray(tf.keras.backend.get_value(self.mask)))

    @property
    def importance(self) -> np.ndarray:
        """Float `(M, N)`: accumulated gradient importance of each binary convolution."""
        self._check_built("importance")
        return np.asarray(tf.keras.backend.get_value(self.importance_variable))

    @property
    def pruning_in_progress(self) -> np.ndarray:
        """Bool `(M, N)`: active binary convolutions whose soft pruning has started."""
        self._check_built("pruning_in_progress")
        decay = np.asarray(tf.keras.backend.get_value(self.gate_decay))
        return self.binary_conv_mask & (decay < 1.0)

    @property
    def kept_binary_conv_mask(self) -> np.ndarray:
        """Bool `(M, N)`: active and not being pruned, what a pruning schedule counts."""
        return self.binary_conv_mask & ~self.pruning_in_progress

    @property
    def active_binary_convs(self) -> int:
        return int(self.binary_conv_mask.sum())

    @property
    def num_binary_convs(self) -> int:
        return self.weight_bases * self.activation_bases

    def get_pruning_step(self) -> int:
        """The pruning step stored in the layer (training batches done)."""
        self._check_built("get_pruning_step")
        return int(tf.keras.backend.get_value(self.pruning_step))

    # -- changing ---------------------------------------------------------------------

    def set_pruning_step(self, step: int) -> None:
        """Store the pruning step (an integer >= 0).

        # Raises
            ValueError: on a negative or non-integer `step`.
        """
        self._check_built("set_pruning_step")
        self.pruning_step.assign(check_int("step", step, 0))

    def _check_index(self, m: Any, n: Any) -> None:
        for name, value, size in (("m", m, self.weight_bases), ("n", n, self.activation_bases)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or not 0 <= value < size
            ):
                raise ValueError(
                    f"{self.name}: `{name}` must be an integer in [0, {size}), got {value!r}."
                )

    def prune(self, m: int, n: int, decay_steps: int = 0) -> bool:
        """Deactivate binary convolution `(m, n)`.

        # Arguments
            m, n: the weight and activation base of the binary convolution.
            decay_steps: `0` or `1`: its mask clears now. `d > 1`: soft pruning, its gate
                is scaled by `(d − 1)/d` now and decays to 0 over the next `d − 1`
                `advance_soft_pruning` steps, when the mask clears.

        # Returns
            `True` if it was kept (active and not already being pruned); `False` if it
            was already pruned or being pruned (an immediate prune of one being
            soft-pruned finishes it now).

        # Raises
            ValueError: on an index out of range, a negative `decay_steps`, or if
                `(m, n)` is the layer's last kept binary convolution (a layer must keep
                at least one).
        """
        self._check_built("prune")
        self._check_index(m, n)
        d = check_int("decay_steps", decay_steps, 0)
        mask = self.binary_conv_mask
        decay = np.asarray(tf.keras.backend.get_value(self.gate_decay), np.float32)
        kept = mask & (decay >= 1.0)
        if not kept[m, n]:
            if mask[m, n] and d <= 1:  # being soft-pruned: finish it now
                mask[m, n], decay[m, n] = False, 1.0
                self._assign_state(mask, decay)
            return False
        if kept.sum() <= 1:
            raise ValueError(
                f"{self.name}: cannot prune binary convolution ({m}, {n}): it is the "
                "layer's last active one."
            )
        if d > 1:
            decay[m, n] = (d - 1) / d
        else:
            mask[m, n] = False
        self._assign_state(mask, decay)
        return True

    def advance_soft_pruning(self, steps: int, decay_steps: int) -> bool:
        """Advance the soft pruning in progress by `steps` training steps.

        A binary convolution with `k` steps left (`gate_decay = k / decay_steps`) gets
        `k − steps`; at 0 its mask clears. With `steps = 0` this only normalises the
        state to `decay_steps` (a run resumed with another `decay_steps`, or without
        soft pruning, finishes what has no step left).

        # Arguments
            steps: training steps done since the last call (integer >= 0).
            decay_steps: the `d` the soft pruning was started with.

        # Returns
            Whether soft pruning is still in progress in this layer.

        # Raises
            ValueError: on a negative or non-integer `steps` or `decay_steps`.
        """
        self._check_built("advance_soft_pruning")
        steps = check_int("steps", steps, 0)
        d = check_int("decay_steps", decay_steps, 0)
        mask = self.binary_conv_mask
        decay = np.asarray(tf.keras.backend.get_value(self.gate_decay), np.float64)
        decaying = mask & (decay < 1.0)
        left = np.zeros(mask.shape, np.int64)
        if d > 1:
            left[decaying] = np.maximum(np.rint(decay[decaying] * d).astype(np.int64) - steps, 0)
        new_mask = mask & ~(decaying & (left <= 0))
        new_decay = np.where(left > 0, left / max(d, 1), 1.0).astype(np.float32)
        if not (np.array_equal(new_mask, mask) and np.array_equal(new_decay, decay)):
            self._assign_state(new_mask, new_decay)
        return bool((left > 0).any())

    def set_binary_conv_mask(self, mask: Any) -> None:
        """Set the whole `(M, N)` mask (bool or 0/1); at least one entry must be active.

        Ends any soft pruning in progress in the layer: every binary convolution the mask
        keeps on is kept at its full gate (`gate_decay` 1, so one being faded out is
        re-enabled for good, and `kept_binary_conv_mask` is `mask`), every one it turns
        off is pruned at once (no decay left over to resume if it is turned on again).

        # Raises
            ValueError: on a wrong shape or an all-inactive mask (nothing changed).
        """
        self._check_built("set_binary_conv_mask")
        mask = np.asarray(mask)
        if mask.shape != (self.weight_bases, self.activation_bases):
            raise ValueError(
                f"{self.name}: `mask` must have shape "
                f"{(self.weight_bases, self.activation_bases)}, got {mask.shape}."
            )
        mask = mask.astype(bool)
        if not mask.any():
            raise ValueError(f"{self.name}: `mask` must keep at least one binary convolution.")
        # The decay goes with the mask: left < 1 on an entry turned on, it would keep
        # fading and `advance_soft_pruning` would clear it again a few steps later.
        self._assign_state(mask, np.ones(mask.shape, np.float32))

    def _assign_state(self, mask: np.ndarray, decay: np.ndarray) -> None:
        tf.keras.backend.batch_set_value(
            [(self.mask, mask.astype(np.float32)), (self.gate_decay, decay.astype(np.float32))]
        )
