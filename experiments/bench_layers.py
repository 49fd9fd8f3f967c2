r"""Training speed and memory of PaBT layers against a Larq BNN, in one run.

Trains the same small conv net twice — its 4 binary 3×3 layers (64 channels) built of
`PaBTConv2D` and of Larq `QuantConv2D` (ste_sign input and kernel, `pad_values=1.0`,
`weight_clip`, the BNN baseline) — and prints PaBT / BNN ratios:

- **step time**: the configurations are timed *interleaved* (rounds of one step of
  each, in a rotating order); the ratio is the median over rounds of the per-round
  ratio, so load from other processes on a shared machine hits all of them alike (the
  ratio of the median step times is printed too);
- **peak memory**: each configuration trains in its own subprocess; the ratios are of
  the peak of TensorFlow's CPU allocator over steady-state training steps (weights,
  optimizer slots, activations kept for the backward pass) and of the peak RSS
  (`VmHWM`, which TensorFlow's own footprint and the traced graphs dominate).

Configurations: `M = N = 3` unpruned (9 binary convolutions per layer); every layer
pruned to one binary convolution (a different `(m, n)` per layer, so the pruned path is
the general one, not "base 0"); and the same pruned net with each layer's active
activation base fixed when the step is traced (no `tf.switch_case`), which prices the
run-time choice of the active bases. `--step=fit` (default) times `fit`'s own step
(`PaBTModel.train_step`: importance update, non-finite check), `--step=custom` a bare
`GradientTape` step.

    python -m experiments.bench_layers                      # 16×16 and 32×32, batch 64
    python -m experiments.bench_layers --sizes=16 --steps=10 --nomemory

Targets: ≤ 2.5× the BNN step time at M = N = 3 (issue 2), ≤ 1.05× pruned to one conv
(issue 10).

Measured (`results/bench/layers_step_fit.json`; 2-core AVX-512 CPU shared with one
training run, load 2–4, 30 rounds, fit's step): M = N = 3 at 2.67× (16×16) and 2.77×
(32×32); pruned to one conv 0.98× and 0.99× (goal ≤ 1.05× met); the run-time choice of
the active base costs nothing measurable (chosen at run time / fixed when traced: 0.988×
and 1.009×).
At M = N = 3 a step does 3× the BNN's convolution work (forward, input and kernel
gradients, all exact: the weight bases are folded into one kernel per activation base,
so only the N activation bases cost convolutions), and convolutions are ~85 % of the
BNN's step (profiled), so unless the convolutions overlap the floor is
≈ 3 · 0.85 + 0.15 ≈ 2.7×: the unpruned step sits at that floor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pabt_tf as pabt  # noqa: E402  (Keras 2 before TensorFlow)

# isort: split
import larq as lq  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from pabt_tf._atomic import write_atomically  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["16", "32"], "Input sizes (square).")
flags.DEFINE_integer("batch", 64, "Batch size.")
flags.DEFINE_integer("channels", 64, "Channels of the binary layers.")
flags.DEFINE_integer("layers", 4, "Number of binary 3×3 layers.")
flags.DEFINE_integer("bases", 3, "M = N for the unpruned PaBT net.")
flags.DEFINE_integer("steps", 20, "Timed training steps per configuration.")
flags.DEFINE_integer("warmup", 3, "Untimed steps per configuration (tracing, allocation).")
flags.DEFINE_boolean("latent_weights", True,
                     "PaBT bases with latent kernels (else latent-weight-free ±1 kernels).")
flags.DEFINE_boolean("memory", True, "Measure peak memory (one subprocess per config).")
flags.DEFINE_boolean("time", True, "Measure step times (interleaved, in this process).")
flags.DEFINE_integer("threads", 0, "intra-op threads (0 = TensorFlow's default).")
flags.DEFINE_enum("step", "fit", ["fit", "custom"], "`fit`'s training step (PaBTModel's, "
                  "importance update included) or a bare GradientTape step.")
flags.DEFINE_string("json", None, "Also write the results as JSON to this path.")
flags.DEFINE_string("_memory_config", None, "Internal: measure one config in this process.")

CONFIGS = ("bnn", "pabt", "pabt_pruned", "pabt_static")


def build_model(kind: str, size: int, channels: int, layers: int, bases: int,
                latent_weights: bool) -> tf.keras.Model:
    """Float stem → `layers` × (binary 3×3 conv, BatchNorm) → pooling → dense."""
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((size, size, 3))
    x = tf.keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)(inputs)
    x = tf.keras.layers.BatchNormalization()(x)
    for i in range(layers):
        if kind == "bnn":
            conv = lq.layers.QuantConv2D(
                channels, 3, padding="same", pad_values=1.0, use_bias=False,
                input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                kernel_constraint="weight_clip",
            )
        else:
            conv = pabt.PaBTConv2D(
                channels, 3, padding="same", weight_bases=bases, activation_bases=bases,
                latent_weights=latent_weights,
            )
        x = conv(x)
        x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(10)(x)
    model = (tf.keras.Model if kind == "bnn" else pabt.PaBTModel)(inputs, outputs, name=kind)
    if kind in ("pabt_pruned", "pabt_static"):
        for i, layer in enumerate(pabt.pabt_layers(model)):
            mask = np.zeros((bases, bases), bool)
            mask[i % bases, (i + 1) % bases] = True  # one binary convolution per layer
            layer.set_binary_conv_mask(mask)
            if kind == "pabt_static":
                # The same pruned layer with its active activation base fixed when the
                # step is traced, instead of chosen at run time by `tf.switch_case`
                # (whose gradient materialises zeros for the untaken branches'
                # intermediates): what that choice costs. A measurement device only:
                # the layer would be wrong if its mask changed.
                n = (i + 1) % bases
                layer._sum_active = lambda branch, base_active, n=n: branch(n)
    return model


def make_step(model: tf.keras.Model, x_y: tuple[tf.Tensor, tf.Tensor]):
    """A compiled training step on the batch `x_y` (forward, loss, backward, Adam update);
    call it with no arguments.

    `--step=fit`: `fit`'s own step (`model.make_train_function()`: for PaBT,
    `PaBTModel.train_step` with its importance update and non-finite check);
    `--step=custom`: a bare `tf.function` step of the layers alone."""
    optimizer = tf.keras.optimizers.legacy.Adam(1e-3)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if FLAGS.step == "fit":
        model.compile(optimizer, loss_fn)
        train_function = model.make_train_function()
        batches = iter(tf.data.Dataset.from_tensors(x_y).repeat())
        return lambda: train_function(batches)["loss"]

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return lambda: step(*x_y)


def data(size: int, batch: int):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, size, size, 3)).astype(np.float32))
    y = tf.constant(rng.integers(0, 10, batch))
    return x, y


def time_interleaved(size: int) -> dict[str, np.ndarray]:
    """Step times (s) per config, `steps` rounds of one step of each config in turn."""
    steps, x_y = {}, data(size, FLAGS.batch)
    for kind in CONFIGS:
        model = build_model(kind, size, FLAGS.channels, FLAGS.layers, FLAGS.bases,
                            FLAGS.latent_weights)
        steps[kind] = make_step(model, x_y)
        for _ in range(FLAGS.warmup):
            steps[kind]().numpy()
    times = {kind: [] for kind in CONFIGS}
    for i in range(FLAGS.steps):
        order = CONFIGS[i % len(CONFIGS):] + CONFIGS[: i % len(CONFIGS)]
        for kind in order:
            start = time.perf_counter()
            steps[kind]().numpy()
            times[kind].append(time.perf_counter() - start)
    return {kind: np.asarray(t) for kind, t in times.items()}


def measure_memory_here(kind: str, size: int) -> dict[str, int]:
    """Peak memory of training steps, in this (fresh) process.

    `tensor_peak`: the peak of TensorFlow's CPU allocator during steady-state steps
    (`tf.config.experimental.get_memory_info`; weights, optimizer slots, activations
    kept for the backward pass, oneDNN scratchpads). `rss_peak`: the process's peak
    resident set (`VmHWM`), which also counts TensorFlow itself and the graphs.
    """
    model = build_model(kind, size, FLAGS.channels, FLAGS.layers, FLAGS.bases,
                        FLAGS.latent_weights)
    step = make_step(model, data(size, FLAGS.batch))
    for _ in range(max(FLAGS.warmup, 2)):  # trace, optimise, create optimizer slots
        step().numpy()
    tf.config.experimental.reset_memory_stats("CPU:0")
    for _ in range(3):
        step().numpy()
    info = tf.config.experimental.get_memory_info("CPU:0")
    return {"tensor_peak": int(info["peak"]), "rss_peak": _peak_rss_bytes()}


def _peak_rss_bytes() -> int:
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over `execve`, so a
    # subprocess of a big parent would report the parent's peak.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure_memory(kind: str, size: int) -> dict[str, int]:
    """Run `measure_memory_here` in a fresh interpreter (its own peak RSS)."""
    args = [sys.executable, "-m", "experiments.bench_layers", f"--_memory_config={kind}:{size}",
            f"--batch={FLAGS.batch}", f"--channels={FLAGS.channels}",
            f"--layers={FLAGS.layers}", f"--bases={FLAGS.bases}",
            f"--latent_weights={FLAGS.latent_weights}", f"--warmup={FLAGS.warmup}",
            f"--threads={FLAGS.threads}", f"--step={FLAGS.step}"]
    out = subprocess.run(args, check=True, capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return json.loads(out.stdout.strip().splitlines()[-1])


def report_times(size: int) -> dict:
    t = time_interleaved(size)
    med = {kind: float(np.median(v)) for kind, v in t.items()}
    row = {
        "bnn_ms": 1e3 * med["bnn"],
        "pabt_ms": 1e3 * med["pabt"],
        "pruned_ms": 1e3 * med["pabt_pruned"],
        # Median of the per-round ratios: each round times the configs back to back,
        # so load that drifts over the run cancels.
        "time_ratio": float(np.median(t["pabt"] / t["bnn"])),
        "pruned_time_ratio": float(np.median(t["pabt_pruned"] / t["bnn"])),
        "static_ms": 1e3 * med["pabt_static"],
        "static_time_ratio": float(np.median(t["pabt_static"] / t["bnn"])),
        # What the run-time choice of the active base costs in the pruned state.
        "pruned_over_static": float(np.median(t["pabt_pruned"] / t["pabt_static"])),
        "time_ratio_of_medians": med["pabt"] / med["bnn"],
        "pruned_time_ratio_of_medians": med["pabt_pruned"] / med["bnn"],
        # Least-disturbed steps: a second view when other processes load the machine.
        "time_ratio_of_minima": float(t["pabt"].min() / t["bnn"].min()),
        "pruned_time_ratio_of_minima": float(t["pabt_pruned"].min() / t["bnn"].min()),
    }
    print(f"{size}x{size}: median step BNN {row['bnn_ms']:.1f} ms, PaBT M=N={FLAGS.bases} "
          f"{row['pabt_ms']:.1f} ms, pruned to 1 conv {row['pruned_ms']:.1f} ms", flush=True)
    print(f"{size}x{size}: step-time ratio PaBT/BNN {row['time_ratio']:.2f}x (target <= 2.5x) "
          f"| pruned/BNN {row['pruned_time_ratio']:.2f}x (target <= 1.05x)   "
          f"[ratio of medians {row['time_ratio_of_medians']:.2f}x, "
          f"{row['pruned_time_ratio_of_medians']:.2f}x; of minima "
          f"{row['time_ratio_of_minima']:.2f}x, {row['pruned_time_ratio_of_minima']:.2f}x]",
          flush=True)
    print(f"{size}x{size}: pruned, active base fixed when traced {row['static_time_ratio']:.2f}x"
          f" BNN; chosen at run time / fixed: {row['pruned_over_static']:.3f}x "
          f"(the cost of tf.switch_case in the pruned state)", flush=True)
    return row


def report_memory(size: int) -> dict:
    mem = {kind: measure_memory(kind, size) for kind in CONFIGS}
    row = {}
    for key in ("tensor_peak", "rss_peak"):
        base = mem["bnn"][key] or float("nan")  # tiny nets: the allocator may record 0
        row[f"{key}_ratio"] = mem["pabt"][key] / base
        row[f"pruned_{key}_ratio"] = mem["pabt_pruned"][key] / base
    row["memory_mib"] = {k: {q: v / 2**20 for q, v in m.items()} for k, m in mem.items()}
    print(f"{size}x{size}: peak tensor memory BNN {mem['bnn']['tensor_peak'] / 2**20:.0f} MiB | "
          f"PaBT {row['tensor_peak_ratio']:.2f}x | pruned {row['pruned_tensor_peak_ratio']:.2f}x;"
          f"  peak RSS BNN {mem['bnn']['rss_peak'] / 2**20:.0f} MiB | PaBT "
          f"{row['rss_peak_ratio']:.2f}x | pruned {row['pruned_rss_peak_ratio']:.2f}x",
          flush=True)
    return row


def main(argv):
    del argv
    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    if FLAGS._memory_config:
        kind, size = FLAGS._memory_config.split(":")
        print(json.dumps(measure_memory_here(kind, int(size))))
        return
    print(f"{FLAGS.layers} binary 3x3 layers, {FLAGS.channels} channels, batch {FLAGS.batch}, "
          f"PaBT M=N={FLAGS.bases} (latent_weights={FLAGS.latent_weights}); "
          f"{FLAGS.steps} interleaved rounds")
    results = {}
    for size in map(int, FLAGS.sizes):
        row = {}
        if FLAGS.time:
            row.update(report_times(size))
        if FLAGS.memory:
            row.update(report_memory(size))
        results[size] = row
    if FLAGS.json:
        write_atomically(FLAGS.json, json.dumps(results, indent=2).encode())


if __name__ == "__main__":
    app.run(main)
