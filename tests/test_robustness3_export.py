"""Issue 27, export side: `pabt-convert` refuses bad numbers before converting; a Larq
layer that is not binary on both sides stays float with a note in `from_model`;
re-enabling a binary convolution while it fades out (soft pruning) sticks; setup.py
declares every package pabt_tf imports."""

import ast
import os
import re
import time
import warnings

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import pabt_tf as pabt
from pabt_tf import schedules
from pabt_tf.cli import benchmark, convert

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- pabt-convert / pabt-benchmark: every number checked before anything runs -------------


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("numbers")
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((8, 8, 3))
    x = tf.keras.layers.BatchNormalization()(inp)
    x = pabt.PaBTConv2D(4, 3, padding="same", weight_bases=2, activation_bases=2)(x)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(3)(tf.keras.layers.Flatten()(x)))
    path = root / "small.keras"
    model.save(path)
    return str(path), root


@pytest.mark.parametrize(
    "option, value",
    [("--atol", "nan"), ("--atol", "inf"), ("--atol", "-inf"), ("--atol", "-0.001"),
     ("--atol", "1e400"), ("--min-top1", "nan"), ("--min-top1", "-0.1"),
     ("--min-top1", "1.5"), ("--min-top1", "inf")],
)  # fmt: skip
def test_convert_refuses_bad_numbers_before_converting(capsys, small_model, option, value):
    path, root = small_model
    out = root / "out.tflite"
    start = time.perf_counter()
    code = convert.main([path, str(out), f"{option}={value}"])  # "=": "-inf" is a value
    elapsed = time.perf_counter() - start
    stdout, stderr = capsys.readouterr()
    assert code == 2, stderr
    assert re.search(rf"error: {option} must be a finite number", stderr), stderr
    assert "Operators:" not in stdout and "Model " not in stdout  # nothing was loaded
    assert not out.exists() and elapsed < 5


@pytest.mark.parametrize("value", ["abc", "", "0x1p"])
def test_convert_refuses_non_numbers(capsys, small_model, value):
    path, root = small_model
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage and exit 2
        convert.main([path, str(root / "out.tflite"), f"--atol={value}"])
    assert exit_info.value.code == 2
    assert "argument --atol: invalid float value" in capsys.readouterr().err


def test_convert_accepts_the_edges(capsys, small_model):
    path, root = small_model
    out = root / "edges.tflite"
    code = convert.main([path, str(out), "--atol", "0.5", "--min-top1", "1", "--verify-samples", "8"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "verification PASSED on 8 samples" in stdout and "(≤ 0.5)" in stdout and "(≥ 100 %)" in stdout
    assert out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [(["--threads", "0"], "--threads must be an integer >= 1"),
     (["--threads", "1", "-2"], "--threads must be an integer >= 1"),
     (["--rounds", "0"], "--rounds must be an integer >= 1"),
     (["--repeats", "-1"], "--repeats must be an integer >= 1"),
     (["--k-sweep", "0"], "--k-sweep must be an integer >= 1")],
)  # fmt: skip
def test_benchmark_refuses_bad_numbers(capsys, tmp_path, argv, message):
    code = benchmark.main([str(tmp_path / "missing.tflite"), *argv])
    assert code == 2 and message in capsys.readouterr().err


def test_benchmark_refuses_non_integers(capsys, tmp_path):
    for option in ("--threads", "--rounds", "--repeats", "--k-sweep"):
        with pytest.raises(SystemExit) as exit_info:
            benchmark.main([str(tmp_path / "x.tflite"), option, "nan"])
        assert exit_info.value.code == 2
        assert f"argument {option}: invalid int value: 'nan'" in capsys.readouterr().err


# -- from_model: a Larq layer not binary on both sides stays float, with a note -----------


def _partly_binary(input_quantizer, kernel_quantizer) -> tf.keras.Model:
    tf.keras.utils.set_random_seed(0)
    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                  kernel_constraint="weight_clip")  # fmt: skip
    half = dict(input_quantizer=input_quantizer, kernel_quantizer=kernel_quantizer)
    inp = tf.keras.Input((6, 6, 3))
    x = lq.layers.QuantConv2D(4, 3, padding="same", pad_values=1.0, name="full", **binary)(inp)
    x = lq.layers.QuantConv2D(4, 3, padding="same", pad_values=1.0, name="half", **half)(x)
    x = tf.keras.layers.Flatten()(x)
    return tf.keras.Model(inp, lq.layers.QuantDense(3, name="dhalf", **half)(x))


@pytest.mark.parametrize(
    "input_quantizer, kernel_quantizer, not_binary",
    [(None, "ste_sign", "input_quantizer"),
     ("ste_sign", None, "kernel_quantizer"),
     ("ste_sign", lq.quantizers.DoReFa(k_bit=2, mode="weights"), "kernel_quantizer"),
     (lq.quantizers.DoReFa(k_bit=2, mode="activations"), "ste_sign", "input_quantizer")],
)  # fmt: skip
def test_from_model_notes_layers_not_binary_on_both_sides(input_quantizer, kernel_quantizer,
                                                          not_binary):
    model = _partly_binary(input_quantizer, kernel_quantizer)
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 3)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = pabt.from_model(model, weight_bases=1, activation_bases=1)
    notes = [str(w.message) for w in caught if "not binary on both sides" in str(w.message)]
    assert len(notes) == 2, [str(w.message) for w in caught]
    for note, (name, kind) in zip(notes, [("half", "QuantConv2D"), ("dhalf", "QuantDense")]):
        assert f"layer {name!r} ({kind}) is not binary on both sides" in note
        assert f"not 1-bit: {not_binary}" in note and "float layer for LCE" in note
    kinds = {layer.name: type(layer).__name__ for layer in converted.layers}
    assert kinds["full"] == "PaBTConv2D"
    assert kinds["half"] == "QuantConv2D" and kinds["dhalf"] == "QuantDense"
    for name in ("half", "dhalf"):  # copied as they were
        for a, b in zip(model.get_layer(name).get_weights(), converted.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    # M = N = 1 of a +1-padded BNN: the same function.
    np.testing.assert_allclose(converted.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_conversion_report_notes_a_float_quant_conv2d():
    """The same note at conversion, as for a binary QuantDense (which LCE keeps float)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = pabt.from_model(_partly_binary(None, "ste_sign"), weight_bases=1,
                                    activation_bases=1)  # fmt: skip
    report = pabt.export.convert_with_report(converted)
    notes = [n for n in report.notes if "not binary on both sides" in n]
    assert notes == ["Larq QuantConv2D 'half' runs as a float CONV_2D: it is not binary on "
                     "both sides (LceBconv2d needs 1-bit input and kernel quantizers)."]  # fmt: skip
    assert report.ok and report.op_counts.get("LceBconv2d") == 1 and report.op_counts["CONV_2D"] == 1


def test_from_model_binary_layers_give_no_note():
    model = _partly_binary("ste_sign", "ste_sign")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pabt.from_model(model)
    assert not [w for w in caught if "not binary on both sides" in str(w.message)]


# -- re-enabling a binary convolution while it fades out sticks ---------------------------


def _layer():
    tf.keras.utils.set_random_seed(0)
    layer = pabt.PaBTConv2D(4, 3, padding="same", weight_bases=2, activation_bases=2)
    layer.build((1, 6, 6, 3))
    return layer


def test_reenabling_a_fading_binary_conv_sticks():
    layer = _layer()
    assert layer.prune(0, 1, decay_steps=4)
    assert layer.pruning_in_progress[0, 1] and not layer.kept_binary_conv_mask[0, 1]
    layer.set_binary_conv_mask(np.ones((2, 2)))  # turn it back on, mid-fade
    assert layer.kept_binary_conv_mask.all() and not layer.pruning_in_progress.any()
    assert not layer.advance_soft_pruning(10, 4)  # nothing is fading any more
    assert layer.binary_conv_mask.all()
    np.testing.assert_array_equal(layer.gate_decay.numpy(), np.ones((2, 2)))
    np.testing.assert_allclose(layer.coefficients().numpy(), layer.gate.numpy())


def test_a_fading_binary_conv_turned_off_then_on_is_kept():
    layer = _layer()
    layer.prune(1, 0, decay_steps=5)
    layer.set_binary_conv_mask([[1, 1], [0, 1]])  # off at once: no decay left behind
    np.testing.assert_array_equal(layer.gate_decay.numpy(), np.ones((2, 2)))
    layer.set_binary_conv_mask(np.ones((2, 2)))
    assert layer.kept_binary_conv_mask.all() and not layer.pruning_in_progress.any()
    layer.advance_soft_pruning(5, 5)
    assert layer.binary_conv_mask.all()


class _ReEnable(tf.keras.callbacks.Callback):
    """At the start of training step `step`, turn every binary convolution back on."""

    def __init__(self, step: int):
        super().__init__()
        self.step, self.seen = step, None

    def on_train_batch_begin(self, batch, logs=None):
        layers = pabt.pabt_layers(self.model)
        if int(layers[0].pruning_step.numpy()) == self.step:
            self.seen = [layer.pruning_in_progress.copy() for layer in layers]
            for layer in layers:
                layer.set_binary_conv_mask(np.ones((2, 2)))


def test_reenabling_during_soft_pruning_in_fit_sticks():
    """The pruning callback soft-prunes at step 2 over 6 steps; at step 4 every binary
    convolution is turned back on: they stay on to the end (no later event)."""
    inputs = tf.keras.Input((8,))
    h = pabt.PaBTDense(6, weight_bases=2, activation_bases=2)(inputs)
    model = pabt.PaBTModel(inputs, pabt.PaBTDense(4, weight_bases=2, activation_bases=2)(h))
    model.compile(tf.keras.optimizers.SGD(0.01), "mse")
    callback = pabt.PaBTPruningCallback(schedules.OneShot(2), decay_steps=6)
    reenable = _ReEnable(4)
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(12, 8)), rng.normal(size=(12, 4)), batch_size=1, verbose=0,
              callbacks=[callback, reenable])
    assert [int(s.sum()) for s in reenable.seen] == [3, 3]  # fading when turned back on
    layers = pabt.pabt_layers(model)
    assert [layer.active_binary_convs for layer in layers] == [4, 4]
    for layer in layers:
        np.testing.assert_array_equal(layer.gate_decay.numpy(), np.ones((2, 2)))


# -- setup.py declares every package pabt_tf imports --------------------------------------

# Import name -> distribution name, where they differ.
_DISTRIBUTIONS = {"tf_keras": "tf-keras", "larq_compute_engine": "larq-compute-engine",
                  "tensorflow_datasets": "tensorflow-datasets", "absl": "absl-py", "PIL": "pillow"}  # fmt: skip


def _third_party_imports() -> set[str]:
    import sys

    found = set()
    for root, _, files in os.walk(os.path.join(REPO, "pabt_tf")):
        for name in files:
            if not name.endswith(".py"):
                continue
            with open(os.path.join(root, name), encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                found |= {m.split(".")[0] for m in modules}
    return {m for m in found if m not in sys.stdlib_module_names and m != "pabt_tf"}


def _install_requires() -> set[str]:
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "INSTALL_REQUIRES":
            return {re.split(r"[<>=!~\[; ]", ast.literal_eval(v))[0].lower()
                    for v in node.value.elts}  # fmt: skip
    raise AssertionError("no INSTALL_REQUIRES in setup.py")


def test_setup_declares_every_imported_package():
    imported = _third_party_imports()
    assert {"tensorflow", "numpy", "larq", "h5py", "flatbuffers"} <= imported  # the scan works
    required = _install_requires()
    missing = {_DISTRIBUTIONS.get(m, m) for m in imported} - required
    assert not missing, f"imported by pabt_tf, not in setup.py's install_requires: {missing}"
    # Summaries (tf.summary, Keras' TensorBoard callback) need TensorBoard, which
    # TensorFlow >= 2.20 no longer requires.
    assert "tensorboard" in required
