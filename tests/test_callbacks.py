"""PaBTPruningCallback: schedule following, ranking, soft pruning, budget, logs, errors."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from _training_utils import bop_optimizer, sparse_ce, tiny_fmnist_net

import pabt_tf as pabt
from pabt_tf import schedules


class Recorder(tf.keras.callbacks.Callback):
    """Listed *before* the pruning callback: at a batch's beginning it sees the state
    before that step's pruning event, at its end the state after it."""

    def __init__(self):
        super().__init__()
        self.begin, self.end = {}, {}

    def _state(self):
        layers = pabt.pabt_layers(self.model)
        return {
            "importance": [layer.importance.copy() for layer in layers],
            "mask": [layer.binary_conv_mask.copy() for layer in layers],
            "gate_decay": [layer.gate_decay.numpy().copy() for layer in layers],
        }

    def _step(self):
        return int(pabt.pabt_layers(self.model)[0].pruning_step.numpy())

    def on_train_batch_begin(self, batch, logs=None):
        self.begin[self._step()] = self._state()

    def on_train_batch_end(self, batch, logs=None):
        self.end[self._step()] = self._state()


def _normalised(importance, active):
    total = importance[active].sum()
    return importance / total if total > 0 else np.zeros_like(importance)


@pytest.mark.parametrize("ranking", ["global", "layerwise"])
def test_polynomial_decay_fit_follows_schedule_to_target(fmnist_small, ranking):
    x, y, _, _ = fmnist_small
    model = tiny_fmnist_net(bases=(3, 3), channels=(8, 8, 16))
    model.compile(tf.keras.optimizers.Adam(0.003), sparse_ce())
    schedule = schedules.PolynomialDecay(begin_step=0, end_step=40, power=3, frequency=10)
    recorder = Recorder()
    callback = pabt.PaBTPruningCallback(schedule, target_per_layer=1, ranking=ranking)
    model.fit(x[:48 * 16], y[:48 * 16], batch_size=16, epochs=1, shuffle=False, verbose=0,
              callbacks=[recorder, callback])
    layers = pabt.pabt_layers(model)
    # Exactly the target in every layer at end_step, and after it.
    assert [m.sum() for m in recorder.end[40]["mask"]] == [1, 1]
    assert [layer.active_binary_convs for layer in layers] == [1, 1]
    assert [int(layer.pruning_step.numpy()) for layer in layers] == [48, 48]
    assert pabt.mean_binary_convs(model) == 1.0
    assert [e["step"] for e in callback.events] == [0, 10, 20, 30, 40]
    # remaining fraction r = 1, 0.421875, 0.125, 0.015625, 0
    if ranking == "global":
        # count = ceil(2 + r · (18 − 2))
        expected_counts = {0: 18, 10: 9, 20: 4, 30: 3, 40: 2}
    else:
        # per layer ceil(1 + r · (9 − 1))
        expected_counts = {0: [9, 9], 10: [5, 5], 20: [2, 2], 30: [2, 2], 40: [1, 1]}
    for step, expected in expected_counts.items():
        counts = [int(m.sum()) for m in recorder.end[step]["mask"]]
        assert (sum(counts) if ranking == "global" else counts) == expected, step
        # Between events nothing changes.
        assert [int(m.sum()) for m in recorder.begin[step + 1]["mask"]] == counts
    # The pruned ones were the lowest-ranked at their event.
    pruned_total = 0
    for step in expected_counts:
        before, after = recorder.begin[step], recorder.end[step]
        scores_pruned, scores_kept = [], []
        for i, (imp, m0, m1) in enumerate(zip(before["importance"], before["mask"], after["mask"])):
            assert not np.any(m1 & ~m0)  # nothing revived
            pruned = m0 & ~m1
            pruned_total += pruned.sum()
            score = _normalised(imp, m0) if ranking == "global" else imp
            if ranking == "layerwise":
                if pruned.any():
                    assert score[pruned].max() <= score[m1].min()
            else:
                scores_pruned += list(score[pruned])
                if m1.sum() > 1:  # a layer at its floor keeps its last one regardless
                    scores_kept += list(score[m1])
        if scores_pruned and scores_kept:
            assert max(scores_pruned) <= min(scores_kept), step
    assert pruned_total == 16
    # Importances were accumulated (they rank, they are not all ties).
    assert all(np.unique(imp).size == 9 for imp in recorder.begin[10]["importance"])


@pytest.mark.parametrize("latent_weights", [True, False], ids=["adam-latent", "bop-latent-free"])
def test_pruning_to_bnn_learns(fmnist_small, latent_weights):
    x, y, x_test, y_test = fmnist_small
    model = tiny_fmnist_net(latent_weights=latent_weights)
    optimizer = tf.keras.optimizers.Adam(0.003) if latent_weights else bop_optimizer()
    model.compile(optimizer, sparse_ce(), metrics=["accuracy"])
    callback = pabt.PaBTPruningCallback(schedules.PolynomialDecay(0, 40, frequency=10))
    model.fit(x[:2560], y[:2560], batch_size=32, epochs=1, verbose=0, callbacks=[callback])
    assert [layer.active_binary_convs for layer in pabt.pabt_layers(model)] == [1, 1]
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy > 0.55  # chance is 0.1; measured 0.74 (Adam) and 0.73 (Bop)


def _dense_model(model_cls=tf.keras.Model):
    """Two PaBTDense layers with MACs 48 and 24 per binary convolution."""
    inputs = tf.keras.Input((8,))
    h = pabt.PaBTDense(6, weight_bases=2, activation_bases=2)(inputs)
    outputs = pabt.PaBTDense(4, weight_bases=2, activation_bases=2)(h)
    return model_cls(inputs=inputs, outputs=outputs)


_IMPORTANCE = [np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[4.0, 16.0], [12.0, 68.0]])]


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        # sum-normalised: .1 .2 .3 .4 | .04 .16 .12 .68
        (dict(), [{(0, 0)}, {(0, 0), (1, 0)}]),
        # raw importances: layer 0 loses three, down to its floor
        (dict(normalization="none"), [{(0, 0), (0, 1), (1, 0)}, set()]),
        # max-normalised: .25 .5 .75 1 | .059 .235 .176 1
        (dict(normalization="max"), [set(), {(0, 0), (1, 0), (0, 1)}]),
        # sum-normalised / (MACs / mean MACs): .075 .15 .225 .3 | .06 .24 .18 1.02
        (dict(mac_weighted=True), [{(0, 0), (0, 1)}, {(0, 0)}]),
        # each layer from 4 to ceil(1 + 0.5·3) = 3
        (dict(ranking="layerwise"), [{(0, 0)}, {(0, 0)}]),
    ],
)
def test_ranking_options_with_numbers(kwargs, expected):
    model = _dense_model()
    layers = pabt.pabt_layers(model)
    assert [layer.binary_conv_macs() for layer in layers] == [48, 24]
    for layer, imp in zip(layers, _IMPORTANCE):
        layer.importance_variable.assign(imp.astype(np.float32))
    model.compile(tf.keras.optimizers.SGD(0.01), "mse")
    # Event at step 1 with r = 0.5: 2 + 0.5·6 = 5 of 8 remain. A plain Model does not
    # accumulate importances, so the manual ones rank.
    callback = pabt.PaBTPruningCallback(schedules.LinearDecay(0, 2, frequency=1), **kwargs)
    rng = np.random.default_rng(0)
    with pytest.warns(UserWarning, match="not a pabt_tf.PaBTModel"):
        model.fit(rng.normal(size=(2, 8)), rng.normal(size=(2, 4)), batch_size=1, verbose=0,
                  callbacks=[callback])
    pruned = [
        {(m, n) for name, m, n in callback.events[1]["pruned"] if name == layer.name}
        for layer in layers
    ]
    assert pruned == expected
    for layer, p in zip(layers, pruned):
        assert layer.active_binary_convs == 4 - len(p)


def test_target_per_layer_two_with_one_shot():
    model = _dense_model(pabt.PaBTModel)
    model.compile(tf.keras.optimizers.SGD(0.01), "mse")
    callback = pabt.PaBTPruningCallback(schedules.OneShot(3), target_per_layer=2)
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(8, 8)), rng.normal(size=(8, 4)), batch_size=1, verbose=0,
              callbacks=[callback])
    assert [layer.active_binary_convs for layer in pabt.pabt_layers(model)] == [2, 2]
    assert [e["step"] for e in callback.events] == [3]


def test_soft_pruning_decays_gates_then_clears_masks():
    model = _dense_model(pabt.PaBTModel)
    model.compile(tf.keras.optimizers.SGD(0.01), "mse")
    recorder = Recorder()
    callback = pabt.PaBTPruningCallback(schedules.OneShot(2), decay_steps=4)
    rng = np.random.default_rng(0)
    # recorder after the callback: at a batch's beginning it sees what that batch uses
    model.fit(rng.normal(size=(10, 8)), rng.normal(size=(10, 4)), batch_size=1, verbose=0,
              callbacks=[callback, recorder])
    (event,) = callback.events
    assert event["active_after"] == [1, 1]  # chosen ones count as pruned at once
    chosen = [np.zeros((2, 2), bool) for _ in range(2)]
    names = [layer.name for layer in pabt.pabt_layers(model)]
    for name, m, n in event["pruned"]:
        chosen[names.index(name)][m, n] = True
    assert [c.sum() for c in chosen] == [3, 3]
    for step, decay in [(2, 0.75), (3, 0.5), (4, 0.25)]:
        for c, mask, gate_decay in zip(chosen, recorder.begin[step]["mask"],
                                       recorder.begin[step]["gate_decay"]):
            assert mask.all()  # still computed, with a shrinking gate
            np.testing.assert_allclose(gate_decay[c], decay)
            np.testing.assert_allclose(gate_decay[~c], 1.0)
    for step in (5, 9):
        for c, mask, gate_decay in zip(chosen, recorder.begin[step]["mask"],
                                       recorder.begin[step]["gate_decay"]):
            np.testing.assert_array_equal(mask, ~c)
            np.testing.assert_allclose(gate_decay, 1.0)
    # A decaying layer's coefficient really is mask · gate_decay · gate.
    layer = pabt.pabt_layers(model)[0]
    np.testing.assert_allclose(
        layer.coefficients().numpy(),
        layer.mask.numpy() * layer.gate_decay.numpy() * layer.gate.numpy(),
    )


def test_budget_stops_at_mac_weighted_mean():
    model = _dense_model(pabt.PaBTModel)
    model.compile(tf.keras.optimizers.SGD(0.01), "mse")
    # MACs 48 and 24: the full network has a mean of 4; budget 2.5.
    schedule = schedules.LinearDecay(0, 4, frequency=2)
    callback = pabt.PaBTPruningCallback(schedule, budget=2.5)
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(8, 8)), rng.normal(size=(8, 4)), batch_size=1, verbose=0,
              callbacks=[callback])
    macs = np.array([48.0, 24.0])
    for event in callback.events:
        goal = 2.5 + schedule(event["step"])[1] * (4 - 2.5)  # 4, 3.25, 2.5 at 0, 2, 4
        mean = (macs * event["active_after"]).sum() / macs.sum()
        assert mean <= goal + 1e-9
        # It stopped as soon as it was at or below the goal.
        if event["pruned"]:
            last = [layer.name for layer in pabt.pabt_layers(model)].index(event["pruned"][-1][0])
            assert mean + macs[last] / macs.sum() > goal
    final = pabt.mean_binary_convs(model)
    assert final <= 2.5 and final > 2.5 - 48 / 72
    assert all(layer.active_binary_convs >= 1 for layer in pabt.pabt_layers(model))


def test_mean_binary_convs_in_history_progress_bar_and_tensorboard(tmp_path, capsys):
    model = _dense_model(pabt.PaBTModel)
    model.compile(tf.keras.optimizers.SGD(0.01), "mse")
    callback = pabt.PaBTPruningCallback(
        schedules.PolynomialDecay(1, 6, power=1, frequency=3), log_dir=str(tmp_path)
    )
    rng = np.random.default_rng(0)
    history = model.fit(rng.normal(size=(6, 8)), rng.normal(size=(6, 4)), batch_size=2, epochs=3,
                        verbose=2, callbacks=[callback])
    # epochs: steps 0-2, 3-5, 6-8; events 1 (r=1), 4 (r=.4: 5 of 8 left), 6 (r=0: 2 left)
    means = history.history["mean_binary_convs"]
    assert means[0] == 4.0 and 1.0 < means[1] < 4.0 and means[2] == 1.0
    out = capsys.readouterr().out
    assert "mean_binary_convs: 4.0000" in out and "mean_binary_convs: 1.0000" in out
    tags = {}
    for path in glob.glob(os.path.join(str(tmp_path), "pabt", "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    names = [layer.name for layer in pabt.pabt_layers(model)]
    assert {"mean_binary_convs", "remaining_fraction"} <= set(tags)
    for name in names:
        assert f"active_binary_convs/{name}" in tags and f"importance/{name}" in tags
    assert sorted(tags["remaining_fraction"]) == [1, 4, 6]


def test_step_counter_continues_across_fits_and_steps_per_execution():
    model = _dense_model(pabt.PaBTModel)
    model.compile(tf.keras.optimizers.SGD(0.01), "mse", steps_per_execution=3)
    callback = pabt.PaBTPruningCallback(schedules.PolynomialDecay(0, 7, frequency=3))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 8)), rng.normal(size=(6, 4))
    model.fit(x, y, batch_size=1, verbose=0, callbacks=[callback])
    layers = pabt.pabt_layers(model)
    assert [int(layer.pruning_step.numpy()) for layer in layers] == [6, 6]
    assert [e["step"] for e in callback.events] == [0, 3]
    model.fit(x, y, batch_size=1, verbose=0, callbacks=[callback])
    assert [int(layer.pruning_step.numpy()) for layer in layers] == [12, 12]
    # Event 7 (end_step) falls inside the execution of steps 6-8: it runs at step 9.
    assert [e["step"] for e in callback.events] == [0, 3, 6, 7]
    assert [layer.active_binary_convs for layer in layers] == [1, 1]


def test_errors_at_construction():
    schedule = schedules.OneShot(0)
    for kwargs, argument in [
        (dict(target_per_layer=0), "target_per_layer"),
        (dict(target_per_layer=1.5), "target_per_layer"),
        (dict(ranking="random"), "ranking"),
        (dict(normalization="l2"), "normalization"),
        (dict(mac_weighted="yes"), "mac_weighted"),
        (dict(decay_steps=-1), "decay_steps"),
        (dict(budget=0.5), "budget"),
        (dict(budget=float("inf")), "budget"),
        (dict(log_dir=3), "log_dir"),
    ]:
        with pytest.raises(ValueError, match=f"`{argument}`"):
            pabt.PaBTPruningCallback(schedule, **kwargs)
    with pytest.raises(ValueError, match="`schedule`"):
        pabt.PaBTPruningCallback(lambda step: (True, 0.0))
    config = pabt.PaBTPruningCallback(schedules.LinearDecay(0, 9), budget=2).get_config()
    restored = pabt.PaBTPruningCallback.from_config(config)
    assert restored.get_config() == config and restored.schedule == schedules.LinearDecay(0, 9)


def _fit_with(model, callback):
    model.compile(tf.keras.optimizers.SGD(0.01), "mse")
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(2, 8)), rng.normal(size=(2, 4)), verbose=0, callbacks=[callback])


def test_errors_at_train_begin():
    inputs = tf.keras.Input((8,))
    plain = tf.keras.Model(inputs, tf.keras.layers.Dense(4)(inputs))
    with pytest.raises(ValueError, match="no PaBT layers"):
        _fit_with(plain, pabt.PaBTPruningCallback(schedules.OneShot(0)))
    with pytest.raises(ValueError, match=r"`target_per_layer`=5 is larger .*M·N = 4"):
        _fit_with(_dense_model(pabt.PaBTModel),
                  pabt.PaBTPruningCallback(schedules.OneShot(0), target_per_layer=5))
    with pytest.raises(ValueError, match="`budget`=4.5 is above"):
        _fit_with(_dense_model(pabt.PaBTModel),
                  pabt.PaBTPruningCallback(schedules.OneShot(0), budget=4.5))
    # Nothing was pruned by the failed runs.
    model = _dense_model(pabt.PaBTModel)
    with pytest.raises(ValueError):
        _fit_with(model, pabt.PaBTPruningCallback(schedules.OneShot(0), target_per_layer=5))
    assert [layer.active_binary_convs for layer in pabt.pabt_layers(model)] == [4, 4]


def test_a_second_callback_on_the_same_fit_is_refused():
    """Issue 20, item 3: targets 1 and 2 on one model would each run their schedule on the
    same masks (the layers ended with 1, the second target silently broken)."""
    model = _dense_model(pabt.PaBTModel)
    model.compile(tf.keras.optimizers.SGD(0.01), "mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 8)), rng.normal(size=(8, 4))
    first = pabt.PaBTPruningCallback(schedules.OneShot(10), target_per_layer=1)
    second = pabt.PaBTPruningCallback(schedules.OneShot(2), target_per_layer=2)
    with pytest.raises(ValueError) as info:
        model.fit(x, y, batch_size=1, verbose=0, callbacks=[first, second])
    message = str(info.value)
    assert "already driven by another PaBTPruningCallback in this fit" in message
    assert "(target_per_layer=1, budget=None); this one (target_per_layer=2" in message
    # Refused before any training step or pruning event.
    assert [layer.active_binary_convs for layer in pabt.pabt_layers(model)] == [4, 4]
    assert int(model._train_counter.numpy()) == 0 and first.events == second.events == []
    # One callback per fit works, also one that took part in the refused fit (8 steps a
    # fit: the second prunes at step 2, the first at step 10).
    model.fit(x, y, batch_size=1, verbose=0, callbacks=[second])
    assert [layer.active_binary_convs for layer in pabt.pabt_layers(model)] == [2, 2]
    model.fit(x, y, batch_size=1, verbose=0, callbacks=[first])
    assert [layer.active_binary_convs for layer in pabt.pabt_layers(model)] == [1, 1]


def test_activation_bases_order_in_fit_empties_bases_and_skips_their_convolution(fmnist_small):
    x, y, _, _ = fmnist_small
    model = tiny_fmnist_net(bases=(3, 3), channels=(8, 8, 16))
    model.compile(tf.keras.optimizers.Adam(0.003), sparse_ce())
    recorder = Recorder()
    callback = pabt.PaBTPruningCallback(
        schedules.PolynomialDecay(begin_step=0, end_step=40, power=3, frequency=10),
        order="activation_bases",
    )
    model.fit(x[:48 * 64], y[:48 * 64], batch_size=64, epochs=1, shuffle=False, verbose=0,
              callbacks=[recorder, callback])
    # The same global counts as the default order (test above): 18, 9, 4, 3, 2 ...
    for step, expected in {0: 18, 10: 9, 20: 4, 30: 3, 40: 2}.items():
        masks = recorder.end[step]["mask"]
        assert sum(int(m.sum()) for m in masks) == expected, step
        # ... but within a layer at most one activation base is partly pruned.
        for mask in masks:
            per_base = mask.sum(0)
            assert ((per_base > 0) & (per_base < 3)).sum() <= 1, (step, mask)
    # After the event at step 10 (18 -> 9 kept) at least one activation base is empty
    # somewhere, so its convolution is no longer computed.
    assert any((m.sum(0) == 0).any() for m in recorder.end[10]["mask"])
    config = callback.get_config()
    assert config["order"] == "activation_bases"
    assert pabt.PaBTPruningCallback.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="`order`"):
        pabt.PaBTPruningCallback(schedules.OneShot(0), order="weights_first")
