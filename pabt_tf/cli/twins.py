"""Same-shaped baselines of a network, for latency comparisons.

`float_twin(model)` and `larq_twin(model)` rebuild a Keras model with every binary layer
replaced, keeping every other layer (BatchNorm, pooling, the float first/last layers):

| layer in `model`                  | float twin          | Larq twin (what a Larq user writes)          |
|-----------------------------------|---------------------|----------------------------------------------|
| `PaBTConv2D` (any active convs)   | `Conv2D`, same shape | `QuantConv2D(ste_sign, ste_sign, pad_values=1)` |
| `PaBTDense`                       | `Dense`             | `QuantDense(ste_sign, ste_sign)`             |
| Larq binary `QuantConv2D` / `QuantDense` | `Conv2D` / `Dense` | unchanged                            |

(`QuantConv2D`, `QuantDense`: `lq.layers`.)

A PaBT layer becomes *one* convolution whatever its number of active binary
convolutions: the twins are the float network and the BNN of the same architecture.
Weights of replaced layers are taken from the model where they exist (a PaBT layer's
first active weight base), so the twins compute finite, meaningful values; speed does
not depend on them.

Pass the PaBT model for per-layer twins. A model without PaBT layers (e.g. a stripped
one) is rewritten per Larq binary layer: a stripped multi-branch layer then has one
float convolution per branch.
"""

from __future__ import annotations

import larq as lq
import numpy as np
import tensorflow as tf

import pabt_tf  # noqa: F401  (Keras 2 + registered objects)
from pabt_tf.binary_layers import is_binary_quant_conv2d, is_binary_quant_dense
from pabt_tf.graph import NodeContext, all_layers, rewrite_model
from pabt_tf.layers import PaBTConv2D, PaBTDense, PaBTLayer, pabt_layers

__all__ = ["float_twin", "larq_twin", "binary_layer_count"]


def _is_binary_quant(layer: tf.keras.layers.Layer) -> bool:
    return is_binary_quant_conv2d(layer) or is_binary_quant_dense(layer)


def binary_layer_count(model: tf.keras.Model) -> int:
    """PaBT layers plus Larq binary `QuantConv2D`/`QuantDense` layers (nested included)."""
    return sum(
        1 for layer in all_layers(model) if isinstance(layer, PaBTLayer) or _is_binary_quant(layer)
    )


def _pabt_kernel(layer: PaBTLayer) -> np.ndarray:
    m = int(np.argwhere(layer.binary_conv_mask)[0][0])
    return np.asarray(layer.binary_kernels()[m], np.float32)


def _conv_args(layer) -> dict:
    return dict(
        filters=layer.filters,
        kernel_size=layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        dilation_rate=layer.dilation_rate,
    )


def float_twin(model: tf.keras.Model, name: str | None = None) -> tf.keras.Model:
    """The float network of the same architecture: binary layers become float ones.

    # Raises
        TypeError / ValueError: as `pabt_tf.graph.rewrite_model`.
    """

    def replace(layer: tf.keras.layers.Layer, x, context: NodeContext | None):
        if isinstance(layer, PaBTLayer):
            weights = [_pabt_kernel(layer) * 0.05]
            if layer.use_bias:
                weights.append(np.asarray(layer.bias.numpy()))
        elif _is_binary_quant(layer):
            weights = [np.asarray(w) for w in layer.get_weights()]
        else:
            return None
        common = dict(
            use_bias=layer.use_bias, activation=layer.activation, name=f"{layer.name}_float"
        )
        if isinstance(layer, (PaBTConv2D, lq.layers.QuantConv2D)):
            new = tf.keras.layers.Conv2D(**_conv_args(layer), **common)
        else:
            new = tf.keras.layers.Dense(layer.units, **common)
        y = new(x)
        new.set_weights(weights)
        return y

    return rewrite_model(model, replace, name or f"{model.name}_float_twin")


def larq_twin(model: tf.keras.Model, name: str | None = None) -> tf.keras.Model:
    """The BNN of the same architecture as a Larq user writes it by hand.

    Every PaBT layer becomes one `lq.layers.QuantConv2D(input_quantizer="ste_sign",
    kernel_quantizer="ste_sign", kernel_constraint="weight_clip", pad_values=1.0)`
    (`QuantDense` for `PaBTDense`) with the layer's bias and activation, and no threshold
    shift or scale. Larq layers are kept.
    """

    def replace(layer: tf.keras.layers.Layer, x, context: NodeContext | None):
        binary = dict(
            input_quantizer="ste_sign",
            kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",
            use_bias=layer.use_bias if isinstance(layer, PaBTLayer) else None,
        )
        if isinstance(layer, PaBTConv2D):
            new = lq.layers.QuantConv2D(
                **_conv_args(layer), **binary, pad_values=1.0, activation=layer.activation,
                name=f"{layer.name}_larq",
            )
        elif isinstance(layer, PaBTDense):
            new = lq.layers.QuantDense(
                layer.units, **binary, activation=layer.activation, name=f"{layer.name}_larq"
            )
        else:
            return None
        y = new(x)
        weights = [_pabt_kernel(layer)]
        if layer.use_bias:
            weights.append(np.asarray(layer.bias.numpy()))
        new.set_weights(weights)
        return y

    # Without PaBT layers the model's Larq layers already are the twin: copy it.
    rule = replace if pabt_layers(model) else (lambda layer, x, context: None)
    return rewrite_model(model, rule, name or f"{model.name}_larq_twin")

