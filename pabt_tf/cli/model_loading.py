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
  pabt_tf (the loaders import them), and functions named by module outside Keras and
  TensorFlow's math namespaces;
- in a SavedModel, whatever Keras would revive from the saved graph rather than rebuild
  from a config (the graph's functions can run any TensorFlow op, file writes included):
  a SavedModel without Keras metadata, and layers of classes Keras does not know. A layer
  revived all the same (its config did not rebuild) is refused after loading, before
  the model runs.

Layers are recognised by what Keras resolves them to, in any spelling (`layers.Lambda`,
module `tf_keras` or `keras.src...`, a registered name), and the containers wherever
they start (an HDF5 user block, bytes prepended to a zip). Every refusal names the layer
and why. Plain models in every format load; `unsafe=True` (`pabt-convert --unsafe`)
skips the inspection and turns Keras's safe mode off, for files the user trusts.
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
# NumPy functions that read or write files (a config may name one as a layer's function).
_NUMPY_FILE_FUNCTIONS = ("load", "save", "savez", "savez_compressed", "savetxt", "loadtxt",
                         "genfromtxt", "fromfile", "memmap", "fromregex", "tofile")  # fmt: skip
# Keras resolves a class by the last part of its name ("layers.Lambda", module "tf_keras",
# "keras.src.layers.core.lambda_layer", registered name "keras.layers>Lambda"...), so every
# spelling ends in one of these.
_FUNCTION_LAYERS = ("Lambda",)
_TF_OP_LAYERS = ("TFOpLambda", "SlicingOpLambda")
# Metadata nodes of a SavedModel that Keras revives as layers or models.
_SAVED_LAYER_NODES = ("_tf_keras_layer", "_tf_keras_input_layer", "_tf_keras_network",
                      "_tf_keras_model", "_tf_keras_sequential", "_tf_keras_rnn_layer")  # fmt: skip


class Finding(str):
    """What in a model file would run code (the text compared by callers and tests), and
    why (`.why`, for the refusal message)."""

    def __new__(cls, text: str, why: str):
        finding = super().__new__(cls, text)
        finding.why = why
        return finding


def _tf_function_is_pure(name: str) -> bool:
    head, _, rest = name.partition(".")
    return head in _PURE_TF_NAMESPACES if rest else name not in _IMPURE_TF_FUNCTIONS


def _short(name) -> str:
    """The part of a class name Keras looks the class up by."""
    return str(name).replace(">", ".").rsplit(".", 1)[-1]


def _function_reference(node: dict) -> Finding | None:
    """A function named by module and name (`{"class_name": "function", "module": ...,
    "config": name}`): Keras imports the module and calls the function on tensors."""
    module, name = node.get("module"), node.get("config")
    if not isinstance(module, str) or not isinstance(name, str) or module == "builtins":
        return None  # builtins: Keras looks the name up among its own functions only
    root = module.split(".")[0]
    path = f"{module}.{name}"
    if root in ("keras", "tf_keras", "larq", "larq_compute_engine", "pabt_tf"):
        return None
    if root == "tensorflow" and _tf_function_is_pure(path.split(".", 1)[1]):
        return None
    if root == "numpy" and _short(path) not in _NUMPY_FILE_FUNCTIONS:
        return None
    return Finding(f"function {path}", "a function outside Keras and TensorFlow's math "
                   "namespaces, which loading imports and running the model calls")


def code_in_config(config) -> list[str]:
    """What in a Keras config (parsed JSON) would run or import code when loaded.

    Classes are recognised by what Keras resolves them to (the last part of `class_name`
    or `registered_name`, whatever the module), not by one spelling.

    # Returns
        One `Finding` (a `str` with a `.why`) per finding, empty if none, e.g.
        `"Lambda layer 'lambda'"`.
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
            shorts = {_short(class_name), _short(node.get("registered_name") or class_name)}
            spelled = "" if class_name in _FUNCTION_LAYERS else f" (class_name {class_name!r})"
            if shorts & set(_FUNCTION_LAYERS):
                why = (f"Keras' Lambda{spelled}: loading or running it runs the Python "
                       "function stored in the file")
                found.append(Finding(f"Lambda layer {name!r}", why))
                return  # its config holds the function: nothing more to learn inside
            if class_name == "__lambda__":
                found.append(Finding("a Python lambda", "its bytecode is stored in the file"))
                return
            if class_name == "function":
                reference = _function_reference(node)
                if reference:
                    found.append(reference)
            elif shorts & set(_TF_OP_LAYERS):
                function = str(inner.get("function", ""))
                if not _tf_function_is_pure(function):
                    what = f"{_short(class_name)} layer {name!r} calling tf.{function}"
                    why = "a TensorFlow function outside the math namespaces (file I/O, Python calls)"
                    found.append(Finding(what, why))
            module = node.get("module")
            if isinstance(module, str) and module.split(".")[0] not in _TRUSTED_MODULES:
                found.append(Finding(f"{class_name} from module {module!r}, which loading imports",
                                     f"layer {name!r}: importing a module runs its code"))
        if node.get("function_type") == "lambda":
            found.append(Finding("a Python function stored as bytecode", "loading runs it"))
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


def _saved_model_nodes(path: str) -> list[tuple[str, dict]]:
    """`(identifier, metadata)` of the Keras objects of a SavedModel: `keras_metadata.pb`,
    or (SavedModels written before TF 2.5) the metadata in `saved_model.pb`'s object
    graph. Empty: no Keras metadata."""
    metadata_path = os.path.join(path, "keras_metadata.pb")
    if os.path.exists(metadata_path):
        from tf_keras.protobuf import saved_metadata_pb2

        metadata = saved_metadata_pb2.SavedMetadata()
        with open(metadata_path, "rb") as f:
            metadata.ParseFromString(f.read())
        return [(node.identifier, _json(node.metadata, metadata_path))
                for node in metadata.nodes if node.metadata]  # fmt: skip
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return [
        (node.user_object.identifier, _json(node.user_object.metadata, path))
        for graph in saved.meta_graphs
        for node in graph.object_graph_def.nodes
        if node.WhichOneof("kind") == "user_object" and node.user_object.metadata
    ]


_GRAPH_FUNCTIONS = ("whose functions can run any TensorFlow op (file writes included) and "
                    "cannot be inspected")  # fmt: skip
_FROM_GRAPH = f"it would be revived from the SavedModel's graph, {_GRAPH_FUNCTIONS}"


def _code_in_saved_model(path: str) -> list[str]:
    """`code_in_config` over the Keras metadata, plus what Keras would revive from the
    saved graph instead of rebuilding from a config: the whole model if there is no Keras
    metadata, else every layer of a class Keras does not know."""
    nodes = _saved_model_nodes(path)
    if not nodes:
        return [Finding("a SavedModel without Keras metadata (no keras_metadata.pb)",
                        "its layers " + _FROM_GRAPH.replace("it would", "would"))]  # fmt: skip
    from tf_keras.src.layers import serialization
    from tf_keras.src.saving import object_registration

    serialization.populate_deserializable_objects()
    found = code_in_config([metadata for _, metadata in nodes])
    for identifier, metadata in nodes:
        class_name = metadata.get("class_name")
        if identifier in _SAVED_LAYER_NODES and isinstance(class_name, str):
            known = object_registration.get_registered_object(
                class_name, None, serialization.LOCAL.ALL_OBJECTS
            )
            if known is None:
                found.append(Finding(f"layer {metadata.get('name')!r} of class {class_name!r}, "
                                     "which Keras does not know", _FROM_GRAPH))  # fmt: skip
    return list(dict.fromkeys(found))


def _hdf5_offset(path: str) -> int | None:
    """Where the HDF5 signature is: HDF5 allows a user block before it, so the superblock
    is at byte 0, 512, 1024, 2048... (powers of two from 512), and readers search there."""
    size = os.path.getsize(path)
    offsets = [0] + [512 << k for k in range(64) if (512 << k) + 8 <= size]
    with open(path, "rb") as f:
        for offset in offsets:
            f.seek(offset)
            if f.read(8) == _HDF5_SIGNATURE:
                return offset
    return None


def code_in_model(path: str) -> list[str]:
    """`code_in_config` over the config a `.keras`, `.h5` or SavedModel stores, wherever
    the container starts: a zip is found by its central directory (at the end, whatever
    is prepended), an HDF5 file by its signature at any user-block offset. A file that is
    both is inspected as both.

    # Raises
        CliError: the file claims a format whose config cannot be read.
    """
    if os.path.isdir(path):
        return _code_in_saved_model(path)
    found: list[str] = []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            # Every entry of that name: a zip may repeat one (Keras reads the last).
            for info in archive.infolist():
                if info.filename == "config.json":
                    found += code_in_config(_json(archive.read(info), path))
    if _hdf5_offset(path) is not None:
        import h5py

        with h5py.File(path, "r") as f:
            config = f.attrs.get("model_config")
        found += [] if config is None else code_in_config(_json(config, path))
    return list(dict.fromkeys(found))


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
    import tensorflow as tf

    import pabt_tf  # noqa: F401  (Keras 2 + registered custom objects)

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
            reasons = "; ".join(f"{f} ({f.why})" if getattr(f, "why", "") else f for f in found)
            raise CliError(
                f"model {path!r} carries code that loading it would run: {reasons}. "
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
    revived = [layer.name for layer in model._flatten_layers() if _revived(layer)]
    if revived and not unsafe:
        raise CliError(
            f"model {path!r} carries code that running it would run: layers {revived} were "
            f"revived from the SavedModel's graph ({_GRAPH_FUNCTIONS}), as their "
            "configs did not rebuild them. Refusing to convert it. If you trust the file, "
            "pass --unsafe."
        )
    return model


def _revived(layer) -> bool:
    """A layer Keras revived from a SavedModel's graph (`RevivedLayer`, `RevivedNetwork`,
    ...), not rebuilt from its config."""
    return any(cls.__name__.startswith("Revived") for cls in type(layer).__mro__)


def _safe_mode(enabled: bool):
    """Keras's safe-mode scope, which the legacy `.h5`/SavedModel loaders only honour
    when it is set around them (a second line behind `code_in_model`)."""
    import contextlib

    try:
        from tf_keras.src.saving.serialization_lib import SafeModeScope
    except ImportError:  # pragma: no cover - another tf_keras layout
        return contextlib.nullcontext()
    return SafeModeScope(enabled)
