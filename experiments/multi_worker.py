r"""PaBT with `MultiWorkerMirroredStrategy`: several worker processes, one model.

How a user who outgrows one machine runs PaBT: every worker runs the same program with
its own `TF_CONFIG`; gradients, and hence the importances `PaBTModel` accumulates from
the all-reduced gate gradients, are identical on every worker, so every worker's
`PaBTPruningCallback` prunes the same binary convolutions without any extra
communication.

This program launches `--workers` processes on localhost (ports 127.0.0.1:free), each
training a small Fashion-MNIST net pruned to a BNN, and checks that all workers end with
the same masks, importances and step:

    python -m experiments.multi_worker --workers=2 --steps=40
    python -m experiments.multi_worker --workers=2 --json=/tmp/mw.json

On real machines set `TF_CONFIG` yourself on each host, e.g. on the first of two:

    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 0}}' \
      python -m experiments.multi_worker --worker

and the same with `"index": 1` on the second. Worker 0 is the chief: it alone writes
TensorBoard summaries (`--tensorboard_dir`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pabt_tf as pabt  # noqa: E402  (Keras 2 before TensorFlow)

# isort: split
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from pabt_tf._atomic import write_atomically  # noqa: E402
from pabt_tf.data import load_fashion_mnist  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("workers", 2, "Number of worker processes to launch on localhost.")
flags.DEFINE_boolean("worker", False, "Run as one worker (TF_CONFIG must be set).")
flags.DEFINE_integer("steps", 40, "Training steps (global batches).")
flags.DEFINE_integer("batch", 64, "Global batch size (split over the workers).")
flags.DEFINE_integer("bases", 2, "M = N of the PaBT layers.")
flags.DEFINE_string("tensorboard_dir", None, "TensorBoard directory (written by the chief).")
flags.DEFINE_string("json", None, "Write the result (every worker's final state) here.")
flags.DEFINE_string("_state_out", None, "Internal: where a worker writes its final state.")
flags.DEFINE_integer("timeout", 900, "Seconds before the launcher gives up on the workers.")


def build_model(bases: int) -> pabt.PaBTModel:
    inputs = tf.keras.Input((28, 28, 1))
    h = tf.keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inputs)
    # SyncBatchNormalization: batch statistics over the global batch, as on one device.
    h = tf.keras.layers.experimental.SyncBatchNormalization(momentum=0.9)(h)
    h = pabt.PaBTConv2D(16, 3, padding="same", weight_bases=bases, activation_bases=bases)(h)
    h = tf.keras.layers.experimental.SyncBatchNormalization(momentum=0.9)(h)
    h = tf.keras.layers.MaxPool2D(2)(h)
    h = pabt.PaBTConv2D(32, 3, padding="same", weight_bases=bases, activation_bases=bases)(h)
    h = tf.keras.layers.experimental.SyncBatchNormalization(momentum=0.9)(h)
    outputs = tf.keras.layers.Dense(10)(tf.keras.layers.Flatten()(h))
    return pabt.PaBTModel(inputs, outputs, name="multi_worker_pabt")


def run_worker() -> dict:
    """One worker: train with MultiWorkerMirroredStrategy, return its final state."""
    # The strategy must exist before any other TensorFlow op runs.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    resolver = strategy.cluster_resolver
    tf.keras.utils.set_random_seed(0)  # same initial weights on every worker
    x, y = load_fashion_mnist("train", limit=FLAGS.steps * FLAGS.batch)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(FLAGS.batch, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = data.with_options(options)
    with strategy.scope():
        model = build_model(FLAGS.bases)
        model.compile(
            tf.keras.optimizers.Adam(0.003),
            tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    end = max(2, FLAGS.steps * 3 // 4)
    callback = pabt.PaBTPruningCallback(
        pabt.schedules.PolynomialDecay(0, end, frequency=max(1, end // 4)),
        log_dir=FLAGS.tensorboard_dir,
    )
    history = model.fit(data, epochs=1, verbose=0, callbacks=[callback])
    return {
        "task_index": int(resolver.task_id),
        "num_replicas_in_sync": int(strategy.num_replicas_in_sync),
        "loss": float(history.history["loss"][-1]),
        "accuracy": float(history.history["accuracy"][-1]),
        "mean_binary_convs": float(history.history["mean_binary_convs"][-1]),
        "events": [
            {"step": e["step"], "active_after": e["active_after"]} for e in callback.events
        ],
        "layers": [
            {
                "name": layer.name,
                "mask": layer.binary_conv_mask.astype(int).tolist(),
                "importance": layer.importance.tolist(),
                "step": int(layer.pruning_step.numpy()),
            }
            for layer in pabt.pabt_layers(model)
        ],
    }


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def launch(workers: int) -> dict:
    """Start `workers` processes on localhost and collect their final states."""
    if workers < 1:
        raise ValueError(f"`--workers` must be >= 1, got {workers}.")
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(workers)]}
    tmp = tempfile.mkdtemp(prefix="pabt_multi_worker_")
    procs, outs = [], []
    for index in range(workers):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
        out = os.path.join(tmp, f"worker{index}.json")
        outs.append(out)
        args = [sys.executable, "-m", "experiments.multi_worker", "--worker",
                f"--steps={FLAGS.steps}", f"--batch={FLAGS.batch}", f"--bases={FLAGS.bases}",
                f"--_state_out={out}"]
        if FLAGS.tensorboard_dir:
            args.append(f"--tensorboard_dir={FLAGS.tensorboard_dir}")
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    start = time.time()
    failed = []
    for index, proc in enumerate(procs):
        try:
            _, err = proc.communicate(timeout=max(1, FLAGS.timeout - (time.time() - start)))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise RuntimeError(f"worker {index} timed out after {FLAGS.timeout} s")
        if proc.returncode != 0:
            failed.append(f"worker {index} exited with {proc.returncode}:\n{err[-3000:]}")
    if failed:
        raise RuntimeError("\n".join(failed))
    states = []
    for out in outs:
        with open(out) as f:
            states.append(json.load(f))
    return {
        "cluster": cluster,
        "seconds": time.time() - start,
        "num_replicas_in_sync": states[0]["num_replicas_in_sync"],
        "workers": states,
    }


def check_identical(result: dict) -> list[str]:
    """Differences between the workers' final pruning states (empty = identical)."""
    problems = []
    ref = result["workers"][0]["layers"]
    for worker in result["workers"][1:]:
        for a, b in zip(ref, worker["layers"]):
            if a["mask"] != b["mask"]:
                problems.append(f"worker {worker['task_index']}: {b['name']} mask differs")
            if a["step"] != b["step"]:
                problems.append(f"worker {worker['task_index']}: {b['name']} step differs")
            if not np.array_equal(a["importance"], b["importance"]):
                problems.append(f"worker {worker['task_index']}: {b['name']} importance differs")
    return problems


def main(argv):
    del argv
    if FLAGS.worker:
        state = run_worker()
        if FLAGS._state_out:
            write_atomically(FLAGS._state_out, json.dumps(state).encode())
        else:
            print(json.dumps(state, indent=1))
        return
    result = launch(FLAGS.workers)
    problems = check_identical(result)
    result["identical"] = not problems
    if FLAGS.json:
        write_atomically(FLAGS.json, json.dumps(result, indent=1).encode())
    w0 = result["workers"][0]
    print(
        f"{FLAGS.workers} workers, {result['num_replicas_in_sync']} replicas in sync, "
        f"{FLAGS.steps} steps in {result['seconds']:.1f} s: final loss {w0['loss']:.3f}, "
        f"train accuracy {w0['accuracy']:.3f}, mean binary convs {w0['mean_binary_convs']:.2f}"
    )
    for layer in w0["layers"]:
        print(f"  {layer['name']}: active {int(np.sum(layer['mask']))}, step {layer['step']}")
    print("all workers identical (masks, importances, step)" if not problems else "\n".join(problems))
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
