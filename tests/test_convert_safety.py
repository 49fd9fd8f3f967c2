"""`pabt-convert` destroys no file (issue 8, defect 4) and runs no code a model file
carries unless told to (defect 5). Loading and failing writes run in fresh processes."""

import errno
import json
import os
import subprocess
import sys
import tempfile

import pytest
import tensorflow as tf

import pabt_tf as pabt
from pabt_tf.cli import common as cli
from pabt_tf.cli import convert
from pabt_tf.cli.model_loading import code_in_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _small_model(lambda_marker: str | None = None) -> tf.keras.Model:
    inp = tf.keras.Input((8, 8, 3))
    x = pabt.PaBTConv2D(8, 3, padding="same", weight_bases=2, activation_bases=2)(inp)
    if lambda_marker:
        # Its bytecode (path included) is stored in the config; loading runs it.
        code = f"lambda t: (open({lambda_marker!r}, 'a').close(), t)[1]"
        x = tf.keras.layers.Lambda(eval(code))(x)
    x = tf.keras.layers.Flatten()(x)
    return tf.keras.Model(inp, tf.keras.layers.Dense(4)(x))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """The same small PaBT model with and without a marker-writing Lambda, saved as
    .keras, .h5 and SavedModel."""
    root = tmp_path_factory.mktemp("safety")
    marker = str(root / "MARKER")
    paths = {"root": str(root), "marker": marker}
    for tag, model in (("plain", _small_model()), ("lambda", _small_model(marker))):
        for fmt, name in (("keras", f"{tag}.keras"), ("h5", f"{tag}.h5"), ("tf", f"{tag}_sm")):
            paths[f"{tag}.{fmt}"] = str(root / name)
            model.save(paths[f"{tag}.{fmt}"], **({"save_format": "tf"} if fmt == "tf" else {}))
    if os.path.exists(marker):  # building and saving the model called the lambda
        os.remove(marker)
    return paths


def run_convert(capsys, *argv):
    code = convert.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- defect 4: the output path ----------------------------------------------------------


def test_output_equal_to_input_is_refused_by_any_name(capsys, saved, tmp_path, monkeypatch):
    model = saved["plain.keras"]
    before = open(model, "rb").read()
    os.symlink(model, tmp_path / "link.keras")
    os.link(model, tmp_path / "hard.keras")
    monkeypatch.chdir(saved["root"])
    for output in (model, "plain.keras", "./plain.keras", f"../{os.path.basename(saved['root'])}/plain.keras",
                   tmp_path / "link.keras", tmp_path / "hard.keras"):  # fmt: skip
        code, out, err = run_convert(capsys, model, output, "--verify-samples", 0)
        assert code == 2, (output, err)
        assert "would destroy the input" in err and "PaBT layer" not in out
    assert open(model, "rb").read() == before


def test_output_inside_a_saved_model_is_refused(capsys, saved):
    saved_model = saved["plain.tf"]
    for output in ("saved_model.pb", os.path.join("variables", "variables.index")):
        code, _, err = run_convert(capsys, saved_model, os.path.join(saved_model, output))
        assert code == 2 and "would destroy the input" in err


def test_bad_output_paths_fail_before_loading(capsys, saved, tmp_path):
    model = saved["plain.keras"]
    cases = [
        (tmp_path, "is a directory"),
        (str(tmp_path) + os.sep, "is a directory"),
        (tmp_path / "missing" / "out.tflite", "does not exist"),
        ("/dev/null", "not a regular file"),
    ]
    if _refuses_new_files("/sys"):  # sysfs: no new files, even for root
        cases.append(("/sys/pabt_out.tflite", "does not accept new files"))
    for output, message in cases:
        code, out, err = run_convert(capsys, model, output)
        assert code == 2 and message in err, (output, err)
        assert "PaBT layer" not in out  # refused before the model was even loaded
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def _refuses_new_files(directory: str) -> bool:
    try:
        fd, path = tempfile.mkstemp(dir=directory)
    except OSError:
        return os.path.isdir(directory)
    os.close(fd)
    os.unlink(path)
    return False


def test_write_atomically_leaves_the_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "model.tflite"
    target.write_bytes(b"good old flatbuffer")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        cli.write_atomically(str(target), b"new" * 1000)
    assert target.read_bytes() == b"good old flatbuffer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]  # no temp file left
    monkeypatch.undo()
    cli.write_atomically(str(target), b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


def test_file_size_limit_keeps_the_existing_output(saved, tmp_path):
    """A real failing write: RLIMIT_FSIZE in a fresh process. Exit 1, the old output intact,
    no temporary file left."""
    output = tmp_path / "out.tflite"
    output.write_bytes(b"G" * 4096)
    script = (
        "import resource, sys\n"
        "from pabt_tf.cli import common as cli, convert\n"
        "def limited(path, data):\n"
        "    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY))\n"
        "    return cli.write_atomically(path, data)\n"
        "convert.write_atomically = limited\n"
        "sys.exit(convert.main(sys.argv[1:]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, saved["plain.keras"], str(output), "--verify-samples", "0"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "could not write" in proc.stderr and "left as it was" in proc.stderr
    assert output.read_bytes() == b"G" * 4096
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tflite"]


def test_success_writes_through_a_symlink(capsys, saved, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "model.tflite").write_bytes(b"old")
    os.symlink(real / "model.tflite", tmp_path / "link.tflite")
    code, out, _ = run_convert(capsys, saved["plain.keras"], tmp_path / "link.tflite", "--verify-samples", 5)
    assert code == 0 and "Wrote" in out
    assert os.path.islink(tmp_path / "link.tflite")
    assert (real / "model.tflite").read_bytes()[4:8] == b"TFL3"
    assert sorted(p.name for p in real.iterdir()) == ["model.tflite"]


# -- defect 5: code in model files -------------------------------------------------------


def test_code_in_config_finds_function_carrying_entries():
    lam = {"class_name": "Lambda", "config": {"name": "l", "function": ["4wEA..."], "function_type": "lambda"}}
    add = {"class_name": "TFOpLambda", "config": {"name": "add", "function": "math.add"}}
    getitem = {"class_name": "SlicingOpLambda", "config": {"name": "s", "function": "__operators__.getitem"}}
    reshape = {"class_name": "TFOpLambda", "config": {"name": "r", "function": "reshape"}}
    write = {"class_name": "TFOpLambda", "config": {"name": "w", "function": "io.write_file"}}
    py = {"class_name": "TFOpLambda", "config": {"name": "p", "function": "py_function"}}
    foreign = {"module": "os", "class_name": "system", "config": {}}
    dense = {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d"}}
    nested = {"class_name": "Functional", "config": {"layers": [
        dense, {"class_name": "Sequential", "config": {"layers": [lam]}}]}}  # fmt: skip
    assert code_in_config({"config": {"layers": [dense, add, getitem, reshape]}}) == []
    assert code_in_config(nested) == ["Lambda layer 'l'"]
    assert code_in_config([write, py, foreign]) == [
        "TFOpLambda layer 'w' calling tf.io.write_file",
        "TFOpLambda layer 'p' calling tf.py_function",
        "system from module 'os', which loading imports",
    ]
    assert code_in_config({"class_name": "__lambda__", "config": {"code": "..."}}) == ["a Python lambda"]


def test_help_names_the_unsafe_flag(capsys):
    with pytest.raises(SystemExit):
        convert.main(["--help"])
    out = capsys.readouterr().out
    assert "--unsafe" in out and "Lambda" in out


def test_models_carrying_code_are_refused_in_every_format(saved):
    """Fresh process: a Lambda that creates a marker file when it runs. Without --unsafe
    every format exits 2 and the marker never appears; plain models in the same formats
    convert; with --unsafe the .h5 converts (and its code ran)."""
    out = os.path.join(saved["root"], "out.tflite")
    runs = [[saved[f"lambda.{fmt}"], out] for fmt in ("h5", "tf", "keras")]
    runs += [[saved[f"plain.{fmt}"], out, "--verify-samples", "5"] for fmt in ("h5", "tf")]
    runs += [[saved["lambda.h5"], out, "--verify-samples", "5", "--unsafe"]]
    script = (
        "import json, os, sys\nfrom pabt_tf.cli import convert\nresults = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    code = convert.main(argv)\n"
        "    results.append([code, os.path.exists(sys.argv[2])])\n"
        "print(json.dumps(results))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(runs), saved["marker"]],
        capture_output=True, text=True, cwd=REPO, timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    # (exit code, marker exists) after each run, in order
    assert results == [[2, False], [2, False], [2, False], [0, False], [0, False], [0, True]], proc.stderr[-3000:]
    refusals = [line for line in proc.stderr.splitlines() if "carries code" in line]
    assert len(refusals) == 3
    assert all("Lambda layer 'lambda'" in line and "--unsafe" in line for line in refusals)
