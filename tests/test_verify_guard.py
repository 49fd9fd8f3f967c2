"""`pabt.verify` on malformed flatbuffers: a clear error, never a crash (issue 8, defect 3).

Each case runs in a child process, so a regression shows as a crash code, not a dead
test session."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CODE = r"""
import numpy as np, tensorflow as tf, larq as lq
import pabt_tf as pabt
import larq_compute_engine as lce
from pabt_tf.flatbuffer_guard import MalformedFlatbufferError
inputs = tf.keras.Input((8, 8, 2))
x = lq.layers.QuantConv2D(4, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                          pad_values=1.0, padding="same", use_bias=False)(inputs)
model = tf.keras.Model(inputs, tf.keras.layers.GlobalAveragePooling2D()(x))
good = lce.convert_keras_model(model)
x = np.random.default_rng(0).normal(size=(3, 8, 8, 2)).astype(np.float32)
assert pabt.verify(model, good, x).max_abs_diff < 1e-4
rng = np.random.default_rng(1)
cases = {"header only": good[:16], "half": good[: len(good) // 2], "tail cut": good[:-7]}
for i in range(12):
    bad = bytearray(good)
    for pos in rng.integers(8, len(good), size=4):
        bad[pos] = rng.integers(0, 256)
    cases[f"corrupted {i}"] = bytes(bad)
rejected = 0
for name, data in cases.items():
    print("case", name, flush=True)
    try:
        pabt.verify(model, data, x)
    except MalformedFlatbufferError as err:
        assert "`flatbuffer`" in str(err), err
        rejected += 1
    except ValueError as err:  # e.g. an input shape the corrupted model now expects
        print("value error", err)
print("REJECTED", rejected, "OF", len(cases))
"""


def test_verify_rejects_truncated_and_corrupted_flatbuffers_without_crashing():
    result = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    line = [text for text in result.stdout.splitlines() if text.startswith("REJECTED")][0]
    rejected = int(line.split()[1])
    assert rejected >= 3  # every truncation at least; corruptions of weight bytes may be valid
