"""Experiment programs: the quickstart end to end, a training run's outputs, cost
accounting and the comparison table."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import pabt_tf as pabt
from experiments import compare, reverify, train
from experiments.plots import plot_comparison
from pabt_tf import models
from pabt_tf.costs import model_costs
from pabt_tf.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, load_fashion_mnist
from pabt_tf.run.plots import plot_run, pruning_trajectory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_end_to_end_reduced(tmp_path):
    out = tmp_path / "qs"
    cmd = [sys.executable, "-m", "experiments.quickstart", "--epochs=1", "--steps=6",
           "--train_limit=768", "--test_limit=256", "--verify_samples=64", f"--output_dir={out}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # A quiet start (`make demo`): no TensorFlow/absl C++ log line, not even the CUDA
    # wheel's "failed call to cuInit" on a machine without a GPU.
    native = r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]|^\d{4}-\d\d-\d\d [\d:.]+: [IWEF] |cuInit|absl::"
    assert not re.search(native, proc.stderr, re.M), proc.stderr[-3000:]
    for name in ("model.tflite", "model.keras", "pruning.png", "history.json", "results.json"):
        assert (out / name).stat().st_size > 0, name
    assert any((out / "checkpoints").iterdir()) and any((out / "tensorboard").iterdir())
    # The printed table names the plot and the flatbuffer.
    assert f"pruning plot : {out / 'pruning.png'}" in proc.stdout
    assert f"flatbuffer   : {out / 'model.tflite'}" in proc.stdout
    assert "PASSED" in proc.stdout and "9 → 1.00" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["mean_binary_convs"] == 1.0 and results["active_binary_convs"] == [1, 1, 1, 1]
    assert results["verification"]["ok"] and results["found_bconvs"] == 4
    assert results["binary_macs"] * 9 == results["unpruned_binary_macs"]
    assert results["mbn_test_accuracy"] is not None
    history = json.loads((out / "history.json").read_text())
    assert history["initial_active"] == [9, 9, 9, 9] and history["active_per_layer"][-1] == [1, 1, 1, 1]
    # The pruning figure's trajectory: every pruning event, MAC-weighted, down to a BNN.
    epochs, means = pruning_trajectory(history)
    assert len(means) == len(history["pruning_events"]) + 1 >= 2
    assert means[0] == 9.0 and means[-1] == 1.0 and np.all(np.diff(means) <= 0)
    assert epochs[0] == 0.0 and np.all(np.diff(epochs) >= 0) and epochs[-1] <= 1.0
    # Independent check: reload the saved model (no custom_objects) and verify the
    # flatbuffer against it on real test images.
    model = tf.keras.models.load_model(out / "model.keras")
    assert pabt.mean_binary_convs(model) == 1.0
    x, _ = load_fashion_mnist("test", limit=300)
    x = (x[200:] - FASHION_MNIST_MEAN[0]) / FASHION_MNIST_STD[0]
    result = pabt.verify(model, (out / "model.tflite").read_bytes(), x)
    assert result.ok and result.max_abs_diff <= 1e-3 and result.top1_agreement >= 0.99


def test_train_bop_baseline_run_directory(tmp_path):
    results = train.train(dict(
        method="bnn_bop", epochs=1, steps=3, train_limit=384, validation_limit=128,
        test_limit=128, verify_samples=16, output_dir=str(tmp_path), bop_gamma=1e-3,
        model_kwargs={"filters": [8, 8, 16, 16], "stem_filters": 8},
    ))  # fmt: skip
    assert results["verification"]["ok"] and results["found_bconvs"] == 4
    assert results["op_counts"]["LceBconv2d"] == 4
    assert results["flatbuffer_bytes"] == os.path.getsize(tmp_path / "model.tflite")
    assert 0.0 <= results["test_accuracy"] <= 1.0 and results["mean_binary_convs"] is None
    assert results["flatbuffer_accuracy"] == pytest.approx(results["keras_accuracy_on_verify_samples"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["config"]["method"] == "bnn_bop" and saved["binary_macs"] == results["binary_macs"]
    assert (tmp_path / "pruning.png").stat().st_size > 0
    # A run whose conversion failed is converted again from its model.keras.
    broken = {k: v for k, v in saved.items() if k not in (
        "verification", "found_bconvs", "op_counts", "flatbuffer_bytes", "tflite",
        "flatbuffer_accuracy")}
    broken["convert_error"] = "ImportError: simulated"
    (tmp_path / "results.json").write_text(json.dumps(broken))
    os.remove(tmp_path / "model.tflite")
    again = train.reconvert(str(tmp_path))
    assert again["verification"]["ok"] and again["found_bconvs"] == 4
    assert again["earlier_convert_error"] == "ImportError: simulated" and "convert_error" not in again
    assert again["flatbuffer_bytes"] == os.path.getsize(tmp_path / "model.tflite")
    assert json.loads((tmp_path / "results.json").read_text())["found_bconvs"] == 4
    assert again["test_accuracy"] == saved["test_accuracy"]  # no retraining
    # experiments.reverify checks the flatbuffer again beside the run's own verification,
    # and compare reports the recheck.
    recheck = reverify.reverify(str(tmp_path))
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["verification_recheck"] == json.loads(json.dumps(recheck))
    assert stored["verification"] == json.loads(json.dumps(again["verification"]))
    assert recheck["ok"] and recheck["samples"] == 16 and recheck["differing"] == 0
    stored["verification_recheck"]["ok"] = False
    assert not compare.aggregate({"bnn_bop": [stored]})[0]["verified"]
    stored["keras_accuracy_on_verify_samples"] += 0.5  # not these samples
    (tmp_path / "results.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="not the same samples"):
        reverify.reverify(str(tmp_path))
    stored["keras_accuracy_on_verify_samples"] -= 0.5
    stored["verification_recheck"]["ok"] = True
    (tmp_path / "results.json").write_text(json.dumps(stored))
    report = tmp_path / "verification.md"
    assert reverify.main([str(tmp_path), "--report", str(report)]) == 0  # checked before
    assert "| `.` | within 1e-3, max " in report.read_text()
    assert "PASSED: 0 of 16 beyond 1e-3, 0 ties" in report.read_text()
    os.remove(tmp_path / "model.keras")
    assert reverify.main([str(tmp_path)]) == 0  # a run without its model: listed, skipped
    with pytest.raises(FileNotFoundError, match="no model.keras"):
        reverify.reverify(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no model.keras"):
        train.reconvert(str(tmp_path))


def test_model_costs_count_active_binary_convolutions():
    kwargs = dict(filters=(8, 8, 16, 16), stem_filters=4)
    bnn = models.fmnist_cnn("bnn", **kwargs)
    flt = models.fmnist_cnn("float", **kwargs)
    mbn = models.fmnist_cnn("pabt", weight_bases=2, activation_bases=3, **kwargs)
    c_bnn, c_float, c_mbn = model_costs(bnn), model_costs(flt), model_costs(mbn)
    # 14x14x(3x3x4x8) + 14x14x(3x3x8x8) + 7x7x(3x3x8x16) + 7x7x(3x3x16x16)
    expected = 14 * 14 * 9 * (4 * 8 + 8 * 8) + 7 * 7 * 9 * (8 * 16 + 16 * 16)
    assert c_bnn["binary_macs"] == expected == c_bnn["bops"]
    assert c_mbn["binary_macs"] == 6 * expected
    assert c_float["binary_macs"] == 0
    assert c_float["float_macs"] == c_bnn["float_macs"] + expected
    for layer in pabt.pabt_layers(mbn):
        layer.set_binary_conv_mask(np.eye(2, 3))
    assert model_costs(mbn)["binary_macs"] == 2 * expected
    assert c_bnn["ops"] == pytest.approx(c_bnn["float_macs"] + expected / 64)


def test_schedule_fractions_become_steps():
    config = dict(train.DEFAULTS, prune_begin=0.1, prune_end=0.6, decay_steps=0)
    schedule = train._schedule(config, 1000)
    assert (schedule.begin_step, schedule.end_step, schedule.frequency) == (100, 600, 12)
    # The network must be a BNN before training ends, soft pruning included.
    late = train._schedule(dict(config, prune_end=1.0, decay_steps=5), 100)
    assert late.end_step + 5 - 1 <= 99
    assert isinstance(train._schedule(dict(config, prune_schedule="oneshot"), 50),
                      pabt.schedules.OneShot)  # fmt: skip


def test_comparison_table_and_verdict_from_results(tmp_path):
    def run(method, seed, acc):
        return {"config": {"seed": seed}, "test_accuracy": acc, "bops": 100, "binary_macs": 100,
                "float_macs": 5, "flatbuffer_bytes": 2048, "keras_file_bytes": 4096,
                "found_bconvs": 4, "verification": {"ok": True, "max_abs_diff": 1e-6, "top1_agreement": 1.0},
                "train_seconds": 120.0, "mean_binary_convs": 1.0 if method == "pabt" else None}  # fmt: skip

    results = {
        "pabt": [run("pabt", s, a) for s, a in enumerate((0.90, 0.92, 0.91))],
        "bnn": [run("bnn", s, a) for s, a in enumerate((0.89, 0.90, 0.91))],
        "bnn_bop": [run("bnn_bop", s, a) for s, a in enumerate((0.92, 0.92, 0.92))],
    }
    rows = compare.aggregate(results)
    assert rows[0]["accuracy_mean"] == pytest.approx(0.91)
    assert rows[0]["accuracy_std"] == pytest.approx(0.01)
    table = compare.markdown_table(rows)
    assert "**91.00 ± 1.00**" in table and "90.00, 92.00, 91.00" in table and "2.0 KiB" in table
    assert "100.0 %, 1.0e-06, 3/3" in table
    # Runs that recorded samples beyond atol: the table counts them and their ties.
    tied = [dict(run("bnn", s, 0.9), verification={
        "ok": True, "exact": s != 0, "max_abs_diff": 0.4 if s == 0 else 1e-6,
        "top1_agreement": 1.0, "differing": int(s == 0), "ties": int(s == 0)}) for s in range(3)]
    assert "100.0 %, 4.0e-01, 2/3 (1 samples beyond, 1 ties)" in compare.markdown_table(
        compare.aggregate({"bnn": tied}))
    lines = compare.verdict(rows)
    assert lines[0] == "PaBT's BNN vs Larq BNN (STE, latent weights): +1.00 p.p."
    assert lines[1] == "PaBT's BNN vs Larq BNN (Bop, latent-free): -1.00 p.p."
    # The goal is against the best baseline (here Bop), not the STE BNN.
    assert lines[2].startswith("PaBT's BNN vs the best BNN baseline (Larq BNN (Bop")
    assert "-1.00 p.p. (goal ≥ +1.00): NOT met" in lines[2]
    lines = compare.verdict(rows, margin=-1.0)
    assert lines[2].endswith("(goal ≥ -1.00): met")
    abc = [dict(run("abc", s, 0.9), config={"seed": s, "model_kwargs": {"abc_bases": [2, 1]}})
           for s in range(2)]
    assert compare.aggregate({"abc": abc}, tag="_2x1")[0]["label"] == "ABC-Net 2/1 (MBN) [2x1]"
    assert compare.aggregate({"abc": [run("abc", 0, 0.9)]})[0]["label"] == "ABC-Net 3/3 (MBN)"
    variant = compare.aggregate({"pabt": results["pabt"]}, tag="_soft")
    assert variant[0]["label"] == "PaBT → BNN [soft]"
    full = compare.aggregate({"float": [run("float", s, 0.95) for s in range(3)]})
    # A budget run is labelled by its budget and held to no BNN goal.
    budget = [dict(r, config={"seed": r["config"]["seed"], "budget": 2.0}, mean_binary_convs=2.0)
              for r in results["pabt"]]
    budget = compare.aggregate({"pabt": budget}, tag="_b2")
    assert budget[0]["label"] == "PaBT budget 2 [b2]"
    lines = compare.verdict(rows + variant + full + budget)
    assert len(lines) == 8 and lines[4].startswith("PaBT's BNN [soft] vs Larq BNN (STE")
    assert lines[3] == "PaBT's BNN below full precision: 4.00 p.p."
    # PaBT without latent weights makes its claim against the Bop BNN, not the best one.
    free = [dict(run("pabt", s, 0.915), config={"seed": s, "latent_weights": False}) for s in range(3)]
    ste = [run("bnn", s, 0.95) for s in range(3)]
    bop = [run("bnn_bop", s, 0.90) for s in range(3)]
    lines = compare.verdict(compare.aggregate({"pabt": free}, tag="_bop")
                            + compare.aggregate({"bnn": ste, "bnn_bop": bop}))
    assert lines[2] == ("PaBT's BNN [bop] vs the latent-weight-free BNN baseline (Larq BNN (Bop, "
                        "latent-free)): +1.50 p.p. (goal ≥ +1.00): met")
    path = plot_comparison(rows, str(tmp_path / "c.png"))
    assert os.path.getsize(path) > 0
    hist = {"epoch": [0, 1], "val_accuracy": [0.5, 0.6], "accuracy": [0.4, 0.6],
            "mean_binary_convs": [3.0, 1.0], "initial_mean_binary_convs": 9.0,
            "layer_names": ["a", "b"], "active_per_layer": [[3, 3], [1, 1]],
            "initial_active": [9, 9], "final_masks": [np.eye(3)[:, :1].tolist()] * 2}  # fmt: skip
    assert os.path.getsize(plot_run(hist, str(tmp_path / "r.png"))) > 0


def test_pruning_trajectory_is_the_mac_weighted_mean_after_every_event(tmp_path):
    hist = {"epoch": [0, 1], "val_accuracy": [0.5, 0.6], "mean_binary_convs": [3.0, 1.0],
            "initial_mean_binary_convs": 9.0, "layer_names": ["a", "b"],
            "active_per_layer": [[3, 3], [1, 1]], "initial_active": [9, 9],
            "final_masks": [np.eye(3).tolist(), np.eye(3)[:, :1].tolist()],
            "pruning_events": [{"step": 5, "active_after": [6, 9]},
                               {"step": 15, "active_after": [1, 3]}],
            "steps_per_epoch": 10, "binary_conv_macs": [1, 3]}  # fmt: skip
    epochs, means = pruning_trajectory(hist)
    assert epochs.tolist() == [0.0, 0.5, 1.5]
    assert means.tolist() == pytest.approx([9.0, (6 + 3 * 9) / 4, (1 + 3 * 3) / 4])
    assert os.path.getsize(plot_run(hist, str(tmp_path / "r.png"))) > 0
    # Runs recorded before the MACs and steps per epoch were kept: per-epoch points only.
    old = {k: v for k, v in hist.items() if k not in ("binary_conv_macs", "steps_per_epoch")}
    assert pruning_trajectory(old) is None
    assert os.path.getsize(plot_run(old, str(tmp_path / "old.png"))) > 0


@pytest.mark.slow
def test_paper_recipes_run_on_tiny_prepared_tfds_data(tmp_path):
    """The CIFAR-10 and Cityscapes recipes, end to end on tiny data in the tfds format."""
    from test_data import _store

    rng = np.random.default_rng(0)
    cifar = [{"id": f"x{i}", "image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
              "label": i % 10} for i in range(24)]  # fmt: skip
    _store("cifar10", {"train": cifar[:16], "test": cifar[16:]}, tmp_path)
    results = train.train(dict(
        dataset="cifar10", data_dir=str(tmp_path), model="resnet20", method="pabt",
        model_kwargs={"width": 4}, epochs=2, batch_size=4, validation_size=0,
        verify_samples=8, output_dir=str(tmp_path / "cifar_run"), save_model=False,
    ))  # fmt: skip
    assert results["mean_binary_convs"] == 1.0 and results["found_bconvs"] == 18
    assert results["verification"]["ok"] and results["train_size"] == 16

    label = np.zeros((1024, 2048, 1), np.uint8)
    label[:512], label[512:, :1024] = 7, 26
    city = [{"image_id": f"c{i}", "image_left": np.full((1024, 2048, 3), 60 * i, np.uint8),
             "segmentation_label": label} for i in range(3)]  # fmt: skip
    _store("cityscapes", {"train": city[:2], "validation": city[2:]}, tmp_path,
           config="semantic_segmentation")  # fmt: skip
    results = train.train(dict(
        dataset="cityscapes", data_dir=str(tmp_path), model="segmentation_resnet18",
        method="bnn", model_kwargs={"width": 4, "decoder_filters": 8}, epochs=1, batch_size=2,
        data_kwargs={"image_size": [64, 128]},
        validation_size=0, verify_samples=1, output_dir=str(tmp_path / "city_run"), save_model=False,
    ))  # fmt: skip
    assert 0.0 <= results["test_mean_iou"] <= 1.0 and 0.0 <= results["test_accuracy"] <= 1.0
    assert results["verification"]["max_abs_diff"] < 1e-3 and results["found_bconvs"] == 16


def test_self_distillation_loss_and_teacher_snapshot():
    from pabt_tf.run.distill import TeacherSnapshot, with_self_distillation

    base = models.fmnist_cnn("pabt", filters=(4, 4, 8, 8), stem_filters=4, weight_bases=2,
                             activation_bases=2)  # fmt: skip
    model = with_self_distillation(base, weight=0.25, temperature=2.0)
    assert len(model.weights) == len(base.weights)  # the teacher is not part of the model
    model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 28, 28, 1)), tf.float32)
    y = tf.constant([0, 1, 2, 3])
    snapshot = TeacherSnapshot(step=1)
    snapshot.set_model(model)
    for layer in pabt.pabt_layers(model):  # make the student differ from the teacher copy
        layer.gate.assign(layer.gate * 0.5)
    pred = model(x, training=False)
    ce = float(tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, pred))
    assert float(model.compute_loss(x, y, pred)) == pytest.approx(ce, rel=1e-5)  # not active yet
    snapshot.on_train_batch_begin(0)
    assert float(model._distill_active.numpy()) == 0.0
    snapshot.on_train_batch_begin(1)  # step 1: copy the model into the teacher, switch on
    assert snapshot.taken_at == 1 and float(model._distill_active.numpy()) == 1.0
    for a, b in zip(model._teacher.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    for layer in pabt.pabt_layers(model):
        layer.gate.assign(layer.gate * 0.5)
    pred = model(x, training=False)
    t = tf.nn.softmax(model._teacher(x, training=False) / 2.0).numpy()
    log_s = tf.nn.log_softmax(pred / 2.0).numpy()
    kd = 4.0 * np.mean(np.sum(t * (np.log(t + 1e-8) - log_s), axis=-1))
    ce = float(tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, pred))
    assert float(model.compute_loss(x, y, pred)) == pytest.approx(0.75 * ce + 0.25 * kd, rel=1e-4)
