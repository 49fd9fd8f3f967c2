"""Dilated binary convolutions on a CPU without oneDNN (TensorFlow's default on AMD and
other non-Intel CPUs, where the stock kernels have no dilated `Conv2DBackpropInput`).

In a child process with `TF_ENABLE_ONEDNN_OPTS=0`, whatever this machine's CPU: a PaBT
network with dilated 'same' and 'valid' binary convolutions trains (gradients reach the
input and the kernels), is pruned to a BNN by the callback, is stripped and converted by
LCE, and the flatbuffer matches Keras.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import json
import numpy as np
import pabt_tf as pabt
import tensorflow as tf

tf.keras.utils.set_random_seed(0)
inputs = tf.keras.Input((12, 12, 3))
x = tf.keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
x = tf.keras.layers.BatchNormalization()(x)
x = pabt.layers.PaBTConv2D(8, 3, padding="same", dilation_rate=2, weight_bases=2,
                           activation_bases=2, name="dil_same")(x)
x = tf.keras.layers.BatchNormalization()(x)
x = pabt.layers.PaBTConv2D(8, 3, padding="valid", dilation_rate=(2, 3), weight_bases=2,
                           activation_bases=2, name="dil_valid")(x)
x = tf.keras.layers.BatchNormalization()(x)
x = tf.keras.layers.GlobalAveragePooling2D()(x)
outputs = tf.keras.layers.Dense(3)(x)
model = pabt.PaBTModel(inputs, outputs)
model.compile(tf.keras.optimizers.Adam(1e-2),
              tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
images = rng.normal(size=(64, 12, 12, 3)).astype(np.float32)
labels = rng.integers(0, 3, 64)

# Gradients through both dilated layers, down to the input.
with tf.GradientTape() as tape:
    x_in = tf.constant(images[:4])
    tape.watch(x_in)
    loss = tf.reduce_sum(model(x_in, training=True))
grad_input = tape.gradient(loss, x_in)

callback = pabt.PaBTPruningCallback(pabt.schedules.PolynomialDecay(2, 10, frequency=2))
history = model.fit(images, labels, batch_size=4, epochs=1, verbose=0, callbacks=[callback])
flatbuffer = pabt.convert(model)
result = pabt.verify(model, flatbuffer, images[:8])
from pabt_tf.export import operator_counts
print("RESULT", json.dumps({
    "onednn": __import__("os").environ.get("TF_ENABLE_ONEDNN_OPTS"),
    "grad_input_max": float(tf.reduce_max(tf.abs(grad_input))),
    "loss_finite": bool(np.isfinite(history.history["loss"][-1])),
    "mean_binary_convs": pabt.mean_binary_convs(model),
    "bconvs": int(operator_counts(flatbuffer).get("LceBconv2d", 0)),
    "ok": bool(result.ok), "max_abs_diff": float(result.max_abs_diff),
}))
"""


def test_dilated_pabt_trains_prunes_and_converts_without_onednn():
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_USE_LEGACY_KERAS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [row for row in proc.stdout.splitlines() if row.startswith("RESULT ")][-1]
    got = json.loads(line[len("RESULT "):])
    assert got["onednn"] == "0"
    assert got["grad_input_max"] > 0 and got["loss_finite"]
    assert got["mean_binary_convs"] == 1.0  # pruned to a BNN
    assert got["bconvs"] == 2  # one LceBconv2d per binary layer, none left float
    assert got["ok"], got
