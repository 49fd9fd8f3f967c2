"""From a checkout: `python -m converters.convert` and `python -m converters.benchmark` run
the programs installed as `pabt-convert` and `pabt-benchmark`, which live in
`pabt_tf.cli` (this directory is not installed)."""

import os

# Command-line programs start quietly: TensorFlow's C++ INFO/WARNING/ERROR logs of the
# CPU-only runtime (e.g. "failed call to cuInit" on a machine without a GPU) are hidden
# unless the user sets TF_CPP_MIN_LOG_LEVEL; Python-level errors still surface.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Our programs need tf.keras = Keras 2 whatever they import first (larq, LCE, TF).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
