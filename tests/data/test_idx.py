"""The IDX parser on files written in the real format, gzipped and raw."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from chainrule.data.errors import DataFormatError
from chainrule.data.idx import parse_idx, read_idx

from ._formats import idx_bytes, write_idx


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip_every_dtype(tmp_path, gz, dtype):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 5, 4)) * 50).astype(dtype)
    got = read_idx(write_idx(tmp_path / "f.idx", array, gz=gz))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, array)


def test_labels_file_one_dimension(tmp_path):
    labels = np.array([7, 2, 1, 0, 4], dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l", labels, gz=True)), labels)


def test_gzip_is_detected_by_content_not_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = tmp_path / "train-images-idx3-ubyte"  # no .gz, but gzipped content
    path.write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(path), array)


def test_truncated_data_names_expected_and_found_bytes(tmp_path):
    data = idx_bytes(np.zeros((10, 28, 28), dtype=np.uint8))
    path = tmp_path / "cut"
    path.write_bytes(data[:-100])
    with pytest.raises(DataFormatError, match=r"truncated.*7840 data bytes, found 7740"):
        read_idx(path)


def test_truncated_gzip_stream(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(4000, dtype=np.int32)))
    path = tmp_path / "cut.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataFormatError, match="gzip stream is truncated or corrupt"):
        read_idx(path)


def test_corrupt_gzip_stream(tmp_path):
    compressed = bytearray(gzip.compress(idx_bytes(np.arange(4000, dtype=np.int32))))
    compressed[20:40] = b"\xff" * 20
    path = tmp_path / "bad.gz"
    path.write_bytes(bytes(compressed))
    with pytest.raises(DataFormatError, match="gzip"):
        read_idx(path)


@pytest.mark.parametrize("data, message", [
    (b"\x00\x00", "too short"),
    (b"\x01\x02\x08\x01\x00\x00\x00\x01\x00", "not an IDX file"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown IDX dtype code 0x07"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x01", "truncated IDX header"),
    (idx_bytes(np.zeros(4, np.uint8)) + b"\x00", "trailing bytes"),
])
def test_malformed_headers(data, message):
    with pytest.raises(DataFormatError, match=message):
        parse_idx(data, source="x")
