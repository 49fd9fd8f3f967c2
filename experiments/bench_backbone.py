r"""Training-step time of one zoo backbone under every method of a comparison,
interleaved, to size a campaign before running it.

Builds the backbone exactly as `experiments.train` does (`train.build`, the method's
optimizer, the loss, `fit`'s own training step via `make_train_function`) for: full
precision, the Bi-Real-style BNN, the Larq STE BNN, the Larq Bop BNN, the unpruned
M = N PaBT network, PaBT with one activation base left per layer (all M weight bases:
where the `activation_bases` pruning order arrives early), PaBT pruned to one binary
convolution per layer (a BNN), and optionally ABC-Net with `--abc_bases`. Steps run in
rounds of one step of each configuration, the order rotating every round, on one fixed
random batch (no input pipeline), so every configuration sees the same machine load;
the report is each configuration's median step and its ratio to the Bi-Real-style BNN's
median in the same run.

    python -m experiments.bench_backbone --model fmnist_resnet --input_shape 32,32,3 \
        --threads 1 --json results/bench/cifar10_backbone_steps.json

A segmentation backbone (per-pixel logits) gets a random label per pixel.
"""

from __future__ import annotations

import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pabt_tf  # noqa: E402  (Keras 2 before TensorFlow)

# isort: split
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from experiments import train as train_lib  # noqa: E402
from experiments.common import code_version, write_json  # noqa: E402
from pabt_tf.methods import get_optimizer  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "fmnist_resnet", "Zoo model.")
flags.DEFINE_list("input_shape", ["32", "32", "3"], "Input shape (height, width, channels).")
flags.DEFINE_integer("num_classes", 10, "Classes.")
flags.DEFINE_string("model_kwargs", None, "Extra model builder arguments (JSON).")
flags.DEFINE_integer("bases", 3, "M = N of the PaBT network.")
flags.DEFINE_list("abc_bases", [], "Also time ABC-Net with these M,N (e.g. 2,1).")
flags.DEFINE_integer("batch", 128, "Batch size.")
flags.DEFINE_integer("steps", 20, "Timed rounds (one step of every configuration each).")
flags.DEFINE_integer("warmup", 3, "Untimed steps per configuration (tracing, allocation).")
flags.DEFINE_integer("threads", 1, "TF intra-op threads (0 = TensorFlow's default).")
flags.DEFINE_string("json", None, "Also write the results as JSON to this path.")

BASELINE = "bnn_bireal"


def configurations(bases: int, abc_bases) -> dict[str, tuple[str, dict, object]]:
    """`{name: (method, extra config, mask of one layer or None)}`."""
    one_base = np.zeros((bases, bases), bool)
    one_base[:, 0] = True  # every weight base, one activation base
    one_conv = np.zeros((bases, bases), bool)
    one_conv[0, 0] = True
    configs = {
        "float": ("float", {}, None),
        "bnn_bireal": ("bnn_bireal", {}, None),
        "bnn": ("bnn", {}, None),
        "bnn_bop": ("bnn_bop", {}, None),
        "pabt": ("pabt", {}, None),
        "pabt_one_activation_base": ("pabt", {}, one_base),
        "pabt_pruned": ("pabt", {}, one_conv),
    }
    if abc_bases:
        m, n = (int(v) for v in abc_bases)
        configs[f"abc_{m}x{n}"] = ("abc", {"model_kwargs": {"abc_bases": [m, n]}}, None)
    return configs


def make_step(method: str, extra: dict, mask, x_y) -> tuple[callable, int]:
    """`fit`'s training step of the configured model on the fixed batch; its binary
    convolution count."""
    config = dict(train_lib.DEFAULTS, model=FLAGS.model, method=method, weight_bases=FLAGS.bases,
                  activation_bases=FLAGS.bases, **extra)
    kwargs = json.loads(FLAGS.model_kwargs) if FLAGS.model_kwargs else {}
    config["model_kwargs"] = {**kwargs, **(config.get("model_kwargs") or {})}
    tf.keras.utils.set_random_seed(0)
    model = train_lib.build(config, [int(d) for d in FLAGS.input_shape], FLAGS.num_classes)
    layers = pabt_tf.pabt_layers(model)
    if mask is not None:
        for layer in layers:
            layer.set_binary_conv_mask(mask)
    model.compile(get_optimizer(method, 1e-3, config["latent_weights"]),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    train_function = model.make_train_function()
    x, labels = x_y
    # A label per output position: per image (classification) or per pixel (segmentation).
    y = labels(model.output_shape[1:-1])
    batches = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
    return (lambda: train_function(batches)["loss"]), sum(layer.active_binary_convs for layer in layers)


def time_interleaved(configs: dict) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    rng = np.random.default_rng(0)
    shape = [FLAGS.batch] + [int(d) for d in FLAGS.input_shape]
    x = tf.constant(rng.normal(size=shape).astype(np.float32))
    fixed = {}

    def labels(spatial) -> tf.Tensor:  # the same labels for every configuration
        key = tuple(spatial)
        if key not in fixed:
            fixed[key] = tf.constant(rng.integers(0, FLAGS.num_classes, (FLAGS.batch, *key)))
        return fixed[key]

    x_y = (x, labels)
    steps, convs = {}, {}
    for name, (method, extra, mask) in configs.items():
        steps[name], convs[name] = make_step(method, extra, mask, x_y)
        for _ in range(FLAGS.warmup):
            steps[name]().numpy()
    names = list(configs)
    times = {name: [] for name in names}
    for i in range(FLAGS.steps):
        for name in names[i % len(names):] + names[: i % len(names)]:
            start = time.perf_counter()
            steps[name]().numpy()
            times[name].append(time.perf_counter() - start)
    return {name: np.asarray(t) for name, t in times.items()}, convs


def report(times: dict[str, np.ndarray], convs: dict[str, int]) -> dict:
    base = float(np.median(times[BASELINE]))
    rows = {}
    for name, t in times.items():
        rows[name] = {
            "median_ms": 1e3 * float(np.median(t)),
            "q25_ms": 1e3 * float(np.percentile(t, 25)),
            "q75_ms": 1e3 * float(np.percentile(t, 75)),
            "ratio_to_bnn_bireal": float(np.median(t)) / base,
            "active_binary_convs": convs[name],
        }
    return rows


def main(argv):
    del argv
    # One training function per model is the point here, not a retracing problem.
    tf.get_logger().setLevel("ERROR")
    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    configs = configurations(FLAGS.bases, FLAGS.abc_bases)
    times, convs = time_interleaved(configs)
    rows = report(times, convs)
    print(f"{FLAGS.model} at {'x'.join(FLAGS.input_shape)}, batch {FLAGS.batch}, "
          f"{FLAGS.threads or 'default'} thread(s), {FLAGS.steps} interleaved rounds")
    print(f"{'configuration':<26} {'median ms':>10} {'IQR ms':>15} {'× Bi-Real BNN':>14}")
    for name, row in rows.items():
        print(f"{name:<26} {row['median_ms']:>10.1f} {row['q25_ms']:>7.1f}–{row['q75_ms']:<7.1f}"
              f" {row['ratio_to_bnn_bireal']:>14.2f}")
    if FLAGS.json:
        write_json(FLAGS.json, {
            "model": FLAGS.model, "input_shape": [int(d) for d in FLAGS.input_shape],
            "model_kwargs": FLAGS.model_kwargs, "batch": FLAGS.batch, "threads": FLAGS.threads,
            "steps": FLAGS.steps, "warmup": FLAGS.warmup, "bases": FLAGS.bases,
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(), "code": code_version(), "rows": rows,
        })
    return 0


if __name__ == "__main__":
    app.run(main)
