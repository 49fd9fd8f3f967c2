"""Decide whether bytes are a well-formed TFLite flatbuffer before an interpreter sees them.

Larq Compute Engine's Python `Interpreter` (and `lce_benchmark_model`) build a model with
TF Lite's *unverified* `FlatBufferModel::BuildFromBuffer`, and LCE's kernels trust their
options and shapes: a truncated or corrupted `.tflite` makes them read outside the buffer
and the process dies with SIGSEGV. `check_flatbuffer` rejects such bytes first, with a
`MalformedFlatbufferError` (a `ValueError`) that says what is wrong. In order:

1. **identifier** (`structure`): `TFL3` at bytes 4–8 and a root offset inside the data
   (`check_identifier`, also the quick format check of the command-line tools);
2. **structure** (`structure`): a walk of the whole model with the TFLite schema bundled in
   TensorFlow over bounds-checked bytes: every table, vtable, vector and string a C++
   reader would follow lies inside the data (what the flatbuffers verifier checks);
3. **references and data** (`references`): operator code, tensor, buffer and subgraph
   indices in range, known tensor types, shapes of sane size, constant data of exactly
   the size its shape and type need, consistent quantization parameters, a dataflow
   in which every operator reads tensors written before it and nothing is written twice,
   and no cycle of subgraph calls (IF, WHILE, CALL_ONCE... naming a subgraph that leads
   back to itself: the interpreter would recurse until SIGSEGV);
4. **operators** (`operators`): what kernels read without checking: the options windowed
   operators divide by, convolution channels that split into groups (else SIGFPE),
   LCE's flexbuffer options (decoded in bounds), the inputs LCE
   dereferences, and stored output shapes that agree with the ones the kernels compute
   (the checks of later operators rely on them);
5. **TF Lite's own verifier** (`structure`; `tf.lite.Interpreter(model_content=...)` runs
   `VerifyAndBuildFromBuffer` and the interpreter builder's checks) when TensorFlow
   provides it; its complaint about LCE's (unregistered) custom ops is not an error.

TF Lite's builtin kernels (the copy inside LCE) may still crash on odd yet well-formed
values of operators these checks do not model. A tool about to run an untrusted file
in-process can call `probe_in_subprocess` (`probe`) after `check_flatbuffer`: it loads the
file and runs one inference in a child process, and turns a crash into the same error
(`pabt_tf.verify` does so for every flatbuffer `convert` did not make in the process).
"""

from __future__ import annotations

from pabt_tf.flatbuffer_guard.probe import probe_in_subprocess
from pabt_tf.flatbuffer_guard.references import Checker
from pabt_tf.flatbuffer_guard.structure import (
    TFLITE_IDENTIFIER,
    MalformedFlatbufferError,
    as_bytes,
    check_identifier,
    tflite_verifier,
    unpack_model,
)

__all__ = [
    "MalformedFlatbufferError",
    "TFLITE_IDENTIFIER",
    "check_identifier",
    "check_flatbuffer",
    "probe_in_subprocess",
]


def check_flatbuffer(data: bytes, what: str = "the data") -> None:
    """Raise unless `data` is a well-formed TFLite flatbuffer an interpreter can load.

    Call it before handing bytes to LCE's `Interpreter` or `lce_benchmark_model`, which
    do not verify them (see the module docstring for what is checked).

    # Arguments
        data: the flatbuffer's bytes.
        what: how to name the data in messages (e.g. a file path).

    # Raises
        TypeError: `data` is not bytes-like.
        MalformedFlatbufferError: the data is not a TFLite flatbuffer, or is truncated
            or corrupted; the message says where.
    """
    data = as_bytes(data)
    check_identifier(data, what)
    try:
        schema, model = unpack_model(data)
        Checker(schema, model, len(data)).run()
        tflite_verifier(data)
    except MalformedFlatbufferError as err:
        raise MalformedFlatbufferError(f"{what}: {err}") from None
