r"""Deployment parity and speed of PaBT networks through LCE, in one run.

The network: 4 binary 3×3 convolutions with `--channels` channels on a
`--size`×`--size` input, BatchNorm before and after each (DESIGN.md §1.4 measured 128
channels, 56×56). Built three ways, all with randomised (trained-looking) BatchNorm
statistics, thresholds, scales and gates:

- **pabt**: `PaBTConv2D(M=N=3)` layers pruned to a BNN (one active binary convolution
  per layer, a different (m, n) in each), converted with `pabt_tf.convert`;
- **larq**: the same-shaped BNN written by hand in Larq (`QuantConv2D`, `ste_sign` input
  and kernel, `pad_values=1.0`), converted with LCE;
- **float**: the float TFLite model of the same architecture (`Conv2D`).

It prints and checks (issue #4):

1. pabt vs larq: the same operator list, flatbuffer size within 2 %, host latency ratio
   ≤ 1.05 (LCE interpreter, 1 thread, indirect-BGEMM kernels);
2. pabt vs float: ≥ 1.8× faster at 1 thread with indirect BGEMM (float with TFLite's
   default kernels; XNNPack is shown too, for honesty);
3. mixed networks (k = 1, 2, 4, 9 active binary convolutions per layer, all M·N = 9):
   latency grows with k, not with M·N.

Latencies are medians of single-sample runs, interleaved in rotating order round after
round; ratios are medians of per-round ratios (the machine may be shared).

    python -m experiments.bench_deploy
    python -m experiments.bench_deploy --channels=64 --size=32 --rounds=5   # quicker
"""

from __future__ import annotations

import json
import os
import platform
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pabt_tf as pabt  # noqa: E402  (Keras 2 before TensorFlow)
import larq as lq  # noqa: E402
import larq_compute_engine as lce  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from converters.benchmark import host_latencies, paired_ratio  # noqa: E402
from pabt_tf.export import convert_with_report, operator_list  # noqa: E402
from pabt_tf.layers import PaBTConv2D  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("channels", 128, "channels of the binary convolutions")
flags.DEFINE_integer("size", 56, "input height and width")
flags.DEFINE_integer("layers", 4, "binary 3x3 convolutions")
flags.DEFINE_list("mixed_active", ["1", "2", "4", "9"], "active binary convs per layer (M=N=3)")
flags.DEFINE_integer("rounds", 7, "interleaved rounds")
flags.DEFINE_integer("repeats", 3, "timed single-sample runs per model and round")
flags.DEFINE_integer("default_kernel_rounds", 2, "rounds for LCE's slow default kernels (0 skips)")
flags.DEFINE_integer("seed", 0, "random seed")
flags.DEFINE_string("out", None, "optional JSON file for the measurements")

L = tf.keras.layers


def _randomise_batchnorm(model, rng):
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([
                rng.uniform(0.5, 1.5, c), rng.normal(0, 0.3, c),
                rng.normal(0, 0.3, c), rng.uniform(0.5, 2.0, c),
            ])  # fmt: skip


def build_pabt(channels, size, layers, rng):
    inp = tf.keras.Input((size, size, channels))
    x = L.BatchNormalization()(inp)
    for i in range(layers):
        x = PaBTConv2D(channels, 3, padding="same", name=f"bconv{i}")(x)
        x = L.BatchNormalization()(x)
    model = tf.keras.Model(inp, x, name="pabt_net")
    _randomise_batchnorm(model, rng)
    for layer in pabt.pabt_layers(model):
        q = layer.input_quantizer
        q.thresholds.assign(np.sort(rng.normal(0, 0.4, q.thresholds.shape)).astype(np.float32))
        layer.scale.assign(rng.uniform(0.5, 1.5, layer.scale.shape).astype(np.float32))
        layer.gate.assign(rng.uniform(0.5, 1.5, layer.gate.shape).astype(np.float32))
    return model


def prune_to(model, k, rng):
    """Keep `k` active binary convolutions per layer, a random set per layer."""
    for layer in pabt.pabt_layers(model):
        mask = np.zeros(layer.weight_bases * layer.activation_bases, bool)
        mask[rng.choice(mask.size, k, replace=False)] = True
        layer.set_binary_conv_mask(mask.reshape(layer.weight_bases, layer.activation_bases))


def build_larq(channels, size, layers, rng):
    """The same-shaped BNN, by hand, the way Larq's docs write one."""
    inp = tf.keras.Input((size, size, channels))
    x = L.BatchNormalization()(inp)
    for i in range(layers):
        x = lq.layers.QuantConv2D(
            channels, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
            kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False,
            name=f"larq_bconv{i}",
        )(x)  # fmt: skip
        x = L.BatchNormalization()(x)
    model = tf.keras.Model(inp, x, name="larq_net")
    _randomise_batchnorm(model, rng)
    return model


def build_float(channels, size, layers, rng):
    inp = tf.keras.Input((size, size, channels))
    x = L.BatchNormalization()(inp)
    for i in range(layers):
        x = L.Conv2D(channels, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = L.BatchNormalization()(x)
    model = tf.keras.Model(inp, x, name="float_net")
    _randomise_batchnorm(model, rng)
    return model


def op_sequence(flatbuffer):
    return [op.name for op in operator_list(flatbuffer)]


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # absl would show TF's SavedModel INFO chatter
    tf.get_logger().setLevel("ERROR")
    rng = np.random.default_rng(FLAGS.seed)
    tf.keras.utils.set_random_seed(FLAGS.seed)
    c, s, n = FLAGS.channels, FLAGS.size, FLAGS.layers
    print(f"Network: BatchNorm + {n} x [binary 3x3 conv, {c} channels, 'same' + BatchNorm], "
          f"input {s}x{s}x{c}; host {platform.machine()}, LCE Python interpreter, 1 sample")

    pabt_model = build_pabt(c, s, n, rng)
    ks = [int(k) for k in FLAGS.mixed_active]
    flatbuffers, reports = {}, {}
    for k in sorted(set(ks) | {1}):
        prune_to(pabt_model, k, rng)
        report = convert_with_report(pabt_model)  # strict: every binary conv is an LceBconv2d
        label = "pabt" if k == 1 else f"mixed_k{k}"
        flatbuffers[label], reports[label] = report.flatbuffer, report
    flatbuffers["larq"] = lce.convert_keras_model(build_larq(c, s, n, rng))
    flatbuffers["float"] = lce.convert_keras_model(build_float(c, s, n, rng))
    flatbuffers["float_xnnpack"] = flatbuffers["float"]

    # -- parity -----------------------------------------------------------------------
    seq_pabt, seq_larq = op_sequence(flatbuffers["pabt"]), op_sequence(flatbuffers["larq"])
    size_pabt, size_larq = len(flatbuffers["pabt"]), len(flatbuffers["larq"])
    size_diff = abs(size_pabt - size_larq) / size_larq
    print("\nOperators (execution order):")
    for label in ("pabt", "larq", "float"):
        print(f"  {label:<6} {' '.join(op_sequence(flatbuffers[label]))}")
    print(f"Flatbuffer sizes: pabt {size_pabt} B, larq {size_larq} B "
          f"(diff {100 * size_diff:.2f} %), float {len(flatbuffers['float'])} B")

    # -- latency ----------------------------------------------------------------------
    # One interleaved group: every model with LCE's indirect-BGEMM kernels (the float
    # models have no bconv, the setting does not touch them), the float model also with
    # XNNPack.
    fast = host_latencies(
        flatbuffers, (1,), ("indirect_bgemm",), FLAGS.rounds, FLAGS.repeats, seed=FLAGS.seed,
        kernel_overrides={"float_xnnpack": "xnnpack"},
    )  # fmt: skip
    by = {r.label: r for r in fast}
    slow = []
    if FLAGS.default_kernel_rounds:  # LCE's default x86 bconv kernels, for reference
        slow = host_latencies(
            {k: flatbuffers[k] for k in ("pabt", "larq", "float")}, (1,), ("default",),
            FLAGS.default_kernel_rounds, 2, seed=FLAGS.seed,
        )  # fmt: skip
    print("\nHost latency, 1 thread (median ms of interleaved single-sample runs):")
    print(f"  {'model':<14} {'kernels':<15} {'median':>8} {'min':>8} {'LceBconv2d':>11}")
    for r in fast + slow:
        bconvs = sum(op.is_binary_conv for op in operator_list(flatbuffers[r.label]))
        print(f"  {r.label:<14} {r.kernels:<15} {r.median_ms:>8.2f} {r.min_ms:>8.2f} {bconvs:>11}")

    ratio_larq = paired_ratio(by["pabt"], by["larq"])
    speedup_float = paired_ratio(by["float"], by["pabt"])
    speedup_xnn = paired_ratio(by["float_xnnpack"], by["pabt"])
    mixed = [(k, by["pabt" if k == 1 else f"mixed_k{k}"]) for k in sorted(set(ks) | {1})]
    print("\nMixed networks (M = N = 3, k active binary convs per layer), indirect BGEMM:")
    print(f"  {'k':>3} {'LceBconv2d':>11} {'median ms':>10} {'vs k=1':>8} {'vs larq BNN':>12}")
    for k, r in mixed:
        print(f"  {k:>3} {reports['pabt' if k == 1 else f'mixed_k{k}'].found_bconvs:>11} "
              f"{r.median_ms:>10.2f} {paired_ratio(r, by['pabt']):>7.2f}x "
              f"{paired_ratio(r, by['larq']):>11.2f}x")
    grows = all(paired_ratio(b, a) > 1.0 for (_, a), (_, b) in zip(mixed, mixed[1:]))

    checks = {
        "same operator list as the hand-built Larq BNN": seq_pabt == seq_larq,
        "flatbuffer size within 2 % of the Larq BNN": size_diff <= 0.02,
        "latency / Larq BNN <= 1.05 (indirect BGEMM, 1 thread)": ratio_larq <= 1.05,
        "float TFLite / pabt >= 1.8 (indirect BGEMM, 1 thread)": speedup_float >= 1.8,
        "mixed latency grows with active binary convs": grows,
    }
    print("\nChecks:")
    print(f"  pabt / larq latency {ratio_larq:.3f}; float / pabt {speedup_float:.2f}x "
          f"(float with XNNPack / pabt {speedup_xnn:.2f}x)")
    for name, ok in checks.items():
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}")
    if FLAGS.out:
        record = {
            "config": {"channels": c, "size": s, "layers": n, "rounds": FLAGS.rounds,
                       "repeats": FLAGS.repeats, "machine": platform.machine()},
            "latency_ms": [dict(label=r.label, kernels=r.kernels, threads=r.threads,
                                median=r.median_ms, min=r.min_ms, runs=r.runs)
                           for r in fast + slow],
            "sizes": {k: len(v) for k, v in flatbuffers.items()},
            "ratios": {"pabt_over_larq": ratio_larq, "float_over_pabt": speedup_float,
                       "float_xnnpack_over_pabt": speedup_xnn},
            "checks": checks,
        }  # fmt: skip
        with open(FLAGS.out, "w") as f:
            json.dump(record, f, indent=2)
        print(f"Wrote {FLAGS.out}")
    return 0 if all(checks.values()) else 1


def run():
    app.run(main)


if __name__ == "__main__":
    sys.exit(run())
