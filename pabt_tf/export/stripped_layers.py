"""The layers a stripped PaBT model is made of, besides Larq's `QuantConv2D`.

Constants held as non-trainable weights (so `get_weights`/`set_weights`, `.keras` files
and SavedModels carry them; freezing makes them the graph constants LCE fuses), the
dilated binary convolution LCE recognises, and the sum of a fused binary convolution's
output groups. All are registered Keras serializables: a stripped
model loads with no `custom_objects` after `import pabt_tf`.
"""

from __future__ import annotations

import larq as lq
import tensorflow as tf

__all__ = [
    "ThresholdShift",
    "ChannelScale",
    "ChannelBias",
    "DilatedQuantConv2D",
    "ChannelGroupSum",
]


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
    """`x + b` per output channel: a PaBT layer's bias, added once (after the sum of its
    branches, or, in the fused export, zero-extended right after its first binary
    convolution, where LCE fuses it into the `LceBconv2d`).

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


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class ChannelGroupSum(tf.keras.layers.Layer):
    """Sum the `groups` equal parts of the last axis: the output groups of a fused binary
    convolution (one per weight base sharing an activation base).

    A TFLite `RESHAPE` to `(..., groups, C)` and a `SUM` over the group axis: 2 ops
    whatever the number of groups (see `pabt_tf.export.strip` for the measured choice).

    # Arguments
        groups: number of parts (≥ 2); the channel count must be a multiple of it.
    """

    def __init__(self, groups: int, **kwargs):
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 2:
            raise ValueError(f"`groups` must be an integer >= 2, got {groups!r}.")
        self.groups = groups
        super().__init__(**kwargs)

    def build(self, input_shape):
        channels = tf.TensorShape(input_shape)[-1]
        if channels is None or int(channels) % self.groups:
            raise ValueError(
                f"{self.name}: {channels} channels cannot be split into {self.groups} groups."
            )
        super().build(input_shape)

    def call(self, inputs):
        inner = inputs.shape[1:-1]
        if all(d is not None for d in inner):  # static: a constant RESHAPE target
            dims = [-1, *(int(d) for d in inner)]
        else:
            dims = tf.unstack(tf.shape(inputs)[:-1])
        parts = tf.reshape(inputs, [*dims, self.groups, int(inputs.shape[-1]) // self.groups])
        return tf.reduce_sum(parts, axis=-2)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape)
        return shape[:-1].concatenate([int(shape[-1]) // self.groups])

    def get_config(self) -> dict:
        return {**super().get_config(), "groups": self.groups}
