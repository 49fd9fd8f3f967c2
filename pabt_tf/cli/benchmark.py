"""`pabt-benchmark`: latency of an LCE flatbuffer on this host or on an ARM board.

Host (default):

    pabt-benchmark OUT.tflite [--threads 1 2] [--compare-float] [--compare-larq]

runs the flatbuffer in LCE's Python interpreter with both LCE's default binary kernels
and the indirect-BGEMM kernels (the fast ones on x86), and reports the median of
repeated single-sample runs. Baselines are measured in the same run, interleaved round by
round with the model (the machine may be shared): the *float twin* and the *Larq twin*
(`pabt_tf.cli.twins`) of the Keras model the flatbuffer came from, found with
`--keras-model PATH` or, by default, next to the flatbuffer as `<OUT>.keras`
(`pabt-convert model.keras model.tflite` leaves both side by side).

k-sweep (host):

    pabt-benchmark OUT.tflite --k-sweep 1 2 3 4 [--patterns same_activation spread]

converts that Keras model again with k active binary convolutions in every PaBT layer,
for each k and mask pattern, with the fused export and the unfused one
(`pabt_tf.export.k_sweep`), and times each against k = 1 (`pabt_tf.export.time_sweep`): what a
multi-bit deployment of the model would cost relative to its BNN.

Board:

    pabt-benchmark OUT.tflite --device adb --benchmark-binary ./lce_benchmark_model
    pabt-benchmark OUT.tflite --device ssh pi@raspberrypi --benchmark-binary ./lce_benchmark_model

copies the flatbuffer (and the twins, if asked) and a user-supplied `lce_benchmark_model`
(from LCE's GitHub releases: Android arm64, aarch64, aarch32) to the phone
(`adb push` to /data/local/tmp) or the board (`scp`), runs
`lce_benchmark_model --graph=... --num_threads=N`, and parses its timing output.
`--dry-run` prints the exact commands instead of running them.

The flatbuffer is checked before any interpreter sees it (`pabt_tf.flatbuffer_guard`:
structure, references, operator options and shapes) and then loaded once in a child
process, so a truncated or corrupted file exits 2 with the reason instead of crashing.
The Keras model for the baselines loads like in `pabt-convert` (no code it carries runs
without `--unsafe`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile

from pabt_tf.cli.common import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    CliError,
    check_count,
    read_flatbuffer,
    run_cli,
)
from pabt_tf.cli.device import (
    check_benchmark_binary,
    check_device_tools,
    device_commands,
    parse_benchmark_output,
    run_device_benchmark,
)
from pabt_tf.export.latency import (
    KERNELS,
    Latency,
    _interpreter,
    format_latency_table,
    host_latencies,
    load_text,
    paired_ratio,
)

# The timing and device functions used to live here; re-exported for code importing them
# from this module.
__all__ = [
    "Latency",
    "host_latencies",
    "paired_ratio",
    "format_latency_table",
    "parse_benchmark_output",
    "device_commands",
    "run_device_benchmark",
    "check_device_tools",
    "check_benchmark_binary",
    "build_parser",
    "main",
]


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pabt-benchmark",
        description="Latency of an LCE flatbuffer on this host (LCE's interpreter) or on "
        "an Android phone / ARM board (lce_benchmark_model), with float and Larq baselines.",
    )
    parser.add_argument("flatbuffer", help="the .tflite written by pabt-convert")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="thread counts")
    parser.add_argument(
        "--compare-float", action="store_true",
        help="also time the float TFLite model of the same architecture",
    )  # fmt: skip
    parser.add_argument(
        "--compare-larq", action="store_true",
        help="also time the hand-built Larq BNN of the same shapes",
    )  # fmt: skip
    parser.add_argument(
        "--keras-model",
        help="Keras model the flatbuffer came from, for the float/Larq twins "
        "(default: <flatbuffer without .tflite>.keras next to it)",
    )
    parser.add_argument(
        "--kernels", nargs="+", choices=KERNELS + ("xnnpack",), default=list(KERNELS),
        help="host interpreter settings for the binary models (default: both LCE kernels)",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (host)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per round (host)")
    parser.add_argument(
        "--device", nargs="+", metavar="DEVICE",
        help="run on a board: `--device adb` (Android) or `--device ssh user@host` (Raspberry Pi, ARM Linux)",
    )  # fmt: skip
    parser.add_argument("--benchmark-binary", help="local lce_benchmark_model for the board")
    parser.add_argument("--remote-dir", help="directory on the board (default per device)")
    parser.add_argument("--adb-serial", help="adb device serial (adb -s)")
    parser.add_argument(
        "--benchmark-args", default="",
        help="extra lce_benchmark_model flags, e.g. --benchmark-args='--num_runs=100 --warmup_runs=10'",
    )  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true", help="print the device commands, do not run them"
    )
    parser.add_argument(
        "--unsafe", action="store_true",
        help="load --keras-model even if its config carries Python code (Lambda layers), "
        "which loading runs; refused by default, as in pabt-convert",
    )  # fmt: skip
    parser.add_argument(
        "--k-sweep", type=int, nargs="+", metavar="K",
        help="instead of timing the flatbuffer: convert the Keras model it came from with K "
        "active binary convolutions in every PaBT layer (each K, each --patterns mask, fused "
        "and unfused export) and time each against K = 1 on this host (indirect BGEMM)",
    )  # fmt: skip
    parser.add_argument(
        "--latency-table", metavar="OUT.json",
        help="write the per-layer LCE latency table of the Keras model the flatbuffer came "
        "from (pabt_tf.LatencyTable, for PaBTPruningCallback(latency_budget_ms=...)): on "
        "this host, measured with twins of the model (pabt_tf.latency_table, first "
        "--threads value); with --device, from the op profile of the flatbuffer on the "
        "board (--enable_op_profiling=true is added); the flatbuffer must be "
        "pabt-convert's (unfused) export of that model",
    )  # fmt: skip
    parser.add_argument(
        "--patterns", nargs="+", default=["same_activation", "same_weight", "spread"],
        help="mask patterns of --k-sweep (pabt_tf.export.PATTERNS; default: all three)",
    )
    return parser


def _keras_model_path(args) -> str | None:
    if args.keras_model:
        if not os.path.exists(args.keras_model):
            raise CliError(f"--keras-model {args.keras_model!r} does not exist.")
        return args.keras_model
    stem = args.flatbuffer[: -len(".tflite")] if args.flatbuffer.endswith(".tflite") else args.flatbuffer
    candidate = stem + ".keras"
    return candidate if os.path.exists(candidate) else None


def build_twins(args, flatbuffer: bytes) -> dict[str, bytes]:
    """Float and/or Larq twin flatbuffers of the Keras model next to the flatbuffer."""
    if not (args.compare_float or args.compare_larq):
        return {}
    path = _keras_model_path(args)
    if path is None:
        raise CliError(
            "--compare-float/--compare-larq build the baselines from the Keras model the "
            f"flatbuffer came from; none found next to {args.flatbuffer!r} (expected "
            "<name>.keras). Pass --keras-model PATH."
        )
    import warnings

    import larq_compute_engine as lce

    from pabt_tf.cli.model_loading import load_keras_model
    from pabt_tf.cli.twins import binary_layer_count, float_twin, larq_twin

    model = load_keras_model(path, unsafe=args.unsafe)
    if binary_layer_count(model) == 0:
        raise CliError(f"Keras model {path!r} has no PaBT or Larq binary layers to compare.")
    interp_shape = tuple(_interpreter(flatbuffer, 1, "default").input_shapes[0][1:])
    model_shape = tuple(model.inputs[0].shape[1:])
    if interp_shape != model_shape:
        raise CliError(
            f"Keras model {path!r} takes inputs {model_shape}, the flatbuffer {interp_shape}: "
            "not the model it came from."
        )
    twins = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if args.compare_float:
            twins["float"] = lce.convert_keras_model(float_twin(model))
        if args.compare_larq:
            twins["larq"] = lce.convert_keras_model(larq_twin(model))
    print(f"Baselines built from {path}: {', '.join(twins)}")
    return twins


def run_host(args, flatbuffer: bytes, twins: dict[str, bytes]) -> int:
    # Float twins have no LceBconv2d, so the kernel setting does not change them; they
    # run in every group anyway, interleaved with the binary models.
    candidates = {"model": flatbuffer, **twins}
    results = host_latencies(
        candidates, tuple(args.threads), tuple(args.kernels), args.rounds, args.repeats
    )
    import platform

    print(f"Host latency ({platform.machine()}, LCE Python interpreter, single sample, "
          f"median of {args.rounds}x{args.repeats} interleaved runs):")
    print(format_latency_table(results))
    return EXIT_OK


def check_device_args(args) -> None:
    """`--device adb` or `--device ssh HOST`, a benchmark binary, and (unless `--dry-run`,
    which only prints commands) the tools that copy and run it.

    # Raises
        CliError
    """
    kind = args.device[0]
    if kind not in ("adb", "ssh") or len(args.device) != (1 if kind == "adb" else 2):
        raise CliError(f"--device must be `adb` or `ssh HOST`, got {' '.join(args.device)!r}.")
    if args.dry_run:
        check_benchmark_binary(kind, args.benchmark_binary)
    else:
        check_device_tools(kind, args.benchmark_binary)


def run_device(args, flatbuffer: bytes, twins: dict[str, bytes]) -> int:
    """Benchmark on the board; `check_device_args(args)` has passed."""
    device = args.device[0]
    host = args.device[1] if device == "ssh" else None
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.abspath(args.flatbuffer)]
        for label, fb in twins.items():
            path = os.path.join(tmp, f"{label}_twin.tflite")
            with open(path, "wb") as f:
                f.write(fb)
            paths.append(path)
        setup, runs = device_commands(
            device, paths, args.benchmark_binary, tuple(args.threads), host=host,
            remote_dir=args.remote_dir, serial=args.adb_serial,
            extra_args=tuple(shlex.split(args.benchmark_args)),
        )  # fmt: skip
        if args.dry_run:
            for cmd in setup + [cmd for _, _, cmd in runs]:
                print(shlex.join(cmd))
            return EXIT_OK
        results = run_device_benchmark(setup, runs)
    print(f"lce_benchmark_model on {device}{' ' + host if host else ''}:")
    print(f"{'model':<28} {'threads':>7} {'avg ms':>9} {'std ms':>8}")
    for path, threads, parsed in results:
        std = parsed.get("std_us")
        std_text = f"{std / 1000:.2f}" if std is not None else ""
        print(f"{os.path.basename(path):<28} {threads:>7} {parsed['avg_us'] / 1000:>9.2f} {std_text:>8}")
    return EXIT_OK


# Interpreter settings of each `--kernels` choice, for the crash probe.
_KERNEL_SETTINGS = {
    "default": {},
    "indirect_bgemm": {"use_indirect_bgemm": True},
    "xnnpack": {"use_xnnpack": True},
}


def _required_keras_model(args, what: str):
    """`(path, model)` of the Keras model the flatbuffer came from (`--keras-model`, or
    `<name>.keras` beside it); a `CliError` starting with `what` when there is none."""
    from pabt_tf.cli.model_loading import load_keras_model

    path = _keras_model_path(args)
    if path is None:
        raise CliError(
            f"{what} the Keras model the flatbuffer came from; none found next to "
            f"{args.flatbuffer!r} (expected <name>.keras). Pass --keras-model PATH."
        )
    return path, load_keras_model(path, unsafe=args.unsafe)


def run_k_sweep(args) -> int:
    """`--k-sweep`: the Keras model next to the flatbuffer, converted per k and mask
    pattern (fused and unfused) and timed against its k = 1 network on this host."""
    from pabt_tf.export import PATTERNS, ConversionError, format_sweep, k_sweep, time_sweep

    bad = [p for p in args.patterns if p not in PATTERNS]
    if bad:
        raise CliError(f"--patterns: unknown pattern(s) {bad}; choose from {list(PATTERNS)}.")
    path, model = _required_keras_model(args, "--k-sweep converts")
    ks = sorted(set(args.k_sweep) | {1})
    print(f"k-sweep of {path}: k = {ks}, patterns {args.patterns}; converting...", flush=True)
    try:
        points = k_sweep(model, ks, args.patterns)
    except ConversionError as err:
        raise CliError(f"--k-sweep: {err}", EXIT_CHECK_FAILED) from err
    except ValueError as err:  # no PaBT layers, a k outside 1..M·N, mixed (M, N)
        raise CliError(f"--k-sweep: {err}") from err
    print(f"Timing {args.rounds}x{args.repeats} interleaved runs per group; {load_text()}",
          flush=True)  # fmt: skip
    rows = time_sweep(points, args.threads, args.rounds, args.repeats)
    print("Latency relative to the k = 1 network (median of per-round ratios), LCE "
          "interpreter, indirect BGEMM; fused = pabt_tf.convert(fused=True), unfused = "
          "the default; goal 0.9k where convolutions share an activation base:")
    print(format_sweep(rows))
    print(f"after: {load_text()}")
    return EXIT_OK


def run_latency_table(args, flatbuffer: bytes) -> int:
    """`--latency-table OUT.json`: the table on this host or from the board's op profile."""
    from pabt_tf.cli.common import write_atomically
    from pabt_tf.export import latency_table, table_from_profile

    path, model = _required_keras_model(args, "--latency-table needs")
    threads = args.threads[0]
    shape = tuple(_interpreter(flatbuffer, 1, "default").input_shapes[0])
    try:
        if not args.device:
            print(f"Measuring the latency table of {path} on this host ({threads} thread(s))...",
                  flush=True)  # fmt: skip
            table = latency_table(model, threads=threads, input_shape=shape)
        else:
            kind = args.device[0]
            host = args.device[1] if kind == "ssh" else None
            setup, runs = device_commands(
                kind, [os.path.abspath(args.flatbuffer)], args.benchmark_binary, (threads,),
                host=host, remote_dir=args.remote_dir, serial=args.adb_serial,
                extra_args=(*shlex.split(args.benchmark_args), "--enable_op_profiling=true"),
            )  # fmt: skip
            if args.dry_run:
                for cmd in setup + [cmd for _, _, cmd in runs]:
                    print(shlex.join(cmd))
                return EXIT_OK
            ((_, _, parsed),) = run_device_benchmark(setup, runs)
            table = table_from_profile(model, flatbuffer, parsed["output"], threads=threads,
                                       device=" ".join(args.device))  # fmt: skip
    except ValueError as err:
        raise CliError(f"--latency-table: {err}") from err
    write_atomically(os.path.abspath(args.latency_table), (table.to_json() + "\n").encode())
    print(table)
    print(f"Wrote {args.latency_table}")
    return EXIT_OK


def run(args) -> int:
    check_count(args.threads, "--threads")
    check_count(args.rounds, "--rounds")
    check_count(args.repeats, "--repeats")
    if args.device:
        if args.k_sweep:
            raise CliError(
                "--k-sweep times on this host (LCE's Python interpreter); for a board, "
                "convert the variants with pabt_tf.export.k_sweep and benchmark each file."
            )
        check_device_args(args)
    if args.k_sweep:
        check_count(args.k_sweep, "--k-sweep")
    import pabt_tf  # noqa: F401

    # Checked, then loaded once in a child process with the settings this run uses: a
    # malformed file stops here with a message instead of crashing the interpreter below.
    kernels = ["default"] if args.device else args.kernels
    flatbuffer = read_flatbuffer(
        args.flatbuffer, "flatbuffer", probe_settings=[_KERNEL_SETTINGS[k] for k in kernels]
    )
    if args.k_sweep:
        return run_k_sweep(args)
    if args.latency_table:
        return run_latency_table(args, flatbuffer)
    twins = build_twins(args, flatbuffer)
    if args.device:
        return run_device(args, flatbuffer, twins)
    return run_host(args, flatbuffer, twins)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `pabt-benchmark`; returns the exit code."""
    return run_cli(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
