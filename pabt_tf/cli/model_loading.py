"""Load a Keras model file for conversion without running code the file carries.

A Keras config can carry Python: a `Lambda` layer stores its function's bytecode (or a
name to look up), and the loaders run it while rebuilding the model. `.keras` files load in
Keras's safe mode, which refuses bytecode; the legacy `.h5` and SavedModel loaders ignore
safe mode. So before loading, `code_in_model` reads the config each format stores (the
`.keras` archive's `config.json`, the `.h5` file's `model_config` attribute, the
SavedModel's `keras_metadata.pb`) and lists what would run or import code:

- `Lambda` layers (and serialized Python `lambda`s);
- `TFOpLambda` layers calling a TensorFlow function outside the math namespaces (file I/O,
  `py_function`, `raw_ops`...): plain `x + 1` on Keras tensors stays allowed;
- references to Python modules other than Keras, TensorFlow, NumPy, Larq, LCE and
  pabt_tf (the loaders import them).

Plain models in every format load; `unsafe=True` (`pabt-convert --unsafe`) skips the
inspection and turns Keras's safe mode off, for files the user trusts.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile

from pabt_tf.cli.common import CliError

__all__ = ["code_in_config", "code_in_model", "load_keras_model"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_TRUSTED_MODULES = ("keras", "tf_keras", "tensorflow", "builtins", "numpy", "larq",
                    "larq_compute_engine", "pabt_tf")  # fmt: skip
# TFOpLambda layers call `tf.<function>`; these namespaces compute on tensors only.
_PURE_TF_NAMESPACES = ("math", "nn", "linalg", "__operators__", "image", "signal", "bitwise",
                       "random", "sparse", "ragged", "dtypes", "quantization")  # fmt: skip
_IMPURE_TF_FUNCTIONS = ("print", "py_function", "numpy_function", "load_op_library",
                        "load_library")  # fmt: skip


def _tf_function_is_pure(name: str) -> bool:
    head, _, rest = name.partition(".")
    return head in _PURE_TF_NAMESPACES if rest else name not in _IMPURE_TF_FUNCTIONS


def code_in_config(config) -> list[str]:
    """What in a Keras config (parsed JSON) would run or import code when loaded.

    # Returns
        One description per finding (empty if none), e.g. `"Lambda layer 'lambda'"`.
    """
    found: list[str] = []

    def visit(node) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        class_name = node.get("class_name")
        inner = node.get("config") if isinstance(node.get("config"), dict) else {}
        name = inner.get("name", node.get("name"))
        if isinstance(class_name, str):
            short = class_name.rsplit(">", 1)[-1]
            if short in ("Lambda", "__lambda__"):
                found.append(f"Lambda layer {name!r}" if short == "Lambda" else "a Python lambda")
                return  # its config holds the function: nothing more to learn inside
            if short in ("TFOpLambda", "SlicingOpLambda"):
                function = str(inner.get("function", ""))
                if not _tf_function_is_pure(function):
                    found.append(f"{short} layer {name!r} calling tf.{function}")
            module = node.get("module")
            if isinstance(module, str) and module.split(".")[0] not in _TRUSTED_MODULES:
                found.append(f"{class_name} from module {module!r}, which loading imports")
        if node.get("function_type") == "lambda":
            found.append("a Python function stored as bytecode")
        for value in node.values():
            visit(value)

    visit(config)
    return list(dict.fromkeys(found))  # SavedModels repeat each layer's config


def _json(text, source: str):
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        return json.loads(text)
    except ValueError as err:
        raise CliError(f"cannot read the model config in {source} ({err}).") from err


def _saved_model_configs(path: str) -> list:
    """The Keras metadata of a SavedModel: `keras_metadata.pb`, or (SavedModels written
    before TF 2.5) the metadata inside `saved_model.pb`'s object graph."""
    metadata_path = os.path.join(path, "keras_metadata.pb")
    if os.path.exists(metadata_path):
        from tf_keras.protobuf import saved_metadata_pb2

        metadata = saved_metadata_pb2.SavedMetadata()
        with open(metadata_path, "rb") as f:
            metadata.ParseFromString(f.read())
        return [_json(node.metadata, metadata_path) for node in metadata.nodes if node.metadata]
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return [
        _json(node.user_object.metadata, path)
        for graph in saved.meta_graphs
        for node in graph.object_graph_def.nodes
        if node.WhichOneof("kind") == "user_object" and node.user_object.metadata
    ]


def code_in_model(path: str) -> list[str]:
    """`code_in_config` over the config a `.keras`, `.h5` or SavedModel stores.

    # Raises
        CliError: the file claims a format whose config cannot be read.
    """
    if os.path.isdir(path):
        return code_in_config(_saved_model_configs(path))
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK\x03\x04") and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                return []  # not a Keras archive; Keras will say so
            return code_in_config(_json(archive.read("config.json"), path))
    if head == _HDF5_SIGNATURE:
        import h5py

        with h5py.File(path, "r") as f:
            config = f.attrs.get("model_config")
        return [] if config is None else code_in_config(_json(config, path))
    return []


def load_keras_model(path: str, unsafe: bool = False):
    """Load a .keras/.h5 file or SavedModel directory with pabt_tf's objects registered.

    # Arguments
        path: the model.
        unsafe: load even if the config carries code (and let Keras deserialize Python
            bytecode); only for files the user trusts.

    # Raises
        CliError: missing path, a file that is not a readable Keras model, or (without
            `unsafe`) a model whose config carries code.
    """
    import pabt_tf  # noqa: F401  (Keras 2 + registered custom objects)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # "compiled the loaded model..." chatter
    if not os.path.exists(path):
        raise CliError(f"model {path!r} does not exist.")
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise CliError(f"{path!r} is a directory but not a SavedModel (no saved_model.pb).")
    if not unsafe:
        try:
            found = code_in_model(path)
        except CliError:
            raise
        except Exception as err:  # h5py, zipfile and protobuf each raise their own types
            raise CliError(f"cannot read model {path!r} ({type(err).__name__}: {err}).") from err
        if found:
            raise CliError(
                f"model {path!r} carries code that loading it would run: {'; '.join(found)}. "
                "Refusing to load it. If you trust the file, pass --unsafe."
            )
    try:
        with warnings.catch_warnings(), _safe_mode(not unsafe):
            warnings.simplefilter("ignore")
            model = tf.keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as err:  # Keras raises many types for unreadable files
        raise CliError(
            f"cannot read model {path!r} as a Keras model ({type(err).__name__}: {err})."
        ) from err
    if not isinstance(model, tf.keras.Model):
        raise CliError(
            f"{path!r} loaded as {type(model).__name__}, not a Keras model; save it with "
            "model.save(...)."
        )
    return model


def _safe_mode(enabled: bool):
    """Keras's safe-mode scope, which the legacy `.h5`/SavedModel loaders only honour
    when it is set around them (a second line behind `code_in_model`)."""
    import contextlib

    try:
        from tf_keras.src.saving.serialization_lib import SafeModeScope
    except ImportError:  # pragma: no cover - another tf_keras layout
        return contextlib.nullcontext()
    return SafeModeScope(enabled)
