"""Inputs, grids and checks shared by the pooling tests (test_pooling.py,
test_pooling_catalog.py): inputs without ties, the loop references of tests/reference.py
called with torch's keyword arguments, tie routing and unbatched inputs."""

from __future__ import annotations

import numpy as np

import chainrule as cr
from tests import reference as ref
from tests.helpers import assert_gradcheck, assert_torch_parity, pair, rel_error

# id -> (AdaptiveAvgPool2d / AdaptiveMaxPool2d keyword arguments, input shape (N, C, H, W))
ADAPTIVE_CASES = {
    "global-1": (dict(output_size=1), (2, 3, 5, 4)),
    "2-divides-6x4": (dict(output_size=2), (2, 2, 6, 4)),
    "2-not-dividing-5x7": (dict(output_size=2), (1, 2, 5, 7)),
    "3x2-on-7x5-overlapping": (dict(output_size=(3, 2)), (2, 2, 7, 5)),
    "3-on-8x7": (dict(output_size=3), (1, 2, 8, 7)),
    "5-bigger-than-3x4": (dict(output_size=5), (1, 2, 3, 4)),
    "4x6-bigger-than-3x2": (dict(output_size=(4, 6)), (2, 1, 3, 2)),
    "identity-4x5": (dict(output_size=(4, 5)), (1, 2, 4, 5)),
    "1-on-1x1": (dict(output_size=1), (2, 3, 1, 1)),
    "batch1-2x1": (dict(output_size=(2, 1)), (1, 3, 5, 3)),
}


def distinct(shape, seed: int = 0) -> np.ndarray:
    """Distinct values 1/8 apart (a random permutation): no ties, so every max (and its
    gradient) is unique and finite differences (step 1e-6) never cross a kink."""
    values = np.random.default_rng(seed).permutation(int(np.prod(shape))) / 8.0 - 2.0
    return values.reshape(shape)


def torch_pair(module, x: np.ndarray, grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """torch's output and input gradient for upstream gradient ``grad``, in x's dtype."""
    import torch

    xt = torch.tensor(x, requires_grad=True)
    yt = module(xt)
    yt.backward(torch.tensor(grad))
    return yt.detach().numpy(), xt.grad.numpy()


def max_pool_reference(kwargs: dict, x: np.ndarray):
    """``reference.max_pool2d`` for ``torch.nn.MaxPool2d``'s keyword arguments:
    (out, argmax) of the (N, C, H, W) input ``x``."""
    return ref.max_pool2d(x, pair(kwargs["kernel_size"]),
                          pair(kwargs.get("stride") or kwargs["kernel_size"]),
                          pair(kwargs.get("padding", 0)), pair(kwargs.get("dilation", 1)),
                          kwargs.get("ceil_mode", False))


def avg_pool_reference_args(kwargs: dict) -> dict:
    """The window arguments of ``reference.avg_pool2d`` and ``avg_pool2d_backward`` for
    ``torch.nn.AvgPool2d``'s keyword arguments (the forward also takes ceil_mode)."""
    return dict(kernel=pair(kwargs["kernel_size"]),
                stride=pair(kwargs.get("stride") or kwargs["kernel_size"]),
                padding=pair(kwargs.get("padding", 0)),
                count_include_pad=kwargs.get("count_include_pad", True),
                divisor_override=kwargs.get("divisor_override"))


def check_avg_pool_matches_loop_reference(layer, kwargs: dict, x: np.ndarray, seed: int) -> None:
    """An average pool's output and input gradient (for a random upstream gradient
    drawn from ``seed``) equal the loop references at 1e-13. ``kwargs``: torch.nn.AvgPool2d's
    keyword arguments; a 1-D layer's (N, C, L) arrays are compared as (N, C, 1, L), with
    the kwargs of its one-row 2-D twin."""
    planes = (lambda a: a) if x.ndim == 4 else (lambda a: a[:, :, None])
    args = avg_pool_reference_args(kwargs)
    out = layer.forward(x)
    expected = ref.avg_pool2d(planes(x), ceil_mode=kwargs.get("ceil_mode", False), **args)
    assert rel_error(planes(out), expected) <= 1e-13
    grad = np.random.default_rng(seed).standard_normal(out.shape)
    expected_dx = ref.avg_pool2d_backward(planes(grad), planes(x).shape, **args)
    assert rel_error(planes(layer.backward(grad)), expected_dx) <= 1e-13


def check_max_pool_matches_reference_with_ties(kwargs: dict, shape) -> None:
    """MaxPool2d(**kwargs) equals the loop reference exactly on integers in {0, 1, 2}:
    ties everywhere, broken in row-major window order; integer upstream gradients keep
    every sum exact."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, shape).astype(np.float64)
    layer = cr.MaxPool2d(**kwargs)
    expected, argmax = max_pool_reference(kwargs, x)
    out = layer.forward(x)
    np.testing.assert_array_equal(out, expected)
    grad = rng.integers(-4, 5, out.shape).astype(np.float64)
    np.testing.assert_array_equal(layer.backward(grad), ref.max_pool2d_backward(grad, argmax, shape))


def check_max_pool_ties_route_like_torch(kwargs: dict, shape, values: str) -> None:
    """With ties the gradient is not unique; torch (and we) give the whole of it to the
    first maximum in row-major window order. ``values``: "constant" or "integers-0-3".
    Integer upstream gradients keep every sum exact, so the comparison is exact whatever
    order the windows are added in."""
    import torch

    rng = np.random.default_rng(2)
    x = np.full(shape, 0.5) if values == "constant" else rng.integers(0, 3, shape).astype(np.float64)
    layer = cr.MaxPool2d(**kwargs)
    out = layer.forward(x)
    grad = rng.integers(-4, 5, out.shape).astype(np.float64)
    theirs, dx = torch_pair(torch.nn.MaxPool2d(**kwargs), x, grad)
    np.testing.assert_array_equal(out, theirs)
    np.testing.assert_array_equal(layer.backward(grad), dx)


def check_unbatched_input(ours, theirs, kwargs: dict, x: np.ndarray) -> None:
    """An unbatched (C, H, W) or (C, L) input: parity with torch in float64, the output
    of a batch of that one sample, and finite differences."""
    layer = ours(**kwargs)
    assert_torch_parity(layer, theirs(**kwargs), x, dtype=np.float64)
    np.testing.assert_array_equal(layer.forward(x), ours(**kwargs).forward(x[None])[0])
    assert_gradcheck(layer, x, 1e-6)
