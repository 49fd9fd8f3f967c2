r"""Deployment parity and speed of PaBT networks through LCE, in one run.

The network: 4 binary 3×3 convolutions with `--channels` channels on a
`--size`×`--size` input, BatchNorm before and after each (DESIGN.md §1.4 measured 128
channels, 56×56). Built three ways, all with randomised (trained-looking) BatchNorm
statistics, thresholds, scales and gates:

- **pabt**: `PaBTConv2D(M=N=3)` layers, converted with `pabt_tf.convert`;
- **larq**: the same-shaped BNN written by hand in Larq (`QuantConv2D`, `ste_sign` input
  and kernel, `pad_values=1.0`), converted with LCE;
- **float**: the float TFLite model of the same architecture (`Conv2D`).

It prints and checks (issues #4 and #10):

1. the BNN path: pabt pruned to one active binary convolution per layer vs larq: the same
   operator list, flatbuffer size within 0.1 %, host latency ratio ≤ 1.02 (LCE
   interpreter, indirect-BGEMM kernels, every thread count);
2. pabt (BNN) vs float: ≥ 1.8× faster at 1 thread with indirect BGEMM (float with
   TFLite's default kernels; XNNPack is shown too, for honesty);
3. the k-sweep (`pabt_tf.export.k_sweep`): every layer with k = 1..9 active binary
   convolutions in three mask patterns (same activation base, same weight base, spread),
   with the fused export (`strip_pabt(fused=True)`) and the unfused one (the default): the
   latency relative to k = 1, fused / unfused, and the flatbuffer sizes. Goals: ≤ 1.0·k×
   the BNN for every k and pattern, ≤ 0.9·k× where two active convolutions share an
   activation base.

Latencies are medians of single-sample runs, interleaved in rotating order round after
round (`pabt_tf.export.latency.host_latencies`, indirect-BGEMM kernels); ratios are medians
of per-round ratios (the machine may be shared). The load average is printed with them.

    python -m experiments.bench_deploy
    python -m experiments.bench_deploy --channels=64 --size=32 --rounds=7   # quicker
"""

from __future__ import annotations

import json
import os
import platform
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pabt_tf as pabt  # noqa: E402  (Keras 2 before TensorFlow)

# isort: split
import larq as lq  # noqa: E402
import larq_compute_engine as lce  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from pabt_tf._atomic import write_atomically  # noqa: E402
from pabt_tf.export import PATTERNS, k_sweep, operator_list  # noqa: E402
from pabt_tf.export.latency import host_latencies, load_text, paired_ratio  # noqa: E402
from pabt_tf.export.sweep import format_sweep, time_sweep  # noqa: E402
from pabt_tf.layers import PaBTConv2D  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("channels", 128, "channels of the binary convolutions")
flags.DEFINE_integer("size", 56, "input height and width")
flags.DEFINE_integer("layers", 4, "binary 3x3 convolutions")
flags.DEFINE_list("ks", [str(k) for k in range(1, 10)], "active binary convs per layer (M=N=3)")
flags.DEFINE_list("patterns", list(PATTERNS), "mask patterns of the k-sweep")
flags.DEFINE_list("threads", ["1", "2"], "interpreter threads")
flags.DEFINE_bool("unfused", True, "also time the unfused export (the default, fused=False)")
flags.DEFINE_integer("rounds", 15, "interleaved rounds per timing group")
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
    threads = tuple(int(t) for t in FLAGS.threads)
    print(f"Network: BatchNorm + {n} x [binary 3x3 conv, {c} channels, 'same' + BatchNorm], "
          f"input {s}x{s}x{c}; host {platform.machine()}, LCE Python interpreter, 1 sample")

    pabt_model = build_pabt(c, s, n, rng)
    ks = sorted({int(k) for k in FLAGS.ks} | {1})
    fused_variants = (True, False) if FLAGS.unfused else (True,)
    points = k_sweep(pabt_model, ks, FLAGS.patterns, fused=fused_variants)  # strict checks
    # pabt.convert's default export of the BNN (fused or not: the same graph at k = 1).
    bnn = next(p for p in sorted(points, key=lambda p: p.fused) if p.k == 1)
    flatbuffers = {
        "pabt": bnn.flatbuffer,
        "larq": lce.convert_keras_model(build_larq(c, s, n, rng)),
        "float": lce.convert_keras_model(build_float(c, s, n, rng)),
    }
    flatbuffers["float_xnnpack"] = flatbuffers["float"]

    # -- parity of the BNN path ---------------------------------------------------------
    seq_pabt, seq_larq = op_sequence(bnn.flatbuffer), op_sequence(flatbuffers["larq"])
    size_pabt, size_larq = bnn.size, len(flatbuffers["larq"])
    size_diff = abs(size_pabt - size_larq) / size_larq
    print("\nOperators (execution order):")
    for label in ("pabt", "larq", "float"):
        print(f"  {label:<6} {' '.join(op_sequence(flatbuffers[label]))}")
    print(f"Flatbuffer sizes: pabt {size_pabt} B, larq {size_larq} B "
          f"(diff {100 * size_diff:.3f} %), float {len(flatbuffers['float'])} B")

    # -- latency ------------------------------------------------------------------------
    # The BNN, the Larq BNN and the float model with LCE's indirect-BGEMM kernels (float
    # models have no bconv: the setting does not touch them), the float model also with
    # XNNPack: one interleaved group per thread count, 3x the rounds (cheap models).
    print(f"\nTiming: {FLAGS.rounds} rounds x {FLAGS.repeats} runs per group; "
          f"before: {load_text()}", flush=True)  # fmt: skip
    fast = host_latencies(
        flatbuffers, threads, ("indirect_bgemm",), 3 * FLAGS.rounds, FLAGS.repeats,
        seed=FLAGS.seed, kernel_overrides={"float_xnnpack": "xnnpack"},
    )  # fmt: skip
    by = {(r.label, r.threads): r for r in fast}
    slow = []
    if FLAGS.default_kernel_rounds:  # LCE's default x86 bconv kernels, for reference
        slow = host_latencies(
            {k: flatbuffers[k] for k in ("pabt", "larq", "float")}, (1,), ("default",),
            FLAGS.default_kernel_rounds, 2, seed=FLAGS.seed,
        )  # fmt: skip
    print(f"BNN parity timed; {load_text()}", flush=True)
    rows = time_sweep(points, threads, FLAGS.rounds, FLAGS.repeats, FLAGS.seed,
                      progress=lambda line: print(line, flush=True))  # fmt: skip
    load_after = load_text()
    print(f"after: {load_after}")
    print("\nHost latency (median ms of interleaved single-sample runs):")
    print(f"  {'model':<14} {'kernels':<15} {'threads':>7} {'median':>8} {'min':>8}")
    for r in fast + slow:
        label = "pabt (BNN)" if r.label == "pabt" else r.label
        print(f"  {label:<14} {r.kernels:<15} {r.threads:>7} {r.median_ms:>8.2f} {r.min_ms:>8.2f}")

    ratio_larq = {t: paired_ratio(by[("pabt", t)], by[("larq", t)]) for t in threads}
    speedup_float = paired_ratio(by[("float", threads[0])], by[("pabt", threads[0])])
    speedup_xnn = paired_ratio(by[("float_xnnpack", threads[0])], by[("pabt", threads[0])])
    print("\nk-sweep (M = N = 3, the same mask in every layer), latency relative to the k = 1 "
          "network (median of per-round ratios, each (k, mask) timed in its own interleaved "
          "group with k = 1), indirect BGEMM; fused = strip_pabt(fused=True), unfused = "
          "the default export; goal 0.9k where convs share an activation base:")
    print(format_sweep(rows))

    checks = {
        "BNN path: same operator list as the hand-built Larq BNN": seq_pabt == seq_larq,
        "BNN path: flatbuffer size within 0.1 % of the Larq BNN": size_diff <= 0.001,
        **{f"BNN path: latency / Larq BNN <= 1.02 ({t} thread(s))": ratio_larq[t] <= 1.02
           for t in threads},
        f"float TFLite / pabt >= 1.8 (indirect BGEMM, {threads[0]} thread(s))":
            speedup_float >= 1.8,
        **{f"k-sweep: fused k convs <= {'0.9' if share else '1.0'}·k x the BNN, {t} thread(s)":
           all(r["goal_met"] for r in rows if r["threads"] == t and r["shares_base"] == share)
           for t in threads for share in (False, True)},
    }  # fmt: skip
    print("\nChecks:")
    print("  pabt / larq latency " + ", ".join(f"{ratio_larq[t]:.3f} ({t} thr)" for t in threads)
          + f"; float / pabt {speedup_float:.2f}x (float with XNNPack / pabt {speedup_xnn:.2f}x)")
    for name, ok in checks.items():
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}")
    if FLAGS.out:
        record = {
            "config": {"channels": c, "size": s, "layers": n, "rounds": FLAGS.rounds,
                       "repeats": FLAGS.repeats, "threads": list(threads),
                       "machine": platform.machine(), "load_after": load_after},
            "latency_ms": [dict(label=r.label, kernels=r.kernels, threads=r.threads,
                                median=r.median_ms, min=r.min_ms, runs=r.runs)
                           for r in fast + slow],
            "sizes": {**{k: len(v) for k, v in flatbuffers.items()},
                      **{p.label: p.size for p in points}},
            "ratios": {"pabt_over_larq": ratio_larq, "float_over_pabt": speedup_float,
                       "float_xnnpack_over_pabt": speedup_xnn},
            "sweep": rows,
            "checks": checks,
        }  # fmt: skip
        write_atomically(FLAGS.out, json.dumps(record, indent=2).encode())
        print(f"Wrote {FLAGS.out}")
    return 0 if all(checks.values()) else 1


def run():
    app.run(main)


if __name__ == "__main__":
    sys.exit(run())
