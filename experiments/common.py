"""Shared helpers of the experiment programs: a run's ABC-Net bases and the finished runs of
comparisons. Cost accounting (`model_costs`), JSON output (`write_json`, `read_json`) and
`code_version` live in the package and are re-exported here."""

from __future__ import annotations

import glob
import os
import re
from typing import Any

from pabt_tf.costs import model_costs
from pabt_tf.run.records import code_version, read_json, to_jsonable, write_json

__all__ = [
    "abc_bases",
    "at_input_size",
    "code_version",
    "collect_runs",
    "model_costs",
    "read_json",
    "to_jsonable",
    "write_json",
]


def abc_bases(config: dict[str, Any]) -> tuple[int, int]:
    """ABC-Net's `(M, N)` of a run's config (`model_kwargs.abc_bases`; the zoo's default
    is 3/3)."""
    m, n = (config.get("model_kwargs") or {}).get("abc_bases") or (3, 3)
    return int(m), int(n)


def collect_runs(comparisons: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Finished runs of `experiments.compare` output directories, grouped by variant.

    # Returns
        `{"<comparison>:<variant>": [results, ...]}`, the variant being the run directory's
        name without `_s<seed>`; each results dict gets its `run_dir`.

    # Raises
        ValueError: no finished run (`runs/*/results.json`) under the directories.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for comparison in comparisons:
        for path in sorted(glob.glob(os.path.join(comparison, "runs", "*", "results.json"))):
            run_dir = os.path.dirname(path)
            variant = re.sub(r"_s\d+$", "", os.path.basename(run_dir))
            result = read_json(path)
            result["run_dir"] = run_dir
            groups.setdefault(f"{comparison}:{variant}", []).append(result)
    if not groups:
        raise ValueError(f"No finished runs (runs/*/results.json) under {comparisons}.")
    return groups


def at_input_size(model, size: tuple[int, int]):
    """The same single-input Functional model (same weights, PaBT gates and masks
    included) rebuilt for `size = (height, width)` inputs: a fully convolutional net
    trained on crops, deployed at the camera's frame size.

    # Raises
        ValueError: not a Functional model with one 4-D image input, or a `size` that is
            not two positive ints.
    """
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in size)):
        raise ValueError(f"`size` must be (height, width), two positive ints; got {size!r}.")
    config = model.get_config() if getattr(model, "_is_graph_network", False) else None
    if config is None or len(getattr(model, "inputs", []) or []) != 1:
        raise ValueError(f"`model` must be a Functional model with one input to rebuild at "
                         f"{size}; {model.name!r} is not.")
    (layer,) = [layer for layer in config["layers"] if layer["class_name"] == "InputLayer"]
    shape = list(layer["config"]["batch_input_shape"])
    if len(shape) != 4:
        raise ValueError(f"`model` {model.name!r} takes {tuple(shape)} inputs; rebuilding at "
                         "another size needs a 4-D image input (batch, height, width, channels).")
    layer["config"]["batch_input_shape"] = [shape[0], *size, shape[-1]]
    rebuilt = type(model).from_config(config)  # a PaBTModel stays one (as in float32_model)
    rebuilt.set_weights(model.get_weights())
    return rebuilt
