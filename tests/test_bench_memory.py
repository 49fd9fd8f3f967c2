"""Smoke test of `experiments.bench_memory` (training memory per method): a tiny backbone,
one step per configuration, each in its own child process; the JSON's fields and the
relations between the methods that must hold whatever the machine."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ["bnn", "bnn_bop", "pabt", "pabt_latent_free"]


def _run(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "experiments.bench_memory", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ, TF_USE_LEGACY_KERAS="1"),
    )


def test_bench_memory_relations(tmp_path):
    out, md = tmp_path / "memory.json", tmp_path / "memory.md"
    kwargs = json.dumps({"stem_filters": 8, "filters": [8, 8, 16, 16]})
    proc = _run("--model", "fmnist_cnn", "--input_shape", "16,16,3", "--model_kwargs", kwargs,
                "--batch", "8", "--warmup", "1", "--steps", "1", "--jobs", "2",
                "--configs", ",".join(CONFIGS), "--json", str(out), "--markdown", str(md))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert list(rows) == CONFIGS
    assert result["environment"]["versions"]["tensorflow"] and result["batch"] == 8

    for name, row in rows.items():
        rss = row["rss"]
        assert 0 < rss["after_imports"] <= rss["peak"], name
        assert rss["peak_before_first_step"] <= rss["peak"], name
        assert rss["peak_minus_before"] == rss["peak"] - rss["before_first_step"] >= 0, name
        assert rss["sampled_peak_during_steps"] > 0, name
        v = row["variables"]
        assert v["binary_storage_dtypes"] == ["float32"], name  # ±1 kernels stored as float32
        assert v["binary_at_1_bit"] * 32 == v["binary"], name  # 4 bytes -> 1 bit per weight
        assert v["total"] == v["trainable_float"] + v["binary"] + v["non_trainable"], name
        o = row["optimizer_state"]
        assert o["total"] == o["binary_slots"] + o["float_slots"] + o["counters"] > 0, name
        alloc = row["tf_allocator"]
        if alloc is not None:  # statistics kept (oneDNN's allocator: large allocations only)
            assert alloc["peak_during_steps"] >= alloc["in_use_before_steps"] >= 0, name
            assert alloc["step_transient"] == alloc["peak_during_steps"] - alloc["in_use_before_steps"]

    bnn, bop, pabt, free = (rows[n] for n in CONFIGS)
    # fmnist_cnn: 4 binary 3x3 convs (8->8, 8->8, 8->16, 16->16), float32 kernels.
    assert bnn["variables"]["binary"] == 4 * 9 * (64 + 64 + 128 + 256)
    assert bop["variables"]["binary"] == bnn["variables"]["binary"]
    # PaBT M = N = 3 with independent bases: three kernels per layer.
    assert pabt["variables"]["binary"] == free["variables"]["binary"] == 3 * bnn["variables"]["binary"]
    # Latent weights are real-valued; Bop's kernels stay exactly ±1 after a step.
    assert bnn["variables"]["latent_float"] == bnn["variables"]["binary"]
    assert pabt["variables"]["latent_float"] == pabt["variables"]["binary"]
    assert bop["variables"]["latent_float"] == free["variables"]["latent_float"] == 0
    assert free["variables"]["binary_stored_pm1"] == free["variables"]["binary"]
    # Adam: two slots per binary weight; Bop: one. The float variables get Adam either way.
    for latent, latent_free in ((bnn, bop), (pabt, free)):
        assert latent["optimizer"] == "Adam" and latent_free["optimizer"] == "CaseOptimizer"
        assert latent["optimizer_state"]["binary_slots"] == 2 * latent["variables"]["binary"]
        assert latent_free["optimizer_state"]["binary_slots"] == latent_free["variables"]["binary"]
        assert latent_free["optimizer_state"]["float_slots"] == latent["optimizer_state"]["float_slots"]
        assert latent_free["optimizer_state"]["total"] < latent["optimizer_state"]["total"]
        assert set(latent_free["optimizer_state"]["optimizers"]) == {"Bop", "Adam"}
    assert free["active_binary_convs"] == pabt["active_binary_convs"] == 4 * 9
    assert bnn["active_binary_convs"] == 0  # not PaBT layers

    text = md.read_text()
    assert "python -m experiments.bench_memory" in text
    assert all(f"| {name} |" in text for name in CONFIGS)
    assert "Latent-weight-free PaBT" in text and "float32" in text


def test_bench_memory_refuses_bad_flags(tmp_path):
    out = tmp_path / "memory.json"
    proc = _run("--configs", "bnn,nope", "--json", str(out), timeout=120)
    assert proc.returncode != 0 and "--configs" in proc.stderr and "nope" in proc.stderr
    proc = _run("--steps", "0", "--json", str(out), timeout=120)
    assert proc.returncode != 0 and "--steps must be at least 1" in proc.stderr
    proc = _run("--model_kwargs", "{bad", "--json", str(out), timeout=120)
    assert proc.returncode != 0 and "--model_kwargs" in proc.stderr
    assert not out.exists()
