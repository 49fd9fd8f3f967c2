"""Runs that survive interruption: a training run stopped mid-way resumes from its last
finished epoch (pruning state included); `compare` skips finished runs."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from _training_utils import StopAtEpoch  # noqa: E402

from experiments import compare, train
from pabt_tf.run import state
from pabt_tf.run.state import LOCK, PROGRESS, RunLock

TINY = dict(
    method="pabt", epochs=3, steps=8, train_limit=512, validation_limit=128, test_limit=128,
    verify_samples=16, model_kwargs={"filters": [8, 8, 8, 8], "stem_filters": 8},
    prune_begin=0.1, prune_end=0.6, decay_steps=0, convert=False, verbose=0,
)  # fmt: skip


def test_stopped_run_resumes_from_its_last_epoch(tmp_path):
    out = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train.train(dict(TINY, output_dir=out), extra_callbacks=[StopAtEpoch(2)])
    progress = json.loads((tmp_path / "run" / PROGRESS).read_text())
    assert progress["epochs_done"] == 2 and not (tmp_path / "run" / "results.json").exists()
    events_before = len(progress["recorders"]["pruning"])
    assert events_before > 0  # pruning had started before the kill

    results = train.train(dict(TINY, output_dir=out))
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    # One run's record: three epochs, the first two from the first piece.
    assert history["epoch"] == [0, 1, 2] and len(history["val_accuracy"]) == 3
    assert history["val_accuracy"][:2] == progress["history"]["val_accuracy"]
    assert [p["start_epoch"] for p in history["pieces"]] == [0, 2]
    assert len(history["active_per_layer"]) == 3 and history["initial_active"] == [9, 9, 9, 9]
    # The schedule continued where it stopped and ended as a BNN.
    assert results["mean_binary_convs"] == 1.0
    assert len(history["pruning_events"]) >= events_before
    steps = [e["step"] for e in history["pruning_events"]]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert results["train_seconds"] == pytest.approx(sum(p["seconds"] for p in history["pieces"]))
    assert all(p["seconds"] > 0 for p in history["pieces"])
    assert not (tmp_path / "run" / "backup").exists()  # resume state removed once done


def test_resume_refuses_another_configuration(tmp_path):
    out = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train.train(dict(TINY, output_dir=out), extra_callbacks=[StopAtEpoch(1)])
    assert not os.path.exists(os.path.join(out, LOCK))  # released by the interrupted run
    with pytest.raises(ValueError, match="another configuration"):
        train.train(dict(TINY, output_dir=out, learning_rate=1e-4))


def test_resume_refuses_a_record_without_its_backup(tmp_path):
    """A progress.json whose backup/ is gone (deleted, or the run directory copied
    without it) would restart at epoch 0 under a record of finished epochs: refused,
    naming both paths, before anything in the run directory changes."""
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train.train(dict(TINY, output_dir=str(out)), extra_callbacks=[StopAtEpoch(1)])
    assert state.has_backup(str(out))
    shutil.rmtree(out / state.BACKUP)
    assert not state.has_backup(str(out))
    (out / state.BACKUP).mkdir()  # an empty backup folder is no checkpoint either
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match=r"records 1 finished epoch.*backup.*no checkpoint"):
        train.train(dict(TINY, output_dir=str(out)))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_run_directory_is_used_by_one_process_at_a_time(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (out / LOCK).write_text(str(holder.pid))
        with pytest.raises(RuntimeError, match=f"in use by process {holder.pid}"):
            train.train(dict(TINY, output_dir=str(out)))
        assert sorted(os.listdir(out)) == [LOCK]  # refused before writing anything
        assert (out / LOCK).read_text() == str(holder.pid)
    finally:
        holder.kill()
        holder.wait()
    # Its process is gone (killed): the stale lock is taken over, and released after.
    with RunLock(str(out)):
        assert (out / LOCK).read_text() == str(os.getpid())
    assert not (out / LOCK).exists()
    (out / LOCK).write_text("")  # a lock cut short is stale too
    with RunLock(str(out)):
        assert (out / LOCK).read_text() == str(os.getpid())


def test_compare_skips_finished_runs_and_checks_their_config(tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / "bnn_s7"
    run_dir.mkdir(parents=True)
    config = dict(train.DEFAULTS, method="bnn", seed=7, output_dir=str(run_dir))
    (run_dir / "results.json").write_text(json.dumps({"config": config, "test_accuracy": 0.5}))

    def never(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(compare, "run_one", never)
    assert compare.finished_result(dict(config), str(run_dir))["test_accuracy"] == 0.5
    with pytest.raises(ValueError, match="epochs"):
        compare.finished_result(dict(config, epochs=99), str(run_dir))
    assert compare.finished_result(dict(config), str(tmp_path / "runs" / "other")) is None


def test_self_distilling_run_resumes_with_its_teacher(tmp_path):
    """A self-distillation run stopped after its teacher snapshot resumes distilling from
    the saved teacher (not from the pruned network it has become, nor the initial one);
    without the saved teacher it refuses to resume instead of distilling from the wrong
    network."""
    config = dict(TINY, distill_weight=0.5, output_dir=str(tmp_path / "run"))
    teachers = []

    class _Teacher(tf.keras.callbacks.Callback):
        def __init__(self, when):
            super().__init__()
            self.when = when

        def on_train_batch_end(self, batch, logs=None):
            if self.when(batch) and float(self.model._distill_active.numpy()) == 1.0:
                teachers.append([w.numpy() for w in self.model._teacher.weights])
                self.when = lambda b: False

    with pytest.raises(KeyboardInterrupt):
        train.train(config, extra_callbacks=[StopAtEpoch(2), _Teacher(lambda b: True)])
    assert (tmp_path / "run" / "teacher" / "weights.index").exists()
    assert len(teachers) == 1  # taken at the first pruning step, before the kill
    shutil.copytree(tmp_path / "run", tmp_path / "copy")

    results = train.train(config, extra_callbacks=[_Teacher(lambda b: b == 0)])
    assert len(teachers) == 2  # distillation on from the resumed run's first step ...
    for a, b in zip(*teachers):  # ... from the very teacher taken before the kill
        np.testing.assert_array_equal(a, b)
    assert results["mean_binary_convs"] == 1.0

    shutil.rmtree(tmp_path / "copy" / "teacher")
    with pytest.raises(RuntimeError, match="teacher"):
        train.train(dict(config, output_dir=str(tmp_path / "copy")))
