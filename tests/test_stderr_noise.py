"""No TensorFlow/absl C++ log line on the command-line programs' stderr, also under a
file-size limit (issue 20, item 5): fresh processes with `RLIMIT_FSIZE` set, stderr read
through a pipe (a limit cannot cut it)."""

import os
import re
import resource
import subprocess
import sys

import pytest
import tensorflow as tf

import pabt_tf as pabt
from pabt_tf._stderr import filtered_stderr, is_native_noise

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
# What a native log line looks like: absl (`I0000 00:00:17... 4056 devices.cc:67] `),
# TensorFlow's (`2026-12-02 14:37:13.012147: E external/...cc:51] `), absl's preface.
NATIVE_LINE = re.compile(
    r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]|^\d{4}-\d\d-\d\d [\d:.]+: [IWEF] \S+:\d+\]"
    r"|absl::InitializeLog|cuInit",
    re.M,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("quiet")
    inp = tf.keras.Input((8, 8, 3))
    x = pabt.PaBTConv2D(8, 3, padding="same", weight_bases=2, activation_bases=2)(inp)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(4)(tf.keras.layers.Flatten()(x)))
    model.save(root / "model.keras")
    (root / "model.tflite").write_bytes(pabt.convert(model))
    return {"root": root, "model": str(root / "model.keras"), "tflite": str(root / "model.tflite")}


def _limited(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _run(command: list, limit: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600, preexec_fn=_limited(limit))  # fmt: skip


@pytest.mark.parametrize(
    "program, limit",
    [("pabt-convert", 0), ("pabt-convert", 64 * 1024), ("-m converters.convert", 64 * 1024),
     ("pabt-benchmark", 0)],
)  # fmt: skip
def test_programs_print_no_native_log_line_under_a_file_size_limit(files, tmp_path, program, limit):
    if program.startswith("-m"):
        command = [sys.executable, *program.split()]
    else:
        command = [os.path.join(BIN, program)]
    if "benchmark" in program:
        command += [files["tflite"], "--rounds", "1", "--repeats", "1"]
    else:
        command += [files["model"], str(tmp_path / "out.tflite"), "--verify-samples", "2"]
    proc = _run(command, limit)
    assert not NATIVE_LINE.search(proc.stderr), proc.stderr
    if limit == 0 and "convert" in program:
        # Everything ran; only writing the flatbuffer failed, and the message says so.
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"error: could not write {tmp_path / 'out.tflite'}: File too large. Nothing was written."
        ]
        assert "verification PASSED" in proc.stdout
    else:
        assert proc.returncode == 0 and proc.stderr == "", (proc.returncode, proc.stderr)


def test_filter_drops_native_log_lines_and_keeps_the_rest_in_order(capfd):
    lines = [
        "I0000 00:00:1796222452.491340    6807 devices.cc:67] Number of eligible GPUs: 0\n",
        "kept 1\n",
        "2026-12-02 14:37:13.012147: E external/local_xla/xla/stream_executor/cuda/"
        "cuda_platform.cc:51] failed call to cuInit: INTERNAL: CUDA error\n",
        "W0000 00:00:1796222324.657969    5319 computation_placer.cc:177] already\n",
        "2026-12-02 14:37:13.012147: E tensorflow/core/some_kernel.cc:9] a real error\n",
        "kept 2 (no newline)",
    ]
    with filtered_stderr(is_native_noise):
        # Written by a child process straight to fd 2, as C++ code writes it.
        subprocess.run(["sh", "-c", 'printf "%s" "$0" >&2', "".join(lines)], check=True)
        os.write(2, b"from python\n")  # (pytest replaces sys.stderr; a program's writes fd 2)
    err = capfd.readouterr().err
    assert err == "kept 1\n" + lines[4] + "kept 2 (no newline)from python\n"
