"""Batch-norm statistics re-estimated for the current weights (`pabt_tf.batch_norm`)."""

import numpy as np
import pytest
import tensorflow as tf

from pabt_tf.batch_norm import (
    BatchNormRecalibration,
    batch_norm_layers,
    constant_channels,
    fold_constant_channels,
    recalibrate_batch_norm,
)
from pabt_tf.run import train as run_train


def _model():
    inputs = tf.keras.Input((4, 4, 2))
    x = tf.keras.layers.Conv2D(3, 1, use_bias=False, kernel_initializer="ones")(inputs)
    x = tf.keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)(x)
    inner = tf.keras.Sequential([tf.keras.layers.BatchNormalization(momentum=0.99)])  # nested
    outputs = inner(tf.keras.layers.GlobalAveragePooling2D()(x))
    return tf.keras.Model(inputs, outputs)


def test_recalibration_is_the_running_mean_of_batch_statistics_by_hand():
    model = _model()
    bn = batch_norm_layers(model)
    assert len(bn) == 2  # the nested one is found
    bn[0].moving_mean.assign([50.0, 50.0, 50.0])  # stale statistics of other weights
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=i, size=(5, 4, 4, 2)).astype(np.float32) for i in range(3)]
    ds = tf.data.Dataset.from_tensor_slices((np.concatenate(batches), np.zeros(15))).batch(5)
    assert recalibrate_batch_norm(model, ds, batches=10) == 3  # the data set had 3
    # The conv sums the two channels: its per-batch mean, averaged over the 3 batches.
    conv = [b.sum(-1) for b in batches]
    np.testing.assert_allclose(bn[0].moving_mean.numpy(), np.mean([c.mean() for c in conv]) * np.ones(3),
                               rtol=1e-5)
    # Keras' batch variance (biased or not), averaged the same way: close to the pooled one.
    np.testing.assert_allclose(bn[0].moving_variance.numpy(), np.mean([c.var() for c in conv]), rtol=0.05)
    assert bn[0].momentum == 0.9 and bn[1].momentum == 0.99  # restored
    with pytest.raises(ValueError, match="batches"):
        recalibrate_batch_norm(model, ds, batches=0)
    with pytest.raises(ValueError, match="empty"):
        recalibrate_batch_norm(model, ds.take(0), batches=2)


def test_callback_recalibrates_before_each_validation_of_fit():
    model = _model()
    model.compile("sgd", "mse")
    x = np.random.default_rng(1).normal(size=(20, 4, 4, 2)).astype(np.float32)
    y = np.zeros((20, 3), np.float32)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    callback = BatchNormRecalibration(train, batches=4)
    model.fit(train, validation_data=train, epochs=2, verbose=0, callbacks=[callback])
    assert callback.calls == 2  # one per validation; none more at the end (nothing changed)
    # The statistics are those of the final weights: re-estimating again changes nothing.
    before = [v.numpy() for v in (batch_norm_layers(model)[0].moving_mean,)]
    recalibrate_batch_norm(model, train, 4)
    np.testing.assert_allclose(batch_norm_layers(model)[0].moving_mean.numpy(), before[0], rtol=1e-5)


def test_run_refuses_a_bad_recalibration_count_naming_it(tmp_path):
    with pytest.raises(ValueError, match="bn_recalibration_batches"):
        run_train.train(dict(bn_recalibration_batches=-2, output_dir=str(tmp_path / "r")))
    assert not (tmp_path / "r").exists()


def _dead_channel_model():
    """Channel 1 of the conv's output is constant: its kernel reads input channel 1 only,
    which the data holds at 3.0; channels 0 and 2 vary. A `scale=False` batch norm after."""
    inputs = tf.keras.Input((5, 5, 2))
    conv = tf.keras.layers.Conv2D(3, 1, use_bias=False, name="conv")
    bn = tf.keras.layers.BatchNormalization(name="bn", epsilon=1e-3)
    x = bn(conv(inputs))
    y = tf.keras.layers.BatchNormalization(scale=False, name="bn_noscale")(x)
    model = tf.keras.Model(inputs, [x, y])
    conv.set_weights([np.array([[[[1.0, 0.0, 2.0], [0.5, 2.0, -1.0]]]], np.float32)])
    conv.kernel[0, 0, 0, 1].assign(0.0)
    # Statistics of the constant channel as re-estimation leaves them: variance ~0,
    # a mean one rounding step off, and a large multiplier.
    bn.set_weights([np.array([1.0, 1.8, 1.0], np.float32), np.array([0.1, -2e-4, 0.2], np.float32),
                    np.array([0.0, np.nextafter(np.float32(6.0), np.float32(7)), 1.0], np.float32),
                    np.array([1.0, 9e-10, 2.0], np.float32)])
    return model


def _dead_data(n=12):
    x = np.random.default_rng(0).normal(size=(n, 5, 5, 2)).astype(np.float32)
    x[..., 1] = 3.0
    return tf.data.Dataset.from_tensor_slices((x, np.zeros(n))).batch(4), x


def test_constant_channels_are_found_exactly_and_folded_into_their_output():
    model = _dead_channel_model()
    ds, x = _dead_data()
    found = constant_channels(model, ds, batches=3)
    # Channel 1 (6.0 = 2 * 3.0) in both batch norms, nothing else.
    assert set(found) == {"bn", "bn_noscale"}
    np.testing.assert_array_equal(found["bn"][0], [1])
    np.testing.assert_allclose(found["bn"][1], [6.0])
    assert "call" not in vars(model.get_layer("bn"))  # the class's call again
    before = [t.numpy() for t in model(x, training=False)]
    with pytest.warns(UserWarning, match="bn_noscale.*scale=False or center=False"):
        folded = fold_constant_channels(model, ds, batches=3)
    assert folded == {"bn": [1]}
    gamma, beta = model.get_layer("bn").get_weights()[:2]
    assert gamma[1] == 0.0 and gamma[0] == 1.0 and gamma[2] == 1.0  # only the dead one
    # Its output is what Keras gave for the constant, now exactly beta for any input.
    after = [t.numpy() for t in model(x, training=False)]
    np.testing.assert_allclose(after[0], before[0], atol=1e-6)
    np.testing.assert_array_equal(after[0][..., 1], beta[1])
    other = x.copy()
    other[..., 1] = -5.0  # the channel would vary: after the fold it cannot
    np.testing.assert_array_equal(model(other, training=False)[0].numpy()[..., 1], beta[1])
    with pytest.raises(ValueError, match="batches"):
        constant_channels(model, ds, batches=0)
    with pytest.raises(ValueError, match="empty"):
        fold_constant_channels(model, ds.take(0), batches=1)
    assert "call" not in vars(model.get_layer("bn"))


def test_binary_resnet_stems_end_without_relu_so_the_first_sign_is_not_constant():
    """A ReLU before the first sign made it +1 everywhere: every channel of the first
    binary convolution was constant (a CamVid BNN). Binary stems end at BN + max-pool."""
    from pabt_tf import models

    x = np.random.default_rng(0).normal(size=(4, 64, 64, 3)).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(4)
    for method in ("bnn_bireal", "pabt"):
        tf.keras.backend.clear_session()
        model = models.segmentation_resnet18(method, input_shape=(64, 64, 3), width=8,
                                             decoder_filters=8, num_classes=3)
        assert "stem_relu" not in [layer.name for layer in model.layers]
        assert "s0b0c0_bn" not in constant_channels(model, ds, batches=1), method
    tf.keras.backend.clear_session()
    float_net = models.segmentation_resnet18("float", input_shape=(64, 64, 3), width=8,
                                             decoder_filters=8, num_classes=3)
    assert "stem_relu" in [layer.name for layer in float_net.layers]
