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
