"""Make `tf.keras` resolve to Keras 2 (`tf-keras`), or say clearly why it cannot.

Larq and Larq Compute Engine are written against `tf.keras` = Keras 2. TensorFlow >= 2.16
routes `tf.keras` through a lazy loader that picks Keras 2 or Keras 3 from
`TF_USE_LEGACY_KERAS` the *first time an attribute of `tf.keras` is touched*, not when
TensorFlow is imported. So the only question that matters is what `tf.keras` resolves
to: the loader's module name (`tensorflow.keras`) says nothing until then.
"""

from __future__ import annotations

import os
import sys

from pabt_tf._stderr import filtered_stderr, is_startup_noise

_FIX = (
    "pabt_tf needs tf.keras to be Keras 2 (the `tf-keras` package). Set the environment "
    "variable TF_USE_LEGACY_KERAS=1 before the process starts (e.g. "
    "`export TF_USE_LEGACY_KERAS=1`), or import pabt_tf before anything imports "
    "tensorflow, and make sure `tf-keras` of the same minor version as tensorflow is "
    "installed (`pip install 'tf-keras~=<tensorflow version>'`)."
)
_TRUE = ("true", "True", "1")


def import_tensorflow_quietly():
    """`import tensorflow` and find its devices, dropping only their known noise from stderr.

    TensorFlow prints CUDA plugin registration lines while it is imported, and the
    CUDA-capable `tensorflow` wheel prints `failed call to cuInit` the first time devices
    are listed (on a machine without a GPU): both happen here, inside the filter
    (`pabt_tf._stderr`, a pipe: file-size limits cannot break it). Listing the physical
    devices does not start TensorFlow's runtime (`tf.config` settings stay open), but
    `CUDA_VISIBLE_DEVICES` must be set before pabt_tf is imported. Everything else
    TensorFlow writes (warnings, errors) is passed on unchanged and in order; an exception
    still propagates.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _find_tempdir_under_a_zero_file_size_limit()
    with filtered_stderr(is_startup_noise):
        import tensorflow

        tensorflow.config.list_physical_devices()
    return tensorflow


def _find_tempdir_under_a_zero_file_size_limit() -> None:
    """Python's `tempfile` picks its directory by writing a few bytes in each candidate;
    under `ulimit -f 0` that fails everywhere, and `import tensorflow` (absl's test helpers
    ask for the directory) dies with "No usable temporary directory". An empty file can
    still be created: choose the first candidate that takes one, as `tempfile` would."""
    import tempfile

    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    except (ImportError, OSError, ValueError):  # pragma: no cover - not POSIX
        return
    if tempfile.tempdir is not None or soft == resource.RLIM_INFINITY or soft >= 1024:
        return
    for directory in tempfile._candidate_tempdir_list():
        try:
            fd, path = tempfile.mkstemp(dir=directory)
        except OSError:
            continue
        os.close(fd)
        os.unlink(path)
        tempfile.tempdir = os.path.abspath(directory)
        return


def keras_flavour() -> str:
    """The package `tf.keras` resolves to: `"tf_keras"` (Keras 2) or e.g. `"keras"`.

    TensorFlow's `tf.keras` is a lazy loader whose own `__name__` is always
    `tensorflow.keras`; only a class fetched through it tells which Keras is behind it.
    """
    import tensorflow as tf

    return tf.keras.Model.__module__.split(".")[0]  # touching an attribute resolves it


def ensure_keras2() -> None:
    """Make `tf.keras` Keras 2 if the choice is still open; raise if it was made otherwise.

    Works in any import order when `TF_USE_LEGACY_KERAS=1` is exported (after `import
    tensorflow`, `larq`, `larq_compute_engine`, `tf_keras`, or with `tf.keras` already
    used); without it, pabt_tf must come before TensorFlow and sets the variable itself.

    # Raises
        ImportError: `tf.keras` already resolved to Keras 3, or `tf-keras` is missing.
    """
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    tf = import_tensorflow_quietly()
    try:
        import tf_keras  # noqa: F401
    except ImportError as err:
        raise ImportError("`tf-keras` is not installed. " + _FIX) from err

    if tf.__dict__.get("_tf_uses_legacy_keras") is False:
        # TensorFlow read the variable when it was imported and routed `tensorflow.keras.*`
        # submodule imports to Keras 3 then; the lazy `tf.keras` alone cannot be re-pointed.
        raise ImportError(
            "TensorFlow was imported before pabt_tf without TF_USE_LEGACY_KERAS=1 in the "
            "environment, so tf.keras is Keras 3. " + _FIX
        )
    flavour = keras_flavour()
    if flavour != "tf_keras":
        how = (
            "TF_USE_LEGACY_KERAS is set, so `tf-keras` may not match tensorflow's version"
            if os.environ.get("TF_USE_LEGACY_KERAS") in _TRUE
            else "something used tf.keras before pabt_tf was imported, without "
            "TF_USE_LEGACY_KERAS=1"
        )
        raise ImportError(
            f"tf.keras resolves to `{flavour}` (Keras 3), not `tf_keras`: {how}. " + _FIX
        )
