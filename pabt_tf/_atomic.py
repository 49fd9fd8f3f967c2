"""Files written atomically: a path is either its old self or complete, never truncated.

Every writer of pabt_tf (the programs' outputs, a run's `model.tflite`, `model.keras`,
plots and JSON records) goes through `atomic_path` or `write_atomically`: the new content
goes to a temporary file in the same directory, which is flushed to disk and renamed over
the target (`os.replace`, atomic on POSIX). A failure on the way (disk full, a file-size
limit, an interruption) removes the temporary file and leaves the target untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator

__all__ = ["atomic_path", "write_atomically"]


def _new_file_mode(path: str) -> int:
    if os.path.exists(path):
        return os.stat(path).st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path to write `path`'s new content to; renamed over `path` when the
    block ends without an exception, removed when it raises.

    The temporary file is in `path`'s directory (a rename never crosses file systems)
    and ends like `path` (`.keras`, `.png`: writers that choose the format by the name
    see the right one). The new file keeps the old one's permissions.

    # Arguments
        path: the file to replace (or create); its directory must exist.

    # Raises
        OSError: the temporary file could not be made or renamed (`path` unchanged);
            whatever the block raises (`path` unchanged, the temporary file removed).
    """
    path = os.path.abspath(path)
    directory, name = os.path.split(path)
    mode = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".tmp{os.path.splitext(name)[1]}",
                               dir=directory)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the writer may have closed it without syncing
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_atomically(path: str, data: bytes) -> None:
    """Write `data` to `path` so that `path` is either its old self or complete.

    # Raises
        OSError: the write failed (`path` unchanged, no temporary file left).
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
