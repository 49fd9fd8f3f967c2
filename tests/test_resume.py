"""Resuming in a fresh process continues the same pruning schedule (.keras and
BackupAndRestore) and ends with the same masks and step as an uninterrupted run."""

import json
import os
import subprocess
import sys

import numpy as np

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_resume_worker.py")


def _run(phase, directory):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, WORKER, phase, str(directory)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


def _load(directory, name):
    with open(os.path.join(directory, name + ".json")) as f:
        return json.load(f)


def test_resume_in_fresh_process_gives_same_masks_and_step(tmp_path):
    _run("first", tmp_path)
    _run("second", tmp_path)  # a new Python process
    full = _load(tmp_path, "full")
    stopped = _load(tmp_path, "stopped")
    # The stop happened mid-schedule, with a binary convolution still decaying.
    assert [layer["step"] for layer in stopped] == [16, 16]
    assert any(0 < d < 1 for layer in stopped for row in layer["gate_decay"] for d in row)
    assert sum(np.sum(layer["mask"]) for layer in stopped) > 2
    # The uninterrupted run ends as a BNN at step 32.
    assert [layer["step"] for layer in full] == [32, 32]
    assert [np.sum(layer["mask"]) for layer in full] == [1, 1]
    for name in ("resumed_keras", "resumed_backup"):
        resumed = _load(tmp_path, name)
        for a, b in zip(resumed, full):
            assert a["step"] == b["step"], name
            np.testing.assert_array_equal(a["mask"], b["mask"], err_msg=name)
            np.testing.assert_array_equal(a["gate_decay"], b["gate_decay"], err_msg=name)
            # Same trajectory: the importances agree too (deterministic ops).
            np.testing.assert_allclose(a["importance"], b["importance"], rtol=1e-6, err_msg=name)
