"""`experiments.headroom`: the float − BNN validation gap, and refusing pairs that differ."""

import pytest

from experiments.headroom import headroom


def _result(method: str, val: float, task: str = "segmentation", **config) -> dict:
    base = {"dataset": "camvid", "model": "segmentation_resnet18", "epochs": 60, "seed": 0,
            "validation_size": 0, "data_dir": "d", "data_kwargs": None,
            "model_kwargs": {"width": 16}, "method": method}
    base.update(config)
    metric = "val_miou" if task == "segmentation" else "val_accuracy"
    return {"config": base, "task": task, metric: val}


def test_gap_in_points_and_threshold():
    report = headroom(_result("float", 0.5398), _result("bnn_bireal", 0.5187), 5.0)
    assert report["metric"] == "val_miou"
    assert report["gap_pp"] == pytest.approx(2.11, abs=1e-9)
    assert not report["enough"]
    report = headroom(_result("float", 0.70, task="classification"),
                      _result("bnn", 0.64, task="classification"), 5.0)
    assert report["metric"] == "val_accuracy" and report["enough"]
    assert report["gap_pp"] == pytest.approx(6.0)


@pytest.mark.parametrize("key,value", [("model_kwargs", {"width": 8}), ("epochs", 20), ("seed", 1)])
def test_pairs_that_differ_are_refused(key, value):
    with pytest.raises(ValueError, match=key):
        headroom(_result("float", 0.6), _result("bnn_bireal", 0.5, **{key: value}), 5.0)


def test_missing_validation_metric_is_an_error():
    bnn = _result("bnn_bireal", 0.5)
    del bnn["val_miou"]
    with pytest.raises(ValueError, match="val_miou"):
        headroom(_result("float", 0.6), bnn, 5.0)


def _cli(tmp_path, *extra):
    import json
    import os
    import subprocess
    import sys

    runs = {}
    for name, val in (("float", 0.50), ("bnn_bireal", 0.46)):
        run = tmp_path / name
        run.mkdir(exist_ok=True)
        (run / "results.json").write_text(json.dumps(_result(name, val)))
        runs[name] = str(run)
    out = tmp_path / "headroom.md"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.headroom", "--float_run", runs["float"],
         "--bnn_run", runs["bnn_bireal"], "--min_gap", "5", "--output", str(out), *extra],
        cwd=root, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": root})
    return proc, out


def test_short_gap_stops_unless_a_reason_is_given(tmp_path):
    import json

    proc, out = _cli(tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "too little" in out.read_text()
    assert json.loads(out.with_suffix(".json").read_text())["proceed_below"] is None
    proc, out = _cli(tmp_path, "--proceed_below", "every setting leaves about 4 points")
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "4.00 mIoU points" in text and "every setting leaves about 4 points" in text
    report = json.loads(out.with_suffix(".json").read_text())
    assert not report["enough"] and report["proceed_below"].startswith("every setting")
    proc, _ = _cli(tmp_path, "--proceed_below", " ")  # a reason is required
    assert proc.returncode != 0 and "proceed_below" in proc.stderr
