"""Keras mixed precision (issue 8, defect 9): PaBT layers keep float32 weights and
compute in the policy's compute dtype, per layer or under a global policy, and a model
trained so round-trips through `.keras` in a fresh process."""

import os

import numpy as np
import pytest
import tensorflow as tf
from _training_utils import run_in_fresh_process, sparse_ce

import pabt_tf as pabt


@pytest.fixture()
def mixed_policy():
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    tf.keras.mixed_precision.set_global_policy("float32")


def _fp16_exact_inputs(shape, seed=0):
    # Multiples of 1/16 in [-2, 2): exact in float16, and never equal to a threshold
    # (they are set to odd multiples of 1/32), so float16 and float32 binarize alike.
    return (np.random.default_rng(seed).integers(-32, 32, shape) / 16).astype(np.float32)


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda d: pabt.PaBTConv2D(8, 3, padding="same", weight_bases=2, activation_bases=3,
                                   use_bias=True, dtype=d), (2, 7, 7, 5)),
        (lambda d: pabt.PaBTConv2D(8, 3, strides=2, weight_bases=3, activation_bases=2,
                                   bases="abc", dtype=d), (2, 9, 9, 5)),
        (lambda d: pabt.PaBTDense(6, weight_bases=2, activation_bases=2,
                                  per_channel_thresholds=True, dtype=d), (4, 20)),
    ],
    ids=["conv-same-bias", "conv-abc-strided", "dense"],
)
def test_mixed_float16_layer_under_float32_policy_matches_float32(make, shape):
    assert tf.keras.mixed_precision.global_policy().name == "float32"
    f32, mixed, rng = make("float32"), make("mixed_float16"), np.random.default_rng(1)
    f32.build(shape)
    mixed.build(shape)
    M, N = f32.weight_bases, f32.activation_bases
    f32.gate.assign(rng.uniform(0.5, 1.5, (M, N)))
    f32.scale.assign(rng.uniform(0.2, 1.0, f32.scale.shape))
    theta = f32.input_quantizer.thresholds
    theta.assign((2 * rng.integers(-16, 16, theta.shape) + 1) / 32)  # odd multiples of 1/32
    mixed.set_weights(f32.get_weights())
    # Weights stay float32 (the variable dtype); only the computation is float16.
    assert {w.dtype for w in mixed.weights} <= {tf.float32, tf.int64}
    assert mixed.compute_dtype == "float16"
    x = _fp16_exact_inputs(shape)
    with tf.GradientTape(persistent=True) as tape:
        y32, y16 = f32(x), mixed(x)
        loss32, loss16 = tf.reduce_sum(y32 ** 2), tf.reduce_sum(tf.cast(y16, tf.float32) ** 2)
    assert y16.dtype == tf.float16 and y32.dtype == tf.float32
    scale = float(np.abs(y32).max())
    assert scale > 1.0
    # float16 rounds the folded kernels and the accumulation: ~1e-3 relative.
    np.testing.assert_allclose(np.asarray(y16, np.float32), y32, rtol=0, atol=3e-3 * scale)
    # Gate gradients (the importance signal) are float32 and agree too.
    g32, g16 = tape.gradient(loss32, f32.gate), tape.gradient(loss16, mixed.gate)
    assert g16.dtype == tf.float32
    np.testing.assert_allclose(g16, g32, rtol=2e-2, atol=1e-2 * float(np.abs(g32).max()))


def test_per_layer_mixed_dtype_trains_in_a_float32_model():
    inputs = tf.keras.Input((6, 6, 2))
    h = pabt.PaBTConv2D(4, 3, padding="same", weight_bases=2, activation_bases=2,
                        dtype="mixed_float16")(inputs)  # fmt: skip
    h = tf.keras.layers.Flatten()(h)
    outputs = tf.keras.layers.Dense(3)(h)  # float32 (the global policy): casts back
    model = pabt.PaBTModel(inputs, outputs, importance_momentum=0.5)
    model.compile(tf.keras.optimizers.Adam(0.01), sparse_ce())
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 6, 6, 2)).astype(np.float32), rng.integers(0, 3, 16)
    layer = pabt.pabt_layers(model)[0]
    gate = layer.gate.numpy().copy()
    model.fit(x, y, batch_size=8, verbose=0)
    assert not np.array_equal(layer.gate.numpy(), gate)
    assert layer.importance.max() > 0 and int(model.nonfinite_steps.numpy()) == 0
    assert model(x).dtype == tf.float32


def test_mixed_policy_model_trains_and_keras_file_loads_in_fresh_process(mixed_policy, tmp_path):
    inputs = tf.keras.Input((8, 8, 1))
    h = tf.keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
    h = tf.keras.layers.BatchNormalization()(h)
    h = pabt.PaBTConv2D(4, 3, padding="same", weight_bases=2, activation_bases=3)(h)
    h = tf.keras.layers.BatchNormalization()(h)
    h = pabt.PaBTDense(3, weight_bases=2, activation_bases=2)(tf.keras.layers.Flatten()(h))
    outputs = tf.keras.layers.Activation("linear", dtype="float32")(h)
    model = pabt.PaBTModel(inputs, outputs, importance_momentum=0.5)
    model.compile(tf.keras.optimizers.Adam(0.01), sparse_ce())  # a LossScaleOptimizer
    assert isinstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, 32)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    layers = pabt.pabt_layers(model)
    assert all(layer.compute_dtype == "float16" and layer.gate.dtype == tf.float32
               for layer in layers)  # fmt: skip
    assert all(layer.importance.max() > 0 for layer in layers)
    assert pabt.nonfinite.nonfinite_weights(model) == []
    layers[0].prune(0, 1)
    path = str(tmp_path / "mixed.keras")
    model.save(path)
    expected = model(x[:4]).numpy()
    np.save(tmp_path / "x.npy", x[:4])
    np.save(tmp_path / "expected.npy", expected)
    # A fresh process with the default float32 policy: the layers' own (mixed) policies
    # come from the file.
    result = run_in_fresh_process(
        f"""
import json
import numpy as np
import pabt_tf as pabt
import tensorflow as tf
model = tf.keras.models.load_model({path!r})
x, expected = np.load("x.npy"), np.load("expected.npy")
layers = pabt.pabt_layers(model)
print(json.dumps({{
    "class": type(model).__name__,
    "policies": sorted({{layer.dtype_policy.name for layer in layers}}),
    "max_diff": float(np.abs(model(x).numpy() - expected).max()),
    "masks": [layer.binary_conv_mask.tolist() for layer in layers],
}}))
""",
        cwd=str(tmp_path),
    )
    assert result["class"] == "PaBTModel" and result["policies"] == ["mixed_float16"]
    assert result["max_diff"] == 0.0
    assert result["masks"] == [layer.binary_conv_mask.tolist() for layer in layers]
    assert os.path.getsize(path) > 0
