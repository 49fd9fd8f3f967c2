"""`verify` tells float-rounding ties from real differences (`sign_margins`), on real LCE
flatbuffers: a batch norm whose mean sits one float32 step beside an accumulator value
puts that value within rounding of the sign's threshold, and Keras (`(acc − mean)·scale`)
and LCE (the batch norm folded into the binary convolution's output transform) can
binarize it differently."""

import larq as lq
import larq_compute_engine as lce
import numpy as np
import pytest
import tensorflow as tf
from larq_compute_engine.tflite.python.interpreter import Interpreter

import pabt_tf as pabt
from pabt_tf.export import sign_margins, verify

KW = dict(padding="same", pad_values=1.0, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
          kernel_constraint="weight_clip", use_bias=False)


def _bnn(seed: int = 0, dense: bool = False) -> tf.keras.Model:
    """Two binary convolutions; `dense`: their (6, 6, 8) output is the model's, a class
    vector per position as in segmentation, else it is flattened (one per sample)."""
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((6, 6, 8))
    x = lq.layers.QuantConv2D(8, 3, name="bconv1", **KW)(inp)
    bn = tf.keras.layers.BatchNormalization(name="bn")
    x = lq.layers.QuantConv2D(8, 3, name="bconv2", **KW)(bn(x))
    # Accumulators are integers: a mean of 0.5 keeps every binarized value ≥ 0.49 from
    # the threshold (the input's too, below), so no sample is a tie.
    gamma, beta, _, var = bn.get_weights()
    bn.set_weights([gamma, beta, np.full(8, 0.5, np.float32), var])
    return tf.keras.Model(inp, x if dense else tf.keras.layers.Flatten()(x))


@pytest.fixture(scope="module")
def data():
    return np.random.RandomState(0).randn(100, 6, 6, 8).astype(np.float32)


def _differing(model, flatbuffer, x) -> int:
    lce_out = Interpreter(flatbuffer, use_indirect_bgemm=True).predict(x)
    diff = np.abs(lce_out - model.predict(x, verbose=0)).reshape(len(x), -1).max(axis=1)
    return int(np.sum(diff > 1e-3))


def _set_tie(model, x, rare: bool, accept=None) -> tuple[bytes, int]:
    """Put one channel's batch-norm mean one float32 step beside an accumulator value of
    the first binary convolution, with a scale at which LCE's folded threshold rounds the
    other way (found by trying): a tie on one or two samples (`rare`), or on most.

    # Returns
        The flatbuffer and the number of samples on which LCE and Keras differ.
    """
    acc = tf.keras.Model(model.inputs, model.get_layer("bconv1").output).predict(x, verbose=0)
    bn = model.get_layer("bn")
    rng = np.random.RandomState(1)
    for _ in range(40):
        c = rng.randint(8)
        per_sample = acc[..., c].reshape(len(x), -1)
        # Rare: a value only the extreme samples reach; frequent: a common one.
        tie = per_sample.max() if rare else np.median(per_sample)
        if accept is not None:  # a value a random share of the samples reach
            peaks = np.sort(per_sample.max(axis=1))
            tie = peaks[int(rng.uniform(0.0, 0.97) * len(peaks))]
        mean = np.full(8, 0.5, np.float32)  # accumulators are integers: no tie elsewhere
        mean[c] = np.nextafter(np.float32(tie), np.float32(rng.choice([-np.inf, np.inf])))
        gamma, var = rng.uniform(0.3, 3, 8), rng.uniform(0.5, 30, 8)
        bn.set_weights([gamma.astype(np.float32), np.zeros(8, np.float32), mean,
                        var.astype(np.float32)])
        flatbuffer = lce.convert_keras_model(model)
        differing = _differing(model, flatbuffer, x)
        if accept is not None:
            if accept(differing):
                return flatbuffer, differing
        elif (1 <= differing <= 2) if rare else differing > 0.2 * len(x):
            return flatbuffer, differing
    pytest.fail("no batch-norm setting gave a rounding tie")


def test_rare_rounding_ties_pass_and_are_counted(data):
    model = _bnn()
    flatbuffer, tied = _set_tie(model, data, rare=True)
    result = verify(model, flatbuffer, data)
    # Those samples do differ (one bit of the second convolution's input flips)...
    assert not result.exact and result.max_abs_diff >= 2.0
    assert result.differing == result.ties == tied
    assert len(result.differing_margins) == tied and max(result.differing_margins) <= 1e-5
    # ...and a tie is a tie: it passes (≤ 2 % of the samples), and says so.
    assert result.ok
    assert "rounding ties" in str(result) and "PASSED" in str(result)
    assert result.as_dict()["ties"] == tied and result.as_dict()["exact"] is False
    # With no ties allowed, the same comparison fails.
    assert not verify(model, flatbuffer, data, max_tie_fraction=0.0).ok
    # sign_margins: the tied samples sit at rounding distance, the others do not.
    margins = sign_margins(model, data)
    assert np.sum(margins <= 1e-5) >= tied
    assert margins.shape == (len(data),)


def test_frequent_ties_fail(data):
    model = _bnn()
    flatbuffer, _ = _set_tie(model, data, rare=False)
    result = verify(model, flatbuffer, data)
    assert result.differing > 0.02 * len(data)
    assert result.ties == result.differing  # all ties, but too many to be rounding luck
    assert not result.ok and "FAILED" in str(result)


def test_dense_outputs_let_ties_excuse_up_to_half_the_samples(data):
    """A class vector per position (segmentation) binarizes many more values per sample:
    ties may excuse up to half the samples there (DENSE_TIE_FRACTION), not 2 %."""
    from pabt_tf.export.verification import DEFAULT_TIE_FRACTION, DENSE_TIE_FRACTION

    model = _bnn(dense=True)
    n = len(data)
    flatbuffer, tied = _set_tie(model, data, rare=False,
                                accept=lambda d: 0.05 * n < d <= 0.4 * n)
    result = verify(model, flatbuffer, data, min_top1=0.0)  # the tie rule alone
    assert result.max_tie_fraction == DENSE_TIE_FRACTION
    assert result.differing == result.ties == tied and result.ok
    assert not verify(model, flatbuffer, data, min_top1=0.0, max_tie_fraction=0.02).ok
    # The same network, flattened: one vector per sample, the 2 % bound.
    flat = tf.keras.Model(model.inputs, tf.keras.layers.Flatten()(model.outputs[0]))
    result = verify(flat, lce.convert_keras_model(flat), data, min_top1=0.0)
    assert result.max_tie_fraction == DEFAULT_TIE_FRACTION and result.ties > 0.02 * n
    assert not result.ok
    # Ties on more than half the samples fail on a dense output too.
    flatbuffer, tied = _set_tie(model, data, rare=False, accept=lambda d: d > 0.5 * n)
    result = verify(model, flatbuffer, data, min_top1=0.0)
    assert result.ties == tied and not result.ok


def test_a_different_function_is_not_a_tie(data):
    model, other = _bnn(0), _bnn(1)  # other weights: a wrong flatbuffer for `model`
    x = np.where(np.abs(data) < 0.1, 0.1, data).astype(np.float32)  # no input near 0
    result = verify(model, lce.convert_keras_model(other), x)
    assert result.differing == len(x) and result.ties == 0 and not result.ok
    assert min(result.differing_margins) >= 0.09
    assert sign_margins(model, x).min() >= 0.09


def test_sign_margins_measure_every_binarized_input(data):
    model = _bnn()
    x_bn = tf.keras.Model(model.inputs, model.get_layer("bn").output).predict(data, verbose=0)
    expected = np.minimum(np.abs(data).reshape(len(data), -1).min(1),
                          np.abs(x_bn).reshape(len(data), -1).min(1))
    np.testing.assert_allclose(sign_margins(model, data), expected, rtol=1e-6)


def test_sign_margins_of_a_pabt_layer_use_its_active_thresholds():
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((5, 5, 4))
    layer = pabt.PaBTConv2D(6, 3, padding="same", name="pabt")
    model = tf.keras.Model(inp, layer(inp))
    x = np.random.RandomState(2).randn(7, 5, 5, 4).astype(np.float32)
    thresholds = layer.input_quantizer.thresholds.numpy()
    mask = np.zeros((layer.weight_bases, layer.activation_bases), bool)
    mask[0, 1] = True  # only activation base 1 is computed
    layer.set_binary_conv_mask(mask)
    expected = np.abs(x - thresholds[1]).reshape(len(x), -1).min(1)
    np.testing.assert_allclose(sign_margins(model, x), expected, rtol=1e-6)


def test_ties_are_found_inside_nested_models(data):
    """A BNN wrapped in another model (functional or Sequential, as a user adds
    preprocessing) is probed inside: the same margins, the same ties excused."""
    model = _bnn()
    flatbuffer, tied = _set_tie(model, data, rare=True)
    inp = tf.keras.Input(data.shape[1:])
    wrapped = tf.keras.Model(inp, model(inp))
    stacked = tf.keras.Sequential([tf.keras.Input(data.shape[1:]), model])
    expected = sign_margins(model, data)
    for outer in (wrapped, stacked):
        np.testing.assert_array_equal(sign_margins(outer, data), expected)
        result = verify(outer, flatbuffer, data)
        assert result.ok and result.differing == result.ties == tied

    class Subclassed(tf.keras.Model):  # no graph inside to probe
        def call(self, x):
            return model(x)

    with pytest.raises(ValueError, match="it can probe"):
        sign_margins(Subclassed(), data[:2])


def test_a_result_beyond_atol_needs_counted_ties():
    from pabt_tf.export import VerificationResult

    base = dict(samples=100, mean_abs_diff=0.0, top1_agreement=1.0)
    assert VerificationResult(max_abs_diff=1e-6, **base).ok
    # Beyond atol (or NaN) with no differing samples counted: not excused.
    assert not VerificationResult(max_abs_diff=0.5, **base).ok
    assert not VerificationResult(max_abs_diff=float("nan"), **base).ok
    assert VerificationResult(max_abs_diff=0.5, differing=2, ties=2, **base).ok
    assert not VerificationResult(max_abs_diff=0.5, differing=3, ties=2, **base).ok
    assert not VerificationResult(max_abs_diff=0.5, differing=3, ties=3, **base).ok  # > 2 %
    assert not VerificationResult(max_abs_diff=1e-6, **{**base, "top1_agreement": 0.9}).ok


def test_verify_fails_a_flatbuffer_whose_outputs_are_nan(data):
    model = _bnn()
    flatbuffer = lce.convert_keras_model(model)
    bad = data.copy()
    bad[0, 0, 0, 0] = np.nan  # NaN in, NaN out of both: no number to compare
    result = verify(model, flatbuffer, bad[:4])
    assert np.isnan(result.max_abs_diff) and not result.ok


def test_sign_margins_and_verify_refuse_bad_arguments(data):
    plain = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no PaBT layer or Larq sign-quantized layer"):
        sign_margins(plain, np.zeros((1, 3), np.float32))
    model = _bnn()
    flatbuffer = lce.convert_keras_model(model)
    for kwargs, name in [({"tie_atol": -1.0}, "tie_atol"), ({"atol": float("nan")}, "atol"),
                         ({"max_tie_fraction": 1.5}, "max_tie_fraction"),
                         ({"min_top1": -0.1}, "min_top1")]:
        with pytest.raises(ValueError, match=f"`{name}`"):
            verify(model, flatbuffer, data[:2], **kwargs)
