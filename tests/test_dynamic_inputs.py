"""A PaBT model built on `Input((None, None, C))` (what segmentation users build): its
costs at a reference input size (given, or the first batch's), pruning with MAC
weighting, and conversion at the size to deploy at (`input_shape=`, `pabt-convert
--input-shape`)."""

import numpy as np
import pytest
from _training_utils import pabt, tf

H, W = 12, 16


def _net(shape=(None, None, 3)):
    tf.keras.utils.set_random_seed(0)
    x = tf.keras.Input(shape)
    h = tf.keras.layers.Conv2D(8, 3, padding="same")(x)
    h = tf.keras.layers.BatchNormalization()(h)
    h = pabt.PaBTConv2D(8, 3, strides=2, padding="same", weight_bases=2, activation_bases=2)(h)
    h = tf.keras.layers.BatchNormalization()(h)
    h = pabt.PaBTConv2D(8, 3, padding="same", weight_bases=2, activation_bases=2)(h)
    h = tf.keras.layers.BatchNormalization()(h)
    # A per-pixel binary head (segmentation): a PaBTDense on (B, H, W, C).
    y = pabt.PaBTDense(4, weight_bases=2, activation_bases=1)(h)
    model = pabt.PaBTModel(x, y, importance_momentum=0.5)
    model.compile(tf.keras.optimizers.Adam(0.01), "mse")
    return model


def _macs(model):
    return [layer.binary_conv_macs() for layer in pabt.pabt_layers(model)]


def test_costs_need_a_reference_size_and_match_the_static_model():
    tf.keras.backend.clear_session()
    static = _macs(_net((H, W, 3)))
    tf.keras.backend.clear_session()
    model = _net()
    with pytest.raises(ValueError, match=r"pabt_conv2d: MACs need known spatial input dimensions"
                                         r".*set_reference_input_shape"):
        pabt.mean_binary_convs(model)
    shapes = pabt.set_reference_input_shape(model, (1, H, W, 3))
    assert shapes == {"pabt_conv2d": (None, H, W, 8), "pabt_conv2d_1": (None, H // 2, W // 2, 8),
                      "pabt_dense": (None, H // 2, W // 2, 8)}
    assert _macs(model) == static
    pabt.summary(model, print_fn=None)  # works at the reference size
    with pytest.raises(ValueError, match="must be 4 positive integers"):
        pabt.set_reference_input_shape(model, (H, W))
    with pytest.raises(ValueError, match="disagrees with model .* dimension 3"):
        pabt.set_reference_input_shape(model, (1, H, W, 4))


def test_pruning_takes_the_first_batch_size_or_the_given_one():
    tf.keras.backend.clear_session()
    x = np.random.default_rng(0).standard_normal((64, H, W, 3)).astype(np.float32)
    y = np.random.default_rng(1).standard_normal((64, H // 2, W // 2, 4)).astype(np.float32)
    static = _net((H, W, 3))
    static_macs = _macs(static)
    tf.keras.backend.clear_session()
    model = _net()
    callback = pabt.PaBTPruningCallback(pabt.schedules.PolynomialDecay(2, 6, frequency=2),
                                        mac_weighted=True)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[callback])
    assert list(callback._macs) == static_macs  # the first batch's size, 12x16
    assert [layer.active_binary_convs for layer in pabt.pabt_layers(model)] == [1, 1, 1]
    # A pruning event at step 0 cannot wait for the first batch: the size must be given.
    tf.keras.backend.clear_session()
    model = _net()
    early = pabt.PaBTPruningCallback(pabt.schedules.OneShot(0))
    with pytest.raises(ValueError, match="reference_input_shape"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[early])
    assert all(layer.active_binary_convs == layer.num_binary_convs
               for layer in pabt.pabt_layers(model))  # refused before pruning anything
    given = pabt.PaBTPruningCallback(pabt.schedules.OneShot(0), reference_input_shape=(1, 24, 32, 3),
                                     on_missing_importance="skip")
    with pytest.warns(UserWarning, match="no importance measured"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[given])
    assert pabt.pabt_layers(model)[0].reference_input_shape == (None, 24, 32, 8)


def test_convert_at_the_size_to_deploy_at():
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    tf.keras.backend.clear_session()
    model = _net()
    with pytest.raises(ValueError, match=r"unknown size .* input_shape=\(1, 224, 224, 3\)"):
        pabt.convert(model)
    with pytest.raises(ValueError, match="disagrees"):
        pabt.convert(model, input_shape=(1, H, W, 5))
    stripped = pabt.strip_pabt(model, input_shape=(1, H, W, 3))
    assert tuple(stripped.inputs[0].shape) == (1, H, W, 3)
    report = pabt.export.convert_with_report(
        model, np.random.default_rng(0).standard_normal((8, H, W, 3)).astype(np.float32),
        input_shape=(1, H, W, 3))
    assert report.ok and report.found_bconvs == report.expected_bconvs == 4 + 4 + 2
    assert Interpreter(report.flatbuffer).input_shapes == [(1, H, W, 3)]
    assert report.verification.max_abs_diff < 1e-3


def test_pabt_convert_cli_input_shape(tmp_path, capsys):
    from pabt_tf.cli.convert import main

    tf.keras.backend.clear_session()
    model = _net()
    path = str(tmp_path / "dyn.keras")
    model.save(path)
    out = str(tmp_path / "dyn.tflite")
    assert main([path, out, "--verify-samples", "4"]) == 2
    assert "--input-shape 1,224,224,3" in capsys.readouterr().err
    for bad in ("1,x,2,3", "1,0,16,3"):
        with pytest.raises(SystemExit) as exit_info:
            main([path, out, "--input-shape", bad])
        assert exit_info.value.code == 2
    assert main([path, out, "--input-shape", f"1,{H},{W},4"]) == 2
    assert "disagrees" in capsys.readouterr().err
    assert main([path, out, "--input-shape", f"1,{H},{W},3", "--verify-samples", "4"]) == 0
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    with open(out, "rb") as f:
        assert Interpreter(f.read()).input_shapes == [(1, H, W, 3)]
