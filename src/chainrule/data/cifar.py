"""The binary version of CIFAR-10 (``cifar-10-batches-bin/*.bin``), never the pickled one.

Each file is a sequence of 3073-byte records::

    byte 0        the label, 0..9
    bytes 1-1024  the red channel, 32 x 32, row-major
    bytes 1025-   the green, then the blue channel, the same way

so a file of N records reshapes to labels (N,) and images (N, 3, 32, 32) directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataFormatError

IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32  # 3073
NUM_CLASSES = 10
CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck"]


def parse_cifar(data: bytes, source: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Parse the bytes of one CIFAR-10 binary batch.

    Returns:
        images: uint8 (N, 3, 32, 32); labels: int64 (N,).

    Raises:
        DataFormatError: empty file, a size that is not a whole number of records
            (truncated), or a label outside 0..9 (corrupt or not CIFAR-10).
    """
    if len(data) == 0 or len(data) % RECORD_BYTES:
        raise DataFormatError(
            f"{source}: {len(data)} bytes is not a whole number of CIFAR-10 records of "
            f"{RECORD_BYTES} bytes (truncated or not a CIFAR-10 binary batch)")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)  # (N, 3073)
    labels = records[:, 0].astype(np.int64)
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise DataFormatError(f"{source}: record {bad[0]} has label {labels[bad[0]]}, outside "
                              f"0..{NUM_CLASSES - 1} (corrupt, or CIFAR-100 rather than CIFAR-10)")
    images = records[:, 1:].reshape(-1, *IMAGE_SHAPE).copy()  # (N, 3, 32, 32)
    return images, labels


def read_cifar(paths: list[str | Path]) -> tuple[np.ndarray, np.ndarray]:
    """Read and concatenate CIFAR-10 binary batches (e.g. ``data_batch_1..5.bin``)."""
    parts = [parse_cifar(Path(p).read_bytes(), source=str(p)) for p in paths]
    return (np.concatenate([images for images, _ in parts]),
            np.concatenate([labels for _, labels in parts]))


def read_class_names(path: str | Path) -> list[str]:
    """The class names of ``batches.meta.txt`` (one a line), or the standard ten when the
    file is absent."""
    path = Path(path)
    if not path.exists():
        return list(CLASSES)
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(names) != NUM_CLASSES:
        raise DataFormatError(f"{path}: expected {NUM_CLASSES} class names, found {len(names)}")
    return names
