"""What `pabt-convert` and `pabt-benchmark` share: exit codes, the user-facing error, the
entry-point wrapper, and the checks of their file and number arguments.

Every check raises `CliError` before the tool changes anything, naming the argument and
what was expected; `write_atomically` replaces an output only once it is fully written.

Exit codes: 0 success; 1 a check failed (or the output could not be written); 2 bad input.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

from pabt_tf._atomic import write_atomically  # the one atomic writer of pabt_tf

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2

__all__ = [
    "EXIT_OK",
    "EXIT_CHECK_FAILED",
    "EXIT_BAD_INPUT",
    "CliError",
    "run_cli",
    "check_count",
    "check_number",
    "read_flatbuffer",
    "check_output_path",
    "write_atomically",
]


class CliError(Exception):
    """A user-facing error: message and exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


def run_cli(build_parser, run, argv: list[str] | None) -> int:
    """Parse `argv`, call `run(args)`; a `CliError` becomes its message and exit code.

    While `run` works, TensorFlow's and absl's C++ INFO/WARNING lines and its known
    start-up noise are dropped from stderr (`pabt_tf._stderr`), whenever they come (e.g.
    grappler's lines when LCE falls back to its graph conversion under a file-size limit);
    `TF_CPP_MIN_LOG_LEVEL=0` shows them.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)  # before the filter: --help needs no TensorFlow
    quiet = os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0"
    with _native_logs_filtered() if quiet else contextlib.nullcontext():
        try:
            return run(args)
        except CliError as err:
            print(f"error: {err}", file=sys.stderr)
            return err.code if err.code else EXIT_BAD_INPUT


def _native_logs_filtered():
    from pabt_tf._stderr import filtered_stderr, is_native_noise

    return filtered_stderr(is_native_noise)


def check_count(value, arg: str, minimum: int = 1) -> None:
    """`value` (one int or a list of them) must be integers ≥ `minimum`.

    # Raises
        CliError: naming `arg`.
    """
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or any(not isinstance(v, int) or v < minimum for v in values):
        raise CliError(f"{arg} must be an integer >= {minimum}, got {value}.")


def check_number(value, arg: str, minimum: float | None = None, maximum: float | None = None) -> None:
    """`value` must be a finite real number (not NaN, not ±inf, not a bool) in
    `[minimum, maximum]` (either bound optional).

    # Raises
        CliError: naming `arg` and the range expected.
    """
    import math

    bounds = " and ".join(
        text for text in (
            f">= {minimum:g}" if minimum is not None else "",
            f"<= {maximum:g}" if maximum is not None else "",
        ) if text
    )  # fmt: skip
    expected = f"a finite number{' ' + bounds if bounds else ''}"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and minimum is not None and value < minimum or ok and maximum is not None and value > maximum:
        ok = False
    if not ok:
        raise CliError(f"{arg} must be {expected}, got {value!r}.")


def read_flatbuffer(path: str, arg: str = "flatbuffer", probe_settings: list | None = None) -> bytes:
    """The bytes of a `.tflite` file, checked before any interpreter sees them.

    # Arguments
        path: the file.
        arg: the argument's name for messages.
        probe_settings: if given, also load it in LCE's interpreter in a child process with
            these settings (`pabt_tf.flatbuffer_guard.probe_in_subprocess`), so a file that
            crashes the interpreter stops the tool with a message instead of SIGSEGV.

    # Raises
        CliError: missing or unreadable file, or not a well-formed TFLite flatbuffer.
    """
    from pabt_tf.flatbuffer_guard import (
        MalformedFlatbufferError,
        check_flatbuffer,
        probe_in_subprocess,
    )

    if not os.path.isfile(path):
        raise CliError(f"{arg} {path!r} does not exist or is not a file.")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise CliError(f"cannot read {arg} {path!r}: {err.strerror or err}.") from err
    try:
        check_flatbuffer(data, repr(path))
        if probe_settings is not None:
            probe_in_subprocess(data, repr(path), probe_settings)
    except MalformedFlatbufferError as err:
        raise CliError(f"{arg} {err}") from err
    return data


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def check_output_path(path: str, arg: str = "output", inputs: tuple[str, ...] = ()) -> str:
    """Check, before any slow work, that `path` can take a new file without losing one.

    The output must not be one of `inputs` (or an existing file inside one, for a
    SavedModel directory), by any name: relative paths, symlinks, hard links. It must not
    be a directory or another non-regular file; its directory must exist and accept a new
    file (tried for real: permissions, read-only file systems).

    # Returns
        The path to write: `path` with symlinks resolved, so writing it replaces the file
        a symlink points to rather than the link.

    # Raises
        CliError: naming `arg` and what is wrong.
    """
    target = os.path.realpath(path)
    for source in inputs:
        real = os.path.realpath(source)
        inside = os.path.isdir(real) and target.startswith(real + os.sep) and os.path.lexists(target)
        if _same_file(path, source) or inside:
            raise CliError(
                f"{arg} {path!r} is the input {source!r} (or inside it): writing it would "
                "destroy the input. Choose another output path."
            )
    if path.endswith(os.sep) or os.path.isdir(target):
        raise CliError(f"{arg} {path!r} is a directory; expected a file path such as model.tflite.")
    if os.path.lexists(target) and not os.path.isfile(target):
        raise CliError(f"{arg} {path!r} exists and is not a regular file; refusing to replace it.")
    if os.path.isfile(target) and not os.access(target, os.W_OK):
        raise CliError(f"{arg} {path!r} exists and is read-only; refusing to replace it.")
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise CliError(f"{arg} directory {os.path.dirname(os.path.abspath(path))!r} does not exist.")
    try:  # the only test that holds for root, ACLs and read-only mounts alike
        fd, probe = tempfile.mkstemp(prefix=".pabt-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise CliError(
            f"{arg} directory {directory!r} does not accept new files: {err.strerror or err}."
        ) from err
    return target
