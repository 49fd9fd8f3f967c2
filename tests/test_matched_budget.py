"""`experiments.matched_budget`: the budget finished PaBT runs landed at (issue 28's
budget-matched comparison)."""

import json
import subprocess
import sys

import pytest

from experiments.matched_budget import matched_budget, run_budget


def _run(root, name, active, macs):
    run = root / "runs" / name
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"active_binary_convs": active}))
    (run / "history.json").write_text(json.dumps({"binary_conv_macs": macs}))
    return run


def test_budget_is_the_mac_weighted_mean_over_runs(tmp_path):
    a = _run(tmp_path, "pabt_s3", [4, 1, 1], [100, 100, 200])  # (400 + 100 + 200) / 400
    _run(tmp_path, "pabt_s4", [2, 2, 2], [100, 100, 200])
    assert run_budget(str(a)) == pytest.approx(1.75)
    mean, each = matched_budget(str(tmp_path))
    assert each == pytest.approx([1.75, 2.0]) and mean == pytest.approx(1.875)
    proc = subprocess.run([sys.executable, "-m", "experiments.matched_budget", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "1.875"


def test_missing_or_non_pabt_runs_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished run"):
        matched_budget(str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "experiments.matched_budget", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no finished run" in proc.stderr
    _run(tmp_path, "bnn_s3", None, None)
    with pytest.raises(ValueError, match="bnn_s3: no PaBT layers"):
        matched_budget(str(tmp_path))
