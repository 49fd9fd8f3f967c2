"""Batch-norm statistics re-estimated for the current weights (`pabt_tf.batch_norm`)."""

import numpy as np
import pytest
import tensorflow as tf

from pabt_tf.batch_norm import BatchNormRecalibration, batch_norm_layers, recalibrate_batch_norm
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
