"""The last resort: load a flatbuffer in LCE's interpreter in a child process, so that a
crash kills the child, not the caller."""

from __future__ import annotations

from pabt_tf.flatbuffer_guard.structure import MalformedFlatbufferError, as_bytes

# Loads LCE's interpreter extension by file, without importing the `larq_compute_engine`
# package (which imports TensorFlow, seconds per probe); falls back to the package.
_PROBE_SCRIPT = r"""
import glob, importlib.machinery, importlib.util, json, os, sys
import numpy as np

def lite_interpreter():
    spec = importlib.util.find_spec("larq_compute_engine")
    for root in spec.submodule_search_locations or []:
        for path in glob.glob(os.path.join(root, "tflite", "python", "interpreter_wrapper_lite*.so")):
            loader = importlib.machinery.ExtensionFileLoader("interpreter_wrapper_lite", path)
            module = importlib.util.module_from_spec(
                importlib.util.spec_from_file_location("interpreter_wrapper_lite", path, loader=loader))
            loader.exec_module(module)
            return module.LiteInterpreter
    from larq_compute_engine.tflite.python import interpreter_wrapper_lite
    return interpreter_wrapper_lite.LiteInterpreter

settings = json.loads(sys.argv[1])
data = sys.stdin.buffer.read()
LiteInterpreter = lite_interpreter()
for s in settings:
    try:
        it = LiteInterpreter(data, s["num_threads"], s["use_reference_bconv"],
                             s["use_indirect_bgemm"], s["use_xnnpack"])
        it.predict([np.zeros(shape, dtype) for shape, dtype in zip(it.input_shapes, it.input_types)])
    except Exception as err:
        print(f"{type(err).__name__}: {err}".strip().splitlines()[-1], file=sys.stderr)
        sys.exit(3)
"""


def probe_in_subprocess(
    data: bytes,
    what: str = "the data",
    settings: list[dict] | None = None,
    timeout: float = 600.0,
) -> None:
    """Load `data` in LCE's interpreter and run one inference on zeros, in a child process.

    `check_flatbuffer` covers the flatbuffer's structure, its references and LCE's
    operators, but TF Lite's builtin kernels (the copy inside LCE) have crashes of their own
    on odd yet well-formed values. A command-line tool about to run an untrusted file
    in-process calls this first: a crash kills the child, not the tool.

    # Arguments
        data: the flatbuffer's bytes (run `check_flatbuffer` first for a precise message).
        what: how to name the data in messages.
        settings: interpreter keyword arguments to try, each a dict of `num_threads`,
            `use_reference_bconv`, `use_indirect_bgemm`, `use_xnnpack` (missing keys: LCE's
            defaults); default: LCE's default and indirect-BGEMM kernels.
        timeout: seconds for the child to finish.

    # Raises
        MalformedFlatbufferError: the interpreter crashed, refused the model, or did not
            finish within `timeout`.
    """
    import json
    import signal
    import subprocess
    import sys

    defaults = dict(num_threads=1, use_reference_bconv=False, use_indirect_bgemm=False,
                    use_xnnpack=False)  # fmt: skip
    settings = [{**defaults, **s} for s in (settings or [{}, {"use_indirect_bgemm": True}])]
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE_SCRIPT, json.dumps(settings)],
            input=as_bytes(data), capture_output=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired as err:
        raise MalformedFlatbufferError(
            f"{what}: LCE's interpreter did not load it and run one inference within "
            f"{timeout:g} s (a corrupted shape can make it allocate or loop for very long)."
        ) from err
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        raise MalformedFlatbufferError(
            f"{what}: LCE's interpreter crashed ({name}) loading it or running one "
            "inference: the flatbuffer is corrupted in a way the structural checks cannot see."
        )
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        # TF Lite's own "ERROR: ..." lines say why; the exception only that it failed.
        reasons = [line for line in lines if line.startswith("ERROR: ")] or lines[-1:]
        raise MalformedFlatbufferError(
            f"{what}: LCE's interpreter refuses it: "
            f"{' '.join(reasons) if reasons else f'exit status {proc.returncode}'}"
        )
