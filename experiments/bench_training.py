r"""Wall time of a whole default-schedule training run: PaBT → BNN against the Larq BNN.

Trains the Fashion-MNIST CNN (`fmnist_cnn`) with `experiments.train`'s defaults — the
pruning schedule, optimizer, augmentation, validation every epoch, checkpoints — once
with `method="pabt"` and once with the Larq STE BNN (`method="bnn"`), each in its own
process, in pairs run back to back (the order alternates between pairs, so a load that
drifts over the benchmark hits both alike), and prints:

- **whole run**: PaBT's training wall time (`fit`, validation included) over the BNN's,
  per pair, and the median over pairs;
- **where the time goes**: the first step (tracing the training function) of each, and: PaBT's mean step time in each phase of the schedule (before
  pruning, while pruning, pruned to a BNN) relative to the BNN's mean step time, with
  the phase's share of the steps and the mean number of *active activation bases* per
  layer (each one costs one convolution's work: the weight bases are folded into one
  kernel per activation base, `pabt_tf.layers.base`), and the run time those ratios
  predict (Σ share × ratio).

    python -m experiments.bench_training                     # 4 epochs, full data, 1 pair
    python -m experiments.bench_training --pairs=2 --train_limit=12000 --epochs=4

Goal (issue 10): whole run ≤ 1.3× the BNN run (and a pruned step ≤ 1.05× the BNN step,
`experiments.bench_layers`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pabt_tf  # noqa: E402,F401  (Keras 2 before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("pairs", 1, "PaBT/BNN pairs (each two whole runs, back to back).")
flags.DEFINE_integer("epochs", 4, "Epochs of each run (the schedule scales with them).")
flags.DEFINE_integer("train_limit", None, "Training images (default: all 55,000).")
flags.DEFINE_integer("seed", 0, "Seed of every run.")
flags.DEFINE_integer("threads", 0, "TF intra-op threads per run (0 = TF default).")
flags.DEFINE_string("json", None, "Also write the results as JSON to this path.")
flags.DEFINE_string("_run", None, "Internal: one run (method) in this process, JSON out.")

METHODS = ("pabt", "bnn")


class StepTimer(tf.keras.callbacks.Callback):
    """Wall time of every training step (batch start to next batch start, so callbacks
    count), and for PaBT the active activation bases per layer at each step.

    Listed last, so its clock includes the other callbacks' per-batch work."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self.active_bases: list[float] = []
        self.active_convs: list[float] = []
        self.first_step: float | None = None
        self._last = None
        self._layers = None

    def on_train_batch_begin(self, batch, logs=None):
        now = time.perf_counter()
        if self._last is not None:
            if self.first_step is None:
                self.first_step = now - self._last  # tracing and graph optimisation
            else:
                self.seconds.append(now - self._last)
        self._last = now
        if self._layers is None:
            self._layers = pabt_tf.pabt_layers(self.model)
        if self._layers and self.first_step is not None:
            # Masks change only at pruning events; reading 4 small variables a step is
            # noise next to a step (~0.1 ms of ~60 ms).
            masks = [layer.mask.numpy() > 0 for layer in self._layers]
            self.active_bases.append(float(np.mean([m.any(0).sum() for m in masks])))
            self.active_convs.append(float(np.mean([m.sum() for m in masks])))

    def on_epoch_end(self, epoch, logs=None):
        self._last = None  # validation is not a step


def run_here(method: str) -> dict:
    """One whole training run in this process; its wall time and per-step times."""
    from experiments import train as train_lib

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        config = dict(method=method, epochs=FLAGS.epochs, train_limit=FLAGS.train_limit,
                      seed=FLAGS.seed, output_dir=out, convert=False, save_model=False,
                      verbose=0)
        result = train_lib.train(config, extra_callbacks=[timer])
    return {
        "method": method,
        "train_seconds": result["train_seconds"],
        "first_step_seconds": timer.first_step,
        "step_seconds": timer.seconds,
        "active_bases": timer.active_bases,
        "active_convs": timer.active_convs,
    }


def run(method: str) -> dict:
    """`run_here` in a fresh interpreter (same start-up for both methods)."""
    args = [sys.executable, "-m", "experiments.bench_training", f"--_run={method}",
            f"--epochs={FLAGS.epochs}", f"--seed={FLAGS.seed}"]
    if FLAGS.train_limit:
        args.append(f"--train_limit={FLAGS.train_limit}")
    env = dict(os.environ)
    if FLAGS.threads:
        env.update(TF_NUM_INTRAOP_THREADS=str(FLAGS.threads), TF_NUM_INTEROP_THREADS="1")
    out = subprocess.run(args, check=True, capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return json.loads(out.stdout.strip().splitlines()[-1])


def phases(pabt: dict, bnn_step: float) -> list[dict]:
    """PaBT's steps grouped by schedule phase, each relative to the BNN's mean step."""
    seconds = np.asarray(pabt["step_seconds"])
    bases = np.asarray(pabt["active_bases"][: len(seconds)])
    convs = np.asarray(pabt["active_convs"][: len(seconds)])
    pruned = convs <= convs.min()  # every layer at its target
    first_pruned = int(np.argmax(pruned)) if pruned.any() else len(seconds)
    groups = {
        "before pruning": (convs >= convs.max()) & (np.arange(len(seconds)) < first_pruned),
        "while pruning": (np.arange(len(seconds)) < first_pruned) & (convs < convs.max()),
        "pruned (BNN structure)": np.arange(len(seconds)) >= first_pruned,
    }
    rows = []
    for name, sel in groups.items():
        if not sel.any():
            continue
        rows.append({
            "phase": name,
            "share": float(sel.mean()),
            "step_ratio": float(seconds[sel].mean() / bnn_step),
            "active_bases": float(bases[sel].mean()),
            "active_convs": float(convs[sel].mean()),
        })
    return rows


def main(argv):
    del argv
    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    if FLAGS._run:
        print(json.dumps(run_here(FLAGS._run)))
        return
    print(f"fmnist_cnn, experiments.train defaults, {FLAGS.epochs} epochs, "
          f"{FLAGS.train_limit or 'all'} training images, {FLAGS.pairs} pair(s); "
          f"load average at start {os.getloadavg()[0]:.1f}", flush=True)
    pairs = []
    for p in range(FLAGS.pairs):
        order = METHODS if p % 2 == 0 else METHODS[::-1]
        runs = {method: run(method) for method in order}
        pabt, bnn = runs["pabt"], runs["bnn"]
        bnn_step = float(np.mean(bnn["step_seconds"]))
        rows = phases(pabt, bnn_step)
        pair = {
            "order": list(order),
            "pabt_seconds": pabt["train_seconds"],
            "bnn_seconds": bnn["train_seconds"],
            "whole_run_ratio": pabt["train_seconds"] / bnn["train_seconds"],
            "step_ratio": float(np.mean(pabt["step_seconds"]) / bnn_step),
            "first_step_seconds": {m: runs[m]["first_step_seconds"] for m in METHODS},
            "predicted_ratio": float(sum(r["share"] * r["step_ratio"] for r in rows)),
            "phases": rows,
            "load_average": os.getloadavg()[0],
        }
        pairs.append(pair)
        print(f"pair {p + 1} ({' then '.join(order)}): PaBT {pair['pabt_seconds']:.0f} s, "
              f"BNN {pair['bnn_seconds']:.0f} s: whole run {pair['whole_run_ratio']:.2f}x "
              f"(mean step {pair['step_ratio']:.2f}x; load {pair['load_average']:.1f})",
              flush=True)
        for r in rows:
            print(f"    {r['phase']:24s} {100 * r['share']:5.1f} % of steps, "
                  f"{r['active_bases']:.2f} active activation bases/layer "
                  f"({r['active_convs']:.2f} binary convs): step {r['step_ratio']:.2f}x BNN",
                  flush=True)
        print(f"    first step (tracing): PaBT {pair['first_step_seconds']['pabt']:.1f} s, "
              f"BNN {pair['first_step_seconds']['bnn']:.1f} s", flush=True)
        print(f"    predicted by the phases: {pair['predicted_ratio']:.2f}x", flush=True)
    whole = float(np.median([p["whole_run_ratio"] for p in pairs]))
    print(f"whole default-schedule run PaBT/BNN: {whole:.2f}x (median of {len(pairs)} "
          f"pair(s); goal <= 1.3x: {'met' if whole <= 1.3 else 'NOT met'})", flush=True)
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump({"pairs": pairs, "whole_run_ratio": whole,
                       "flags": {k: FLAGS[k].value for k in
                                 ("pairs", "epochs", "train_limit", "seed", "threads")}},
                      f, indent=2)


if __name__ == "__main__":
    app.run(main)
