"""Choose among method variants on the validation split, never on test accuracy.

    python -m experiments.select_schedule --comparisons results/fashion_mnist,... \\
        --method pabt --output results/schedule_selection.md

Every variant (a comparison's run directory name without `_s<seed>`) is scored by its
mean validation accuracy over seeds (the split carved from the training set with each
run's seed); the highest mean wins. Only variants run on every seed that any variant ran
compete: a variant stopped early (fewer seeds) is listed but cannot win, since its mean
is over other validation splits and is noisier. Test accuracy is listed for the record
only, and final numbers must then come from seeds that took no part in the choice.
"""

from __future__ import annotations

import os
import shlex
import sys

import numpy as np
from absl import app, flags

from experiments.common import collect_runs
from pabt_tf._atomic import write_atomically

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_list("comparisons", [], "Comparison output directories (with runs/).")
    flags.DEFINE_string("method", "pabt", "Only variants of this method compete.")
    flags.DEFINE_string("output", "results/schedule_selection.md", "Markdown report.")
    flags.DEFINE_string("winner_file", None, "Also write the chosen variant's name (one line) "
                        "here, for a script that goes on with it.")
    flags.DEFINE_integer("top", 1, "Write this many variants to --winner_file, best first (a "
                         "screening round: the best few on one seed go on to more seeds).")


SETTINGS = ("prune_begin", "prune_end", "prune_power", "prune_order", "decay_steps",
            "importance_momentum", "ranking", "criterion", "epochs", "distill_weight",
            "model_kwargs", "latent_weights", "bop_threshold", "bop_gamma", "bop_schedule")  # fmt: skip


def select(groups: dict[str, list[dict]], method: str) -> tuple[list[dict], dict]:
    """Rows (one per variant of `method`, best validation mean first) and the winner.

    Each row's `"competes"` says whether the variant ran on every seed of the union of all
    variants' seeds; the winner is the best of those.

    # Raises
        ValueError: a run has no validation accuracy, no variant of `method` exists, the
            variants differ in data set or model (their scores would not compare), or no
            variant ran on every seed.
    """
    rows, tasks = [], set()
    for key, runs in groups.items():
        if runs[0]["config"]["method"] != method:
            continue
        # Segmentation variants are chosen by validation mIoU, classification by accuracy.
        seg = runs[0].get("task") == "segmentation"
        vals = [r.get("val_miou" if seg else "val_accuracy") for r in runs]
        if any(v is None for v in vals):
            raise ValueError(f"{key}: a run has no validation accuracy; it cannot take part in a choice.")
        tests = [r.get("test_miou") if seg else r["test_accuracy"] for r in runs]
        tasks |= {(r["config"].get("dataset"), r["config"].get("model")) for r in runs}
        rows.append({
            "variant": key, "seeds": [r["config"]["seed"] for r in runs],
            "val_mean": float(np.mean(vals)), "val_std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
            "test_mean": float(np.mean(tests)), "metric": "mIoU" if seg else "accuracy",
            "settings": {k: runs[0]["config"].get(k) for k in SETTINGS},
        })  # fmt: skip
    if not rows:
        raise ValueError(f"No runs of method {method!r} among {list(groups)}.")
    if len(tasks) > 1:
        raise ValueError(f"The variants were trained on different (dataset, model) pairs {sorted(tasks)}; "
                         "choose among variants of one task.")
    all_seeds = sorted(set().union(*(r["seeds"] for r in rows)))
    for r in rows:
        r["competes"] = set(r["seeds"]) == set(all_seeds)
    if not any(r["competes"] for r in rows):
        raise ValueError(f"No variant ran on every seed {all_seeds} (seeds per variant: "
                         f"{ {r['variant']: r['seeds'] for r in rows} }); run the same seeds for each.")
    rows.sort(key=lambda r: (not r["competes"], -r["val_mean"]))
    return rows, rows[0]


def _relative(variant: str) -> str:
    """A variant key (`<comparison dir>:<run name>`) with its directory relative to the
    report's folder: the report is read in the repository, not on the machine that
    wrote it."""
    directory, sep, name = variant.rpartition(":")
    if not sep:
        return variant
    base = os.path.dirname(os.path.abspath(FLAGS.output))
    return os.path.relpath(os.path.abspath(directory), base) + sep + name


def main(argv):
    del argv
    rows, best = select(collect_runs(FLAGS.comparisons), FLAGS.method)
    for r in rows:
        r["variant"] = _relative(r["variant"])
    command = "python -m experiments.select_schedule " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    metric = rows[0]["metric"]  # one task (select() refuses a mix): mIoU or accuracy
    lines = [
        f"# Choosing the {FLAGS.method} schedule on validation {metric}", "",
        f"| variant | seeds | validation {metric} (%) | competes | settings | test {metric} (%), not used to choose |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items())
        lines.append(f"| {r['variant']} | {', '.join(map(str, r['seeds']))} | "
                     f"{100 * r['val_mean']:.2f} ± {100 * r['val_std']:.2f} | "
                     f"{'yes' if r['competes'] else 'no (not every seed)'} | {settings} | "
                     f"{100 * r['test_mean']:.2f} |")  # fmt: skip
    lines += ["", f"Chosen (highest mean validation {metric} among variants run on every seed): "
              f"**{best['variant']}** (comparison directories relative to this file).", "",
              "Command:", "", "```", command, "```"]  # fmt: skip
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    write_atomically(FLAGS.output, ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    if FLAGS.winner_file:
        competing = [r["variant"] for r in rows if r["competes"]]
        write_atomically(FLAGS.winner_file, ("\n".join(competing[: max(FLAGS.top, 1)]) + "\n").encode())
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
