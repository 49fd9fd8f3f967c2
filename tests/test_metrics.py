"""pabt_tf.metrics: confusion matrix, segmentation scores, Keras metrics, standalone
evaluation — against confusion matrices computed by hand."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import pabt_tf as pabt
from pabt_tf import metrics

IGNORE = 255
# Two batches of one 2x3 image each, 3 classes. The ignored pixels are predicted 2 and 1:
# counting them would change the matrix. Class 2 is absent from batch 1 (truth and
# prediction) but present in batch 2.
T1 = np.array([[[0, 0, 1], [1, IGNORE, 0]]])
P1 = np.array([[[0, 1, 1], [1, 2, 0]]])
T2 = np.array([[[2, 2, 0], [1, 2, IGNORE]]])
P2 = np.array([[[2, 0, 0], [2, 2, 1]]])
# By hand, rows = truth, columns = prediction.
CM1 = np.array([[2, 1, 0],
                [0, 2, 0],
                [0, 0, 0]])
CM2 = np.array([[1, 0, 0],
                [0, 0, 1],
                [1, 0, 2]])
CM = np.array([[3, 1, 0],
               [0, 2, 1],
               [1, 0, 2]])
# IoU = tp / (row + column - tp): 3/5, 2/4, 2/4; accuracy = tp / row: 3/4, 2/3, 2/3.
MIOU = (0.6 + 0.5 + 0.5) / 3
PIXEL_ACC = 7 / 10
MEAN_CLASS_ACC = (3 / 4 + 2 / 3 + 2 / 3) / 3


def logits(ids, num_classes=3):
    """Logits whose argmax is `ids` (not one-hot: every class gets a distinct value)."""
    noise = np.linspace(0.0, 0.3, num_classes, dtype=np.float32)
    return (np.eye(num_classes, dtype=np.float32)[ids] * 2.0 - 1.0 + noise).astype(np.float32)


def test_confusion_matrix_by_hand_drops_ignored_pixels():
    np.testing.assert_array_equal(metrics.confusion_matrix(T1, P1, 3, IGNORE), CM1)
    np.testing.assert_array_equal(metrics.confusion_matrix(T2, P2, 3, IGNORE), CM2)
    # Logits (argmax taken), labels with a trailing axis of 1, a batch of both images.
    both_t = np.concatenate([T1, T2])[..., None]
    both_p = logits(np.concatenate([P1, P2]))
    cm = metrics.confusion_matrix(both_t, both_p, 3, IGNORE)
    assert cm.dtype == tf.int64 and cm.shape == (3, 3)
    np.testing.assert_array_equal(cm, CM)


def test_scores_by_hand():
    s = metrics.segmentation_scores(CM, ["road", "sky", "car"])
    assert s["miou"] == pytest.approx(MIOU, abs=1e-12)
    np.testing.assert_allclose(s["per_class_iou"], [0.6, 0.5, 0.5], atol=1e-12)
    assert s["pixel_accuracy"] == pytest.approx(PIXEL_ACC, abs=1e-12)
    assert s["mean_class_accuracy"] == pytest.approx(MEAN_CLASS_ACC, abs=1e-12)
    np.testing.assert_allclose(s["per_class_accuracy"], [3 / 4, 2 / 3, 2 / 3], atol=1e-12)
    assert s["class_names"] == ["road", "sky", "car"]
    assert s["present"] == [True, True, True] and s["pixels"] == 10
    assert json.loads(json.dumps(s, allow_nan=False)) == s


def test_whole_split_matrix_differs_from_per_batch_average():
    # Per batch: batch 1 has mIoU (2/3 + 2/3)/2 (class 2 absent), batch 2 (1/2 + 0 + 1/2)/3.
    per_batch = [metrics.segmentation_scores(cm)["miou"] for cm in (CM1, CM2)]
    np.testing.assert_allclose(per_batch, [2 / 3, 1 / 3], atol=1e-12)
    assert np.mean(per_batch) == pytest.approx(0.5)
    metric = pabt.metrics.MeanIoU(3, ignore_label=IGNORE)
    for t, p in ((T1, P1), (T2, P2)):
        metric.update_state(t, logits(p))
    assert float(metric.result()) == pytest.approx(MIOU, abs=1e-6)
    assert abs(float(metric.result()) - np.mean(per_batch)) > 0.03
    np.testing.assert_array_equal(metric.confusion.numpy(), CM)
    assert metric.scores()["mean_class_accuracy"] == pytest.approx(MEAN_CLASS_ACC)


def test_class_absent_from_the_split_is_nan_and_excluded():
    # 4 classes: class 3 never occurs (truth or prediction) in the split.
    cm4 = metrics.confusion_matrix(np.concatenate([T1, T2]), np.concatenate([P1, P2]), 4, IGNORE)
    np.testing.assert_array_equal(cm4, np.pad(CM, ((0, 1), (0, 1))))
    s = metrics.segmentation_scores(cm4)
    assert s["per_class_iou"][3] is None and s["per_class_accuracy"][3] is None
    assert s["present"] == [True, True, True, False]
    assert s["miou"] == pytest.approx(MIOU) and s["mean_class_accuracy"] == pytest.approx(MEAN_CLASS_ACC)
    assert "null" in json.dumps(s, allow_nan=False)
    for cls, key in ((pabt.metrics.MeanIoU, "miou"), (pabt.metrics.MeanClassAccuracy, "mean_class_accuracy"),
                     (pabt.metrics.PixelAccuracy, "pixel_accuracy")):
        m = cls(4, ignore_label=IGNORE)
        m.update_state(T1, logits(P1, 4))
        m.update_state(T2, logits(P2, 4))
        assert float(m.result()) == pytest.approx(s[key], abs=1e-6)
    # A class only predicted (union 1, truth 0) has IoU 0 and counts in the mIoU, but not
    # in the mean class accuracy; class 2 is absent. By hand: IoU 1/2, 1, NaN, 0.
    s = metrics.segmentation_scores(metrics.confusion_matrix([0, 0, 1], [0, 3, 1], 4))
    assert s["per_class_iou"] == [0.5, 1.0, None, 0.0]
    assert s["miou"] == pytest.approx(0.5)
    assert s["per_class_accuracy"] == [0.5, 1.0, None, None]
    assert s["mean_class_accuracy"] == pytest.approx(0.75)
    assert s["present"] == [True, True, False, True]
    # No pixel at all: nothing to average.
    empty = metrics.segmentation_scores(np.zeros((2, 2), np.int64))
    assert empty["miou"] is None and empty["pixel_accuracy"] is None and empty["pixels"] == 0
    assert math.isnan(float(pabt.metrics.MeanIoU(2).result()))


def test_labels_outside_range_are_errors():
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"outside \[0, 3\) and not the ignore label 255"):
        metrics.confusion_matrix([[0, 3]], [[0, 1]], 3, IGNORE)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels outside \[0, 3\)"):
        metrics.confusion_matrix([[0, -1]], [[0, 1]], 3)
    # Without an ignore label, 255 is a bad label, not silently dropped.
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels outside \[0, 3\)"):
        metrics.confusion_matrix(T1, P1, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`y_pred` holds class ids outside"):
        metrics.confusion_matrix([0, 1], [0, 5], 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-integer labels"):
        metrics.confusion_matrix(np.array([0.0, 1.5]), logits(np.array([0, 1])), 3)
    metric = pabt.metrics.MeanIoU(3, ignore_label=IGNORE)
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside"):
        metric.update_state(np.array([[[0, 7]]]), logits(np.array([[[0, 1]]])))
    np.testing.assert_array_equal(metric.confusion.numpy(), np.zeros((3, 3)))


def test_bad_arguments_raise_value_errors_naming_them():
    for bad in (0, 2.0, True, "3"):
        with pytest.raises(ValueError, match="`num_classes`"):
            metrics.confusion_matrix(T1, P1, bad, IGNORE)
        with pytest.raises(ValueError, match="`num_classes`"):
            pabt.metrics.MeanIoU(bad)
    for bad in (0, 2, 1.5, True):
        with pytest.raises(ValueError, match="`ignore_label`"):
            metrics.confusion_matrix(T1, P1, 3, bad)
        with pytest.raises(ValueError, match="`ignore_label`"):
            pabt.metrics.PixelAccuracy(3, ignore_label=bad)
    with pytest.raises(ValueError, match="`y_true` must have shape"):
        metrics.confusion_matrix(np.zeros((2, 3), int), np.zeros((2, 4), int), 3)
    with pytest.raises(ValueError, match="`y_true` must have shape"):
        metrics.confusion_matrix(np.zeros((1, 2, 3), int), logits(np.zeros((1, 2, 4), int)), 3)
    with pytest.raises(ValueError, match="trailing class axis of size num_classes=3"):
        metrics.confusion_matrix(np.zeros((1, 2, 3), int), np.zeros((1, 2, 3, 4), np.float32), 3)
    with pytest.raises(ValueError, match="`class_names`"):
        metrics.segmentation_scores(CM, ["a", "b"])
    for bad in (np.zeros((2, 3)), np.array([[1, -1], [0, 0]]), np.array([[1.5, 0], [0, 0]])):
        with pytest.raises(ValueError, match="`confusion`"):
            metrics.segmentation_scores(bad)
    with pytest.raises(ValueError, match="`digits`"):
        metrics.per_class_table(metrics.segmentation_scores(CM), digits=-1)
    with pytest.raises(ValueError, match="`scores`"):
        metrics.per_class_table({"miou": 0.5})
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((2, 2, 3, 3), np.float32), np.concatenate([T1, T2])))
    with pytest.raises(ValueError, match="`output_size`"):
        metrics.evaluate_segmentation(lambda x: x, ds.batch(2), 3, IGNORE, output_size=(2, 0))
    with pytest.raises(ValueError, match="`dataset` yielded no batches"):
        metrics.evaluate_segmentation(lambda x: x, ds.take(0).batch(2), 3, IGNORE)
    with pytest.raises(ValueError, match="`model` must return logits"):
        metrics.evaluate_segmentation(lambda x: x[..., :2], ds.batch(2), 3, IGNORE)


def test_sample_weight_is_a_pixel_mask():
    metric = pabt.metrics.PixelAccuracy(3, ignore_label=IGNORE)
    both_t, both_p = np.concatenate([T1, T2]), logits(np.concatenate([P1, P2]))
    # Weight 0 drops the two wrong pixels of image 1 (positions (0,1)) and image 2
    # ((0,1)); weights 2.5 and 1 both count once.
    weight = np.full(both_t.shape, 2.5, np.float32)
    weight[:, 0, 1] = 0.0
    weight[1, 1, 0] = 1.0
    metric.update_state(both_t, both_p, sample_weight=weight)
    expected = CM - np.array([[0, 1, 0], [0, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(metric.confusion.numpy(), expected)
    assert float(metric.result()) == pytest.approx(7 / 8)


def tiny_segmentation_data(n=6, size=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size, 3)).astype(np.float32)
    # Labels follow the input (class of the largest channel) so training learns them;
    # 10 % of the pixels are unlabelled.
    y = np.argmax(x + rng.normal(scale=0.7, size=x.shape), axis=-1).astype(np.int32)
    y[rng.random(y.shape) < 0.1] = IGNORE
    return x, y


def compiled_tiny_model(learning_rate):
    inputs = tf.keras.Input((8, 8, 3))
    model = tf.keras.Model(inputs, tf.keras.layers.Conv2D(3, 1)(inputs))
    model.compile(
        tf.keras.optimizers.Adam(learning_rate),
        tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE),
        metrics=[pabt.metrics.MeanIoU(3, IGNORE), pabt.metrics.PixelAccuracy(3, IGNORE),
                 pabt.metrics.MeanClassAccuracy(3, IGNORE)],
    )
    return model


KEYS = {"mean_iou": "miou", "pixel_accuracy": "pixel_accuracy",
        "mean_class_accuracy": "mean_class_accuracy"}


def test_keras_metrics_in_fit_and_evaluate_equal_evaluate_segmentation():
    x, y = tiny_segmentation_data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    # Learning rate 0: the weights stay put, so the epoch's training metrics (three
    # batches) must equal the whole-split scores of the same model.
    model = compiled_tiny_model(0.0)
    history = model.fit(ds, epochs=1, verbose=0)
    before = metrics.evaluate_segmentation(model, ds, 3, IGNORE)
    for key, score in KEYS.items():
        assert history.history[key][0] == pytest.approx(before[score], abs=1e-6), key
    # Real training, then evaluate (labels (B, H, W) and (B, H, W, 1)).
    model.optimizer.learning_rate.assign(0.1)
    model.fit(ds, epochs=5, verbose=0)
    after = metrics.evaluate_segmentation(model, ds, 3, IGNORE, class_names=["r", "g", "b"])
    assert after["miou"] > before["miou"] + 0.05  # it learned something: the scores move
    assert after["pixels"] == int(np.sum(y != IGNORE))
    assert np.sum(after["confusion"]) == after["pixels"]
    ds_eval = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    result = model.evaluate(ds_eval, verbose=0, return_dict=True)
    for key, score in KEYS.items():
        assert result[key] == pytest.approx(after[score], abs=1e-6), key
    # evaluate() reset the metrics before accumulating: a second call gives the same.
    again = model.evaluate(ds_eval, verbose=0, return_dict=True)
    assert again["mean_iou"] == pytest.approx(after["miou"], abs=1e-6)
    # Labels (B, H, W, 1) in a graph with an unknown batch size. (Not through evaluate:
    # Keras' own SparseCategoricalCrossentropy(ignore_class=...) fails on such labels.)
    metric = pabt.metrics.MeanIoU(3, IGNORE)

    @tf.function(input_signature=[tf.TensorSpec((None, 8, 8, 1), tf.int32),
                                  tf.TensorSpec((None, 8, 8, 3), tf.float32)])
    def update(labels, predictions):
        metric.update_state(labels, predictions)

    for batch in range(3):
        update(y[2 * batch:2 * batch + 2, ..., None], model(x[2 * batch:2 * batch + 2]))
    np.testing.assert_array_equal(metric.confusion.numpy(), after["confusion"])
    assert float(metric.result()) == pytest.approx(after["miou"], abs=1e-6)


def test_keras_metrics_under_jit_compile_count_bad_labels():
    x, y = tiny_segmentation_data(n=4)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    model = compiled_tiny_model(0.0)
    model.compile(model.optimizer, model.loss, metrics=[pabt.metrics.MeanIoU(3, IGNORE)],
                  jit_compile=True)
    history = model.fit(ds, epochs=1, verbose=0).history
    assert history["mean_iou"][0] == pytest.approx(
        metrics.evaluate_segmentation(model, ds, 3, IGNORE)["miou"], abs=1e-6)
    # XLA drops asserts: a label 7 (3 classes, ignore 255) must not vanish silently.
    bad = y.copy()
    bad[0, 0, :3] = 7
    history = model.fit(x, bad, batch_size=2, epochs=1, verbose=0).history
    assert math.isnan(history["mean_iou"][0])
    metric = model.compiled_metrics._user_metrics[0]
    assert int(metric.bad_pixels.numpy()) == 3
    with pytest.raises(ValueError, match="3 pixels had a label or class id outside"):
        metric.scores()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"outside \[0, 3\)"):
        metrics.evaluate_segmentation(model, tf.data.Dataset.from_tensor_slices((x, bad)).batch(2),
                                      3, IGNORE)


def test_get_config_round_trip_and_saved_model(tmp_path):
    for cls, name in ((pabt.metrics.MeanIoU, "mean_iou"), (pabt.metrics.PixelAccuracy, "pixel_accuracy"),
                      (pabt.metrics.MeanClassAccuracy, "mean_class_accuracy")):
        m = cls(5, ignore_label=IGNORE)
        config = m.get_config()
        assert config["num_classes"] == 5 and config["ignore_label"] == IGNORE and config["name"] == name
        assert cls.from_config(config).get_config() == config
        restored = tf.keras.metrics.deserialize(tf.keras.metrics.serialize(m))
        assert type(restored) is cls and restored.get_config() == config
    custom = pabt.metrics.MeanIoU(4, name="val_miou")
    assert pabt.metrics.MeanIoU.from_config(custom.get_config()).name == "val_miou"
    assert pabt.metrics.MeanIoU.from_config(custom.get_config()).ignore_label is None
    # State: non-trainable int64 weights; reset_state zeroes them.
    assert [w.dtype for w in custom.weights] == [tf.int64] * 2 and not custom.trainable_weights
    custom.update_state([0, 1, 2, 3], [0, 1, 2, 2])
    assert custom.confusion.numpy().sum() == 4
    custom.reset_state()
    np.testing.assert_array_equal(custom.confusion.numpy(), np.zeros((4, 4)))
    # A compiled model saved with the metrics loads without custom_objects.
    x, y = tiny_segmentation_data(n=4)
    model = compiled_tiny_model(0.01)
    path = str(tmp_path / "seg.keras")
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    assert {type(m).__name__ for m in loaded.compiled_metrics._user_metrics} == {
        "MeanIoU", "PixelAccuracy", "MeanClassAccuracy"}
    result = loaded.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    expected = metrics.evaluate_segmentation(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(2),
                                             3, IGNORE)
    assert result["mean_iou"] == pytest.approx(expected["miou"], abs=1e-6)


def test_output_size_upsamples_logits_bilinearly():
    # Logits 2x2, two classes; column 0 favours class 0 (1 vs 0), column 1 class 1 (0 vs 4).
    # Bilinear (half-pixel centres) to width 4: column 1 of the output is
    # 0.75*[1, 0] + 0.25*[0, 4] = [0.75, 1.0] -> class 1, so the rows read [0, 1, 1, 1]
    # (nearest would give [0, 0, 1, 1]).
    out = np.array([[[[1.0, 0.0], [0.0, 4.0]]] * 2], np.float32)  # (1, 2, 2, 2)
    labels = np.array([[[0, 0, 1, 1], [0, 0, 1, IGNORE]]])
    ds = tf.data.Dataset.from_tensors((np.zeros((1, 2, 2, 3), np.float32), labels))
    s = metrics.evaluate_segmentation(lambda x: out, ds, 2, IGNORE, output_size=(2, 4))
    assert s["confusion"] == [[2, 2], [0, 3]]  # by hand
    assert s["output_size"] == [2, 4] and s["ignore_label"] == IGNORE
    assert s["pixel_accuracy"] == pytest.approx(5 / 7)
    assert s["miou"] == pytest.approx((2 / 4 + 3 / 5) / 2)
    with pytest.raises(ValueError, match=r"pass `output_size`=\(2, 4\)"):
        metrics.evaluate_segmentation(lambda x: out, ds, 2, IGNORE)
    with pytest.raises(ValueError, match="the labels must be at that size"):
        metrics.evaluate_segmentation(lambda x: out, ds, 2, IGNORE, output_size=(4, 8))


def test_per_class_table():
    s = metrics.segmentation_scores(np.pad(CM, ((0, 1), (0, 1))), ["road", "sky", "car", "bike"])
    assert metrics.per_class_table(s, digits=1).splitlines() == [
        "| Class | IoU (%) | Accuracy (%) |",
        "|---|---:|---:|",
        "| road | 60.0 | 75.0 |",
        "| sky | 50.0 | 66.7 |",
        "| car | 50.0 | 66.7 |",
        "| bike | – | – |",
        "| **mIoU** | **53.3** | |",
        "| **Pixel accuracy** | | **70.0** |",
        "| **Mean class accuracy** | | **69.4** |",
    ]


MIRRORED = r"""
import json, sys
import numpy as np
import pabt_tf as pabt
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
from test_metrics import IGNORE, tiny_segmentation_data, compiled_tiny_model
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
x, y = tiny_segmentation_data(n=6)
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)  # batches of 4 and 2 over 2 replicas
with strategy.scope():
    tf.keras.utils.set_random_seed(0)
    model = compiled_tiny_model(0.0)
history = model.fit(ds, epochs=1, verbose=0).history
result = model.evaluate(ds, verbose=0, return_dict=True)
metric = [m for m in model.metrics if isinstance(m, pabt.metrics.MeanIoU)][0]
print(json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "fit": {k: v[0] for k, v in history.items()},
    "evaluate": result,
    "metric_pixels": metric.scores()["pixels"],
    "standalone": pabt.metrics.evaluate_segmentation(model, ds, 3, IGNORE),
}))
"""


def test_keras_metrics_under_mirrored_strategy_sum_over_replicas():
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", MIRRORED, here], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    standalone = out["standalone"]
    _, y = tiny_segmentation_data(n=6)
    # The replicas' matrices are summed: every non-ignored pixel counted once.
    assert out["metric_pixels"] == standalone["pixels"] == int(np.sum(y != IGNORE))
    for key, score in KEYS.items():
        assert out["evaluate"][key] == pytest.approx(standalone[score], abs=1e-6), key
        assert out["fit"][key] == pytest.approx(standalone[score], abs=1e-6), key
