"""Cost accounting: `pabt.summary`, `mean_binary_convs`, and Larq's own summary."""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import pabt_tf as pabt


def _model():
    inputs = tf.keras.Input((8, 8, 3))
    x = pabt.PaBTConv2D(4, 3, padding="same", weight_bases=2, activation_bases=3, name="c1")(inputs)
    x = tf.keras.layers.BatchNormalization(name="bn")(x)
    x = pabt.PaBTConv2D(5, 3, strides=2, weight_bases=3, activation_bases=1,
                        latent_weights=False, name="c2")(x)  # 3×3 output
    x = tf.keras.layers.Flatten(name="flat")(x)
    x = pabt.PaBTDense(7, weight_bases=2, activation_bases=2, bases="abc", use_bias=True,
                       name="d1")(x)
    outputs = tf.keras.layers.Dense(3, name="head")(x)
    return tf.keras.Model(inputs, outputs, name="net")


# MACs of one binary convolution, by hand.
C1 = 3 * 3 * 3 * 4 * 8 * 8  # 6912
C2 = 3 * 3 * 4 * 5 * 3 * 3  # 1620
D1 = 45 * 7  # 315
HEAD = 7 * 3  # 21 (32-bit)


def _prune(model):
    c1, c2, d1 = (model.get_layer(n) for n in ("c1", "c2", "d1"))
    c1.set_binary_conv_mask([[1, 0, 1], [0, 0, 1]])  # 3 of 6; weight bits 2, activation 2
    c2.prune(0, 0)  # 2 of 3
    d1.set_binary_conv_mask([[0, 0], [0, 1]])  # 1 of 4: a binary layer
    return 3, 2, 1


def test_macs_per_layer():
    model = _model()
    assert [layer.binary_conv_macs() for layer in pabt.pabt_layers(model)] == [C1, C2, D1]


def test_larq_summary_counts_pabt_binary_macs_only():
    model = _model()
    with pabt.larq_profile():  # Larq is taught about PaBT layers only inside the block
        _check_larq_profile(model)


def _check_larq_profile(model):
    profile = lq.models.ModelProfile(model)
    # Unpruned: M·N binary convolutions each; gates, masks, scales, thresholds,
    # importances are not MACs: the only 32-bit MACs are the float head's.
    assert profile.op_count("mac", 1) == 6 * C1 + 3 * C2 + 4 * D1
    assert profile.op_count("mac", 32) == HEAD
    assert profile.op_count("mac") == 6 * C1 + 3 * C2 + 4 * D1 + HEAD
    k1, k2, k3 = _prune(model)
    profile = lq.models.ModelProfile(model)
    assert profile.op_count("mac", 1) == k1 * C1 + k2 * C2 + k3 * D1
    assert profile.op_count("mac", 32) == HEAD
    by_name = {lp.name: lp for lp in profile.layer_profiles}
    assert by_name["c1"].op_count("mac", 1) == k1 * C1
    assert by_name["c1"].op_count("mac", 32) == 0
    assert by_name["c1"].input_precision == 1
    assert by_name["bn"].op_count("mac") == 0  # other layers as before
    # Binary kernels are 1-bit parameters (latent ones too, as for Larq's QuantConv2D).
    assert by_name["c2"].weight_count(1) == 3 * 3 * 3 * 4 * 5

    lines = []
    lq.models.summary(model, print_fn=lines.append)
    text = "\n".join(lines)
    assert "1-bit MACs" in text and "32-bit MACs" in text
    ratio = (k1 * C1 + k2 * C2 + k3 * D1) / (k1 * C1 + k2 * C2 + k3 * D1 + HEAD)
    assert f"{ratio:.4f}" in text  # "Ratio of MACs that are binarized"


def test_pabt_summary_rows_and_table():
    model = _model()
    k1, k2, k3 = _prune(model)
    lines = []
    rows = pabt.summary(model, print_fn=lines.append)
    assert [r["layer"] for r in rows] == ["c1", "c2", "d1", "Total"]
    c1, c2, d1, total = rows
    assert (c1["weight_bases"], c1["activation_bases"], c1["binary_convs"]) == (2, 3, 6)
    assert c1["active_binary_convs"] == c1["effective_bits"] == 3
    assert (c1["weight_bits"], c1["activation_bits"]) == (2, 2)
    assert c1["binary_conv_macs"] == C1 and c1["binary_macs"] == c1["bops"] == 3 * C1
    assert (c2["active_binary_convs"], c2["weight_bits"], c2["activation_bits"]) == (2, 2, 1)
    assert c2["binary_macs"] == 2 * C2
    assert (d1["active_binary_convs"], d1["weight_bits"], d1["activation_bits"]) == (1, 1, 1)
    assert d1["binary_macs"] == D1
    assert total["binary_macs"] == total["bops"] == k1 * C1 + k2 * C2 + k3 * D1
    assert total["active_binary_convs"] == 6 and total["binary_convs"] == 13
    expected_mean = (k1 * C1 + k2 * C2 + k3 * D1) / (C1 + C2 + D1)
    assert total["mean_binary_convs"] == pytest.approx(expected_mean)
    assert pabt.mean_binary_convs(model) == pytest.approx(expected_mean)
    text = "\n".join(lines)
    assert f"{3 * C1:,}" in text and "2×3" in text and "3/6" in text
    assert f"{expected_mean:.3f}" in text
    assert pabt.summary(model, print_fn=None) == rows


def test_bnn_has_mean_one_and_errors():
    model = _model()
    for layer in pabt.pabt_layers(model):
        mask = np.zeros((layer.weight_bases, layer.activation_bases), bool)
        mask[-1, -1] = True
        layer.set_binary_conv_mask(mask)
    assert pabt.mean_binary_convs(model) == 1.0
    assert pabt.summary(model, print_fn=None)[-1]["binary_macs"] == C1 + C2 + D1
    plain = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="PaBT"):
        pabt.summary(plain)
    with pytest.raises(ValueError, match="PaBT"):
        pabt.mean_binary_convs(plain)


def test_larq_is_patched_only_inside_larq_profile():
    original = lq.models.LayerProfile
    model = _model()
    # Larq's own profile does not know PaBT layers: no binary MACs at all.
    assert lq.models.ModelProfile(model).op_count("mac", 1) == 0
    with pabt.larq_profile():
        assert lq.models.LayerProfile is not original
        assert lq.models.ModelProfile(model).op_count("mac", 1) == 6 * C1 + 3 * C2 + 4 * D1
    assert lq.models.LayerProfile is original
    with pytest.raises(RuntimeError), pabt.larq_profile():
        raise RuntimeError("restored on error too")
    assert lq.models.LayerProfile is original
    lines = []
    pabt.larq_summary(model, print_fn=lines.append)
    assert any("1-bit MACs" in line for line in lines) and lq.models.LayerProfile is original


def test_import_changes_nothing_in_larq_and_names_are_unambiguous():
    import subprocess
    import sys

    code = ("import larq.models as m; before = m.LayerProfile\n"
            "import pabt_tf\n"
            "assert m.LayerProfile is before\n"
            "import types; assert isinstance(pabt_tf.summary, types.FunctionType)\n"
            "assert set(pabt_tf.__all__) <= set(dir(pabt_tf)) and pabt_tf.__version__ != '0+unknown'\n"
            "print('OK')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-2000:]
