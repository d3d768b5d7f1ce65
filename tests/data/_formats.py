"""Writers of the real on-disk formats, for the parser tests: written here from the format
specifications (not with the code under test), so a parser bug cannot cancel itself out."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: 0x0000, dtype code, ndim, big-endian uint32 sizes, big-endian data."""
    code = IDX_CODES[array.dtype]
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def cifar_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10 binary records: label byte, then 1024 red, 1024 green, 1024 blue bytes."""
    out = bytearray()
    for image, label in zip(images, labels):  # image (3, 32, 32) uint8
        out.append(int(label))
        for channel in image:
            out += bytes(channel.reshape(-1).tolist())
    return bytes(out)
