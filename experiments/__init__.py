"""Experiments: absl-flags programs (training, comparisons, benchmarks)."""

import os

# Programs start quietly (see converters/__init__.py): TensorFlow's C++ logs are hidden
# unless the user sets TF_CPP_MIN_LOG_LEVEL.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Our programs need tf.keras = Keras 2 whatever they import first (larq, LCE, TF).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
