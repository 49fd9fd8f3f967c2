"""Smoke test of `experiments.bench_backbone` (the campaign-sizing benchmark): a tiny
backbone, two interleaved rounds, the JSON it writes."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_backbone_writes_every_configuration(tmp_path):
    out = tmp_path / "steps.json"
    kwargs = json.dumps({"stem_filters": 8, "stage_filters": [8, 16], "blocks_per_stage": [1, 1]})
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.bench_backbone", "--input_shape", "16,16,3",
         "--model_kwargs", kwargs, "--batch", "4", "--steps", "2", "--warmup", "1",
         "--abc_bases", "2,1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_USE_LEGACY_KERAS="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert list(rows) == ["float", "bnn_bireal", "bnn", "bnn_bop", "pabt",
                          "pabt_one_activation_base", "pabt_pruned", "abc_2x1"]
    assert rows["bnn_bireal"]["ratio_to_bnn_bireal"] == 1.0
    # fmnist_resnet with two stages of one block: 4 binary 3x3 convolutions, M = N = 3.
    assert rows["pabt"]["active_binary_convs"] == 36
    assert rows["pabt_one_activation_base"]["active_binary_convs"] == 12
    assert rows["pabt_pruned"]["active_binary_convs"] == 4
    assert rows["float"]["active_binary_convs"] == 0
    for row in rows.values():
        assert 0 < row["q25_ms"] <= row["median_ms"] <= row["q75_ms"]
        assert row["ratio_to_bnn_bireal"] > 0
    assert "pabt_pruned" in proc.stdout and result["threads"] == 1
