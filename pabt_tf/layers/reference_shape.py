"""The input shape a PaBT layer's costs are counted at (`ReferenceShape`, a mixin of
`PaBTLayer`).

A model built on `Input((None, None, C))` (what segmentation users build) has no spatial
size until it sees data, and a binary convolution's MACs (and LCE latency) depend on it.
The costs are then counted at a *reference input shape*: the one given
(`set_reference_input_shape`, or `pabt_tf.set_reference_input_shape(model, ...)` for a
whole model), else the first fully known one a call saw (the first training batch: the
train step is traced with the batch's static shape).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import tensorflow as tf

__all__ = ["ReferenceShape", "recording_input_shapes"]

# While `recording_input_shapes` runs: {id(layer): input shape} of every call.
_RECORDING: dict | None = None


@contextlib.contextmanager
def recording_input_shapes() -> Iterator[dict]:
    """Within the block, every PaBT layer call stores its static input shape in the
    yielded dict (keyed by `id(layer)`); calls traced in graphs count too."""
    global _RECORDING
    previous, _RECORDING = _RECORDING, {}
    try:
        yield _RECORDING
    finally:
        _RECORDING = previous


class ReferenceShape:
    """Mixin of `PaBTLayer`: the input shape its costs are counted at.

    Expects `name`, `built` and `_check_built` from the layer; `build` stores
    `_built_input_shape` and `call` calls `_remember_input_shape`.
    """

    _built_input_shape: tf.TensorShape

    def _remember_input_shape(self, shape: tf.TensorShape) -> None:
        # Runs in Python, at trace time in graphs: static shapes only, no tensors kept.
        shape = tf.TensorShape(shape)
        if _RECORDING is not None:
            _RECORDING[id(self)] = shape
        if getattr(self, "_seen_input_shape", None) is None and shape.rank and all(
            d is not None for d in shape.as_list()[1:]
        ):
            self._seen_input_shape = tf.TensorShape([None, *shape.as_list()[1:]])

    @property
    def has_static_input_shape(self) -> bool:
        """Whether the layer was built on an input with every non-batch dimension known."""
        self._check_built("has_static_input_shape")
        return all(d is not None for d in self._built_input_shape.as_list()[1:])

    @property
    def reference_input_shape(self) -> tuple | None:
        """The input shape (batch dimension `None`) the layer's costs are counted at: its
        built input shape when that is fully known; else the one given with
        `set_reference_input_shape`; else the first fully known one it was called on;
        else `None`."""
        self._check_built("reference_input_shape")
        if self.has_static_input_shape:
            return tuple([None, *self._built_input_shape.as_list()[1:]])
        for shape in (getattr(self, "_reference_input_shape", None),
                      getattr(self, "_seen_input_shape", None)):  # fmt: skip
            if shape is not None:
                return tuple(shape.as_list())
        return None

    def set_reference_input_shape(self, shape) -> None:
        """Count this layer's costs (MACs, latency) at input shape `shape`.

        For layers built on inputs with unknown spatial dimensions
        (`Input((None, None, C))`); `pabt_tf.set_reference_input_shape(model, ...)` sets
        it for every PaBT layer of a model from the model's input shape.

        # Arguments
            shape: the layer's input shape with or without the batch dimension
                (`(1, 90, 120, 64)` or `(90, 120, 64)`); `None` clears it.

        # Raises
            ValueError: a shape of another rank, with unknown or non-positive
                dimensions, or disagreeing with a dimension the layer was built with.
        """
        self._check_built("set_reference_input_shape")
        if shape is None:
            self._reference_input_shape = None
            return
        built = self._built_input_shape.as_list()
        dims = list(shape) if isinstance(shape, (tuple, list, tf.TensorShape)) else []
        if isinstance(shape, tf.TensorShape):
            dims = shape.as_list()
        if len(dims) == len(built) and dims[0] is None:
            dims = dims[1:]  # a batch shape with an unknown batch
        integers = all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in dims
        )
        if not integers or len(dims) not in (len(built) - 1, len(built)):
            raise ValueError(
                f"{self.name}: `shape` must be {len(built) - 1} (or, with the batch, "
                f"{len(built)}) positive integers, got {shape!r}."
            )
        dims = [int(d) for d in dims[-(len(built) - 1):]]
        clash = [(i + 1, b, d) for i, (b, d) in enumerate(zip(built[1:], dims)) if b not in (None, d)]
        if clash:
            raise ValueError(
                f"{self.name}: reference input shape {tuple(dims)} disagrees with the "
                f"shape the layer was built with, {tuple(built[1:])} (dimension "
                f"{clash[0][0]}: {clash[0][2]} vs {clash[0][1]})."
            )
        self._reference_input_shape = tf.TensorShape([None, *dims])

    @property
    def _input_shape_for_macs(self) -> tf.TensorShape:
        self._check_built("binary_conv_macs")
        shape = self.reference_input_shape
        if shape is None:
            raise ValueError(
                f"{self.name}: MACs need known spatial input dimensions; the layer takes "
                f"inputs of shape {tuple(self._built_input_shape.as_list())}. Give a "
                "reference input size: pabt_tf.set_reference_input_shape(model, (1, H, W, "
                "C)) or PaBTPruningCallback(reference_input_shape=...), or call the model "
                "on a batch first (its shape is used)."
            )
        return tf.TensorShape(shape)
