"""`convert` names non-finite weights (issue 8, defect 7) and exports a model trained under
a mixed-precision policy (defect 9) — each in a fresh process, as a user would."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MIXED = r"""
import numpy as np, tensorflow as tf
import pabt_tf as pabt
tf.keras.mixed_precision.set_global_policy("mixed_float16")
inputs = tf.keras.Input((8, 8, 2))
x = pabt.PaBTConv2D(4, 3, padding="same", weight_bases=2, activation_bases=2, name="p")(inputs)
x = tf.keras.layers.BatchNormalization()(x)
x = tf.keras.layers.GlobalAveragePooling2D()(x)
out = tf.keras.layers.Dense(3, dtype="float32")(x)
model = pabt.PaBTModel(inputs, out)
model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
xs = np.random.default_rng(0).normal(size=(32, 8, 8, 2)).astype(np.float32)
model.fit(xs, np.arange(32) % 3, epochs=1, batch_size=16, verbose=0)
model.get_layer("p").prune(1, 1)
flatbuffer = pabt.convert(model)
counts = pabt.export.operator_counts(flatbuffer)
assert counts.get("LceBconv2d", 0) >= 1, counts
from pabt_tf.export.precision import float32_model
reference = float32_model(model)
assert reference.get_layer("p").compute_dtype == "float32"
result = pabt.verify(reference, flatbuffer, xs)
assert result.max_abs_diff < 1e-3 and result.top1_agreement == 1.0, result
print("MIXED-OK", tf.keras.mixed_precision.global_policy().name)
"""

NAN = r"""
import numpy as np, tensorflow as tf
import pabt_tf as pabt
inputs = tf.keras.Input((8, 8, 2))
x = pabt.PaBTConv2D(4, 3, padding="same", weight_bases=1, activation_bases=1, name="p")(inputs)
x = tf.keras.layers.BatchNormalization(name="bn")(x)
model = pabt.PaBTModel(inputs, tf.keras.layers.GlobalAveragePooling2D()(x))
bn = model.get_layer("bn")
bn.gamma.assign(np.array([1.0, np.nan, 1.0, 1.0], np.float32))
try:
    pabt.convert(model)
except ValueError as err:
    assert "not finite" in str(err) and "gamma" in str(err), err
    print("NAN-OK")
"""


def _run(code):
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_mixed_precision_model_converts_and_matches_its_float32_function():
    result = _run(MIXED)
    assert result.returncode == 0 and "MIXED-OK mixed_float16" in result.stdout, result.stderr[-3000:]


def test_convert_names_non_finite_weights():
    result = _run(NAN)
    assert result.returncode == 0 and "NAN-OK" in result.stdout, result.stderr[-3000:]
