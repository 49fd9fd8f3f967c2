"""`experiments.common.at_input_size` and `experiments.frontier --input_size`: a fully
convolutional net trained on small images, deployed at another frame size with the same
weights (the CamVid frontier at 384×480 from nets trained at 192×256)."""

import os

import numpy as np
import pytest
import tensorflow as tf

import pabt_tf as pabt
from experiments import frontier
from experiments.common import at_input_size
from pabt_tf.export.flatbuffer import operator_counts
from pabt_tf.models import segmentation_resnet18


@pytest.fixture(scope="module")
def seg_model():
    tf.keras.utils.set_random_seed(0)
    model = segmentation_resnet18(input_shape=(64, 96, 3), num_classes=5, width=8, decoder_filters=8,
                                  weight_bases=2, activation_bases=2)  # fmt: skip
    x = np.random.RandomState(1).randn(8, 64, 96, 3).astype(np.float32)
    model(x, training=True)  # moving statistics away from their initial values
    layer = pabt.pabt_layers(model)[1]
    mask = layer.mask.numpy()
    mask.flat[0] = 0.0  # one pruned binary convolution must survive the rebuild
    layer.mask.assign(mask)
    return model


def test_same_size_rebuild_is_the_same_model(seg_model):
    x = np.random.RandomState(2).randn(2, 64, 96, 3).astype(np.float32)
    rebuilt = at_input_size(seg_model, (64, 96))
    assert type(rebuilt) is type(seg_model) is pabt.PaBTModel
    np.testing.assert_array_equal(rebuilt(x).numpy(), seg_model(x).numpy())
    assert pabt.mean_binary_convs(rebuilt) == pabt.mean_binary_convs(seg_model) < 4.0


def test_rebuilt_at_another_size_converts_and_verifies(seg_model):
    rebuilt = at_input_size(seg_model, (96, 128))
    assert rebuilt.output_shape == (None, 96, 128, 5)
    small, big = pabt.convert(seg_model), pabt.convert(rebuilt)
    assert operator_counts(big)["LceBconv2d"] == operator_counts(small)["LceBconv2d"] > 0
    x = np.random.RandomState(3).randn(4, 96, 128, 3).astype(np.float32)
    report = pabt.verify(rebuilt, big, x, min_top1=0.99)
    assert report.ok, report


def test_frontier_deploys_a_run_at_the_given_size(seg_model, tmp_path):
    seg_model.save(os.path.join(tmp_path, "model.keras"))
    flatbuffer = frontier.convert_run(str(tmp_path), (96, 128))
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    assert tuple(Interpreter(flatbuffer).input_shapes[0]) == (1, 96, 128, 3)
    assert frontier._input_size(["384", "480"]) == (384, 480)
    with pytest.raises(Exception, match="input_size"):
        frontier._input_size(["384"])


@pytest.mark.parametrize("size", [(96,), (0, 128), (96.0, 128), "96,128"])
def test_bad_size_is_a_clear_error(seg_model, size):
    with pytest.raises(ValueError, match="size"):
        at_input_size(seg_model, size)


def test_model_without_one_image_input_is_refused():
    a, b = tf.keras.Input((8, 8, 3)), tf.keras.Input((8, 8, 3))
    two = tf.keras.Model([a, b], tf.keras.layers.Add()([a, b]))
    with pytest.raises(ValueError, match="one input"):
        at_input_size(two, (16, 16))
    seq = tf.keras.Sequential([tf.keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="Functional"):
        at_input_size(seq, (16, 16))
    vec = tf.keras.Input((8,))
    with pytest.raises(ValueError, match="4-D"):
        at_input_size(tf.keras.Model(vec, tf.keras.layers.Dense(2)(vec)), (16, 16))
