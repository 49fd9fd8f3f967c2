"""Training stays sound when the data is not (issue 8, defects 7 and 8).

A step whose gradients are not finite is skipped entirely, counted and warned about; the
pruning callback refuses to rank layers whose importances were never measured; and the
train step compiles with XLA (`jit_compile=True`), skipping included.
"""

import re

import numpy as np
import pytest
import tensorflow as tf
from _training_utils import bop_optimizer, small_bn_net, sparse_ce

import pabt_tf as pabt
from pabt_tf import schedules
from pabt_tf.nonfinite import nonfinite_weights


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, n)


def _optimizer_variables(optimizer):
    if isinstance(optimizer, tf.keras.optimizers.legacy.Optimizer):
        return optimizer.weights  # CaseOptimizer: its inner optimizers' variables
    return list(optimizer.variables)


def _snapshot(model):
    return ([np.array(w) for w in model.get_weights()],
            [np.array(v) for v in _optimizer_variables(model.optimizer)])  # fmt: skip


OPTIMIZERS = {
    "adam": lambda: tf.keras.optimizers.Adam(0.01),
    "legacy-sgd-momentum": lambda: tf.keras.optimizers.legacy.SGD(0.1, momentum=0.9),
    "case-bop": bop_optimizer,
}


@pytest.mark.parametrize(
    "optimizer, run_eagerly",
    [("adam", False), ("adam", True), ("legacy-sgd-momentum", False), ("case-bop", False)],
)
def test_step_with_one_nan_pixel_changes_nothing_and_is_counted(optimizer, run_eagerly):
    model = small_bn_net(importance_momentum=0.5)
    model.compile(OPTIMIZERS[optimizer](), sparse_ce(), metrics=["accuracy"],
                  run_eagerly=run_eagerly)  # fmt: skip
    x, y = _data(16)
    # Two finite steps first: optimizer slots, BN statistics, importances and metrics
    # all hold values a bad step could overwrite.
    model.fit(x, y, batch_size=8, verbose=0)
    weights, optimizer_variables = _snapshot(model)
    assert len(optimizer_variables) > 2 and all(np.isfinite(w).all() for w in weights)
    bad = x[:8].copy()
    bad[3, 4, 4, 0] = np.nan
    with pytest.warns(UserWarning, match=r"1 training step\(s\) of epoch 1 skipped"):
        history = model.fit(bad, y[:8], batch_size=8, verbose=0)
    after_weights, after_optimizer = _snapshot(model)
    # Every model weight bit-identical: kernels, gates, scales, thresholds, BN moving
    # statistics, masks, importances, pruning step.
    assert len(after_weights) == len(weights)
    for before, after in zip(weights, after_weights):
        np.testing.assert_array_equal(after, before)
    # The optimizer did not run: slots and iteration counters unchanged.
    for before, after in zip(optimizer_variables, after_optimizer):
        np.testing.assert_array_equal(after, before)
    assert int(model.nonfinite_steps.numpy()) == 1
    # The skipped step's NaN loss reached no metric (TerminateOnNaN would not fire).
    assert np.isfinite(history.history["loss"][0]) and np.isfinite(history.history["accuracy"][0])
    # The next finite step trains again.
    model.fit(x[:8], y[:8], batch_size=8, verbose=0)
    assert not np.array_equal(model.get_weights()[0], weights[0])
    assert int(model.nonfinite_steps.numpy()) == 1


def test_nan_batch_among_finite_ones_ends_finite_and_pruned():
    x, y = _data(8 * 12)
    x[8 * 5 + 2, 1, 1, 0] = np.nan  # one pixel of batch 5
    model = small_bn_net()
    model.compile(tf.keras.optimizers.Adam(0.01), sparse_ce(), metrics=["accuracy"])
    callback = pabt.PaBTPruningCallback(schedules.PolynomialDecay(2, 10, frequency=4))
    with pytest.warns(UserWarning, match=r"1 training step\(s\) of epoch 1 skipped"):
        history = model.fit(x, y, batch_size=8, shuffle=False, verbose=0, callbacks=[callback])
    assert int(model.nonfinite_steps.numpy()) == 1
    assert nonfinite_weights(model) == []
    assert np.isfinite(history.history["loss"]).all()
    layers = pabt.pabt_layers(model)
    assert [layer.active_binary_convs for layer in layers] == [1, 1]
    assert [e["step"] for e in callback.events] == [2, 6, 10]
    for layer in layers:
        assert np.isfinite(layer.importance).all() and layer.importance.max() > 0

    # Without the skip the same batch ruins a run: a plain tf.keras.Model applies it.
    plain = small_bn_net(model_cls=tf.keras.Model)
    plain.compile(tf.keras.optimizers.Adam(0.01), sparse_ce())
    plain.fit(x[40:48], y[40:48], batch_size=8, verbose=0)
    ruined = nonfinite_weights(plain)
    assert any("moving_mean" in name for name in ruined)  # BN statistics
    assert any("kernel_0" in name for name in ruined)  # PaBT latent kernels
    assert any(name.endswith("gate:0") for name in ruined)


def test_nonfinite_weights_names_exactly_the_poisoned_ones():
    model = small_bn_net()
    assert nonfinite_weights(model) == []
    conv = pabt.pabt_layers(model)[0]
    kernel = conv.kernels[1].latent_variable.numpy()
    kernel[0, 0, 0, 0] = np.inf
    conv.kernels[1].latent_variable.assign(kernel)
    bn = model.layers[2]
    bn.gamma.assign(np.full(bn.gamma.shape, np.nan, np.float32))
    assert nonfinite_weights(model) == [bn.gamma.name, conv.kernels[1].name]  # model.weights order


def test_callback_refuses_to_prune_when_importances_were_never_measured():
    x, y = _data(32)
    x[:, 0, 0, 0] = np.nan  # every step is skipped: importances stay zero
    model = small_bn_net()
    model.compile(tf.keras.optimizers.SGD(0.1), sparse_ce())
    callback = pabt.PaBTPruningCallback(schedules.OneShot(2))
    layers = pabt.pabt_layers(model)
    names = [layer.name for layer in layers]
    expected = re.escape(f"no importance measured for PaBT layers {names}")
    with pytest.raises(ValueError, match=expected + ".*model.nonfinite_steps"):
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[callback])
    # Nothing was pruned, in particular not by index order.
    assert [layer.active_binary_convs for layer in layers] == [6, 4]
    assert callback.events == []
    assert int(model.nonfinite_steps.numpy()) == 2  # steps 0 and 1, before the event at 2


def test_callback_skip_option_waits_for_measured_importances():
    x, y = _data(8 * 6)
    x[:16, 0, 0, 0] = np.nan  # steps 0 and 1 are skipped
    model = small_bn_net()
    model.compile(tf.keras.optimizers.SGD(0.1), sparse_ce())
    # Events at 0 (r = 1: nothing to prune), 1, 2 (no importance yet: skipped), 3, 4.
    callback = pabt.PaBTPruningCallback(
        schedules.PolynomialDecay(0, 4, power=1, frequency=1), on_missing_importance="skip"
    )
    with pytest.warns(UserWarning, match="no importance measured") as record:
        model.fit(x, y, batch_size=8, shuffle=False, verbose=0, callbacks=[callback])
    skipped = [str(w.message) for w in record if "no importance measured" in str(w.message)]
    assert len(skipped) == 2
    assert "step 1" in skipped[0] and "step 2" in skipped[1]
    assert [e["step"] for e in callback.events] == [0, 3, 4]
    # Step 3 caught up with the schedule: ceil(2 + 0.25 · (10 − 2)) = 4 kept.
    assert sum(callback.events[1]["active_after"]) == 4
    assert [layer.active_binary_convs for layer in pabt.pabt_layers(model)] == [1, 1]
    with pytest.raises(ValueError, match="`on_missing_importance`"):
        pabt.PaBTPruningCallback(schedules.OneShot(0), on_missing_importance="ignore")


def _fit_pruned(jit_compile, x, y):
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    model = small_bn_net(bases=((2, 3), (2, 2)), importance_momentum=0.5)
    model.compile(tf.keras.optimizers.SGD(0.05), sparse_ce(), jit_compile=jit_compile)
    initial = [w.copy() for w in model.get_weights()]
    callback = pabt.PaBTPruningCallback(schedules.PolynomialDecay(2, 6, power=1, frequency=2))
    history = model.fit(x, y, batch_size=8, shuffle=False, verbose=0, callbacks=[callback])
    layers = pabt.pabt_layers(model)
    return {
        "changed": sum(not np.array_equal(a, b) for a, b in zip(initial, model.get_weights())),
        "events": [(e["step"], e["active_after"]) for e in callback.events],
        "masks": [layer.binary_conv_mask for layer in layers],
        "importance": [layer.importance for layer in layers],
        "skipped": int(model.nonfinite_steps.numpy()),
        "loss": history.history["loss"],
        "finite": nonfinite_weights(model) == [],
    }


def test_jit_compile_train_steps_prune_as_without_xla():
    x, y = _data(8 * 8)
    x[8 * 3, 2, 2, 0] = np.nan  # step 3 is skipped, under XLA too
    with pytest.warns(UserWarning, match="skipped"):
        eager_graph = _fit_pruned(False, x, y)
    with pytest.warns(UserWarning, match="skipped"):
        xla = _fit_pruned(True, x, y)
    assert xla["skipped"] == eager_graph["skipped"] == 1
    assert xla["finite"] and eager_graph["finite"]
    assert xla["changed"] > 10  # kernels, gates, scales, thresholds, BN: trained
    # Events at 2 (r = 1: 10 kept), 4 (ceil(2 + 0.5 · 8) = 6) and 6 (one per layer).
    assert xla["events"] == eager_graph["events"]
    assert [(step, sum(kept)) for step, kept in xla["events"]] == [(2, 10), (4, 6), (6, 2)]
    for a, b in zip(xla["masks"], eager_graph["masks"]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(xla["importance"], eager_graph["importance"]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(xla["loss"], eager_graph["loss"], rtol=1e-4)
