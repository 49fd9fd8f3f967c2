"""`PaBTConv2D`: the multi-base binary 2D convolution, with Larq's +1 'same' padding."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from pabt_tf._validation import check_int
from pabt_tf.layers.base import PaBTLayer

__all__ = ["PaBTConv2D"]


def _normalize_tuple(name: str, value: Any, rank: int) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value),) * rank
    try:
        value = tuple(value)
    except TypeError:
        value = ()
    try:
        if len(value) != rank:
            raise ValueError
        return tuple(check_int(name, v) for v in value)
    except ValueError:
        raise ValueError(
            f"`{name}` must be a positive integer or a tuple of {rank} positive "
            f"integers, got {value!r}."
        ) from None


def _same_padding(size, stride: int, dilation: int, kernel: int):
    """TF's 'same' padding (before, after) for one spatial dimension."""
    effective = (kernel - 1) * dilation + 1
    out = (size + stride - 1) // stride
    total = (out - 1) * stride + effective - size
    total = tf.maximum(total, 0) if tf.is_tensor(total) else max(total, 0)
    return [total // 2, total - total // 2]


def _conv(x: tf.Tensor, kernel: tf.Tensor, strides, padding: str, dilations) -> tf.Tensor:
    """A 2D convolution that trains on every CPU.

    Without oneDNN (TensorFlow's default on AMD and other non-Intel CPUs) the stock
    `Conv2DBackpropInput`/`Conv2DBackpropFilter` kernels refuse dilation rates > 1, so a
    dilated convolution runs as `tf.nn.convolution` does for Keras' `Conv2D`:
    space-to-batch, an undilated conv, batch-to-space (the same function, and its
    gradients need no dilated kernel). Undilated convolutions stay one `Conv2D` op.
    """
    if max(dilations) > 1:
        return tf.nn.convolution(
            x, kernel, strides=list(strides), padding=padding, dilations=list(dilations)
        )
    return tf.nn.conv2d(x, kernel, strides=[1, *strides, 1], padding=padding)


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class PaBTConv2D(PaBTLayer):
    """Multi-base binary 2D convolution (channels last).

    `M · N` binary convolutions `conv(sign(x − θ_n), B_m)`, each scaled per output
    channel by `α_m` and by its gate; see `PaBTLayer` for the shared arguments.
    With `padding="same"` the *binarized* input is padded with +1 (Larq's
    `pad_values=1.0`), so training and the deployed LCE op compute the same function.

    # Arguments
        filters: number of output channels.
        kernel_size: int or (kh, kw).
        strides: int or (sh, sw).
        padding: `"valid"` or `"same"`.
        dilation_rate: int or (dh, dw); cannot be combined with strides > 1.
        data_format: only `"channels_last"`.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = 1,
        padding: str = "valid",
        dilation_rate: int | Sequence[int] = 1,
        data_format: str | None = None,
        weight_bases: int = 3,
        activation_bases: int = 3,
        bases: str = "independent",
        latent_weights: bool = True,
        **kwargs,
    ):
        self.filters = check_int("filters", filters)
        self.kernel_size = _normalize_tuple("kernel_size", kernel_size, 2)
        self.strides = _normalize_tuple("strides", strides, 2)
        self.dilation_rate = _normalize_tuple("dilation_rate", dilation_rate, 2)
        if not isinstance(padding, str) or padding.lower() not in ("same", "valid"):
            raise ValueError(f"`padding` must be 'same' or 'valid', got {padding!r}.")
        self.padding = padding.lower()
        if data_format not in (None, "channels_last"):
            raise ValueError(
                f"`data_format` must be 'channels_last' (or None), got {data_format!r}."
            )
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "`strides` > 1 cannot be combined with `dilation_rate` > 1, got "
                f"strides={self.strides}, dilation_rate={self.dilation_rate}."
            )
        super().__init__(
            self.filters,
            weight_bases=weight_bases,
            activation_bases=activation_bases,
            bases=bases,
            latent_weights=latent_weights,
            **kwargs,
        )
        self.input_spec = tf.keras.layers.InputSpec(ndim=4)

    def _kernel_shape(self, in_channels: int) -> tuple[int, ...]:
        return (*self.kernel_size, in_channels, self.filters)

    def _same_pads(self, x: tf.Tensor):
        """Spatial dims of `x` (static where known) and TF's 'same' (before, after) pads."""
        dims = [x.shape[1], x.shape[2]]
        if dims[0] is None or dims[1] is None:
            dyn = tf.shape(x)
            dims = [dyn[1] if dims[0] is None else dims[0], dyn[2] if dims[1] is None else dims[1]]
        pads = [
            _same_padding(size, s, d, k)
            for size, s, d, k in zip(dims, self.strides, self.dilation_rate, self.kernel_size)
        ]
        return dims, pads

    def _base_op(self, h: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        # 'same' runs as TF's zero-padded SAME convolution (padding inside the conv
        # kernel, no padded copy of the input, no slice in the backward pass); the
        # difference to +1 padding is added by `_padding_correction`.
        return _conv(h, kernel, self.strides, self.padding.upper(), self.dilation_rate)

    def _padding_correction(self, inputs: tf.Tensor, folded: tf.Tensor) -> tf.Tensor | None:
        # conv(pad(H, +1), K) = conv_same(H, K) + conv(pad(0, +1), K): the second term
        # does not depend on the input. Summed over the input channels and the
        # activation bases (all padded alike), it is a batch-1, 1-channel convolution
        # of a border indicator: (1, Ho, Wo, O), broadcast over the batch.
        if self.padding == "valid":
            return None
        dims, pads = self._same_pads(inputs)
        if all(isinstance(p, int) and p == 0 for pair in pads for p in pair):
            return None
        border = tf.pad(
            tf.zeros(tf.stack([1, dims[0], dims[1], 1]), folded.dtype),
            [[0, 0], pads[0], pads[1], [0, 0]],
            constant_values=1.0,
        )
        kernel = tf.reduce_sum(folded, axis=[0, 3])[:, :, None, :]  # (kh, kw, 1, O)
        return _conv(border, kernel, self.strides, "VALID", self.dilation_rate)

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape).as_list()
        out = []
        for size, s, d, k in zip(input_shape[1:3], self.strides, self.dilation_rate, self.kernel_size):
            if size is None:
                out.append(None)
            elif self.padding == "same":
                out.append((size + s - 1) // s)
            else:
                out.append((size - (k - 1) * d - 1) // s + 1)
        return tf.TensorShape([input_shape[0], *out, self.filters])

    def _output_pixels(self) -> int:
        shape = self.compute_output_shape(self._input_shape_for_macs)
        if shape[1] is None or shape[2] is None:
            raise ValueError(f"{self.name}: MACs need known spatial input dimensions.")
        return int(shape[1]) * int(shape[2])

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "dilation_rate": self.dilation_rate,
        }
