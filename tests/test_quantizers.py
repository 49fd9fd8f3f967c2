"""Quantizers: ABC-Net weight bases, multi-base activation sign, RandomSign."""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from pabt_tf.quantizers import ABCWeightBases, MultiBaseSign, RandomSign, get_binary_quantizer


@pytest.mark.parametrize(
    "M,shifts",
    [(1, [0.0]), (2, [-1.0, 1.0]), (3, [-1.0, 0.0, 1.0]), (4, [-1.0, -1 / 3, 1 / 3, 1.0])],
)
def test_abc_shifts(M, shifts):
    np.testing.assert_allclose(ABCWeightBases(M).shifts, shifts, rtol=1e-6)
    assert ABCWeightBases(M).precision == 1


def test_abc_bases_match_the_formula_per_output_channel():
    rng = np.random.default_rng(0)
    # Output channels with very different means and spreads: per-channel statistics
    # matter (global ones would give different signs).
    w = rng.normal(size=(3, 3, 4, 5)) * np.array([0.1, 1, 3, 0.5, 2]) + np.array([0, 1, -2, 0.3, 5])
    w = w.astype(np.float32)
    bases = ABCWeightBases(3)(tf.constant(w)).numpy()
    mean = w.mean(axis=(0, 1, 2))
    std = w.std(axis=(0, 1, 2))
    for m, u in enumerate([-1.0, 0.0, 1.0]):
        expected = np.where(w - mean + u * std >= 0, 1.0, -1.0)
        np.testing.assert_array_equal(bases[m], expected)
    global_stats = np.where(w - w.mean() + w.std() >= 0, 1.0, -1.0)
    assert not np.array_equal(bases[2], global_stats)
    # u = −1 keeps only entries more than one σ above the mean at +1 (about 16 %).
    assert 0.05 < (bases[0] > 0).mean() < 0.3


def test_abc_straight_through_gradient():
    w = tf.Variable(np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32))
    upstream = tf.constant(np.random.default_rng(2).normal(size=(3, 4, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(ABCWeightBases(3)(w) * upstream)
    np.testing.assert_allclose(tape.gradient(loss, w), upstream.numpy().sum(axis=0), rtol=1e-6)


@pytest.mark.parametrize("N,expected", [(1, [0.0]), (2, [-0.5, 0.5]), (3, [-0.5, 0.0, 0.5])])
def test_threshold_initialisation(N, expected):
    q = MultiBaseSign(N)
    q.build((2, 4))
    np.testing.assert_allclose(q.thresholds.numpy(), expected)
    per_channel = MultiBaseSign(N, per_channel=True, threshold_spread=1.0)
    per_channel.build((2, 4))
    assert per_channel.thresholds.shape == (N, 4)
    np.testing.assert_allclose(per_channel.thresholds.numpy()[:, 2], 2 * np.asarray(expected))


def test_multibase_sign_forward_order_and_gradient():
    x = tf.constant([[-1.2, -0.5, 0.0, 0.3, 0.5, 2.0]])  # (1, 6)
    q = MultiBaseSign(3)
    q.build(x.shape)
    out = q(x).numpy()  # (1, 18): base-major
    for n, theta in enumerate([-0.5, 0.0, 0.5]):
        expected = np.where(x.numpy() - theta >= 0, 1.0, -1.0)  # +1 at 0
        np.testing.assert_array_equal(out[:, 6 * n: 6 * (n + 1)], expected)
        # One base alone, as a PaBT layer computes it (only its active bases).
        np.testing.assert_array_equal(q.shifted_sign(x, q.thresholds[n]), expected)
    # ste_sign: ∂/∂θ_n = −Σ 1{|x − θ_n| ≤ 1}; ∂/∂x = Σ_n 1{|x − θ_n| ≤ 1}.
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = tf.reduce_sum(q(x))
    s = x.numpy()[0][None, :] - np.array([-0.5, 0.0, 0.5])[:, None]
    np.testing.assert_allclose(tape.gradient(y, q.thresholds), -(np.abs(s) <= 1).sum(axis=1))
    np.testing.assert_allclose(tape.gradient(y, x)[0], (np.abs(s) <= 1).sum(axis=0))


@pytest.mark.parametrize("clip", [1.0, 2.0, None])
@pytest.mark.parametrize("per_channel", [False, True])
def test_fused_ste_sign_equals_larq_ste_sign(clip, per_channel):
    """The fused SteSign path gives Larq's ste_sign forward and gradients."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 3, 4)).astype(np.float32) * 2)
    x = tf.tensor_scatter_nd_update(x, [[0, 0, 0]], [0.3])  # exactly θ: sign(0) = +1
    upstream = tf.constant(rng.normal(size=(2, 3, 4)).astype(np.float32))
    q = MultiBaseSign(3, per_channel=per_channel, pseudo_gradient=lq.quantizers.SteSign(clip))
    q.build(x.shape)
    theta = np.full(q.thresholds.shape, 0.3, np.float32)
    theta[0] = -0.7
    q.thresholds.assign(theta)
    results = []
    for fused in (True, False):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            t = tf.convert_to_tensor(q.thresholds)[1]
            h = q.shifted_sign(x, t) if fused else lq.quantizers.ste_sign(x - t, clip_value=clip)
            loss = tf.reduce_sum(h * upstream)
        results.append([h, tape.gradient(loss, x), tape.gradient(loss, q.thresholds)])
    for a, b in zip(*results):
        np.testing.assert_allclose(tf.convert_to_tensor(a), tf.convert_to_tensor(b), rtol=1e-6, atol=1e-6)
    assert results[0][0].numpy()[0, 0, 0] == 1.0
    # NaN is not hidden.
    assert np.isnan(q.shifted_sign(x, tf.constant(np.nan))).all()


def test_random_sign():
    values = RandomSign(seed=3)((64, 64)).numpy()
    assert set(np.unique(values)) == {-1.0, 1.0}
    assert 0.45 < (values > 0).mean() < 0.55
    np.testing.assert_array_equal(values, RandomSign(seed=3)((64, 64)))
    assert not np.array_equal(values, RandomSign(seed=4)((64, 64)))


@pytest.mark.parametrize("ok", ["ste_sign", "approx_sign", "swish_sign",
                                lq.quantizers.SteSign(clip_value=2.0)])
def test_sign_quantizers_accepted(ok):
    assert get_binary_quantizer(ok, "q").precision == 1


@pytest.mark.parametrize(
    "bad", ["ste_tern", "ste_heaviside", "magnitude_aware_sign", "nope", None,
            lq.quantizers.DoReFa(k_bit=1), lq.quantizers.NoOp(precision=1)]
)
def test_non_sign_quantizers_rejected(bad):
    with pytest.raises(ValueError, match="`q`"):
        get_binary_quantizer(bad, "q")


@pytest.mark.parametrize(
    "kwargs,argument",
    [(dict(activation_bases=0), "activation_bases"), (dict(activation_bases=2.0), "activation_bases"),
     (dict(threshold_spread=-0.1), "threshold_spread"), (dict(pseudo_gradient="ste_tern"), "pseudo_gradient")],
)
def test_multibase_sign_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        MultiBaseSign(**kwargs)
    with pytest.raises(ValueError, match="weight_bases"):
        ABCWeightBases(0)
