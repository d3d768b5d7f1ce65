"""The torch.nn activation catalog: ReLU6, Hardtanh, ELU, SELU, CELU, GELU, SiLU, Mish,
Hardswish, Hardsigmoid, Softplus, PReLU, Softmax, LogSoftmax and Identity.

Finite differences away from the kinks, parity with torch over shapes and options in
float64 and float32, the derivatives exactly at the kinks bit for bit against torch,
no overflow for large |x|, Softmax's implicit dim, PReLU's slope and the errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import chainrule as cr
from chainrule.inspect.stats import activation_kind, activation_stats
from tests.helpers import TOLERANCE, assert_torch_parity, float32_tolerance, rel_error

torch = pytest.importorskip("torch")
nn = torch.nn

DTYPES = [np.float64, np.float32]
SHAPES = [(1, 1), (3, 5), (2, 3, 4, 5), (1, 7, 3), (6,)]

# (id, chainrule factory, torch factory, kinks: the x where the derivative jumps)
ELEMENTWISE = [
    ("ReLU6", cr.ReLU6, nn.ReLU6, (0.0, 6.0)),
    ("Hardtanh", cr.Hardtanh, nn.Hardtanh, (-1.0, 1.0)),
    ("Hardtanh-2,3", lambda: cr.Hardtanh(-2.0, 3.0), lambda: nn.Hardtanh(-2.0, 3.0), (-2.0, 3.0)),
    ("Hardtanh0.5,0.75", lambda: cr.Hardtanh(0.5, 0.75), lambda: nn.Hardtanh(0.5, 0.75),
     (0.5, 0.75)),
    ("ELU", cr.ELU, nn.ELU, (0.0,)),
    ("ELU0.3", lambda: cr.ELU(0.3), lambda: nn.ELU(0.3), (0.0,)),
    ("ELU2.5", lambda: cr.ELU(alpha=2.5), lambda: nn.ELU(alpha=2.5), (0.0,)),
    ("SELU", cr.SELU, nn.SELU, (0.0,)),
    ("CELU", cr.CELU, nn.CELU, (0.0,)),
    ("CELU0.1", lambda: cr.CELU(0.1), lambda: nn.CELU(0.1), (0.0,)),
    ("CELU2.5", lambda: cr.CELU(2.5), lambda: nn.CELU(2.5), (0.0,)),
    ("GELU", cr.GELU, nn.GELU, ()),
    ("GELUtanh", lambda: cr.GELU("tanh"), lambda: nn.GELU("tanh"), ()),
    ("SiLU", cr.SiLU, nn.SiLU, ()),
    ("Mish", cr.Mish, nn.Mish, ()),
    ("Hardswish", cr.Hardswish, nn.Hardswish, (-3.0, 3.0)),
    ("Hardsigmoid", cr.Hardsigmoid, nn.Hardsigmoid, (-3.0, 3.0)),
    ("Softplus", cr.Softplus, nn.Softplus, ()),
    ("Softplus2,5", lambda: cr.Softplus(beta=2.0, threshold=5.0),
     lambda: nn.Softplus(beta=2.0, threshold=5.0), (2.5,)),
    ("Softplus0.5,1", lambda: cr.Softplus(0.5, 1.0), lambda: nn.Softplus(0.5, 1.0), (2.0,)),
    ("PReLU", cr.PReLU, nn.PReLU, (0.0,)),
    ("PReLU-init", lambda: cr.PReLU(init=-0.3), lambda: nn.PReLU(init=-0.3), (0.0,)),
    ("Identity", cr.Identity, nn.Identity, ()),
]
IDS = [c[0] for c in ELEMENTWISE]


def avoiding(kinks, shape, seed: int, scale: float = 8.0) -> np.ndarray:
    """Uniform values in [-scale, scale] at least 0.05 from every kink, so that the
    finite differences (step 1e-6) never straddle one and the gradient is unique."""
    x = np.random.default_rng(seed).uniform(-scale, scale, shape)
    for kink in kinks:
        near = np.abs(x - kink) < 0.05
        x[near] += 0.1 * np.sign(x[near] - kink + 1e-12)
    return x


def _torch_grads(module, x: np.ndarray, g: np.ndarray):
    xt = torch.tensor(x, requires_grad=True)
    yt = module(xt)
    yt.backward(torch.tensor(g))
    return yt.detach().numpy(), xt.grad.numpy()


# ---------------------------------------------------------------------------- elementwise
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name, make, _, kinks", ELEMENTWISE, ids=IDS)
def test_gradcheck(name, make, _, kinks, shape):
    err = cr.gradcheck(make(), avoiding(kinks, shape, seed=1))
    assert err < 1e-6, f"{name} on {shape}: gradcheck relative error {err:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name, make, make_torch, kinks", ELEMENTWISE, ids=IDS)
def test_matches_torch(name, make, make_torch, kinks, shape, dtype):
    x = avoiding(kinks, shape, seed=2)
    if name.startswith("GELU") and dtype == np.float32:
        # torch's float32 GELU loses up to 1e-3 of relative accuracy for x << 0 (its
        # 1 + erf and 1 + tanh cancel; ours do not): compare with its float64 instead.
        assert_float32_matches_torch_float64(make(), make_torch(), x)
        return
    # PReLU's one slope sums over every element: that many terms in float32.
    terms = x.size if name.startswith("PReLU") else 1
    assert_torch_parity(make(), make_torch(), x, dtype=dtype, terms=terms)


def assert_float32_matches_torch_float64(layer, module, x: np.ndarray) -> None:
    """Forward and input gradient of ``layer`` in float32 against torch's float64 on the
    same float32 input, at the float32 tolerance of one rounded operation."""
    x = x.astype(np.float32)
    g = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    y_torch, dx_torch = _torch_grads(module.double(), x.astype(np.float64), g.astype(np.float64))
    y = layer.forward(x)
    dx = layer.backward(g)
    assert y.dtype == dx.dtype == np.float32
    errors = {"forward": rel_error(y, y_torch), "input_grad": rel_error(dx, dx_torch)}
    # The derivative adds two terms (Phi(x) + x phi(x) and its tanh-form twin).
    assert max(errors.values()) <= float32_tolerance(2), f"{layer!r}: {errors}"


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_float32_is_accurate_where_torchs_float32_cancels(approximate):
    x = np.array([-3.8, -4.5, -5.0], dtype=np.float32)
    truth, _ = _torch_grads(nn.GELU(approximate).double(), x.astype(np.float64), np.ones(3))
    ours = cr.GELU(approximate).forward(x)
    theirs = nn.GELU(approximate)(torch.from_numpy(x)).numpy()
    ours_error = np.max(np.abs(ours - truth) / np.abs(truth))
    theirs_error = np.max(np.abs(theirs - truth) / np.abs(truth))
    assert theirs_error > 1e-4 and ours_error < theirs_error / 100, (ours_error, theirs_error)
    if approximate == "none":  # Phi computed in float64: two float32 roundings left
        assert ours_error <= np.finfo(np.float32).eps


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name, make, make_torch, kinks", [c for c in ELEMENTWISE if c[3]],
                         ids=[c[0] for c in ELEMENTWISE if c[3]])
def test_derivative_exactly_at_the_kinks_matches_torch_bit_for_bit(name, make, make_torch,
                                                                   kinks, dtype):
    # Each kink, signed zeros, and the neighbouring floats on either side of each kink
    # (for Softplus the kink is beta * x == threshold: at it the smooth branch is taken).
    points = []
    for kink in kinks:
        k = np.array(kink, dtype)
        points += [k, np.nextafter(k, dtype(-np.inf)), np.nextafter(k, dtype(np.inf))]
        if kink == 0:
            points.append(-k)
    x = np.array(points, dtype=dtype).reshape(1, -1)
    g = np.random.default_rng(0).uniform(0.5, 2.0, x.shape).astype(dtype)
    layer = make().to(dtype) if name.startswith("PReLU") else make()
    y = layer.forward(x)
    dx = layer.backward(g)
    module = make_torch().to(torch.float64 if dtype == np.float64 else torch.float32)
    y_torch, dx_torch = _torch_grads(module, x, g)
    if name.startswith("Softplus"):
        # At beta * x == threshold (the first point) the smooth branch gives g * z / (z + 1),
        # z = exp(threshold), in whose last bit NumPy's exp and torch's may differ; the
        # branch taken (z / (z + 1) < 1, not 1) and the other points must be exact.
        np.testing.assert_allclose(dx[0, 0], dx_torch[0, 0], rtol=np.finfo(dtype).eps)
        assert dx[0, 0] < g[0, 0]
        dx, dx_torch = dx[:, 1:], dx_torch[:, 1:]
    np.testing.assert_array_equal(dx, dx_torch, err_msg=f"{name} at {x}")
    np.testing.assert_allclose(y, y_torch, rtol=4 * np.finfo(dtype).eps, atol=0)
    if name.startswith("PReLU"):
        np.testing.assert_array_equal(layer.weight.grad, module.weight.grad.numpy())


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_kink_values_chosen_as_torch_chooses_them(dtype):
    # The documented choices, spelled out (the test above checks them against torch).
    def slope(layer, x):
        layer.forward(np.array([x], dtype))
        return float(layer.backward(np.ones(1, dtype))[0])

    assert slope(cr.ReLU6(), 0.0) == 0 and slope(cr.ReLU6(), 6.0) == 0
    assert slope(cr.Hardtanh(-2.0, 3.0), -2.0) == 0 and slope(cr.Hardtanh(-2.0, 3.0), 3.0) == 0
    assert slope(cr.Hardswish(), -3.0) == 0 and slope(cr.Hardswish(), 3.0) == 1
    assert slope(cr.Hardsigmoid(), -3.0) == 0 and slope(cr.Hardsigmoid(), 3.0) == 0
    assert slope(cr.ELU(0.3), 0.0) == pytest.approx(0.3, rel=1e-7)
    assert slope(cr.CELU(2.0), 0.0) == 1.0
    assert slope(cr.PReLU(), 0.0) == 0.25
    assert slope(cr.Softplus(2.0, 5.0), np.nextafter(dtype(2.5), dtype(3))) == 1.0
    assert slope(cr.Softplus(2.0, 5.0), 2.5) < 1.0


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name, make, make_torch, _", ELEMENTWISE, ids=IDS)
def test_large_inputs_do_not_overflow_and_match_torch(name, make, make_torch, _, dtype):
    x = np.array([[-1000.0, -100.0, -30.0, 0.0, 30.0, 100.0, 1000.0]], dtype=dtype)
    g = np.ones_like(x)
    layer = make().to(dtype) if name.startswith("PReLU") else make()
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        y = layer.forward(x)
        dx = layer.backward(g)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx)), (y, dx)
    module = make_torch().to(torch.float64 if dtype == np.float64 else torch.float32)
    y_torch, dx_torch = _torch_grads(module, x, g)
    tol = TOLERANCE[np.dtype(dtype)]
    assert rel_error(y, y_torch) <= tol and rel_error(dx, dx_torch) <= tol, (y, y_torch, dx, dx_torch)


@pytest.mark.parametrize("name, make, make_torch, _", ELEMENTWISE, ids=IDS)
def test_repr_is_torchs(name, make, make_torch, _):
    assert repr(make()) == repr(make_torch())


@pytest.mark.parametrize("cls", [cr.ReLU6, cr.ELU, cr.SELU, cr.CELU, cr.SiLU, cr.Mish,
                                 cr.Hardswish, cr.Hardsigmoid, cr.Hardtanh])
def test_inplace_is_accepted_and_ignored(cls):
    x = np.linspace(-4, 4, 9).reshape(1, 9)
    layer = cls(inplace=True)
    y = layer.forward(x.copy())
    np.testing.assert_array_equal(y, cls().forward(x))
    np.testing.assert_array_equal(x, np.linspace(-4, 4, 9).reshape(1, 9))
    assert "inplace" not in repr(layer)


def test_identity_accepts_any_arguments_and_passes_gradients_through():
    layer = cr.Identity(54, unused_argument=0.1)
    x = np.arange(6.0).reshape(2, 3)
    assert layer.forward(x) is x
    g = np.ones((2, 3))
    np.testing.assert_array_equal(layer.backward(g), g)
    assert cr.Identity().forward(np.arange(3)).dtype == np.float32   # integers become floats
    with pytest.raises(ValueError, match=r"Identity\(\).*\(2, 3\)"):
        layer.forward(x)
        layer.backward(np.ones((3, 2)))


@pytest.mark.parametrize("name, make, _, kinks", ELEMENTWISE, ids=IDS)
def test_zero_dimensional_input(name, make, _, kinks):
    layer = make()
    y = layer.forward(np.array(0.7))
    assert y.shape == () and layer.backward(np.array(1.0)).shape == ()


# ---------------------------------------------------------------------------- GELU
def test_gelu_exact_negative_tail_is_accurate():
    # x/2 * erfc(-x/sqrt 2) keeps its relative accuracy where 1 + erf(x/sqrt 2) is 0 in
    # float64. (The relative error left is erfc's condition number, about x^2, times the
    # rounding of x/sqrt 2.)
    x = np.array([-8.0, -12.0, -20.0])
    expected = [v / 2 * math.erfc(-v / math.sqrt(2)) for v in x]
    np.testing.assert_allclose(cr.GELU().forward(x), expected, rtol=1e-12)
    naive = x / 2 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    assert abs(naive[0] / expected[0] - 1) > 1e-2 and np.all(naive[1:] == 0)


# ---------------------------------------------------------------------------- PReLU
PRELU_SHAPES = [(2, 3), (1, 3, 5), (2, 3, 4, 5), (4, 3, 1, 2, 2)]


def _prelu_pair(channels: int, seed: int):
    module = nn.PReLU(channels)
    with torch.no_grad():  # slopes of both signs and sizes, not all 0.25
        module.weight.copy_(torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, channels)))
    return cr.PReLU(channels), module


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", PRELU_SHAPES, ids=str)
def test_prelu_per_channel_matches_torch(shape, dtype):
    x = avoiding((0.0,), shape, seed=3)
    layer, module = _prelu_pair(shape[1], seed=4)
    # Each channel's slope sums x.size / C terms.
    errors = assert_torch_parity(layer, module, x, dtype=dtype, terms=x.size // shape[1])
    assert set(errors) == {"forward", "input_grad", "weight.grad"}


@pytest.mark.parametrize("shape", PRELU_SHAPES, ids=str)
def test_prelu_per_channel_gradcheck(shape):
    layer, _ = _prelu_pair(shape[1], seed=5)
    layer.weight.data[...] = np.random.default_rng(6).uniform(-1, 1, shape[1])
    assert cr.gradcheck(layer, avoiding((0.0,), shape, seed=7)) < 1e-6


def test_prelu_parameter_shape_dtype_state_and_reset():
    layer = cr.PReLU(3, init=0.1, dtype=np.float64)
    assert layer.weight.shape == (3,) and layer.weight.dtype == np.float64
    assert list(layer.state_dict()) == list(nn.PReLU(3).state_dict()) == ["weight"]
    np.testing.assert_array_equal(layer.weight.data, [0.1, 0.1, 0.1])
    layer.weight.data[...] = [1.0, 2.0, 3.0]
    layer.reset_parameters(rng=123)
    np.testing.assert_array_equal(layer.weight.data, [0.1, 0.1, 0.1])
    assert cr.PReLU().weight.dtype == np.float32


def test_prelu_weight_gradient_accumulates_and_input_gradient_can_be_skipped():
    layer = cr.PReLU(2, init=0.5).double()
    x = np.array([[-1.0, 2.0], [-3.0, -4.0]])
    g = np.array([[1.0, 1.0], [2.0, 0.5]])
    layer.forward(x)
    dx = layer.backward(g)
    np.testing.assert_array_equal(dx, [[0.5, 1.0], [1.0, 0.25]])
    np.testing.assert_array_equal(layer.weight.grad, [-7.0, -2.0])
    layer.forward(x)
    assert layer.backward(g, needs_input_grad=False) is None
    np.testing.assert_array_equal(layer.weight.grad, [-14.0, -4.0])


def test_prelu_one_slope_works_on_any_rank():
    for shape in [(), (5,), (2, 3), (2, 3, 4)]:
        x = avoiding((0.0,), shape, seed=8)
        assert_torch_parity(cr.PReLU(init=0.3), nn.PReLU(init=0.3), x)


@pytest.mark.parametrize("shape", [(2, 4), (2, 2, 5), (3,), ()], ids=str)
def test_prelu_per_channel_refuses_a_wrong_channel_count(shape):
    with pytest.raises(ValueError, match=r"PReLU\(num_parameters=3\): expected input of shape "
                                         r"\(N, 3, \*\).*got shape " + re_shape(shape)):
        cr.PReLU(3).forward(np.ones(shape))
    with pytest.raises(RuntimeError):  # torch refuses the same inputs
        nn.PReLU(3)(torch.ones(shape))


def re_shape(shape) -> str:
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


# ---------------------------------------------------------------------------- Softmax
SOFTMAX_CASES = [((4, 5), 1), ((4, 5), 0), ((4, 5), -1), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), -1),
                 ((2, 3, 4, 5), 2), ((1, 7, 3), 1), ((6,), 0), ((1, 1), 1), ((3, 1, 2), -2)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape, dim", SOFTMAX_CASES, ids=str)
@pytest.mark.parametrize("cls, torch_cls", [(cr.Softmax, nn.Softmax), (cr.LogSoftmax, nn.LogSoftmax)],
                         ids=["Softmax", "LogSoftmax"])
def test_softmax_matches_torch(cls, torch_cls, shape, dim, dtype):
    x = np.random.default_rng(9).standard_normal(shape) * 4
    assert_torch_parity(cls(dim), torch_cls(dim), x, dtype=dtype, terms=shape[dim])


@pytest.mark.parametrize("shape, dim", SOFTMAX_CASES, ids=str)
@pytest.mark.parametrize("cls", [cr.Softmax, cr.LogSoftmax], ids=["Softmax", "LogSoftmax"])
def test_softmax_gradcheck(cls, shape, dim):
    x = np.random.default_rng(10).standard_normal(shape) * 3
    assert cr.gradcheck(cls(dim=dim), x) < 1e-6


@pytest.mark.parametrize("ndim, implicit", [(0, 0), (1, 0), (2, 1), (3, 0), (4, 1), (5, 1)])
@pytest.mark.parametrize("cls, torch_cls", [(cr.Softmax, nn.Softmax), (cr.LogSoftmax, nn.LogSoftmax)],
                         ids=["Softmax", "LogSoftmax"])
def test_softmax_without_dim_chooses_torchs_implicit_axis_and_warns(cls, torch_cls, ndim, implicit):
    x = np.random.default_rng(11).standard_normal((3, 2, 4, 2, 2)[:ndim])
    layer = cls()
    assert repr(layer) == f"{cls.__name__}(dim=None)" == repr(torch_cls())
    with pytest.warns(UserWarning, match=f"implicit dimension.*dim={implicit}"):
        y = layer.forward(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y_torch, _ = _torch_grads(torch_cls(), x, np.ones_like(x))
    np.testing.assert_allclose(y, y_torch, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(y, cls(implicit).forward(x), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_softmax_large_inputs_do_not_overflow(dtype):
    x = np.array([[1000.0, -1000.0, 0.0], [1000.0, 1000.0, 999.0], [-1000.0, -1000.0, -1000.0]],
                 dtype=dtype)
    g = np.random.default_rng(12).standard_normal(x.shape).astype(dtype)
    for cls, torch_cls in ((cr.Softmax, nn.Softmax), (cr.LogSoftmax, nn.LogSoftmax)):
        layer = cls(dim=1)
        with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
            warnings.simplefilter("error")
            y = layer.forward(x)
            dx = layer.backward(g)
        y_torch, dx_torch = _torch_grads(torch_cls(dim=1), x, g)
        tol = TOLERANCE[np.dtype(dtype)]
        assert rel_error(y, y_torch) <= tol and rel_error(dx, dx_torch) <= tol, cls
    np.testing.assert_allclose(cr.Softmax(dim=1).forward(x).sum(axis=1), 1.0, rtol=1e-6)


def test_softmax_of_a_scalar():
    for dim in (0, -1):
        assert cr.Softmax(dim).forward(np.array(3.0)) == 1.0
        layer = cr.LogSoftmax(dim)
        assert layer.forward(np.array(3.0)) == 0.0
        assert layer.backward(np.array(2.0)) == 0.0


@pytest.mark.parametrize("cls", [cr.Softmax, cr.LogSoftmax], ids=["Softmax", "LogSoftmax"])
def test_softmax_refuses_a_dim_out_of_range(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\(dim=2\): dim 2 is out of range for "
                                         r"input of shape \(4, 5\)"):
        cls(2).forward(np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"dim -3 is out of range"):
        cls(-3).forward(np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"out of range for input of shape \(\)"):
        cls(1).forward(np.array(1.0))


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("build, error, message", [
    (lambda: cr.Hardtanh(1.0, 1.0), ValueError, r"Hardtanh: max_val must be greater than min_val"),
    (lambda: cr.Hardtanh(2.0, -2.0), ValueError, r"Hardtanh: max_val must be greater"),
    (lambda: cr.Hardtanh("a"), TypeError, r"Hardtanh: min_val must be a real number, got 'a'"),
    (lambda: cr.Hardtanh(-1.0, float("nan")), ValueError, r"Hardtanh: max_val must be finite"),
    (lambda: cr.ELU(alpha=True), TypeError, r"ELU: alpha must be a real number, got True"),
    (lambda: cr.ELU(alpha=float("inf")), ValueError, r"ELU: alpha must be finite, got inf"),
    (lambda: cr.CELU(alpha=0.0), ValueError, r"CELU: alpha must not be 0"),
    (lambda: cr.CELU(alpha=None), TypeError, r"CELU: alpha must be a real number"),
    (lambda: cr.GELU("exact"), ValueError, r"GELU: approximate must be 'none' or 'tanh', got 'exact'"),
    (lambda: cr.Softplus(beta=0), ValueError, r"Softplus: beta must not be 0"),
    (lambda: cr.Softplus(threshold="20"), TypeError, r"Softplus: threshold must be a real number"),
    (lambda: cr.PReLU(0), ValueError, r"PReLU\(num_parameters=0\): num_parameters must be >= 1"),
    (lambda: cr.PReLU(2.0), TypeError, r"PReLU\(num_parameters=2.0\): num_parameters must be a "
                                       r"positive int"),
    (lambda: cr.PReLU(init="x"), TypeError, r"PReLU\(num_parameters=1\): init must be a real number"),
    (lambda: cr.PReLU(dtype=np.int32), TypeError, r"PReLU\(num_parameters=1\): dtype must be "
                                                  r"float32 or float64"),
    (lambda: cr.Softmax(dim=1.0), TypeError, r"Softmax: dim must be an int or None, got 1.0"),
    (lambda: cr.LogSoftmax(dim=True), TypeError, r"LogSoftmax: dim must be an int or None"),
])
def test_bad_arguments_are_refused_by_name(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_numpy_scalars_are_accepted_as_arguments():
    assert cr.ELU(np.float32(0.5)).alpha == 0.5
    assert cr.Softmax(np.int64(1)).dim == 1


# ---------------------------------------------------------------------------- inspect
def test_relu6_counts_as_a_relu_for_the_dead_unit_statistics():
    assert activation_kind(cr.ReLU6()) == "relu"
    assert activation_kind(cr.Hardtanh(0.0, 6.0)) == "other"   # can be negative in general
    assert activation_kind(cr.GELU()) == "other"
    y = cr.ReLU6().forward(np.array([[-1.0, 7.0, 2.0], [-2.0, 8.0, 0.0]]))  # channel 0 dead
    stats = activation_stats(y, "relu")
    assert stats["zero_fraction"] == 0.5 and stats["dead_units"] == 1


# ---------------------------------------------------------------------------- ONNX
def test_celu_exports_as_valid_onnx_in_float64_too(tmp_path):
    # ONNX's Celu operator is float32 only; a float64 graph spells out its formula.
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = cr.Sequential(cr.PReLU(init=1.0, dtype=np.float64), cr.CELU(alpha=0.7))
    proto = cr.export_onnx(model, tmp_path / "celu.onnx", (3, 4))
    assert "Celu" not in {node.op_type for node in proto.graph.node}
    onnx.checker.check_model(proto, full_check=True)
    x = np.random.default_rng(13).standard_normal((2, 3, 4)) * 30
    session = ort.InferenceSession(str(tmp_path / "celu.onnx"), providers=["CPUExecutionProvider"])
    assert rel_error(session.run(["output"], {"input": x})[0], model.forward(x)) <= 1e-15
