"""Model zoo: every model builds for every method, with identical architecture."""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import pabt_tf as pabt
from pabt_tf import models
from pabt_tf.layers import PaBTConv2D

# Tiny versions of every zoo model: (builder kwargs, input shape, output shape, binary positions)
TINY = {
    "fmnist_cnn": (dict(filters=(4, 4, 8, 8), stem_filters=4), (28, 28, 1), (10,), 4),
    "fmnist_resnet": (dict(stage_filters=(4, 8, 8), stem_filters=4), (28, 28, 1), (10,), 6),
    "resnet20": (dict(width=4), (16, 16, 3), (10,), 18),
    "vgg_small": (dict(width=4), (16, 16, 3), (10,), 5),
    "resnet18": (dict(width=4, num_classes=7), (32, 32, 3), (7,), 16),
    "segmentation_resnet18": (dict(width=4, decoder_filters=8, num_classes=5), (64, 64, 3), (64, 64, 5), 16),
}


def _build(name, method, **extra):
    kwargs, shape, _, _ = TINY[name]
    return models.build_model(name, method, input_shape=shape, **kwargs, **extra)


def _structure(model):
    """(name, output shape) of every layer except the float method's extra ReLUs (before
    each convolution, and the ImageNet stem's: before a sign it would make it constant)."""
    return [
        (layer.name, tuple(layer.output_shape))
        for layer in model.layers
        if not layer.name.startswith("act_") and layer.name != "stem_relu"
    ]


def _check_binary_position(layer, method):
    if method == "pabt":
        assert isinstance(layer, PaBTConv2D) and layer.bases == "independent"
        assert (layer.weight_bases, layer.activation_bases) == (2, 3)
    elif method == "abc":
        assert isinstance(layer, PaBTConv2D) and layer.bases == "abc"
        assert (layer.weight_bases, layer.activation_bases) == (3, 3) and layer.latent_weights
    elif method == "bnn_bireal":  # Bi-Real Net's quantizers (issue 9, part 2)
        assert isinstance(layer, lq.layers.QuantConv2D) and not isinstance(layer, PaBTConv2D)
        assert isinstance(layer.input_quantizer, lq.quantizers.ApproxSign)
        assert isinstance(layer.kernel_quantizer, lq.quantizers.MagnitudeAwareSign)
        assert isinstance(layer.kernel_constraint, lq.constraints.WeightClip)
        assert layer.pad_values == 1.0 and not layer.use_bias
    elif method in ("bnn", "bnn_bop"):
        assert isinstance(layer, lq.layers.QuantConv2D) and not isinstance(layer, PaBTConv2D)
        assert layer.input_quantizer.precision == 1 and layer.kernel_quantizer.precision == 1
        assert layer.pad_values == 1.0 and not layer.use_bias
        if method == "bnn":
            assert isinstance(layer.input_quantizer, lq.quantizers.SteSign)
            assert isinstance(layer.kernel_quantizer, lq.quantizers.SteSign)
            assert isinstance(layer.kernel_constraint, lq.constraints.WeightClip)
        else:
            assert isinstance(layer.kernel_quantizer, lq.quantizers.NoOp)
            assert set(np.unique(layer.kernel.numpy())) == {-1.0, 1.0}
    else:
        assert type(layer) is tf.keras.layers.Conv2D


@pytest.mark.parametrize("name", list(TINY))
def test_every_model_builds_for_every_method_with_the_same_architecture(name):
    _, shape, out_shape, n_binary = TINY[name]
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    reference = None
    for method in models.METHODS:
        tf.keras.backend.clear_session()
        model = _build(name, method, weight_bases=2, activation_bases=3)
        y = model(x, training=False).numpy()
        assert y.shape == (2, *out_shape) and np.isfinite(y).all(), method
        structure = _structure(model)
        if reference is None:
            reference = structure
        assert structure == reference, method  # same layers, names and output shapes
        assert isinstance(model, pabt.PaBTModel) == (method == "pabt")
        binary = [layer for layer in model.layers if layer.name.startswith("bconv_")]
        assert [layer.name for layer in binary] == [f"bconv_{i}" for i in range(n_binary)]
        for layer in binary:
            _check_binary_position(layer, method)
            # A BatchNormalization right after every binary convolution.
            consumers = [n.outbound_layer for n in layer._outbound_nodes]
            assert [type(c).__name__ for c in consumers] == ["BatchNormalization"]
        # First and last layers full precision; no other quantized layers.
        assert type(model.get_layer("stem_conv")) is tf.keras.layers.Conv2D
        last = model.layers[-1]
        assert not isinstance(last, (lq.layers.QuantConv2D, PaBTConv2D))
        quantized = [layer for layer in model.layers if isinstance(layer, (lq.layers.QuantConv2D, PaBTConv2D))]
        assert len(quantized) == (0 if method == "float" else n_binary)
        if method == "float":  # the nonlinearity sits where the others binarize
            assert len([layer for layer in model.layers if layer.name.startswith("act_")]) == n_binary
        stem_relu = "stem_relu" in [layer.name for layer in model.layers]
        assert stem_relu == (method == "float" and name in ("resnet18", "segmentation_resnet18"))
        if name.startswith(("resnet", "segmentation", "fmnist_resnet")):
            downs = [layer for layer in model.layers if layer.name.endswith("_down_conv")]
            assert downs and all(type(layer) is tf.keras.layers.Conv2D for layer in downs)
            adds = [layer for layer in model.layers if layer.name.endswith("_add") and layer.name.startswith("s")]
            assert len(adds) == n_binary  # a real-valued shortcut around every binary conv


def test_bireal_unit_output_is_binary_branch_plus_real_shortcut():
    model = _build("resnet20", "bnn")
    layer = model.get_layer("s0b0c0_add")
    probe = tf.keras.Model(model.inputs, [layer.input, layer.output])
    x = np.random.default_rng(1).normal(size=(1, 16, 16, 3)).astype(np.float32)
    (branch, shortcut), out = probe(x)
    np.testing.assert_allclose(out, branch + shortcut, atol=1e-6)
    stem = tf.keras.Model(model.inputs, model.get_layer("stem_bn").output)(x)
    np.testing.assert_allclose(shortcut, stem, atol=1e-6)  # identity shortcut, real-valued


def test_pabt_model_settings_and_bad_arguments():
    model = _build("fmnist_cnn", "pabt", weight_bases=2, activation_bases=2,
                   latent_weights=False, criterion="taylor_squared", importance_momentum=0.5)  # fmt: skip
    assert model.criterion == "taylor_squared" and model.importance_momentum == 0.5
    layers = pabt.pabt_layers(model)
    assert len(layers) == 4 and all(not layer.latent_weights for layer in layers)
    with pytest.raises(ValueError, match="method"):
        models.build_model("fmnist_cnn", "xnor")
    with pytest.raises(ValueError, match="name"):
        models.build_model("resnet50", "bnn")
    with pytest.raises(ValueError, match="multiples of 32"):
        models.segmentation_resnet18("bnn", input_shape=(48, 64, 3))


@pytest.mark.parametrize("method, latent", [("bnn_bop", True), ("pabt", False), ("bnn", True)])
def test_get_optimizer_gives_bop_exactly_the_binary_kernels(method, latent):
    model = _build("fmnist_cnn", method, weight_bases=2, activation_bases=2, latent_weights=latent)
    optimizer = models.get_optimizer(method, 1e-3, latent_weights=latent, bop_gamma=1e-3)
    assert isinstance(optimizer, lq.optimizers.CaseOptimizer) == models.uses_bop(method, latent)
    model.compile(optimizer, tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(8, 28, 28, 1)).astype(np.float32)
    y = np.arange(8) % 10
    binary = [layer for layer in model.layers if layer.name.startswith("bconv_")]
    kernels = [k for layer in binary for k in (layer.kernels if method == "pabt" else [layer.kernel])]
    before = [k.numpy() if not hasattr(k, "latent_variable") else k.latent_variable.numpy() for k in kernels]
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    if not models.uses_bop(method, latent):
        return
    bop_vars = {
        key for key, index in optimizer.var_opt_mapping.items() if index == 0
    }  # the (Bop.is_binary_variable, Bop) pair is first
    expected = {lq.optimizers._var_key(k.latent_variable if hasattr(k, "latent_variable") else k) for k in kernels}
    assert bop_vars == expected
    assert len(expected) == (4 * 2 if method == "pabt" else 4)
    for k, b in zip(kernels, before):
        value = k.latent_variable.numpy() if hasattr(k, "latent_variable") else k.numpy()
        assert set(np.unique(value)) <= {-1.0, 1.0}
        assert value.shape == b.shape


def test_abc_bases_choose_the_multi_base_width():
    model = _build("fmnist_cnn", "abc", abc_bases=(2, 1), weight_bases=3, activation_bases=3)
    layers = pabt.pabt_layers(model)
    assert all((layer.weight_bases, layer.activation_bases, layer.bases) == (2, 1, "abc") for layer in layers)
    assert pabt.mean_binary_convs(model) == 2.0
    for bad in [(0, 1), (2,), "3x3", (1.5, 2)]:
        with pytest.raises(ValueError, match="abc_bases"):
            _build("fmnist_cnn", "abc", abc_bases=bad)


@pytest.mark.parametrize("method", ["pabt", "abc"])
def test_activation_quantizer_reaches_every_multi_base_layer(method, tmp_path):
    """`activation_quantizer="approx_sign"`: Bi-Real's pseudo-gradient in every PaBT/ABC
    layer (same forward, different gradient), kept through save/load; refused by the Larq
    BNN methods, whose quantizers are their definition."""
    x = np.random.default_rng(3).normal(size=(4, 28, 28, 1)).astype(np.float32)
    grads, outputs = {}, {}
    for q in (None, "approx_sign"):
        tf.keras.utils.set_random_seed(0)
        model = _build("fmnist_resnet", method, activation_quantizer=q)
        layers = pabt.pabt_layers(model)
        assert len(layers) == 6
        expected = lq.quantizers.ApproxSign if q else lq.quantizers.SteSign
        assert all(isinstance(layer.input_quantizer.pseudo_gradient, expected) for layer in layers)
        with tf.GradientTape() as tape:
            outputs[q] = model(x, training=False)
            loss = tf.reduce_sum(outputs[q] ** 2)
        grads[q] = tape.gradient(loss, model.get_layer("stem_conv").kernel)  # through the quantizers
    np.testing.assert_allclose(outputs[None], outputs["approx_sign"], atol=1e-5)
    assert not np.allclose(grads[None], grads["approx_sign"])
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    assert all(isinstance(layer.input_quantizer.pseudo_gradient, lq.quantizers.ApproxSign)
               for layer in pabt.pabt_layers(loaded))  # fmt: skip
    for bad_method in ("bnn", "bnn_bireal", "bnn_bop", "float"):
        with pytest.raises(ValueError, match="activation_quantizer"):
            _build("fmnist_resnet", bad_method, activation_quantizer="approx_sign")
    with pytest.raises(ValueError, match="activation_quantizer"):
        _build("fmnist_resnet", method, activation_quantizer="not_a_quantizer")


def test_fmnist_resnet_sizes_and_downsampling():
    model = models.fmnist_resnet("bnn")  # the default size used in the comparison
    binary = [layer for layer in model.layers if layer.name.startswith("bconv_")]
    assert [tuple(layer.output_shape[1:]) for layer in binary] == [
        (14, 14, 32), (14, 14, 32), (7, 7, 64), (7, 7, 64), (4, 4, 128), (4, 4, 128)]
    # Bi-Real downsampling: average pool + float 1x1 conv + BN on the shortcut.
    pools = [layer.name for layer in model.layers if layer.name.endswith("_down_pool")]
    assert pools == ["s1b0c0_down_pool", "s2b0c0_down_pool"]
    with pytest.raises(ValueError, match="stage_filters"):
        models.fmnist_resnet("bnn", stage_filters=(8, 8), blocks_per_stage=(1,))


@pytest.mark.parametrize("method", ["bnn", "bnn_bireal", "bnn_bop", "pabt"])
def test_fmnist_resnet_converts_with_one_bconv_per_binary_conv(method):
    import larq_compute_engine as lce

    model = models.fmnist_resnet(method, stage_filters=(8, 16, 16), stem_filters=8)
    x = np.random.default_rng(0).normal(size=(4, 28, 28, 1)).astype(np.float32)
    if method == "pabt":  # pruned to one binary conv per layer: a BNN
        for layer in pabt.pabt_layers(model):
            for m in range(layer.weight_bases):
                for n in range(layer.activation_bases):
                    if (m, n) != (0, 0):
                        layer.prune(m, n)
        flatbuffer = pabt.convert(model)
    else:
        flatbuffer = lce.convert_keras_model(model)
    counts = pabt.export.operator_counts(flatbuffer)
    assert counts.get("LceBconv2d", 0) == 6
    assert counts.get("CONV_2D", 0) == 1 + 2  # float stem + the two downsampling 1x1 convs
    result = pabt.verify(model, flatbuffer, x)
    assert result.max_abs_diff < 1e-3 and result.top1_agreement == 1.0
