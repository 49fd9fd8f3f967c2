"""Pruning schedules: values with numbers, validation, serialization."""

import json

import numpy as np
import pytest
import tensorflow as tf

import pabt_tf as pabt
from pabt_tf import schedules


def test_polynomial_decay_values():
    s = schedules.PolynomialDecay(begin_step=10, end_step=50, power=3, frequency=10)
    # r = (1 - (s - 10) / 40) ** 3
    assert s(0) == (False, 1.0)
    assert s(9) == (False, 1.0)
    assert s(10) == (True, 1.0)
    assert s(15) == (False, pytest.approx(0.875**3))
    assert s(20) == (True, pytest.approx(0.75**3))  # 0.421875
    assert s(30) == (True, pytest.approx(0.125))
    assert s(40) == (True, pytest.approx(0.015625))
    assert s(50) == (True, 0.0)
    assert s(51) == (False, 0.0)
    assert s(10_000) == (False, 0.0)


def test_polynomial_decay_always_prunes_at_end_step():
    # (end - begin) = 25 is not a multiple of 10: tfmot would never prune at 25.
    s = schedules.PolynomialDecay(0, 25, power=2, frequency=10)
    events = [step for step in range(40) if s(step)[0]]
    assert events == [0, 10, 20, 25]
    assert s(25)[1] == 0.0
    assert s(20)[1] == pytest.approx((1 - 20 / 25) ** 2)


def test_remaining_fraction_is_monotone_and_power_shapes_it():
    fast = schedules.PolynomialDecay(0, 100, power=3, frequency=1)
    linear = schedules.PolynomialDecay(0, 100, power=1, frequency=1)
    r_fast = np.array([fast(s)[1] for s in range(101)])
    r_lin = np.array([linear(s)[1] for s in range(101)])
    assert np.all(np.diff(r_fast) <= 0) and np.all(np.diff(r_lin) <= 0)
    assert np.all(r_fast[1:-1] < r_lin[1:-1])  # power 3 prunes earlier
    np.testing.assert_allclose(r_lin, 1 - np.arange(101) / 100)


def test_linear_decay_equals_power_one():
    lin = schedules.LinearDecay(5, 25, frequency=5)
    poly = schedules.PolynomialDecay(5, 25, power=1, frequency=5)
    for step in range(0, 40):
        assert lin(step) == poly(step)
    assert lin(15) == (True, 0.5)


def test_one_shot():
    s = schedules.OneShot(7)
    assert [s(step) for step in (0, 6, 7, 8, 100)] == [
        (False, 1.0), (False, 1.0), (True, 0.0), (False, 0.0), (False, 0.0)
    ]
    assert s.end_step == s.begin_step == 7


def test_step_accepts_numpy_and_tensors():
    s = schedules.PolynomialDecay(0, 10, power=1, frequency=5)
    assert s(np.int64(5)) == (True, 0.5)
    assert s(tf.constant(5, tf.int64)) == (True, 0.5)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(begin_step=10, end_step=10), "end_step"),
        (dict(begin_step=10, end_step=5), "end_step"),
        (dict(begin_step=-1, end_step=5), "begin_step"),
        (dict(begin_step=0.5, end_step=5), "begin_step"),
        (dict(begin_step=0, end_step=5, frequency=0), "frequency"),
        (dict(begin_step=0, end_step=5, frequency=-3), "frequency"),
        (dict(begin_step=0, end_step=5, frequency=2.5), "frequency"),
        (dict(begin_step=0, end_step=5, power=0), "power"),
        (dict(begin_step=0, end_step=5, power=-1), "power"),
        (dict(begin_step=0, end_step=5, power=float("nan")), "power"),
        (dict(begin_step=0, end_step=5, power="3"), "power"),
        (dict(begin_step=True, end_step=5), "begin_step"),
    ],
)
def test_polynomial_decay_validation(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        schedules.PolynomialDecay(**kwargs)


def test_other_schedules_validation_and_bad_steps():
    with pytest.raises(ValueError, match="`begin_step`"):
        schedules.OneShot(-2)
    with pytest.raises(ValueError, match="`end_step`"):
        schedules.LinearDecay(3, 1)
    s = schedules.LinearDecay(0, 10)
    with pytest.raises(ValueError, match="`step`"):
        s(-1)
    with pytest.raises(ValueError, match="`step`"):
        s(1.5)


@pytest.mark.parametrize(
    "schedule",
    [
        schedules.PolynomialDecay(3, 40, power=2.5, frequency=7),
        schedules.LinearDecay(0, 12, frequency=4),
        schedules.OneShot(9),
    ],
)
def test_serialization_round_trip(schedule):
    config = schedule.get_config()
    assert type(schedule).from_config(config) == schedule
    # Keras serialization through JSON, registered under the "pabt_tf" package.
    blob = json.dumps(tf.keras.utils.serialize_keras_object(schedule))
    restored = tf.keras.utils.deserialize_keras_object(json.loads(blob))
    assert type(restored) is type(schedule) and restored == schedule
    assert schedules.deserialize(json.loads(blob)) == schedule
    for step in range(0, 50, 3):
        assert restored(step) == schedule(step)


def test_deserialize_rejects_non_schedules():
    with pytest.raises(ValueError):
        schedules.deserialize({"class_name": "Adam", "config": {}})
    assert pabt.schedules is schedules
