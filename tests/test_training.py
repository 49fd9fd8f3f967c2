"""PaBTModel: importance accumulation in train_step, Keras integration, serialization."""

import numpy as np
import pytest
import tensorflow as tf
from _training_utils import bop_optimizer, sparse_ce, tiny_fmnist_net

import pabt_tf as pabt
from pabt_tf.training import PaBTModel, importance_scores, update_importance


def _small_model(criterion="taylor", momentum=0.9, seed=1, model_cls=PaBTModel):
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((6, 6, 2))
    h = pabt.PaBTConv2D(4, 3, padding="same", weight_bases=2, activation_bases=3, use_bias=True)(
        inputs
    )
    h = tf.keras.layers.Flatten()(h)
    h = pabt.PaBTDense(6, weight_bases=3, activation_bases=2)(h)
    outputs = tf.keras.layers.Dense(3)(h)
    kwargs = {} if model_cls is not PaBTModel else dict(
        criterion=criterion, importance_momentum=momentum
    )
    model = model_cls(inputs=inputs, outputs=outputs, **kwargs)
    rng = np.random.default_rng(seed)
    for layer in pabt.pabt_layers(model):
        # Gates away from 1 and non-zero prior importances, so that both the gate factor
        # and the momentum formula are exercised.
        layer.gate.assign(rng.uniform(0.5, 1.5, layer.gate.shape).astype(np.float32))
        layer.importance_variable.assign(rng.uniform(0, 1, layer.gate.shape).astype(np.float32))
    return model


def _data(seed=2, n=16):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 3, n)
    w = rng.uniform(0.2, 2.0, n).astype(np.float32)
    return x, y, w


def _tape_reference(model, x, y, w, criterion, momentum):
    layers = pabt.pabt_layers(model)
    prior = [layer.importance.copy() for layer in layers]
    gates = [layer.gate.numpy().copy() for layer in layers]
    with tf.GradientTape() as tape:
        loss = sparse_ce()(y, model(x, training=True), sample_weight=w)
    grads = tape.gradient(loss, [layer.gate for layer in layers])
    expected = []
    for i0, g, dg in zip(prior, gates, grads):
        taylor = g * dg.numpy()
        score = np.abs(taylor) if criterion == "taylor" else taylor**2
        expected.append(momentum * i0 + (1 - momentum) * score)
    return expected, gates


@pytest.mark.parametrize("criterion", ["taylor", "taylor_squared"])
@pytest.mark.parametrize("run_eagerly", [False, True])
def test_importance_after_one_step_equals_tape(criterion, run_eagerly):
    momentum = 0.7
    model = _small_model(criterion, momentum)
    x, y, w = _data()
    expected, gates = _tape_reference(model, x, y, w, criterion, momentum)
    model.compile(tf.keras.optimizers.Adam(0.05), sparse_ce(), run_eagerly=run_eagerly)
    model.fit(x, y, sample_weight=w, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    for layer, want, gate in zip(pabt.pabt_layers(model), expected, gates):
        np.testing.assert_allclose(layer.importance, want, rtol=2e-5, atol=1e-7)
        # The step did update the gates; the importance used the pre-step values.
        assert not np.allclose(layer.gate.numpy(), gate)
    assert int(model.nonfinite_steps.numpy()) == 0


def test_taylor_term_matches_finite_differences():
    """The Taylor term gate·∂L/∂gate, checked without autodiff: the loss is smooth in
    the gates of a PaBT layer followed only by float layers."""
    tf.keras.utils.set_random_seed(3)
    inputs = tf.keras.Input((5, 5, 2))
    layer = pabt.PaBTConv2D(3, 3, padding="valid", weight_bases=2, activation_bases=2)
    h = tf.keras.layers.Flatten()(layer(inputs))
    model = PaBTModel(inputs, tf.keras.layers.Dense(3)(h), importance_momentum=0.0)
    layer.gate.assign([[0.8, 1.3], [1.1, 0.6]])
    rng = np.random.default_rng(4)
    x = rng.normal(size=(8, 5, 5, 2)).astype(np.float32)
    y = rng.integers(0, 3, 8)

    def loss():
        return float(sparse_ce()(y, model(x, training=True)))

    gate = layer.gate.numpy().astype(np.float64)
    fd = np.zeros_like(gate)
    for m in range(2):
        for n in range(2):
            h_ = 1e-2
            for sign in (1, -1):
                g = gate.copy()
                g[m, n] += sign * h_
                layer.gate.assign(g.astype(np.float32))
                fd[m, n] += sign * loss() / (2 * h_)
    layer.gate.assign(gate.astype(np.float32))
    model.compile(tf.keras.optimizers.SGD(0.0), sparse_ce())
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    np.testing.assert_allclose(layer.importance, np.abs(gate * fd), rtol=2e-2, atol=1e-5)
    assert layer.importance.min() > 0


def test_importance_scores_and_update_importance_function():
    gate = tf.constant([[2.0, -1.0]])
    grad = tf.constant([[0.5, 3.0]])
    np.testing.assert_allclose(importance_scores(gate, grad, "taylor"), [[1.0, 3.0]])
    np.testing.assert_allclose(importance_scores(gate, grad, "taylor_squared"), [[1.0, 9.0]])
    with pytest.raises(ValueError, match="`criterion`"):
        importance_scores(gate, grad, "magnitude")
    # In a custom loop: a plain tf.keras.Model whose importances are updated by hand.
    model = _small_model(model_cls=tf.keras.Model)
    x, y, w = _data()
    expected, _ = _tape_reference(model, x, y, w, "taylor", 0.5)
    with tf.GradientTape() as tape:
        loss = sparse_ce()(y, model(x, training=True), sample_weight=w)
    variables = model.trainable_variables
    applied = update_importance(model, zip(tape.gradient(loss, variables), variables), momentum=0.5)
    assert bool(applied)
    for layer, want in zip(pabt.pabt_layers(model), expected):
        np.testing.assert_allclose(layer.importance, want, rtol=2e-5)
    with pytest.raises(ValueError, match="`importance_momentum`"):
        update_importance(model, [], momentum=1.0)


def test_nonfinite_gradients_never_reach_importances():
    model = _small_model()
    x, y, _ = _data()
    x[3, 0, 0, 0] = np.nan
    before = [layer.importance.copy() for layer in pabt.pabt_layers(model)]
    model.compile(tf.keras.optimizers.SGD(0.0), sparse_ce())
    with pytest.warns(UserWarning, match="skipped because their gradients were not finite") as record:
        model.fit(x, y, batch_size=len(x), epochs=2, verbose=0)
    for layer, want in zip(pabt.pabt_layers(model), before):
        np.testing.assert_array_equal(layer.importance, want)
    assert int(model.nonfinite_steps.numpy()) == 2
    # Warned with the count, once per epoch that had skipped steps (a Python warning at
    # the epoch's end, no tf.print in the step).
    messages = [str(w.message) for w in record if "not finite" in str(w.message)]
    assert len(messages) == 2
    assert "1 training step(s) of epoch 1" in messages[0] and "1 so far" in messages[0]
    assert "1 training step(s) of epoch 2" in messages[1] and "2 so far" in messages[1]


@pytest.mark.parametrize("kwargs, argument", [
    (dict(criterion="l1"), "criterion"),
    (dict(importance_momentum=1.0), "importance_momentum"),
    (dict(importance_momentum=-0.1), "importance_momentum"),
    (dict(importance_momentum="0.9"), "importance_momentum"),
])
def test_constructor_validation(kwargs, argument):
    inputs = tf.keras.Input((4,))
    outputs = pabt.PaBTDense(2, weight_bases=1, activation_bases=1)(inputs)
    with pytest.raises(ValueError, match=f"`{argument}`"):
        PaBTModel(inputs, outputs, **kwargs)
    with pytest.raises(ValueError, match="inputs"):
        PaBTModel()


def test_serialization_round_trip(tmp_path):
    model = _small_model("taylor_squared", 0.8)
    x, y, w = _data()
    model.compile(tf.keras.optimizers.Adam(0.01), sparse_ce(), metrics=["accuracy"])
    model.fit(x, y, sample_weight=w, batch_size=8, epochs=1, verbose=0)
    config = model.get_config()
    assert config["criterion"] == "taylor_squared" and config["importance_momentum"] == 0.8
    clone = PaBTModel.from_config(config)
    assert (clone.criterion, clone.importance_momentum) == ("taylor_squared", 0.8)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)

    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = tf.keras.models.load_model(path)  # no custom_objects
    assert type(loaded) is PaBTModel
    assert (loaded.criterion, loaded.importance_momentum) == ("taylor_squared", 0.8)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    for a, b in zip(pabt.pabt_layers(loaded), pabt.pabt_layers(model)):
        np.testing.assert_array_equal(a.importance, b.importance)
    # The loaded model keeps training and accumulating with its restored optimizer.
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert not np.array_equal(
        pabt.pabt_layers(loaded)[0].importance, pabt.pabt_layers(model)[0].importance
    )


def test_from_functional_shares_layers_and_evaluate_predict():
    inner = _small_model(model_cls=tf.keras.Model)
    with pytest.raises(ValueError, match="functional"):
        PaBTModel.from_functional(object())
    model = PaBTModel.from_functional(inner, importance_momentum=0.0)
    assert model.name == inner.name and model.importance_momentum == 0.0
    assert all(a is b for a, b in zip(pabt.pabt_layers(model), pabt.pabt_layers(inner)))
    x, y, w = _data()
    expected, _ = _tape_reference(model, x, y, w, "taylor", 0.0)
    model.compile(tf.keras.optimizers.legacy.SGD(0.1), sparse_ce(), metrics=["accuracy"])
    model.fit(x, y, sample_weight=w, batch_size=len(x), verbose=0)
    for layer, want in zip(pabt.pabt_layers(inner), expected):
        np.testing.assert_allclose(layer.importance, want, rtol=2e-5)
    loss, acc = model.evaluate(x, y, verbose=0)
    assert np.isfinite(loss) and 0 <= acc <= 1
    assert model.predict(x, verbose=0).shape == (16, 3)
    # evaluate/predict do not touch the importances
    before = [layer.importance.copy() for layer in pabt.pabt_layers(model)]
    model.evaluate(x, y, verbose=0)
    for layer, b in zip(pabt.pabt_layers(model), before):
        np.testing.assert_array_equal(layer.importance, b)


def test_case_optimizer_with_bop_updates_only_binary_kernels_by_flips():
    model = tiny_fmnist_net(latent_weights=False, channels=(4, 4, 8), batch_norm=False)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(32, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    model.compile(bop_optimizer(), sparse_ce())
    kernels = [k for layer in pabt.pabt_layers(model) for k in layer.kernels]
    before = [k.latent_variable.numpy().copy() for k in kernels]
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    after = [k.latent_variable.numpy() for k in kernels]
    for b, a in zip(before, after):
        assert set(np.unique(a)) <= {-1.0, 1.0}  # still ±1: Bop flips, no latent weight
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))
    assert all(np.any(layer.importance > 0) for layer in pabt.pabt_layers(model))
