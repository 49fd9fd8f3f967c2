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
(`pabt_tf.export.k_sweep`), and times each against k = 1 (`converters.sweep`): what a
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
import dataclasses
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from pabt_tf.cli.common import EXIT_OK, CliError, check_count, read_flatbuffer, run_cli

__all__ = [
    "Latency",
    "host_latencies",
    "paired_ratio",
    "format_latency_table",
    "parse_benchmark_output",
    "device_commands",
    "run_device_benchmark",
    "main",
]

KERNELS = ("indirect_bgemm", "default")
DEVICE_BINARY_NAME = "lce_benchmark_model"


# --------------------------------------------------------------------------------------
# Host latency (LCE's Python interpreter)
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Latency:
    """Latency of one flatbuffer under one interpreter setting.

    # Attributes
        label: which model (e.g. "model", "float", "larq").
        kernels: "indirect_bgemm", "default" (LCE's default bconv kernels) or "xnnpack".
        threads: interpreter threads.
        median_ms, min_ms: over all timed single-sample runs.
        runs: number of timed runs.
        round_ms: median of each interleaving round (for paired ratios).
    """

    label: str
    kernels: str
    threads: int
    median_ms: float
    min_ms: float
    runs: int
    round_ms: list = dataclasses.field(default_factory=list, repr=False)


def paired_ratio(a: Latency, b: Latency) -> float:
    """Median over interleaving rounds of `a`'s round median / `b`'s: robust to load
    that comes and goes during the run (both were timed in the same rounds)."""
    if len(a.round_ms) != len(b.round_ms) or not a.round_ms:
        return a.median_ms / b.median_ms
    return statistics.median(x / y for x, y in zip(a.round_ms, b.round_ms))


def _interpreter(flatbuffer: bytes, threads: int, kernels: str):
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    if kernels not in KERNELS + ("xnnpack",):
        raise ValueError(f"`kernels` must be one of {KERNELS + ('xnnpack',)}, got {kernels!r}.")
    return Interpreter(
        bytes(flatbuffer),
        num_threads=threads,
        use_indirect_bgemm=kernels == "indirect_bgemm",
        use_xnnpack=kernels == "xnnpack",
    )


def host_latencies(
    flatbuffers: dict[str, bytes],
    threads: tuple[int, ...] = (1,),
    kernels: tuple[str, ...] = KERNELS,
    rounds: int = 5,
    repeats: int = 3,
    warmup: int = 2,
    seed: int = 0,
    kernel_overrides: dict[str, str] | None = None,
) -> list[Latency]:
    """Median single-sample latency of each flatbuffer, interleaved.

    For each thread count and kernel setting, every flatbuffer runs `repeats` timed
    single-sample inferences per round, round after round, so load from other processes
    spreads over all candidates alike; the median is over all `rounds · repeats` runs.

    # Arguments
        flatbuffers: `{label: flatbuffer}`; all must take the same input shape.
        threads: thread counts to measure.
        kernels: interpreter settings ("indirect_bgemm", "default", "xnnpack").
        rounds, repeats, warmup: timing schedule.
        kernel_overrides: `{label: kernels}` for models that always run with one setting
            (e.g. a float model with "xnnpack"), timed in every group.

    # Returns
        One `Latency` per (label, kernels, threads).

    # Raises
        ValueError: on an empty dict, bad counts, mismatched input shapes, or a flatbuffer
            that is not well-formed (`MalformedFlatbufferError`, before any interpreter
            sees it).
    """
    from pabt_tf.flatbuffer_guard import check_flatbuffer

    if not flatbuffers:
        raise ValueError("`flatbuffers` must not be empty.")
    for label, fb in flatbuffers.items():
        check_flatbuffer(fb, f"flatbuffer {label!r}")
    for name, value in (("rounds", rounds), ("repeats", repeats)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    for t in threads:
        if not isinstance(t, int) or t < 1:
            raise ValueError(f"`threads` must hold positive integers, got {threads!r}.")
    rng = np.random.default_rng(seed)
    results = []
    for n_threads in threads:
        for kernel in kernels:
            overrides = kernel_overrides or {}
            interpreters = {
                label: _interpreter(fb, n_threads, overrides.get(label, kernel))
                for label, fb in flatbuffers.items()
            }
            shapes = {label: tuple(it.input_shapes[0]) for label, it in interpreters.items()}
            if len(set(shapes.values())) != 1:
                raise ValueError(f"flatbuffers take different input shapes: {shapes}.")
            x = rng.standard_normal(next(iter(shapes.values()))).astype(np.float32)
            times: dict[str, list[float]] = {label: [] for label in interpreters}
            per_round: dict[str, list[float]] = {label: [] for label in interpreters}
            for it in interpreters.values():
                for _ in range(warmup):
                    it.interpreter.predict([x])
            order = list(interpreters)
            for r in range(rounds):
                shift = r % len(order)  # rotate who goes first
                for label in order[shift:] + order[:shift]:
                    it = interpreters[label]
                    ts = []
                    for _ in range(repeats):
                        start = time.perf_counter()
                        it.interpreter.predict([x])
                        ts.append(1000.0 * (time.perf_counter() - start))
                    times[label] += ts
                    per_round[label].append(statistics.median(ts))
            for label, ts in times.items():
                used = (kernel_overrides or {}).get(label, kernel)
                results.append(
                    Latency(label, used, n_threads, statistics.median(ts), min(ts), len(ts),
                            per_round[label])
                )  # fmt: skip
    return results


def format_latency_table(results: list[Latency], baseline_float="float", baseline_larq="larq") -> str:
    """A table of latencies with ratios to the float and Larq twins measured with the same
    threads and interpreter setting (in the same interleaved group; `paired_ratio`)."""
    by_key = {(r.label, r.kernels, r.threads): r for r in results}
    lines = [
        f"{'model':<12} {'kernels':<15} {'threads':>7} {'median ms':>10} {'min ms':>8}"
        f" {'float/this':>11} {'this/larq':>10}"
    ]
    for r in results:
        flt = by_key.get((baseline_float, r.kernels, r.threads))
        lq_ = by_key.get((baseline_larq, r.kernels, r.threads))
        f_ratio = f"{paired_ratio(flt, r):.2f}x" if flt and r.label != baseline_float else ""
        l_ratio = (
            f"{paired_ratio(r, lq_):.3f}"
            if lq_ and r.label not in (baseline_larq, baseline_float)
            else ""
        )
        lines.append(
            f"{r.label:<12} {r.kernels:<15} {r.threads:>7} {r.median_ms:>10.2f} {r.min_ms:>8.2f}"
            f" {f_ratio:>11} {l_ratio:>10}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# lce_benchmark_model on a board
# --------------------------------------------------------------------------------------

_NUMBER = r"([0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"


def parse_benchmark_output(text: str) -> dict:
    """Parse the timing output of `lce_benchmark_model` / TFLite's `benchmark_model`.

    Understands the summary line of current versions
    (`Inference timings in us: Init: …, First inference: …, Warmup (avg): …,
    Inference (avg): …`), the older one (`Average inference timings in us: Warmup: …,
    Init: …, Inference: …`), the per-run statistics lines (`count=… first=… curr=…
    min=… max=… avg=… std=…`, the last one being the timed runs) and the memory line.

    # Returns
        A dict with `avg_us` (always) and, when present, `init_us`, `first_us`,
        `warmup_avg_us`, `count`, `min_us`, `max_us`, `std_us`, `median_us`,
        `memory_init_mb`, `memory_overall_mb`.

    # Raises
        ValueError: if the text holds no inference timing.
    """
    result: dict = {}
    new = re.search(
        r"Inference timings in us:\s*Init:\s*" + _NUMBER + r",\s*First inference:\s*" + _NUMBER
        + r",\s*Warmup \(avg\):\s*" + _NUMBER + r",\s*Inference \(avg\):\s*" + _NUMBER,
        text,
    )  # fmt: skip
    old = re.search(
        r"Average inference timings in us:\s*Warmup:\s*" + _NUMBER + r",\s*Init:\s*" + _NUMBER
        + r",\s*(?:Inference|no stats):\s*" + _NUMBER,
        text,
    )  # fmt: skip
    if new:
        init, first, warm, avg = (float(g) for g in new.groups())
        result.update(init_us=init, first_us=first, warmup_avg_us=warm, avg_us=avg)
    elif old:
        warm, init, avg = (float(g) for g in old.groups())
        result.update(init_us=init, warmup_avg_us=warm, avg_us=avg)
    stats = re.findall(r"count=(\d+)((?:\s+\w+=" + _NUMBER + r")+)", text)
    if stats:
        count, fields = stats[-1][0], stats[-1][1]
        values = dict((k, float(v)) for k, v in re.findall(r"(\w+)=" + _NUMBER, fields))
        result["count"] = int(count)
        for key in ("min", "max", "std", "median"):
            if key in values:
                result[f"{key}_us"] = values[key]
        if "avg_us" not in result and "avg" in values:
            result["avg_us"] = values["avg"]
    memory = re.search(
        r"(?:Peak memory footprint|Memory footprint delta)[^:]*\(MB\):\s*init=" + _NUMBER
        + r"\s+overall=" + _NUMBER,
        text,
    )  # fmt: skip
    if memory:
        result["memory_init_mb"], result["memory_overall_mb"] = map(float, memory.groups())
    if "avg_us" not in result:
        raise ValueError(
            "no inference timing found in the benchmark output (expected a line like "
            "'Inference timings in us: ... Inference (avg): N'):\n" + text[-2000:]
        )
    return result


def device_commands(
    device: str,
    flatbuffer_paths: list[str],
    benchmark_binary: str,
    threads: tuple[int, ...] = (1,),
    host: str | None = None,
    remote_dir: str | None = None,
    serial: str | None = None,
    extra_args: tuple[str, ...] = (),
) -> tuple[list[list[str]], list[tuple[str, int, list[str]]]]:
    """The exact commands that copy and run `lce_benchmark_model` on a board.

    # Arguments
        device: "adb" (Android, files go to /data/local/tmp) or "ssh" (Raspberry Pi or
            any ARM Linux board; files go to /tmp/pabt_benchmark).
        flatbuffer_paths: local .tflite files to benchmark.
        benchmark_binary: local path of the `lce_benchmark_model` built for the board.
        threads: `--num_threads` values.
        host: ssh destination (`user@host`), required for "ssh".
        remote_dir: override the remote directory.
        serial: adb device serial (`adb -s SERIAL`).
        extra_args: more `lce_benchmark_model` flags (e.g. `--num_runs=100`).

    # Returns
        `(setup, runs)`: setup commands (argv lists) to run first, then one
        `(flatbuffer path, threads, argv)` per benchmark run.

    # Raises
        ValueError: unknown device, missing host for ssh, no flatbuffers.
    """
    if device not in ("adb", "ssh"):
        raise ValueError(f"`device` must be 'adb' or 'ssh', got {device!r}.")
    if not flatbuffer_paths:
        raise ValueError("`flatbuffer_paths` must not be empty.")
    remote_binary_name = DEVICE_BINARY_NAME
    setup: list[list[str]] = []
    runs: list[tuple[str, int, list[str]]] = []
    if device == "adb":
        remote = remote_dir or "/data/local/tmp"
        adb = ["adb"] + (["-s", serial] if serial else [])
        binary = f"{remote}/{remote_binary_name}"
        setup.append(adb + ["push", benchmark_binary, binary])
        setup.append(adb + ["shell", "chmod", "+x", binary])
        for path in flatbuffer_paths:
            setup.append(adb + ["push", path, f"{remote}/{os.path.basename(path)}"])
        for path in flatbuffer_paths:
            for t in threads:
                graph = f"{remote}/{os.path.basename(path)}"
                cmd = [binary, f"--graph={graph}", f"--num_threads={t}", *extra_args]
                runs.append((path, t, adb + ["shell", shlex.join(cmd)]))
    else:
        if not host:
            raise ValueError("`host` (user@host) is required with device='ssh'.")
        remote = remote_dir or "/tmp/pabt_benchmark"
        binary = f"{remote}/{remote_binary_name}"
        setup.append(["ssh", host, shlex.join(["mkdir", "-p", remote])])
        setup.append(["scp", benchmark_binary, f"{host}:{binary}"])
        setup.append(["ssh", host, shlex.join(["chmod", "+x", binary])])
        setup.append(["scp", *flatbuffer_paths, f"{host}:{remote}/"])
        for path in flatbuffer_paths:
            for t in threads:
                graph = f"{remote}/{os.path.basename(path)}"
                cmd = [binary, f"--graph={graph}", f"--num_threads={t}", *extra_args]
                runs.append((path, t, ["ssh", host, shlex.join(cmd)]))
    return setup, runs


def check_device_tools(device: str, benchmark_binary: str | None) -> None:
    """Clear errors for a missing adb/ssh/scp or a missing benchmark binary.

    # Raises
        CliError
    """
    check_benchmark_binary(device, benchmark_binary)
    tools = ("adb",) if device == "adb" else ("ssh", "scp")
    for tool in tools:
        if shutil.which(tool) is None:
            hint = (
                "install Android platform-tools (e.g. `apt-get install adb`)"
                if tool == "adb"
                else "install an OpenSSH client (e.g. `apt-get install openssh-client`)"
            )
            raise CliError(f"`{tool}` is not on PATH: {hint}.")


def check_benchmark_binary(device: str, benchmark_binary: str | None) -> None:
    """`--benchmark-binary` is given and is a file.

    # Raises
        CliError
    """
    if not benchmark_binary:
        raise CliError(
            f"--device {device} needs --benchmark-binary PATH: the lce_benchmark_model built "
            "for the board (LCE's GitHub releases have Android arm64, aarch64 and aarch32 "
            "builds)."
        )
    if not os.path.isfile(benchmark_binary):
        raise CliError(f"--benchmark-binary {benchmark_binary!r} does not exist or is not a file.")


def run_device_benchmark(setup, runs, timeout: float = 600.0) -> list[tuple[str, int, dict]]:
    """Run the commands of `device_commands` and parse each run's output.

    # Raises
        CliError: a command fails (its output is shown) or prints no timing.
    """
    for cmd in setup:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise CliError(
                f"`{shlex.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
    results = []
    for path, threads, cmd in runs:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        text = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise CliError(f"`{shlex.join(cmd)}` failed (exit {proc.returncode}):\n{text}")
        try:
            results.append((path, threads, parse_benchmark_output(text)))
        except ValueError as err:
            raise CliError(f"`{shlex.join(cmd)}`: {err}") from err
    return results


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
        from converters.sweep import run_k_sweep  # merged into pabt_tf next

        return run_k_sweep(args)
    twins = build_twins(args, flatbuffer)
    if args.device:
        return run_device(args, flatbuffer, twins)
    return run_host(args, flatbuffer, twins)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `pabt-benchmark`; returns the exit code."""
    return run_cli(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
