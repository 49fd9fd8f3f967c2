"""Shared test fixtures. Tests run on the real stack: TensorFlow, Larq, LCE, and the
Fashion-MNIST IDX files of Debian's `dataset-fashion-mnist`."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pabt_tf  # noqa: E402,F401  (sets up Keras 2 before TensorFlow is imported)

# isort: split
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest-xdist workers on the machine's two cores: one TensorFlow
    # thread each. In this process only: the processes tests start keep TensorFlow's
    # defaults (with one thread forced through their environment, the MirroredStrategy
    # worker's replicas no longer match its single-device run).
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

from pabt_tf.data import load_fashion_mnist  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    yield


@pytest.fixture(scope="session")
def fmnist_small():
    """A small real Fashion-MNIST subset: (x_train, y_train, x_test, y_test)."""
    x_train, y_train = load_fashion_mnist("train", limit=4096)
    x_test, y_test = load_fashion_mnist("test", limit=1024)
    return x_train, y_train, x_test, y_test
