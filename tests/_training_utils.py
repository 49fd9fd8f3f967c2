"""Small models and data shared by the training / callback / resume / distributed tests
(also imported by the subprocess entry points in this directory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pabt_tf as pabt  # noqa: E402  (Keras 2 before TensorFlow)

# isort: split
import larq as lq  # noqa: E402
import tensorflow as tf  # noqa: E402

from pabt_tf.data import load_fashion_mnist  # noqa: E402


def tiny_fmnist_net(
    latent_weights: bool = True,
    batch_norm: bool = True,
    bases: tuple[int, int] = (2, 2),
    channels: tuple[int, int, int] = (16, 16, 32),
    model_cls=None,
    **model_kwargs,
) -> tf.keras.Model:
    """Float conv stem -> 2 PaBT convs (max pooling between) -> flatten -> dense, for 28x28x1 inputs."""
    M, N = bases
    c0, c1, c2 = channels
    inputs = tf.keras.Input((28, 28, 1))
    h = tf.keras.layers.Conv2D(c0, 3, strides=2, padding="same", use_bias=not batch_norm)(inputs)
    if batch_norm:
        h = tf.keras.layers.BatchNormalization(momentum=0.9)(h)
    h = pabt.PaBTConv2D(
        c1, 3, padding="same", weight_bases=M, activation_bases=N, latent_weights=latent_weights
    )(h)
    if batch_norm:
        h = tf.keras.layers.BatchNormalization(momentum=0.9)(h)
    h = tf.keras.layers.MaxPool2D(2)(h)
    h = pabt.PaBTConv2D(
        c2, 3, padding="same", weight_bases=M, activation_bases=N, latent_weights=latent_weights
    )(h)
    if batch_norm:
        h = tf.keras.layers.BatchNormalization(momentum=0.9)(h)
    h = tf.keras.layers.Flatten()(h)
    outputs = tf.keras.layers.Dense(10)(h)
    model_cls = pabt.PaBTModel if model_cls is None else model_cls
    return model_cls(inputs=inputs, outputs=outputs, **model_kwargs)


def bop_optimizer(lr: float = 0.01, gamma: float = 1e-3, threshold: float = 1e-6):
    """Latent-weight-free training: Bop for the ±1 kernels, Adam for the rest (Bop's
    gamma/threshold raised from Larq's defaults so that a few dozen steps flip bits)."""
    return lq.optimizers.CaseOptimizer(
        (lq.optimizers.Bop.is_binary_variable, lq.optimizers.Bop(threshold=threshold, gamma=gamma)),
        default_optimizer=tf.keras.optimizers.legacy.Adam(lr),
    )


def sparse_ce():
    return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def fmnist(train_limit: int, test_limit: int = 0):
    x, y = load_fashion_mnist("train", limit=train_limit)
    if not test_limit:
        return x, y
    xt, yt = load_fashion_mnist("test", limit=test_limit)
    return x, y, xt, yt


def small_bn_net(bases=((2, 3), (2, 2)), model_cls=None, **model_kwargs) -> tf.keras.Model:
    """8x8x1 -> float conv + BN -> PaBT conv + BN -> flatten -> PaBT dense (3 outputs)."""
    (m1, n1), (m2, n2) = bases
    inputs = tf.keras.Input((8, 8, 1))
    h = tf.keras.layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False)(inputs)
    h = tf.keras.layers.BatchNormalization(momentum=0.9)(h)
    h = pabt.PaBTConv2D(4, 3, padding="same", weight_bases=m1, activation_bases=n1)(h)
    h = tf.keras.layers.BatchNormalization(momentum=0.9)(h)
    h = tf.keras.layers.Flatten()(h)
    outputs = pabt.PaBTDense(3, weight_bases=m2, activation_bases=n2)(h)
    model_cls = pabt.PaBTModel if model_cls is None else model_cls
    return model_cls(inputs=inputs, outputs=outputs, **model_kwargs)


def run_in_fresh_process(script: str, cwd: str) -> dict:
    """Run `script` in a new Python that only does `import pabt_tf` for Keras 2 (no
    TF_USE_LEGACY_KERAS in its environment); its last stdout line is JSON, returned."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_USE_LEGACY_KERAS", None)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


class StopAtEpoch(tf.keras.callbacks.Callback):
    """Stops training at the start of epoch `epoch`, as a kill would."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("simulated kill")
