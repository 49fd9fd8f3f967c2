"""Walk and rebuild Keras layer graphs: the one graph-rewrite mechanism of pabt_tf.

`rewrite_model(model, replace, name)` rebuilds a Functional or Sequential model call by
call, letting `replace` substitute a new subgraph for any single-input layer call and
copying every other layer. `pabt_tf.from_model` (binary layers → PaBT layers),
`pabt_tf.strip_pabt` (PaBT layers → plain Larq branches) and the benchmark twins
(`converters.twins`) are all `replace` functions over it, the way tfmot builds both
`prune_low_magnitude` and `strip_pruning` on one `clone_model(clone_function=...)`.
`all_layers(model)` walks every layer, nested models included.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import tensorflow as tf

__all__ = ["all_layers", "rewrite_model", "NodeContext", "Replace"]


def all_layers(model: tf.keras.Model) -> list[tf.keras.layers.Layer]:
    """Every layer of `model`, nested models and their layers included, each once.

    Depth first, in each model's `layers` order (topological for functional models).
    """
    found: list[tf.keras.layers.Layer] = []
    seen: set[int] = set()

    def visit(layer):
        if id(layer) in seen:  # a layer shared between (nested) models
            return
        seen.add(id(layer))
        found.append(layer)
        for sub in getattr(layer, "layers", []) or []:
            visit(sub)

    for layer in model.layers:
        visit(layer)
    return found


@dataclasses.dataclass
class NodeContext:
    """What `rewrite_model` tells `replace` about the layer call being rewritten.

    # Attributes
        ref_input: the input Keras tensor in the *original* model.
        input_is_exclusive: that tensor feeds only this call (and is no model output).
        producer_clone: the copy, in the new model, of the layer that produced it (None
            for a model input or a rewritten layer).
    """

    ref_input: Any
    input_is_exclusive: bool
    producer_clone: Any


# `replace(layer, x, context)`: the new output tensor for this call of `layer` on the new
# Keras tensor `x`, or None to copy the layer. `context` is None when the call has no
# graph node to describe (the layers of a Sequential model without an `Input`).
Replace = Callable[[tf.keras.layers.Layer, Any, Optional[NodeContext]], Any]


class _GraphRewriter:
    """Rebuilds a Functional/Sequential model node by node.

    Copies are `from_config(get_config())` plus the original weights; a layer called
    several times is copied once, so shared layers stay shared. Nested models are inlined
    (their layers rewritten like the outer ones) or, with `inline_nested=False`, copied
    whole.
    """

    def __init__(self, replace: Replace, inline_nested: bool = True):
        self._replace = replace
        self._inline_nested = inline_nested
        self._consumers: dict[str, int] = {}
        self._clones: dict[int, tf.keras.layers.Layer] = {}
        self._pending_weights: dict[int, list | None] = {}

    def clone_layer(self, layer: tf.keras.layers.Layer) -> tf.keras.layers.Layer:
        key = id(layer)
        if key not in self._clones:
            try:
                clone = type(layer).from_config(layer.get_config())
            except Exception as err:
                if layer.weights:
                    raise ValueError(
                        f"cannot copy layer {layer.name!r} ({type(layer).__name__}): "
                        f"from_config(get_config()) failed: {err}"
                    ) from err
                clone = layer  # weightless and not re-creatable: reuse it as it is
            self._clones[key] = clone
            self._pending_weights[key] = layer.get_weights() if clone is not layer else None
        return self._clones[key]

    def call_layer(self, layer: tf.keras.layers.Layer, args, kwargs) -> Any:
        clone = self.clone_layer(layer)
        outputs = clone(*args, **kwargs)
        weights = self._pending_weights.get(id(layer))
        if weights:  # the copy has its variables only after its first call
            clone.set_weights(weights)
            self._pending_weights[id(layer)] = None
        return outputs

    def run(self, model: tf.keras.Model, inputs: list) -> Any:
        """Apply `model`'s graph, rewritten, to the list of (new) Keras tensors `inputs`."""
        if isinstance(model, tf.keras.Sequential) and not model._is_graph_network:
            if not model.built:
                raise ValueError(
                    f"Sequential model {model.name!r} is not built; call it on data or "
                    "give it an `Input` first."
                )
            (x,) = inputs
            for layer in model.layers:
                x = self.apply(layer, (x,), {})
            return x
        if not getattr(model, "_is_graph_network", False):
            raise TypeError(
                f"model {model.name!r} ({type(model).__name__}) is a subclassed model; only "
                "Functional and Sequential models (nested ones included) can be rebuilt. "
                "Rebuild it with the functional API."
            )
        if len(inputs) != len(model.inputs):
            raise ValueError(
                f"model {model.name!r} takes {len(model.inputs)} inputs, got {len(inputs)}."
            )
        tensors: dict[str, Any] = {}
        for ref, new in zip(model.inputs, inputs):
            tensors[str(id(ref))] = new
        for nodes in model._nodes_by_depth.values():
            for node in nodes:
                for t_id in node.flat_input_ids:
                    self._consumers[t_id] = self._consumers.get(t_id, 0) + 1
        for out in model.outputs:
            self._consumers[str(id(out))] = self._consumers.get(str(id(out)), 0) + 1
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                if node.is_input:
                    continue
                if any(t_id not in tensors for t_id in node.flat_input_ids):
                    continue  # not needed for the outputs
                flat = list(node._flat_arguments)
                for kt_id, index in node._keras_inputs_ids_and_indices:
                    flat[index] = tensors[kt_id]
                args, kwargs = tf.nest.pack_sequence_as(
                    (node.call_args, list(node.call_kwargs.values())), flat
                )
                kwargs = dict(zip(node.call_kwargs.keys(), kwargs))
                refs = node.keras_inputs
                outputs = self.apply(node.layer, args, kwargs, refs[0] if len(refs) == 1 else None)
                for t_id, y in zip(node.flat_output_ids, tf.nest.flatten(outputs)):
                    tensors[t_id] = y
        flat_outputs = [tensors[str(id(x))] for x in model.outputs]
        return tf.nest.pack_sequence_as(model._nested_outputs, flat_outputs)

    def _context(self, ref) -> NodeContext | None:
        if ref is None:
            return None
        producer = ref._keras_history.layer
        return NodeContext(
            ref_input=ref,
            input_is_exclusive=self._consumers.get(str(id(ref)), 0) == 1,
            producer_clone=self._clones.get(id(producer)),
        )

    def apply(self, layer: tf.keras.layers.Layer, args, kwargs, ref=None) -> Any:
        if isinstance(layer, tf.keras.Model) and self._inline_nested:
            kwargs = {k: v for k, v in kwargs.items() if k not in ("training", "mask")}
            if kwargs:
                raise ValueError(
                    f"nested model {layer.name!r} is called with arguments {sorted(kwargs)}; "
                    "only its inputs can be inlined."
                )
            return self.run(layer, tf.nest.flatten(args))
        if isinstance(layer, tf.keras.layers.InputLayer):
            return args[0]
        if len(args) == 1 and tf.is_tensor(args[0]) and not isinstance(layer, tf.keras.Model):
            replaced = self._replace(layer, args[0], self._context(ref))
            if replaced is not None:
                return replaced
        return self.call_layer(layer, args, kwargs)


def _new_inputs(model: tf.keras.Model) -> list:
    """Fresh `Input`s for a Functional or Sequential model (TypeError if subclassed)."""
    if isinstance(model, tf.keras.Sequential) and not model._is_graph_network:
        if not model.built or getattr(model, "_build_input_shape", None) is None:
            raise ValueError(
                f"Sequential model {model.name!r} has no known input shape; give it an "
                "`Input` or call `model.build(input_shape)` first."
            )
        shape = tf.TensorShape(model._build_input_shape)
        return [tf.keras.Input(batch_shape=shape, name=f"{model.name}_input")]
    if getattr(model, "_is_graph_network", False):
        return [
            tf.keras.Input(
                batch_shape=ref.shape, dtype=ref.dtype, name=ref._keras_history.layer.name
            )
            for ref in model.inputs
        ]
    raise TypeError(
        f"model {model.name!r} ({type(model).__name__}) is a subclassed model; only "
        "Functional and Sequential models can be rebuilt. Rebuild it with the "
        "functional API."
    )


def rewrite_model(
    model: tf.keras.Model,
    replace: Replace,
    name: str,
    *,
    inline_nested: bool = True,
    model_class: type = tf.keras.Model,
) -> tf.keras.Model:
    """Rebuild `model` as a functional model, rewriting layers with `replace`.

    `replace(layer, x, context)` gets every call of a (non-model) layer on one tensor:
    the original layer, the call's input in the new graph and a `NodeContext` (None for
    a Sequential model without an `Input`). It returns the new output tensor, or `None`
    to copy the layer (`from_config` + weights). It is called once per call, so a
    `replace` that wants a shared layer to stay shared creates its replacement once and
    calls it again. Layers called on several tensors, and input layers, are always copied.

    # Arguments
        model: a built Functional or Sequential model (with or without an `Input`);
            shared layers, several inputs/outputs and nested models are allowed.
        replace: the rewrite rule.
        name: name of the returned model.
        inline_nested: rewrite the layers of nested models as part of the outer graph
            (default); `False` copies each nested model whole.
        model_class: the functional model class to build (e.g. `pabt_tf.PaBTModel`).

    # Returns
        A `model_class` instance with fresh inputs and the original output structure;
        it shares no variables with `model`.

    # Raises
        TypeError: a subclassed model (or not a Keras model).
        ValueError: an unbuilt model or a layer that cannot be copied.
    """
    if not isinstance(model, tf.keras.Model):
        raise TypeError(f"`model` must be a tf.keras.Model, got {type(model).__name__}.")
    inputs = _new_inputs(model)
    outputs = _GraphRewriter(replace, inline_nested).run(model, inputs)
    return model_class(inputs[0] if len(inputs) == 1 else inputs, outputs, name=name)
