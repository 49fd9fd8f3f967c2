"""A segmentation run end to end on a small real mask folder: the binary ResNet-18 encoder
with its float decoder, PaBT pruned to a BNN during `fit`, the loss and metrics chosen by
the data set's task (never its name), mean IoU at the model's and the labels' original
resolution, LCE conversion with one `LceBconv2d` per binary convolution, per-pixel
agreement with Keras, and the comparison's mIoU rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from experiments import compare
from pabt_tf.run import train as run_train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 72, 80  # resized to 64 x 64 for the model: the original size differs


def _mask_folder(root, counts=(12, 4, 4), classes=3, seed=0):
    """Images whose colour says the class: a learnable task (a horizon and a blob)."""
    rng = np.random.default_rng(seed)
    palette = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]], np.uint8)
    for split, n in zip(("train", "val", "test"), counts):
        os.makedirs(root / split / "images")
        os.makedirs(root / split / "masks")
        for i in range(n):
            label = np.zeros((H, W), np.uint8)
            label[int(rng.integers(20, 50)):] = 1
            r, c = rng.integers(10, 50, 2)
            label[r:r + 16, c:c + 20] = 2
            label[:3, :3] = 255  # ignored
            image = palette[np.minimum(label, 2)] + rng.integers(0, 30, (H, W, 3)).astype(np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"{i}.png")
            Image.fromarray(label, mode="L").save(root / split / "masks" / f"{i}.png")
    (root / "classes.json").write_text(json.dumps({"classes": ["red", "green", "blue"], "ignore_label": 255,
                                                 "colors": palette.tolist()}))
    return root


CONFIG = dict(
    dataset="mask_folder", model="segmentation_resnet18", epochs=2, batch_size=4,
    weight_bases=2, activation_bases=2,
    validation_size=0, verify_samples=4, learning_rate=5e-3, decay_steps=0,
    data_kwargs={"image_size": [64, 64], "class_weights": "median_frequency"},
    model_kwargs={"width": 8, "decoder_filters": 8},
)  # fmt: skip


@pytest.fixture(scope="module")
def pabt_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seg")
    data = _mask_folder(tmp / "data")
    out = tmp / "runs" / "pabt_s0"
    results = run_train.train(dict(CONFIG, data_dir=str(data), method="pabt", output_dir=str(out),
                                   bn_recalibration_batches=2))
    return data, out, results


def test_segmentation_pabt_run_prunes_converts_and_scores(pabt_run):
    data, out, results = pabt_run
    assert results["task"] == "segmentation" and results["mean_binary_convs"] == 1.0
    # Mean IoU from a whole-split confusion matrix, at 64 x 64 and at the labels' 72 x 80.
    assert results["miou_resolution"] == [H, W]
    full, at_input = results["test_segmentation_full"], results["test_segmentation"]
    assert 0.0 <= results["test_miou"] <= 1.0 and results["test_miou"] == full["miou"]
    assert results["test_miou_at_input"] == at_input["miou"]
    assert len(full["per_class_iou"]) == 3 and full["class_names"] == ["red", "green", "blue"]
    assert np.sum(full["confusion"]) == 4 * (H * W - 9)  # every labelled test pixel, once
    assert results["val_miou"] is not None
    # Recalibrated batch norms, then constant channels folded (none or some: recorded).
    assert isinstance(results["constant_channels_folded"], dict)
    # The loss followed the task: class-weighted, ignore label out.
    assert json.loads((out / "results.json").read_text())["config"]["dataset"] == "mask_folder"
    # LCE: one LceBconv2d per binary convolution (16 in the encoder), nothing left float,
    # and the flatbuffer's per-pixel argmax agrees with Keras.
    assert results["found_bconvs"] == 16 and results["op_counts"]["LceBconv2d"] == 16
    assert results["verification"]["ok"], results["verification"]
    assert results["verification"]["top1_agreement"] >= 0.995
    assert results["flatbuffer_accuracy"] == pytest.approx(results["keras_accuracy_on_verify_samples"], abs=0.005)
    assert os.path.getsize(out / "model.tflite") == results["flatbuffer_bytes"]


def test_comparison_rows_carry_miou(pabt_run):
    _, out, results = pabt_run
    other = json.loads(json.dumps(results))
    other["test_miou"], other["val_miou"], other["config"]["seed"] = 0.25, 0.5, 1
    rows = compare.aggregate({"pabt": [results, other]})
    row = rows[0]
    assert row["task"] == "segmentation" and row["mious"] == [results["test_miou"], 0.25]
    assert row["miou_mean"] == pytest.approx(np.mean([results["test_miou"], 0.25]))
    assert row["miou_std"] == pytest.approx(np.std([results["test_miou"], 0.25], ddof=1))
    assert row["val_miou_mean"] == pytest.approx(np.mean([results["val_miou"], 0.5]))
    table = compare.markdown_table(rows)
    assert "test mIoU (%)" in table and f"{100 * row['miou_mean']:.2f}" in table


def test_pabt_benchmark_runs_on_the_segmentation_flatbuffer(pabt_run):
    _, out, _ = pabt_run
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "pabt-benchmark"), str(out / "model.tflite"),
         "--threads", "1", "--rounds", "2", "--repeats", "1", "--kernels", "indirect_bgemm"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ms" in proc.stdout


def test_pictures_show_image_truth_and_predictions(pabt_run, tmp_path):
    from experiments import seg_pictures

    _, out, _ = pabt_run
    path = seg_pictures.picture([str(out), str(out)], ["PaBT", "again"], [0, 2], str(tmp_path / "p.png"))
    picture = np.asarray(Image.open(path).convert("RGB"))
    assert picture.shape[1] > picture.shape[0] > 100  # 2 rows of 4 panels
    # The ground-truth panel is drawn in the data set's colours (classes.json).
    assert (np.abs(picture.reshape(-1, 3)[:, None, :].astype(int) - [[200, 40, 40]]).sum(-1) == 0).any()
    with pytest.raises(ValueError, match=r"`images` must be indices in \[0, 4\)"):
        seg_pictures.picture([str(out)], [], [0, 9], str(tmp_path / "q.png"))
    assert not (tmp_path / "q.png").exists()


def test_colorize_uses_the_palette_and_blacks_out_ignored_pixels():
    from experiments import seg_pictures

    label = np.array([[0, 1], [255, 1]])
    rgb = seg_pictures.colorize(label, [(10, 20, 30), (40, 50, 60)], ignore_label=255)
    np.testing.assert_array_equal(rgb, [[[10, 20, 30], [40, 50, 60]], [[0, 0, 0], [40, 50, 60]]])
