"""Verify finished runs' flatbuffers again with today's `pabt_tf.export.verify`.

    python -m experiments.reverify results/cifar10 [more directories] [--report FILE.md]

Every run directory below the arguments that holds `results.json`, `model.keras` and
`model.tflite` is checked: the run's own verification samples (the first
`verify_samples` test images of its data pipeline) through LCE's interpreter and Keras.
The result goes into the run's `results.json` as `verification_recheck` (with the commit
that made it, and, where samples differ, `samples_as_close`: how many of all the samples
binarize a value at least as close to its threshold as the differing ones do); the run's
original `verification` is kept as it was. `compare` reports the
recheck where there is one. A run whose files are missing (e.g. trained on another
machine: model files are not committed) is listed and left alone; a run whose Keras
accuracy on those samples differs from the one it recorded is refused (not the same
samples, so not the same check). `--report FILE.md` writes a table of every run found:
its original check, and the recheck where there is one. A run rechecked before is not
checked again.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import pabt_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import numpy as np
import tensorflow as tf

from pabt_tf._atomic import write_atomically
from pabt_tf.export import sign_margins, verify
from pabt_tf.run import train as train_lib
from pabt_tf.run.evaluation import _verification_data, accuracy
from pabt_tf.run.records import code_version, read_json, write_json
from pabt_tf.run.state import RunLock

FILES = ("results.json", "model.keras", "model.tflite")


def run_dirs(paths: list[str]) -> list[str]:
    """Directories below `paths` (or equal to them) that hold a `results.json`."""
    found = []
    for path in paths:
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{path}: not a directory")
        for root, _, files in os.walk(path):
            if "results.json" in files:
                found.append(root)
    return sorted(found)


def _missing(run_dir: str) -> list[str]:
    return [name for name in FILES if not os.path.exists(os.path.join(run_dir, name))]


def reverify(run_dir: str) -> dict[str, Any]:
    """Verify one finished run's flatbuffer again; return the `verification_recheck`.

    # Raises
        FileNotFoundError: a file of `FILES` is missing.
        ValueError: the samples are not the run's (Keras accuracy on them differs).
    """
    missing = _missing(run_dir)
    if missing:
        raise FileNotFoundError(f"{run_dir}: no {', '.join(missing)}")
    with RunLock(run_dir):
        path = os.path.join(run_dir, "results.json")
        results = read_json(path)
        config = {**train_lib.DEFAULTS, **results["config"]}
        tf.keras.backend.clear_session()
        model = tf.keras.models.load_model(os.path.join(run_dir, "model.keras"), compile=False)
        with open(os.path.join(run_dir, "model.tflite"), "rb") as f:
            flatbuffer = f.read()
        ds = train_lib._datasets(config)
        inputs, labels = _verification_data(ds.test, config["verify_samples"])
        recorded = results.get("keras_accuracy_on_verify_samples")
        if recorded is not None:
            now = accuracy(model, tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(64))
            if not np.isclose(now, recorded, atol=1e-9):
                raise ValueError(
                    f"{run_dir}: Keras accuracy on the verification samples is {now:.4f} now, "
                    f"{recorded:.4f} when the run finished: not the same samples"
                )
        result = verify(model, flatbuffer, inputs, probe=True)
        recheck = {**result.as_dict(), "code": code_version()}
        if result.differing_margins:
            # How often a value that close to a threshold occurs at all: if the differing
            # samples are about the only ones, rounding is the likely cause.
            margins = sign_margins(model, inputs)
            recheck["samples_as_close"] = int(np.sum(margins <= max(result.differing_margins)))
        results["verification_recheck"] = recheck
        write_json(path, results)
    return recheck


def _row(run_dir: str, root: str) -> str:
    results = read_json(os.path.join(run_dir, "results.json"))
    first, recheck = results.get("verification", {}), results.get("verification_recheck")
    original = (f"{'within' if first.get('ok') else 'beyond'} 1e-3, max {first.get('max_abs_diff', float('nan')):.2g}, "
                f"top-1 {100 * first.get('top1_agreement', 0):.1f} %")  # fmt: skip
    if recheck is None:
        again = "— (model files not on this machine)"
    else:
        margins = ", ".join(f"{m:.2g}" for m in recheck["differing_margins"]) or "—"
        again = (f"{'PASSED' if recheck['ok'] else 'FAILED'}: {recheck['differing']} of "
                 f"{recheck['samples']} beyond 1e-3, {recheck['ties']} ties; margins {margins}; "
                 f"samples as close: {recheck.get('samples_as_close', '—')}")
    return f"| `{os.path.relpath(run_dir, root)}` | {original} | {again} |"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.reverify",
        description="Verify finished runs' flatbuffers again with today's pabt.verify.")
    parser.add_argument("paths", nargs="+", help="run directories or directories above them")
    parser.add_argument("--report", help="also write a Markdown table of every run found")
    args = parser.parse_args(argv)
    report = args.report
    dirs = run_dirs(args.paths)
    for run_dir in dirs:
        missing = _missing(run_dir)
        if missing:
            print(f"[skip] {run_dir}: no {', '.join(missing)}", flush=True)
            continue
        if "verification_recheck" in read_json(os.path.join(run_dir, "results.json")):
            print(f"[done before] {run_dir}", flush=True)
            continue
        recheck = reverify(run_dir)
        print(f"[checked] {run_dir}: ok={recheck['ok']} exact={recheck['exact']} "
              f"differing={recheck['differing']} ties={recheck['ties']} "
              f"margins={recheck['differing_margins']} "
              f"samples_as_close={recheck.get('samples_as_close')} "
              f"max|diff|={recheck['max_abs_diff']:.3g}", flush=True)
    if report:
        root = os.path.dirname(os.path.abspath(report))
        lines = [
            "# LCE flatbuffer vs Keras, per run", "",
            "Original: the run's own check (every output within 1e-3 of Keras). Recheck: "
            "`experiments.reverify` with the tie-aware `pabt.verify` — a sample beyond 1e-3 "
            "is a rounding tie if it binarizes a value within 1e-5 of its threshold; "
            "margins: each differing sample's closest such value; samples as close: how "
            "many of all the samples have a value at least that close.", "",
            "| run | original | recheck |", "|---|---|---|",
            *(_row(d, root) for d in dirs),
        ]  # fmt: skip
        write_atomically(report, ("\n".join(lines) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
