"""Bop's adaptivity rate over a run (`bop_schedule`): constant, or cosine-decayed to 0."""

import pytest
import tensorflow as tf

from pabt_tf.run import train as run_train


def test_cosine_bop_gamma_decays_to_zero_over_the_run():
    config = dict(run_train.DEFAULTS, bop_gamma=1e-3, bop_schedule="cosine")
    gamma = run_train._bop_gamma(config, 100)
    assert isinstance(gamma, tf.keras.optimizers.schedules.CosineDecay)
    assert float(gamma(0)) == pytest.approx(1e-3)
    assert float(gamma(50)) == pytest.approx(5e-4, rel=1e-4)
    assert float(gamma(100)) == pytest.approx(0.0, abs=1e-12)
    assert run_train._bop_gamma(dict(config, bop_schedule="constant"), 100) == 1e-3


def test_unknown_bop_schedule_is_refused_naming_it():
    with pytest.raises(ValueError, match="bop_schedule"):
        run_train._bop_gamma(dict(run_train.DEFAULTS, bop_schedule="step"), 100)


def test_cosine_bop_run_trains_and_records_its_schedule(tmp_path):
    results = run_train.train(dict(
        method="bnn_bop", epochs=1, steps=4, train_limit=256, validation_limit=64,
        test_limit=64, verify_samples=8, output_dir=str(tmp_path), bop_gamma=1e-2,
        bop_schedule="cosine", convert=False, save_model=False,
        model_kwargs={"filters": [8, 8, 8, 8], "stem_filters": 8}))  # fmt: skip
    assert results["config"]["bop_schedule"] == "cosine"
    assert 0.0 <= results["test_accuracy"] <= 1.0
