"""The CIFAR-10 binary parser on records written in the real format."""

from __future__ import annotations

import numpy as np
import pytest

from chainrule.data.cifar import RECORD_BYTES, parse_cifar, read_cifar, read_class_names
from chainrule.data.errors import DataFormatError

from ._formats import cifar_bytes


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def test_layout_label_then_red_green_blue_planes():
    images, labels = _images(3), np.array([9, 0, 4])
    data = cifar_bytes(images, labels)
    assert len(data) == 3 * RECORD_BYTES
    got_images, got_labels = parse_cifar(data)
    assert got_images.dtype == np.uint8 and got_images.shape == (3, 3, 32, 32)
    assert got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_array_equal(got_images, images)
    # Byte 1 of a record is the red pixel (0, 0); byte 1025 the green pixel (0, 0).
    assert got_images[0, 0, 0, 0] == data[1] and got_images[0, 1, 0, 0] == data[1025]
    assert got_images[0, 0, 1, 0] == data[1 + 32]  # row-major: the next row starts 32 later


def test_several_batches_are_concatenated(tmp_path):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"data_batch_{i + 1}.bin")
        paths[-1].write_bytes(cifar_bytes(_images(2, seed=i), np.array([i, i + 1])))
    images, labels = read_cifar(paths)
    assert images.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(labels, [0, 1, 1, 2])


@pytest.mark.parametrize("cut", [1, RECORD_BYTES - 1, RECORD_BYTES + 5])
def test_truncated_file(cut):
    data = cifar_bytes(_images(2), np.array([1, 2]))[:-cut]
    with pytest.raises(DataFormatError, match="not a whole number of CIFAR-10 records"):
        parse_cifar(data, source="batch.bin")


def test_empty_file():
    with pytest.raises(DataFormatError, match="0 bytes"):
        parse_cifar(b"")


def test_label_out_of_range_is_corrupt():
    data = bytearray(cifar_bytes(_images(2), np.array([1, 2])))
    data[RECORD_BYTES] = 57  # the second record's label
    with pytest.raises(DataFormatError, match="record 1 has label 57"):
        parse_cifar(bytes(data))


def test_class_names(tmp_path):
    assert read_class_names(tmp_path / "absent.txt")[0] == "airplane"
    path = tmp_path / "batches.meta.txt"
    path.write_text("\n".join(f"c{i}" for i in range(10)) + "\n\n")
    assert read_class_names(path) == [f"c{i}" for i in range(10)]
    path.write_text("a\nb\n")
    with pytest.raises(DataFormatError, match="expected 10 class names"):
        read_class_names(path)
