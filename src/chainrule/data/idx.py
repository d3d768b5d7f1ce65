"""The IDX file format of MNIST, Fashion-MNIST and KMNIST (LeCun et al.).

Layout, all integers big-endian::

    bytes 0-1   0x00 0x00
    byte  2     dtype code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64
    byte  3     number of dimensions d
    4 * d bytes the size of each dimension, uint32
    the data    prod(sizes) values of the dtype, C order

Files come gzipped (``*.gz``, as distributed) or raw; we tell them apart by the gzip
magic bytes, not by the name, so a renamed file still reads.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import DataFormatError

# dtype code -> big-endian NumPy dtype
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: str | Path) -> bytes:
    """The content of ``path``, decompressed if it is gzip.

    Raises:
        DataFormatError: a gzip stream that is truncated or corrupt.
    """
    path = Path(path)
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        # EOFError: the stream ends early; BadGzipFile (an OSError) / zlib.error: corrupt.
        raise DataFormatError(f"{path}: the gzip stream is truncated or corrupt ({exc}); "
                              "delete the file and download it again") from exc


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of one IDX file into an array of shape ``sizes`` (native byte order).

    Raises:
        DataFormatError: bad magic number, unknown dtype code, or a data section whose
            length differs from ``prod(sizes) * itemsize`` (a truncated file); the message
            gives the expected and actual byte counts.
    """
    if len(data) < 4:
        raise DataFormatError(f"{source}: {len(data)} bytes is too short for an IDX header "
                              "(at least 4 bytes)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise DataFormatError(f"{source}: not an IDX file (magic number {data[:4].hex()} "
                              "should start with 0000)")
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataFormatError(f"{source}: unknown IDX dtype code 0x{code:02X} (known: {known})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(f"{source}: truncated IDX header: {ndim} dimensions need "
                              f"{header} header bytes, the file has {len(data)}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise DataFormatError(f"{source}: IDX file {what}: shape {shape} of {dtype.name} needs "
                              f"{expected} data bytes, found {actual}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a native-order, writable copy


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzipped or raw. See ``parse_idx`` for the errors."""
    return parse_idx(read_bytes(path), source=str(path))
