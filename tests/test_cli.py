"""`pabt-convert` and `pabt-benchmark`: error paths, the happy path end to end on a small
trained model, and the board benchmark's command construction and output parsing."""

import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from test_export import BNN_MASKS, MIXED_MASKS, build_small_pabt_model, set_masks, train_few_steps

import pabt_tf as pabt
from pabt_tf.cli import benchmark, convert
from pabt_tf.export import operator_counts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def models(tmp_path_factory, fmnist_small):
    """A small PaBT model trained a few steps on Fashion-MNIST, saved as a BNN and as a
    mixed network; a plain Keras model; a non-28×28 PaBT model; a corrupt file."""
    tf.keras.utils.set_random_seed(2)
    root = tmp_path_factory.mktemp("cli")
    x_train, y_train, _, _ = fmnist_small
    model = train_few_steps(build_small_pabt_model(), x_train[:512], y_train[:512])
    paths = {}
    set_masks(model, MIXED_MASKS)
    paths["mixed"] = str(root / "mixed.keras")
    model.save(paths["mixed"])
    set_masks(model, BNN_MASKS)
    paths["bnn"] = str(root / "bnn.keras")
    model.save(paths["bnn"])
    inp = tf.keras.Input((28, 28, 1))
    plain = tf.keras.Model(inp, tf.keras.layers.Dense(10)(tf.keras.layers.Flatten()(inp)))
    paths["plain"] = str(root / "plain.keras")
    plain.save(paths["plain"])
    inp = tf.keras.Input((8, 8, 3))
    x = tf.keras.layers.BatchNormalization()(inp)
    x = pabt.PaBTConv2D(8, 3, padding="same", weight_bases=2, activation_bases=2)(x)
    small = tf.keras.Model(inp, tf.keras.layers.Dense(4)(tf.keras.layers.Flatten()(x)))
    paths["rgb"] = str(root / "rgb.keras")
    small.save(paths["rgb"])
    paths["corrupt"] = str(root / "corrupt.keras")
    with open(paths["corrupt"], "wb") as f:
        f.write(b"PK\x03\x04 this is not a keras archive")
    paths["root"] = str(root)
    return paths


def run_convert(capsys, *argv):
    code = convert.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- pabt-convert ------------------------------------------------------------------------


def test_convert_missing_file(capsys, tmp_path):
    code, _, err = run_convert(capsys, tmp_path / "nope.keras", tmp_path / "out.tflite")
    assert code == 2 and "does not exist" in err


def test_convert_unreadable_file(capsys, models, tmp_path):
    code, _, err = run_convert(capsys, models["corrupt"], tmp_path / "out.tflite")
    assert code == 2 and "cannot read model" in err
    code, _, err = run_convert(capsys, tmp_path, tmp_path / "out.tflite")  # a plain directory
    assert code == 2 and "not a SavedModel" in err


def test_convert_model_without_pabt_layers(capsys, models, tmp_path):
    code, _, err = run_convert(capsys, models["plain"], tmp_path / "out.tflite")
    assert code == 2 and "no PaBT (binary) layers" in err
    assert not (tmp_path / "out.tflite").exists()


def test_convert_require_bnn_rejects_mixed_model(capsys, models, tmp_path):
    code, out, err = run_convert(capsys, models["mixed"], tmp_path / "out.tflite", "--require-bnn")
    assert code == 2 and "not a BNN yet" in err and "b_stride" in err
    assert "9 active binary conv(s)" in out  # the per-layer table was printed first
    assert not (tmp_path / "out.tflite").exists()


def test_convert_failed_verification(capsys, models, tmp_path):
    # An impossible tolerance makes the (real) comparison fail: exit 1, nothing written.
    out_path = tmp_path / "out.tflite"
    code, out, err = run_convert(
        capsys, models["bnn"], out_path, "--verify-samples", 50, "--atol", 1e-12
    )
    assert code == 1
    assert "verification FAILED" in err and "was not written" in err
    assert "LceBconv2d" in out  # the operator table is still shown
    assert not out_path.exists()


def test_convert_refuses_a_custom_op_lce_cannot_run(capsys, tmp_path):
    # A TensorFlow op without a TFLite kernel (here in a Lambda layer, so --unsafe) becomes
    # a custom op LCE's runtime lacks: reported by name, exit 1, nothing written, no crash.
    inp = tf.keras.Input((8, 8, 4))
    x = pabt.PaBTConv2D(4, 3, padding="same")(tf.keras.layers.BatchNormalization()(inp))
    out = tf.keras.layers.Lambda(lambda t: tf.linalg.det(t[:, :4, :4, 0]))(x)
    path = tmp_path / "det.keras"
    tf.keras.Model(inp, out).save(path)
    out_path = tmp_path / "det.tflite"
    code, out, err = run_convert(capsys, path, out_path, "--unsafe", "--verify-samples", 8)
    assert code == 1 and not out_path.exists()
    assert "operator MatrixDeterminant" in err and "cannot run with LCE" in err
    with pytest.warns(UserWarning, match="MatrixDeterminant"):
        report = pabt.export.convert_with_report(
            tf.keras.models.load_model(path, safe_mode=False), np.zeros((2, 8, 8, 4), np.float32),
            strict=False)
    assert report.verification is None and not report.ok  # not run: LCE would refuse it


def test_convert_random_inputs_for_other_shapes(capsys, models, tmp_path):
    out_path = tmp_path / "rgb.tflite"
    code, out, _ = run_convert(capsys, models["rgb"], out_path, "--verify-samples", 20)
    assert code == 0
    assert "20 random N(0, 1) inputs of shape (8, 8, 3)" in out
    assert "verification PASSED" in out
    assert operator_counts(out_path.read_bytes())["LceBconv2d"] == 4


def test_convert_console_script_end_to_end(models):
    """The installed `pabt-convert` on a small trained model saved as .keras."""
    out_path = os.path.join(models["root"], "bnn.tflite")
    script = os.path.join(os.path.dirname(sys.executable), "pabt-convert")
    cmd = [script] if os.path.exists(script) else [sys.executable, "-m", "converters.convert"]
    proc = subprocess.run(
        cmd + [models["bnn"], out_path, "--verify-samples", "300", "--require-bnn"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "300 real Fashion-MNIST test images" in out
    assert "total 4 -> 4" in out and "verification PASSED" in out
    assert "Sizes: Keras weights" in out and f"Wrote {out_path}" in out
    counts = operator_counts(open(out_path, "rb").read())
    assert counts["LceBconv2d"] == 4 and counts.get("CONV_2D") == 1


# -- pabt-benchmark ----------------------------------------------------------------------

# The log format of TFLite's benchmark_model (which lce_benchmark_model extends), as
# printed by a current release: per-phase statistics, then the summary lines.
SAMPLE_OUTPUT = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [4]
INFO: Graph: [/data/local/tmp/bnn.tflite]
INFO: #threads used for CPU inference: [4]
INFO: Loaded model /data/local/tmp/bnn.tflite
INFO: The input model file size (MB): 0.010264
INFO: Initialized session in 3.204ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=1317 first=1503 curr=363 min=344 max=1503 avg=378.541 std=42
INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=2705 first=371 curr=360 min=341 max=1114 avg=366.72 std=25 p5=349 median=362 p95=389
INFO: Inference timings in us: Init: 3204, First inference: 1503, Warmup (avg): 378.541, Inference (avg): 366.72
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=2.91406 overall=3.46484
"""  # noqa: E501  (the tool's output, verbatim)

SAMPLE_OUTPUT_OLD = """\
Initialized session in 0.896ms
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=215 first=12231 curr=2106 min=2065 max=12231 avg=2331.42 std=746
Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=459 first=2143 curr=2101 min=2056 max=2656 avg=2177.1 std=124
Average inference timings in us: Warmup: 2331.42, Init: 896, Inference: 2177.1
"""


def test_parse_benchmark_output():
    parsed = benchmark.parse_benchmark_output(SAMPLE_OUTPUT)
    assert parsed["avg_us"] == pytest.approx(366.72)
    assert parsed["init_us"] == 3204 and parsed["first_us"] == 1503
    assert parsed["warmup_avg_us"] == pytest.approx(378.541)
    assert parsed["count"] == 2705 and parsed["median_us"] == 362 and parsed["std_us"] == 25
    assert parsed["memory_overall_mb"] == pytest.approx(3.46484)
    old = benchmark.parse_benchmark_output(SAMPLE_OUTPUT_OLD)
    assert old["avg_us"] == pytest.approx(2177.1) and old["init_us"] == 896
    assert old["count"] == 459 and old["min_us"] == 2056
    stats_only = benchmark.parse_benchmark_output("count=10 first=5 curr=4 min=3 max=6 avg=4.5 std=1")
    assert stats_only["avg_us"] == 4.5
    with pytest.raises(ValueError, match="no inference timing"):
        benchmark.parse_benchmark_output("ERROR: Could not open 'model.tflite'.\n")


def test_device_commands_adb_and_ssh():
    setup, runs = benchmark.device_commands(
        "adb", ["/x/bnn.tflite"], "/bin/lce_benchmark_model", threads=(1, 4), serial="R5C"
    )
    assert setup == [
        ["adb", "-s", "R5C", "push", "/bin/lce_benchmark_model", "/data/local/tmp/lce_benchmark_model"],
        ["adb", "-s", "R5C", "shell", "chmod", "+x", "/data/local/tmp/lce_benchmark_model"],
        ["adb", "-s", "R5C", "push", "/x/bnn.tflite", "/data/local/tmp/bnn.tflite"],
    ]
    assert [cmd for _, _, cmd in runs] == [
        ["adb", "-s", "R5C", "shell",
         "/data/local/tmp/lce_benchmark_model --graph=/data/local/tmp/bnn.tflite --num_threads=1"],
        ["adb", "-s", "R5C", "shell",
         "/data/local/tmp/lce_benchmark_model --graph=/data/local/tmp/bnn.tflite --num_threads=4"],
    ]  # fmt: skip
    setup, runs = benchmark.device_commands(
        "ssh", ["/x/bnn.tflite", "/t/float_twin.tflite"], "/bin/lce_benchmark_model",
        threads=(4,), host="pi@raspberrypi", extra_args=("--num_runs=100",),
    )  # fmt: skip
    remote = "/tmp/pabt_benchmark"
    assert setup == [
        ["ssh", "pi@raspberrypi", f"mkdir -p {remote}"],
        ["scp", "/bin/lce_benchmark_model", f"pi@raspberrypi:{remote}/lce_benchmark_model"],
        ["ssh", "pi@raspberrypi", f"chmod +x {remote}/lce_benchmark_model"],
        ["scp", "/x/bnn.tflite", "/t/float_twin.tflite", f"pi@raspberrypi:{remote}/"],
    ]
    assert runs[1] == (
        "/t/float_twin.tflite", 4,
        ["ssh", "pi@raspberrypi", f"{remote}/lce_benchmark_model "
         f"--graph={remote}/float_twin.tflite --num_threads=4 --num_runs=100"],
    )  # fmt: skip
    with pytest.raises(ValueError, match="host"):
        benchmark.device_commands("ssh", ["/x/a.tflite"], "/bin/b")
    with pytest.raises(ValueError, match="device"):
        benchmark.device_commands("usb", ["/x/a.tflite"], "/bin/b")


def run_benchmark(capsys, *argv):
    code = benchmark.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_benchmark_cli_errors(capsys, models, tmp_path, monkeypatch):
    code, _, err = run_benchmark(capsys, tmp_path / "missing.tflite")
    assert code == 2 and "does not exist" in err
    not_tflite = tmp_path / "x.tflite"
    not_tflite.write_bytes(b"\0" * 64)
    code, _, err = run_benchmark(capsys, not_tflite)
    assert code == 2 and "not a TFLite flatbuffer" in err

    fb = tmp_path / "rgb.tflite"
    assert convert.main([models["rgb"], str(fb), "--verify-samples", "0"]) == 0
    capsys.readouterr()
    code, _, err = run_benchmark(capsys, fb, "--compare-float")  # no rgb.keras next to it
    assert code == 2 and "Pass --keras-model" in err
    code, _, err = run_benchmark(capsys, fb, "--device", "adb")
    assert code == 2 and "needs --benchmark-binary" in err
    code, _, err = run_benchmark(capsys, fb, "--device", "adb", "--benchmark-binary", tmp_path / "nope")
    assert code == 2 and "does not exist" in err
    binary = tmp_path / "lce_benchmark_model"
    binary.write_bytes(b"\x7fELF")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no adb / ssh on PATH
    code, _, err = run_benchmark(capsys, fb, "--device", "adb", "--benchmark-binary", binary)
    assert code == 2 and "`adb` is not on PATH" in err
    code, _, err = run_benchmark(capsys, fb, "--device", "ssh", "pi@pi", "--benchmark-binary", binary)
    assert code == 2 and "`ssh` is not on PATH" in err
    code, _, err = run_benchmark(capsys, fb, "--device", "ssh", "--benchmark-binary", binary)
    assert code == 2 and "ssh HOST" in err
    # --dry-run needs no tools: it prints the exact commands.
    code, out, _ = run_benchmark(capsys, fb, "--device", "ssh", "pi@pi", "--benchmark-binary",
                                 binary, "--threads", "1", "4", "--dry-run")  # fmt: skip
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[-1] == shlex.join(["ssh", "pi@pi", "/tmp/pabt_benchmark/lce_benchmark_model "
                                    "--graph=/tmp/pabt_benchmark/rgb.tflite --num_threads=4"])


def test_benchmark_host_with_baselines(capsys, models):
    """pabt-benchmark on the flatbuffer pabt-convert wrote next to its .keras model."""
    fb = os.path.join(models["root"], "bnn_host.tflite")
    assert convert.main([models["bnn"], fb, "--verify-samples", "0"]) == 0
    os.link(models["bnn"], fb.replace(".tflite", ".keras"))
    capsys.readouterr()
    code, out, _ = run_benchmark(
        capsys, fb, "--compare-float", "--compare-larq", "--rounds", "2", "--repeats", "2"
    )
    assert code == 0
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["model"], ["float"], ["larq"])]
    rows = [r for r in rows if r[1] in ("indirect_bgemm", "default")]
    assert {(r[0], r[1]) for r in rows} == {
        (label, kernels) for label in ("model", "float", "larq") for kernels in ("indirect_bgemm", "default")
    }  # fmt: skip
    for r in rows:
        assert float(r[3]) > 0  # median ms
    assert np.isfinite([float(r[3]) for r in rows]).all()
