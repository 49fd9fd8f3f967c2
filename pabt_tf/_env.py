"""Make `tf.keras` resolve to Keras 2 before TensorFlow is imported.

Larq and Larq Compute Engine are written against `tf.keras` = Keras 2. TensorFlow >= 2.16
defaults to Keras 3 unless `TF_USE_LEGACY_KERAS=1` is set *before* TensorFlow is first
imported, and the choice cannot be changed afterwards.
"""

import os
import sys

_FIX = (
    "pabt_tf needs tf.keras to be Keras 2 (the `tf-keras` package). Either import "
    "pabt_tf before tensorflow, or set the environment variable TF_USE_LEGACY_KERAS=1 "
    "before the process starts (e.g. `export TF_USE_LEGACY_KERAS=1`), and make sure "
    "`tf-keras` of the same minor version as tensorflow is installed "
    "(`pip install 'tf-keras~=<tensorflow version>'`)."
)


def ensure_keras2() -> None:
    """Set `TF_USE_LEGACY_KERAS=1` if it still matters; raise if it is too late.

    # Raises
        ImportError: TensorFlow was already imported with Keras 3 as `tf.keras`, or
            `tf-keras` is not installed.
    """
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    try:
        import tf_keras  # noqa: F401
    except ImportError as err:
        raise ImportError("`tf-keras` is not installed. " + _FIX) from err
    if not tf.keras.__name__.startswith("tf_keras"):
        raise ImportError(
            f"tf.keras is Keras 3 (module {tf.keras.__name__}), "
            "because TensorFlow was imported before pabt_tf without "
            "TF_USE_LEGACY_KERAS=1. " + _FIX
        )
