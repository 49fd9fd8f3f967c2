"""`experiments.bench_training`: the lock-step interleaving and the phase breakdown
(the speed goal itself is measured by running the benchmark, not here)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import bench_training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_phases_split_the_schedule_and_predict_the_run():
    convs = [9.0] * 2 + [5.0, 3.0] + [1.0] * 4
    bases = [3.0] * 2 + [2.0, 2.0] + [1.0] * 4
    seconds = [3.0] * 2 + [2.0, 2.0] + [1.0] * 4
    rows = bench_training.phases(
        {"step_seconds": seconds, "active_convs": convs, "active_bases": bases}, bnn_step=1.0)
    assert [r["phase"] for r in rows] == ["before pruning", "while pruning", "pruned (BNN structure)"]
    assert [r["share"] for r in rows] == [0.25, 0.25, 0.5]
    assert [r["step_ratio"] for r in rows] == [3.0, 2.0, 1.0]
    assert rows[1]["active_bases"] == 2.0 and rows[1]["active_convs"] == 4.0
    assert sum(r["share"] * r["step_ratio"] for r in rows) == pytest.approx(np.mean(seconds))


@pytest.mark.slow  # an end-to-end run of the benchmark program (two whole trainings)
def test_whole_runs_interleave_and_report(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "experiments.bench_training", "--epochs=2",
           "--train_limit=768", "--chunk=2", f"--json={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "whole default-schedule run PaBT/BNN" in proc.stdout
    result = json.loads(out.read_text())
    (pair,) = result["pairs"]
    assert pair["whole_run_ratio"] == pytest.approx(pair["pabt_seconds"] / pair["bnn_seconds"])
    assert pair["pabt_seconds"] > 0 and pair["bnn_seconds"] > 0
    phases = {r["phase"]: r for r in pair["phases"]}
    # 6 steps an epoch, pruning from 5 % to 40 % of 12 steps: all three phases appear,
    # and the pruned phase has one binary convolution (one activation base) per layer.
    assert phases["pruned (BNN structure)"]["active_convs"] == 1.0
    assert phases["pruned (BNN structure)"]["active_bases"] == 1.0
    assert phases["before pruning"]["active_convs"] == 9.0
    assert sum(r["share"] for r in pair["phases"]) == pytest.approx(1.0)
