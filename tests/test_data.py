"""Input pipelines: Fashion-MNIST from the IDX files, and the tfds loaders on tiny data
written by the tests themselves in the tensorflow-datasets format (real record files and
dataset_info.json under `data_dir/<name>/<version>/`, features of the real builders)."""

import os
import socket

import numpy as np
import pytest
import tensorflow as tf

from pabt_tf import data
from pabt_tf.data.pipeline import pad_crop_flip


def _batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


# -- Fashion-MNIST ---------------------------------------------------------------------


def test_fashion_mnist_pipeline_shapes_ranges_and_split():
    ds = data.fashion_mnist_datasets(
        batch_size=64, validation_size=1000, seed=3, train_limit=300, test_limit=200
    )
    assert (ds.train_size, ds.validation_size, ds.test_size) == (300, 1000, 200)
    assert ds.input_shape == (28, 28, 1) and ds.num_classes == 10
    assert ds.steps_per_epoch == 5
    train = _batches(ds.train)
    assert [len(y) for _, y in train] == [64, 64, 64, 64, 44]
    x, y = train[0]
    assert x.shape == (64, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int32
    lo = (0 - data.FASHION_MNIST_MEAN[0]) / data.FASHION_MNIST_STD[0]
    hi = (1 - data.FASHION_MNIST_MEAN[0]) / data.FASHION_MNIST_STD[0]
    test_x = np.concatenate([b[0] for b in _batches(ds.test)])
    assert test_x.min() >= lo - 1e-6 and test_x.max() <= hi + 1e-6
    assert test_x.min() == pytest.approx(lo) and test_x.max() == pytest.approx(hi)
    # Normalised with the training statistics: mean ~0, std ~1 on real images.
    assert abs(test_x.mean()) < 0.1 and abs(test_x.std() - 1) < 0.1
    # The test pipeline is the test split, unshuffled, unaugmented.
    raw_x, raw_y = data.load_fashion_mnist("test", limit=200)
    np.testing.assert_allclose(test_x, (raw_x - data.FASHION_MNIST_MEAN[0]) / data.FASHION_MNIST_STD[0], atol=1e-6)
    assert np.array_equal(np.concatenate([b[1] for b in _batches(ds.test)]), raw_y)


def test_validation_split_is_deterministic_disjoint_and_complete():
    images = np.arange(100, dtype=np.float32)[:, None]
    labels = np.arange(100)
    (tx, ty), (vx, vy) = data.split_train_validation(images, labels, 20, seed=1)
    (tx2, _), (vx2, vy2) = data.split_train_validation(images, labels, 20, seed=1)
    (_, _), (vx3, _) = data.split_train_validation(images, labels, 20, seed=2)
    assert np.array_equal(vx, vx2) and np.array_equal(tx, tx2)
    assert not np.array_equal(np.sort(vx[:, 0]), np.sort(vx3[:, 0]))
    assert len(vy) == 20 and len(ty) == 80
    assert set(ty) | set(vy) == set(range(100)) and not set(ty) & set(vy)
    with pytest.raises(ValueError, match="validation_size"):
        data.split_train_validation(images, labels, 100)


def test_fashion_mnist_validation_split_from_train_by_seed():
    a = data.fashion_mnist_datasets(validation_size=500, seed=0, validation_limit=100, train_limit=10)
    b = data.fashion_mnist_datasets(validation_size=500, seed=0, validation_limit=100, train_limit=10)
    c = data.fashion_mnist_datasets(validation_size=500, seed=1, validation_limit=100, train_limit=10)
    va, vb, vc = (np.concatenate([y for _, y in _batches(d.validation)]) for d in (a, b, c))
    assert np.array_equal(va, vb) and not np.array_equal(va, vc)
    # Validation images are real training images (carved from the train split).
    train_x, _ = data.load_fashion_mnist("train")
    vx = np.concatenate([x for x, _ in _batches(a.validation)])
    raw = vx * data.FASHION_MNIST_STD[0] + data.FASHION_MNIST_MEAN[0]
    flat = train_x.reshape(len(train_x), -1)
    for image in raw[:3]:
        assert np.abs(flat - image.reshape(1, -1)).max(axis=1).min() < 1e-5


def test_training_pipeline_is_deterministic_per_seed_and_reshuffled_per_epoch():
    def first_epochs(seed, augment):
        ds = data.fashion_mnist_datasets(
            batch_size=32, seed=seed, train_limit=64, validation_limit=1, augment=augment
        )
        return [_batches(ds.train) for _ in range(2)]

    a, b, c = first_epochs(0, True), first_epochs(0, True), first_epochs(1, True)
    for ea, eb in zip(a, b):
        for (xa, ya), (xb, yb) in zip(ea, eb):
            assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert not np.array_equal(a[0][0][0], a[1][0][0])  # epoch 2 differs from epoch 1
    assert not np.array_equal(a[0][0][0], c[0][0][0])  # another seed differs
    # Same examples every epoch (labels are a permutation of the same multiset).
    assert sorted(np.concatenate([y for _, y in a[0]])) == sorted(np.concatenate([y for _, y in a[1]]))
    # Without augmentation the training images are exactly the (normalised) originals.
    plain = first_epochs(0, False)[0]
    raw_x, _ = data.load_fashion_mnist("train")
    flat = raw_x.reshape(len(raw_x), -1)
    image = plain[0][0][0] * data.FASHION_MNIST_STD[0] + data.FASHION_MNIST_MEAN[0]
    assert np.abs(flat - image.reshape(1, -1)).max(axis=1).min() < 1e-5


def test_augmentation_is_a_shifted_or_mirrored_copy():
    image = tf.constant(np.random.default_rng(0).random((28, 28, 1)), tf.float32)
    seen_flip = seen_shift = False
    for s in range(20):
        out = pad_crop_flip(image, tf.constant([s, 7], tf.int64), 2, True).numpy()
        assert out.shape == (28, 28, 1)
        matched = False
        for flip in (False, True):
            src = image.numpy()[:, ::-1] if flip else image.numpy()
            padded = np.pad(src, [(2, 2), (2, 2), (0, 0)])
            for dy in range(5):
                for dx in range(5):
                    if np.array_equal(padded[dy : dy + 28, dx : dx + 28], out):
                        matched = True
                        seen_flip |= flip
                        seen_shift |= (dy, dx) != (2, 2)
        assert matched
    assert seen_flip and seen_shift


def test_fashion_mnist_missing_files_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        data.fashion_mnist_datasets(data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="batch_size"):
        data.fashion_mnist_datasets(batch_size=0)
    with pytest.raises(ValueError, match="train_limit"):
        data.fashion_mnist_datasets(train_limit=0)
    with pytest.raises(ValueError, match="validation_size"):
        data.fashion_mnist_datasets(validation_size=60_000)
    with pytest.raises(ValueError, match="name"):
        data.load_datasets("mnist")


# -- IDX files and where they are read from ---------------------------------------------


def _write_idx(path, array, type_byte=0x08):
    """Write `array` as an IDX file (gzipped if `path` ends in .gz)."""
    import gzip

    dtype = {0x08: np.uint8, 0x0B: ">i2", 0x0D: ">f4"}[type_byte]
    header = bytes([0, 0, type_byte, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    raw = header + np.asarray(array, dtype).tobytes()
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(raw)
    return str(path)


def _write_fashion_mnist(directory, n_train=6, n_test=4, seed=0):
    """Tiny but well-formed Fashion-MNIST IDX files: gzipped images, plain labels."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        _write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels)
        arrays[split] = images, labels
    return arrays


def test_read_idx_round_trip(tmp_path):
    a = np.arange(-3, 3, dtype=np.int16).reshape(2, 3)
    out = data.read_idx(_write_idx(tmp_path / "a.idx", a, 0x0B))
    assert out.shape == (2, 3) and np.array_equal(out, a)
    b = np.linspace(0, 1, 4, dtype=np.float32)
    assert np.array_equal(data.read_idx(_write_idx(tmp_path / "b.idx.gz", b, 0x0D)), b)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("short", b"\x00\x00", "shorter than the 4-byte magic number"),
        ("magic", b"\x01\x00\x08\x01" + bytes(8), "bad magic number"),
        ("type", b"\x00\x00\x07\x01" + bytes(8), "unknown IDX data type 0x07"),
        ("header", b"\x00\x00\x08\x03" + bytes(6),
         "truncated IDX header: 3 dimensions need 16 bytes"),
        ("truncated", b"\x00\x00\x08\x02\x00\x00\x00\x02\x00\x00\x00\x03" + bytes(5),
         r"shape \(2, 3\) of uint8, 6 values = 6 bytes of data; the file has 5"),
        ("trailing", b"\x00\x00\x08\x01\x00\x00\x00\x02" + bytes(3), "the file has more than 2"),
        ("huge", b"\x00\x00\x08\x03" + b"\x00\x00\xff\xff" * 3 + bytes(8),
         r"more than MAX_IDX_BYTES = 2147483648"),
        ("wide", b"\x00\x00\x0b\x01\x00\x00\x00\x02" + bytes(3), "int16, 2 values = 4 bytes"),
    ],
)  # fmt: skip
def test_read_idx_rejects_malformed_files(tmp_path, name, content, message):
    path = tmp_path / f"{name}-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        data.read_idx(str(path))
    assert str(path) in str(err.value)


def test_read_idx_stops_a_gzip_bomb_at_the_declared_size(tmp_path):
    """A small .gz that inflates far past its header's shape is rejected after reading
    only the declared bytes plus one, not inflated whole."""
    import gzip
    import tracemalloc

    bomb = tmp_path / "bomb-idx1-ubyte.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        f.write(b"\x00\x00\x08\x01\x00\x00\x00\x04" + bytes(4))
        for _ in range(64):
            f.write(bytes(1 << 20))  # 64 MiB of trailing zeros, ~64 KiB compressed
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="declares shape \\(4,\\).*the file has more than 4"):
            data.read_idx(str(bomb))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"read_idx allocated {peak} bytes for a 4-byte array"


def test_read_idx_rejects_broken_gzip(tmp_path):
    import gzip

    whole = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x04" + bytes(4))
    for name, content in (("cut.gz", whole[:-12]), ("plain.gz", b"\x00\x00\x08\x01" + bytes(8))):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="is not complete gzip data") as err:
            data.read_idx(str(tmp_path / name))
        assert str(tmp_path / name) in str(err.value)


def test_load_fashion_mnist_rejects_files_that_disagree(tmp_path):
    arrays = _write_fashion_mnist(tmp_path)
    images, labels = arrays["test"]
    labels_path = _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:3])
    with pytest.raises(ValueError, match=r"holds 4 images but .* holds 3 labels") as err:
        data.load_fashion_mnist("test", data_dir=str(tmp_path))
    assert labels_path in str(err.value)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, 1, 10, 2]))
    with pytest.raises(ValueError, match=r"expected labels 0\.\.9, found 10"):
        data.load_fashion_mnist("test", data_dir=str(tmp_path))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels.astype(np.int16), 0x0B)
    with pytest.raises(ValueError, match=r"labels, uint8 of shape \(n,\); found int16"):
        data.load_fashion_mnist("test", data_dir=str(tmp_path))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    images_path = _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images[:, :27])
    shape = r"images, uint8 of shape \(n, 28, 28\); found uint8 \(4, 27, 28\)"
    with pytest.raises(ValueError, match=shape) as err:
        data.load_fashion_mnist("test", data_dir=str(tmp_path))
    assert images_path in str(err.value)


def test_fashion_mnist_dir_is_read_when_data_is_loaded(tmp_path, monkeypatch):
    monkeypatch.delenv("PABT_FASHION_MNIST_DIR", raising=False)
    assert data.fashion_mnist_dir() == data.FASHION_MNIST_DEFAULT_DIR
    # Set after pabt_tf.data was imported: the next load uses it.
    monkeypatch.setenv("PABT_FASHION_MNIST_DIR", str(tmp_path))
    assert data.fashion_mnist_dir() == str(tmp_path)
    arrays = _write_fashion_mnist(tmp_path)
    x, y = data.load_fashion_mnist("test")
    assert x.shape == (4, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_allclose(x[..., 0], arrays["test"][0] / 255.0, atol=1e-7)
    assert np.array_equal(y, arrays["test"][1])
    # (Validation 1 of 6: the other 5 keep a training image of each of their 5 labels.)
    ds = data.load_datasets("fashion_mnist", batch_size=4, validation_size=1, augment=False)
    assert (ds.train_size, ds.validation_size, ds.test_size) == (5, 1, 4)
    seen = np.concatenate([b[1] for b in _batches(ds.train) + _batches(ds.validation)])
    assert sorted(seen) == sorted(arrays["train"][1])  # the split is of these files
    # `data_dir` still wins over the variable; a variable naming an empty folder is named
    # in the error.
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="`data_dir`"):
        data.load_fashion_mnist("test", data_dir=str(empty))
    monkeypatch.setenv("PABT_FASHION_MNIST_DIR", str(empty))
    with pytest.raises(FileNotFoundError, match=r"\$PABT_FASHION_MNIST_DIR") as err:
        data.load_fashion_mnist("test")
    assert str(empty) in str(err.value)


# -- tensorflow-datasets loaders on tiny prepared data ---------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _store(name, splits, data_dir, config=None):
    """Write `splits` ({split: [example, ...]}) as prepared tfds data with the features
    and version of the real builder `name`."""
    import tensorflow_datasets as tfds

    full = f"{name}/{config}" if config else name
    real = tfds.builder(full, data_dir=str(data_dir))
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name,
        version=str(real.version),
        config=config,
        features=real.info.features,
        split_datasets={k: list(enumerate(v)) for k, v in splits.items()},
        data_dir=str(data_dir),
        disable_shuffling=True,  # keep the examples in the order written
    )
    return real


def test_cifar10_from_prepared_data_dir(tmp_path, no_network):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (15, 32, 32, 3), dtype=np.uint8)

    def examples(lo, hi):
        return [{"id": f"x{i}", "image": images[i], "label": i % 10} for i in range(lo, hi)]

    _store("cifar10", {"train": examples(0, 10), "test": examples(10, 15)}, tmp_path)
    assert os.path.exists(tmp_path / "cifar10" / "3.0.2" / "dataset_info.json")
    ds = data.cifar10_datasets(str(tmp_path), batch_size=4, validation_size=3, augment=False)
    assert (ds.train_size, ds.validation_size, ds.test_size, ds.num_classes) == (7, 3, 5, 10)
    test = _batches(ds.test)
    x = np.concatenate([b[0] for b in test])
    assert x.shape == (5, 32, 32, 3) and [len(b[1]) for b in test] == [4, 1]
    expected = (images[10:15] / 255.0 - data.CIFAR10_MEAN) / data.CIFAR10_STD
    np.testing.assert_allclose(x, expected, atol=1e-5)
    assert list(np.concatenate([b[1] for b in test])) == [0, 1, 2, 3, 4]
    # Validation = the last 3 training examples; train = the other 7, every epoch.
    assert sorted(np.concatenate([b[1] for b in _batches(ds.validation)])) == [7, 8, 9]
    assert sorted(np.concatenate([b[1] for b in _batches(ds.train)])) == list(range(7))
    aug = data.cifar10_datasets(str(tmp_path), batch_size=8, seed=1)
    (xa, _), = _batches(aug.train.take(1))
    assert xa.shape == (8, 32, 32, 3) and np.isfinite(xa).all()


def test_imagenet_from_prepared_data_dir(tmp_path, no_network):
    rng = np.random.default_rng(1)

    def examples(n, offset):
        return [
            {"file_name": f"im{i}.JPEG",
             "image": rng.integers(0, 256, (40 + 3 * i, 50 - 2 * i, 3), dtype=np.uint8),
             "label": offset + i}
            for i in range(n)
        ]  # fmt: skip

    _store("imagenet2012", {"train": examples(6, 0), "validation": examples(3, 500)}, tmp_path)
    ds = data.imagenet_datasets(str(tmp_path), batch_size=2, image_size=32, seed=0)
    assert ds.num_classes == 1000 and (ds.train_size, ds.test_size) == (6, 3)
    for x, y in _batches(ds.train) + _batches(ds.test):
        assert x.shape[1:] == (32, 32, 3) and np.isfinite(x).all()
    assert sorted(np.concatenate([y for _, y in _batches(ds.test)])) == [500, 501, 502]


def test_cityscapes_from_prepared_data_dir_maps_train_ids(tmp_path, no_network):
    label = np.zeros((1024, 2048, 1), np.uint8)  # id 0 ("unlabeled") -> 255
    label[:512] = 7  # road -> 0
    label[512:, :1024] = 26  # car -> 13

    def examples(n):
        return [
            {"image_id": f"c{i}", "image_left": np.full((1024, 2048, 3), 40 * i, np.uint8),
             "segmentation_label": label}
            for i in range(n)
        ]  # fmt: skip

    _store("cityscapes", {"train": examples(2), "validation": examples(1)}, tmp_path,
           config="semantic_segmentation")  # fmt: skip
    ds = data.cityscapes_datasets(
        str(tmp_path), batch_size=2, image_size=(64, 128), crop_size=(32, 64), seed=0
    )
    assert ds.num_classes == 19 and ds.input_shape == (32, 64, 3)
    (x, y), = _batches(ds.train)
    assert x.shape == (2, 32, 64, 3) and y.shape == (2, 32, 64)
    assert set(np.unique(y)) <= {0, 13, 255}
    (x, y), = _batches(ds.test)
    assert x.shape == (1, 64, 128, 3)
    assert (y[0, :32] == 0).all() and (y[0, 32:, :64] == 13).all() and (y[0, 32:, 64:] == 255).all()


@pytest.mark.parametrize("name", ["cifar10", "imagenet2012", "cityscapes"])
def test_tfds_missing_data_is_a_clear_error_without_download(tmp_path, no_network, name):
    with pytest.raises(FileNotFoundError, match=r"not prepared in data_dir") as err:
        data.load_datasets(name, data_dir=str(tmp_path))
    assert str(tmp_path) in str(err.value) and "never downloads" in str(err.value)
    assert not any(tmp_path.iterdir())  # nothing was written either
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_datasets(name, data_dir=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="data_dir"):
        data.load_datasets(name, data_dir=None)
