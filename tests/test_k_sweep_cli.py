"""`pabt-benchmark --k-sweep`: a user's model converted with k active binary convolutions
per layer, fused and unfused, timed against its k = 1 network (issue 10)."""

import numpy as np
import pytest
import tensorflow as tf

import pabt_tf as pabt
from pabt_tf.cli import benchmark
from pabt_tf.layers import PaBTConv2D

L = tf.keras.layers


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A small PaBT model as pabt-convert leaves it: model.keras and model.tflite."""
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((8, 8, 8))
    x = L.BatchNormalization()(inp)
    x = PaBTConv2D(8, 3, padding="same", name="c0")(x)
    x = PaBTConv2D(8, 3, padding="same", name="c1")(L.BatchNormalization()(x))
    model = tf.keras.Model(inp, x)
    for layer in pabt.pabt_layers(model):
        layer.set_binary_conv_mask(np.eye(3, dtype=bool))
    root = tmp_path_factory.mktemp("k_sweep")
    model.save(str(root / "model.keras"))
    (root / "model.tflite").write_bytes(pabt.convert(model))
    return root


def test_k_sweep_reports_each_k_fused_and_unfused(saved_model, capsys):
    code = benchmark.main([str(saved_model / "model.tflite"), "--k-sweep", "2", "--patterns",
                           "same_activation", "--rounds", "1", "--repeats", "1"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "k-sweep of" in out and "k = [1, 2], patterns ['same_activation']" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("1 ")]
    # threads, k, pattern, LceBconv2d fused/unfused (2 layers): k = 1, then k = 2 fused.
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("1", "same_activation", "2/2"), ("2", "same_activation", "2/4")]  # fmt: skip
    assert "same graph" in " ".join(rows[0]) and "load average" in out


@pytest.mark.parametrize("extra, message", [
    (["--device", "adb"], "--k-sweep times on this host"),
    (["--patterns", "diagonal"], "unknown pattern"),
    (["--keras-model", "missing.keras"], "does not exist"),
])  # fmt: skip
def test_k_sweep_refuses_what_it_cannot_do(saved_model, capsys, extra, message):
    code = benchmark.main([str(saved_model / "model.tflite"), "--k-sweep", "2", *extra])
    assert code == 2 and message in capsys.readouterr().err


def test_k_sweep_k_out_of_range(saved_model, capsys):
    code = benchmark.main([str(saved_model / "model.tflite"), "--k-sweep", "10",
                           "--rounds", "1", "--repeats", "1"])  # fmt: skip
    assert code == 2 and "1..9" in capsys.readouterr().err
