"""Drop TensorFlow's native log noise from file descriptor 2, pass everything else on.

TensorFlow's C++ runtime and the absl logging it links write straight to fd 2: CUDA plugin
registration and `failed call to cuInit` on a machine without a GPU, and absl `I`/`W`
lines (`I0000 ... devices.cc:67] Number of eligible GPUs`) that absl prints before its
logging is initialised and that `TF_CPP_MIN_LOG_LEVEL` does not govern.
`filtered_stderr` points fd 2 at a pipe for the duration of a `with` block; a thread reads
it and writes every line that is not such noise to the real stderr, in order. A pipe, not
a file: a file-size limit (`ulimit -f`) cannot make it fail, and nothing is written to
disk.
"""

from __future__ import annotations

import os
import re
import select
import sys
import threading

# Known noise of TensorFlow's import and first device use on a CPU-only machine, whatever
# its level (some are `E` lines that are not errors of ours).
STARTUP_NOISE = re.compile(
    r"Unable to register cu(FFT|DNN|BLAS) factory|computation placer already registered"
    r"|All log messages before absl::InitializeLog|Could not find cuda drivers"
    r"|oneDNN custom operations are on|cpu_feature_guard|To enable the following instructions"
    r"|failed call to cuInit"
)
# INFO and WARNING lines of absl (`I0000 00:00:1796222250.124574    4056 devices.cc:67] `)
# and of TensorFlow's own logging (`2026-12-02 14:37:13.012147: I tensorflow/...cc:153] `).
NATIVE_INFO = re.compile(
    r"^(?:[IW]\d{4} [\d:.]+ +\d+ [^ \]]+:\d+\]"
    r"|\d{4}-\d\d-\d\d [\d:.]+: [IW] [^ \]]+:\d+\])"
)
# A partial line (no newline yet, e.g. a prompt) is passed on after this many seconds.
_PARTIAL_LINE_WAIT = 0.05


def is_startup_noise(line: str) -> bool:
    return STARTUP_NOISE.search(line) is not None


def is_native_noise(line: str) -> bool:
    """Start-up noise, or an INFO/WARNING line of TensorFlow's or absl's C++ logging."""
    return is_startup_noise(line) or NATIVE_INFO.match(line) is not None


class filtered_stderr:
    """Within the block, lines written to fd 2 for which `drop(line)` holds are dropped.

    Covers what C++ code, child processes that inherit fd 2, and Python's `sys.stderr`
    write. The remaining lines reach the real stderr in order, and all of them before the
    block is left. If fd 2 cannot be redirected (closed), the block runs unfiltered. A
    process killed by a signal inside the block loses what was still in the pipe.

    ```python
    with filtered_stderr(is_native_noise):
        run_the_program()
    ```

    # Arguments
        drop: `str -> bool`, whether a line (with its newline) is noise.
    """

    def __init__(self, drop=is_native_noise):
        self._drop = drop
        self._saved: int | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "filtered_stderr":
        _flush_stderr()
        try:
            self._saved = os.dup(2)
        except OSError:  # no stderr to filter
            return self
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._thread = threading.Thread(target=self._forward, args=(read_fd, self._saved),
                                        name="pabt-stderr-filter", daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._saved is None:
            return
        _flush_stderr()
        os.dup2(self._saved, 2)  # closes the pipe's last write end: the thread sees EOF
        self._thread.join(timeout=5)
        if not self._thread.is_alive():  # a child holding the pipe keeps it alive
            os.close(self._saved)
        self._saved = None

    def _forward(self, read_fd: int, out_fd: int) -> None:
        pending = b""
        try:
            while True:
                ready = select.select([read_fd], [], [], _PARTIAL_LINE_WAIT if pending else None)[0]
                if not ready:  # a partial line and nothing more for a while: pass it on
                    self._emit([pending], out_fd)
                    pending = b""
                    continue
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                self._emit([line + b"\n" for line in lines], out_fd)
            if pending:
                self._emit([pending], out_fd)
        finally:
            os.close(read_fd)

    def _emit(self, lines: list[bytes], out_fd: int) -> None:
        kept = b"".join(
            line for line in lines if not self._drop(line.decode("utf-8", "replace"))
        )
        try:
            while kept:
                kept = kept[os.write(out_fd, kept):]
        except OSError:  # the real stderr is gone (closed pipe): nothing to write to
            pass


def _flush_stderr() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
