"""Is there room for a better BNN? Full precision against the best BNN baseline on the
validation split, before a campaign is spent on a task where binarization costs nothing.

    python -m experiments.headroom --float_run results/cifar10/headroom/float/runs/float_s0 \\
        --bnn_run results/cifar10/headroom/bnn_bireal/runs/bnn_bireal_s0 --min_gap 4 \\
        --output results/cifar10/headroom.md --wait_minutes 60

Writes a short report and exits 0 if float − BNN validation accuracy is at least
`--min_gap` percentage points, 3 if it is not (so a script stops there), 2 if a run is
missing (after waiting up to `--wait_minutes` for it to finish: the two runs may be
trained side by side). Only validation accuracy is used; test accuracy is not read.

`--proceed_below REASON` lets a campaign go on below the gap (exit 0) when the shortfall
is itself the finding; the report then says the goal was missed and why it went on.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags

from experiments.common import read_json, write_json
from pabt_tf._atomic import write_atomically

FLAGS = flags.FLAGS
flags.DEFINE_string("float_run", None, "Run directory of the full-precision run.", required=True)
flags.DEFINE_string("bnn_run", None, "Run directory of the BNN baseline run.", required=True)
flags.DEFINE_float("min_gap", 4.0, "Required float − BNN validation gap, p.p.")
flags.DEFINE_string("output", None, "Markdown report (a .json beside it).", required=True)
flags.DEFINE_float("wait_minutes", 0.0, "Wait up to this long for both runs to finish.")
flags.DEFINE_string("proceed_below", None,
                    "Go on (exit 0) even if the gap is below --min_gap; the reason, which the "
                    "report records. Unset: a short gap stops the campaign (exit 3).")

EXIT_GAP_TOO_SMALL, EXIT_MISSING = 3, 2


def headroom(float_result: dict, bnn_result: dict, min_gap: float) -> dict:
    """The validation gap in p.p. and whether it is at least `min_gap`.

    # Raises
        ValueError: a run has no validation accuracy, or the two runs differ in data set,
            model, epochs or seed (their accuracies would not compare).
    """
    keys = ("dataset", "model", "model_kwargs", "epochs", "seed", "validation_size", "data_dir",
            "data_kwargs")
    a, b = float_result["config"], bnn_result["config"]
    differ = [k for k in keys if a.get(k) != b.get(k)]
    if differ:
        raise ValueError(f"the runs differ in {differ}: {[a.get(k) for k in differ]} vs "
                         f"{[b.get(k) for k in differ]}; a gap between them means nothing.")
    # Segmentation is judged by mean IoU (in points), classification by accuracy (p.p.).
    metric = "val_miou" if float_result.get("task") == "segmentation" else "val_accuracy"
    vals = float_result.get(metric), bnn_result.get(metric)
    if None in vals:
        raise ValueError(f"a run has no {metric} (trained without a validation split?).")
    gap = 100 * (vals[0] - vals[1])
    return {"metric": metric, "float_val": 100 * vals[0], "bnn_val": 100 * vals[1], "bnn_method": b["method"],
            "gap_pp": gap, "min_gap_pp": min_gap, "enough": gap >= min_gap,
            "task": {k: a.get(k) for k in keys}}


def _wait_for(paths: list[str], minutes: float) -> bool:
    deadline = time.time() + 60 * minutes
    while not all(os.path.exists(p) for p in paths):
        if time.time() >= deadline:
            return False
        time.sleep(20)
    return True


def _relative(run_dir: str) -> str:
    """`run_dir` relative to the report's folder: the report is read in the repository,
    not on the machine that wrote it."""
    return os.path.relpath(run_dir, os.path.dirname(os.path.abspath(FLAGS.output)))


def main(argv):
    del argv
    if FLAGS.proceed_below is not None and not FLAGS.proceed_below.strip():
        raise app.UsageError("--proceed_below needs the reason to go on below --min_gap.")
    paths = [os.path.join(d, "results.json") for d in (FLAGS.float_run, FLAGS.bnn_run)]
    if not _wait_for(paths, FLAGS.wait_minutes):
        missing = [p for p in paths if not os.path.exists(p)]
        print(f"headroom: no finished run at {missing}", file=sys.stderr)
        return EXIT_MISSING
    report = headroom(read_json(paths[0]), read_json(paths[1]), FLAGS.min_gap)
    task = report["task"]
    text = "\n".join([
        f"# Headroom on {task['dataset']} / {task['model']} ({task['epochs']} epochs, seed "
        f"{task['seed']}, validation split of {task['validation_size']})", "",
        f"| run | {'validation mIoU' if report['metric'] == 'val_miou' else 'validation accuracy'} (%) |",
        "|---|---|",
        f"| full precision | {report['float_val']:.2f} |",
        f"| {report['bnn_method']} | {report['bnn_val']:.2f} |", "",
        f"Gap: **{report['gap_pp']:.2f} {'mIoU points' if report['metric'] == 'val_miou' else 'p.p.'}** "
        f"(required ≥ {FLAGS.min_gap:g}): "
        + ("enough headroom, the campaign goes on." if report["enough"] else
           "too little: the task is saturated; change width or epochs."
           if not FLAGS.proceed_below else
           f"below the goal; the campaign goes on regardless: {FLAGS.proceed_below}"),
        "", f"Runs (relative to this file): `{_relative(FLAGS.float_run)}`, "
        f"`{_relative(FLAGS.bnn_run)}`.",
    ])  # fmt: skip
    report["proceed_below"] = None if report["enough"] else FLAGS.proceed_below
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    write_atomically(FLAGS.output, (text + "\n").encode())
    write_json(os.path.splitext(FLAGS.output)[0] + ".json", report)
    print(text)
    return 0 if report["enough"] or FLAGS.proceed_below else EXIT_GAP_TOO_SMALL


if __name__ == "__main__":
    app.run(main)
