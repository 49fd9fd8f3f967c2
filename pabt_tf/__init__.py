"""pabt_tf: Pruning as a Binarization Technique (PaBT) for Keras/Larq.

Importing this package makes `tf.keras` Keras 2 (see `pabt_tf._env`); it changes nothing
else in TensorFlow or Larq.
"""

# Keras 2 is ensured first; the public API follows in dependency order.
# isort: skip_file
from pabt_tf._env import ensure_keras2 as _ensure_keras2

_ensure_keras2()

from pabt_tf import layers, quantizers  # noqa: E402
from pabt_tf.layers import PaBTConv2D, PaBTDense, PaBTLayer, pabt_layers  # noqa: E402
from pabt_tf.costs import (  # noqa: E402
    larq_profile,
    larq_summary,
    mean_binary_convs,
    set_reference_input_shape,
    summary,
)
from pabt_tf.transform import from_model  # noqa: E402
from pabt_tf import nonfinite, training  # noqa: E402
from pabt_tf.nonfinite import nonfinite_weights  # noqa: E402
from pabt_tf.training import PaBTModel  # noqa: E402
from pabt_tf import callbacks, pruning, schedules  # noqa: E402
from pabt_tf.callbacks import PaBTPruningCallback  # noqa: E402
from pabt_tf import export  # noqa: E402
from pabt_tf.export import LatencyTable, convert, latency_table, strip_pabt, verify  # noqa: E402
from pabt_tf import data, methods, models  # noqa: E402
from pabt_tf import batch_norm, losses, metrics  # noqa: E402


def _version() -> str:
    """The installed distribution's version (defined once, in setup.py)."""
    from importlib import metadata

    try:
        return metadata.version("pabt_tf")
    except metadata.PackageNotFoundError:  # imported from a source tree never installed
        return "0+unknown"


__version__ = _version()

__all__ = [
    "PaBTConv2D",
    "PaBTDense",
    "LatencyTable",
    "PaBTLayer",
    "PaBTModel",
    "PaBTPruningCallback",
    "batch_norm",
    "callbacks",
    "convert",
    "data",
    "losses",
    "export",
    "from_model",
    "larq_profile",
    "larq_summary",
    "latency_table",
    "layers",
    "mean_binary_convs",
    "methods",
    "metrics",
    "models",
    "nonfinite",
    "nonfinite_weights",
    "pabt_layers",
    "pruning",
    "quantizers",
    "schedules",
    "set_reference_input_shape",
    "strip_pabt",
    "summary",
    "training",
    "verify",
    "__version__",
]
