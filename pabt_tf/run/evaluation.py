"""How a training run is measured: its loss and metrics, top-1 accuracy outside `fit`, and
its conversion to a verified LCE flatbuffer (accuracy of the flatbuffer included)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf

from pabt_tf import metrics
from pabt_tf.data import Datasets
from pabt_tf.losses import SegmentationCrossentropy

__all__ = [
    "accuracy",
    "loss_for",
    "metrics_for",
    "segmentation_results",
    "flatbuffer_accuracy",
    "convert_run",
    "conversion_failed",
    "CONVERSION_KEYS",
]


def accuracy(model: tf.keras.Model, dataset: tf.data.Dataset, ignore_label: int | None = None) -> float:
    """Top-1 accuracy of `model` (inference mode) on a batched `(x, y)` dataset, computed
    without touching the model's compiled metrics (safe inside `fit`); for segmentation,
    over the pixels whose label is not `ignore_label`."""
    correct = total = 0
    for x, y in dataset:
        pred = tf.argmax(model(x, training=False), axis=-1, output_type=tf.int32)
        y = tf.cast(y, tf.int32)
        valid = tf.ones_like(y, tf.bool) if ignore_label is None else tf.not_equal(y, ignore_label)
        correct += int(tf.reduce_sum(tf.cast(tf.equal(pred, y) & valid, tf.int32)))
        total += int(tf.reduce_sum(tf.cast(valid, tf.int32)))
    return correct / max(total, 1)


def loss_for(ds: Datasets):
    """The run's loss, from what the data set says it is: sparse cross-entropy on logits
    (segmentation: per pixel, without its ignore label, weighted by its class weights)."""
    if ds.task == "segmentation":
        return SegmentationCrossentropy(ds.class_weights, ds.ignore_label)
    return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def metrics_for(ds: Datasets) -> list:
    """The run's metrics: accuracy (segmentation: pixel accuracy as "accuracy", and mean
    IoU from a confusion matrix accumulated over the whole split)."""
    if ds.task == "segmentation":
        return [
            metrics.PixelAccuracy(ds.num_classes, ds.ignore_label, name="accuracy"),
            metrics.MeanIoU(ds.num_classes, ds.ignore_label, name="mean_iou"),
        ]
    return ["accuracy"]


def segmentation_results(model: tf.keras.Model, ds: Datasets) -> dict[str, Any]:
    """The benchmark's numbers of a segmentation run: on the test split at the model's
    resolution, and (when the data set has it) with logits upsampled bilinearly to the
    original resolution of the test labels (`test_full`), the table's figure."""
    out: dict[str, Any] = {}
    at_model = metrics.evaluate_segmentation(model, ds.test, ds.num_classes, ds.ignore_label,
                                             class_names=list(ds.classes) or None)
    out["test_segmentation"] = at_model
    out["test_miou_at_input"] = at_model["miou"]
    if ds.test_full is not None:
        full = metrics.evaluate_segmentation(model, ds.test_full, ds.num_classes, ds.ignore_label,
                                             output_size=ds.full_size, class_names=list(ds.classes) or None)
        out["test_segmentation_full"] = full
        out["test_miou"] = full["miou"]
        out["miou_resolution"] = list(ds.full_size)
    else:
        out["test_miou"] = at_model["miou"]
        out["miou_resolution"] = list(ds.input_shape[:2])
    return out


def _verification_data(ds: tf.data.Dataset, n: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(x.numpy(), y.numpy()) for x, y in ds.unbatch().take(n)]
    return np.stack([p[0] for p in pairs]).astype(np.float32), np.stack([p[1] for p in pairs])


def flatbuffer_accuracy(flatbuffer: bytes, images: np.ndarray, labels: np.ndarray,
                        ignore_label: int | None = None) -> float:
    """Top-1 accuracy of the flatbuffer run by LCE's interpreter (segmentation: per pixel,
    over the pixels whose label is not `ignore_label`)."""
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    from pabt_tf.export import default_indirect_bgemm

    interpreter = Interpreter(flatbuffer, num_threads=1, use_indirect_bgemm=default_indirect_bgemm())
    out = np.asarray(interpreter.predict(images))
    pred = out.argmax(-1).reshape(-1)  # the class axis is the last one
    labels = np.asarray(labels).reshape(-1)
    valid = np.ones_like(labels, bool) if ignore_label is None else labels != ignore_label
    return float(np.mean(pred[valid] == labels[valid])) if valid.any() else float("nan")


# Per-pixel argmax agreement a segmentation flatbuffer must reach (a classifier: 99 %).
SEGMENTATION_MIN_AGREEMENT = 0.995


def _convert(model, method: str, inputs: np.ndarray | None, min_top1: float = 0.99) -> dict[str, Any]:
    """Flatbuffer + operator counts + LCE-vs-Keras verification (none without inputs)."""
    from pabt_tf import export

    if method in ("pabt", "abc"):
        report = export.convert_with_report(model, inputs, strict=False, min_top1=min_top1)
        flatbuffer, verification = report.flatbuffer, report.verification
        info = {
            "op_counts": report.op_counts,
            "expected_bconvs": report.expected_bconvs,
            "found_bconvs": report.found_bconvs,
            "problems": report.problems,
        }
    else:  # Larq / Keras models: LCE directly
        import larq_compute_engine as lce

        flatbuffer = lce.convert_keras_model(model)
        verification = None if inputs is None else export.verify(model, flatbuffer, inputs, min_top1=min_top1)
        counts = export.operator_counts(flatbuffer)
        info = {"op_counts": counts, "found_bconvs": int(counts.get("LceBconv2d", 0))}
    info["flatbuffer"] = flatbuffer
    info["verification"] = None if verification is None else verification.as_dict()
    return info


# The entries of a run's results that describe its model.tflite (replaced together).
CONVERSION_KEYS = (
    "op_counts", "expected_bconvs", "found_bconvs", "problems", "verification",
    "verification_recheck", "flatbuffer_accuracy", "keras_accuracy_on_verify_samples",
    "verify_samples", "tflite", "flatbuffer_bytes",
)  # fmt: skip


def convert_run(model, config: dict[str, Any], test: tf.data.Dataset, out: str,
                ignore_label: int | None = None) -> dict[str, Any]:
    """Convert and verify a trained run's model; write `out/model.tflite` atomically.

    `config["verify_samples"]` test examples verify the flatbuffer against Keras; 0
    converts without verifying (`"verification": None`).

    # Returns
        The results' conversion entries (`CONVERSION_KEYS`: operator counts,
        verification, flatbuffer size and accuracy), or `{"convert_error": ...}`: a
        failed conversion is reported in the run's results, it does not lose the trained
        run. A failed write (disk full, file-size limit) leaves an earlier
        `model.tflite` as it was.
    """
    from pabt_tf._atomic import write_atomically

    try:
        n = config["verify_samples"]
        inputs, labels = _verification_data(test, n) if n else (None, None)
        dense = labels is not None and np.ndim(labels) > 1  # a label per pixel: segmentation
        info = _convert(model, config["method"], inputs, SEGMENTATION_MIN_AGREEMENT if dense else 0.99)
        if inputs is not None:
            info["flatbuffer_accuracy"] = flatbuffer_accuracy(info["flatbuffer"], inputs, labels, ignore_label)
            info["keras_accuracy_on_verify_samples"] = accuracy(
                model, tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(8), ignore_label)
        info["verify_samples"] = 0 if inputs is None else len(inputs)
        path = os.path.join(out, "model.tflite")
        flatbuffer = info.pop("flatbuffer")
        write_atomically(path, flatbuffer)
        info["tflite"] = path
        info["flatbuffer_bytes"] = len(flatbuffer)
        return info
    except Exception as err:
        return {"convert_error": f"{type(err).__name__}: {err}"}


def conversion_failed(results: dict[str, Any]) -> str | None:
    """Why a run's conversion failed, or None: an error, a binary convolution that is
    not an `LceBconv2d`, or a verification that failed (none asked for is no failure)."""
    if results.get("convert_error"):
        return f"conversion failed: {results['convert_error']}"
    if results.get("problems"):
        return "conversion check failed: " + "; ".join(map(str, results["problems"]))
    verification = results.get("verification")
    if verification is not None and not verification.get("ok", False):
        return (f"LCE vs Keras verification failed: max |diff| "
                f"{verification.get('max_abs_diff')}, top-1 agreement "
                f"{verification.get('top1_agreement')}")
    return None
