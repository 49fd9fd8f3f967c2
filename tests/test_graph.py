"""`pabt_tf.graph` (the one graph-rewrite mechanism) and `pabt_tf.binary_layers`."""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import pabt_tf as pabt
from pabt_tf.binary_layers import (
    is_binary_layer,
    is_binary_quant_conv2d,
    is_binary_quant_dense,
    is_binary_quantizer,
)
from pabt_tf.graph import all_layers, rewrite_model

L = tf.keras.layers
BINARY = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
              kernel_constraint="weight_clip")


def _copy(layer, x, context):
    return None


def _two_in_two_out():
    """Two inputs, a layer shared by both branches, a dict of two outputs."""
    a, b = tf.keras.Input((6,), name="a"), tf.keras.Input((6,), name="b")
    shared = L.Dense(6, name="shared")
    ha, hb = shared(a), shared(b)
    out = {"sum": L.Add(name="add")([ha, hb]), "b": L.Dense(2, name="head")(hb)}
    return tf.keras.Model([a, b], out, name="two")


def test_copy_keeps_function_structure_and_sharing():
    model = _two_in_two_out()
    x = [np.random.default_rng(i).normal(size=(3, 6)).astype(np.float32) for i in (0, 1)]
    copy = rewrite_model(model, _copy, "copy")
    assert copy.name == "copy" and [t.name for t in copy.inputs] == ["a", "b"]
    expected, got = model(x), copy(x)
    assert set(got) == {"sum", "b"}
    for key in got:
        np.testing.assert_array_equal(got[key], expected[key])
    shared = copy.get_layer("shared")
    assert len(shared.inbound_nodes) == 2  # still one layer called twice
    assert shared is not model.get_layer("shared")
    ids = {id(v) for v in model.weights}
    assert not any(id(v) in ids for v in copy.weights)  # no variables shared


def test_replace_sees_each_call_with_its_context():
    model = _two_in_two_out()
    seen = []

    def replace(layer, x, context):
        seen.append((layer.name, context.input_is_exclusive))
        if layer.name == "head":
            return L.Activation("tanh", name="head_tanh")(x)
        return None

    new = rewrite_model(model, replace, "new")
    # The shared Dense is offered per call; `hb` feeds both the Add and the head. The Add
    # has two inputs, so it is copied without asking.
    assert sorted(seen) == [("head", False), ("shared", True), ("shared", True)]
    assert "head_tanh" in [layer.name for layer in new.layers]
    assert "head" not in [layer.name for layer in new.layers]


def test_sequential_without_input_and_nested_models():
    x = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32)
    built = tf.keras.Sequential([L.Dense(4), L.ReLU(), L.Dense(3)], name="built")
    built.build((None, 5))
    called = tf.keras.Sequential([L.Dense(4), L.Dense(3)], name="called")
    called(x)
    for seq in (built, called):
        np.testing.assert_array_equal(rewrite_model(seq, _copy, "r")(x), seq(x))
    inp = tf.keras.Input((5,))
    outer = tf.keras.Model(inp, L.Dense(2, name="top")(built(inp)))
    inlined = rewrite_model(outer, _copy, "inlined")
    kept = rewrite_model(outer, _copy, "kept", inline_nested=False)
    assert not any(isinstance(layer, tf.keras.Model) for layer in inlined.layers)
    assert [type(layer).__name__ for layer in kept.layers[1:]] == ["Sequential", "Dense"]
    for new in (inlined, kept):
        np.testing.assert_array_equal(new(x), outer(x))


def test_model_class_and_errors():
    inp = tf.keras.Input((4,))
    model = tf.keras.Model(inp, L.Dense(2)(inp))
    assert isinstance(rewrite_model(model, _copy, "p", model_class=pabt.PaBTModel), pabt.PaBTModel)
    with pytest.raises(TypeError, match="tf.keras.Model"):
        rewrite_model("model", _copy, "x")
    with pytest.raises(ValueError, match="input shape"):
        rewrite_model(tf.keras.Sequential([L.Dense(2)]), _copy, "x")


def test_all_layers_visits_nested_and_shared_layers_once():
    dense = L.Dense(3, name="d")
    inner = tf.keras.Sequential([tf.keras.Input((3,)), dense], name="inner")
    inp = tf.keras.Input((3,))
    outer = tf.keras.Model(inp, dense(inner(inp)))  # `dense` also used in the outer model
    names = [layer.name for layer in all_layers(outer)]
    assert sorted(names) == sorted(set(names)) and {"inner", "d"} <= set(names)


def test_binary_predicates():
    conv = lq.layers.QuantConv2D(4, 3, **BINARY)
    dense = lq.layers.QuantDense(4, **BINARY)
    free = lq.layers.QuantConv2D(4, 3, input_quantizer="ste_sign",
                                 kernel_quantizer=lq.quantizers.NoOp(precision=1))
    float_in = lq.layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign")
    sep = lq.layers.QuantSeparableConv2D(4, 3, input_quantizer="ste_sign",
                                         depthwise_quantizer="ste_sign")
    assert is_binary_quantizer(lq.quantizers.SteSign()) and not is_binary_quantizer(None)
    assert [is_binary_layer(layer) for layer in (conv, dense, free, float_in, sep, L.Conv2D(4, 3))] == [
        True, True, True, False, True, False]
    assert is_binary_quant_conv2d(conv) and is_binary_quant_conv2d(free)
    assert not is_binary_quant_conv2d(dense) and not is_binary_quant_conv2d(sep)
    assert is_binary_quant_dense(dense) and not is_binary_quant_dense(conv)

