"""Serialisation: configs, `.keras` (fresh process, no custom_objects), SavedModel,
HDF5 and `tf.train.Checkpoint` keep outputs and all PaBT state identical."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from _training_utils import run_in_fresh_process

import pabt_tf as pabt
from pabt_tf.layers import PaBTConv2D, PaBTDense
from pabt_tf.quantizers import ABCWeightBases, MultiBaseSign, RandomSign

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_model():
    """Every base kind, latent-free included, per-channel thresholds, bias, activation."""
    inputs = tf.keras.Input((6, 6, 3))
    x = PaBTConv2D(4, 3, padding="same", weight_bases=2, activation_bases=3,
                   per_channel_thresholds=True, use_bias=True, name="independent")(inputs)
    x = PaBTConv2D(4, 3, weight_bases=3, activation_bases=2, latent_weights=False,
                   name="latent_free")(x)
    x = PaBTConv2D(4, (3, 2), padding="same", weight_bases=2, activation_bases=2,
                   bases="abc", activation_quantizer="approx_sign", name="abc")(x)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.Flatten()(x)
    outputs = PaBTDense(5, weight_bases=2, activation_bases=2, activation="relu",
                        latent_weights=False, name="dense")(x)
    return pabt.PaBTModel(inputs=inputs, outputs=outputs, name="net")


def randomize_state(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in pabt.pabt_layers(model):
        M, N = layer.weight_bases, layer.activation_bases
        mask = rng.random((M, N)) < 0.5
        mask[rng.integers(M), rng.integers(N)] = True
        layer.set_binary_conv_mask(mask)
        layer.gate.assign(rng.uniform(0.5, 1.5, (M, N)))
        layer.importance_variable.assign(rng.random((M, N)))
        layer.gate_decay.assign(rng.uniform(0.2, 1.0, (M, N)))
        layer.scale.assign(rng.uniform(0.2, 1.0, layer.scale.shape))
        t = layer.input_quantizer.thresholds
        t.assign(rng.uniform(-0.5, 0.5, t.shape))
        layer.pruning_step.assign(int(rng.integers(1, 1000)))


def pabt_state(model):
    """Every PaBT state that must survive, as numpy, by layer name."""
    out = {}
    for layer in pabt.pabt_layers(model):
        for key, value in {
            "mask": layer.binary_conv_mask,
            "importance": layer.importance,
            "gate": layer.gate.numpy(),
            "gate_decay": layer.gate_decay.numpy(),
            "thresholds": layer.input_quantizer.thresholds.numpy(),
            "scale": layer.scale.numpy(),
            "pruning_step": layer.pruning_step.numpy(),
            "binary_kernels": layer.binary_kernels().numpy(),
        }.items():
            out[f"{layer.name}/{key}"] = np.asarray(value)
    return out


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture()
def trained():
    model = build_model()
    randomize_state(model)
    x = np.random.default_rng(1).normal(size=(3, 6, 6, 3)).astype(np.float32)
    return model, x, model(x).numpy()


# -- configs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [
        lambda: PaBTConv2D(3, (3, 2), strides=(2, 1), padding="same", weight_bases=2,
                           activation_bases=3, per_channel_thresholds=True,
                           threshold_spread=0.3, use_bias=True, activation="relu",
                           kernel_initializer=tf.keras.initializers.RandomNormal(seed=4),
                           activation_quantizer="approx_sign",
                           kernel_quantizer="swish_sign", name="a"),
        lambda: PaBTConv2D(3, 3, dilation_rate=2, weight_bases=1, activation_bases=2,
                           latent_weights=False, name="b"),
        lambda: PaBTConv2D(3, 3, bases="abc", weight_bases=3, name="c"),
        lambda: PaBTDense(4, weight_bases=2, activation_bases=1, latent_weights=False,
                          kernel_initializer=RandomSign(seed=3), name="d"),
        lambda: PaBTDense(4, bases="abc", use_bias=True, name="e"),
    ],
)
def test_layer_config_round_trip(layer):
    layer = layer()
    shape = (2, 7, 7, 3) if isinstance(layer, PaBTConv2D) else (2, 5)
    layer.build(shape)
    config = layer.get_config()
    json.dumps(tf.keras.utils.serialize_keras_object(layer))  # JSON-serialisable
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone.build(shape)
    clone.set_weights(layer.get_weights())
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    np.testing.assert_array_equal(clone(x), layer(x))
    # Also through Keras' generic (de)serialisation, with no custom_objects.
    again = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
    assert type(again) is type(layer) and again.get_config() == config


def test_quantizer_config_round_trip():
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 4, 3)).astype(np.float32))
    q = MultiBaseSign(3, per_channel=True, threshold_spread=0.2, pseudo_gradient="approx_sign")
    q.build(x.shape)
    clone = MultiBaseSign.from_config(q.get_config())
    assert clone.get_config() == q.get_config()
    clone.build(x.shape)
    np.testing.assert_array_equal(clone.thresholds.numpy(), q.thresholds.numpy())
    np.testing.assert_array_equal(clone(x), q(x))

    abc = ABCWeightBases(4)
    clone = ABCWeightBases.from_config(abc.get_config())
    assert clone.weight_bases == 4
    np.testing.assert_array_equal(clone(x), abc(x))

    init = RandomSign(seed=5)
    again = tf.keras.initializers.deserialize(tf.keras.initializers.serialize(init))
    assert isinstance(again, RandomSign) and again.get_config() == {"seed": 5}
    np.testing.assert_array_equal(again((4, 4)), init((4, 4)))


# -- whole models ----------------------------------------------------------------------


def test_keras_file_loads_in_a_fresh_process_without_custom_objects(trained, tmp_path):
    model, x, y = trained
    path = str(tmp_path / "model.keras")
    model.save(path)
    np.savez(tmp_path / "expected.npz", x=x, y=y, **pabt_state(model))
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        import pabt_tf as pabt
        import tensorflow as tf
        sys.path.insert(0, {os.path.join(ROOT, "tests")!r})
        from test_serialization import pabt_state
        model = tf.keras.models.load_model({path!r})
        expected = dict(np.load({str(tmp_path / "expected.npz")!r}))
        state = pabt_state(model)
        print(json.dumps({{
            "class": type(model).__name__,
            "max_diff": float(np.abs(model(expected.pop("x")).numpy() - expected.pop("y")).max()),
            "keys_equal": sorted(state) == sorted(expected),
            "mismatched": [k for k in expected if not np.array_equal(state[k], expected[k])],
        }}))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_USE_LEGACY_KERAS", None)  # the fresh process relies on `import pabt_tf`
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, cwd=str(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"class": "PaBTModel", "max_diff": 0.0, "keys_equal": True,
                      "mismatched": []}


@pytest.mark.parametrize("route", ["savedmodel", "h5"])
def test_savedmodel_and_h5(trained, tmp_path, route):
    model, x, y = trained
    path = str(tmp_path / ("sm" if route == "savedmodel" else "model.h5"))
    if route == "h5":  # legacy format: PaBT layers in a plain functional model
        model = tf.keras.Model(model.inputs, model.outputs)
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    np.testing.assert_array_equal(loaded(x), y)
    assert_same_state(pabt_state(loaded), pabt_state(model))
    if route == "savedmodel":  # plain TensorFlow, no Keras objects
        restored = tf.saved_model.load(path)
        out = restored.signatures["serving_default"](tf.constant(x))
        np.testing.assert_array_equal(list(out.values())[0], y)


def test_pabt_model_h5_loads_in_a_fresh_process_without_custom_objects(trained, tmp_path):
    """Issue 8, defect 6: HDF5 names the model class without its package prefix."""
    model, x, y = trained
    model.compile(tf.keras.optimizers.Adam(0.01), "mse")
    path = str(tmp_path / "model.h5")
    model.save(path)
    np.savez(tmp_path / "expected.npz", x=x, y=y, **pabt_state(model))
    result = run_in_fresh_process(
        f"""
import json, sys
import numpy as np
import pabt_tf as pabt
import tensorflow as tf
sys.path.insert(0, {os.path.join(ROOT, "tests")!r})
from test_serialization import pabt_state
model = tf.keras.models.load_model({path!r})  # no custom_objects
expected = dict(np.load("expected.npz"))
state = pabt_state(model)
print(json.dumps({{
    "class": type(model).__name__,
    "config": [model.criterion, model.importance_momentum],
    "optimizer": type(model.optimizer).__name__,
    "max_diff": float(np.abs(model(expected.pop("x")).numpy() - expected.pop("y")).max()),
    "mismatched": [k for k in expected if not np.array_equal(state[k], expected[k])],
}}))
""",
        cwd=str(tmp_path),
    )
    assert result == {"class": "PaBTModel", "config": ["taylor", 0.99], "optimizer": "Adam",
                      "max_diff": 0.0, "mismatched": []}  # fmt: skip


def test_checkpoint_restores_everything(trained, tmp_path):
    model, x, y = trained
    prefix = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    tf.keras.utils.set_random_seed(123)
    other = build_model()  # fresh weights, full masks, zero importances
    assert not np.array_equal(other(x).numpy(), y)
    status = tf.train.Checkpoint(model=other).restore(prefix)
    status.assert_consumed()
    np.testing.assert_array_equal(other(x), y)
    assert_same_state(pabt_state(other), pabt_state(model))


def test_checkpoint_with_optimizer_state_after_bop_training(tmp_path):
    """Latent-free kernels (QuantizedVariables) and Bop/Adam slots checkpoint and restore,
    and training continues identically."""
    import larq as lq

    def make():
        model = build_model()
        opt = lq.optimizers.CaseOptimizer(
            (lq.optimizers.Bop.is_binary_variable, lq.optimizers.Bop(threshold=1e-6, gamma=1e-2)),
            default_optimizer=tf.keras.optimizers.legacy.Adam(0.01),
        )
        model.compile(opt, loss="mse")
        return model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6, 6, 3)).astype(np.float32)
    t = rng.normal(size=(16, 5)).astype(np.float32)
    model = make()
    model.fit(x, t, batch_size=8, epochs=1, verbose=0, shuffle=False)
    prefix = tf.train.Checkpoint(model=model, optimizer=model.optimizer).save(
        str(tmp_path / "ckpt")
    )
    model.fit(x, t, batch_size=8, epochs=1, verbose=0, shuffle=False)
    tf.keras.utils.set_random_seed(5)
    other = make()
    other.fit(x[:8], t[:8], batch_size=8, epochs=1, verbose=0)  # create slots
    tf.train.Checkpoint(model=other, optimizer=other.optimizer).restore(prefix)
    other.optimizer.var_opt_mapping = None  # recomputed for the new variables
    other.fit(x, t, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert_same_state(pabt_state(other), pabt_state(model))
    np.testing.assert_allclose(other(x), model(x), atol=1e-6)
