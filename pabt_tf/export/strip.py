"""Strip a PaBT model: the plain Keras/Larq model LCE converts, computing the same function.

DESIGN.md §1.4. Every PaBT layer becomes the sum of its *active* binary convolutions,
each written the way LCE recognises a binary convolution:

    ThresholdShift (x − θ_n) → larq QuantConv2D(ste_sign, ste_sign, pad_values=1, B_m)
                             → ChannelScale (coef[m, n] · α_m)

Pruned binary convolutions are removed from the graph (a zero-scaled kernel would make
LCE fall back to a float convolution). `PaBTDense` becomes a 1×1 binary convolution on an
input reshaped to `(P, 1, C)` *before* the shift, because a reshape between the sign and
the convolution makes LCE emit a float convolution. This module also defines the constant
layers of the stripped model; the graph is rebuilt by `pabt_tf.graph.rewrite_model`.
"""

from __future__ import annotations

import re

import larq as lq
import numpy as np
import tensorflow as tf

from pabt_tf.graph import NodeContext, rewrite_model
from pabt_tf.layers import PaBTConv2D, PaBTDense, PaBTLayer, pabt_layers

__all__ = [
    "ThresholdShift",
    "ChannelScale",
    "ChannelBias",
    "DilatedQuantConv2D",
    "strip_pabt",
    "bconv_owner",
]

# "<pabt layer>/m<m>n<n>_bconv": the name `strip_pabt` gives each binary convolution.
_BCONV_NAME = re.compile(r"^(?P<owner>.+)/m(?P<m>\d+)n(?P<n>\d+)_bconv$")


def bconv_owner(name: str) -> str:
    """The PaBT layer a binary convolution of a stripped model came from, read from its
    name `"<pabt layer>/m<m>n<n>_bconv"`; any other name is returned unchanged (a Larq
    layer owns itself)."""
    match = _BCONV_NAME.match(name)
    return match.group("owner") if match else name


# --------------------------------------------------------------------------------------
# Constant layers of the stripped model
# --------------------------------------------------------------------------------------


class _ConstantVectorLayer(tf.keras.layers.Layer):
    """A layer holding one non-trainable constant: a scalar or a vector over channels.

    The constant is a weight (so `get_weights`/`set_weights`, `.keras` files and
    SavedModels carry it); freezing turns it into a graph constant, which is what LCE
    needs to fuse it.
    """

    _weight_name = "value"
    _initializer = "zeros"

    def __init__(self, per_channel: bool = True, **kwargs):
        if not isinstance(per_channel, bool):
            raise ValueError(f"`per_channel` must be a bool, got {per_channel!r}.")
        self.per_channel = per_channel
        super().__init__(**kwargs)

    def build(self, input_shape):
        channels = tf.TensorShape(input_shape)[-1]
        if self.per_channel and channels is None:
            raise ValueError(f"{self.name}: the input's channel dimension must be known.")
        shape = (int(channels),) if self.per_channel else ()
        self.value = self.add_weight(
            self._weight_name, shape=shape, initializer=self._initializer, trainable=False
        )
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "per_channel": self.per_channel}


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class ThresholdShift(_ConstantVectorLayer):
    """`x − θ`: the threshold of one activation base, before Larq's `ste_sign`.

    `sign(x − θ)` is PaBT's activation base `H_n(x)`. LCE fuses the constant subtraction
    into the preceding operator when it can (a float conv's bias, a binary conv's
    post-activation bias) or into its `LceQuantize` threshold.

    # Arguments
        per_channel: one threshold per input channel (shape `(C,)`) instead of a scalar.
    """

    _weight_name = "threshold"

    def call(self, inputs):
        return inputs - self.value


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class ChannelScale(_ConstantVectorLayer):
    """`x · s`, `s` per output channel: a binary convolution's weight `coef[m, n] · α_m`.

    Placed directly after a `QuantConv2D`, LCE fuses the multiply into the
    `LceBconv2d`'s post-activation multiplier.

    # Arguments
        per_channel: a vector over channels (default) instead of a scalar.
    """

    _weight_name = "scale"
    _initializer = "ones"

    def call(self, inputs):
        return inputs * self.value


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class ChannelBias(_ConstantVectorLayer):
    """`x + b` per output channel: a PaBT layer's bias, added once after its branches.

    # Arguments
        per_channel: a vector over channels (default) instead of a scalar.
    """

    _weight_name = "bias"

    def call(self, inputs):
        return inputs + self.value


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class DilatedQuantConv2D(lq.layers.QuantConv2D):
    """A Larq `QuantConv2D` whose dilated convolution is a single TF `Conv2D` op.

    Keras' `Conv2D` computes a dilated convolution through `tf.nn.convolution`, which
    emits `SpaceToBatchND → Conv2D → BatchToSpaceND`. LCE folds that back into a dilated
    `LceBconv2d` only when the `SpaceToBatchND` has one consumer; several binary
    convolutions of one activation base share it, and they would stay float
    `CONV_2D`s (seen with LCE 0.16). Calling `tf.nn.conv2d` with `dilations` directly
    gives LCE the op it matches. Same arguments and function as `QuantConv2D`.
    """

    def convolution_op(self, inputs, kernel):
        padding = self.padding.upper() if isinstance(self.padding, str) else self.padding
        return tf.nn.conv2d(
            inputs,
            kernel,
            strides=list(self.strides),
            padding=padding,
            dilations=list(self.dilation_rate),
        )


# --------------------------------------------------------------------------------------
# The rewrite rule: one PaBT layer → its active binary convolutions
# --------------------------------------------------------------------------------------


def _check_sign_forward(quantizer, what: str, layer_name: str) -> None:
    """LCE's binary ops compute sign (+1 at 0); a 1-bit quantizer with another forward
    (e.g. a Heaviside step) cannot be exported as one."""
    probe = tf.constant([-2.0, -0.5, 0.0, 0.5, 2.0])
    got = np.asarray(quantizer(probe))
    if not np.array_equal(got, [-1.0, -1.0, 1.0, 1.0, 1.0]):
        raise ValueError(
            f"{layer_name}: cannot export {what} {quantizer!r}: its forward pass is not "
            f"sign(x) with sign(0) = +1 (got {got.tolist()} on [-2, -0.5, 0, 0.5, 2]); "
            "LCE binary convolutions binarize with sign."
        )


def _foldable_batchnorm(context: NodeContext | None) -> tf.keras.layers.BatchNormalization | None:
    """The copied BatchNormalization producing this layer's input, if the threshold shift
    can be folded into its beta: it feeds nothing else, is used once, normalises the last
    axis and has a beta."""
    if context is None or not context.input_is_exclusive:
        return None
    bn = context.producer_clone
    if not isinstance(bn, tf.keras.layers.BatchNormalization) or not bn.center:
        return None
    axis = bn.axis if isinstance(bn.axis, (list, tuple)) else [bn.axis]
    rank = len(context.ref_input.shape)
    original = context.ref_input._keras_history.layer
    if [a % rank for a in axis] != [rank - 1] or len(original._inbound_nodes) != 1:
        return None  # another axis, or a shared BatchNorm (its other calls need beta)
    return bn


def _expand_pabt_layer(
    layer: PaBTLayer, x: tf.Tensor, context: NodeContext | None = None
) -> tf.Tensor:
    """The stripped subgraph of one PaBT layer applied to the Keras tensor `x`.

    With one active activation base and a BatchNormalization right before that feeds
    only this layer, θ_n is folded into the BatchNormalization's beta instead of a
    `ThresholdShift` (TFLite does not merge the BN's add with a following subtract, so a
    separate shift would cost an op where a hand-written Larq BNN has none).
    """
    if not layer.built:
        raise ValueError(f"{layer.name}: build the layer before stripping it.")
    _check_sign_forward(layer.input_quantizer.pseudo_gradient, "activation quantizer", layer.name)
    mask = layer.binary_conv_mask
    bases = np.asarray(layer.binary_kernels(), np.float32)  # (M, *kernel_shape)
    if not np.all(np.abs(bases) == 1.0):
        raise ValueError(
            f"{layer.name}: cannot export: its binary weight bases are not all ±1 "
            "(check `kernel_quantizer`); LCE binary convolutions need ±1 kernels."
        )
    coef = np.asarray(layer.coefficients(), np.float32)
    alpha = np.asarray(tf.keras.backend.get_value(layer.scale), np.float32)
    thresholds = np.asarray(tf.keras.backend.get_value(layer.input_quantizer.thresholds))
    per_channel = layer.input_quantizer.per_channel
    prefix = layer.name
    dense = isinstance(layer, PaBTDense)

    if dense:
        # LCE has no binary dense op: run it as a 1x1 binary conv on (P, 1, C), with the
        # reshape *before* the shift/sign (a reshape between sign and conv stays float).
        in_shape = x.shape
        if any(d is None for d in in_shape[1:]):
            raise ValueError(
                f"{layer.name}: exporting PaBTDense needs known non-batch input "
                f"dimensions, got {tuple(in_shape)}."
            )
        channels = int(in_shape[-1])
        positions = int(np.prod([int(d) for d in in_shape[1:-1]], dtype=np.int64))
        x = tf.keras.layers.Reshape((positions, 1, channels), name=f"{prefix}/to_1x1")(x)
        conv_args = dict(filters=layer.units, kernel_size=1, strides=1, padding="valid")
        bases = bases.reshape((bases.shape[0], 1, 1, channels, layer.units))
    elif isinstance(layer, PaBTConv2D):
        conv_args = dict(
            filters=layer.filters,
            kernel_size=layer.kernel_size,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
        )
    else:
        raise TypeError(f"{layer.name}: no export rule for {type(layer).__name__}.")

    shifted: dict[int, tf.Tensor] = {}
    active_bases = sorted({int(n) for n in np.nonzero(mask)[1]})
    bn = _foldable_batchnorm(context) if not dense and len(active_bases) == 1 else None
    if bn is not None:
        (n,) = active_bases
        beta = np.asarray(tf.keras.backend.get_value(bn.beta))
        bn.beta.assign((beta - np.broadcast_to(thresholds[n], beta.shape)).astype(beta.dtype))
        shifted[n] = x
    branches = []
    for m, n in zip(*np.nonzero(mask)):
        m, n = int(m), int(n)
        if n not in shifted:  # branches with the same activation base share the shift
            shift = ThresholdShift(per_channel=per_channel, name=f"{prefix}/n{n}_shift")
            shifted[n] = shift(x)
            shift.set_weights([thresholds[n]])
        conv_cls = (
            DilatedQuantConv2D
            if max(conv_args.get("dilation_rate", (1, 1))) > 1
            else lq.layers.QuantConv2D
        )
        conv = conv_cls(
            **conv_args,
            input_quantizer="ste_sign",
            kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",  # ±1 is inside the clip; silences Larq
            pad_values=1.0,
            use_bias=False,
            name=f"{prefix}/m{m}n{n}_bconv",
        )
        y = conv(shifted[n])
        conv.set_weights([bases[m]])
        scale = ChannelScale(name=f"{prefix}/m{m}n{n}_scale")
        y = scale(y)
        scale.set_weights([coef[m, n] * alpha[m]])
        branches.append(y)
    y = branches[0] if len(branches) == 1 else tf.keras.layers.Add(name=f"{prefix}/sum")(branches)
    if layer.use_bias:
        bias = ChannelBias(name=f"{prefix}/bias")
        y = bias(y)
        bias.set_weights([np.asarray(tf.keras.backend.get_value(layer.bias))])
    if layer.activation is not None and layer.activation is not tf.keras.activations.linear:
        y = tf.keras.layers.Activation(layer.activation, name=f"{prefix}/activation")(y)
    if dense:
        y = tf.keras.layers.Reshape(tuple(int(d) for d in in_shape[1:-1]) + (layer.units,),
                                    name=f"{prefix}/from_1x1")(y)
    return y


def strip_pabt(model: tf.keras.Model, name: str | None = None) -> tf.keras.Model:
    """A plain Keras/Larq functional model with no PaBT layers and the same function.

    Every PaBT layer becomes, for each of its *active* binary convolutions `(m, n)`, a
    branch `ThresholdShift(θ_n) → larq QuantConv2D(input_quantizer="ste_sign",
    kernel_quantizer="ste_sign", pad_values=1.0, use_bias=False, kernel=B_m) →
    ChannelScale(coef[m, n] · α_m)`; several branches are summed by an `Add`, then the
    layer's bias and activation follow. Branches of one activation base share its shift.
    Pruned binary convolutions are left out. Layer names stay traceable:
    `"<pabt layer>/m<m>n<n>_bconv"`, `"<pabt layer>/n<n>_shift"`, ... With a single
    active activation base and a BatchNormalization before it that feeds only this
    layer, θ_n is folded into that BatchNormalization's beta (no shift op). `PaBTDense`
    becomes a 1×1 binary convolution between two `Reshape`s. Dilated convolutions use
    `DilatedQuantConv2D` (a `QuantConv2D` emitting one dilated TF `Conv2D`).

    Other layers are copies (`from_config` + weights): the result shares no variables
    with `model`. Nested Functional/Sequential models are inlined.

    # Arguments
        model: a built Functional or Sequential `tf.keras.Model` (nested models allowed).
        name: name of the returned model (default `"<model>_stripped"`).

    # Returns
        A functional `tf.keras.Model`.

    # Raises
        TypeError: `model` is not a Keras model, or is (or contains) a subclassed model.
        ValueError: an unbuilt model, a layer that cannot be copied, or a PaBT layer
            that cannot be exported (non-sign quantizers, non-±1 kernels, called on
            several tensors).
    """
    if not isinstance(model, tf.keras.Model):  # before `model.name` below
        raise TypeError(f"`model` must be a tf.keras.Model, got {type(model).__name__}.")

    def replace(layer: tf.keras.layers.Layer, x, context: NodeContext | None):
        if isinstance(layer, PaBTLayer):
            return _expand_pabt_layer(layer, x, context)
        return None

    stripped = rewrite_model(model, replace, name or f"{model.name}_stripped")
    left = pabt_layers(stripped)  # the rewriter copies calls on several tensors
    if left:
        raise ValueError(f"{left[0].name} must be called on one tensor to be rewritten.")
    return stripped
