"""Which Larq layers are binary: the predicates transform, export and the twins share.

Larq marks a 1-bit quantizer with `precision == 1` (`ste_sign`, `approx_sign`,
`NoOp(precision=1)` for latent-weight-free kernels, ...). A layer is binary when its input
and one of its weights are quantized to 1 bit, i.e. its products are binary operations.
"""

from __future__ import annotations

from typing import Any

import larq as lq
import tensorflow as tf

__all__ = [
    "is_binary_quantizer",
    "is_binary_layer",
    "is_binary_quant_conv2d",
    "is_binary_quant_dense",
]

# The quantizer attributes of Larq layers that quantize a weight.
_WEIGHT_QUANTIZERS = ("kernel_quantizer", "depthwise_quantizer", "pointwise_quantizer")


def is_binary_quantizer(quantizer: Any) -> bool:
    """A Larq quantizer with `precision == 1` (None, and quantizers without a precision,
    are not binary)."""
    return quantizer is not None and getattr(quantizer, "precision", None) == 1


def is_binary_layer(layer: tf.keras.layers.Layer) -> bool:
    """A Larq layer of any kind whose input and some weight are binary (`precision == 1`)."""
    if not is_binary_quantizer(getattr(layer, "input_quantizer", None)):
        return False
    return any(is_binary_quantizer(getattr(layer, name, None)) for name in _WEIGHT_QUANTIZERS)


def is_binary_quant_conv2d(layer: tf.keras.layers.Layer) -> bool:
    """A binary Larq `QuantConv2D` (subclasses included): what LCE makes an `LceBconv2d`."""
    return isinstance(layer, lq.layers.QuantConv2D) and is_binary_layer(layer)


def is_binary_quant_dense(layer: tf.keras.layers.Layer) -> bool:
    """A binary Larq `QuantDense` (LCE has no binary dense op: it stays float)."""
    return isinstance(layer, lq.layers.QuantDense) and is_binary_layer(layer)
