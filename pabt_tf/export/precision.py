"""Make a trained model convertible: finite weights, float32 computation.

LCE converts float32 Keras models only, and a non-finite weight (a run ruined by NaN
data) makes binary convolutions fail in confusing ways (e.g. a kernel that is no longer
±scale per channel). Both are checked here before anything is stripped or converted, so
the error names the cause.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import tensorflow as tf
from tf_keras.src.mixed_precision import policy as _policy

from pabt_tf.nonfinite import nonfinite_weights

__all__ = ["check_finite_weights", "float32_model", "float32_scope"]


def check_finite_weights(model: tf.keras.Model) -> None:
    """# Raises
        ValueError: naming the model's non-finite weights, if any."""
    bad = nonfinite_weights(model)
    if bad:
        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        raise ValueError(
            f"Cannot convert model {model.name!r}: {len(bad)} weight(s) are not finite "
            f"(NaN or inf): {shown}. Training saw non-finite values (e.g. NaN inputs); "
            "retrain or restore a checkpoint from before they appeared."
        )


def _is_mixed(dtype: Any) -> bool:
    if isinstance(dtype, dict):  # a serialized DTypePolicy
        dtype = (dtype.get("config") or {}).get("name", "")
    return isinstance(dtype, str) and dtype.startswith("mixed_")


def _float32_config(config: Any) -> Any:
    """The config with every mixed-precision layer policy replaced by float32 (other dtypes,
    e.g. an int32 Input, are left alone)."""
    if isinstance(config, dict):
        return {k: ("float32" if k == "dtype" and _is_mixed(v) else _float32_config(v))
                for k, v in config.items()}  # fmt: skip
    if isinstance(config, list):
        return [_float32_config(v) for v in config]
    return config


def uses_mixed_precision(model: tf.keras.Model) -> bool:
    return _float32_config(model.get_config()) != model.get_config()


@contextlib.contextmanager
def float32_scope() -> Iterator[None]:
    """Layers created in the block compute in float32 whatever the global policy."""
    with _policy.policy_scope("float32"):
        yield


def float32_model(model: tf.keras.Model) -> tf.keras.Model:
    """`model` itself if it computes in float32, else a float32 copy with its weights.

    A mixed-precision model keeps its variables in float32, so the copy holds exactly the
    trained weights; it computes the trained function without float16 rounding (which
    can flip binarizations near a threshold), i.e. what LCE will compute.
    """
    config = model.get_config()
    plain = _float32_config(config)
    if plain == config:
        return model
    with float32_scope():
        copy = type(model).from_config(plain)
        copy.set_weights(model.get_weights())
    return copy
