"""Semantic segmentation metrics: mean IoU, pixel accuracy and mean class accuracy.

Every score comes from one confusion matrix accumulated over the whole split (rows =
ground truth, columns = prediction), never from per-batch scores averaged: a class absent
from one batch but present in others would otherwise weigh that batch's classes more.
The same matrix backs the Keras metrics (`MeanIoU`, `PixelAccuracy`, `MeanClassAccuracy`,
usable in `model.compile` and `fit`) and the standalone `evaluate_segmentation`, so both
report the same numbers.

The rules, for a split with confusion matrix `M` over `C` classes:

- `IoU_c = M[c, c] / (Σ_j M[c, j] + Σ_i M[i, c] − M[c, c])`. A class with union 0 (in
  neither the ground truth nor the prediction of the whole split) is *absent*: its IoU is
  NaN (`None` in `segmentation_scores`, `null` in JSON) and it is left out of the mean.
- `miou` = the mean IoU over the present classes.
- `pixel_accuracy` = `trace(M) / Σ M` (global, over the non-ignored pixels).
- `mean_class_accuracy` = the mean of `M[c, c] / Σ_j M[c, j]` over the classes present in
  the ground truth.
- Pixels whose label is `ignore_label` are dropped; any other label outside `[0, C)` is an
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
        raise ValueError(
            f"`ignore_label` must lie outside the class ids [0, {num_classes}) (e.g. "
            f"{num_classes} or 255), got {ignore_label}: a class cannot be both scored and "
            "ignored."
        )
    return int(ignore_label)


def _check_class_names(class_names: Any, num_classes: int) -> list[str]:
    if class_names is None:
        return [str(c) for c in range(num_classes)]
    if isinstance(class_names, str) or len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` must be a sequence of {num_classes} names (one per class), got "
            f"{class_names!r}."
        )
    return [str(name) for name in class_names]


def _flat_pairs(y_true, y_pred, num_classes, ignore_label, sample_weight=None):
    """Flat int64 (labels, predictions) of the pixels that count, with range asserts."""
    y_true = tf.convert_to_tensor(y_true)
    y_pred = tf.convert_to_tensor(y_pred)
    if y_pred.shape.rank is None:
        raise ValueError("`y_pred` must have a known rank.")
    if y_pred.dtype.is_floating:  # logits or probabilities: the class axis is last
        if y_pred.shape.rank < 1 or not y_pred.shape[-1:].is_compatible_with([num_classes]):
            raise ValueError(
                f"`y_pred` of dtype {y_pred.dtype.name} must be logits or probabilities with a "
                f"trailing class axis of size num_classes={num_classes}, got shape "
                f"{y_pred.shape} (class ids must be an integer tensor)."
            )
        pred_shape = y_pred.shape
        y_pred = tf.argmax(y_pred, axis=-1, output_type=tf.int64)
    elif y_pred.dtype.is_integer:
        pred_shape = y_pred.shape
        y_pred = tf.cast(y_pred, tf.int64)
    else:
        raise ValueError(f"`y_pred` must be numeric, got dtype {y_pred.dtype.name}.")
    spatial = y_pred.shape
    if not (y_true.shape.is_compatible_with(spatial)
            or y_true.shape.is_compatible_with(spatial.concatenate([1]))):
        raise ValueError(
            f"`y_true` must have shape {spatial} (or {spatial.concatenate([1])}) to match "
            f"`y_pred` of shape {pred_shape}, got {y_true.shape}."
        )
    if not (y_true.dtype.is_integer or y_true.dtype.is_floating):
        raise ValueError(f"`y_true` must hold integer class ids, got dtype {y_true.dtype.name}.")
    checks = []
    if y_true.dtype.is_floating:  # Keras casts labels to the logits' dtype when both float
        checks.append(tf.debugging.assert_equal(
            y_true, tf.round(y_true), message="`y_true` holds non-integer labels"))
    labels = tf.reshape(tf.cast(y_true, tf.int64), [-1])
    preds = tf.reshape(y_pred, [-1])
    checks.append(tf.debugging.assert_equal(
        tf.size(labels, tf.int64), tf.size(preds, tf.int64),
        message="`y_true` and `y_pred` hold different numbers of pixels"))
    keep = tf.ones_like(labels, tf.bool)
    if ignore_label is not None:
        keep = tf.not_equal(labels, ignore_label)
    if sample_weight is not None:
        weight = tf.convert_to_tensor(sample_weight)
        weight = tf.reshape(_broadcast_weight(weight, y_pred), [-1])
        checks.append(tf.debugging.assert_non_negative(
            weight, message="`sample_weight` must be >= 0 (0 drops a pixel)"))
        keep = keep & tf.not_equal(weight, 0)
    with tf.control_dependencies(checks):
        labels = tf.boolean_mask(labels, keep)
        preds = tf.boolean_mask(preds, keep)
    bad_labels = (labels < 0) | (labels >= num_classes)
    ignored = "" if ignore_label is None else f" and not the ignore label {ignore_label}"
    label_check = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad_labels)),
        [f"`y_true` holds labels outside [0, {num_classes}){ignored}; first such labels:",
         tf.boolean_mask(labels, bad_labels)[:10]],
        summarize=10,
    )
    bad_preds = (preds < 0) | (preds >= num_classes)
    pred_check = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad_preds)),
        [f"`y_pred` holds class ids outside [0, {num_classes}); first such ids:",
         tf.boolean_mask(preds, bad_preds)[:10]],
        summarize=10,
    )
    with tf.control_dependencies([label_check, pred_check]):
        return tf.identity(labels), tf.identity(preds)


def _broadcast_weight(weight: tf.Tensor, preds: tf.Tensor) -> tf.Tensor:
    """A per-example (B,), per-pixel (B, H, W) or (B, H, W, 1) weight at `preds`' shape."""
    rank = preds.shape.rank
    if weight.shape.rank is not None:
        if weight.shape.rank == rank + 1 and weight.shape[-1] == 1:
            weight = tf.squeeze(weight, -1)
        while weight.shape.rank < rank:
            weight = tf.expand_dims(weight, -1)
    return tf.broadcast_to(weight, tf.shape(preds))


def _confusion(labels: tf.Tensor, preds: tf.Tensor, num_classes: int) -> tf.Tensor:
    counts = tf.math.bincount(labels * num_classes + preds, minlength=num_classes**2,
                              maxlength=num_classes**2, dtype=tf.int64)
    return tf.reshape(counts, (num_classes, num_classes))


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
            `[0, C)`, or a predicted class id does (the message says which).
    """
    num_classes = check_int("num_classes", num_classes)
    ignore_label = _check_ignore_label(ignore_label, num_classes)
    labels, preds = _flat_pairs(y_true, y_pred, num_classes, ignore_label)
    return _confusion(labels, preds, num_classes)


def _check_confusion(confusion: Any) -> np.ndarray:
    matrix = np.asarray(confusion)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 1:
        raise ValueError(f"`confusion` must be a square (C, C) matrix, got shape {matrix.shape}.")
    if not np.issubdtype(matrix.dtype, np.number) or not np.all(np.isfinite(matrix)):
        raise ValueError("`confusion` must hold finite pixel counts.")
    if np.any(matrix < 0) or np.any(matrix != np.round(matrix)):
        raise ValueError("`confusion` must hold non-negative integer pixel counts.")
    return matrix.astype(np.int64)


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]


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

    return {
        "miou": mean(iou, present),
        "per_class_iou": _nan_to_none(iou),
        "pixel_accuracy": float(tp.sum() / pixels) if pixels else None,
        "mean_class_accuracy": mean(accuracy, truth > 0),
        "per_class_accuracy": _nan_to_none(accuracy),
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
        mask = denominator > 0
        ratios = tf.boolean_mask(numerator, mask) / tf.boolean_mask(denominator, mask)
        # 0/0 = NaN when no class qualifies (unlike divide_no_nan's 0).
        return tf.reduce_sum(ratios) / tf.reduce_sum(tf.cast(mask, tf.float64))

    return {
        "miou": mean_where(tp, union),
        "pixel_accuracy": tf.reduce_sum(tp) / tf.reduce_sum(matrix),
        "mean_class_accuracy": mean_where(tp, truth),
    }


class ConfusionMatrixMetric(tf.keras.metrics.Metric):
    """Base of the segmentation metrics: a confusion matrix accumulated over the split.

    The state is one non-trainable int64 `(C, C)` weight, `confusion`, summed over the
    batches of an epoch (and over replicas under `tf.distribute`); `result()` is computed
    from it, so it is the whole split's score, not a mean of per-batch scores.

    Compared with `tf.keras.metrics.MeanIoU`: counts are int64 (Keras accumulates float32,
    exact only up to 2²⁴ ≈ 16.8 M pixels per cell); a split with no pixels scores NaN, not
    0; a label outside `[0, C)` that is not `ignore_label` fails with a message naming it;
    pixel accuracy and mean class accuracy come from the same matrix; `sample_weight` is a
    per-pixel mask (0 drops a pixel, any positive weight counts it once), so class
    weights used by the loss do not change the scores people report.

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

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds a batch's pixels (`y_true` ids `(B, H, W[, 1])`, `y_pred` logits `(B, H, W, C)`
        or ids); `sample_weight`, if given, masks pixels (0 = not counted)."""
        labels, preds = _flat_pairs(y_true, y_pred, self.num_classes, self.ignore_label,
                                    sample_weight)
        return self.confusion.assign_add(_confusion(labels, preds, self.num_classes))

    def reset_state(self):
        self.confusion.assign(tf.zeros((self.num_classes, self.num_classes), tf.int64))

    def result(self):
        return tf.cast(_scores_tf(self.confusion)[self._score], self.dtype)

    def scores(self, class_names: Sequence[str] | None = None) -> dict:
        """`segmentation_scores` of the accumulated matrix (every score, per class too)."""
        return segmentation_scores(tf.convert_to_tensor(self.confusion).numpy(), class_names)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes,
                "ignore_label": self.ignore_label}


@tf.keras.utils.register_keras_serializable(package="pabt_tf")
class MeanIoU(ConfusionMatrixMetric):
    """Mean IoU over the classes present in the split (see `ConfusionMatrixMetric`)."""

    _score = "miou"

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
    if isinstance(output_size, (str, bytes)) or len(output_size) != 2:
        raise ValueError(f"`output_size` must be None or (height, width), got {output_size!r}.")
    try:
        return (check_int("output_size", output_size[0]), check_int("output_size", output_size[1]))
    except ValueError:
        raise ValueError(
            f"`output_size` must be (height, width) of positive integers, got {output_size!r}."
        ) from None


def _batch(element: Any) -> tuple[Any, Any, Any]:
    if isinstance(element, (tuple, list)) and len(element) in (2, 3):
        return element[0], element[1], element[2] if len(element) == 3 else None
    raise ValueError(
        "`dataset` must yield batched (x, y) or (x, y, sample_weight) tuples, got "
        f"{type(element).__name__}."
    )


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
        x, y, weight = _batch(element)
        logits = tf.convert_to_tensor(model(x, training=False) if keras_model else model(x))
        y = tf.convert_to_tensor(y)
        if logits.shape.rank != 4 or logits.shape[-1] != num_classes:
            raise ValueError(
                f"`model` must return logits (B, h, w, num_classes={num_classes}), got shape "
                f"{logits.shape}."
            )
        label_size = tuple(y.shape[1:3])
        if output_size is not None:
            if label_size != output_size:
                raise ValueError(
                    f"With `output_size`={output_size} the labels must be at that size, got "
                    f"labels of shape {y.shape}."
                )
            logits = tf.image.resize(logits, output_size, method="bilinear")
        elif tuple(logits.shape[1:3]) != label_size:
            raise ValueError(
                f"`model` returns logits of spatial size {tuple(logits.shape[1:3])} but the "
                f"labels are {label_size}; pass `output_size`={label_size} to upsample the "
                "logits to the labels."
            )
        labels, preds = _flat_pairs(y, logits, num_classes, ignore_label, weight)
        total += _confusion(labels, preds, num_classes).numpy()
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
    """A Markdown table of `segmentation_scores` / `evaluate_segmentation` output.

    One row per class (name, IoU %, accuracy %; "–" for a class absent from the split),
    then mIoU, pixel accuracy and mean class accuracy.

    # Arguments
        scores: the dict returned by `segmentation_scores` or `evaluate_segmentation`.
        digits: decimals of the percentages.

    # Returns
        The table as a string (lines joined by newlines).

    # Raises
        ValueError: if `scores` lacks a key the table needs or `digits` is not an integer
            >= 0.
    """
    digits = check_int("digits", digits, 0)
    keys = ("class_names", "per_class_iou", "per_class_accuracy", "miou", "pixel_accuracy",
            "mean_class_accuracy")
    if not isinstance(scores, dict) or any(k not in scores for k in keys):
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
