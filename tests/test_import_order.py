"""`import pabt_tf` after any import a Larq user writes, each order in a fresh process.

With `TF_USE_LEGACY_KERAS=1` exported (what the README says) every order must work and
give Keras 2 to Larq and pabt_tf alike; without it pabt_tf must come before TensorFlow,
and otherwise fail with a clear ImportError (never a confusing error from deep inside).
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What a user may do before `import pabt_tf`.
BEFORE = {
    "nothing": "pass",
    "larq": "import larq as lq",
    "lce": "import larq_compute_engine as lce",
    "tensorflow": "import tensorflow as tf",
    "tf.keras touched": "import tensorflow as tf; tf.keras.layers.Dense",
    "from tensorflow import keras": "from tensorflow import keras",
    "tf_keras": "import tf_keras",
    "tensorflow then larq": "import tensorflow as tf; import larq",
}
CHECK = (
    "import pabt_tf, larq as lq, tensorflow as tf\n"
    "assert tf.keras.Model.__module__.startswith('tf_keras'), tf.keras.Model.__module__\n"
    "layer = pabt_tf.layers.PaBTConv2D(4, 3, weight_bases=2, activation_bases=2)\n"
    "y = layer(tf.ones((1, 5, 5, 3)))\n"
    "assert isinstance(layer, tf.keras.layers.Layer) and tuple(y.shape) == (1, 3, 3, 4)\n"
    "assert isinstance(lq.layers.QuantConv2D(4, 3), tf.keras.layers.Layer)\n"
    "print('IMPORT-OK')\n"
)


def _run(code: str, legacy: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "TF_CPP_MIN_LOG_LEVEL")}
    if legacy:
        env["TF_USE_LEGACY_KERAS"] = "1"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def outcomes() -> dict:
    jobs = {(name, legacy): f"{pre}\n{CHECK}" for name, pre in BEFORE.items() for legacy in (True, False)}
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(jobs, pool.map(lambda k: _run(jobs[k], k[1]), jobs)))
    return results


@pytest.mark.parametrize("name", list(BEFORE))
def test_any_order_works_with_the_variable_exported(outcomes, name):
    result = outcomes[(name, True)]
    assert result.returncode == 0 and "IMPORT-OK" in result.stdout, result.stderr[-3000:]


def test_pabt_first_needs_no_variable(outcomes):
    result = outcomes[("nothing", False)]
    assert result.returncode == 0 and "IMPORT-OK" in result.stdout, result.stderr[-3000:]


@pytest.mark.parametrize("name", ["lce", "tensorflow", "tf.keras touched", "from tensorflow import keras", "tf_keras"])
def test_tensorflow_first_without_variable_fails_clearly(outcomes, name):
    result = outcomes[(name, False)]
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError:"), result.stderr[-3000:]
    assert "TF_USE_LEGACY_KERAS=1" in last and "Keras 3" in last


def test_import_prints_no_tensorflow_startup_noise():
    result = _run("import pabt_tf\nprint('FIRST')", legacy=False)
    assert result.returncode == 0, result.stderr[-3000:]
    for noise in ("computation placer", "Unable to register", "cuInit", "InitializeLog"):
        assert noise not in result.stderr, result.stderr
    # Anything else written to stderr during TensorFlow's import is passed on, not eaten.
    result = _run("import sys; print('warned', file=sys.stderr)\nimport pabt_tf", legacy=False)
    assert "warned" in result.stderr


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "converters.convert", "--help"],
    [sys.executable, "-m", "converters.benchmark", "--help"],
    [sys.executable, "-m", "experiments.train", "--helpshort"],
])
def test_entry_points_start_quietly(command):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert "usage" in result.stdout.lower() or "flags" in result.stdout.lower(), result.stdout
    # Our help is the whole output: nothing from TensorFlow's start-up before or after it.
    assert result.stderr.strip() == "", result.stderr
