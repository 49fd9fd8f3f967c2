"""Losses for dense prediction: per-pixel cross-entropy with an ignore label and class
weights (`SegmentationCrossentropy`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

__all__ = ["SegmentationCrossentropy"]


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class SegmentationCrossentropy(tf.keras.losses.Loss):
    """Per-pixel softmax cross-entropy on logits, weighted per class, without the pixels
    of an ignore label:

        L = Σ_p w[y_p] · CE(y_p, z_p) / Σ_p w[y_p]      over pixels p with y_p ≠ ignore

    so that the loss is a weighted mean over the labelled pixels of the batch (a batch
    of only ignored pixels gives 0, not NaN).

    # Arguments
        class_weights: one non-negative weight per class, or None (all 1).
        ignore_label: a label value left out of the loss (e.g. CamVid's 11), or None.

    # Raises
        ValueError: on bad weights or a negative / non-integer `ignore_label`.
    """

    def __init__(self, class_weights: Sequence[float] | None = None, ignore_label: int | None = None,
                 name: str = "segmentation_crossentropy", **kwargs):
        if class_weights is not None:
            weights = np.asarray(class_weights, np.float64)
            if weights.ndim != 1 or not np.all(np.isfinite(weights)) or np.any(weights < 0):
                raise ValueError(f"`class_weights` must be finite non-negative numbers, got {class_weights!r}.")
            class_weights = [float(w) for w in weights]
        if ignore_label is not None and (isinstance(ignore_label, bool) or not isinstance(ignore_label, int)
                                         or ignore_label < 0):
            raise ValueError(f"`ignore_label` must be None or a non-negative integer, got {ignore_label!r}.")
        super().__init__(name=name, **kwargs)
        self.class_weights = class_weights
        self.ignore_label = ignore_label

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.int32)
        if y_true.shape.rank == y_pred.shape.rank:
            y_true = tf.squeeze(y_true, -1)
        valid = tf.ones_like(y_true, tf.bool)
        if self.ignore_label is not None:
            valid = tf.not_equal(y_true, self.ignore_label)
        labels = tf.where(valid, y_true, 0)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.cast(y_pred, tf.float32))
        weight = tf.cast(valid, tf.float32)
        if self.class_weights is not None:
            weight *= tf.gather(tf.constant(self.class_weights, tf.float32), labels)
        return tf.math.divide_no_nan(tf.reduce_sum(ce * weight), tf.reduce_sum(weight))

    def get_config(self) -> dict:
        return {**super().get_config(), "class_weights": self.class_weights,
                "ignore_label": self.ignore_label}
