"""Checks shared by the convolution tests (test_conv.py, test_conv1d.py,
test_conv_transpose.py): inputs, gradient accumulation, unbatched inputs and the
forward cache backward needs."""

from __future__ import annotations

import numpy as np
import pytest


def make_input(shape, seed: int = 1) -> np.ndarray:
    """Standard normal float64 values of ``shape``, fixed by ``seed``."""
    return np.random.default_rng(seed).standard_normal(shape)


def assert_gradients_accumulate(layer, inputs, grads) -> None:
    """Backward passes without ``zero_grad`` in between add into ``p.grad``: after all of
    them each parameter gradient is the sum of those of each pass alone (none zero)."""
    single = []
    for x, g in zip(inputs, grads):
        layer.zero_grad()
        layer.forward(x)
        layer.backward(g)
        single.append({name: p.grad.copy() for name, p in layer.named_parameters()})
    layer.zero_grad()
    for x, g in zip(inputs, grads):
        layer.forward(x)
        layer.backward(g)
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, sum(s[name] for s in single), rtol=1e-12)
        assert np.any(single[0][name] != 0), name


def assert_backward_needs_a_cached_forward(layer, x: np.ndarray, wrong_shape: tuple) -> None:
    """backward is a RuntimeError before any forward and after a forward in eval mode,
    and a ValueError for a gradient of ``wrong_shape`` (not the output's)."""
    with pytest.raises(RuntimeError, match="without a cached forward"):
        layer.backward(np.zeros(wrong_shape, np.float32))
    y = layer.forward(x)
    with pytest.raises(ValueError, match="gradient of shape"):
        layer.backward(np.zeros(wrong_shape, np.float32))
    layer.eval()
    layer.forward(x)
    with pytest.raises(RuntimeError):
        layer.backward(np.zeros_like(y))


def assert_unbatched_matches_a_batch_of_one(layer, x: np.ndarray
                                            ) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward of one unbatched sample ``x`` give, bit for bit, what a batch
    of that one sample gives, parameter gradients included. Returns the output and the
    upstream gradient used."""
    y = layer.forward(x)
    assert y.shape == layer.output_shape(x.shape) and y.ndim == x.ndim
    grad = make_input(y.shape, seed=2)
    dx = layer.backward(grad)
    assert dx.shape == x.shape
    unbatched = {name: p.grad.copy() for name, p in layer.named_parameters()}
    layer.zero_grad()
    np.testing.assert_array_equal(layer.forward(x[None])[0], y)
    np.testing.assert_array_equal(layer.backward(grad[None])[0], dx)
    for name, p in layer.named_parameters():
        np.testing.assert_array_equal(p.grad, unbatched[name], err_msg=name)
    return y, grad
