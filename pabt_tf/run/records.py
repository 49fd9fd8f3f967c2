"""A run's records on disk: JSON written atomically, numpy values made plain, and the code
version that made them."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import numpy as np

from pabt_tf._atomic import write_atomically

__all__ = ["to_jsonable", "write_json", "read_json", "code_version"]


def to_jsonable(value: Any) -> Any:
    """numpy scalars/arrays and tuples -> plain JSON types."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_json(path: str, data: Any) -> None:
    """Write `data` as JSON atomically (`pabt_tf._atomic`), so a run killed mid-write or
    a full disk leaves the previous file, never a truncated one."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = json.dumps(to_jsonable(data), indent=2) + "\n"  # fails before touching a file
    write_atomically(path, text.encode())


def read_json(path: str) -> Any:
    """The parsed content of a JSON file.

    # Raises
        ValueError: naming `path`, if it is not JSON (truncated, edited by hand, ...).
    """
    with open(path, "rb") as f:
        content = f.read()
    try:
        return json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); repair or delete it.") from None


def code_version() -> dict[str, Any] | None:
    """The git commit of the checkout pabt_tf runs from, and whether it had uncommitted
    changes (None outside a git checkout, e.g. installed from a wheel): a result says what
    made it."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.exists(os.path.join(root, ".git")):  # site-packages, not a checkout
        return None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=30, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=root, capture_output=True, text=True, timeout=30,
                                check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}
