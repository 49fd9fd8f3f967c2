"""`from_model` on Bi-Real Net and XNOR-Net style BNNs (scaled-sign kernels; issue 8,
defect 2): M = N = 1 reproduces the original, and the conversion has as many
`LceBconv2d` as LCE's direct conversion of the original."""

import larq as lq
import larq_compute_engine as lce
import numpy as np
import pytest
import tensorflow as tf

import pabt_tf as pabt


def xnor_weight_scale(x):
    """XNOR-Net's kernel: per-output-channel mean magnitude times sign (as Larq Zoo)."""
    return tf.reduce_mean(tf.abs(x), axis=list(range(len(x.shape) - 1))) * lq.quantizers.ste_sign(x)


QUANTIZERS = {
    "bireal": dict(input_quantizer="approx_sign", kernel_quantizer="magnitude_aware_sign"),
    "xnor": dict(input_quantizer="ste_sign", kernel_quantizer=xnor_weight_scale),
}


def _bconv(kind, filters, strides=1, name=None):
    return lq.layers.QuantConv2D(filters, 3, strides=strides, padding="same", pad_values=1.0,
                                 use_bias=False, kernel_constraint="weight_clip", name=name,
                                 **QUANTIZERS[kind])  # fmt: skip


def _build(arch, kind, depth):
    inputs = tf.keras.Input((16, 16, 3))
    x = tf.keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = tf.keras.layers.BatchNormalization()(x)
    for i in range(depth):
        y = tf.keras.layers.BatchNormalization()(_bconv(kind, 8, name=f"b{i}")(x))
        if arch == "residual":  # Bi-Real: a real shortcut around every binary conv
            x = tf.keras.layers.Add()([x, y])
        elif arch == "dense":  # BinaryDenseNet: concatenate, then a float transition
            x = tf.keras.layers.Concatenate()([x, y])
            x = tf.keras.layers.Conv2D(8, 1, use_bias=False)(x)
        else:
            x = y
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(5)(x))
    rng = np.random.default_rng(depth)
    for layer in model.layers:  # non-trivial BN statistics and kernels
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c),
                               rng.normal(0, 0.5, c), rng.uniform(0.5, 2, c)])  # fmt: skip
    return model


@pytest.mark.parametrize("arch", ["plain", "residual", "dense"])
@pytest.mark.parametrize("kind", ["bireal", "xnor"])
def test_scaled_sign_bnn_maps_exactly_and_converts_alike(arch, kind):
    depth = 2 if arch == "dense" else 3
    model = _build(arch, kind, depth)
    x = np.random.default_rng(0).normal(size=(6, 16, 16, 3)).astype(np.float32)
    pabt_model = pabt.from_model(model, weight_bases=1, activation_bases=1)
    layers = pabt.pabt_layers(pabt_model)
    assert len(layers) == depth
    # The magnitude went into α: per channel the mean |W| of the original kernel.
    w = model.get_layer("b0").kernel.numpy()
    np.testing.assert_allclose(layers[0].scale.numpy()[0], np.abs(w).mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(pabt_model(x, training=False), model(x, training=False), atol=1e-5)
    direct = pabt.export.operator_counts(lce.convert_keras_model(model))
    ours = pabt.export.operator_counts(pabt.convert(pabt_model))
    assert ours.get("LceBconv2d", 0) == direct.get("LceBconv2d", 0) == depth
    # A multi-base start pruned back to one conv per layer converts the same way.
    mbn = pabt.from_model(model, weight_bases=2, activation_bases=2)
    for layer in pabt.pabt_layers(mbn):
        for m, n in ((0, 1), (1, 0), (1, 1)):
            layer.prune(m, n)
    assert pabt.export.operator_counts(pabt.convert(mbn)).get("LceBconv2d", 0) == depth


def test_a_kernel_quantizer_that_is_no_scaled_sign_is_still_refused():
    def not_a_sign(x):
        return tf.clip_by_value(x, -1.0, 1.0)

    inputs = tf.keras.Input((8, 8, 2))
    y = lq.layers.QuantConv2D(4, 3, input_quantizer="ste_sign", kernel_quantizer=lq.quantizers.DoReFa(k_bit=1),
                              name="q")(inputs)  # fmt: skip
    with pytest.raises(ValueError, match="'q'.*not a sign"):
        pabt.from_model(tf.keras.Model(inputs, y), weight_bases=1, activation_bases=1)
    z = lq.layers.QuantConv2D(4, 3, input_quantizer="ste_sign", kernel_quantizer=not_a_sign)(inputs)
    with pytest.raises(ValueError, match="no layers to convert"):
        pabt.from_model(tf.keras.Model(inputs, z))
