"""The whole PaBT flow in one command, on Fashion-MNIST, in a few minutes on a laptop CPU.

    pabt-quickstart          # or, from a checkout: python -m experiments.quickstart

1. trains a small multi-base binary CNN (M = N = 3: nine binary convolutions per layer)
   on Fashion-MNIST with Keras progress bars;
2. prunes it during training, by gradient importance, down to one binary convolution
   per layer: a BNN;
3. converts it with Larq Compute Engine (every binary convolution must become an
   `LceBconv2d`) and verifies the flatbuffer against Keras on real test images;
4. prints a short table and where the plot and the flatbuffer are.

Reduced run (what the test does): `--epochs 1 --steps 6 --train_limit 768 --test_limit 256`.

Run again on the same `--output_dir` (`make demo` twice), it prints the finished run's
table instead of training again; `--force` trains afresh (deleting that run's files
first), another `--output_dir` keeps both. A stopped run resumes. `--verify_samples 0`
converts without verifying. Exit status: 0 a verified BNN; 1 the conversion or its check
failed; 2 bad arguments or a run directory that cannot be used.
"""

from __future__ import annotations

import os
import sys

import pabt_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
from absl import app, flags

from pabt_tf.run import train as train_lib

FLAGS = flags.FLAGS


def define_flags() -> None:
    if "verify_samples" in FLAGS:
        return
    flags.DEFINE_integer("epochs", 2, "Training epochs.")
    flags.DEFINE_integer("steps", None, "Steps per epoch (default: whole training set).")
    flags.DEFINE_integer("train_limit", None, "Use only this many training images.")
    flags.DEFINE_integer("test_limit", None, "Use only this many test images.")
    flags.DEFINE_integer("batch_size", 128, "Batch size.")
    flags.DEFINE_integer("weight_bases", 3, "M, weight bases per layer.", short_name="M")
    flags.DEFINE_integer("activation_bases", 3, "N, activation bases per layer.", short_name="N")
    flags.DEFINE_integer("verify_samples", 200, "Test images for the LCE verification "
                         "(0 = convert without verifying).")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_string("output_dir", "runs/quickstart", "Run directory.")
    flags.DEFINE_integer("verbose", 1, "Keras progress: 1 = bars, 2 = one line per epoch.")
    flags.DEFINE_boolean("force", False, "Train afresh into an --output_dir that holds an "
                         "earlier run: its files are deleted first.")


def _mib(n):
    return "—" if n is None else (f"{n / 1024:.1f} KiB" if n < 2**20 else f"{n / 2**20:.2f} MiB")


def format_table(r: dict) -> str:
    """The quickstart's summary table from a results dict of `experiments.train`."""
    pct = lambda v: "—" if v is None else f"{100 * v:.2f} %"  # noqa: E731
    ver = r.get("verification") or {}
    if r.get("verification") is None and "convert_error" not in r:
        check = "not verified (--verify_samples 0)"
    else:
        check = (("PASSED" if ver.get("ok") else "FAILED") +
                 f": max |diff| {ver.get('max_abs_diff', float('nan')):.2g}, top-1 agreement "
                 f"{100 * ver.get('top1_agreement', 0):.1f} %")
    cfg = r["config"]
    m, n = cfg["weight_bases"], cfg["activation_bases"]
    schedule = r.get("pruning_schedule") or {}
    begin = schedule.get("begin_step", schedule.get("end_step", "?"))
    rows = [
        (f"test accuracy, multi-base network when pruning starts (step {begin} of "
         f"{r.get('total_steps', '?')})", pct(r.get("mbn_test_accuracy"))),
        (f"test accuracy, final BNN (Keras, {r.get('test_size', '?')} test images)",
         pct(r["test_accuracy"])),
        (f"flatbuffer (LCE) / Keras on the same {r.get('verify_samples', '?')} test images",
         f"{pct(r.get('flatbuffer_accuracy'))} / {pct(r.get('keras_accuracy_on_verify_samples'))}"),
        ("mean binary convolutions per layer", f"{m * n} → {r['mean_binary_convs']:.2f}"),
        ("binary MACs per image", f"{r['unpruned_binary_macs'] / 1e6:.1f} M → {r['binary_macs'] / 1e6:.1f} M"),
        ("Keras model (.keras, with latent weights)", _mib(r.get("keras_file_bytes"))),
        ("flatbuffer (.tflite)", _mib(r.get("flatbuffer_bytes"))),
        ("LceBconv2d in the flatbuffer", f"{r.get('found_bconvs')} (expected {r.get('expected_bconvs')})"),
        ("LCE vs Keras", check),
        ("training time", f"{r['train_seconds'] / 60:.1f} min"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    lines = [f"PaBT quickstart: Fashion-MNIST, {cfg['model']}, M={m}, N={n} → BNN", ""]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    out = os.path.dirname(r["plot"])
    lines += [
        "",
        f"  pruning plot : {r['plot']}",
        f"  flatbuffer   : {r.get('tflite', '— (conversion failed: ' + str(r.get('convert_error')) + ')')}",
        f"  Keras model  : {os.path.join(out, 'model.keras')}",
        f"  all results  : {os.path.join(out, 'results.json')}  (TensorBoard: {os.path.join(out, 'tensorboard')})",
    ]
    return "\n".join(lines)


def _run(argv) -> int:
    del argv
    import tensorflow as tf
    from absl import logging

    from pabt_tf.run.evaluation import conversion_failed
    from pabt_tf.run.state import RunDirectoryError

    logging.set_verbosity(logging.WARNING)  # TF's checkpoint INFO lines
    tf.get_logger().setLevel("ERROR")
    config = dict(
        dataset="fashion_mnist",
        model="fmnist_cnn",
        method="pabt",
        epochs=FLAGS.epochs,
        steps=FLAGS.steps,
        batch_size=FLAGS.batch_size,
        weight_bases=FLAGS.weight_bases,
        activation_bases=FLAGS.activation_bases,
        train_limit=FLAGS.train_limit,
        test_limit=FLAGS.test_limit,
        validation_limit=1000,
        verify_samples=FLAGS.verify_samples,
        seed=FLAGS.seed,
        output_dir=FLAGS.output_dir,
        verbose=FLAGS.verbose,
        evaluate_mbn=True,
    )
    if FLAGS.force or not os.path.exists(os.path.join(FLAGS.output_dir, "results.json")):
        print(f"Training a PaBT network ({FLAGS.weight_bases}×{FLAGS.activation_bases} "
              "binary convolutions per layer) and pruning it to a BNN during training...",
              flush=True)
    try:
        results = train_lib.train(config, force=FLAGS.force)
    except (RunDirectoryError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    print()
    print(format_table(results), flush=True)
    if results.get("reused"):
        print(f"\n  This is the run {FLAGS.output_dir} already holds (finished, not trained "
              "again). To train again: --force (replaces it) or another --output_dir.",
              flush=True)
    failed = conversion_failed(results)
    if failed:
        print(f"error: {failed}", file=sys.stderr, flush=True)
    ok = not failed and abs(results["mean_binary_convs"] - 1.0) < 1e-9
    return 0 if ok else 1


def main(argv=None) -> None:
    """Console-script entry point (`pabt-quickstart`)."""
    define_flags()
    app.run(_run, argv=argv or sys.argv)


if __name__ == "__main__":
    main()
