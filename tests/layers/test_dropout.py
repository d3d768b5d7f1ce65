"""Dropout: the mask, its scale, its reproducibility, and the modes."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from tests.helpers import assert_torch_parity

torch = pytest.importorskip("torch")

DTYPES = [np.float64, np.float32]


def data(shape, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)  # never 0


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_p0_is_the_identity_in_training(dtype):
    layer = cr.Dropout(0.0, rng=0)
    x = data((3, 4, 5)).astype(dtype)
    y = layer.forward(x)
    np.testing.assert_array_equal(y, x)
    g = data((3, 4, 5), seed=1).astype(dtype)
    np.testing.assert_array_equal(layer.backward(g), g)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_p1_gives_zeros_and_zero_gradient(dtype):
    layer = cr.Dropout(1.0, rng=0)
    x = data((2, 7)).astype(dtype)
    y = layer.forward(x)
    assert y.dtype == dtype and np.all(y == 0) and np.all(np.isfinite(y))
    dx = layer.backward(np.ones_like(x))
    assert np.all(dx == 0) and np.all(np.isfinite(dx))
    torch_y = torch.nn.Dropout(1.0)(torch.tensor(x))
    np.testing.assert_array_equal(y, torch_y.numpy())


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_mask_rate_and_scale_preserve_the_mean(p):
    n = 200_000
    layer = cr.Dropout(p, rng=42)
    y = layer.forward(np.ones((n,)))
    kept = y != 0
    # each kept element is scaled by exactly 1 / (1 - p)
    np.testing.assert_allclose(y[kept], 1.0 / (1.0 - p), rtol=1e-15)
    # dropped fraction and mean within 5 standard deviations of their expectations
    sd_rate = np.sqrt(p * (1 - p) / n)
    assert abs((1 - kept.mean()) - p) < 5 * sd_rate, f"dropped {1 - kept.mean():.4f}, p={p}"
    assert abs(y.mean() - 1.0) < 5 * sd_rate / (1 - p), f"mean {y.mean():.4f} should be ~1"


def test_same_seed_gives_the_same_mask_and_a_new_mask_each_call():
    x = data((8, 16))
    a, b = cr.Dropout(0.5, rng=7), cr.Dropout(0.5, rng=7)
    first = a.forward(x)
    np.testing.assert_array_equal(first, b.forward(x))
    second = a.forward(x)
    assert not np.array_equal(first != 0, second != 0), "a new mask is drawn each forward"
    np.testing.assert_array_equal(second, b.forward(x))
    other = cr.Dropout(0.5, rng=8).forward(x)
    assert not np.array_equal(first != 0, other != 0)


def test_a_generator_is_accepted_and_used():
    x = data((4, 9))
    y1 = cr.Dropout(0.3, rng=np.random.default_rng(3)).forward(x)
    y2 = cr.Dropout(0.3, rng=3).forward(x)
    np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("p", [0.25, 0.6])
def test_backward_uses_the_forward_mask(p):
    layer = cr.Dropout(p, rng=11)
    x = data((5, 6, 7))
    y = layer.forward(x)
    g = data((5, 6, 7), seed=2)
    dx = layer.backward(g)
    # y = x * m/(1-p) and dx = g * m/(1-p): the same scaled mask
    np.testing.assert_allclose(dx, g * (y / x), rtol=1e-15)
    assert np.array_equal(dx != 0, y != 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_eval_is_the_identity_and_keeps_no_cache(dtype):
    layer = cr.Dropout(0.5, rng=0).eval()
    x = data((3, 4)).astype(dtype)
    np.testing.assert_array_equal(layer.forward(x), x)
    assert layer._cache is None
    with pytest.raises(RuntimeError, match="Dropout"):
        layer.backward(np.ones_like(x))
    # back in training mode it drops again
    assert np.any(layer.train().forward(x) == 0)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (2, 3, 4, 5)], ids=str)
def test_dropout_gradcheck(p, shape):
    # gradcheck replays the generator's state, so every evaluation sees the same mask
    err = cr.gradcheck(cr.Dropout(p, rng=5), data(shape, seed=3))
    assert err < 1e-6, f"Dropout(p={p}) on {shape}: gradcheck relative error {err:.3g}"


def test_gradcheck_of_a_network_with_dropout_in_the_middle():
    model = cr.Sequential(cr.Linear(4, 6, rng=0), cr.Tanh(), cr.Dropout(0.5, rng=1),
                          cr.Linear(6, 3, rng=2))
    err = cr.gradcheck(model, data((3, 4)))
    assert err < 1e-6, f"gradcheck relative error {err:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("p, mode", [(0.0, "train"), (0.5, "eval"), (1.0, "train")])
def test_dropout_matches_torch_where_masks_are_determined(p, mode, dtype):
    # Random masks cannot agree with torch's; p=0, p=1 and eval mode are deterministic.
    ours, ref = cr.Dropout(p, rng=0), torch.nn.Dropout(p)
    if mode == "eval":
        ours.eval().gradients_in_eval()
        ref.eval()
    assert_torch_parity(ours, ref, data((2, 3, 4)), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_dropout_matches_torch_given_the_same_mask(dtype):
    # torch's functional form with our mask: x * mask / (1 - p), backward g * mask / (1 - p)
    p = 0.4
    layer = cr.Dropout(p, rng=9)
    x = data((4, 5)).astype(dtype)
    y = layer.forward(x)
    mask = torch.tensor(y != 0)
    xt = torch.tensor(x, requires_grad=True)
    yt = xt * mask / (1 - p)
    g = data((4, 5), seed=4).astype(dtype)
    yt.backward(torch.tensor(g))
    tol = 1e-15 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol)
    np.testing.assert_allclose(layer.backward(g), xt.grad.numpy(), rtol=tol)


@pytest.mark.parametrize("p", [np.float32(0.5), np.float64(0.25), np.int64(0), 1])
def test_numpy_scalars_and_ints_are_valid_probabilities(p):
    assert cr.Dropout(p).p == float(p)
    assert isinstance(cr.Dropout(p).p, float)
