"""`pabt-benchmark MODEL.tflite --latency-table OUT.json` on this host: the Keras model
beside the flatbuffer measured into a table a pruning callback accepts."""

import numpy as np
import pytest
import tensorflow as tf

import pabt_tf as pabt
from pabt_tf.cli.benchmark import main
from pabt_tf.export import LatencyTable


def _model():
    tf.keras.utils.set_random_seed(0)
    x = tf.keras.Input((16, 16, 3))
    h = tf.keras.layers.Conv2D(32, 3, padding="same")(x)
    h = tf.keras.layers.BatchNormalization()(h)
    h = pabt.PaBTConv2D(32, 3, padding="same", weight_bases=2, activation_bases=2, name="p0")(h)
    h = tf.keras.layers.BatchNormalization()(h)
    h = pabt.PaBTConv2D(32, 3, padding="same", weight_bases=2, activation_bases=1, name="p1")(h)
    h = tf.keras.layers.GlobalAveragePooling2D()(h)
    return pabt.PaBTModel(x, tf.keras.layers.Dense(4)(h))


def test_host_table_from_the_keras_model_beside_the_flatbuffer(tmp_path, capsys):
    model = _model()
    model.save(tmp_path / "m.keras")
    (tmp_path / "m.tflite").write_bytes(pabt.convert(model))
    out = tmp_path / "table.json"
    code = main([str(tmp_path / "m.tflite"), "--latency-table", str(out), "--threads", "1",
                 "--kernels", "indirect_bgemm"])
    printed = capsys.readouterr().out
    assert code == 0 and "on this host (1 thread(s))" in printed and "Wrote" in printed
    table = LatencyTable.load(out)
    assert table.layer_names == ["p0", "p1"] and table.source == "host" and table.threads == 1
    assert [(r.weight_bases, r.activation_bases) for r in table.layers] == [(2, 2), (2, 1)]
    assert table.input_shape == [1, 16, 16, 3]
    assert all(r.per_conv_ms > 0 for r in table.layers)
    low, high = table.range_ms()
    assert low < high == pytest.approx(table.unpruned_ms)
    # The file drives the callback for the model it was measured on.
    callback = pabt.PaBTPruningCallback(pabt.schedules.PolynomialDecay(0, 10, frequency=2),
                                        latency_budget_ms=float(np.mean([low, high])),
                                        latency_table=str(out))
    assert callback.latency_table == table
    table.check_model(model)


def test_host_table_without_a_keras_model_names_the_flag(tmp_path, capsys):
    model = _model()
    (tmp_path / "alone.tflite").write_bytes(pabt.convert(model))
    code = main([str(tmp_path / "alone.tflite"), "--latency-table", str(tmp_path / "t.json")])
    assert code == 2
    assert "--keras-model" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()
