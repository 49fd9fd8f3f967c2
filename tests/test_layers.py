"""PaBT layers against an explicit, independently computed sum of binary convolutions.

The reference here never calls the layer's own folding or padding code: binary kernels
are recomputed from the stored weights with NumPy/TF ops, `sign` and its pseudo-gradient
are written out by hand, and +1 'same' padding uses the identity
`conv_valid(pad(H, +1), B) = conv_same(H - 1, B) + Σ B` (TF's zero 'same' padding).
"""

import itertools

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import pabt_tf as pabt
from pabt_tf.layers import PaBTConv2D, PaBTDense

BASES = [("independent", True), ("independent", False), ("abc", True)]
BASE_IDS = ["independent-latent", "latent-free", "abc"]


# -- an independent reference --------------------------------------------------------


def _sign(x):
    """sign with +1 at 0 (Larq/LCE), and a hand-written straight-through gradient
    clipped at |x| <= 1 (Larq's ste_sign) when `clip`."""
    forward = tf.where(x >= 0, 1.0, -1.0)
    return forward + (x - tf.stop_gradient(x)) * tf.cast(tf.abs(x) <= 1.0, x.dtype)


def _straight(x, forward):
    return forward + (x - tf.stop_gradient(x))


def reference_kernels(layer):
    """The M binary weight bases, from the stored weights, differentiable to them."""
    M = layer.weight_bases
    if layer.bases == "abc":
        w = tf.convert_to_tensor(layer.kernel)
        wn = w.numpy()
        axes = tuple(range(wn.ndim - 1))
        mean = wn.mean(axis=axes, keepdims=True)
        std = wn.std(axis=axes, keepdims=True)
        u = [0.0] if M == 1 else [-1.0 + 2.0 * m / (M - 1) for m in range(M)]
        return [
            _straight(w, tf.constant(np.where(wn - mean + u[m] * std >= 0, 1.0, -1.0), tf.float32))
            for m in range(M)
        ]
    latents = [k.latent_variable for k in layer.kernels]
    if layer.latent_weights:
        return [_sign(tf.convert_to_tensor(w)) for w in latents]
    return [tf.convert_to_tensor(w) for w in latents]


def reference_branches(layer, x):
    """{(m, n): α_m ⊙ op(pad(H_n(x)), B_m)} for every (m, n), no gate/mask applied."""
    x = tf.convert_to_tensor(x)
    theta = tf.convert_to_tensor(layer.input_quantizer.thresholds)
    kernels = reference_kernels(layer)
    scale = tf.convert_to_tensor(layer.scale)
    out = {}
    for n in range(layer.activation_bases):
        h = _sign(x - theta[n])  # (N,) or (N, C): broadcasts over the channel axis
        for m, b in enumerate(kernels):
            if isinstance(layer, PaBTDense):
                y = tf.einsum("...c,co->...o", h, b)
            # tf.nn.convolution: a dilated input gradient on every CPU (oneDNN or not).
            elif layer.padding == "valid":
                y = tf.nn.convolution(
                    h, b, list(layer.strides), "VALID", dilations=list(layer.dilation_rate)
                )
            else:
                y = tf.nn.convolution(
                    h - 1.0, b, list(layer.strides), "SAME", dilations=list(layer.dilation_rate)
                ) + tf.reduce_sum(b, axis=[0, 1, 2])
            out[m, n] = scale[m] * y
    return out


def reference_output(layer, x):
    coef = tf.convert_to_tensor(layer.mask * layer.gate_decay * layer.gate)
    branches = reference_branches(layer, x)
    y = tf.add_n([coef[m, n] * b for (m, n), b in branches.items()])
    if layer.use_bias:
        y = y + layer.bias
    return y


def randomize(layer, rng, mask=None):
    """Random mask (≥1 active), gates, gate decay, scales, thresholds and bias."""
    M, N = layer.weight_bases, layer.activation_bases
    if mask is None:
        mask = rng.random((M, N)) < 0.6
        mask[rng.integers(M), rng.integers(N)] = True
    layer.set_binary_conv_mask(mask)
    layer.gate.assign(rng.uniform(0.5, 1.5, (M, N)).astype(np.float32))
    layer.gate_decay.assign(rng.uniform(0.5, 1.0, (M, N)).astype(np.float32))
    layer.scale.assign(rng.uniform(0.2, 1.0, layer.scale.shape).astype(np.float32))
    t = layer.input_quantizer.thresholds
    t.assign(rng.uniform(-0.7, 0.7, t.shape).astype(np.float32))
    if layer.use_bias:
        layer.bias.assign(rng.normal(size=layer.bias.shape).astype(np.float32))
    return mask


def make_conv(M, N, bases, latent, **kwargs):
    kwargs.setdefault("filters", 5)
    kwargs.setdefault("kernel_size", 3)
    return PaBTConv2D(
        weight_bases=M, activation_bases=N, bases=bases, latent_weights=latent, **kwargs
    )


# -- acceptance: output == explicit sum --------------------------------------------

CONV_GEOMETRIES = [
    ("same", 1, 1),
    ("valid", 1, 1),
    ("same", 2, 1),
    ("valid", 2, 1),
    ("same", 1, 2),
    ("valid", 1, 2),
]


@pytest.mark.parametrize("padding,strides,dilation", CONV_GEOMETRIES)
@pytest.mark.parametrize("bases,latent", BASES, ids=BASE_IDS)
def test_conv_equals_explicit_sum(padding, strides, dilation, bases, latent):
    rng = np.random.default_rng(hash((padding, strides, dilation, bases, latent)) % 2**32)
    worst = 0.0
    for i, (M, N) in enumerate(itertools.product([1, 2, 3], [1, 2, 3])):
        layer = make_conv(
            M, N, bases, latent,
            kernel_size=(3, 2) if i % 2 else 3,
            strides=strides, padding=padding, dilation_rate=dilation,
            per_channel_thresholds=bool(i % 2), use_bias=bool(i % 3 == 0),
        )
        x = rng.normal(size=(2, 9, 8, 3)).astype(np.float32)
        layer.build(x.shape)
        randomize(layer, rng)
        expected = reference_output(layer, x).numpy()
        got = layer(x).numpy()
        assert got.shape == expected.shape == layer.compute_output_shape(x.shape)
        worst = max(worst, np.abs(got - expected).max())
    assert worst <= 1e-4


@pytest.mark.parametrize(
    "bases,latent,N",
    [("independent", True, 3), ("independent", False, 3), ("abc", True, 3),
     ("independent", True, 5)],  # N > 3: the chained-cond path instead of one per pattern
    ids=BASE_IDS + ["N5"],
)
def test_conv_equals_explicit_sum_in_graph_mode(bases, latent, N):
    """Inside a compiled model (dynamic mask in a tf.function), every mask works
    without retracing, including fully pruned activation and weight bases."""
    rng = np.random.default_rng(1)
    layer = make_conv(3, N, bases, latent, padding="same", per_channel_thresholds=True)
    model = tf.keras.Sequential([tf.keras.Input((7, 7, 4)), layer])
    run = tf.function(model)
    x = rng.normal(size=(2, 7, 7, 4)).astype(np.float32)
    masks = [
        np.ones((3, 3), bool),
        np.array([[1, 0, 0], [0, 0, 0], [1, 0, 0]], bool),  # activation bases 1, 2 gone
        np.array([[0, 0, 0], [0, 1, 1], [0, 0, 0]], bool),  # weight bases 0, 2 gone
        np.eye(3, dtype=bool),
        np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0]], bool),  # one binary convolution
        np.array([[0, 1, 0], [0, 0, 0], [0, 0, 1]], bool),
    ]
    masks = [np.concatenate([m, np.zeros((3, N - 3), bool)], axis=1) for m in masks]
    if N > 3:
        masks.append(np.eye(3, N, k=N - 3, dtype=bool))  # only the bases beyond 3
    for mask in masks:
        randomize(layer, rng, mask)
        np.testing.assert_allclose(run(x), reference_output(layer, x), atol=1e-4)
    assert len(run._list_all_concrete_functions()) == 1


@pytest.mark.parametrize("bases,latent", BASES, ids=BASE_IDS)
@pytest.mark.parametrize("rank", [2, 3])
def test_dense_equals_explicit_sum(bases, latent, rank):
    rng = np.random.default_rng(rank)
    worst = 0.0
    for i, (M, N) in enumerate(itertools.product([1, 2, 3], [1, 2, 3])):
        layer = PaBTDense(
            4, weight_bases=M, activation_bases=N, bases=bases, latent_weights=latent,
            per_channel_thresholds=bool(i % 2), use_bias=bool(i % 2),
        )
        shape = (3, 6) if rank == 2 else (3, 5, 6)
        x = rng.normal(size=shape).astype(np.float32)
        layer.build(x.shape)
        randomize(layer, rng)
        got = layer(x).numpy()
        expected = reference_output(layer, x).numpy()
        assert got.shape == shape[:-1] + (4,)
        worst = max(worst, np.abs(got - expected).max())
    assert worst <= 1e-4


def test_activation_is_applied():
    layer = PaBTDense(3, weight_bases=2, activation_bases=2, activation="relu")
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    layer.build(x.shape)
    randomize(layer, np.random.default_rng(0))
    np.testing.assert_allclose(
        layer(x), np.maximum(reference_output(layer, x), 0.0), atol=1e-5
    )


# -- gradients -----------------------------------------------------------------------


def _grads(layer, x, upstream, forward):
    variables = {
        "gate": layer.gate,
        "scale": layer.scale,
        "thresholds": layer.input_quantizer.thresholds,
    }
    if layer.bases == "abc":
        variables["kernel"] = layer.kernel
    else:
        for m, k in enumerate(layer.kernels):
            variables[f"kernel_{m}"] = k.latent_variable
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(forward(x) * upstream)
    grads = tape.gradient(loss, list(variables.values()))
    return dict(zip(variables, grads))


@pytest.mark.parametrize("bases,latent", BASES, ids=BASE_IDS)
@pytest.mark.parametrize(
    "kind", ["conv-same-s1", "conv-valid-s2", "conv-same-d2", "dense-rank3"]
)
def test_gradients_equal_explicit(bases, latent, kind):
    """Gate gradients equal ⟨∂L/∂y, branch output⟩; thresholds, scales and kernels get
    the same gradients as through the explicit sum with a hand-written STE."""
    rng = np.random.default_rng(7)
    M, N = 3, 3
    if kind == "dense-rank3":
        layer = PaBTDense(4, weight_bases=M, activation_bases=N, bases=bases,
                          latent_weights=latent, per_channel_thresholds=True)
        x = rng.normal(size=(2, 3, 6)).astype(np.float32)
    else:
        padding, s, d = {"conv-same-s1": ("same", 1, 1), "conv-valid-s2": ("valid", 2, 1),
                         "conv-same-d2": ("same", 1, 2)}[kind]
        layer = make_conv(M, N, bases, latent, padding=padding, strides=s, dilation_rate=d,
                          per_channel_thresholds=kind.endswith("d2"))
        x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    layer.build(x.shape)
    mask = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 0]], bool)  # weight base 2 pruned
    randomize(layer, rng, mask)
    y_shape = layer.compute_output_shape(x.shape)
    upstream = tf.constant(rng.normal(size=y_shape).astype(np.float32))

    got = _grads(layer, x, upstream, layer)
    expected = _grads(layer, x, upstream, lambda v: reference_output(layer, v))

    # Gate gradients, explicitly: mask · decay · ⟨∂L/∂y, α_m ⊙ op(H_n, B_m)⟩.
    branches = reference_branches(layer, x)
    decay = layer.gate_decay.numpy()
    explicit_gate = np.zeros((M, N), np.float32)
    for (m, n), b in branches.items():
        explicit_gate[m, n] = mask[m, n] * decay[m, n] * tf.reduce_sum(upstream * b).numpy()
    assert np.abs(explicit_gate).max() > 0
    gate_grad = tf.convert_to_tensor(got["gate"]).numpy()
    np.testing.assert_allclose(gate_grad, explicit_gate, rtol=1e-4, atol=1e-3)
    assert np.all(gate_grad[~mask] == 0)

    for name in expected:
        g, e = tf.convert_to_tensor(got[name]), tf.convert_to_tensor(expected[name])
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-3, err_msg=name)
    # Thresholds train: their gradient is there and not zero.
    assert np.abs(tf.convert_to_tensor(got["thresholds"]).numpy()).max() > 0


def test_threshold_pseudo_gradient_is_configurable():
    """approx_sign's gradient 2(1 − |x|) differs from ste_sign's 1 on the thresholds."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6)).astype(np.float32)
    grads = {}
    for q in ("ste_sign", "approx_sign"):
        tf.keras.utils.set_random_seed(0)
        layer = PaBTDense(3, weight_bases=1, activation_bases=2, activation_quantizer=q)
        layer.build(x.shape)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x))
        grads[q] = tf.convert_to_tensor(
            tape.gradient(loss, layer.input_quantizer.thresholds)
        ).numpy()
        theta = layer.input_quantizer.thresholds.numpy()
        b = layer.binary_kernels().numpy()[0]  # (6, 3)
        s = x[None] - theta[:, None, None]  # (N, batch, C)
        upstream = b.sum(axis=1)  # ∂L/∂H_n per channel
        local = (np.abs(s) <= 1) * (1.0 if q == "ste_sign" else 2 * (1 - np.abs(s)))
        np.testing.assert_allclose(
            grads[q], -(local * upstream).sum(axis=(1, 2)), rtol=1e-5, atol=1e-5
        )
    assert not np.allclose(grads["ste_sign"], grads["approx_sign"])


# -- pruned bases cost nothing --------------------------------------------------------


def test_pruned_activation_bases_are_not_computed():
    """A fully pruned activation base is never binarized nor convolved: poisoning its
    threshold with NaN leaves the output (and every gradient) finite, while a NaN
    reaching a computed base would propagate (sign(NaN) = NaN, and 0·NaN = NaN)."""
    rng = np.random.default_rng(0)
    layer = make_conv(3, 3, "independent", False, padding="same")
    x = rng.normal(size=(1, 6, 6, 4)).astype(np.float32)
    layer.build(x.shape)
    mask = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 0]], bool)
    randomize(layer, rng, mask)
    theta = layer.input_quantizer.thresholds.numpy()
    theta[1:] = np.nan
    layer.input_quantizer.thresholds.assign(theta)
    run = tf.function(layer)
    y = run(x).numpy()
    assert np.isfinite(y).all()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(run(x) ** 2)
    grads = tape.gradient(loss, layer.trainable_variables)
    assert all(np.isfinite(tf.convert_to_tensor(g).numpy()).all() for g in grads)
    theta[1:] = 0.0
    layer.input_quantizer.thresholds.assign(theta)
    np.testing.assert_allclose(y, reference_output(layer, x), atol=1e-4)
    # Poisoning an active threshold does reach the output (the test above can fail).
    theta[0] = np.nan
    layer.input_quantizer.thresholds.assign(theta)
    assert np.isnan(run(x).numpy()).all()


def test_pruned_weight_bases_are_not_computed():
    """A fully pruned weight base does not enter the folded kernel: a NaN scale on it
    leaves the output finite."""
    rng = np.random.default_rng(0)
    layer = make_conv(3, 2, "independent", True)
    x = rng.normal(size=(1, 6, 6, 2)).astype(np.float32)
    layer.build(x.shape)
    mask = np.array([[0, 0], [1, 1], [0, 1]], bool)
    randomize(layer, rng, mask)
    expected = reference_output(layer, x).numpy()
    scale = layer.scale.numpy()
    scale[0] = np.nan
    layer.scale.assign(scale)
    np.testing.assert_allclose(tf.function(layer)(x), expected, atol=1e-4)


# -- latent-weight-free training with Bop ---------------------------------------------


def test_bop_trains_exactly_the_binary_kernels():
    rng = np.random.default_rng(0)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((8, 8, 2)),
            PaBTConv2D(4, 3, padding="same", weight_bases=2, activation_bases=2,
                       latent_weights=False),
            PaBTConv2D(4, 3, strides=2, weight_bases=3, activation_bases=1,
                       latent_weights=False),
            tf.keras.layers.Flatten(),
            PaBTDense(3, weight_bases=2, activation_bases=3, latent_weights=False),
        ]
    )
    layers = pabt.pabt_layers(model)
    optimizer = lq.optimizers.CaseOptimizer(
        (lq.optimizers.Bop.is_binary_variable, lq.optimizers.Bop(threshold=1e-6, gamma=1e-2)),
        default_optimizer=tf.keras.optimizers.legacy.Adam(0.01),
    )
    model.compile(optimizer, loss=tf.keras.losses.SparseCategoricalCrossentropy(True))
    before = [layer.binary_kernels().numpy() for layer in layers]
    x = rng.normal(size=(64, 8, 8, 2)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)

    key = lq.optimizers._var_key
    bop_keys = {k for k, i in optimizer.var_opt_mapping.items() if i == 0}
    kernel_keys = {key(k) for layer in layers for k in layer.kernels}
    assert bop_keys == kernel_keys
    assert len(kernel_keys) == 2 + 3 + 2
    others = {key(v) for v in model.trainable_variables} - kernel_keys
    assert others and all(optimizer.var_opt_mapping[k] == 1 for k in others)

    flipped = 0
    for layer, old in zip(layers, before):
        for k in layer.kernels:  # stored values, not just their quantized view
            v = k.latent_variable.numpy()
            assert set(np.unique(v)) <= {-1.0, 1.0}
        new = layer.binary_kernels().numpy()
        flipped += int((new != old).sum())
    assert flipped > 0


# -- bad arguments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        (dict(weight_bases=0), "weight_bases"),
        (dict(weight_bases=2.5), "weight_bases"),
        (dict(weight_bases=True), "weight_bases"),
        (dict(weight_bases="3"), "weight_bases"),
        (dict(activation_bases=-1), "activation_bases"),
        (dict(activation_bases=1.0), "activation_bases"),
        (dict(bases="xnor"), "bases"),
        (dict(bases="abc", latent_weights=False), "latent_weights"),
        (dict(latent_weights="no"), "latent_weights"),
        (dict(padding="causal"), "padding"),
        (dict(padding=1), "padding"),
        (dict(strides=0), "strides"),
        (dict(strides=(1, 2, 1)), "strides"),
        (dict(kernel_size=0), "kernel_size"),
        (dict(kernel_size=(3,)), "kernel_size"),
        (dict(kernel_size="3"), "kernel_size"),
        (dict(dilation_rate=(1, 0)), "dilation_rate"),
        (dict(strides=2, dilation_rate=2), "dilation_rate"),
        (dict(filters=0), "filters"),
        (dict(data_format="channels_first"), "data_format"),
        (dict(kernel_quantizer="ste_tern"), "kernel_quantizer"),
        (dict(kernel_quantizer="no_such_quantizer"), "kernel_quantizer"),
        (dict(activation_quantizer="ste_heaviside"), "activation_quantizer"),
        (dict(activation_quantizer=lq.quantizers.NoOp(precision=1)), "activation_quantizer"),
        (dict(threshold_spread=-1.0), "threshold_spread"),
        (dict(latent_weights=False, kernel_constraint="weight_clip"), "kernel_constraint"),
    ],
)
def test_bad_conv_arguments(kwargs, argument):
    base = dict(filters=4, kernel_size=3)
    base.update(kwargs)
    with pytest.raises(ValueError, match=argument):
        PaBTConv2D(**base)


@pytest.mark.parametrize(
    "kwargs,argument",
    [(dict(units=0), "units"), (dict(units=2, weight_bases=0), "weight_bases"),
     (dict(units=2, bases="abc", latent_weights=False), "latent_weights")],
)
def test_bad_dense_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        PaBTDense(**kwargs)


def test_bad_pruning_calls_change_nothing():
    layer = make_conv(2, 2, "independent", True)
    layer.build((1, 5, 5, 2))
    state = lambda: [v.numpy().copy() for v in layer.weights]  # noqa: E731
    assert layer.prune(0, 1) is True
    assert layer.prune(0, 1) is False
    layer.prune(1, 0)
    layer.prune(1, 1)
    assert layer.binary_conv_mask.tolist() == [[True, False], [False, False]]
    snapshot = state()
    bad_calls = [
        (lambda: layer.prune(0, 0), "last active"),
        (lambda: layer.prune(2, 0), "`m`"),
        (lambda: layer.prune(0, -1), "`n`"),
        (lambda: layer.prune(0.0, 0), "`m`"),
        (lambda: layer.prune(True, 0), "`m`"),
        (lambda: layer.set_binary_conv_mask(np.ones((2, 3))), "mask"),
        (lambda: layer.set_binary_conv_mask(np.zeros((2, 2))), "mask"),
    ]
    for call, message in bad_calls:
        with pytest.raises(ValueError, match=message):
            call()
        for a, b in zip(snapshot, state()):
            np.testing.assert_array_equal(a, b)
    assert layer.active_binary_convs == 1


def test_unbuilt_layer_and_unknown_channels():
    layer = make_conv(2, 2, "independent", True)
    with pytest.raises(ValueError, match="build"):
        layer.prune(0, 0)
    with pytest.raises(ValueError, match="channel"):
        layer.build((1, 5, 5, None))


# -- cost bookkeeping -----------------------------------------------------------------


def test_mask_bookkeeping_and_macs():
    layer = make_conv(3, 2, "independent", True, filters=8, strides=2, padding="same")
    layer.build((1, 10, 10, 4))
    assert layer.num_binary_convs == 6 and layer.active_binary_convs == 6
    assert layer.binary_conv_macs() == 3 * 3 * 4 * 8 * 5 * 5
    layer.prune(2, 1)
    assert layer.active_binary_convs == 5
    assert layer.binary_macs() == 5 * layer.binary_conv_macs()
    dense = PaBTDense(7, weight_bases=2, activation_bases=2)
    dense.build((1, 3, 6))
    assert dense.binary_conv_macs() == 6 * 7 * 3


# -- the speed benchmark runs ----------------------------------------------------------


@pytest.mark.slow  # an end-to-end run of the benchmark program: five TensorFlow processes
def test_bench_layers_smoke(tmp_path):
    """`python -m experiments.bench_layers` runs end to end (tiny sizes) and reports
    every ratio; the speed targets themselves are measured by running it, not here."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "experiments.bench_layers", "--sizes=6", "--batch=4",
           "--channels=8", "--layers=2", "--bases=2", "--steps=2", "--warmup=1",
           f"--json={out}"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step-time ratio PaBT/BNN" in proc.stdout and "peak tensor memory" in proc.stdout
    row = json.loads(out.read_text())["6"]
    for key in ("time_ratio", "pruned_time_ratio", "rss_peak_ratio", "pruned_rss_peak_ratio",
                "static_time_ratio", "pruned_over_static"):
        assert row[key] > 0, key
    assert "cost of tf.switch_case in the pruned state" in proc.stdout
    assert {"tensor_peak_ratio", "pruned_tensor_peak_ratio"} <= row.keys()
