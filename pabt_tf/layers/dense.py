"""`PaBTDense`: the multi-base binary fully connected layer."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pabt_tf._validation import check_int
from pabt_tf.layers.base import PaBTLayer

__all__ = ["PaBTDense"]


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class PaBTDense(PaBTLayer):
    """Multi-base binary fully connected layer.

    `M · N` binary matrix products `sign(x − θ_n) · B_m` over the last axis; see
    `PaBTLayer` for the shared arguments. For deployment it becomes a 1×1 binary
    convolution (LCE has no binary dense op).

    # Arguments
        units: number of output units.
    """

    def __init__(
        self,
        units: int,
        weight_bases: int = 3,
        activation_bases: int = 3,
        bases: str = "independent",
        latent_weights: bool = True,
        **kwargs,
    ):
        self.units = check_int("units", units)
        super().__init__(
            self.units,
            weight_bases=weight_bases,
            activation_bases=activation_bases,
            bases=bases,
            latent_weights=latent_weights,
            **kwargs,
        )
        self.input_spec = tf.keras.layers.InputSpec(min_ndim=2)

    def _kernel_shape(self, in_channels: int) -> tuple[int, ...]:
        return (in_channels, self.units)

    def _base_op(self, h: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        if h.shape.rank == 2:
            return tf.matmul(h, kernel)
        return tf.tensordot(h, kernel, axes=[[h.shape.rank - 1], [0]])

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([self.units])

    def _output_pixels(self) -> int:
        return int(np.prod([int(d) for d in self._input_shape_for_macs[1:-1]], dtype=np.int64))

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}
