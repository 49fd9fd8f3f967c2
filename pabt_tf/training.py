"""`PaBTModel`: a Keras model whose `train_step` accumulates binary-convolution importance.

Each training step updates, for every binary convolution `(m, n)` of every PaBT layer
(DESIGN.md §1.2),

\\[
I_{mn} \\leftarrow \\rho\\, I_{mn} + (1 - \\rho)\\, s_{mn},\\qquad
s_{mn} = |g_{mn}\\, \\partial L / \\partial g_{mn}|\\ \\text{("taylor")}
\\ \\text{or its square ("taylor\\_squared")}
\\]

with `g` the layer's gate. The gate gradients are the ones the step already computes for
the optimizer: there is no second backward pass. Under `tf.distribute` they are summed
across replicas first (Keras scales each replica's loss by the global batch size, so the
sum is the global gradient), hence every replica holds the same importances.

Non-finite steps: a training step whose gradients are not all finite (on any replica) is
skipped entirely (`PaBTModel.train_step`): no optimizer update (its `iterations` do not
advance; a `LossScaleOptimizer` decides itself and adapts its loss scale), no importance
update, and what the forward pass and the loss wrote (BatchNormalization's moving
statistics, the metrics) is restored. `model.nonfinite_steps` counts such steps and `fit`
warns with the count at the end of each epoch that had some (`pabt_tf.nonfinite`).
"""

from __future__ import annotations

import inspect
from typing import Any, Iterable, Sequence

import tensorflow as tf
from tf_keras.src import backend as _keras_backend  # unique model names
from tf_keras.src.engine import data_adapter, functional
from tf_keras.src.saving.legacy import serialization as _legacy_serialization

from pabt_tf.layers import PaBTLayer, pabt_layers
from pabt_tf.nonfinite import (
    NonfiniteStepsWarning,
    all_finite,
    all_reduce_sum,
    apply_gradients_if,
    forward_state_variables,
    metric_variables,
)

__all__ = ["CRITERIA", "PaBTModel", "importance_scores", "update_importance"]

CRITERIA = ("taylor", "taylor_squared")


def _check_criterion(criterion: Any) -> str:
    if criterion not in CRITERIA:
        raise ValueError(f"`criterion` must be one of {CRITERIA}, got {criterion!r}.")
    return criterion


def _check_momentum(momentum: Any) -> float:
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)):
        raise ValueError(
            f"`importance_momentum` must be a float in [0, 1), got {momentum!r}."
        )
    momentum = float(momentum)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(
            f"`importance_momentum` must be a float in [0, 1), got {momentum!r}."
        )
    return momentum


def importance_scores(gate: tf.Tensor, gate_grad: tf.Tensor, criterion: str = "taylor") -> tf.Tensor:
    """One step's importance score of each binary convolution.

    # Arguments
        gate: the layer's gate values, shape `(M, N)`.
        gate_grad: `∂L/∂gate` (the global, cross-replica gradient), shape `(M, N)`.
        criterion: `"taylor"`: `|gate · ∂L/∂gate|`; `"taylor_squared"`: its square.

    # Returns
        A float tensor of shape `(M, N)`.
    """
    _check_criterion(criterion)
    taylor = tf.convert_to_tensor(gate) * tf.convert_to_tensor(gate_grad)
    return tf.abs(taylor) if criterion == "taylor" else tf.square(taylor)


def update_importance(
    layers: Sequence[PaBTLayer] | tf.keras.Model,
    grads_and_vars: Iterable[tuple[Any, tf.Variable]],
    criterion: str = "taylor",
    momentum: float = 0.99,
    all_reduce: bool = True,
    finite: tf.Tensor | None = None,
) -> tf.Tensor:
    """Accumulate the importance of the binary convolutions from a step's gradients.

    For use in custom training loops; `PaBTModel.train_step` calls it. Call it in the
    replica context (inside `strategy.run`), with the per-replica gradients of a loss
    scaled by the global batch size, as Keras does.

    # Arguments
        layers: PaBT layers, or a model containing them.
        grads_and_vars: the step's `(gradient, variable)` pairs (unscaled gradients).
            Layers whose gate has no gradient here are left unchanged.
        criterion: `"taylor"` or `"taylor_squared"`.
        momentum: `ρ` in `[0, 1)`.
        all_reduce: sum the gate gradients across replicas first.
        finite: optional boolean scalar tensor; `False` skips the update
            (`PaBTModel.train_step` passes whether all the step's gradients are
            finite, `all_finite`).

    # Returns
        A boolean scalar tensor: whether the update was applied (`finite`, and all gate
        gradients finite).

    # Raises
        ValueError: on an invalid `criterion` or `momentum`.
    """
    _check_criterion(criterion)
    momentum = _check_momentum(momentum)
    if isinstance(layers, tf.keras.Model):
        layers = pabt_layers(layers)
    by_id = {id(v): g for g, v in grads_and_vars}
    pairs = []
    for layer in layers:
        grad = by_id.get(id(layer.gate))
        if grad is None:
            continue
        if isinstance(grad, tf.IndexedSlices):
            grad = tf.convert_to_tensor(grad)
        pairs.append((layer, tf.cast(grad, layer.importance_variable.dtype)))
    applied = tf.constant(True) if finite is None else tf.convert_to_tensor(finite)
    if not pairs:
        return applied
    grads = [g for _, g in pairs]
    if all_reduce:
        grads = all_reduce_sum(grads)
    gates_finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
    finite = tf.logical_and(applied, gates_finite)
    for (layer, _), grad in zip(pairs, grads):
        gate = tf.cast(tf.convert_to_tensor(layer.gate), grad.dtype)
        score = importance_scores(gate, grad, criterion)
        old = tf.convert_to_tensor(layer.importance_variable)
        new = momentum * old + (1.0 - momentum) * score
        # tf.where, not tf.cond: an assignment inside a cond branch of a replica
        # function would need a merge_call.
        layer.importance_variable.assign(tf.where(finite, new, old))
    return finite


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class PaBTModel(tf.keras.Model):
    """A functional Keras model whose `train_step` accumulates PaBT importances.

    Use it like `tf.keras.Model(inputs, outputs)`; `compile`, `fit`, `evaluate`,
    `predict`, sample weights, `run_eagerly`, any optimizer (including Larq's
    `CaseOptimizer` with `Bop`), `jit_compile=True`, mixed precision and
    `tf.distribute` strategies work as usual. Each training step additionally updates
    every PaBT layer's `importance_variable` from the gate gradients it computes anyway,
    and a step with non-finite gradients is skipped entirely and counted in
    `nonfinite_steps` (see the module docstring).

    ```python
    inputs = tf.keras.Input((28, 28, 1))
    x = tf.keras.layers.Conv2D(16, 3)(inputs)
    x = pabt.layers.PaBTConv2D(32, 3, padding="same")(x)
    outputs = tf.keras.layers.Dense(10)(tf.keras.layers.GlobalAveragePooling2D()(x))
    model = pabt.PaBTModel(inputs, outputs, criterion="taylor", importance_momentum=0.9)
    ```

    # Arguments
        inputs, outputs, name, trainable: as for a functional `tf.keras.Model`.
        criterion: `"taylor"` (`|gate·∂L/∂gate|`, default) or `"taylor_squared"`
            (its square).
        importance_momentum: `ρ` in `[0, 1)`, the exponential moving average's momentum
            (default 0.99: an average over ~100 steps, the default pruning frequency; a
            uniform start-up bias does not change the ranking).

    # Raises
        ValueError: on an invalid `criterion` or `importance_momentum`.
    """

    def __init__(
        self,
        inputs=None,
        outputs=None,
        name: str | None = None,
        trainable: bool = True,
        criterion: str = "taylor",
        importance_momentum: float = 0.99,
        **kwargs,
    ):
        criterion = _check_criterion(criterion)
        importance_momentum = _check_momentum(importance_momentum)
        if inputs is None or outputs is None:
            raise ValueError(
                "PaBTModel is a functional model: pass `inputs` and `outputs` "
                "(or wrap a functional model with `PaBTModel.from_functional`)."
            )
        super().__init__(inputs=inputs, outputs=outputs, name=name, trainable=trainable, **kwargs)
        self.criterion = criterion
        self.importance_momentum = importance_momentum
        self._create_nonfinite_counter()

    def _init_set_name(self, name, zero_based=True):
        # "pabt_model", not Keras' snake case of the class name ("pa_bt_model").
        if name is None:
            name = _keras_backend.unique_object_name("pabt_model", zero_based=zero_based)
        super()._init_set_name(name, zero_based=zero_based)

    @tf.__internal__.tracking.no_automatic_dependency_tracking
    def _create_nonfinite_counter(self):
        # A non-trainable variable, not a model weight (untracked: not checkpointed, not
        # in `get_weights()`), so that weights stay interchangeable with a plain
        # functional model of the same layers.
        self.nonfinite_steps = tf.Variable(
            0,
            dtype=tf.int64,
            trainable=False,
            name="nonfinite_steps",
            synchronization=tf.VariableSynchronization.ON_WRITE,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )

    @classmethod
    def from_functional(cls, model: tf.keras.Model, **kwargs) -> "PaBTModel":
        """Wrap an existing functional model; the new model shares its layers and weights.

        # Arguments
            model: a functional `tf.keras.Model` (or `Sequential` with a known input).
            **kwargs: `criterion`, `importance_momentum`, `name` (default: the model's).

        # Raises
            ValueError: if `model` is not a functional model with inputs and outputs.
        """
        if not isinstance(model, tf.keras.Model) or not getattr(model, "_is_graph_network", False):
            raise ValueError(
                f"`model` must be a functional (or built Sequential) tf.keras.Model, got "
                f"{type(model).__name__}."
            )
        kwargs.setdefault("name", model.name)
        return cls(inputs=model.inputs, outputs=model.outputs, **kwargs)

    # -- training ---------------------------------------------------------------------

    @property
    def pabt_layers(self) -> list[PaBTLayer]:
        """The model's PaBT layers in topological order."""
        return pabt_layers(self)

    def _gradients(self, loss, tape):
        variables = self.trainable_variables
        optimizer = self.optimizer
        if hasattr(optimizer, "_compute_gradients"):  # legacy (OptimizerV2, CaseOptimizer)
            return optimizer._compute_gradients(loss, variables, tape=tape)
        return optimizer.compute_gradients(loss, variables, tape=tape)

    def train_step(self, data):
        x, y, sample_weight = data_adapter.unpack_x_y_sample_weight(data)
        # What the forward pass and the loss write, read before they do: a skipped step
        # writes it back.
        layer_state = forward_state_variables(self)
        before = [tf.identity(v) for v in layer_state]
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            metric_state = metric_variables(self, y, y_pred)
            before += [tf.identity(v) for v in metric_state]
            loss = self.compute_loss(x, y, y_pred, sample_weight)
        self._validate_target_and_loss(y, loss)
        grads_and_vars = list(self._gradients(loss, tape))
        finite = all_finite([g for g, _ in grads_and_vars])
        update_importance(
            self.pabt_layers, grads_and_vars, self.criterion, self.importance_momentum,
            finite=finite,
        )  # fmt: skip
        apply_gradients_if(self.optimizer, grads_and_vars, finite)
        logs = self.compute_metrics(x, y, y_pred, sample_weight)
        # tf.where, not tf.cond: no assignment inside a cond branch of a replica context.
        for variable, value in zip(layer_state + metric_state, before):
            variable.assign(tf.where(finite, tf.convert_to_tensor(variable), value))
        self.nonfinite_steps.assign_add(tf.cast(tf.logical_not(finite), tf.int64))
        return {**logs, **self.get_metrics_result()}

    def fit(self, *args, **kwargs):
        """`tf.keras.Model.fit`, warning at the end of each epoch that had skipped steps."""
        bound = inspect.signature(tf.keras.Model.fit).bind(self, *args, **kwargs)
        callbacks = bound.arguments.get("callbacks")
        warner = NonfiniteStepsWarning(self)
        if isinstance(callbacks, tf.keras.callbacks.CallbackList):
            callbacks.append(warner)
        else:
            bound.arguments["callbacks"] = [*(callbacks or []), warner]
        return super().fit(*bound.args[1:], **bound.kwargs)

    # -- serialization ----------------------------------------------------------------

    def get_config(self) -> dict:
        config = functional.get_network_config(
            self, config={"name": self.name, "trainable": self.trainable}
        )
        config["criterion"] = self.criterion
        config["importance_momentum"] = self.importance_momentum
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> "PaBTModel":
        config = dict(config)
        criterion = config.pop("criterion", "taylor")
        momentum = config.pop("importance_momentum", 0.99)
        with _legacy_serialization.SharedObjectLoadingScope():
            inputs, outputs, layers = functional.reconstruct_from_config(config, custom_objects)
            model = cls(
                inputs=inputs,
                outputs=outputs,
                name=config.get("name"),
                trainable=config.get("trainable", True),
                criterion=criterion,
                importance_momentum=momentum,
            )
            functional.connect_ancillary_layers(model, layers)
        return model


# HDF5 files name a model by its bare class name (Keras 2 writes `__class__.__name__`,
# not the registered "pabt_tf>PaBTModel"): register that name too, so that
# `load_model("model.h5")` needs no custom_objects after `import pabt_tf`.
tf.keras.utils.get_custom_objects()["PaBTModel"] = PaBTModel
