"""The images a report is drawn for: a PNG given by the user, a sample of the run's data
set, or, when neither is available, a synthetic image (and a note saying so)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ReportInput:
    """What the report looks at.

    Attributes:
        image: (C, H, W) float32, normalized like the training data.
        label: its true class, or None when unknown (a user's image, synthetic data).
        batch: (N, C, H, W) images for the activation histograms (includes ``image``).
        source: where the image came from, in words.
        notes: caveats to print in the report.
    """

    image: np.ndarray
    label: int | None
    batch: np.ndarray
    source: str
    notes: list[str] = field(default_factory=list)


def _channel_vector(values: Any, channels: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(values, dtype=np.float32).reshape(-1), (channels,))


def load_image(path: str | os.PathLike, in_channels: int, input_size: int,
               mean: Any = None, std: Any = None) -> np.ndarray:
    """Read an image file with Pillow into a (C, H, W) float32 model input, as training on
    a folder reads it (``chainrule.data.folder.read_pixels``: EXIF-oriented, converted to
    gray (C = 1) or RGB (C = 3), resized bilinear to ``input_size`` squared), scaled to [0, 1]
    and standardized per channel with ``mean``/``std`` when given (the training set's,
    stored in the checkpoint)."""
    from ..data.folder import read_pixels  # as training on a folder reads it

    if in_channels not in (1, 3):
        raise ValueError(f"load_image: the model takes {in_channels} channels; only 1 (gray) "
                         "or 3 (RGB) can be read from an image file")
    pixels = read_pixels(path, in_channels, input_size).astype(np.float32) / np.float32(255.0)
    x = pixels[None] if in_channels == 1 else pixels.transpose(2, 0, 1)  # (C, H, W)
    if mean is not None and std is not None:
        x = (x - _channel_vector(mean, in_channels)[:, None, None]) \
            / _channel_vector(std, in_channels)[:, None, None]
    return np.ascontiguousarray(x, dtype=np.float32)


def dataset_input(name: str, mean: Any, std: Any, seed: int = 0, count: int = 64,
                  data_dir: str | os.PathLike | None = None,
                  image_size: int | None = None) -> ReportInput:
    """A seeded sample of ``count`` images of the test split of data set ``name``,
    normalized with the checkpoint's ``mean``/``std`` (``image_size``: the run's
    ``--image-size`` of ``folder:PATH`` data). Raises what ``load_dataset`` raises when
    the data set is not available."""
    from ..data import load_dataset
    from ..data.folder import is_folder

    stats = (mean, std) if mean is not None and std is not None else None
    x, y = load_dataset(name, data_dir=data_dir, stats=stats,
                        image_size=image_size if is_folder(name) else None).test
    pick = np.random.default_rng(seed).permutation(len(x))[:count]
    return ReportInput(x[pick[0]], int(y[pick[0]]), x[pick],
                       f"test image #{int(pick[0])} of {name} (seed {seed})")


def synthetic_input(in_channels: int, input_size: int, seed: int = 0, count: int = 64
                    ) -> ReportInput:
    """Seeded standard-normal images: shapes right, content meaningless."""
    rng = np.random.default_rng(seed)
    batch = rng.standard_normal((count, in_channels, input_size, input_size)).astype(np.float32)
    return ReportInput(batch[0], None, batch, f"synthetic N(0, 1) noise (seed {seed})",
                       ["The input is synthetic noise, not a real image: the feature maps, "
                        "saliency and routing maps show the mechanics, not what the network "
                        "learned to look for. Pass --image or make the run's data set "
                        "available for a real one."])


def declared_image_shape(model: Any) -> tuple[int, int, int | None] | None:
    """(in_channels, input_size, classes) that a single-input ``Graph`` declares for
    square images (``cr.Input((C, S, S))``; classes from a (K,) output, else None), for
    a checkpoint whose metadata does not give them; None for other models."""
    from ..layers.graph import Graph

    if not isinstance(model, Graph) or len(model.input_shapes) != 1:
        return None
    shape = model.input_shapes[0]
    if shape is None or len(shape) != 3 or None in shape or shape[1] != shape[2]:
        return None
    classes = None
    if len(model.output_names) == 1:
        try:
            out = model.copy().eval().forward(np.zeros((1, *shape), model.dtype or np.float32))
            classes = out.shape[1] if out.ndim == 2 else None
        except ValueError:
            classes = None
    return shape[0], shape[1], classes
