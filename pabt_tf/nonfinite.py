"""Non-finite training steps: detect them, skip them, report them.

A step is non-finite when any gradient, on any replica, holds a NaN or an infinity
(`all_finite` all-reduces the answer, so every replica skips the same steps).
`PaBTModel.train_step` then skips it entirely: the optimizer is not applied
(`apply_gradients_if`), and the variables the forward pass and the loss wrote
(`forward_state_variables`, `metric_variables`) are written back. `fit` warns with the
count of skipped steps (`NonfiniteStepsWarning`), and `nonfinite_weights` names the
weights that hold a NaN or an infinity (for error messages, e.g. at conversion).
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable

import numpy as np
import tensorflow as tf

from pabt_tf.layers import pabt_layers

__all__ = [
    "NonfiniteStepsWarning",
    "all_finite",
    "all_reduce_sum",
    "apply_gradients_if",
    "forward_state_variables",
    "metric_variables",
    "nonfinite_weights",
]


def all_reduce_sum(tensors: list[tf.Tensor]) -> list[tf.Tensor]:
    """Sum over replicas in a replica context (identity without a distribution)."""
    if not tensors or not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return tensors
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        return tensors
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, tensors)


def all_finite(gradients: Iterable[Any]) -> tf.Tensor:
    """Whether every gradient is finite, on every replica.

    In a replica context of a distribution the answer is all-reduced, so that every
    replica skips the same steps.

    # Arguments
        gradients: tensors, `tf.IndexedSlices` or `None` (ignored).

    # Returns
        A boolean scalar tensor.
    """
    flags = [
        tf.reduce_all(tf.math.is_finite(g.values if isinstance(g, tf.IndexedSlices) else g))
        for g in gradients
        if g is not None
    ]
    local = tf.reduce_all(flags) if flags else tf.constant(True)
    (bad,) = all_reduce_sum([tf.cast(tf.logical_not(local), tf.float32)])
    return tf.equal(bad, 0.0)


def nonfinite_weights(model: tf.keras.Model) -> list[str]:
    """Names of the model's weights holding a NaN or an infinity.

    Quantized weights (Larq's `QuantizedVariable`, PaBT kernels) are checked on their
    stored (latent) values, which is where a NaN lives.

    # Arguments
        model: any Keras model (or layer).

    # Returns
        The weights' names (`variable.name`), in `model.weights` order; empty if all
        are finite.
    """
    names = []
    for weight in model.weights:
        stored = getattr(weight, "latent_variable", weight)  # QuantizedVariable or not
        if not stored.dtype.is_floating:
            continue
        if not np.all(np.isfinite(np.asarray(tf.keras.backend.get_value(stored)))):
            names.append(weight.name)
    return names


class _Opaque:
    """Keeps `tf.distribute` from unwrapping mirrored variables passed through a
    `merge_call` (the optimizer, called per replica again, expects them wrapped)."""

    __slots__ = ["value"]

    def __init__(self, value):
        self.value = value


def apply_gradients_if(optimizer: Any, grads_and_vars: list, finite: tf.Tensor) -> None:
    """`optimizer.apply_gradients(grads_and_vars)` only if `finite`.

    A skipped step leaves the optimizer untouched: no update, no slot change, its
    `iterations` do not advance (learning-rate schedules count applied steps). A
    `LossScaleOptimizer` always gets the gradients: it skips non-finite steps itself and
    must see them to lower its loss scale. Works in a replica context of any strategy
    and under XLA.

    # Arguments
        optimizer: a Keras optimizer (legacy or not, Larq's `CaseOptimizer` included).
        grads_and_vars: the step's `(gradient, variable)` pairs.
        finite: boolean scalar tensor, the same on every replica (`all_finite`).
    """
    if isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer):
        optimizer.apply_gradients(grads_and_vars)
        return
    grads_and_vars = [(g, v) for g, v in grads_and_vars if g is not None]

    def skip():
        return tf.constant(False)

    if tf.__internal__.distribute.strategy_supports_no_merge_call():

        def apply():
            optimizer.apply_gradients(grads_and_vars)
            return tf.constant(True)

        tf.cond(finite, apply, skip)
        return

    # An optimizer's `merge_call` cannot run in a cond branch of a replica context:
    # decide in the cross-replica context, as Keras' LossScaleOptimizer does.
    def cross_replica(distribution, finite, grads, variables):
        def apply():
            distribution.extended.call_for_each_replica(
                lambda g, v: optimizer.apply_gradients(list(zip(g, v.value))),
                args=(grads, variables),
            )
            return tf.constant(True)

        finite = tf.reduce_all(distribution.experimental_local_results(finite))
        tf.cond(finite, apply, skip)

    grads = [g for g, _ in grads_and_vars]
    variables = _Opaque([v for _, v in grads_and_vars])
    tf.distribute.get_replica_context().merge_call(cross_replica, args=(finite, grads, variables))


class NonfiniteStepsWarning(tf.keras.callbacks.Callback):
    """At the end of an epoch with skipped steps, warn with their count."""

    def __init__(self, model: tf.keras.Model):
        super().__init__()
        self._pabt_model = model  # `set_model` may not be called (a CallbackList)

    def on_train_begin(self, logs=None):
        self._seen = int(self._pabt_model.nonfinite_steps.numpy())

    def on_epoch_end(self, epoch, logs=None):
        model = self._pabt_model
        total = int(model.nonfinite_steps.numpy())
        new, self._seen = total - self._seen, total
        if not new:
            return
        hint = (
            " With a LossScaleOptimizer (mixed precision) a few such steps are expected "
            "while the loss scale adapts."
            if isinstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
            else " Look for NaN or inf in the data, or lower the learning rate."
        )
        warnings.warn(
            f"PaBTModel {model.name!r}: {new} training step(s) of epoch {epoch + 1} skipped "
            "because their gradients were not finite (no weight, optimizer, importance, "
            f"BatchNormalization or metric update); {total} so far "
            f"(`model.nonfinite_steps`).{hint}",
            UserWarning,
            stacklevel=2,
        )


def forward_state_variables(model: tf.keras.Model) -> list[tf.Variable]:
    """Variables a training forward pass may write, to restore after a skipped step.

    The non-trainable weights of trainable layers (BatchNormalization's moving
    statistics, ...), without the PaBT pruning state (the step does not write it). Under
    a distribution, only those a replica can write (on-read synchronized, or with an
    aggregation), which leaves out constants such as `Normalization`'s statistics.
    """
    frozen = {
        id(w)
        for layer in model.submodules
        if isinstance(layer, tf.keras.layers.Layer) and not layer.trainable
        for w in layer.weights
    }
    pruning_state = {id(w) for layer in pabt_layers(model) for w in layer.pruning_variables}
    distributed = tf.distribute.has_strategy()
    return [
        w
        for w in model.non_trainable_weights
        if id(w) not in frozen
        and id(w) not in pruning_state
        and (
            not distributed
            or w.synchronization == tf.VariableSynchronization.ON_READ
            or w.aggregation != tf.VariableAggregation.NONE
        )
    ]


def metric_variables(model: tf.keras.Model, y: Any, y_pred: Any) -> list[tf.Variable]:
    """The variables of `model.metrics` (loss trackers and compiled metrics), to restore
    after a skipped step.

    Keras builds its loss and metric containers at their first update, inside the first
    traced step; they are built here first (from the step's targets and predictions), so
    that their variables exist, and can be read, before the step updates them.
    """
    if not model.compiled_loss.built:
        model.compiled_loss.build(y_pred)
    metrics = model.compiled_metrics
    if not metrics.built:
        # As `MetricsContainer.update_state` builds it (targets mapped to the outputs).
        metrics.build(y_pred, metrics._conform_to_outputs(y_pred, y))
    return [v for metric in model.metrics for v in metric.variables]
