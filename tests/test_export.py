"""strip_pabt / convert / verify on a small PaBT network trained a few steps on real
Fashion-MNIST (DESIGN.md §1.4, issue #4 acceptance)."""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import pabt_tf as pabt
from pabt_tf.export import (
    ChannelScale,
    ConversionError,
    DilatedQuantConv2D,
    ThresholdShift,
    convert_with_report,
    operator_counts,
    operator_list,
    parse_bconv_name,
    strip_pabt,
    verify,
)
from pabt_tf.layers import PaBTConv2D, PaBTDense, PaBTLayer

L = tf.keras.layers

# One active binary convolution per layer (a BNN), and several (a mixed network).
BNN_MASKS = {"b_same": [(2, 1)], "b_stride": [(0, 0)], "b_dilated": [(1, 2)], "b_dense": [(2, 2)]}
MIXED_MASKS = {
    "b_same": [(0, 0), (1, 1), (2, 1), (0, 2)],
    "b_stride": [(m, n) for m in range(3) for n in range(3)],
    "b_dilated": [(1, 2), (2, 2)],
    "b_dense": [(0, 1), (1, 0), (2, 2)],
}


def build_small_pabt_model() -> tf.keras.Model:
    """28×28×1 → float conv → 3 PaBTConv2D (same + per-channel thresholds; stride 2 +
    ABC bases; dilation 2 + valid + latent-free) → PaBTDense (bias) → float head, with
    BatchNorm after every binary layer."""
    inp = tf.keras.Input((28, 28, 1))
    x = L.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = L.BatchNormalization()(x)
    x = PaBTConv2D(16, 3, padding="same", per_channel_thresholds=True, name="b_same")(x)
    x = L.BatchNormalization()(x)
    x = PaBTConv2D(16, 3, strides=2, padding="same", bases="abc", name="b_stride")(x)
    x = L.BatchNormalization()(x)
    x = PaBTConv2D(16, 3, dilation_rate=2, latent_weights=False, name="b_dilated")(x)
    x = L.BatchNormalization()(x)
    x = L.MaxPooling2D(2)(x)
    x = L.Flatten()(x)
    x = PaBTDense(32, use_bias=True, name="b_dense")(x)
    x = L.BatchNormalization()(x)
    out = L.Dense(10)(x)
    return tf.keras.Model(inp, out, name="small_pabt")


def train_few_steps(model, x, y, epochs=1):
    optimizer = lq.optimizers.CaseOptimizer(
        (lq.optimizers.Bop.is_binary_variable, lq.optimizers.Bop()),
        default_optimizer=tf.keras.optimizers.legacy.Adam(0.01),
    )
    model.compile(
        optimizer, tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"]
    )
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model


def set_masks(model, masks):
    for layer in pabt.pabt_layers(model):
        mask = np.zeros((layer.weight_bases, layer.activation_bases), bool)
        for m, n in masks[layer.name]:
            mask[m, n] = True
        layer.set_binary_conv_mask(mask)


@pytest.fixture(scope="module")
def trained(fmnist_small):
    tf.keras.utils.set_random_seed(1)
    x_train, y_train, x_test, _ = fmnist_small
    model = train_few_steps(build_small_pabt_model(), x_train[:1024], y_train[:1024])
    # Move BatchNorm statistics and thresholds off their initial values so the test
    # covers realistic, non-trivial shifts and scales.
    return model, x_test[:500]


def _bconv_layers(model):
    return [layer for layer in model.layers if isinstance(layer, lq.layers.QuantConv2D)]


def _sign_inputs(model, stripped, x):
    """Per sample: do the two models binarize identically, and how close to its threshold
    is the closest binarized value where they do not?

    PaBT folds a layer's kernels into one convolution; the stripped model sums one
    convolution (or fused group) per branch. Both round differently (~1e-6 relative), so a
    value that lies within rounding of a threshold θ_n can binarize differently: a tie, not
    a different function.
    """
    layers = pabt.pabt_layers(model)
    pabt_in = tf.keras.Model(model.inputs, [layer.input for layer in layers]).predict(x, verbose=0)
    # A binary convolution of each (PaBT layer, activation base): one per active (m, n),
    # or fused ones (`strip_pabt(fused=True)`); all of a base binarize the same tensor.
    bconv_of = {}
    for layer in stripped.layers:
        parsed = parse_bconv_name(layer.name)
        if parsed:
            bconv_of.setdefault((parsed[0], parsed[2]), layer)
    sign_inputs, shift_refs = [], []
    for i, layer in enumerate(layers):
        thresholds = layer.input_quantizer.thresholds.numpy()
        for m, n in zip(*np.nonzero(layer.binary_conv_mask)):
            if any(ref == (i, int(n)) for ref, _ in shift_refs):
                continue
            # What the bconv binarizes: a shift's output, or a BatchNorm's with θ folded in.
            sign_inputs.append(bconv_of[(layer.name, int(n))].input)
            shift_refs.append(((i, int(n)), thresholds[n]))
    shift_refs = [(i, theta) for (i, _), theta in shift_refs]
    shifted = tf.keras.Model(stripped.inputs, sign_inputs).predict(x, verbose=0)
    flipped = np.zeros(len(x), bool)
    flip_margin = 0.0
    for layer_index in range(len(layers)):  # topological order
        earlier = flipped.copy()  # after a first flip, later differences are consequences
        for (i, theta), out in zip(shift_refs, shifted):
            if i != layer_index:
                continue
            ref = (pabt_in[i] - theta).reshape(len(x), -1)
            new = out.reshape(len(x), -1)
            differs = ((ref >= 0) != (new >= 0)) & ~earlier[:, None]
            flipped |= differs.any(axis=1)
            if differs.any():
                flip_margin = max(flip_margin, float(np.abs(ref[differs]).max()))
    return flipped, flip_margin


def assert_same_function(model, stripped, x, atol=1e-4):
    """Outputs agree within `atol` and with the same argmax on every sample whose
    activations binarize identically; the others are rare threshold ties."""
    a = model.predict(x, verbose=0)
    b = stripped.predict(x, verbose=0)
    top_level = all(layer in model.layers for layer in pabt.pabt_layers(model))
    if top_level:
        flipped, margin = _sign_inputs(model, stripped, x)
    else:  # nested PaBT layers: no tie analysis, every sample must agree
        flipped, margin = np.zeros(len(x), bool), 0.0
    diff = np.abs(a - b).reshape(len(x), -1).max(axis=1)
    assert diff[~flipped].max() <= atol
    np.testing.assert_array_equal(a[~flipped].argmax(-1), b[~flipped].argmax(-1))
    assert flipped.mean() <= 0.01  # ties are rare...
    assert margin <= 1e-5  # ...and at float32 rounding distance from a threshold
    return diff, flipped


@pytest.mark.parametrize("masks", [BNN_MASKS, MIXED_MASKS], ids=["bnn", "mixed"])
def test_strip_pabt_computes_the_same_function(trained, masks):
    model, x = trained
    set_masks(model, masks)
    stripped = strip_pabt(model)
    assert not any(isinstance(layer, PaBTLayer) for layer in stripped.layers)
    bconvs = _bconv_layers(stripped)
    expected = {f"{name}/m{m}n{n}_bconv" for name, pairs in masks.items() for m, n in pairs}
    assert {layer.name for layer in bconvs} == expected  # pruned convs are gone
    assert isinstance(stripped.get_layer("b_dilated/" + "m%dn%d_bconv" % masks["b_dilated"][0]),
                      DilatedQuantConv2D)  # fmt: skip
    for layer in bconvs:
        assert layer.pad_values == 1.0
        with lq.context.quantized_scope(True):
            kernel = np.asarray(layer.kernel)
        owner, mn = layer.name.split("/")
        m = int(mn[1])
        np.testing.assert_array_equal(
            kernel.reshape(-1),
            np.asarray(model.get_layer(owner).binary_kernels()[m]).reshape(-1),
        )
        scale = stripped.get_layer(layer.name.replace("_bconv", "_scale"))
        assert np.all(np.abs(scale.get_weights()[0]) > 0)  # never zero-scaled
    assert_same_function(model, stripped, x)


def test_strip_pabt_folds_threshold_into_exclusive_batchnorm(trained):
    model, _ = trained
    set_masks(model, BNN_MASKS)
    stripped = strip_pabt(model)
    shifts = {layer.name for layer in stripped.layers if isinstance(layer, ThresholdShift)}
    # Every BNN conv layer follows a BatchNorm that feeds only it: θ goes into its beta.
    # PaBTDense binarizes after Flatten/Reshape: it keeps its shift.
    assert shifts == {"b_dense/n2_shift"}
    bn_before = model.get_layer("b_same").inbound_nodes[0].inbound_layers
    theta = model.get_layer("b_same").input_quantizer.thresholds.numpy()[1]  # (C,)
    np.testing.assert_allclose(
        stripped.get_layer(bn_before.name).beta.numpy(), bn_before.beta.numpy() - theta,
        rtol=0, atol=1e-7,
    )  # fmt: skip


def test_strip_pabt_keeps_shift_when_batchnorm_output_is_shared():
    inp = tf.keras.Input((8, 8, 4))
    bn = L.BatchNormalization()
    h = bn(inp)
    conv = PaBTConv2D(4, 3, padding="same", weight_bases=2, activation_bases=2)
    model = tf.keras.Model(inp, L.Add()([h, conv(h)]))  # residual: BN output used twice
    bn.set_weights([np.full(4, 1.5), np.full(4, 0.2), np.zeros(4), np.ones(4)])
    conv.set_binary_conv_mask([[False, True], [False, False]])
    conv.input_quantizer.thresholds.assign([0.0, 0.3])
    stripped = strip_pabt(model)
    assert [layer.name for layer in stripped.layers if isinstance(layer, ThresholdShift)] == [
        f"{conv.name}/n1_shift"
    ]
    np.testing.assert_array_equal(stripped.get_layer(bn.name).beta.numpy(), np.full(4, 0.2, np.float32))
    x = np.random.default_rng(0).standard_normal((8, 8, 8, 4)).astype(np.float32)
    assert_same_function(model, stripped, x)


def test_strip_pabt_shares_shift_per_activation_base(trained):
    model, _ = trained
    set_masks(model, MIXED_MASKS)
    stripped = strip_pabt(model)
    shifts = [layer.name for layer in stripped.layers if isinstance(layer, ThresholdShift)]
    # b_dilated's two convs share one activation base after an exclusive BatchNorm: folded.
    expected = {
        f"{name}/n{n}_shift"
        for name, pairs in MIXED_MASKS.items()
        for _, n in pairs
        if name != "b_dilated"
    }
    assert sorted(shifts) == sorted(expected)  # one per active base, shared by its convs
    per_channel = stripped.get_layer("b_same/n0_shift").get_weights()[0]
    np.testing.assert_array_equal(
        per_channel, model.get_layer("b_same").input_quantizer.thresholds.numpy()[0]
    )


def test_strip_pabt_sequential_nested_and_3d_dense():
    inner = tf.keras.Sequential(
        [
            tf.keras.Input((8, 8, 4)),
            PaBTConv2D(8, 3, padding="same", weight_bases=2, activation_bases=2),
            L.BatchNormalization(),
            L.Reshape((16, 32)),
            PaBTDense(6, weight_bases=2, activation_bases=3, per_channel_thresholds=True),
        ],
        name="inner",
    )
    for layer in pabt.pabt_layers(inner):
        layer.prune(0, 0)
    inp = tf.keras.Input((8, 8, 4))
    out = L.Flatten()(inner(inp))
    outer = tf.keras.Model(inp, L.Dense(3)(out))
    x = np.random.default_rng(0).standard_normal((16, 8, 8, 4)).astype(np.float32)
    for model in (inner, outer):
        stripped = strip_pabt(model)
        assert not pabt.pabt_layers(stripped)
        assert_same_function(model, stripped, x)
    # PaBTDense on (16, 32): reshaped to (16, 1, 32) before the shift, back to (16, 6).
    stripped = strip_pabt(inner)
    assert stripped.output_shape == (None, 16, 6)


def test_strip_pabt_errors():
    class Sub(tf.keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = PaBTConv2D(4, 3)

        def call(self, x):
            return self.conv(x)

    sub = Sub()
    sub(tf.zeros((1, 8, 8, 2)))
    with pytest.raises(TypeError, match="subclassed"):
        strip_pabt(sub)
    with pytest.raises(TypeError, match="tf.keras.Model"):
        strip_pabt("model.keras")
    inp = tf.keras.Input((8, 8, 2))
    layer = PaBTConv2D(4, 3)
    model = tf.keras.Model(inp, layer(inp))
    # PaBT layers reject non-sign quantizers at construction; strip_pabt re-checks what
    # it exports (here a quantizer swapped afterwards).
    layer.input_quantizer.pseudo_gradient = lq.quantizers.SteHeaviside()
    with pytest.raises(ValueError, match="not sign"):
        strip_pabt(model)


def test_stripped_model_round_trips_through_keras_file(trained, tmp_path):
    model, x = trained
    set_masks(model, MIXED_MASKS)
    stripped = strip_pabt(model)
    path = str(tmp_path / "stripped.keras")
    stripped.save(path)
    loaded = tf.keras.models.load_model(path, compile=False)
    assert any(isinstance(layer, ChannelScale) for layer in loaded.layers)
    np.testing.assert_allclose(loaded.predict(x[:64], verbose=0), stripped.predict(x[:64], verbose=0),
                               atol=1e-6)  # fmt: skip


@pytest.mark.parametrize("masks", [BNN_MASKS, MIXED_MASKS], ids=["bnn", "mixed"])
def test_convert_one_lcebconv2d_per_active_conv_and_lce_agrees(trained, masks):
    model, x = trained
    set_masks(model, masks)
    report = convert_with_report(model, x)  # strict: raises on a float binary conv
    active = sum(len(pairs) for pairs in masks.values())
    counts = operator_counts(report.flatbuffer)
    assert counts == report.op_counts
    assert counts["LceBconv2d"] == active == report.expected_bconvs == report.found_bconvs
    # Only the float first layer and the float head remain float conv/dense ops.
    assert counts.get("CONV_2D", 0) == 1
    assert counts.get("FULLY_CONNECTED", 0) == 1
    assert "SPACE_TO_BATCH_ND" not in counts  # the dilated binary convs stayed binary
    assert {c.layer: (c.expected, c.found) for c in report.binary_convs} == {
        name: (len(pairs), len(pairs)) for name, pairs in masks.items()
    }
    v = report.verification
    assert v.samples == len(x) == 500
    assert v.max_abs_diff <= 1e-3
    assert v.top1_agreement >= 0.99
    assert report.ok and report.flatbuffer_bytes == len(report.flatbuffer)
    if masks is BNN_MASKS:
        assert report.mean_binary_convs == 1.0
    # LCE's default kernels and indirect BGEMM give the same outputs.
    v_default = verify(model, report.flatbuffer, x[:50], use_indirect_bgemm=False)
    assert v_default.max_abs_diff <= 1e-3 and v_default.top1_agreement >= 0.99


def test_convert_reports_binary_convs_left_float():
    # A real LCE 0.16 limitation (no mock): two dilated Larq QuantConv2D on one input share
    # TF's SpaceToBatchND, LCE cannot fold it back, and both stay float CONV_2D.
    inp = tf.keras.Input((12, 12, 8))
    x = L.BatchNormalization()(inp)
    convs = [
        lq.layers.QuantConv2D(
            16, 3, dilation_rate=2, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip", use_bias=False, name=f"dilated_{i}",
        )(x)
        for i in range(2)
    ]  # fmt: skip
    model = tf.keras.Model(inp, L.Add()(convs))
    with pytest.raises(ConversionError, match="dilated_0.*did not become an LceBconv2d") as err:
        convert_with_report(model)
    report = err.value.report
    assert report.expected_bconvs == 2 and report.found_bconvs == 0
    assert report.op_counts.get("CONV_2D") == 2
    assert all(check.float_ops for check in report.binary_convs)
    with pytest.warns(UserWarning, match="did not become an LceBconv2d"):
        flatbuffer = pabt.convert(model, strict=False)
    assert operator_counts(flatbuffer).get("LceBconv2d", 0) == 0


def test_operator_list_and_verify_reject_bad_input(trained):
    model, x = trained
    with pytest.raises(ValueError, match="TFLite"):
        operator_list(b"not a flatbuffer at all")
    with pytest.raises(TypeError):
        operator_list("model.tflite")
    set_masks(model, BNN_MASKS)
    flatbuffer = pabt.convert(model)
    ops = operator_list(flatbuffer)
    bconvs = [op for op in ops if op.is_binary_conv]
    assert sorted(op.conv_signature[4] for op in bconvs) == [(1, 1), (1, 1), (1, 1), (2, 2)]
    assert sorted(op.conv_signature[5] for op in bconvs)[-1] == (2, 2)  # dilation kept
    with pytest.raises(ValueError, match="sample shape"):
        verify(model, flatbuffer, np.zeros((2, 28, 28, 3), np.float32))


def test_convert_records_lce_warnings_and_parses_operators_once(monkeypatch):
    import warnings

    from pabt_tf.export import conversion

    inp = tf.keras.Input((8, 8, 4))
    x = L.BatchNormalization()(inp)
    model = tf.keras.Model(inp, PaBTConv2D(8, 3, weight_bases=2, activation_bases=2)(x))
    real_convert, real_parse, parsed = conversion.lce.convert_keras_model, conversion.operator_list, []

    def convert_that_warns(*args, **kwargs):  # the fallback warning LCE really emits
        warnings.warn("Saved-model conversion failed, falling back to graphdef-based conversion.")
        return real_convert(*args, **kwargs)

    def counting_parse(flatbuffer):
        parsed.append(len(flatbuffer))
        return real_parse(flatbuffer)

    monkeypatch.setattr(conversion.lce, "convert_keras_model", convert_that_warns)
    monkeypatch.setattr(conversion, "operator_list", counting_parse)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        report = convert_with_report(model)
    assert not [w for w in shown if "Saved-model" in str(w.message)]  # recorded, not shown
    assert "LCE: UserWarning: Saved-model conversion failed, falling back to graphdef-based "\
        "conversion." in report.notes
    assert len(parsed) == 1 and report.found_bconvs == 4
