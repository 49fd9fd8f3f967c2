"""Segmentation data from image / mask pairs on disk (`pabt_tf.data.segmentation`): the
SegNet (CamVid) layout with its foreign list paths, a user's mask folders with
classes.json, joint augmentation, label resizing, class weights, bad input, and a
read-only data directory. Every file is a real PNG written here."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pabt_tf.data import (
    CAMVID_IGNORE_LABEL,
    camvid_datasets,
    load_datasets,
    mask_folder_datasets,
    median_frequency_weights,
)
from pabt_tf.losses import SegmentationCrossentropy

H, W = 24, 32


def _label(rng, classes=11, ignore=CAMVID_IGNORE_LABEL):
    """A label image with large regions (left/right asymmetric) and some ignored pixels."""
    label = np.zeros((H, W), np.uint8)
    label[:, W // 2:] = rng.integers(1, classes)
    label[: H // 3, :] = rng.integers(0, classes)
    label[H // 2:, : W // 4] = rng.integers(0, classes)
    label[-3:, -5:] = ignore
    return label


def _image_for(label, rng):
    """An RGB image whose red channel is 20 · label (exactly), the rest noise."""
    image = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
    image[..., 0] = np.minimum(20 * label.astype(np.int32), 255)
    return image


def _write_camvid(root, counts=(6, 3, 4), seed=0):
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "val", "test"), counts):
        os.makedirs(root / split)
        os.makedirs(root / f"{split}annot")
        lines = []
        for i in range(n):
            label = _label(rng)
            name = f"{split}_{i:03d}.png"
            Image.fromarray(_image_for(label, rng)).save(root / split / name)
            Image.fromarray(label, mode="L").save(root / f"{split}annot" / name)
            # Paths from the machine that wrote the lists (SegNet's).
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def _write_mask_folder(root, counts=(6, 0, 3), classes=4, ignore=255, palette=True, seed=1):
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "val", "test"), counts):
        if n == 0:
            continue
        os.makedirs(root / split / "images")
        os.makedirs(root / split / "masks")
        for i in range(n):
            label = _label(rng, classes, ignore)
            Image.fromarray(_image_for(label, rng)).save(root / split / "images" / f"f{i}.png")
            mask = Image.fromarray(label, mode="L")
            if palette:
                mask = mask.convert("P")  # a palette PNG: the indices are the classes
            mask.save(root / split / "masks" / f"f{i}.png")
    (root / "classes.json").write_text(json.dumps(
        {"num_classes": classes, "ignore_label": ignore, "classes": [f"c{i}" for i in range(classes)]}))
    return root


def _all(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_camvid_layout_resolves_foreign_list_paths(tmp_path):
    root = _write_camvid(tmp_path / "camvid")
    ds = load_datasets("camvid", data_dir=str(root), batch_size=4, validation_size=0, augment=False)
    assert (ds.train_size, ds.validation_size, ds.test_size) == (6, 3, 4)
    assert ds.task == "segmentation" and ds.ignore_label == 11 and ds.num_classes == 11
    assert ds.classes[0] == "Sky" and ds.input_shape == (H, W, 3) and ds.full_size == (H, W)
    x, y = _all(ds.test)
    assert x.shape == (4, H, W, 3) and y.shape == (4, H, W) and y.dtype == np.int32
    # Normalised with the training split's statistics: train images have mean 0, std 1.
    tx, _ = _all(ds.train)
    np.testing.assert_allclose(tx.reshape(-1, 3).mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(tx.reshape(-1, 3).std(0), 1, atol=1e-3)
    # Labels arrive unchanged (no resize): the written test labels, in list order.
    written = [np.asarray(Image.open(root / "testannot" / f"test_{i:03d}.png")) for i in range(4)]
    np.testing.assert_array_equal(y, np.stack(written))


def test_mask_folder_reads_palette_masks_and_classes_json(tmp_path):
    root = _write_mask_folder(tmp_path / "mine")
    ds = mask_folder_datasets(str(root), batch_size=2, validation_size=2, augment=False)
    assert ds.num_classes == 4 and ds.ignore_label == 255 and ds.classes == ("c0", "c1", "c2", "c3")
    assert (ds.train_size, ds.validation_size, ds.test_size) == (4, 2, 3)
    _, y = _all(ds.validation)
    assert set(np.unique(y)) <= {0, 1, 2, 3, 255}
    # Without a val folder, validation must be carved; with val_size 0 it is refused.
    with pytest.raises(ValueError, match="no val split"):
        mask_folder_datasets(str(root), validation_size=0)
    # Arguments override classes.json; an ignore label inside the classes is refused.
    with pytest.raises(ValueError, match="ignore_label"):
        mask_folder_datasets(str(root), ignore_label=2, validation_size=2)


def test_joint_augmentation_keeps_image_and_label_aligned(tmp_path):
    root = _write_camvid(tmp_path / "camvid", counts=(8, 2, 2))
    ds = camvid_datasets(str(root), batch_size=8, validation_size=0, augment=True,
                         scale_range=(1.2, 1.6), seed=3)
    for _ in range(2):  # two epochs: fresh draws
        x, y = next(iter(ds.train))
        red = x.numpy()[..., 0] * ds.std[0] + ds.mean[0]  # back to 0-1
        y = y.numpy()
        labelled = y != ds.ignore_label
        expected = np.minimum(20 * y, 255) / 255.0
        # Away from region borders (bilinear blending) red is 20 · label.
        match = np.abs(red - expected) < 0.5 / 255.0 + 1e-3
        assert match[labelled].mean() > 0.8
        # A flip or crop of the image alone would break that: compare with the label
        # mirrored (the regions are left/right asymmetric).
        mirrored = np.abs(red - np.minimum(20 * y[:, :, ::-1], 255) / 255.0) < 0.5 / 255.0 + 1e-3
        assert mirrored[labelled].mean() < match[labelled].mean() - 0.2
    # Augmentation changes the training batches only: validation is the plain data.
    v1, v2 = _all(ds.validation), _all(ds.validation)
    np.testing.assert_array_equal(v1[1], v2[1])


def test_resizing_labels_never_invents_a_class(tmp_path):
    root = _write_mask_folder(tmp_path / "mine", classes=9, ignore=200, palette=False)
    ds = mask_folder_datasets(str(root), batch_size=4, validation_size=1, image_size=(13, 19),
                              augment=True)
    written = set()
    for split in ("train", "test"):
        for name in os.listdir(root / split / "masks"):
            written |= set(np.unique(np.asarray(Image.open(root / split / "masks" / name))).tolist())
    for part in (ds.train, ds.validation, ds.test):
        _, y = _all(part)
        assert y.shape[1:] == (13, 19)
        assert set(np.unique(y).tolist()) <= written
    # The full-resolution test labels stay as written.
    _, full = _all(ds.test_full)
    assert full.shape[1:] == (H, W) and ds.full_size == (H, W)


def test_median_frequency_weights_by_hand():
    a = np.array([[0, 0, 1, 1]], np.uint8)  # class 0: 2 px, class 1: 2 px (of 4)
    b = np.array([[0, 0, 0, 2]], np.uint8)  # class 0: 3 px, class 2: 1 px (of 4)
    c = np.array([[9, 9, 9, 9]], np.uint8)  # only ignored pixels: counts for nothing
    # f0 = 5/8, f1 = 2/4, f2 = 1/4, class 3 absent; median(f) = 1/2.
    w = median_frequency_weights([a, b, c], 4)
    np.testing.assert_allclose(w, [0.5 / 0.625, 1.0, 2.0, 0.0])


@pytest.mark.parametrize("case", ["image_without_mask", "mask_without_image", "sizes_differ",
                                  "label_out_of_range", "empty_split", "rgb_mask"])
def test_bad_mask_folders_fail_naming_the_path(tmp_path, case):
    root = _write_mask_folder(tmp_path / "mine")
    masks = root / "train" / "masks"
    if case == "image_without_mask":
        os.remove(masks / "f2.png")
        match = "f2.png: image without a mask"
    elif case == "mask_without_image":
        os.remove(root / "train" / "images" / "f2.png")
        match = "f2.png: mask without an image"
    elif case == "sizes_differ":
        Image.fromarray(np.zeros((H, W + 1), np.uint8), mode="L").save(masks / "f1.png")
        match = "f1.png: mask of size"
    elif case == "label_out_of_range":
        label = np.zeros((H, W), np.uint8)
        label[0, 0] = 7  # 4 classes, ignore 255
        Image.fromarray(label, mode="L").save(masks / "f3.png")
        match = r"f3.png: label values \[7\]"
    elif case == "empty_split":
        for name in os.listdir(root / "test" / "images"):
            os.remove(root / "test" / "images" / name)
            os.remove(root / "test" / "masks" / name)
        match = "'test' is empty"
    else:
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(masks / "f0.png")
        match = "f0.png: a mask must hold one class id"
    with pytest.raises(ValueError, match=match):
        mask_folder_datasets(str(root), validation_size=2)


def test_bad_camvid_lists_fail_naming_the_line(tmp_path):
    root = _write_camvid(tmp_path / "camvid")
    lines = (root / "val.txt").read_text().splitlines()
    (root / "val.txt").write_text("\n".join(lines + ["only_one_path.png"]) + "\n")
    with pytest.raises(ValueError, match=r"val.txt:4: expected"):
        camvid_datasets(str(root))
    (root / "val.txt").write_text("\n".join(lines[:2] + ["/x/val/gone.png /x/valannot/gone.png"]) + "\n")
    with pytest.raises(FileNotFoundError, match=r"val.txt:3: .*gone.png"):
        camvid_datasets(str(root))
    with pytest.raises(ValueError, match="own val split"):
        _write_camvid(tmp_path / "c2")
        camvid_datasets(str(tmp_path / "c2"), validation_size=5)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        camvid_datasets(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("kwargs,name", [
    (dict(image_size=(0, 8)), "image_size"), (dict(crop_size=(64, 8)), "crop_size"),
    (dict(scale_range=(0.5, 1.0)), "scale_range"), (dict(class_weights="inverse"), "class_weights"),
    (dict(class_weights=[1.0] * 3), "class_weights"), (dict(mean=(0.5, float("nan"), 0.5), std=(1, 1, 1)), "mean"),
    (dict(batch_size=0), "batch_size"), (dict(train_limit=-1), "train_limit"),
    (dict(validation_size=1.5), "validation_size"),
])  # fmt: skip
def test_bad_arguments_name_the_argument(tmp_path, kwargs, name):
    root = _write_camvid(tmp_path / "camvid")
    with pytest.raises(ValueError, match=f"`{name}`"):
        camvid_datasets(str(root), **kwargs)


def test_read_only_data_directory_is_read_and_left_unchanged(tmp_path):
    root = _write_camvid(tmp_path / "camvid")
    before = sorted((p, os.stat(os.path.join(p, n)).st_mtime_ns) for p, _, names in os.walk(root) for n in names)
    modes = {}
    for path, dirs, names in os.walk(root):
        for n in names:
            full = os.path.join(path, n)
            modes[full] = os.stat(full).st_mode
            os.chmod(full, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    for path, dirs, _ in sorted(os.walk(root), reverse=True):
        os.chmod(path, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        ds = camvid_datasets(str(root), batch_size=2, class_weights="median_frequency")
        assert ds.class_weights is not None and len(ds.class_weights) == 11
        next(iter(ds.train))
    finally:
        for path, dirs, _ in os.walk(root):
            os.chmod(path, stat.S_IRWXU)
    after = sorted((p, os.stat(os.path.join(p, n)).st_mtime_ns) for p, _, names in os.walk(root) for n in names)
    assert after == before  # nothing written, nothing added


def test_segmentation_crossentropy_by_hand():
    logits = tf.constant([[[[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], [[0.5, 0.5, 0.5], [1.0, -1.0, 3.0]]]])
    labels = tf.constant([[[0, 1], [9, 2]]])  # one pixel ignored (9)
    weights = [1.0, 2.0, 0.5]
    ce = -tf.nn.log_softmax(logits).numpy()[0]
    expected = (1.0 * ce[0, 0, 0] + 2.0 * ce[0, 1, 1] + 0.5 * ce[1, 1, 2]) / (1.0 + 2.0 + 0.5)
    loss = SegmentationCrossentropy(weights, ignore_label=9)
    assert float(loss(labels, logits)) == pytest.approx(expected, rel=1e-6)
    # Only ignored pixels: 0, not NaN; the config round-trips.
    assert float(loss(tf.fill([1, 2, 2], 9), logits)) == 0.0
    again = SegmentationCrossentropy.from_config(loss.get_config())
    assert float(again(labels, logits)) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="class_weights"):
        SegmentationCrossentropy([1.0, -1.0])
