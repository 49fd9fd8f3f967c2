r"""Wall time of a whole default-schedule training run: PaBT → BNN against the Larq BNN.

Trains the Fashion-MNIST CNN (`fmnist_cnn`) with `experiments.train`'s defaults — the
pruning schedule, optimizer, augmentation, validation every epoch, checkpoints — once
with `method="pabt"` and once with the Larq STE BNN (`method="bnn"`), each in its own
process, **interleaved in lock-step**: the two processes take turns of `--chunk`
training steps (a baton passed between them), so both runs see the same machine load
however it drifts, and each run's time is its `fit` wall time minus the time it waited
for its turn. Prints:

- **whole run**: PaBT's training time (`fit`: steps, callbacks, per-epoch validation)
  over the BNN's;
- **where the time goes**: the first step of each (tracing the training function), and
  PaBT's mean time of the later steps in each phase of the schedule (before pruning,
  while pruning, pruned to a BNN) relative to the BNN's mean step, with the phase's share
  of the steps and the mean number of *active activation bases* per layer (each costs
  one convolution's work: the weight bases are folded into one kernel per activation
  base, `pabt_tf.layers.base`), and the ratio those phases predict (Σ share × ratio).

    python -m experiments.bench_training                     # 4 epochs, all data
    python -m experiments.bench_training --pairs=2 --train_limit=12000

Goal (issue 10): whole run ≤ 1.3× the BNN run (a pruned step ≤ 1.05× the BNN step is
measured by `experiments.bench_layers`).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue as queue_lib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pabt_tf  # noqa: E402,F401  (Keras 2 before TensorFlow)

# isort: split
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from pabt_tf._atomic import write_atomically  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("pairs", 1, "PaBT/BNN pairs (each two whole runs, interleaved).")
flags.DEFINE_integer("epochs", 4, "Epochs of each run (the schedule scales with them).")
flags.DEFINE_integer("train_limit", None, "Training images (default: all 55,000).")
flags.DEFINE_integer("chunk", 25, "Training steps per turn of the lock-step interleaving.")
flags.DEFINE_integer("seed", 0, "Seed of every run.")
flags.DEFINE_integer("threads", 0, "TF intra-op threads per run (0 = TF default).")
flags.DEFINE_string("json", None, "Also write the results as JSON to this path.")

METHODS = ("pabt", "bnn")


class Baton:
    """Two processes taking turns: `wait_turn` blocks until the other passes the turn;
    a process that has finished passes it for good (the other stops waiting)."""

    def __init__(self, ctx):
        self.turn = [ctx.Semaphore(0), ctx.Semaphore(0)]
        self.done = [ctx.Event(), ctx.Event()]

    def start(self, me: int) -> float:
        """Wait for the first turn; the seconds waited."""
        start = time.perf_counter()
        self.turn[me].acquire()
        return time.perf_counter() - start

    def pass_turn(self, me: int) -> float:
        """Give the turn to the other process and wait for it back; the seconds waited."""
        other = 1 - me
        if self.done[other].is_set():
            return 0.0
        start = time.perf_counter()
        self.turn[other].release()
        self.turn[me].acquire()
        return time.perf_counter() - start

    def finish(self, me: int) -> None:
        self.done[me].set()
        self.turn[1 - me].release()


class InterleavedStepTimer(tf.keras.callbacks.Callback):
    """Wall time of every training step (batch start to next batch start, so the other
    callbacks' per-batch work counts; waits for the turn do not), the time waited, and
    for PaBT the active activation bases and binary convolutions per layer at each step.
    """

    def __init__(self, baton: Baton | None, me: int, chunk: int):
        super().__init__()
        self.baton, self.me, self.chunk = baton, me, chunk
        self.seconds: list[float] = []
        self.active_bases: list[float] = []
        self.active_convs: list[float] = []
        self.first_step: float | None = None
        self.waited = 0.0
        self._last: float | None = None
        self._steps = 0
        self._layers = None

    def on_train_batch_begin(self, batch, logs=None):
        now = time.perf_counter()
        if self._last is not None:
            if self.first_step is None:
                self.first_step = now - self._last  # tracing and graph optimisation
            else:
                self.seconds.append(now - self._last)
        self._steps += 1
        if self.baton is not None and self._steps % self.chunk == 0:
            self.waited += self.baton.pass_turn(self.me)
        if self._layers is None:
            self._layers = pabt_tf.pabt_layers(self.model)
        if self._layers and self.first_step is not None:
            # ~0.1 ms for 4 small variables, next to a ~50 ms step.
            masks = [layer.binary_conv_mask for layer in self._layers]
            self.active_bases.append(float(np.mean([m.any(0).sum() for m in masks])))
            self.active_convs.append(float(np.mean([m.sum() for m in masks])))
        self._last = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self._last = None  # validation is not a step


def run_here(method: str, baton: Baton | None = None, me: int = 0, settings=None) -> dict:
    """One whole training run in this process; its time and per-step times."""
    from experiments import train as train_lib

    settings = settings or {}
    timer = InterleavedStepTimer(baton, me, settings.get("chunk", 25))
    try:
        # Set-up (data, model) in turns too: it would load the other run's steps.
        if baton is not None:
            baton.start(me)
        with tempfile.TemporaryDirectory() as out:
            config = dict(method=method, epochs=settings.get("epochs", 4),
                          train_limit=settings.get("train_limit"), seed=settings.get("seed", 0),
                          test_limit=512, output_dir=out, convert=False, save_model=False,
                          verbose=0)
            result = train_lib.train(config, extra_callbacks=[timer])
    finally:
        # After the whole run (its test evaluation too, so it never overlaps the other
        # run's steps), or on failure: never leave the other process waiting.
        if baton is not None:
            baton.finish(me)
    return {
        "method": method,
        "fit_seconds": result["train_seconds"],
        "waited_seconds": timer.waited,  # during fit (set-up waits are not in fit)
        "train_seconds": result["train_seconds"] - timer.waited,
        "first_step_seconds": timer.first_step,
        "step_seconds": timer.seconds,
        "active_bases": timer.active_bases,
        "active_convs": timer.active_convs,
    }


def _child(method, baton, me, settings, queue):
    # Keras warns that on_train_batch_begin is slow: that is the wait for the turn.
    tf.get_logger().setLevel("ERROR")
    if settings.get("threads"):
        tf.config.threading.set_intra_op_parallelism_threads(settings["threads"])
    try:
        queue.put((method, run_here(method, baton, me, settings)))
    except BaseException as err:  # report, so the parent does not wait forever
        queue.put((method, {"error": f"{type(err).__name__}: {err}"}))
        raise


def run_pair(first: str, settings: dict) -> dict[str, dict]:
    """Both methods, interleaved in lock-step (`first` starts), each in a fresh process."""
    ctx = mp.get_context("spawn")
    baton, queue = Baton(ctx), ctx.Queue()
    order = [first] + [m for m in METHODS if m != first]
    procs = [ctx.Process(target=_child, args=(m, baton, i, settings, queue))
             for i, m in enumerate(order)]
    for p in procs:
        p.start()
    baton.turn[0].release()
    runs: dict[str, dict] = {}
    while len(runs) < len(procs):
        try:
            method, result = queue.get(timeout=5)
            runs[method] = result
        except queue_lib.Empty:
            # A run killed outright (e.g. out of memory) reports nothing: do not wait.
            dead = [m for m, p in zip(order, procs) if not p.is_alive() and m not in runs]
            if dead and queue.empty():
                for p in procs:
                    p.kill()
                raise RuntimeError(f"the {', '.join(dead)} run died without a result "
                                   f"(exit code {[p.exitcode for p in procs]})") from None
    for p in procs:
        p.join()
    for method, r in runs.items():
        if "error" in r:
            raise RuntimeError(f"the {method} run failed: {r['error']}")
    return runs


def phases(pabt: dict, bnn_step: float) -> list[dict]:
    """PaBT's steps grouped by schedule phase, each relative to the BNN's mean step."""
    seconds = np.asarray(pabt["step_seconds"])
    n = min(len(seconds), len(pabt["active_convs"]))
    seconds = seconds[:n]
    bases = np.asarray(pabt["active_bases"][:n])
    convs = np.asarray(pabt["active_convs"][:n])
    index = np.arange(n)
    pruned = convs <= convs.min()  # every layer at its target
    first_pruned = int(np.argmax(pruned)) if pruned.any() else n
    groups = {
        "before pruning": (convs >= convs.max()) & (index < first_pruned),
        "while pruning": (index < first_pruned) & (convs < convs.max()),
        "pruned (BNN structure)": index >= first_pruned,
    }
    rows = []
    for name, sel in groups.items():
        if sel.any():
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
    settings = {k: FLAGS[k].value for k in ("epochs", "train_limit", "chunk", "seed", "threads")}
    print(f"fmnist_cnn, experiments.train defaults, {FLAGS.epochs} epochs, "
          f"{FLAGS.train_limit or 'all'} training images, {FLAGS.pairs} pair(s), interleaved "
          f"in turns of {FLAGS.chunk} steps; load average at start {os.getloadavg()[0]:.1f}",
          flush=True)
    pairs = []
    for p in range(FLAGS.pairs):
        first = METHODS[p % 2]
        runs = run_pair(first, settings)
        pabt, bnn = runs["pabt"], runs["bnn"]
        bnn_step = float(np.mean(bnn["step_seconds"]))
        rows = phases(pabt, bnn_step)
        pair = {
            "first": first,
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
        print(f"pair {p + 1} ({first} first): PaBT {pair['pabt_seconds']:.0f} s, BNN "
              f"{pair['bnn_seconds']:.0f} s: whole run {pair['whole_run_ratio']:.2f}x "
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
        write_atomically(FLAGS.json, json.dumps(
            {"pairs": pairs, "whole_run_ratio": whole, "flags": settings}, indent=2).encode())


if __name__ == "__main__":
    app.run(main)
