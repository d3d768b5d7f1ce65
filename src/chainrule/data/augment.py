"""Training-time augmentation: random shifts, and horizontal flips where they make sense.

Every random draw comes from the Generator passed in, so a run that derives its
Generator from (seed, epoch) augments the same way when it is resumed.
"""

from __future__ import annotations

import numpy as np


def random_shift(x: np.ndarray, rng: np.random.Generator, max_shift: int,
                 fill: np.ndarray | float = 0.0) -> np.ndarray:
    """Shift each image by its own whole number of pixels in [-max_shift, max_shift] along
    each axis; pixels shifted in take the value ``fill`` (per channel).

    Equivalent to torchvision's ``RandomCrop(H, padding=max_shift, fill=fill)``.

    Args:
        x: (N, C, H, W) images.
        rng: draws the offsets, shape (N, 2).
        max_shift: the largest shift, >= 0.
        fill: a scalar or (C,) values for the uncovered border, e.g. the normalized
            value of a black pixel.

    Returns:
        (N, C, H, W), a new array of x's dtype.
    """
    if max_shift < 0:
        raise ValueError(f"random_shift: max_shift must be >= 0, got {max_shift}")
    n, c, h, w = x.shape
    if max_shift == 0 or n == 0:
        return x.copy()
    s = max_shift
    fill = np.broadcast_to(np.asarray(fill, dtype=x.dtype), (c,))
    padded = np.empty((n, c, h + 2 * s, w + 2 * s), dtype=x.dtype)  # (N, C, H+2s, W+2s)
    padded[...] = fill[None, :, None, None]
    padded[:, :, s:s + h, s:s + w] = x
    offsets = rng.integers(0, 2 * s + 1, size=(n, 2))  # top-left corner of each crop
    rows = offsets[:, 0, None] + np.arange(h)          # (N, H)
    cols = offsets[:, 1, None] + np.arange(w)          # (N, W)
    return padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]  # (N, C, H, W)


def random_hflip(x: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror each (N, C, H, W) image left-right with probability ``p``; a new array.

    Only for data without a handedness: photographs (CIFAR-10), not digits or letters.
    """
    flip = rng.random(len(x)) < p  # (N,)
    out = x.copy()
    out[flip] = x[flip, :, :, ::-1]
    return out


def augment(x: np.ndarray, rng: np.random.Generator, max_shift: int = 0, hflip: bool = False,
            fill: np.ndarray | float = 0.0) -> np.ndarray:
    """Random shift (when ``max_shift > 0``), then random horizontal flip (when ``hflip``),
    of a (N, C, H, W) batch, in that order of draws from ``rng``."""
    out = random_shift(x, rng, max_shift, fill) if max_shift > 0 else x
    return random_hflip(out, rng) if hflip else out
