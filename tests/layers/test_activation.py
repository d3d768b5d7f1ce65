"""ReLU, LeakyReLU, Sigmoid and Tanh: finite differences, parity with torch, kinks and
saturation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import chainrule as cr
from tests.helpers import assert_torch_parity

torch = pytest.importorskip("torch")

DTYPES = [np.float64, np.float32]
SHAPES = [(1, 1), (3, 5), (2, 3, 4, 5), (1, 7, 3)]

# (name, chainrule factory, torch factory)
ACTIVATIONS = [
    ("ReLU", cr.ReLU, torch.nn.ReLU),
    ("LeakyReLU0.01", lambda: cr.LeakyReLU(0.01), lambda: torch.nn.LeakyReLU(0.01)),
    ("LeakyReLU0.2", lambda: cr.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2)),
    ("Sigmoid", cr.Sigmoid, torch.nn.Sigmoid),
    ("Tanh", cr.Tanh, torch.nn.Tanh),
]
IDS = [a[0] for a in ACTIVATIONS]


def away_from_zero(shape, seed: int) -> np.ndarray:
    """Values with |x| in [0.1, 2] and random signs: far from the ReLU kink compared to
    the finite-difference step, so the correct gradient is unique."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.1, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name, make, _", ACTIVATIONS, ids=IDS)
def test_activation_gradcheck(name, make, _, shape):
    x = away_from_zero(shape, seed=1)
    err = cr.gradcheck(make(), x)
    assert err < 1e-6, f"{name} on {shape}: gradcheck relative error {err:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name, make, make_torch", ACTIVATIONS, ids=IDS)
def test_activation_matches_torch(name, make, make_torch, shape, dtype):
    x = away_from_zero(shape, seed=2) * 3
    assert_torch_parity(make(), make_torch(), x, dtype=dtype)


@pytest.mark.parametrize("name, make, make_torch", ACTIVATIONS[:3], ids=IDS[:3])
def test_relu_family_derivative_at_exactly_zero_matches_torch(name, make, make_torch):
    # torch: ReLU'(0) = 0 and LeakyReLU'(0) = negative_slope (the "x > 0" branch is not taken).
    x = np.array([[-1.0, 0.0, 1.0, 0.0, -0.0]])
    g = np.array([[2.0, 3.0, 5.0, 7.0, 11.0]])
    layer = make()
    layer.forward(x)
    dx = layer.backward(g)
    xt = torch.tensor(x, requires_grad=True)
    make_torch()(xt).backward(torch.tensor(g))
    np.testing.assert_array_equal(dx, xt.grad.numpy())
    if name == "ReLU":
        assert dx[0, 1] == 0 and dx[0, 3] == 0


def test_relu_keeps_a_boolean_mask_not_a_copy_of_the_input():
    layer = cr.ReLU()
    layer.forward(np.ones((4, 4), np.float32))
    mask = layer._cache[0]
    assert mask.dtype == np.bool_


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_sigmoid_saturates_without_overflow_and_matches_torch_exactly(dtype):
    x = np.array([[-1000.0, -100.0, 0.0, 100.0, 1000.0]], dtype=dtype)
    g = np.ones_like(x)
    layer = cr.Sigmoid()
    # Overflow, 0/0 or division by zero must not happen. Underflow of exp(-1000) to 0
    # is the correct result and numpy does not warn about it by default.
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        y = layer.forward(x)
        dx = layer.backward(g)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.sigmoid(xt)
    yt.backward(torch.tensor(g))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    exact = [0, 2, 4]  # at +-1000 and 0 the result is exactly 0, 1/2 and 1 in both
    np.testing.assert_array_equal(y[:, exact], yt.detach().numpy()[:, exact])
    np.testing.assert_array_equal(dx[:, exact], xt.grad.numpy()[:, exact])
    # At +-100, float32 torch flushes 1/(1+exp(100)) to 0 where we keep the subnormal
    # ~3.8e-44; both are within one float32 subnormal step of the truth.
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-15, atol=1e-40)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-15, atol=1e-40)
    assert y[0, 0] == 0.0 and y[0, -1] == 1.0 and y[0, 2] == 0.5
    assert y.dtype == dtype


def test_tanh_saturates_finitely():
    x = np.array([[-1000.0, 1000.0]])
    layer = cr.Tanh()
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        y = layer.forward(x)
        dx = layer.backward(np.ones_like(x))
    np.testing.assert_array_equal(y, [[-1.0, 1.0]])
    np.testing.assert_array_equal(dx, [[0.0, 0.0]])


@pytest.mark.parametrize("name, make, _", ACTIVATIONS, ids=IDS)
def test_activation_keeps_dtype_and_shape(name, make, _):
    for dtype in DTYPES:
        x = away_from_zero((2, 3), seed=3).astype(dtype)
        layer = make()
        y = layer.forward(x)
        dx = layer.backward(np.ones_like(y))
        assert y.dtype == dtype and dx.dtype == dtype and dx.shape == x.shape, name


def test_leaky_relu_slope_is_used_on_the_negative_side():
    layer = cr.LeakyReLU(0.2)
    y = layer.forward(np.array([-5.0, 5.0]))
    np.testing.assert_allclose(y, [-1.0, 5.0], rtol=1e-15)
    np.testing.assert_allclose(layer.backward(np.array([1.0, 1.0])), [0.2, 1.0], rtol=1e-15)
