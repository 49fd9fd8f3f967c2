"""The fused export (issue 10, `strip_pabt(fused=True)`): one bit-packing per active
activation base and its weight bases in one binary convolution (unless that would store a
kernel twice), equal to the PaBT model; the operator check counts binary convolutions
whatever the grouping; the k-sweep. Same small trained network, tolerances and
threshold-tie rule as tests/test_export.py."""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf
from test_export import assert_same_function, set_masks, trained  # noqa: F401  (fixture)

from pabt_tf.export import (
    PATTERNS,
    ChannelBias,
    ChannelGroupSum,
    ConversionError,
    DilatedQuantConv2D,
    OperatorInfo,
    ThresholdShift,
    bconv_count,
    bconv_name,
    check_operators,
    convert_with_report,
    k_sweep,
    parse_bconv_name,
    pattern_mask,
    shares_activation_base,
    strip_pabt,
    verify,
)
from pabt_tf.layers import PaBTLayer, pabt_layers

L = tf.keras.layers
LAYERS = ("b_same", "b_stride", "b_dilated", "b_dense")
UNITS = {"b_same": 16, "b_stride": 16, "b_dilated": 16, "b_dense": 32}
ALL = [(m, n) for m in range(3) for n in range(3)]

# b_same: 3 weight bases on one activation base (θ folded into the BatchNorm before);
# b_stride: 2 + 1 over two bases; b_dilated: everything (3 bases × 3); b_dense: 2 on one.
FUSED_MASKS = {
    "b_same": [(0, 1), (1, 1), (2, 1)],
    "b_stride": [(0, 0), (2, 0), (1, 2)],
    "b_dilated": ALL,
    "b_dense": [(1, 0), (2, 0)],
}
# No two active convolutions of a layer share an activation base: nothing to fuse.
SPREAD_MASKS = {
    "b_same": [(0, 0), (1, 1), (2, 2)],
    "b_stride": [(2, 1)],
    "b_dilated": [(0, 2), (0, 0)],
    "b_dense": [(1, 0), (0, 1)],
}
# b_same: weight base 0 is active on activation bases 0 and 1, bases 1 and 2 on base 0
# only: 1 and 2 fused on base 0, base 0 alone on each (its kernel stored once).
OVERLAP_MASKS = {"b_same": [(0, 0), (1, 0), (2, 0), (0, 1)], "b_stride": [(1, 2)],
                 "b_dilated": [(1, 2)], "b_dense": [(1, 2)]}  # fmt: skip


def random_masks(seed: int) -> dict:
    """Per layer a random set of active binary convolutions; over seeds 0..8 every
    layer sees every count 1..9."""
    rng = np.random.default_rng(seed)
    masks = {}
    for i, name in enumerate(LAYERS):
        k = (seed + 2 * i) % 9 + 1
        masks[name] = [ALL[j] for j in sorted(rng.choice(9, k, replace=False))]
    return masks


def binary_conv_layers(stripped) -> dict:
    """`{(owner, n, weight bases): layer}` of a stripped model's (fused) binary
    convolutions."""
    found = {}
    for layer in stripped.layers:
        parsed = parse_bconv_name(layer.name)
        if parsed:
            found[(parsed[0], parsed[2], parsed[1])] = layer
    return found


def expected_groups(pairs) -> set:
    """`{(n, weight bases)}` of one layer's fused export: per activation base, its weight
    bases grouped by the set of activation bases each is active on."""
    bases_of = {m: frozenset(n for m2, n in pairs if m2 == m) for m, _ in pairs}
    return {
        (n, tuple(sorted(m2 for m2, n2 in pairs if n2 == n and bases_of[m2] == bases_of[m])))
        for m, n in pairs
    }


def assert_fused_structure(model, stripped, masks):
    """The fused binary convolutions: active weight bases of one activation base with the
    same set of activation bases share one, holding their ±1 kernels side by side and
    their scales `coef · α`, followed by the sum of its groups."""
    convs = binary_conv_layers(stripped)
    expected = {(name, n, ms) for name, pairs in masks.items() for n, ms in expected_groups(pairs)}
    assert set(convs) == expected
    for name, n, ms in expected:
        layer, original = convs[(name, n, ms)], model.get_layer(name)
        assert layer.name == bconv_name(name, ms, n) and bconv_count(layer.name) == len(ms)
        assert layer.filters == len(ms) * UNITS[name] and layer.pad_values == 1.0
        assert isinstance(layer, DilatedQuantConv2D) == (name == "b_dilated")
        with lq.context.quantized_scope(True):
            kernel = np.asarray(layer.kernel)
        bases = np.asarray(original.binary_kernels())
        want = np.concatenate([bases[m].reshape(kernel.shape[:-1] + (-1,)) for m in ms], -1)
        np.testing.assert_array_equal(kernel, want)
        stem = layer.name[: -len("_bconv")]
        scale = stripped.get_layer(f"{stem}_scale").get_weights()[0]
        coef, alpha = original.coefficients().numpy(), original.scale.numpy()
        want_scale = np.concatenate([coef[m, n] * alpha[m] for m in ms])
        np.testing.assert_allclose(scale, want_scale, rtol=1e-6)
        assert np.all(np.abs(scale) > 0)
        if len(ms) > 1:
            assert stripped.get_layer(f"{stem}_sum").groups == len(ms)


@pytest.mark.parametrize("seed", range(9))
def test_fused_strip_computes_the_same_function_random_masks(trained, seed):
    model, x = trained
    masks = random_masks(seed)
    set_masks(model, masks)
    stripped = strip_pabt(model, fused=True)
    assert not any(isinstance(layer, PaBTLayer) for layer in stripped.layers)
    assert_fused_structure(model, stripped, masks)
    assert_same_function(model, stripped, x)


def test_fused_strip_layers_shifts_and_bias(trained):
    model, x = trained
    set_masks(model, FUSED_MASKS)
    stripped = strip_pabt(model, fused=True)
    assert_fused_structure(model, stripped, FUSED_MASKS)
    shifts = sorted(layer.name for layer in stripped.layers if isinstance(layer, ThresholdShift))
    # b_same: one active base after an exclusive BatchNorm, θ folded; PaBTDense keeps its.
    assert shifts == ["b_dense/n0_shift", "b_dilated/n0_shift", "b_dilated/n1_shift",
                      "b_dilated/n2_shift", "b_stride/n0_shift", "b_stride/n2_shift"]  # fmt: skip
    sums = [layer for layer in stripped.layers if isinstance(layer, ChannelGroupSum)]
    assert sorted(layer.groups for layer in sums) == [2, 2, 3, 3, 3, 3]
    # The dense bias rides on the first (fused) binary convolution: zero on its 2nd group.
    bias = stripped.get_layer("b_dense/bias")
    assert isinstance(bias, ChannelBias) and bias.input.shape[-1] == 64
    values = bias.get_weights()[0]
    np.testing.assert_array_equal(values[:32], model.get_layer("b_dense").bias.numpy())
    np.testing.assert_array_equal(values[32:], np.zeros(32, np.float32))
    assert_same_function(model, stripped, x)


@pytest.mark.parametrize("masks", [SPREAD_MASKS, {name: [(1, 2)] for name in LAYERS}],
                         ids=["spread", "bnn"])  # fmt: skip
def test_fused_is_the_unfused_graph_when_nothing_shares_a_base(trained, masks):
    model, _ = trained
    set_masks(model, masks)
    fused, unfused = strip_pabt(model, fused=True), strip_pabt(model)

    def described(stripped):  # the bias of b_dense sits elsewhere: compare as sets
        return sorted((type(layer).__name__, layer.name, [w.tolist() for w in layer.get_weights()])
                      for layer in stripped.layers)  # fmt: skip

    assert described(fused) == described(unfused)
    if masks is not SPREAD_MASKS:  # a BNN: the very same graph, in the same order
        assert [layer.name for layer in fused.layers] == [layer.name for layer in unfused.layers]
    with pytest.raises(TypeError, match="fused"):
        strip_pabt(model, fused="yes")


def test_fused_convert_counts_and_lce_agrees(trained):
    model, x = trained
    set_masks(model, FUSED_MASKS)
    report = convert_with_report(model, x, fused=True)  # strict: raises on a float binary conv
    counts = report.op_counts
    # One bit-packing and one LceBconv2d per active activation base (1 + 2 + 3 + 1), a
    # SUB per threshold shift (b_same's θ is folded into its BatchNorm), a RESHAPE + SUM
    # per fused convolution (b_dense's other RESHAPE makes it 1x1), 0 + 1 + 2 + 0 ADDs
    # summing the 7 convolutions into 4 outputs.
    assert counts["LceQuantize"] == 7 and counts["LceBconv2d"] == 7 == report.bconv_ops
    assert counts["SUB"] == 6 and counts["SUM"] == 6 and counts["RESHAPE"] == 6 + 1
    # Scales and the dense bias fuse into the LceBconv2d: the only MULs (and the 3 other
    # ADDs) are the three BatchNorms after multi-bit conv layers (the one after b_dense
    # folds into the float head).
    assert counts["MUL"] == 3 and counts["ADD"] == 3 + 3
    assert counts.get("CONV_2D", 0) == 1 and counts.get("FULLY_CONNECTED", 0) == 1
    assert "SPACE_TO_BATCH_ND" not in counts  # the dilated binary convs stayed binary
    bconvs = [op for op in report.operators if op.is_binary_conv]
    assert sum(op.output_shapes[0][-1] for op in bconvs) == 15 * 16 + 2 * 32  # active · C_out
    assert sorted(op.output_shapes[0][-1] for op in bconvs) == [16, 32, 48, 48, 48, 48, 64]
    for op in bconvs:  # output multiplier and bias per output channel of the fused op
        assert op.input_shapes[2] == op.input_shapes[3] == (op.output_shapes[0][-1],)
    assert report.expected_bconvs == report.found_bconvs == 17
    assert {c.layer: (c.expected, c.found, c.expected_ops, c.found_ops)
            for c in report.binary_convs} == {
        "b_same": (3, 3, 1, 1), "b_stride": (3, 3, 2, 2), "b_dilated": (9, 9, 3, 3),
        "b_dense": (2, 2, 1, 1),
    }  # fmt: skip
    assert "total 17 -> 17 in 7 LceBconv2d op(s)" in report.format()
    v = report.verification
    assert v.samples == len(x) == 500 and v.max_abs_diff <= 1e-3 and v.top1_agreement >= 0.99
    v_default = verify(model, report.flatbuffer, x[:50], use_indirect_bgemm=False)
    assert v_default.max_abs_diff <= 1e-3 and v_default.top1_agreement >= 0.99
    unfused = convert_with_report(model)  # the default
    assert unfused.op_counts["LceBconv2d"] == 17 and "SUM" not in unfused.op_counts
    assert unfused.op_counts["LceQuantize"] == 7  # LCE shares a base's bit-packing there too


def test_fused_never_stores_a_weight_base_twice(trained):
    model, x = trained
    set_masks(model, OVERLAP_MASKS)
    stripped = strip_pabt(model, fused=True)
    assert_fused_structure(model, stripped, OVERLAP_MASKS)
    assert sorted(key for key in binary_conv_layers(stripped) if key[0] == "b_same") == [
        ("b_same", 0, (0,)), ("b_same", 0, (1, 2)), ("b_same", 1, (0,))]  # fmt: skip
    # B_0 is one constant for both of its convolutions (the converter merges equal ones,
    # as for the unfused export): the distinct kernels hold each weight base once.
    kernels = {}
    for key, layer in binary_conv_layers(stripped).items():
        if key[0] == "b_same":
            with lq.context.quantized_scope(True):
                kernel = np.asarray(layer.kernel)
            kernels[kernel.tobytes()] = kernel.shape[-1]
    assert sum(kernels.values()) == 3 * UNITS["b_same"]
    assert_same_function(model, stripped, x)
    fused = convert_with_report(model, x[:100], fused=True)
    unfused = convert_with_report(model)  # the default
    assert (fused.bconv_ops, unfused.bconv_ops) == (6, 7) and fused.verification.ok
    # Same binary weights; the RESHAPE + SUM entries cost a few bytes.
    assert fused.flatbuffer_bytes <= 1.01 * unfused.flatbuffer_bytes


def _fused_style_model():
    """Two dilated binary QuantConv2D on one input, named like a fused export (2 + 1
    binary convolutions of layer "pabt_x"): LCE 0.16 leaves both float (shared
    SpaceToBatchND, see tests/test_export.py)."""
    inp = tf.keras.Input((12, 12, 8))
    x = L.BatchNormalization()(inp)
    args = dict(kernel_size=3, dilation_rate=2, input_quantizer="ste_sign", use_bias=False,
                kernel_quantizer="ste_sign", kernel_constraint="weight_clip")  # fmt: skip
    a = lq.layers.QuantConv2D(2 * 6, name=bconv_name("pabt_x", [0, 1], 0), **args)(x)
    b = lq.layers.QuantConv2D(6, name=bconv_name("pabt_x", [2], 1), **args)(x)
    return tf.keras.Model(inp, L.Add()([ChannelGroupSum(2)(a), b]))


def test_check_names_the_layer_of_a_fused_conv_left_float():
    model = _fused_style_model()
    with pytest.raises(ConversionError, match="'pabt_x': 3 of its 3 binary convolution") as err:
        convert_with_report(model)
    report = err.value.report
    assert report.expected_bconvs == 3 and report.found_bconvs == 0 and report.bconv_ops == 0
    assert report.op_counts.get("CONV_2D") == 2
    (check,) = report.binary_convs
    assert (check.layer, check.expected_ops, check.found_ops) == ("pabt_x", 2, 0)
    assert len(check.float_ops) == 2  # both float stand-ins, of both widths, are named


def _bconv_op(index: int, out_channels: int) -> OperatorInfo:
    options = {"channels_in": 8, "stride_height": 1, "stride_width": 1,
               "dilation_height_factor": 2, "dilation_width_factor": 2}  # fmt: skip
    return OperatorInfo(index, "LceBconv2d", ((1, 12, 12, 1), (out_channels, 3, 3, 1)),
                        ((1, 8, 8, out_channels),), (), (), ("",), options)  # fmt: skip


def test_check_matches_fused_convs_by_output_channels():
    model = _fused_style_model()
    checks, problems, _ = check_operators(model, [_bconv_op(0, 12), _bconv_op(1, 6)])
    assert not problems
    assert [(c.expected, c.found, c.expected_ops, c.found_ops) for c in checks] == [(3, 3, 2, 2)]
    # Three LceBconv2d of 6 channels are not a fused one of 12: one matches the single
    # conv, the fused one (2 binary convolutions) is missing, two ops are left over.
    checks, problems, _ = check_operators(model, [_bconv_op(i, 6) for i in range(3)])
    assert [(c.expected, c.found) for c in checks] == [(3, 1)]
    assert any("2 extra LceBconv2d" in p for p in problems)
    assert any("'pabt_x': 2 of its 3 binary convolution" in p for p in problems)


def test_fused_strip_nested_sequential_bias_activation_abc_dense():
    from pabt_tf.layers import PaBTConv2D, PaBTDense

    inner = tf.keras.Sequential([
        tf.keras.Input((6, 6, 4)),
        PaBTConv2D(8, 3, padding="same", weight_bases=2, activation_bases=2, use_bias=True,
                   activation="relu"),
        L.Flatten(),
        PaBTDense(5, weight_bases=3, activation_bases=1, bases="abc"),
    ])  # fmt: skip
    inp = tf.keras.Input((6, 6, 4))
    outer = tf.keras.Model(inp, inner(inp))
    x = np.random.default_rng(0).standard_normal((16, 6, 6, 4)).astype(np.float32)
    stripped = strip_pabt(outer, fused=True)
    assert not pabt_layers(stripped)
    conv, dense = pabt_layers(inner)
    convs = binary_conv_layers(stripped).values()
    assert sorted((layer.name, layer.filters) for layer in convs) == [
        (bconv_name(conv.name, [0, 1], 0), 16), (bconv_name(conv.name, [0, 1], 1), 16),
        (bconv_name(dense.name, [0, 1, 2], 0), 15),
    ]  # fmt: skip
    assert_same_function(outer, stripped, x)


def test_pattern_masks():
    def active(mask):
        return sorted(zip(*map(list, np.nonzero(mask))))

    assert active(pattern_mask(3, 3, 4, "same_activation")) == [(0, 0), (0, 1), (1, 0), (2, 0)]
    assert active(pattern_mask(3, 3, 4, "same_weight")) == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert active(pattern_mask(3, 3, 4, "spread")) == [(0, 0), (0, 1), (1, 1), (2, 2)]
    assert active(pattern_mask(2, 3, 3, "spread")) == [(0, 0), (0, 1), (1, 1)]
    for pattern in PATTERNS:
        assert pattern_mask(3, 3, 9, pattern).all() and pattern_mask(3, 3, 1, pattern)[0, 0]
    assert shares_activation_base(pattern_mask(3, 3, 2, "same_activation"))
    assert not shares_activation_base(pattern_mask(3, 3, 3, "same_weight"))
    assert not shares_activation_base(pattern_mask(3, 3, 3, "spread"))
    with pytest.raises(ValueError, match="1..9"):
        pattern_mask(3, 3, 10, "spread")
    with pytest.raises(ValueError, match="pattern"):
        pattern_mask(3, 3, 2, "diagonal")


def test_k_sweep_converts_each_mask_once_and_restores_the_masks():
    from pabt_tf.layers import PaBTConv2D

    inp = tf.keras.Input((8, 8, 8))
    x = L.BatchNormalization()(inp)
    x = PaBTConv2D(8, 3, padding="same", name="c0")(x)
    x = PaBTConv2D(8, 3, padding="same", name="c1")(L.BatchNormalization()(x))
    model = tf.keras.Model(inp, x)
    model.get_layer("c0").prune(1, 1)
    before = [layer.binary_conv_mask for layer in pabt_layers(model)]
    points = k_sweep(model, [1, 2], patterns=("same_activation", "same_weight"))
    for layer, mask in zip(pabt_layers(model), before):
        np.testing.assert_array_equal(layer.binary_conv_mask, mask)
    got = [(p.k, p.patterns, p.fused, p.shares_base, p.bconv_ops, p.same_as_fused) for p in points]
    assert got == [
        (1, ("same_activation", "same_weight"), True, False, 2, False),  # one mask for k = 1
        (1, ("same_activation", "same_weight"), False, False, 2, True),
        (2, ("same_activation",), True, True, 2, False),  # one fused LceBconv2d per layer
        (2, ("same_activation",), False, True, 4, False),
        (2, ("same_weight",), True, False, 4, False),  # two bases: nothing to fuse
        (2, ("same_weight",), False, False, 4, True),
    ]
    assert points[2].label == "k2_same_activation_fused"
    assert points[2].size == len(points[2].flatbuffer)
    with pytest.raises(ValueError, match="no PaBT layers"):
        k_sweep(tf.keras.Model(inp, L.Dense(2)(inp)), [1])
