"""Argument validation shared by the layers, quantizers, schedules and the callback."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_int"]


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """`value` as a Python int, if it is an integer (a bool is not) `>= minimum`.

    # Arguments
        name: the argument's name, used in the error message.
        value: the value to check.
        minimum: the smallest value allowed.

    # Returns
        `int(value)`.

    # Raises
        ValueError: naming `name`, if `value` is not such an integer.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}"
        )
        raise ValueError(f"`{name}` must be {kind}, got {value!r}.")
    return int(value)
