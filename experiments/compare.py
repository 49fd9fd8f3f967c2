"""Compare binarization methods on one architecture over several seeds.

    python -m experiments.compare --methods pabt,abc,bnn,bnn_bop,float --seeds 0,1,2 \\
        --epochs 4 --output_dir results/fashion_mnist

Every (method, seed) is one `experiments.train` run in its own process (same flags for
all, so the same architecture, data and epoch budget), written to
`OUTPUT_DIR/runs/<method>_s<seed>/`. Runs whose `results.json` exists are reused
(`--rerun`, or `--force`, trains them afresh; `--reconvert` converts reused runs whose conversion failed again
from their `model.keras`), so an interrupted comparison resumes. Then:

    OUTPUT_DIR/table.md         Markdown table: accuracy mean ± std, binary MACs/BOPs,
                                float MACs, Keras model size, flatbuffer size, verification
    OUTPUT_DIR/summary.json     the same numbers plus every run's accuracy
    OUTPUT_DIR/comparison.png   accuracy (mean ± std, per seed) and accuracy vs BOPs
    OUTPUT_DIR/COMMAND.txt      the exact command line

All `experiments.train` flags are accepted and passed on to every run.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any

import numpy as np
from absl import app, flags

from experiments import train as train_lib
from experiments.common import abc_bases, read_json, write_json
from pabt_tf._atomic import write_atomically
from pabt_tf.run.evaluation import conversion_failed

FLAGS = flags.FLAGS

LABELS = {
    "pabt": "PaBT → BNN",
    "abc": "ABC-Net 3/3 (MBN)",
    "bnn": "Larq BNN (STE, latent weights)",
    "bnn_bireal": "Bi-Real-style BNN (approx_sign, magnitude-aware weights)",
    "bnn_bop": "Larq BNN (Bop, latent-free)",
    "float": "full precision",
}


def define_flags() -> None:
    train_lib.define_flags()
    flags.DEFINE_list("methods", ["pabt", "abc", "bnn", "bnn_bop", "float"], "Methods.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
    flags.DEFINE_boolean("rerun", False, "Retrain runs that already have results.json.")
    flags.DEFINE_boolean("reconvert", False, "Convert finished runs whose conversion failed "
                         "again, from their saved model.keras (no retraining).")
    flags.DEFINE_integer("threads", 0, "TF intra-op threads per run (0 = TF default).")
    flags.DEFINE_string("tag", "", "Suffix of run directories and labels, for variants of a "
                        "method (e.g. '_soft' -> runs/pabt_soft_s0, label 'PaBT → BNN _soft').")
    flags.DEFINE_float("goal_margin", 1.0, "Accuracy goal: PaBT's BNN at least this many "
                       "p.p. above the best BNN baseline in the table.")
    flags.DEFINE_list("merge", [], "summary.json files of other comparisons whose rows are "
                      "added to this table (same data set and model), e.g. a PaBT variant.")


def _as_flag(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return f"--{key}={'true' if value else 'false'}"
    if isinstance(value, dict):
        return f"--{key}={json.dumps(value)}"
    return f"--{key}={value}"


def run_one(config: dict[str, Any], log_path: str, threads: int = 0,
            force: bool = False) -> dict[str, Any]:
    """Run `experiments.train` with `config` in a subprocess (`force`: train afresh over
    an earlier run); return its results, also those of a run whose conversion failed
    (exit 1: recorded in its results.json)."""
    args = [sys.executable, "-m", "experiments.train"]
    args += [a for a in (_as_flag(k, v) for k, v in config.items()) if a]
    if force:
        args.append("--force")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if threads:
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "w") as log:
        log.write(" ".join(shlex.quote(a) for a in args) + "\n")
        log.flush()
        code = subprocess.call(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                               cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    results_path = os.path.join(config["output_dir"], "results.json")
    if code == 1 and os.path.exists(results_path):
        results = read_json(results_path)
        if conversion_failed(results):  # trained: the table reports it, the exit status too
            return results
    if code != 0 or not os.path.exists(results_path):
        raise RuntimeError(f"training run failed (exit {code}); see {log_path}")
    return read_json(results_path)


def finished_result(config: dict[str, Any], run_dir: str) -> dict[str, Any] | None:
    """The results of a finished run in `run_dir`, or None if it has not finished.

    # Raises
        ValueError: the finished run was made with another configuration (e.g. other
            epochs), so reusing it would silently mix settings in one table.
    """
    path = os.path.join(run_dir, "results.json")
    if not os.path.exists(path):
        return None
    result = read_json(path)
    ignore = {"output_dir", "verbose"}
    saved = {k: v for k, v in result.get("config", {}).items() if k not in ignore}
    wanted = {k: v for k, v in train_lib.DEFAULTS.items() if k not in ignore}
    wanted.update({k: v for k, v in config.items() if k not in ignore})
    wanted = json.loads(json.dumps(wanted))
    # decay_steps is capped by the run to a tenth of its steps; compare what was asked.
    differ = sorted(k for k in wanted if k in saved and saved[k] != wanted[k] and k != "decay_steps")
    if differ:
        changes = [f"{k}: {saved[k]!r} there, {wanted[k]!r} now" for k in differ]
        raise ValueError(
            f"{path} was made with other settings ({', '.join(changes)}); "
            "use another --output_dir, or --rerun to replace it."
        )
    return result


def _mean_std(values):
    values = np.asarray([v for v in values if v is not None], dtype=float)
    if not len(values):
        return None, None
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def merged_rows(paths) -> list[dict[str, Any]]:
    """The rows of other comparisons' summary.json files."""
    rows = []
    for path in paths:
        for row in read_json(path)["rows"]:
            rows.append(dict(row, source=path))
    return rows


def _label(method: str, result: dict[str, Any]) -> str:
    """The method's label; ABC-Net's names its bases (`model_kwargs.abc_bases`), a PaBT
    run with a `budget` its budget (it ends with that many binary convolutions per layer
    on average, not as a BNN)."""
    budget = result.get("config", {}).get("budget")
    config = result.get("config", {})
    if method == "pabt" and config.get("latency_budget_x_bnn"):
        return f"PaBT latency {config['latency_budget_x_bnn']:g}x BNN"
    if method == "pabt" and config.get("latency_budget_ms"):
        return f"PaBT latency {config['latency_budget_ms']:g} ms"
    if method == "pabt" and budget:
        return f"PaBT budget {budget:g}"
    if method == "abc":
        m, n = abc_bases(result.get("config", {}))
        return f"ABC-Net {m}/{n}" + (" (MBN)" if m * n > 1 else "")
    return LABELS.get(method, method)


def score_key(row: dict[str, Any]) -> str:
    """The metric a row is judged by: `"miou"` (mean IoU) for segmentation, else
    `"accuracy"`; its row keys are `<key>s`, `<key>_mean`, `<key>_std`, `val_<key>_mean`."""
    return "miou" if row.get("task") == "segmentation" else "accuracy"


def _segmentation_fields(runs: list[dict]) -> dict[str, Any]:
    """Mean IoU (the benchmark's figure: at the test labels' resolution when the run had
    it), per seed and over seeds, validation mIoU, pixel and mean class accuracy."""
    mious = [r.get("test_miou") for r in runs]
    val = [r.get("val_miou") for r in runs]
    full = [r.get("test_segmentation_full") or r.get("test_segmentation") or {} for r in runs]
    at_input = [r.get("test_miou_at_input") for r in runs]
    mean, std = _mean_std(mious)
    val_mean, val_std = _mean_std(val)
    return {
        "task": "segmentation",
        "mious": mious, "miou_mean": mean, "miou_std": std,
        "val_mious": val, "val_miou_mean": val_mean, "val_miou_std": val_std,
        "miou_at_input_mean": _mean_std(at_input)[0],
        "miou_resolution": runs[0].get("miou_resolution"),
        "pixel_accuracy_mean": _mean_std([f.get("pixel_accuracy") for f in full])[0],
        "mean_class_accuracy_mean": _mean_std([f.get("mean_class_accuracy") for f in full])[0],
        "per_class_iou_mean": (np.nanmean(np.asarray([f["per_class_iou"] for f in full], float), axis=0).tolist()
                               if all(f.get("per_class_iou") for f in full) else None),
        "class_names": full[0].get("class_names"),
        "min_pixel_agreement": min(_verification(r).get("top1_agreement", 0.0) for r in runs),
    }  # fmt: skip


def aggregate(results: dict[str, list[dict]], tag: str = "") -> list[dict[str, Any]]:
    """One row per method from its runs' results (segmentation runs: also mIoU fields,
    see `_segmentation_fields`)."""
    rows = []
    for method, runs in results.items():
        accs = [r["test_accuracy"] for r in runs]
        mean, std = _mean_std(accs)
        val_mean, val_std = _mean_std([r.get("val_accuracy") for r in runs])
        first = runs[0]
        row = {
            "method": method,
            "label": _label(method, first) + (f" [{tag.strip('_')}]" if tag else ""),
            "seeds": [r["config"]["seed"] for r in runs],
            "accuracies": accs,
            "accuracy_mean": mean,
            "accuracy_std": std,
            "val_accuracies": [r.get("val_accuracy") for r in runs],
            "val_accuracy_mean": val_mean,
            "val_accuracy_std": val_std,
            "bops": first.get("bops"),
            "binary_macs": first.get("binary_macs"),
            "float_macs": first.get("float_macs"),
            "ops": first.get("ops"),
            "params": first.get("params"),
            "mean_binary_convs": _mean_std([r.get("mean_binary_convs") for r in runs])[0],
            "latent_weights": first.get("config", {}).get("latent_weights", True),
            "keras_file_bytes": first.get("keras_file_bytes"),
            "weight_bytes": first.get("weight_bytes"),
            "flatbuffer_bytes": first.get("flatbuffer_bytes"),
            "bconvs_in_flatbuffer": first.get("found_bconvs"),
            "verified": all(_verification(r).get("ok", False) for r in runs),
            "max_abs_diff": max(_verification(r).get("max_abs_diff", np.inf) for r in runs),
            "min_top1_agreement": min(
                _verification(r).get("top1_agreement", 0.0) for r in runs),
            "runs_within_atol": sum(_exact(_verification(r)) for r in runs),
            # Samples beyond atol and how many are rounding ties (runs that recorded them).
            "differing_samples": _total([_verification(r).get("differing") for r in runs]),
            "tie_samples": _total([_verification(r).get("ties") for r in runs]),
            "minutes_per_run": _mean_std([r.get("train_seconds") for r in runs])[0] / 60,
        }
        if first.get("task") == "segmentation":
            row.update(_segmentation_fields(runs))
        rows.append(row)
    return rows


def _verification(result: dict[str, Any]) -> dict[str, Any]:
    """A run's verification: `experiments.reverify`'s recheck where there is one (empty
    for a run converted without verifying, `--verify_samples 0`)."""
    return result.get("verification_recheck") or result.get("verification") or {}


def _exact(verification: dict[str, Any]) -> bool:
    """Every output within atol (runs before `exact` was recorded: `ok` meant that)."""
    if "exact" in verification:
        return bool(verification["exact"])
    return bool(verification.get("ok"))


def _total(values: list) -> int | None:
    return None if any(v is None for v in values) else int(sum(values))


def _fmt_int(v):
    return "—" if v is None else f"{v / 1e6:.2f} M"


def _fmt_kib(v):
    return "—" if v is None else f"{v / 1024:.1f} KiB"


def _fmt_acc(mean, std) -> str:
    return "—" if mean is None else f"{100 * mean:.2f} ± {100 * (std or 0):.2f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per method; training time relative to the Larq STE BNN row when there is
    one (the same machine, usually the same session: a ratio is less noisy than minutes)."""
    bnn = next((r for r in rows if r["method"] == "bnn"), None)
    key = score_key(rows[0]) if rows else "accuracy"
    what = "test mIoU (%)" if key == "miou" else "test accuracy (%)"
    lines = [
        f"| method | {what} mean ± std | per seed | validation {what[5:]} | mean binary convs | binary MACs (BOPs) | float MACs | Keras model (.keras) | flatbuffer | LceBconv2d | LCE vs Keras: top-1 agreement, max abs logit diff, runs within 1e-3 | min / run | train time × STE BNN |",  # noqa: E501
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_seed = r.get("mious" if key == "miou" else "accuracies", [])
        seeds = ", ".join("—" if a is None else f"{100 * a:.2f}" for a in per_seed)
        mbc = "—" if r["mean_binary_convs"] is None else f"{r['mean_binary_convs']:.2f}"
        check = (f"{100 * r.get('min_top1_agreement', 0):.1f} %, {r['max_abs_diff']:.1e}, "
                 f"{r.get('runs_within_atol', 0)}/{len(r['accuracies'])}")
        if r.get("differing_samples"):
            check += f" ({r['differing_samples']} samples beyond, {r.get('tie_samples')} ties)"
        ratio = (f"{r['minutes_per_run'] / bnn['minutes_per_run']:.2f}×"
                 if bnn and bnn.get("minutes_per_run") else "—")
        lines.append(
            f"| {r['label']} | **{_fmt_acc(r.get(f'{key}_mean'), r.get(f'{key}_std'))}** | "
            f"{seeds} | {_fmt_acc(r.get(f'val_{key}_mean'), r.get(f'val_{key}_std'))} | "
            f"{mbc} | {_fmt_int(r['bops'])} | {_fmt_int(r['float_macs'])} | "
            f"{_fmt_kib(r['keras_file_bytes'])} | {_fmt_kib(r['flatbuffer_bytes'])} | "
            f"{r['bconvs_in_flatbuffer'] if r['bconvs_in_flatbuffer'] is not None else '—'} | "
            f"{check} | {r['minutes_per_run']:.1f} | {ratio} |"
        )
    return "\n".join(lines)


BNN_BASELINES = ("bnn", "bnn_bireal", "bnn_bop")


def verdict(rows: list[dict[str, Any]], margin: float = 1.0) -> list[str]:
    """The accuracy goals, evaluated on the measured numbers: per PaBT row, its margin
    over each BNN baseline and over the *best* of them (goal ≥ `margin` p.p.) — for PaBT
    trained without latent weights, over the latent-weight-free (Bop) BNN, the claim it
    makes — and its gap to full precision."""
    base = {r["method"]: r for r in rows if r["method"] in BNN_BASELINES}
    full = next((r for r in rows if r["method"] == "float"), None)
    out = []
    if not rows:
        return out
    key = score_key(rows[0])
    unit = "mIoU points" if key == "miou" else "p.p."
    mean = f"{key}_mean"
    for row in rows:
        if row["method"] != "pabt" or not row["label"].startswith(LABELS["pabt"]):
            continue  # a budget run is no BNN: compared at its cost in experiments.frontier
        name = "PaBT's BNN" + (row["label"][len(LABELS["pabt"]):] if row["label"] != LABELS["pabt"] else "")
        for other in base.values():
            gap = 100 * (row[mean] - other[mean])
            out.append(f"{name} vs {other['label']}: {gap:+.2f} {unit}")
        if base:
            if row.get("latent_weights") is False and "bnn_bop" in base:
                ref, what = base["bnn_bop"], "the latent-weight-free BNN baseline"
            else:
                ref, what = max(base.values(), key=lambda r: r[mean]), "the best BNN baseline"
            gap = 100 * (row[mean] - ref[mean])
            out.append(f"{name} vs {what} ({ref['label']}): {gap:+.2f} {unit} "
                       f"(goal ≥ {margin:+.2f}): " + ("met" if gap >= margin - 1e-9 else "NOT met"))
        if full is not None:
            gap = 100 * (full[mean] - row[mean])
            out.append(f"{name} below full precision: {gap:.2f} {unit}")
    return out


def write_report(rows, output_dir: str, command: str, config: dict, more_commands=(),
                 margin: float = 1.0) -> str:
    from experiments.plots import plot_comparison

    table = markdown_table(rows)
    lines = verdict(rows, margin)
    plot_comparison(rows, os.path.join(output_dir, "comparison.png"),
                    f"{config['dataset']} / {config['model']}: test score over seeds")
    text = "\n".join(
        [
            f"# {config['dataset']} / {config['model']}: binarization methods compared",
            "",
            table,
            "",
            *[f"- {line}" for line in lines],
            "",
            "Accuracy: top-1 on the full test set after the last epoch (no checkpoint "
            "selection), std over seeds with ddof=1. Binary MACs per image (1-bit × 1-bit, "
            "= BOPs). Keras model size: the `.keras` file after training; flatbuffer: the "
            "LCE TFLite model (`.tflite`), verified against Keras with LCE's interpreter on "
            f"{config['verify_samples']} test images (top-1 agreement: the lowest over the "
            "seeds; max abs logit difference: the largest; a BNN's logits can differ by a "
            "whole binary activation when a pre-activation sits within float rounding of "
            "its threshold, so a run can agree on every prediction and still exceed 1e-3).",
            "",
            "Command:",
            "",
            "```",
            command,
            *more_commands,
            "```",
        ]
    )
    write_atomically(os.path.join(output_dir, "table.md"), (text + "\n").encode())
    write_json(os.path.join(output_dir, "summary.json"),
               {"rows": rows, "verdict": lines, "command": command, "config": config})
    return text


def main(argv):
    del argv
    base = train_lib.config_from_flags()
    output_dir = os.path.abspath(FLAGS.output_dir)
    os.makedirs(output_dir, exist_ok=True)
    command = "python -m experiments.compare " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    write_atomically(os.path.join(output_dir, "COMMAND.txt"), (command + "\n").encode())
    results: dict[str, list[dict]] = {}
    order = [(seed, method) for seed in FLAGS.seeds for method in FLAGS.methods]
    start = time.time()
    for seed, method in order:
        run_dir = os.path.join(output_dir, "runs", f"{method}{FLAGS.tag}_s{seed}")
        config = dict(base, method=method, seed=int(seed), output_dir=run_dir, verbose=2)
        rerun = FLAGS.rerun or FLAGS.force
        result = None if rerun else finished_result(config, run_dir)
        if result is not None and FLAGS.reconvert and "convert_error" in result:
            print(f"[reconvert] {method} seed {seed} (was: {result['convert_error']})", flush=True)
            result = train_lib.reconvert(run_dir)
        if result is not None:
            print(f"[reuse] {method} seed {seed}: {100 * result['test_accuracy']:.2f} %", flush=True)
        else:
            t = time.time()
            print(f"[run] {method} seed {seed} -> {run_dir}", flush=True)
            result = run_one(config, os.path.join(run_dir, "train.log"), FLAGS.threads, rerun)
            print(f"[done] {method} seed {seed}: {100 * result['test_accuracy']:.2f} % in "
                  f"{(time.time() - t) / 60:.1f} min (total {(time.time() - start) / 60:.1f} min)",
                  flush=True)
        results.setdefault(method, []).append(result)
        # Partial report after every run: an interrupted comparison still has a table.
        rows = aggregate({m: results[m] for m in FLAGS.methods if m in results}, FLAGS.tag)
        text = write_report(rows + merged_rows(FLAGS.merge), output_dir, command, base,
                            [read_json(p)["command"] for p in FLAGS.merge], FLAGS.goal_margin)
    print(text, flush=True)
    # A conversion that failed (not one whose older verification differs): exit 1.
    failed = [(method, r["config"]["seed"], r["convert_error"]) for method, runs in results.items()
              for r in runs if r.get("convert_error")]
    for method, seed, why in failed:
        print(f"error: {method} seed {seed}: conversion failed: {why} (--reconvert converts "
              "it again)", file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
