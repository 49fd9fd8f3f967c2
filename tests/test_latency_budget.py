"""`PaBTPruningCallback(latency_budget_ms=..., latency_table=...)`: pruning to a latency
target (the ranking weighs importances by each layer's cost per binary convolution,
the schedule moves the predicted latency to the target), its errors, resume, and the
warning for a schedule longer than the fit."""

import os
import warnings

import numpy as np
import pytest
from _training_utils import fmnist, pabt, sparse_ce, tf, tiny_fmnist_net

from pabt_tf.export import LatencyTable, LayerLatency
from pabt_tf.pruning import LatencyGoal, plan_pruning

BATCH, STEPS = 32, 8


def _table(model, per_conv=(2.0, 0.5), per_base=(0.3, 0.1), fixed=(0.4, 0.2), rest=1.0):
    """A table of `model`'s PaBT layers with chosen costs (as a board's could be)."""
    rows = []
    for layer, c, b, f in zip(pabt.pabt_layers(model), per_conv, per_base, fixed):
        shape = list(layer.reference_input_shape)
        rows.append(LayerLatency(layer.name, type(layer).__name__, shape,
                                 layer.compute_output_shape(shape).as_list(),
                                 layer.weight_bases, layer.activation_bases, f, c, b))
    return LatencyTable(layers=rows, rest_ms=rest, threads=1, kernels="device",
                        source="board", how="chosen for the test")


def _model():
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    model = tiny_fmnist_net(bases=(2, 3), channels=(8, 8, 8), importance_momentum=0.8)
    model.compile(tf.keras.optimizers.Adam(0.003), sparse_ce())
    return model


def _masks(model):
    return [layer.binary_conv_mask for layer in pabt.pabt_layers(model)]


def test_plan_pruning_weighs_importance_by_cost_and_stops_at_the_goal():
    # Equal importances: the layer whose binary convolutions cost 4x goes first.
    imp = [np.ones((2, 2)), np.ones((2, 2))]
    kept = [np.ones((2, 2), bool), np.ones((2, 2), bool)]
    costs = [4.0, 1.0]

    def predict(masks):
        return 1.0 + sum(c * m.sum() for c, m in zip(costs, masks))

    goal = LatencyGoal(predict, predict(kept), 14.0)  # from 21 ms to 14 ms
    assert goal.goal(0.5) == pytest.approx(17.5)
    half = plan_pruning(imp, kept, costs, [1, 1], 0.5, mac_weighted=True, latency=goal)
    assert half.counts_after == [3, 4] and half.goal == pytest.approx(17.5)  # 21 -> 17
    end = plan_pruning(imp, kept, costs, [1, 1], 0.0, mac_weighted=True, latency=goal)
    assert end.counts_after == [2, 4]  # 21 -> 17 -> 13 <= 14: stops there
    # Layer 1 four times as expensive instead: it goes first (not index order).
    costs.reverse()
    end = plan_pruning(imp, kept, costs, [1, 1], 0.0, mac_weighted=True, latency=goal)
    assert end.counts_after == [4, 2]


def test_callback_stops_at_the_target(tmp_path):
    model = _model()
    table = _table(model)
    low, high = table.range_ms()
    target = low + 0.45 * (high - low)
    x, y = fmnist(BATCH * STEPS)
    callback = pabt.PaBTPruningCallback(pabt.schedules.LinearDecay(2, 20, frequency=3),
                                        latency_budget_ms=target, latency_table=table)
    history = model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
                        callbacks=[callback])
    final = table.predict_masks(_masks(model))
    assert final <= target
    # Every event stopped at its goal (the scheduled latency, the target at the end): the
    # last binary convolution it pruned took the prediction across.
    assert callback.events[-1]["step"] == 20 and callback.events[-1]["goal"] == pytest.approx(target)
    last = [e for e in callback.events if e["pruned"]][-1]
    assert last["predicted_latency_ms"] == pytest.approx(final) and final <= last["goal"]
    layer_index = {layer.name: i for i, layer in enumerate(pabt.pabt_layers(model))}
    name, m, n = last["pruned"][-1]
    before = _masks(model)
    before[layer_index[name]][m, n] = True
    assert table.predict_masks(before) > last["goal"]
    # The schedule moved the prediction down monotonically from the unpruned network's.
    predicted = [e["predicted_latency_ms"] for e in callback.events]
    assert predicted == sorted(predicted, reverse=True) and predicted[-1] < predicted[0] <= high
    assert history.history["predicted_latency_ms"][-1] == pytest.approx(final)
    lines = []
    rows = pabt.summary(model, print_fn=lines.append, latency_table=table)
    assert rows[-1]["predicted_ms"] == pytest.approx(final)
    assert sum(r["predicted_ms"] for r in rows[:-1]) + table.rest_ms == pytest.approx(final)
    assert "Predicted ms" in lines[1] and f"{final:.3f} ms" in lines[-1]
    # Expensive layer 0 (2 ms a convolution) lost more than cheap layer 1 (0.5 ms).
    active = [layer.active_binary_convs for layer in pabt.pabt_layers(model)]
    assert active[0] < active[1]
    config = callback.get_config()
    again = pabt.PaBTPruningCallback.from_config(config)
    assert again.latency_table == table and again.latency_budget_ms == target


def test_latency_arguments_are_checked():
    model = _model()
    table = _table(model)
    low, high = table.range_ms()
    schedule = pabt.schedules.PolynomialDecay(2, 20)
    for bad in (low - 0.01, high + 0.01):
        with pytest.raises(ValueError, match=rf"{low:.3f} ms .* to {high:.3f} ms"):
            pabt.PaBTPruningCallback(schedule, latency_budget_ms=bad, latency_table=table)
    with pytest.raises(ValueError, match="go together"):
        pabt.PaBTPruningCallback(schedule, latency_budget_ms=5.0)
    with pytest.raises(ValueError, match="go together"):
        pabt.PaBTPruningCallback(schedule, latency_table=table)
    with pytest.raises(ValueError, match="positive number"):
        pabt.PaBTPruningCallback(schedule, latency_budget_ms=float("nan"), latency_table=table)
    for kwargs in ({"budget": 2.0}, {"mac_weighted": True}, {"ranking": "layerwise"}):
        with pytest.raises(ValueError, match="cannot be combined"):
            pabt.PaBTPruningCallback(schedule, latency_budget_ms=high - 1, latency_table=table,
                                     **kwargs)
    with pytest.raises(ValueError, match="latency_table.*missing.json.*No such file"):
        pabt.PaBTPruningCallback(schedule, latency_budget_ms=5.0, latency_table="missing.json")


def test_a_table_of_another_model_is_refused_at_train_begin():
    model = _model()
    table = _table(model)
    other = tiny_fmnist_net(bases=(2, 3), channels=(8, 16, 8))  # pabt_conv2d_2: other name
    other.compile(tf.keras.optimizers.Adam(0.003), sparse_ce())
    x, y = fmnist(BATCH * 2)
    callback = pabt.PaBTPruningCallback(pabt.schedules.PolynomialDecay(1, 2),
                                        latency_budget_ms=table.range_ms()[1] - 1,
                                        latency_table=table)
    with pytest.raises(ValueError, match="latency table does not match model .* layer"):
        other.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[callback])
    assert all(layer.active_binary_convs == 6 for layer in pabt.pabt_layers(other))


def test_soft_pruning_to_a_latency_target():
    """With `decay_steps`, a chosen binary convolution fades over several steps; the
    plan counts it as pruned at once (the kept masks), every event stops at its goal,
    the target is met, and every fade has finished by the end."""
    model = _model()
    table = _table(model)
    low, high = table.range_ms()
    target = low + 0.5 * (high - low)
    x, y = fmnist(BATCH * STEPS)
    callback = pabt.PaBTPruningCallback(pabt.schedules.LinearDecay(2, 14, frequency=4), decay_steps=4,
                                        latency_budget_ms=target, latency_table=table)
    seen = []  # per batch: (computed, kept) predictions
    kept = lambda: table.predict_masks([la.kept_binary_conv_mask for la in pabt.pabt_layers(model)])  # noqa: E731
    recorder = tf.keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda b, logs: seen.append((callback.predicted_latency_ms, kept())))
    model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0, callbacks=[callback, recorder])
    assert table.predict_masks(_masks(model)) <= target
    for event in callback.events:
        assert event["predicted_latency_ms"] <= event["goal"] + 1e-9
    # While a chosen convolution fades it is still computed: the computed prediction
    # sits above the kept masks' for some steps, and the two meet once the fades end.
    assert any(computed > k + 1e-9 for computed, k in seen)
    assert all(computed >= k - 1e-9 for computed, k in seen)
    assert seen[-1][0] == pytest.approx(seen[-1][1])
    for layer in pabt.pabt_layers(model):
        np.testing.assert_allclose(layer.gate_decay.numpy(), 1.0)
        np.testing.assert_array_equal(layer.binary_conv_mask, layer.kept_binary_conv_mask)


def test_resume_mid_pruning_with_a_latency_budget(tmp_path):
    tf.config.experimental.enable_op_determinism()
    x, y = fmnist(BATCH * STEPS)
    fit = dict(batch_size=BATCH, shuffle=False, verbose=0)
    schedule = pabt.schedules.PolynomialDecay(2, 20, power=2, frequency=3)

    def callback(model):
        table = _table(model)
        low, high = table.range_ms()
        return pabt.PaBTPruningCallback(schedule, decay_steps=4, latency_table=table,
                                        latency_budget_ms=low + 0.4 * (high - low))

    model = _model()
    model.fit(x, y, epochs=4, callbacks=[callback(model)], **fit)
    full = _masks(model)

    model = _model()
    model.fit(x, y, epochs=2, callbacks=[callback(model)], **fit)
    stopped = _masks(model)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    tf.keras.backend.clear_session()
    resumed = tf.keras.models.load_model(path)
    resumed.fit(x, y, epochs=4, initial_epoch=2, callbacks=[callback(resumed)], **fit)
    assert sum(m.sum() for m in stopped) > sum(m.sum() for m in full)  # stopped mid-way
    for a, b in zip(_masks(resumed), full):
        np.testing.assert_array_equal(a, b)


def test_a_schedule_ending_after_the_last_step_warns():
    model = _model()
    x, y = fmnist(BATCH * STEPS)
    late = pabt.PaBTPruningCallback(pabt.schedules.PolynomialDecay(2, 40, frequency=4))
    with pytest.warns(UserWarning, match=r"last pruning event \(step 40\) falls after the last "
                                         r"step of this fit \(step 15"):
        model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[late])
    model = _model()
    on_time = pabt.PaBTPruningCallback(pabt.schedules.PolynomialDecay(2, 15, frequency=4))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[on_time])


def test_training_run_with_a_latency_target_records_predicted_and_measured(tmp_path):
    from pabt_tf.run.train import DEFAULTS, build, train

    config = dict(epochs=1, steps=6, batch_size=32, train_limit=256, validation_size=64,
                  test_limit=64, verify_samples=8, augment=False, decay_steps=0, verbose=0,
                  output_dir=str(tmp_path / "run"), prune_begin=0.2, prune_end=0.8)
    tf.keras.backend.clear_session()
    model = build({**DEFAULTS, **config}, (28, 28, 1), 10)
    table = _table(model, per_conv=(1.0,) * 8, per_base=(0.0,) * 8, fixed=(0.1,) * 8)
    table.bnn_ms = table.range_ms()[0] + 0.01
    path = str(tmp_path / "table.json")
    table.save(path)
    results = train({**config, "latency_budget_x_bnn": 1.5, "latency_table": path})
    assert results["latency_target_ms"] == pytest.approx(1.5 * table.bnn_ms)
    assert results["predicted_latency_ms"] <= results["latency_target_ms"]
    assert results["measured_latency_ms"] > 0 and "thread clock" in results["measured_latency"]
    assert results["mean_binary_convs"] > 1.0  # a mixed-precision network, not a BNN
    # Timed beside its BNN twin in the same rounds: the load-robust measurement.
    assert results["measured_latency_vs_bnn_twin"] > 0
    assert results["measured_latency_bnn_anchored_ms"] == pytest.approx(
        results["measured_latency_vs_bnn_twin"] * table.bnn_ms)
    with pytest.raises(ValueError, match="not both"):
        train({**config, "output_dir": str(tmp_path / "r2"), "latency_budget_x_bnn": 1.5,
               "latency_budget_ms": 3.0, "latency_table": path})


def test_bnn_twin_converts_every_layer_at_one_binary_conv_and_restores_the_masks():
    from pabt_tf.export.flatbuffer import operator_counts

    model = _model()
    layers = pabt.pabt_layers(model)
    layers[0].prune(1, 1)
    before = [layer.binary_conv_mask.copy() for layer in layers]
    flatbuffer = pabt.export.bnn_twin(model)
    assert operator_counts(flatbuffer).get("LceBconv2d") == len(layers)  # one per layer
    assert all((layer.binary_conv_mask == mask).all() for layer, mask in zip(layers, before))
    with pytest.raises(ValueError, match="no PaBT layers"):
        pabt.export.bnn_twin(tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2)]))
