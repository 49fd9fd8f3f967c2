"""Runs that behave when run twice, resume only as the same run, keep every file through a
failed write, convert without verifying on request, and read their records carefully
(issue 27, parts 2-5 and the run items of part 8)."""

import json
import os
import resource
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from _training_utils import StopAtEpoch  # noqa: E402

from experiments import train
from pabt_tf.run import state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)

TINY = dict(
    method="pabt", epochs=2, steps=2, batch_size=16, train_limit=64, validation_limit=32,
    test_limit=32, verify_samples=16, model_kwargs={"filters": [8, 8, 8, 8], "stem_filters": 8},
    prune_begin=0.3, prune_end=0.6, decay_steps=0, convert=False, save_model=False, verbose=0,
)  # fmt: skip


def _files(root):
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- part 2: run twice ------------------------------------------------------------------


def test_a_run_directory_started_again_resumes_reports_or_trains_afresh(tmp_path, capsys):
    """A record without its backup (copied from another machine) is refused, naming the
    way out; `force` trains afresh (the earlier run's files go, others stay); the finished
    run started again is reported, not retrained (today: the RuntimeError "records 2
    finished epoch(s) but backup holds no checkpoint"); another configuration is refused."""
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train.train(dict(TINY, output_dir=str(out)), extra_callbacks=[StopAtEpoch(1)])
    shutil.rmtree(out / state.BACKUP)
    with pytest.raises(state.RunDirectoryError, match=r"records 1 finished epoch.*--force"):
        train.train(dict(TINY, output_dir=str(out)))
    (out / "notes.txt").write_text("mine")
    first = train.train(dict(TINY, output_dir=str(out)), force=True)
    history = json.loads((out / "history.json").read_text())
    assert [p["start_epoch"] for p in history["pieces"]] == [0] and history["epoch"] == [0, 1]
    assert first["mean_binary_convs"] == 1.0 and "reused" not in first
    assert (out / "notes.txt").read_text() == "mine" and not (out / state.BACKUP).exists()
    before = _files(out)
    capsys.readouterr()
    again = train.train(dict(TINY, output_dir=str(out)))
    assert again["reused"] is True
    assert again["test_accuracy"] == first["test_accuracy"]
    assert again["train_seconds"] == pytest.approx(first["train_seconds"])
    assert _files(out) == before  # nothing trained, nothing written
    assert "--force" in capsys.readouterr().out
    with pytest.raises(state.RunMismatchError, match=r"epochs: 2 then, 3 now.*--force"):
        train.train(dict(TINY, output_dir=str(out), epochs=3))
    assert _files(out) == before


QUICK = ["--epochs=1", "--steps=3", "--train_limit=96", "--test_limit=64", "--batch_size=32",
         "--verify_samples=16", "--verbose=2"]  # fmt: skip


def test_quickstart_twice_prints_the_finished_run(tmp_path):
    """`make demo` twice: the second run prints the first one's table and how to train
    again, exit 0; another configuration is a one-line error, exit 2."""
    out = tmp_path / "qs"
    cmd = [sys.executable, "-m", "experiments.quickstart", *QUICK, f"--output_dir={out}"]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    results = (out / "results.json").read_bytes()
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "Traceback" not in second.stderr and "Training a PaBT network" not in second.stdout
    assert "PASSED" in second.stdout and f"flatbuffer   : {out / 'model.tflite'}" in second.stdout
    assert "--force" in second.stdout and "--output_dir" in second.stdout
    assert (out / "results.json").read_bytes() == results
    # experiments.train on the finished run with another configuration: a one-line error.
    train_cmd = [sys.executable, "-m", "experiments.train", f"--output_dir={out}", "--epochs=1",
                 "--steps=3", "--train_limit=96", "--test_limit=64"]  # fmt: skip
    proc = subprocess.run(train_cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "belongs to a finished run with another configuration" in proc.stderr
    assert "validation_limit: 1000 then, None now" in proc.stderr and "--force" in proc.stderr


# -- part 3: resume only the same run ---------------------------------------------------


def _image_tree(root, classes=("ant", "bee", "cat"), n_train=12, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                tf.io.write_file(str(folder / f"{i:02d}.png"), tf.io.encode_png(image))


FOLDER_RUN = dict(TINY, dataset="image_folder", validation_size=6, train_limit=None,
                  validation_limit=None, test_limit=None, batch_size=8)  # fmt: skip


def test_resume_with_a_renamed_class_folder_is_refused(tmp_path):
    data_dir, out = tmp_path / "data", tmp_path / "run"
    _image_tree(data_dir)
    config = dict(FOLDER_RUN, data_dir=str(data_dir), output_dir=str(out))
    with pytest.raises(KeyboardInterrupt):
        train.train(config, extra_callbacks=[StopAtEpoch(1)])
    progress = json.loads((out / state.PROGRESS).read_text())
    assert progress["data"]["classes"] == ["ant", "bee", "cat"]
    assert progress["data"]["train_size"] == 30 and len(progress["data"]["fingerprint"]) == 16
    # Renamed between stop and resume: label 0 would silently become another class.
    for split in ("train", "test"):
        os.rename(data_dir / split / "ant", data_dir / split / "wasp")
    before = _files(out)
    with pytest.raises(state.RunMismatchError,
                       match=r"other data: classes \(label order\) changed: 'ant' -> 'bee', "
                             r"'bee' -> 'cat', 'cat' -> 'wasp'"):  # fmt: skip
        train.train(config)
    assert _files(out) == before
    for split in ("train", "test"):
        os.rename(data_dir / split / "wasp", data_dir / split / "ant")
    # The same class names but other pixels: the fingerprint tells.
    image = np.zeros((16, 16, 3), np.uint8)
    tf.io.write_file(str(data_dir / "train" / "bee" / "03.png"), tf.io.encode_png(image))
    with pytest.raises(state.RunMismatchError, match=r"other data: fingerprint: '[0-9a-f]{16}' then"):
        train.train(config)
    # The data as it was: the run resumes and finishes.
    _image_tree(tmp_path / "again")
    shutil.copy(tmp_path / "again" / "train" / "bee" / "03.png", data_dir / "train" / "bee" / "03.png")
    results = train.train(config)
    history = json.loads((out / "history.json").read_text())
    assert [p["start_epoch"] for p in history["pieces"]] == [0, 1]
    assert results["data"]["classes"] == ["ant", "bee", "cat"]


# -- part 8: records that are not what the code writes ----------------------------------


@pytest.mark.parametrize("content, message", [
    ('{"epochs_done": 2, "history": {', "is not valid JSON"),
    ('{"epochs_done": "2", "history": {}, "pieces": [], "recorders": {}}', "'epochs_done' must be an integer"),
    ('{"epochs_done": 1, "history": {"loss": ["x"]}, "pieces": [], "recorders": {}}', "history 'loss' must be 1"),
    ('{"epochs_done": 1, "history": {}, "pieces": {}, "recorders": {}}', "'pieces' must be a JSON array"),
    ('[1, 2]', "expected a JSON object"),
])  # fmt: skip
def test_a_malformed_progress_record_is_an_error_naming_it(tmp_path, content, message):
    out = tmp_path / "run"
    out.mkdir()
    (out / state.PROGRESS).write_text(content)
    with pytest.raises(state.RunRecordError, match=message) as err:
        train.train(dict(TINY, output_dir=str(out)))
    assert str(out / state.PROGRESS) in str(err.value)
    assert sorted(os.listdir(out)) == [state.PROGRESS]  # nothing else written


@pytest.mark.parametrize("key, value", [("verify_samples", -1), ("verify_samples", 2.5),
                                        ("epochs", 0), ("steps", True)])  # fmt: skip
def test_run_counts_are_checked_before_the_run_directory_is_used(tmp_path, key, value):
    with pytest.raises(ValueError, match=f"`{key}` must be an integer"):
        train.train(dict(TINY, output_dir=str(tmp_path / "run"), **{key: value}))
    assert not (tmp_path / "run").exists()


def test_a_data_set_of_one_class_is_refused_before_training(tmp_path):
    data_dir = tmp_path / "data"
    _image_tree(data_dir, classes=("only",))
    with pytest.raises(ValueError, match="1 class.*at least 2"):
        train.train(dict(FOLDER_RUN, data_dir=str(data_dir), output_dir=str(tmp_path / "run")))
    assert not (tmp_path / "run" / state.PROGRESS).exists()


# -- part 5: --verify_samples 0, and a failed conversion fails the program --------------


def test_verify_samples_zero_converts_without_verifying(tmp_path):
    out = tmp_path / "run"
    results = train.train(dict(TINY, output_dir=str(out), convert=True, verify_samples=0,
                               epochs=1, steps=4))  # fmt: skip
    assert "convert_error" not in results, results.get("convert_error")
    assert results["verification"] is None and results["verify_samples"] == 0
    assert results["found_bconvs"] == results["expected_bconvs"] == 4
    assert results["flatbuffer_bytes"] == os.path.getsize(out / "model.tflite") > 0
    assert "flatbuffer_accuracy" not in results
    from experiments.compare import aggregate
    assert aggregate({"pabt": [results]})[0]["verified"] is False  # not verified, no crash


def test_a_failed_conversion_makes_experiments_train_exit_non_zero(tmp_path):
    """A real failure: model.tflite cannot be written (a directory is in its place). The
    error is recorded in results.json and the program exits 1."""
    out = tmp_path / "run"
    (out / "model.tflite").mkdir(parents=True)
    cmd = [sys.executable, "-m", "experiments.train", f"--output_dir={out}", "--epochs=1",
           "--steps=2", "--batch_size=16", "--train_limit=64", "--validation_limit=32",
           "--test_limit=32", "--verify_samples=8", "--verbose=0",
           '--model_kwargs={"filters": [8, 8, 8, 8], "stem_filters": 8}']  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
    results = json.loads((out / "results.json").read_text())
    assert "model.tflite" in results["convert_error"] or "directory" in results["convert_error"]
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "error: conversion failed" in proc.stderr and "Traceback" not in proc.stderr


# -- part 4: every artefact written atomically ------------------------------------------


def _limited(script: str, limit: int) -> subprocess.CompletedProcess:
    """Run `script` in a child process whose writes stop at `limit` bytes per file
    (RLIMIT_FSIZE, SIGXFSZ ignored so a write fails with EFBIG instead of killing it),
    set just before `LIMIT()` is called."""
    prelude = (
        "import resource, signal\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"def LIMIT():\n    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, "
        f"{resource.RLIM_INFINITY}))\n"
    )
    return subprocess.run([sys.executable, "-c", prelude + script], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=ENV)  # fmt: skip


def test_reconvert_under_a_file_size_limit_keeps_the_flatbuffer_and_its_record(tmp_path):
    """Today a disk-full `reconvert` truncates a good model.tflite while results.json
    still says it verified. With a real write failure (RLIMIT_FSIZE set once the
    flatbuffer is converted and verified, below its size), the old file stays whole and
    the record still describes it."""
    out = tmp_path / "run"
    wide = {"filters": [64, 64, 64, 64], "stem_filters": 16}
    train.train(dict(TINY, method="bnn", output_dir=str(out), convert=True, epochs=1,
                     save_model=True, model_kwargs=wide))  # fmt: skip
    good = (out / "model.tflite").read_bytes()
    record = json.loads((out / "results.json").read_text())
    assert record["verification"]["ok"] and record["flatbuffer_bytes"] == len(good)
    limit = len(good) // 2
    assert os.path.getsize(out / "results.json") * 2 < limit  # the record still fits
    script = (
        "import pabt_tf, json\n"
        "from pabt_tf.run import evaluation, train\n"
        "real = evaluation.flatbuffer_accuracy\n"
        "def limited(*args):\n"
        "    LIMIT()  # converted and verified: now the disk is 'full'\n"
        "    return real(*args)\n"
        "evaluation.flatbuffer_accuracy = limited\n"
        f"r = train.reconvert({str(out)!r})\n"
        "print('RECONVERT', json.dumps({k: r.get(k) for k in ('reconvert_error', 'convert_error')}))\n"
    )
    proc = _limited(script, limit)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.tflite").read_bytes() == good  # today: truncated
    after = json.loads((out / "results.json").read_text())
    assert "File too large" in after["reconvert_error"] and "convert_error" not in after
    assert after["verification"] == record["verification"]
    assert after["flatbuffer_bytes"] == len(good) == os.path.getsize(out / "model.tflite")
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp file
    # Converted again without the limit: replaced, the error gone.
    again = train.reconvert(str(out))
    assert "reconvert_error" not in again and again["verification"]["ok"]
    assert again["flatbuffer_bytes"] == os.path.getsize(out / "model.tflite")


def test_plot_and_json_writes_keep_the_previous_file_under_a_size_limit(tmp_path):
    """The pruning plot and a JSON record through a failing write (RLIMIT_FSIZE): the
    previous files intact, no temporary file left (today the plot is truncated)."""
    for name in ("pruning.png", "history.json"):
        (tmp_path / name).write_bytes(b"previous " + name.encode())
    script = (
        "import pabt_tf\n"
        "from pabt_tf.run.plots import plot_run\n"
        "from pabt_tf.run.records import write_json\n"
        f"d = {str(tmp_path)!r}\n"
        "history = {'epoch': [0, 1], 'val_accuracy': [0.5, 0.6], 'accuracy': [0.5, 0.7]}\n"
        "LIMIT()\n"
        "failed = []\n"
        "for name, write in [('pruning.png', lambda p: plot_run(history, p, 'x')),\n"
        "                    ('history.json', lambda p: write_json(p, list(range(4000))))]:\n"
        "    try:\n"
        "        write(d + '/' + name)\n"
        "    except OSError:\n"
        "        failed.append(name)\n"
        "print('FAILED', sorted(failed))\n"
    )
    proc = _limited(script, 2048)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FAILED ['history.json', 'pruning.png']" in proc.stdout, proc.stdout
    for name in ("pruning.png", "history.json"):
        assert (tmp_path / name).read_bytes() == b"previous " + name.encode(), name
    assert sorted(os.listdir(tmp_path)) == ["history.json", "pruning.png"]


def test_model_keras_saved_through_atomic_path_keeps_the_previous_file(tmp_path):
    """How a run saves model.keras: a Keras save that fails part-way (RLIMIT_FSIZE)
    leaves the previous file and no temporary one; one that succeeds replaces it."""
    (tmp_path / "model.keras").write_bytes(b"previous model")
    script = (
        "import pabt_tf\n"
        "import tensorflow as tf\n"
        "from pabt_tf._atomic import atomic_path\n"
        f"path = {str(tmp_path / 'model.keras')!r}\n"
        "model = tf.keras.Sequential([tf.keras.Input((64,)), tf.keras.layers.Dense(256)])\n"
        "LIMIT()\n"
        "try:\n"
        "    with atomic_path(path) as tmp:\n"
        "        model.save(tmp)\n"
        "except OSError as err:\n"
        "    print('FAILED', err)\n"
    )
    proc = _limited(script, 4096)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FAILED" in proc.stdout and "File too large" in proc.stdout, proc.stdout
    assert (tmp_path / "model.keras").read_bytes() == b"previous model"
    assert os.listdir(tmp_path) == ["model.keras"]
    from pabt_tf._atomic import atomic_path

    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2)])
    with atomic_path(str(tmp_path / "model.keras")) as tmp:
        model.save(tmp)
    assert tf.keras.models.load_model(tmp_path / "model.keras").count_params() == 10
    assert os.listdir(tmp_path) == ["model.keras"]
