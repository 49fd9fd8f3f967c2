"""`pabt.from_model`: Larq/Keras model → PaBTModel."""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import pabt_tf as pabt
from pabt_tf.layers import PaBTConv2D, PaBTDense
from pabt_tf.transform import residual_binarization

BINARY = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
              kernel_constraint="weight_clip")


def larq_bnn(kernel_quantizer="ste_sign", functional=True):
    """Float stem, binary convs (same/valid, stride 2, dilation 2, bias), BN, binary
    dense, float head — a typical Larq BNN with pad_values=1.0."""
    kq = dict(BINARY, kernel_quantizer=kernel_quantizer)
    if kernel_quantizer != "ste_sign":
        kq.pop("kernel_constraint")
    layers = [
        tf.keras.layers.Conv2D(8, 3, padding="same", name="stem"),
        tf.keras.layers.BatchNormalization(name="bn0"),
        lq.layers.QuantConv2D(8, 3, padding="same", pad_values=1.0, use_bias=False,
                              name="b1", **kq),
        tf.keras.layers.BatchNormalization(name="bn1"),
        lq.layers.QuantConv2D(6, (3, 2), strides=2, padding="same", pad_values=1.0,
                              name="b2", **kq),
        lq.layers.QuantConv2D(6, 3, dilation_rate=2, padding="valid", activation="relu",
                              name="b3", **kq),
        tf.keras.layers.Flatten(name="flat"),
        lq.layers.QuantDense(5, name="b4", **kq),
        tf.keras.layers.Dense(3, name="head"),
    ]
    if functional:
        x = inputs = tf.keras.Input((10, 10, 3))
        for layer in layers:
            x = layer(x)
        model = tf.keras.Model(inputs, x, name="bnn")
    else:
        model = tf.keras.Sequential([tf.keras.Input((10, 10, 3))] + layers, name="bnn")
    rng = np.random.default_rng(0)
    for w in model.weights:  # non-trivial BN statistics and biases
        value = rng.uniform(0.5, 1.5, w.shape) if "variance" in w.name else rng.normal(0, 0.5, w.shape)
        if kernel_quantizer != "ste_sign" and w.name.split("/")[0].startswith("b") and "kernel" in w.name:
            value = np.sign(value) + (value == 0)
        w.assign(value.astype(np.float32))
    return model


def _x(n=4):
    return np.random.default_rng(1).normal(size=(n, 10, 10, 3)).astype(np.float32)


@pytest.mark.parametrize(
    "functional,latent_weights,kernel_quantizer",
    [(True, True, "ste_sign"), (False, False, "ste_sign"),
     (True, False, lq.quantizers.NoOp(precision=1))],
    ids=["functional-latent", "sequential-latent-free", "bop-bnn-latent-free"],
)
def test_single_base_reproduces_the_bnn(functional, latent_weights, kernel_quantizer):
    bnn = larq_bnn(kernel_quantizer, functional)
    x = _x()
    expected = bnn(x).numpy()
    model = pabt.from_model(bnn, weight_bases=1, activation_bases=1,
                            latent_weights=latent_weights)
    assert isinstance(model, pabt.PaBTModel) and model.name == "bnn"
    assert [type(layer).__name__ for layer in model.layers[1:]] == [
        "Conv2D", "BatchNormalization", "PaBTConv2D", "BatchNormalization", "PaBTConv2D",
        "PaBTConv2D", "Flatten", "PaBTDense", "Dense",
    ]
    np.testing.assert_array_equal(model(x), expected)  # ±1 products: exact sums
    # Every other layer keeps its weights exactly.
    for name in ("stem", "bn0", "bn1", "head"):
        for a, b in zip(model.get_layer(name).get_weights(), bnn.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    b2 = model.get_layer("b2")
    assert (b2.strides, b2.padding, b2.kernel_size, b2.use_bias) == ((2, 2), "same", (3, 2), True)
    np.testing.assert_array_equal(b2.bias.numpy(), bnn.get_layer("b2").bias.numpy())
    assert model.get_layer("b3").dilation_rate == (2, 2)
    assert model.get_layer("b3").activation is tf.keras.activations.relu
    # The original model is untouched; the new one trains.
    np.testing.assert_array_equal(bnn(x), expected)
    model.compile(tf.keras.optimizers.legacy.Adam(1e-3), loss="mse")
    model.fit(x, np.zeros((4, 3), np.float32), verbose=0)


def test_multi_base_initialisation():
    bnn = larq_bnn()
    original = bnn.get_layer("b1").kernel.latent_variable.numpy()
    model = pabt.from_model(bnn, weight_bases=3, activation_bases=2,
                            per_channel_thresholds=True)
    layer = model.get_layer("b1")
    assert (layer.weight_bases, layer.activation_bases) == (3, 2)
    assert layer.input_quantizer.per_channel
    B = layer.binary_kernels().numpy()
    np.testing.assert_array_equal(B[0], np.where(original >= 0, 1.0, -1.0))
    np.testing.assert_array_equal(layer.kernels[0].latent_variable.numpy(), original)
    # Greedy residual binarization: each base reduces the approximation error of W.
    alpha = layer.scale.numpy()
    np.testing.assert_array_equal(alpha[0], 1.0)
    a0 = np.abs(original).mean(axis=(0, 1, 2))
    errors = [np.linalg.norm(original - a0 * np.einsum("m...o,mo->...o", B[: m + 1], alpha[: m + 1]))
              for m in range(3)]
    assert errors[0] > errors[1] > errors[2]
    for m in (1, 2):  # latent residuals binarize to the bases
        latent = layer.kernels[m].latent_variable.numpy()
        np.testing.assert_array_equal(np.where(latent >= 0, 1.0, -1.0), B[m])
        assert np.abs(latent).mean() < np.abs(original).mean()


def test_residual_binarization_of_a_binary_kernel_has_no_constant_base():
    w = np.where(np.random.default_rng(0).random((3, 3, 4, 5)) > 0.5, 1.0, -1.0)
    B, alpha, residuals = residual_binarization(w, 3)
    np.testing.assert_array_equal(B[0], w)
    assert np.all(alpha[1] > 0) and np.all(alpha[2] > 0)
    assert 0.2 < (B[1] > 0).mean() < 0.8  # random signs, not all +1
    np.testing.assert_array_equal(np.sign(residuals), B)


def test_abc_and_latent_free_initialisation():
    bnn = larq_bnn()
    w = bnn.get_layer("b4").kernel.latent_variable.numpy()
    abc = pabt.from_model(bnn, weight_bases=3, activation_bases=1, bases="abc")
    layer = abc.get_layer("b4")
    np.testing.assert_array_equal(layer.kernel.numpy(), w)
    assert np.all(layer.scale.numpy() >= 0) and layer.scale.numpy().max() > 0
    free = pabt.from_model(bnn, weight_bases=2, activation_bases=1, latent_weights=False)
    kernels = [k.latent_variable.numpy() for k in free.get_layer("b4").kernels]
    np.testing.assert_array_equal(kernels[0], np.where(w >= 0, 1.0, -1.0))
    assert all(set(np.unique(k)) == {-1.0, 1.0} for k in kernels)


def test_predicate_converts_float_layers():
    x = inputs = tf.keras.Input((6, 6, 2))
    x = tf.keras.layers.Conv2D(4, 3, name="c")(x)
    x = tf.keras.layers.Flatten()(x)
    outputs = tf.keras.layers.Dense(2, name="d")(x)
    model = tf.keras.Model(inputs, outputs)
    converted = pabt.from_model(model, 2, 2, predicate=lambda layer: layer.name == "c")
    assert isinstance(converted.get_layer("c"), PaBTConv2D)
    assert not isinstance(converted.get_layer("d"), PaBTDense)
    np.testing.assert_array_equal(converted.get_layer("d").kernel.numpy(),
                                  model.get_layer("d").kernel.numpy())


def test_zero_padded_bnn_warns():
    x = inputs = tf.keras.Input((6, 6, 2))
    outputs = lq.layers.QuantConv2D(4, 3, padding="same", name="z", **BINARY)(x)
    with pytest.warns(UserWarning, match="'z'.*pads"):
        pabt.from_model(tf.keras.Model(inputs, outputs), 1, 1)


class Subclassed(tf.keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = lq.layers.QuantConv2D(4, 3, **BINARY)

    def call(self, x):
        return self.conv(x)


def _wrap(layer, shape=(8, 8, 4)):
    inputs = tf.keras.Input(shape)
    return tf.keras.Model(inputs, layer(inputs))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: _wrap(lq.layers.QuantConv2D(4, 3, groups=2, name="grouped", **BINARY)),
         "'grouped'.*groups"),
        (lambda: _wrap(lq.layers.QuantDepthwiseConv2D(3, name="dw", input_quantizer="ste_sign",
                                                      depthwise_quantizer="ste_sign")), "'dw'"),
        (lambda: _wrap(lq.layers.QuantSeparableConv2D(
            4, 3, name="sep", input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
            pointwise_quantizer="ste_sign")), "'sep'"),
        (lambda: _wrap(lq.layers.QuantConv1D(4, 3, name="c1d", **BINARY), (8, 4)), "'c1d'"),
        # magnitude_aware_sign is no longer refused: it maps (tests/test_from_model_scaled.py).
        (lambda: _wrap(lq.layers.QuantDense(4, name="heavi", input_quantizer="ste_heaviside",
                                            kernel_quantizer="ste_sign")), "'heavi'.*sign"),
        (lambda: _wrap(tf.keras.layers.Conv2D(4, 3)), "no layers to convert"),
        (lambda: _wrap(_wrap(lq.layers.QuantConv2D(4, 3, name="inner", **BINARY))),
         "'inner'.*nested"),
    ],
    ids=["groups", "depthwise", "separable", "conv1d", "heaviside", "none",
         "nested"],
)
def test_unsupported_models_and_layers(make, match):
    with pytest.raises(ValueError, match=match):
        pabt.from_model(make(), 2, 2)


def test_subclassed_and_channels_first_and_bad_arguments():
    sub = Subclassed()
    sub(np.zeros((1, 6, 6, 2), np.float32))
    with pytest.raises(ValueError, match="subclassed"):
        pabt.from_model(sub)
    cf = lq.layers.QuantConv2D(4, 3, data_format="channels_first", name="cf", **BINARY)
    cf.build((None, 4, 8, 8))  # channels_first runs on GPU only; building suffices
    with pytest.raises(ValueError, match="'cf'.*channels_last"):
        pabt.from_model(_wrap(cf, (4, 8, 8)))
    bnn = larq_bnn()
    with pytest.raises(ValueError, match="weight_bases"):
        pabt.from_model(bnn, weight_bases=0)
    with pytest.raises(ValueError, match="bases"):
        pabt.from_model(bnn, bases="xnor")
    with pytest.raises(ValueError, match="predicate"):
        pabt.from_model(bnn, predicate="b1")
    with pytest.raises(ValueError, match="'flat'"):
        pabt.from_model(bnn, predicate=lambda layer: layer.name == "flat")


def test_shared_binary_layer_and_nested_float_model():
    # One binary conv called on two inputs stays one (shared) PaBT layer; a nested model
    # with nothing to convert is kept as a nested model with its weights.
    stem = tf.keras.Sequential([tf.keras.Input((6, 6, 2)), tf.keras.layers.Conv2D(3, 1)],
                               name="stem")
    a, b = tf.keras.Input((6, 6, 2), name="a"), tf.keras.Input((6, 6, 2), name="b")
    shared = lq.layers.QuantConv2D(4, 3, padding="same", pad_values=1.0, name="shared", **BINARY)
    out = tf.keras.layers.Add()([shared(stem(a)), shared(stem(b))])
    model = tf.keras.Model([a, b], out, name="two")
    x = [np.random.default_rng(i).normal(size=(2, 6, 6, 2)).astype(np.float32) for i in (0, 1)]
    converted = pabt.from_model(model, 1, 1)
    layer = converted.get_layer("shared")
    assert isinstance(layer, PaBTConv2D) and len(layer.inbound_nodes) == 2
    assert isinstance(converted.get_layer("stem"), tf.keras.Sequential)
    np.testing.assert_array_equal(converted.get_layer("stem").get_weights()[0],
                                  stem.get_weights()[0])
    np.testing.assert_array_equal(converted(x), model(x))
