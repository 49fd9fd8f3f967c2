"""How a training run is measured: its loss and metrics, top-1 accuracy outside `fit`, and
its conversion to a verified LCE flatbuffer (accuracy of the flatbuffer included)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf

from pabt_tf.data import CITYSCAPES_IGNORE_LABEL as IGNORE

__all__ = [
    "accuracy",
    "loss_for",
    "metrics_for",
    "PixelAccuracy",
    "flatbuffer_accuracy",
    "convert_run",
    "conversion_failed",
    "CONVERSION_KEYS",
]


def accuracy(model: tf.keras.Model, dataset: tf.data.Dataset) -> float:
    """Top-1 accuracy of `model` (inference mode) on a batched `(x, y)` dataset, computed
    without touching the model's compiled metrics (safe inside `fit`)."""
    correct = total = 0
    for x, y in dataset:
        pred = tf.argmax(model(x, training=False), axis=-1, output_type=tf.int32)
        y = tf.cast(y, tf.int32)
        valid = tf.not_equal(y, IGNORE)  # segmentation's ignore label
        correct += int(tf.reduce_sum(tf.cast(tf.equal(pred, y) & valid, tf.int32)))
        total += int(tf.reduce_sum(tf.cast(valid, tf.int32)))
    return correct / max(total, 1)


def loss_for(config: dict):
    """The run's loss: sparse cross-entropy on logits (Cityscapes: without its ignore label)."""
    if config["dataset"] == "cityscapes":
        return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE)
    return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def metrics_for(config: dict, num_classes: int) -> list:
    """The run's metrics: accuracy (Cityscapes: pixel accuracy and mean IoU)."""
    if config["dataset"] == "cityscapes":
        # Pixel accuracy and mean IoU over the labelled pixels (IGNORE = unlabelled).
        return [
            PixelAccuracy(name="accuracy"),
            tf.keras.metrics.MeanIoU(num_classes, name="mean_iou", sparse_y_pred=False, ignore_class=IGNORE),
        ]
    return ["accuracy"]


class PixelAccuracy(tf.keras.metrics.Mean):
    """Top-1 accuracy over the pixels whose label is not Cityscapes' ignore label."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.int32)
        if y_true.shape.rank == y_pred.shape.rank:
            y_true = tf.squeeze(y_true, -1)
        pred = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
        valid = tf.cast(tf.not_equal(y_true, IGNORE), tf.float32)
        correct = tf.cast(tf.equal(pred, y_true), tf.float32)
        return super().update_state(correct, sample_weight=valid)


def _verification_data(ds: tf.data.Dataset, n: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(x.numpy(), y.numpy()) for x, y in ds.unbatch().take(n)]
    return np.stack([p[0] for p in pairs]).astype(np.float32), np.stack([p[1] for p in pairs])


def flatbuffer_accuracy(flatbuffer: bytes, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of the flatbuffer run by LCE's interpreter."""
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    from pabt_tf.export import default_indirect_bgemm

    interpreter = Interpreter(flatbuffer, num_threads=1, use_indirect_bgemm=default_indirect_bgemm())
    out = np.asarray(interpreter.predict(images))
    return float(np.mean(out.reshape(len(images), -1).argmax(-1) == labels.reshape(len(images))))


def _convert(model, method: str, inputs: np.ndarray | None) -> dict[str, Any]:
    """Flatbuffer + operator counts + LCE-vs-Keras verification (none without inputs)."""
    from pabt_tf import export

    if method in ("pabt", "abc"):
        report = export.convert_with_report(model, inputs, strict=False)
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
        verification = None if inputs is None else export.verify(model, flatbuffer, inputs)
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


def convert_run(model, config: dict[str, Any], test: tf.data.Dataset, out: str) -> dict[str, Any]:
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
        info = _convert(model, config["method"], inputs)
        classification = config["dataset"] != "cityscapes"
        if inputs is not None and classification:
            info["flatbuffer_accuracy"] = flatbuffer_accuracy(info["flatbuffer"], inputs, labels)
            info["keras_accuracy_on_verify_samples"] = accuracy(
                model, tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(64))
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
