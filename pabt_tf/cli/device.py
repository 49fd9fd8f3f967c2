"""`lce_benchmark_model` on a board: the commands that copy and run it (adb for Android,
ssh/scp for a Raspberry Pi or any ARM Linux board), running them, and parsing its timing
output. Used by `pabt-benchmark --device`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

from pabt_tf.cli.common import CliError

__all__ = [
    "DEVICE_BINARY_NAME",
    "parse_benchmark_output",
    "device_commands",
    "check_device_tools",
    "check_benchmark_binary",
    "run_device_benchmark",
]

DEVICE_BINARY_NAME = "lce_benchmark_model"

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
    """Run the commands of `device_commands` and parse each run's output (the parsed
    timings, and the whole text under `"output"`).

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
            parsed = parse_benchmark_output(text)
            parsed["output"] = text  # e.g. for an op profile (--enable_op_profiling=true)
            results.append((path, threads, parsed))
        except ValueError as err:
            raise CliError(f"`{shlex.join(cmd)}`: {err}") from err
    return results
