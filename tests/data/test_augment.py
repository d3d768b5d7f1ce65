"""Augmentation: shifts against a plain-loop reference, flips, and reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from chainrule.data.augment import augment, random_hflip, random_shift


def _shift_reference(x, offsets, s, fill):
    """Loops: output pixel (i, j) of image n is input pixel (i + dy, j + dx) or ``fill``."""
    n, c, h, w = x.shape
    out = np.empty_like(x)
    for k in range(n):
        dy, dx = offsets[k] - s  # a crop at offset o of the padded image shifts by o - s
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    si, sj = i + dy, j + dx
                    inside = 0 <= si < h and 0 <= sj < w
                    out[k, ch, i, j] = x[k, ch, si, sj] if inside else fill[ch]
    return out


@pytest.mark.parametrize("shape, s", [((4, 1, 8, 8), 1), ((3, 3, 6, 5), 2)])
def test_shift_matches_the_loop_reference(shape, s):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    fill = np.arange(shape[1], dtype=np.float32) - 5
    got = random_shift(x, np.random.default_rng(7), s, fill)
    offsets = np.random.default_rng(7).integers(0, 2 * s + 1, size=(shape[0], 2))
    np.testing.assert_array_equal(got, _shift_reference(x, offsets, s, fill))
    assert got.dtype == x.dtype


def test_shift_zero_is_a_copy_and_negative_is_refused():
    x = np.ones((2, 1, 4, 4))
    out = random_shift(x, np.random.default_rng(0), 0)
    assert out is not x and np.array_equal(out, x)
    with pytest.raises(ValueError, match="max_shift"):
        random_shift(x, np.random.default_rng(0), -1)


def test_hflip_mirrors_left_right():
    x = np.arange(2 * 3 * 2 * 4, dtype=np.float32).reshape(2, 3, 2, 4)
    np.testing.assert_array_equal(random_hflip(x, np.random.default_rng(0), p=1.0),
                                  x[..., ::-1])
    np.testing.assert_array_equal(random_hflip(x, np.random.default_rng(0), p=0.0), x)


def test_same_generator_state_same_batch():
    x = np.random.default_rng(1).standard_normal((8, 3, 8, 8))
    a = augment(x, np.random.default_rng(5), max_shift=2, hflip=True)
    b = augment(x, np.random.default_rng(5), max_shift=2, hflip=True)
    c = augment(x, np.random.default_rng(6), max_shift=2, hflip=True)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
