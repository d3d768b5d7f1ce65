"""Memory bounds of the convolution kernels: ``max_workspace_bytes`` holds even for one
image too big for it (bands of output rows), and the per-thread scratch buffers are
bounded and can be released."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
import importlib

from chainrule.functional import _parallel, conv

im2col = importlib.import_module("chainrule.functional.im2col")  # the module, not the function

WORKSPACE = 1_000_000  # bytes: one image below passes it many times over, a band does not


def track_scratch(monkeypatch) -> list[int]:
    """Record the bytes of every scratch buffer the kernels ask for."""
    sizes: list[int] = []
    real = _parallel.scratch

    def tracked(slot, shape, dtype):
        sizes.append(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        return real(slot, shape, dtype)

    monkeypatch.setattr(conv, "scratch", tracked)
    monkeypatch.setattr(im2col, "scratch", tracked)
    return sizes


LAYERS = {
    "conv3x3": lambda: cr.Conv2d(3, 8, 3, padding=1, rng=1),
    "strided": lambda: cr.Conv2d(8, 4, 3, stride=2, padding=1, rng=1),
    "flipped-kernel": lambda: cr.Conv2d(16, 16, 3, padding=1, rng=1),
    "dilated-groups": lambda: cr.Conv2d(8, 8, 5, dilation=2, padding=2, groups=2, rng=1),
    "transposed": lambda: cr.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1,
                                             rng=1),
    "conv1d": lambda: cr.Conv1d(8, 8, 5, padding=2, rng=1),
    "wide": lambda: cr.Conv2d(8, 8, 3, padding=1, rng=1),   # a single row passes the limit
}
SHAPES = {"conv1d": (9000,), "wide": (5, 4000)}


@pytest.mark.parametrize("name", LAYERS)
def test_one_image_larger_than_the_workspace_is_cut_into_bands(name, monkeypatch):
    big = LAYERS[name]().to(np.float64)
    small = big.copy()
    small.max_workspace_bytes = WORKSPACE
    c = big.in_channels
    x = np.random.default_rng(0).standard_normal((1, c, *SHAPES.get(name, (200, 61))))
    y = big.forward(x)
    g = np.random.default_rng(1).standard_normal(y.shape)
    dx = big.backward(g)

    sizes = track_scratch(monkeypatch)
    y_small = small.forward(x)
    dx_small = small.backward(g)
    assert max(sizes) * _parallel.num_workers() <= WORKSPACE, max(sizes)
    np.testing.assert_allclose(y_small, y, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dx_small, dx, rtol=1e-12, atol=1e-13)
    for p_small, p in zip(small.parameters(), big.parameters()):
        np.testing.assert_allclose(p_small.grad, p.grad, rtol=1e-11, atol=1e-12)


def test_scratch_buffers_are_bounded_per_thread_and_released():
    _parallel.release_scratch()
    assert _parallel.kept_scratch_bytes() == 0
    quarter = _parallel.MAX_KEPT_SCRATCH_BYTES // 4
    for slot in "abcdef":  # six slots of a quarter each: never more than the cap kept
        _parallel.scratch(slot, (quarter,), np.uint8)
        assert _parallel.kept_scratch_bytes() <= _parallel.MAX_KEPT_SCRATCH_BYTES
    kept = _parallel.scratch("a", (10,), np.float64)
    kept[:] = 1.0
    _parallel.release_scratch()
    assert _parallel.kept_scratch_bytes() == 0
    assert kept.sum() == 10.0  # an array handed out before stays valid
    model = cr.Conv2d(3, 4, 3, rng=0)
    model.forward(np.zeros((2, 3, 8, 8), np.float32))
    assert _parallel.kept_scratch_bytes() > 0
    cr.functional.release_scratch()
    assert _parallel.kept_scratch_bytes() == 0
