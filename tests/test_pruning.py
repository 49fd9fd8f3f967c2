"""The pure selection of `pabt_tf.pruning`, and the pruning operations a layer owns
(`pabt_tf.layers.state`): numbers, soft pruning step by step, bad arguments."""

import numpy as np
import pytest

import pabt_tf as pabt
from pabt_tf import pruning
from pabt_tf.layers import is_active

# Two layers with MACs 48 and 24 per binary convolution (tests/test_callbacks.py).
IMPORTANCE = [np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[4.0, 16.0], [12.0, 68.0]])]
MACS = [48.0, 24.0]
ALL = [np.ones((2, 2), bool), np.ones((2, 2), bool)]


def _chosen(plan):
    return [{(m, n) for i, m, n in plan.chosen if i == layer} for layer in (0, 1)]


def test_ranking_scores_with_numbers():
    kept = [np.array([[True, True], [True, False]]), ALL[1]]
    sum_scores = pruning.ranking_scores(IMPORTANCE, kept, MACS, "sum")
    np.testing.assert_allclose(sum_scores[0], [[1 / 6, 2 / 6], [3 / 6, np.inf]])
    np.testing.assert_allclose(sum_scores[1], np.array([[4, 16], [12, 68]]) / 100)
    max_scores = pruning.ranking_scores(IMPORTANCE, ALL, MACS, "max", mac_weighted=True)
    # max-normalised, then divided by MACs / mean MACs (48/36 and 24/36)
    np.testing.assert_allclose(max_scores[0], np.array([[1, 2], [3, 4]]) / 4 / (4 / 3))
    np.testing.assert_allclose(max_scores[1], np.array([[4, 16], [12, 68]]) / 68 / (2 / 3))
    zero = pruning.ranking_scores([np.zeros((2, 2))], [ALL[0]], [1.0], "sum")
    np.testing.assert_array_equal(zero[0], np.zeros((2, 2)))


@pytest.mark.parametrize(
    "kwargs, expected",
    [  # the same table as test_callbacks.py::test_ranking_options_with_numbers (r = 0.5)
        (dict(), [{(0, 0)}, {(0, 0), (1, 0)}]),
        (dict(normalization="none"), [{(0, 0), (0, 1), (1, 0)}, set()]),
        (dict(normalization="max"), [set(), {(0, 0), (1, 0), (0, 1)}]),
        (dict(mac_weighted=True), [{(0, 0), (0, 1)}, {(0, 0)}]),
        (dict(ranking="layerwise"), [{(0, 0)}, {(0, 0)}]),
    ],
)
def test_plan_pruning_with_numbers(kwargs, expected):
    plan = pruning.plan_pruning(IMPORTANCE, ALL, MACS, [1, 1], 0.5, **kwargs)
    assert _chosen(plan) == expected
    assert plan.counts_before == [4, 4]
    assert plan.counts_after == [4 - len(e) for e in expected]
    assert plan.goal == (6 if kwargs.get("ranking") == "layerwise" else 5)
    assert plan.ranked == [True, True]


def test_plan_pruning_budget_floors_and_nothing_to_do():
    # Budget 2.5 at r = 0: MAC-weighted mean (48·c0 + 24·c1) / 72 <= 2.5.
    plan = pruning.plan_pruning(IMPORTANCE, ALL, MACS, [1, 1], 0.0, budget=2.5)
    assert pruning.mac_weighted_mean(MACS, plan.counts_after) <= 2.5
    assert plan.goal == 2.5
    # Floors: a layer at its floor is passed over (layer 0 keeps 3 of its 4).
    plan = pruning.plan_pruning(IMPORTANCE, ALL, MACS, [3, 1], 0.0)
    assert plan.counts_after == [3, 1] and plan.ranked == [True, True]
    # r = 1: nothing to prune, no layer ranked (so none needs importances).
    plan = pruning.plan_pruning([np.zeros((2, 2))] * 2, ALL, MACS, [1, 1], 1.0)
    assert plan.chosen == [] and plan.ranked == [False, False]
    assert pruning.scheduled_count(18, 2, 0.421875) == 9


def test_unmeasured_layers():
    kept = [np.array([[True, False], [False, False]]), ALL[1]]
    importances = [np.array([[0.0, 5.0], [5.0, 5.0]]), np.array([[1.0, np.nan], [0.0, 0.0]])]
    # Layer 0's only kept convolution has importance 0; layer 1 holds a NaN.
    assert pruning.unmeasured_layers(importances, kept, [True, True]) == [0, 1]
    assert pruning.unmeasured_layers(importances, kept, [False, False]) == []
    assert pruning.unmeasured_layers(IMPORTANCE, ALL, [True, True]) == []


def _dense(M=2, N=3):
    layer = pabt.PaBTDense(4, weight_bases=M, activation_bases=N)
    layer.build((1, 5))
    return layer


def test_soft_pruning_step_by_step():
    layer = _dense()
    assert layer.prune(0, 1, decay_steps=4) is True
    # Still computed, scaled by 3/4, no longer kept.
    assert layer.binary_conv_mask[0, 1] and not layer.kept_binary_conv_mask[0, 1]
    assert layer.pruning_in_progress.tolist() == [[False, True, False], [False, False, False]]
    np.testing.assert_allclose(layer.gate_decay.numpy()[0, 1], 0.75)
    assert layer.prune(0, 1, decay_steps=4) is False  # already being pruned
    assert layer.advance_soft_pruning(1, 4) is True
    np.testing.assert_allclose(layer.gate_decay.numpy()[0, 1], 0.5)
    assert layer.advance_soft_pruning(3, 4) is False  # 2 steps were left: done
    assert not layer.binary_conv_mask[0, 1] and layer.gate_decay.numpy()[0, 1] == 1.0
    assert layer.active_binary_convs == 5
    # Normalising to another decay_steps (a resumed run): 3/4 = 6/8 keeps 6 steps;
    # without soft pruning it finishes at once.
    layer.prune(1, 2, decay_steps=4)
    assert layer.advance_soft_pruning(0, 8) is True
    np.testing.assert_allclose(layer.gate_decay.numpy()[1, 2], 0.75)
    assert layer.advance_soft_pruning(0, 0) is False and not layer.binary_conv_mask[1, 2]
    # An immediate prune of one being soft-pruned finishes it.
    layer.prune(1, 1, decay_steps=3)
    assert layer.prune(1, 1) is False and not layer.binary_conv_mask[1, 1]
    assert layer.gate_decay.numpy()[1, 1] == 1.0


def test_pruning_step_and_last_kept_convolution():
    layer = _dense(1, 2)
    layer.set_pruning_step(17)
    assert layer.get_pruning_step() == 17 and int(layer.pruning_step.numpy()) == 17
    layer.prune(0, 0, decay_steps=5)
    # (0, 1) is the last kept one, although (0, 0) is still computed.
    with pytest.raises(ValueError, match="last active"):
        layer.prune(0, 1)
    assert is_active(np.array([0.0, 0.49, 0.51, 1.0])).tolist() == [False, False, True, True]


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda layer: layer.prune(0, 0, decay_steps=-1), "decay_steps"),
        (lambda layer: layer.prune(0, 0, decay_steps=2.5), "decay_steps"),
        (lambda layer: layer.prune(0, 3), "`n`"),
        (lambda layer: layer.advance_soft_pruning(-1, 4), "steps"),
        (lambda layer: layer.advance_soft_pruning(1, True), "decay_steps"),
        (lambda layer: layer.set_pruning_step(-3), "step"),
        (lambda layer: layer.set_pruning_step(1.0), "step"),
    ],
)
def test_bad_arguments_change_nothing(call, argument):
    layer = _dense()
    layer.prune(1, 1, decay_steps=4)
    layer.set_pruning_step(5)
    before = [np.array(w) for w in layer.get_weights()]
    with pytest.raises(ValueError, match=argument):
        call(layer)
    for a, b in zip(before, layer.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_unbuilt_layer_operations_ask_for_build():
    layer = pabt.PaBTDense(4, weight_bases=2, activation_bases=2)
    for call in (lambda: layer.advance_soft_pruning(1, 2), layer.get_pruning_step,
                 lambda: layer.kept_binary_conv_mask):  # fmt: skip
        with pytest.raises(ValueError, match="build"):
            call()


# -- pruning order: whole activation bases first ---------------------------------------


def _partly_kept_columns(kept: np.ndarray) -> int:
    per_column = kept.sum(0)
    return int(((per_column > 0) & (per_column < kept.shape[0])).sum())


def test_next_candidate_orders_with_numbers():
    scores = np.array([[0.5, 0.1, 0.9], [0.2, 0.8, 0.3], [0.4, 0.7, 0.6]])
    kept = np.ones((3, 3), bool)
    assert pruning.next_candidate(scores, kept, "convolution") == (0, 1)
    # Column sums 1.1, 1.6, 1.8: activation base 0 goes first, its lowest (1, 0) first.
    assert pruning.next_candidate(scores, kept, "activation_bases") == (1, 0)
    kept[1, 0] = False
    # A partly emptied base is finished before any other: (2, 0) then (0, 0).
    assert pruning.next_candidate(scores, kept, "activation_bases") == (2, 0)
    kept[2, 0] = False
    assert pruning.next_candidate(scores, kept, "activation_bases") == (0, 0)
    kept[0, 0] = False
    # Then base 1 (sum 1.6 < 1.8), its lowest first.
    assert pruning.next_candidate(scores, kept, "activation_bases") == (0, 1)


@pytest.mark.parametrize("ranking", ["global", "layerwise"])
def test_activation_bases_order_empties_one_base_at_a_time(ranking):
    rng = np.random.default_rng(3)
    importances = [rng.random((3, 3)), rng.random((2, 4))]
    kept = [np.ones((3, 3), bool), np.ones((2, 4), bool)]
    for fraction in np.linspace(0.9, 0.0, 10):
        plan = pruning.plan_pruning(importances, kept, [10.0, 30.0], [1, 1], fraction,
                                    ranking=ranking, order="activation_bases")
        for i, m, n in plan.chosen:
            kept[i][m, n] = False
        for layer_kept in kept:
            assert _partly_kept_columns(layer_kept) <= 1
        # Same counts as the default order: only which binary convolutions go differs.
        same = pruning.plan_pruning(importances, [np.ones_like(k) for k in kept], [10.0, 30.0],
                                    [1, 1], fraction, ranking=ranking)
        assert plan.goal == same.goal
    assert [int(k.sum()) for k in kept] == [1, 1]
    with pytest.raises(ValueError, match="`order` must be one of"):
        pruning.plan_pruning(importances, kept, [1.0, 1.0], [1, 1], 0.5, order="bases")


def test_default_order_is_unchanged_by_the_order_option():
    for kwargs in (dict(), dict(normalization="none"), dict(mac_weighted=True),
                   dict(ranking="layerwise"), dict(budget=1.5)):
        a = pruning.plan_pruning(IMPORTANCE, ALL, MACS, [1, 1], 0.5, **kwargs)
        b = pruning.plan_pruning(IMPORTANCE, ALL, MACS, [1, 1], 0.5, order="convolution", **kwargs)
        assert a == b
