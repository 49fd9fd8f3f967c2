"""The bytes themselves: the TFLite file identifier, and a walk of the whole model with the
TFLite schema over bounds-checked bytes (what the flatbuffers verifier checks); TF Lite's
own C++ verifier as a second opinion; small helpers over the schema's objects."""

from __future__ import annotations

import struct
import warnings

TFLITE_IDENTIFIER = b"TFL3"


class MalformedFlatbufferError(ValueError):
    """The bytes are not a well-formed TFLite flatbuffer; the message says what is wrong."""


def schema_module():
    try:
        from tensorflow.lite.python import schema_py_generated as schema
    except ImportError:  # pragma: no cover - other TF layouts
        from larq_compute_engine.mlir.python import tflite_schema as schema
    return schema


def as_bytes(data) -> bytes:
    if isinstance(data, memoryview):
        return data.tobytes()
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"a flatbuffer must be bytes, got {type(data).__name__}.")
    return bytes(data)


def check_identifier(data: bytes, what: str = "the data") -> None:
    """The quick format check: `TFL3` at bytes 4–8 and a root offset inside the data.

    # Arguments
        data: the file's bytes.
        what: how to name the data in the message (e.g. a path).

    # Raises
        TypeError: `data` is not bytes-like.
        MalformedFlatbufferError: not a TFLite flatbuffer, or cut before its root table.
    """
    data = as_bytes(data)
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise MalformedFlatbufferError(
            f"{what} is not a TFLite flatbuffer (no {TFLITE_IDENTIFIER.decode()!r} file "
            f"identifier at bytes 4-8; {len(data)} bytes)."
        )
    (root,) = struct.unpack_from("<I", data, 0)
    if root < 8 or root + 4 > len(data):
        raise MalformedFlatbufferError(
            f"{what} is a truncated or corrupted TFLite flatbuffer: its root table is at "
            f"byte {root}, but it has {len(data)} bytes."
        )


class _StrictBytes(bytes):
    """Bytes whose slices fail past the end instead of silently shortening.

    The generated schema reads scalars with `struct.unpack_from` (which fails past the
    end; negative positions are refused by flatbuffers' own number checks) and strings by
    slicing, which Python would silently truncate: a string must end, with its NUL, inside
    the data, as the flatbuffers verifier requires.
    """

    def __getitem__(self, key):
        if isinstance(key, slice) and key.stop is not None:
            if key.start is not None and key.start < 0 or key.stop > len(self) - 1:
                raise IndexError("a string runs past the end of the data")
            if bytes.__getitem__(self, key.stop) != 0:
                raise IndexError("a string is not NUL-terminated")
        return bytes.__getitem__(self, key)


def unpack_model(data: bytes):
    schema = schema_module()
    try:
        model = schema.ModelT.InitFromPackedBuf(_StrictBytes(data), 0)
    except (struct.error, IndexError, TypeError, ValueError, OverflowError, RecursionError) as err:
        raise MalformedFlatbufferError(
            "truncated or corrupted TFLite flatbuffer: following its tables, an offset or "
            f"a length points outside its {len(data)} bytes ({type(err).__name__}: {err})."
        ) from err
    return schema, model


def tflite_verifier(data: bytes) -> None:
    """TF Lite's C++ `VerifyAndBuildFromBuffer` + interpreter builder, when available.

    The TF interpreter does not register LCE's operators; it reports them as unresolved
    only when tensors are allocated, which this never does.
    """
    try:
        from tensorflow.lite.python.interpreter import Interpreter
    except ImportError:  # pragma: no cover - a TensorFlow without tf.lite
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "tf.lite.Interpreter is deprecated"
            Interpreter(model_content=data)
    except ValueError as err:
        if "unresolved custom op" in str(err).lower():
            return
        raise MalformedFlatbufferError(
            f"TF Lite's flatbuffer verifier rejects the data: {str(err).strip()}."
        ) from err


def tensor_shape(tensor) -> list[int]:
    return [int(d) for d in tensor.shape] if tensor.shape is not None else []


def enum_names(enum_cls) -> dict:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_")}
