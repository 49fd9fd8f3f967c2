"""Semantic segmentation metrics: mean IoU, pixel accuracy and mean class accuracy.

Every score comes from one confusion matrix `M` accumulated over the whole split (rows =
ground truth, columns = prediction), never from per-batch scores averaged (a class absent
from one batch would weigh that batch's other classes more). The same matrix backs the
Keras metrics (`MeanIoU`, `PixelAccuracy`, `MeanClassAccuracy`, for `compile` / `fit`)
and the standalone `evaluate_segmentation`, so both report the same numbers:

- `IoU_c = M[c, c] / (Σ_j M[c, j] + Σ_i M[i, c] − M[c, c])`. A class with union 0 (in
  neither the ground truth nor the prediction of the whole split) is *absent*: its IoU is
  NaN (`None` in `segmentation_scores`, `null` in JSON) and `miou` is the mean IoU over
  the other, present classes.
- `pixel_accuracy = trace(M) / Σ M`; `mean_class_accuracy` is the mean of
  `M[c, c] / Σ_j M[c, j]` over the classes present in the ground truth.
- Pixels labelled `ignore_label` are dropped; any other label outside `[0, C)` is an
  error, never counted or dropped silently.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from pabt_tf._validation import check_int

__all__ = [
    "confusion_matrix",
    "segmentation_scores",
    "ConfusionMatrixMetric",
    "MeanIoU",
    "PixelAccuracy",
    "MeanClassAccuracy",
    "evaluate_segmentation",
    "per_class_table",
]


def _check_ignore_label(ignore_label: Any, num_classes: int) -> int | None:
    if ignore_label is None:
        return None
    if isinstance(ignore_label, bool) or not isinstance(ignore_label, (int, np.integer)):
        raise ValueError(f"`ignore_label` must be None or an integer, got {ignore_label!r}.")
    if 0 <= ignore_label < num_classes:
        raise ValueError(f"`ignore_label` must lie outside the class ids [0, {num_classes}) (e.g. "
                         f"{num_classes} or 255), got {ignore_label}: a class cannot be both "
                         "scored and ignored.")
    return int(ignore_label)


def _check_class_names(class_names: Any, num_classes: int) -> list[str]:
    if class_names is None:
        return [str(c) for c in range(num_classes)]
    if isinstance(class_names, str) or len(class_names) != num_classes:
        raise ValueError(f"`class_names` must be a sequence of {num_classes} names (one per "
                         f"class), got {class_names!r}.")
    return [str(name) for name in class_names]


def _batch_counts(y_true, y_pred, num_classes, ignore_label, sample_weight=None):
    """A batch's int64 `(C, C)` confusion matrix and its number of *bad* pixels (a label
    outside `[0, C)` and not ignored, a non-integer label, a predicted id outside `[0, C)`,
    a negative weight): asserted to be 0, and returned because XLA drops asserts.
    Only ops XLA compiles (no boolean masks), so the metrics work with `jit_compile`."""
    y_true = tf.convert_to_tensor(y_true)
    y_pred = tf.convert_to_tensor(y_pred)
    pred_shape = y_pred.shape
    if pred_shape.rank is None:
        raise ValueError("`y_pred` must have a known rank.")
    if y_pred.dtype.is_floating:  # logits or probabilities: the class axis is last
        if pred_shape.rank < 1 or not pred_shape[-1:].is_compatible_with([num_classes]):
            raise ValueError(f"`y_pred` of dtype {y_pred.dtype.name} must be logits or "
                             f"probabilities with a trailing class axis of size num_classes="
                             f"{num_classes}, got shape {pred_shape} (class ids: an integer tensor).")
        y_pred = tf.argmax(y_pred, axis=-1, output_type=tf.int64)
    elif y_pred.dtype.is_integer:
        y_pred = tf.cast(y_pred, tf.int64)
    else:
        raise ValueError(f"`y_pred` must be numeric, got dtype {y_pred.dtype.name}.")
    spatial = y_pred.shape
    if not (y_true.shape.is_compatible_with(spatial)
            or y_true.shape.is_compatible_with(spatial.concatenate([1]))):
        raise ValueError(f"`y_true` must have shape {spatial} (or {spatial.concatenate([1])}) "
                         f"to match `y_pred` of shape {pred_shape}, got {y_true.shape}.")
    if not (y_true.dtype.is_integer or y_true.dtype.is_floating):
        raise ValueError(f"`y_true` must hold integer class ids, got dtype {y_true.dtype.name}.")
    labels = tf.reshape(tf.cast(y_true, tf.int64), [-1])
    preds = tf.reshape(y_pred, [-1])
    keep = tf.ones_like(labels, tf.bool) if ignore_label is None else labels != ignore_label
    ignored = "" if ignore_label is None else f" and not the ignore label {ignore_label}"
    problems = [(keep & ((labels < 0) | (labels >= num_classes)), labels,
                 f"`y_true` holds labels outside [0, {num_classes}){ignored}; smallest, largest:")]
    if y_true.dtype.is_floating:  # Keras casts labels to the logits' dtype when both float
        fraction = tf.reshape(y_true != tf.round(y_true), [-1])
        problems.append((fraction, labels, "`y_true` holds non-integer labels; truncated:"))
    if sample_weight is not None:
        weight = tf.reshape(_broadcast_weight(tf.convert_to_tensor(sample_weight), y_pred), [-1])
        keep = keep & (weight != 0)
        problems.append((weight < 0, labels, "`sample_weight` must be >= 0; at labels:"))
    problems.append((keep & ((preds < 0) | (preds >= num_classes)), preds,
                     f"`y_pred` holds class ids outside [0, {num_classes}); smallest, largest:"))
    bad, asserts, big = tf.zeros_like(keep), [], tf.constant(np.iinfo(np.int64).max, tf.int64)
    for mask, values, message in problems:
        bad = bad | mask
        asserts.append(tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(mask)),
            [message, tf.reduce_min(tf.where(mask, values, big)),
             tf.reduce_max(tf.where(mask, values, -big))]))
    counted = keep & ~bad
    index = tf.where(counted, labels * num_classes + preds, tf.zeros_like(labels))
    counts = tf.math.unsorted_segment_sum(tf.cast(counted, tf.int64), index, num_classes**2)
    with tf.control_dependencies(asserts):
        return (tf.reshape(counts, (num_classes, num_classes)),
                tf.reduce_sum(tf.cast(bad, tf.int64)))


def _broadcast_weight(weight: tf.Tensor, preds: tf.Tensor) -> tf.Tensor:
    """A per-example (B,), per-pixel (B, H, W) or (B, H, W, 1) weight at `preds`' shape."""
    rank = preds.shape.rank
    if weight.shape.rank is not None:
        if weight.shape.rank == rank + 1 and weight.shape[-1] == 1:
            weight = tf.squeeze(weight, -1)
        while weight.shape.rank < rank:
            weight = tf.expand_dims(weight, -1)
    return tf.broadcast_to(weight, tf.shape(preds))


def confusion_matrix(y_true, y_pred, num_classes: int, ignore_label: int | None = None) -> tf.Tensor:
    """The `(C, C)` confusion matrix of one batch (rows = ground truth, columns = prediction).

    # Arguments
        y_true: integer class ids, e.g. `(B, H, W)`; a trailing axis of 1 is allowed.
        y_pred: integer class ids of `y_true`'s shape, or floating logits / probabilities
            with a trailing class axis of size `num_classes` (the argmax is taken).
        num_classes: `C`, the number of scored classes (ids `0 … C−1`).
        ignore_label: a label outside `[0, C)` whose pixels are dropped (e.g. CamVid's
            "Unlabelled" 11, Cityscapes' 255), or None.

    # Returns
        An int64 tensor of shape `(C, C)`: entry `[t, p]` counts the pixels labelled `t`
        and predicted `p`.

    # Raises
        ValueError: naming the argument, for a bad `num_classes` / `ignore_label` or shapes
            that do not match (before anything is computed).
        tf.errors.InvalidArgumentError: if a label that is not `ignore_label` lies outside
            `[0, C)`, or a predicted class id does (the message says which). Inside an
            XLA-compiled function asserts are dropped: use the Keras metrics there, which
            count such pixels and then score NaN.
    """
    num_classes = check_int("num_classes", num_classes)
    ignore_label = _check_ignore_label(ignore_label, num_classes)
    return _batch_counts(y_true, y_pred, num_classes, ignore_label)[0]


def _check_confusion(confusion: Any) -> np.ndarray:
    matrix = np.asarray(confusion)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 1:
        raise ValueError(f"`confusion` must be a square (C, C) matrix, got shape {matrix.shape}.")
    if (not np.issubdtype(matrix.dtype, np.number) or not np.all(np.isfinite(matrix))
            or np.any(matrix < 0) or np.any(matrix != np.round(matrix))):
        raise ValueError("`confusion` must hold non-negative integer pixel counts.")
    return matrix.astype(np.int64)


def segmentation_scores(confusion: Any, class_names: Sequence[str] | None = None) -> dict:
    """Mean IoU, per-class IoU, pixel accuracy and mean class accuracy of a confusion matrix.

    A class with union 0 (absent from the ground truth and the prediction of the whole
    split) has IoU NaN, returned as `None` (`null` in JSON), and is left out of `miou`;
    a class absent from the ground truth has accuracy `None` and is left out of
    `mean_class_accuracy`. A score with no class to average (no pixels) is `None`.

    # Arguments
        confusion: a `(C, C)` array of pixel counts (rows = ground truth, columns =
            prediction), e.g. from `confusion_matrix` summed over a split.
        class_names: `C` names; default `"0" … "C−1"`.

    # Returns
        A JSON-serialisable dict of plain Python values: `miou`, `per_class_iou` (list),
        `pixel_accuracy`, `mean_class_accuracy`, `per_class_accuracy` (list),
        `class_names`, `present` (list of bool: the class is in the ground truth or the
        prediction) and `pixels` (the number of pixels counted). Scores are fractions in
        `[0, 1]`.

    # Raises
        ValueError: if `confusion` is not a square matrix of non-negative integer counts,
            or `class_names` does not have `C` entries.
    """
    matrix = _check_confusion(confusion)
    names = _check_class_names(class_names, matrix.shape[0])
    tp = np.diag(matrix).astype(np.float64)
    truth = matrix.sum(axis=1).astype(np.float64)
    union = truth + matrix.sum(axis=0) - tp
    present = union > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(present, tp / union, np.nan)
        accuracy = np.where(truth > 0, tp / truth, np.nan)
    pixels = int(matrix.sum())

    def mean(values: np.ndarray, mask: np.ndarray) -> float | None:
        return float(values[mask].mean()) if mask.any() else None

    def plain(values: np.ndarray) -> list[float | None]:
        return [None if math.isnan(v) else float(v) for v in values]

    return {
        "miou": mean(iou, present),
        "per_class_iou": plain(iou),
        "pixel_accuracy": float(tp.sum() / pixels) if pixels else None,
        "mean_class_accuracy": mean(accuracy, truth > 0),
        "per_class_accuracy": plain(accuracy),
        "class_names": names,
        "present": [bool(p) for p in present],
        "pixels": pixels,
    }


def _scores_tf(confusion: tf.Tensor) -> dict[str, tf.Tensor]:
    """`segmentation_scores`' three means in TensorFlow (float64; NaN when undefined)."""
    matrix = tf.cast(confusion, tf.float64)
    tp = tf.linalg.diag_part(matrix)
    truth = tf.reduce_sum(matrix, axis=1)
    union = truth + tf.reduce_sum(matrix, axis=0) - tp

    def mean_where(numerator, denominator):
        mask = denominator > 0  # no boolean_mask: result() runs inside XLA's train step
        ratios = tf.where(mask, numerator / tf.where(mask, denominator, 1.0), 0.0)
        # 0/0 = NaN when no class qualifies (unlike divide_no_nan's 0).
        return tf.reduce_sum(ratios) / tf.reduce_sum(tf.cast(mask, tf.float64))

    return {
        "miou": mean_where(tp, union),
        "pixel_accuracy": tf.reduce_sum(tp) / tf.reduce_sum(matrix),
        "mean_class_accuracy": mean_where(tp, truth),
    }


class ConfusionMatrixMetric(tf.keras.metrics.Metric):
    """Base of the segmentation metrics: a confusion matrix accumulated over the split.

    The state is non-trainable int64 weights: `confusion` `(C, C)`, summed over the
    batches of an epoch (and over replicas under `tf.distribute`), and `bad_pixels`.
    `result()` is computed from the matrix, so it is the whole split's score, not a mean
    of per-batch scores.

    Compared with `tf.keras.metrics.MeanIoU`: counts are int64 (Keras accumulates float32,
    exact only up to 2²⁴ ≈ 16.8 M pixels per cell); an absent class is left out of the
    mean as there, but its IoU is NaN (not 0) in `scores()`, and a split with no pixels
    scores NaN (not 0); a label outside `[0, C)` that is not `ignore_label` fails with a
    message naming it; pixel accuracy and mean class accuracy come from the same matrix;
    `sample_weight` is a pixel mask (0 drops a pixel, any positive weight counts it once),
    so class weights used by the loss do not change the scores people report. Under
    `jit_compile` (XLA drops asserts) a bad pixel is counted in `bad_pixels` instead:
    `result()` is then NaN and `scores()` raises.

    # Arguments
        num_classes: `C`, the number of scored classes.
        ignore_label: a label outside `[0, C)` whose pixels are not counted, or None.
        name: the metric's name (the key in `fit`'s logs).
        dtype: the dtype of `result()`.

    # Raises
        ValueError: for a bad `num_classes` or `ignore_label`.
    """

    _score = "miou"

    def __init__(self, num_classes: int, ignore_label: int | None = None,
                 name: str = "confusion_matrix", dtype: Any = None, **kwargs):
        num_classes = check_int("num_classes", num_classes)
        ignore_label = _check_ignore_label(ignore_label, num_classes)
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.confusion = self.add_weight("confusion", shape=(num_classes, num_classes),
                                         initializer="zeros", dtype=tf.int64)
        self.bad_pixels = self.add_weight("bad_pixels", shape=(), initializer="zeros",
                                          dtype=tf.int64)

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds a batch's pixels (`y_true` ids `(B, H, W[, 1])`, `y_pred` logits `(B, H, W, C)`
        or ids); `sample_weight`, if given, masks pixels (0 = not counted)."""
        counts, bad = _batch_counts(y_true, y_pred, self.num_classes, self.ignore_label,
                                    sample_weight)
        self.bad_pixels.assign_add(bad)
        return self.confusion.assign_add(counts)

    def reset_state(self):
        self.confusion.assign(tf.zeros((self.num_classes, self.num_classes), tf.int64))
        self.bad_pixels.assign(tf.zeros((), tf.int64))

    def result(self):
        score = tf.cast(_scores_tf(self.confusion)[self._score], self.dtype)
        return tf.where(self.bad_pixels > 0, tf.constant(np.nan, self.dtype), score)

    def scores(self, class_names: Sequence[str] | None = None) -> dict:
        """`segmentation_scores` of the accumulated matrix (every score, per class too).

        # Raises
            ValueError: if bad pixels were counted (possible only under XLA).
        """
        bad = int(tf.convert_to_tensor(self.bad_pixels))
        if bad:
            raise ValueError(f"{self.name}: {bad} pixels had a label or class id outside "
                             f"[0, {self.num_classes}) (not the ignore label); no scores.")
        return segmentation_scores(tf.convert_to_tensor(self.confusion).numpy(), class_names)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes,
                "ignore_label": self.ignore_label}


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class MeanIoU(ConfusionMatrixMetric):
    """Mean IoU over the classes present in the split (see `ConfusionMatrixMetric`)."""

    def __init__(self, num_classes: int, ignore_label: int | None = None,
                 name: str = "mean_iou", dtype: Any = None, **kwargs):
        super().__init__(num_classes, ignore_label, name=name, dtype=dtype, **kwargs)


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class PixelAccuracy(ConfusionMatrixMetric):
    """Global pixel accuracy over the non-ignored pixels (see `ConfusionMatrixMetric`)."""

    _score = "pixel_accuracy"

    def __init__(self, num_classes: int, ignore_label: int | None = None,
                 name: str = "pixel_accuracy", dtype: Any = None, **kwargs):
        super().__init__(num_classes, ignore_label, name=name, dtype=dtype, **kwargs)


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class MeanClassAccuracy(ConfusionMatrixMetric):
    """Mean per-class accuracy (recall) over the classes in the ground truth (see
    `ConfusionMatrixMetric`)."""

    _score = "mean_class_accuracy"

    def __init__(self, num_classes: int, ignore_label: int | None = None,
                 name: str = "mean_class_accuracy", dtype: Any = None, **kwargs):
        super().__init__(num_classes, ignore_label, name=name, dtype=dtype, **kwargs)


def _check_output_size(output_size: Any) -> tuple[int, int] | None:
    if output_size is None:
        return None
    if (isinstance(output_size, (str, bytes)) or len(output_size) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
                   for v in output_size)):
        raise ValueError(f"`output_size` must be None or (height, width) of positive integers, "
                         f"got {output_size!r}.")
    return int(output_size[0]), int(output_size[1])


def evaluate_segmentation(model: Callable, dataset: Any, num_classes: int,
                          ignore_label: int | None = None,
                          output_size: Sequence[int] | None = None,
                          class_names: Sequence[str] | None = None) -> dict:
    """Scores of a segmentation model on a split, from one confusion matrix.

    # Arguments
        model: a Keras model (called as `model(x, training=False)`) or any callable
            returning logits `(B, h, w, C)` for a batch `x`.
        dataset: batched `(x, y)` pairs (e.g. a `tf.data.Dataset`); labels `y` are
            `(B, H, W)` or `(B, H, W, 1)` class ids. A third element (sample weights) is
            a pixel mask, as in `ConfusionMatrixMetric`.
        num_classes: `C`.
        ignore_label: a label outside `[0, C)` whose pixels are not counted, or None.
        output_size: `(H, W)`: the logits are resized bilinearly to it before the argmax,
            and the labels must be at that size (e.g. CamVid's benchmark resolution
            `(360, 480)`: "logits upsampled to 360×480"). None: logits and labels must have
            the same spatial size.
        class_names: `C` names for the per-class scores.

    # Returns
        `segmentation_scores(...)` of the split, plus `confusion` (the matrix as a list of
        lists), `output_size` (`[H, W]` or None) and `ignore_label`.

    # Raises
        ValueError: naming the argument, for a bad argument, logits without `C` channels,
            spatial sizes that do not match, or a dataset with no batches.
        tf.errors.InvalidArgumentError: for labels outside `[0, C)` other than
            `ignore_label`.
    """
    num_classes = check_int("num_classes", num_classes)
    ignore_label = _check_ignore_label(ignore_label, num_classes)
    output_size = _check_output_size(output_size)
    names = _check_class_names(class_names, num_classes)
    if not callable(model):
        raise ValueError(f"`model` must be a Keras model or a callable, got {model!r}.")
    keras_model = isinstance(model, tf.keras.layers.Layer)
    total = np.zeros((num_classes, num_classes), np.int64)
    batches = 0
    for element in dataset:
        if not isinstance(element, (tuple, list)) or len(element) not in (2, 3):
            raise ValueError("`dataset` must yield batched (x, y) or (x, y, sample_weight) "
                             f"tuples, got {type(element).__name__}.")
        x, y, weight = (*element, None)[:3]
        logits = tf.convert_to_tensor(model(x, training=False) if keras_model else model(x))
        y = tf.convert_to_tensor(y)
        if logits.shape.rank != 4 or logits.shape[-1] != num_classes:
            raise ValueError(f"`model` must return logits (B, h, w, num_classes={num_classes}), "
                             f"got shape {logits.shape}.")
        label_size, logits_size = tuple(y.shape[1:3]), tuple(logits.shape[1:3])
        if output_size is not None:
            if label_size != output_size:
                raise ValueError(f"With `output_size`={output_size} the labels must be at that "
                                 f"size, got labels of shape {y.shape}.")
            logits = tf.image.resize(logits, output_size, method="bilinear")
        elif logits_size != label_size:
            raise ValueError(f"`model` returns logits of spatial size {logits_size} but the labels "
                             f"are {label_size}; pass `output_size`={label_size} to upsample them.")
        total += _batch_counts(y, logits, num_classes, ignore_label, weight)[0].numpy()
        batches += 1
    if not batches:
        raise ValueError("`dataset` yielded no batches.")
    return {
        **segmentation_scores(total, names),
        "confusion": total.tolist(),
        "output_size": list(output_size) if output_size is not None else None,
        "ignore_label": ignore_label,
    }


def per_class_table(scores: dict, digits: int = 2) -> str:
    """A Markdown table of scores: one row per class (name, IoU %, accuracy %; "–" for a
    class absent from the split), then mIoU, pixel accuracy and mean class accuracy.

    # Arguments
        scores: the dict returned by `segmentation_scores` or `evaluate_segmentation`.
        digits: decimals of the percentages.

    # Returns
        The table, lines joined by newlines.

    # Raises
        ValueError: if `scores` lacks a key the table needs, or `digits` is not an int >= 0.
    """
    digits = check_int("digits", digits, 0)
    keys = ("class_names", "per_class_iou", "per_class_accuracy", "miou", "pixel_accuracy",
            "mean_class_accuracy")
    if not isinstance(scores, dict) or not all(k in scores for k in keys):
        raise ValueError(f"`scores` must be a dict from `segmentation_scores` with keys {keys}.")

    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.{digits}f}"

    lines = ["| Class | IoU (%) | Accuracy (%) |", "|---|---:|---:|"]
    for name, iou, acc in zip(scores["class_names"], scores["per_class_iou"],
                              scores["per_class_accuracy"]):
        lines.append(f"| {name} | {pct(iou)} | {pct(acc)} |")
    lines.append(f"| **mIoU** | **{pct(scores['miou'])}** | |")
    lines.append(f"| **Pixel accuracy** | | **{pct(scores['pixel_accuracy'])}** |")
    lines.append(f"| **Mean class accuracy** | | **{pct(scores['mean_class_accuracy'])}** |")
    return "\n".join(lines)
