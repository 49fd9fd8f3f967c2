"""Models with several inputs and outputs: `verify` and `pabt-convert` match them by name,
not position, on real LCE flatbuffers whose order differs from Keras' (checked first:
LCE's converter sorts the outputs by name and reorders some inputs), compare each output
on its own and report each."""

import larq_compute_engine as lce
import larq_compute_engine.mlir.python.converter as lce_converter
import numpy as np
import pytest
import tensorflow as tf
from larq_compute_engine.tflite.python.interpreter import Interpreter

import pabt_tf as pabt
from pabt_tf.cli import convert
from pabt_tf.export import convert_with_report, strip_pabt, verify
from pabt_tf.export.io_matching import flatbuffer_io, match_io


def _two_in_two_out() -> tf.keras.Model:
    """Two inputs, an image and a vector, named `in_2`, `in_1` (LCE puts `in_1` first);
    two outputs of different shapes, a dense head `a_cls` (5) and a PaBT segmentation map
    `z_seg` (8×8×3), in that order (LCE puts `z_seg` first, whatever the order)."""
    tf.keras.utils.set_random_seed(0)
    image = tf.keras.Input((8, 8, 3), name="in_2")
    vector = tf.keras.Input((4,), name="in_1")
    x = tf.keras.layers.Conv2D(8, 3, padding="same")(image)
    x = tf.keras.layers.BatchNormalization()(x)
    x = pabt.PaBTConv2D(8, 3, padding="same", weight_bases=2, activation_bases=2, name="body")(x)
    x = tf.keras.layers.BatchNormalization()(x)
    seg = pabt.PaBTConv2D(3, 3, padding="same", weight_bases=2, activation_bases=2, name="z_seg")(x)
    pooled = tf.keras.layers.GlobalAveragePooling2D()(x)
    cls = tf.keras.layers.Dense(5, name="a_cls")(tf.keras.layers.Concatenate()([pooled, vector]))
    return tf.keras.Model([image, vector], [cls, seg])


def _two_heads_same_shape() -> tf.keras.Model:
    """One input, two outputs of the same shape, `z_head` then `a_head`: only names can
    tell them apart."""
    tf.keras.utils.set_random_seed(1)
    inp = tf.keras.Input((8, 8, 3))
    x = tf.keras.layers.BatchNormalization()(inp)
    x = pabt.PaBTConv2D(8, 3, padding="same", weight_bases=2, activation_bases=2)(x)
    x = tf.keras.layers.Flatten()(tf.keras.layers.BatchNormalization()(x))
    return tf.keras.Model(inp, [tf.keras.layers.Dense(5, name="z_head")(x),
                                tf.keras.layers.Dense(5, name="a_head")(x)])  # fmt: skip


def _inputs(n: int = 40):
    rng = np.random.default_rng(0)
    return [rng.standard_normal((n, 8, 8, 3)).astype(np.float32),
            rng.standard_normal((n, 4)).astype(np.float32)]  # fmt: skip


@pytest.fixture(scope="module")
def two_io_report():
    """`convert_with_report` (strip, LCE, operator check, verify) of `_two_in_two_out`."""
    model = _two_in_two_out()
    return model, convert_with_report(model, _inputs())


@pytest.fixture(scope="module")
def two_io(two_io_report):
    model, report = two_io_report
    return model, report.flatbuffer


@pytest.fixture(scope="module")
def same_shape():
    model = _two_heads_same_shape()
    return model, lce.convert_keras_model(strip_pabt(model))


def _direct(model, flatbuffer, inputs) -> dict:
    """Per Keras output: max |LCE − Keras|, with LCE's outputs found by hand (the
    flatbuffer's output whose signature name is the stripped model's output name)."""
    io = flatbuffer_io(flatbuffer)
    stripped = strip_pabt(model)
    fed = [inputs[stripped.input_names.index(name)] for name in io.inputs]
    lce_out = Interpreter(flatbuffer, use_indirect_bgemm=True).predict(fed if len(fed) > 1 else fed[0])
    lce_out = lce_out if isinstance(lce_out, list) else [lce_out]
    keras_out = model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
    return {
        model_name: float(np.abs(lce_out[io.outputs.index(fb_name)] - keras).max())
        for model_name, fb_name, keras in zip(model.output_names, stripped.output_names, keras_out)
    }


def test_lce_orders_inputs_and_outputs_unlike_keras(two_io, same_shape):
    """What the other tests rely on: the flatbuffers' order is not Keras'."""
    model, flatbuffer = two_io
    io = flatbuffer_io(flatbuffer)
    assert io.signature
    assert list(model.input_names) == ["in_2", "in_1"] and list(io.inputs) == ["in_1", "in_2"]
    assert list(model.output_names) == ["a_cls", "z_seg"]
    assert list(io.outputs) == ["z_seg/sum", "a_cls"]  # the stripped PaBT output's name
    assert io.output_shapes == ((1, 8, 8, 3), (1, 5))
    model, flatbuffer = same_shape
    assert list(model.output_names) == ["z_head", "a_head"]
    assert list(flatbuffer_io(flatbuffer).outputs) == ["a_head", "z_head"]
    match = match_io(model, flatbuffer)
    assert match.outputs == (1, 0) and match.by == "signature"


def test_verify_two_inputs_two_outputs_of_different_shapes(two_io):
    model, flatbuffer = two_io
    x = _inputs()
    result = verify(model, flatbuffer, x)
    assert result.ok and result.samples == 40 and result.matched_by == "signature"
    assert [o["name"] for o in result.outputs] == ["a_cls", "z_seg"]
    assert [o["shape"] for o in result.outputs] == [[5], [8, 8, 3]]
    direct = _direct(model, flatbuffer, x)
    for o in result.outputs:
        assert o["max_abs_diff"] == pytest.approx(direct[o["name"]], abs=1e-9)
        assert o["max_abs_diff"] < 1e-4 and o["top1_agreement"] == 1.0 and o["differing"] == 0
    assert result.max_abs_diff == max(direct.values())
    assert "output 'z_seg' (8, 8, 3)" in str(result) and "output 'a_cls' (5,)" in str(result)
    # A dict by input name gives the same result; so does sign_margins' input handling.
    by_name = verify(model, flatbuffer, {"in_1": x[1], "in_2": x[0]})
    assert by_name.outputs == result.outputs
    margins = pabt.export.sign_margins(model, x)
    assert margins.shape == (40,) and np.all(margins >= 0)


def test_verify_reports_each_output(two_io):
    """One output broken after conversion: its own numbers show it, the other's do not."""
    model, flatbuffer = two_io
    head = model.get_layer("a_cls")
    kernel, bias = head.get_weights()
    try:
        head.set_weights([kernel, bias + 0.5])
        result = verify(model, flatbuffer, _inputs())
    finally:
        head.set_weights([kernel, bias])
    cls, seg = result.outputs
    assert not result.ok and result.differing == 40
    assert cls["max_abs_diff"] == pytest.approx(0.5, abs=1e-4) and cls["differing"] == 40
    assert seg["max_abs_diff"] < 1e-4 and seg["differing"] == 0


def test_verify_outputs_of_the_same_shape_by_name(same_shape):
    """Outputs swapped by the flatbuffer: compared by position they would differ."""
    model, flatbuffer = same_shape
    x = _inputs()[0]
    result = verify(model, flatbuffer, x)
    assert result.ok and result.max_abs_diff < 1e-4, result
    direct = _direct(model, flatbuffer, [x])
    assert {o["name"]: o["max_abs_diff"] for o in result.outputs} == pytest.approx(direct, abs=1e-9)
    lce_out = Interpreter(flatbuffer, use_indirect_bgemm=True).predict(x)
    swapped = np.abs(lce_out[0] - model.predict(x, verbose=0)[0]).max()
    assert swapped > 0.1  # what comparing by position would have found


def test_convert_with_report_on_two_inputs_two_outputs(two_io_report):
    _, report = two_io_report
    assert report.ok and report.verification.ok and report.found_bconvs == report.expected_bconvs
    assert [o["name"] for o in report.verification.outputs] == ["a_cls", "z_seg"]


def test_graph_def_conversion_without_a_signature(monkeypatch, same_shape):
    """LCE's fallback conversion (taken when its SavedModel path fails) writes no
    signature: outputs are `Identity`, `Identity_1` in the sorted order of the names."""
    model, _ = same_shape

    def refuse(*args, **kwargs):
        raise RuntimeError("take the graph-def path")

    monkeypatch.setattr(lce_converter, "convert_saved_model", refuse)
    with pytest.warns(UserWarning, match="falling back"):
        flatbuffer = lce.convert_keras_model(strip_pabt(model))
    io = flatbuffer_io(flatbuffer)
    assert not io.signature and list(io.outputs) == ["Identity", "Identity_1"]
    x = _inputs()[0]
    result = verify(model, flatbuffer, x)
    assert result.ok and result.matched_by == "tensor names", result
    assert [o["name"] for o in result.outputs] == ["z_head", "a_head"]


def test_verify_refuses_what_it_cannot_match(two_io, same_shape):
    model, flatbuffer = two_io
    _, other_fb = same_shape
    with pytest.raises(ValueError, match="the model has 2 inputs and the flatbuffer 1"):
        verify(model, other_fb, _inputs())
    with pytest.raises(ValueError, match=r"the model has 2 inputs \['in_2', 'in_1'\]"):
        verify(model, flatbuffer, _inputs()[0])
    with pytest.raises(ValueError, match="same number of samples"):
        verify(model, flatbuffer, [_inputs()[0], _inputs(10)[1]])
    with pytest.raises(ValueError, match="exactly the model's inputs"):
        verify(model, flatbuffer, {"in_2": _inputs()[0]})


# -- pabt-convert ----------------------------------------------------------------------


def test_convert_cli_two_inputs_two_outputs(capsys, tmp_path):
    path, out = tmp_path / "two.keras", tmp_path / "two.tflite"
    _two_in_two_out().save(path)
    code = convert.main([str(path), str(out), "--verify-samples", "40"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "verification PASSED on 40 samples" in stdout
    assert "output 'z_seg' (8, 8, 3)" in stdout and "output 'a_cls' (5,)" in stdout
    assert "random N(0, 1) samples for each input ('in_2' (8, 8, 3), 'in_1' (4,))" in stdout
    assert flatbuffer_io(out.read_bytes()).outputs == ("z_seg/sum", "a_cls")


def test_convert_cli_integer_input_is_a_clear_error(capsys, tmp_path):
    inp = tf.keras.Input((8, 8, 1), dtype="int32", name="ids")
    x = tf.keras.layers.Rescaling(1.0)(tf.cast(inp, tf.float32))
    x = pabt.PaBTConv2D(4, 3, padding="same", weight_bases=1, activation_bases=1)(x)
    model = tf.keras.Model(inp, tf.keras.layers.Flatten()(x))
    path, out = tmp_path / "ids.keras", tmp_path / "ids.tflite"
    model.save(path)
    code = convert.main([str(path), str(out), "--verify-samples", "8"])
    _, stderr = capsys.readouterr()
    assert code == 2
    assert "input 'ids' is int32" in stderr and "--verify-samples 0" in stderr
    assert "Traceback" not in stderr and not out.exists()
