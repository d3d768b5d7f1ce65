"""Linear and Flatten: finite differences in float64 and parity with torch.nn."""

from __future__ import annotations

import math

import numpy as np
import pytest

import chainrule as cr
from tests.helpers import assert_torch_parity

torch = pytest.importorskip("torch")

DTYPES = [np.float64, np.float32]

# (in_features, out_features, bias, input shape): batch 1, odd sizes, 3-D (N, L, in).
LINEAR_CASES = [
    (4, 3, True, (2, 4)),
    (1, 1, True, (1, 1)),
    (7, 5, False, (3, 7)),
    (5, 9, True, (1, 5)),
    (6, 2, True, (2, 3, 6)),
    (3, 4, False, (1, 5, 3)),
]


def _linear_id(case) -> str:
    fin, fout, bias, shape = case
    return f"{fin}->{fout}-bias{int(bias)}-x{'x'.join(map(str, shape))}"


@pytest.mark.parametrize("case", LINEAR_CASES, ids=_linear_id)
def test_linear_gradcheck(case):
    fin, fout, bias, shape = case
    layer = cr.Linear(fin, fout, bias=bias, dtype=np.float64, rng=1)
    x = np.random.default_rng(2).standard_normal(shape)
    err = cr.gradcheck(layer, x)
    assert err < 1e-6, f"Linear{case}: gradcheck relative error {err:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", LINEAR_CASES, ids=_linear_id)
def test_linear_matches_torch(case, dtype):
    fin, fout, bias, shape = case
    torch.manual_seed(0)
    ref = torch.nn.Linear(fin, fout, bias=bias)
    layer = cr.Linear(fin, fout, bias=bias)
    x = np.random.default_rng(3).standard_normal(shape)
    assert_torch_parity(layer, ref, x, dtype=dtype)


def test_linear_without_bias_has_only_a_weight():
    layer = cr.Linear(3, 2, bias=False)
    assert layer.bias is None
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    assert list(layer.state_dict()) == ["weight"]
    x = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(layer.forward(x), x @ layer.weight.data.T)


def test_linear_init_is_seeded_and_within_torch_bound():
    a = cr.Linear(50, 20, rng=4)
    b = cr.Linear(50, 20, rng=4)
    c = cr.Linear(50, 20, rng=5)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)
    assert not np.array_equal(a.weight.data, c.weight.data)
    bound = 1 / math.sqrt(50)
    assert np.abs(a.weight.data).max() <= bound and np.abs(a.bias.data).max() <= bound
    # Kaiming-uniform spread, not a degenerate constant: the std of U(-b, b) is b/sqrt(3).
    assert abs(a.weight.data.std() - bound / math.sqrt(3)) < 0.1 * bound
    assert a.weight.dtype == np.float32


def test_linear_gradients_accumulate_across_backwards():
    layer = cr.Linear(3, 2, dtype=np.float64, rng=0)
    x = np.random.default_rng(0).standard_normal((4, 3))
    g = np.random.default_rng(1).standard_normal((4, 2))
    layer.forward(x)
    layer.backward(g)
    once = layer.weight.grad.copy(), layer.bias.grad.copy()
    layer.forward(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * once[0], rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, 2 * once[1], rtol=1e-12)


# (start_dim, end_dim, input shape)
FLATTEN_CASES = [
    (1, -1, (2, 3, 4, 5)),
    (1, -1, (1, 3, 1, 1)),
    (0, -1, (2, 3, 4)),
    (1, 2, (2, 3, 4, 5)),
    (2, 3, (1, 3, 4, 5)),
    (-3, -2, (2, 3, 4, 5)),
    (1, 1, (3, 5, 2)),
]


def _flatten_id(case) -> str:
    start, end, shape = case
    return f"{start}..{end}-x{'x'.join(map(str, shape))}"


@pytest.mark.parametrize("case", FLATTEN_CASES, ids=_flatten_id)
def test_flatten_shape_and_gradcheck(case):
    start, end, shape = case
    layer = cr.Flatten(start, end)
    x = np.random.default_rng(5).standard_normal(shape)
    expected = torch.flatten(torch.tensor(x), start, end).shape
    assert layer.forward(x).shape == tuple(expected)
    err = cr.gradcheck(layer, x)
    assert err < 1e-6, f"Flatten{case}: gradcheck relative error {err:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", FLATTEN_CASES, ids=_flatten_id)
def test_flatten_matches_torch(case, dtype):
    start, end, shape = case
    x = np.random.default_rng(6).standard_normal(shape)
    assert_torch_parity(cr.Flatten(start, end), torch.nn.Flatten(start, end), x, dtype=dtype)


def test_flatten_backward_restores_the_input_layout():
    layer = cr.Flatten()
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    y = layer.forward(x)
    np.testing.assert_array_equal(layer.backward(y), x)


def test_flatten_rejects_reversed_axes():
    with pytest.raises(ValueError, match=r"Flatten.*\(2, 3, 4\)"):
        cr.Flatten(2, 1).forward(np.zeros((2, 3, 4)))
