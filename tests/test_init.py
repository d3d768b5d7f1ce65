"""chainrule.init against torch.nn.init.

The deterministic parts (gains, fans, constant, eye, dirac, orthogonal's algorithm)
must equal torch's. The random ones draw from another generator than torch's, so they
are checked statistically on ~300,000 values with fixed seeds (the tests cannot flake):
hard bounds, mean and variance within 5 standard errors, and the empirical CDF at nine
points within 5 standard errors of the exact one. The expected bound or std of each
case is computed with torch's own ``calculate_gain`` and fan functions, and torch's own
initializer, run on the same shape, must pass the same checks: so the formula the test
expects is torch's.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import chainrule as cr
from chainrule import init
from tests.helpers import each_dtype, float32_tolerance, rel_error

SHAPE = (512, 64, 3, 3)  # 294,912 values: fan_in 576, fan_out 4,608
Z = 5.0                  # standard errors allowed


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def uniform_law(lo: float, hi: float) -> dict:
    return {"lo": lo, "hi": hi, "mean": (lo + hi) / 2, "var": (hi - lo) ** 2 / 12,
            "cdf": lambda x: min(max((x - lo) / (hi - lo), 0.0), 1.0)}


def normal_law(mean: float, std: float) -> dict:
    return {"lo": -math.inf, "hi": math.inf, "mean": mean, "var": std ** 2,
            "cdf": lambda x: _phi((x - mean) / std)}


def trunc_normal_law(mean: float, std: float, a: float, b: float) -> dict:
    alpha, beta = (a - mean) / std, (b - mean) / std
    mass = _phi(beta) - _phi(alpha)
    pdf = lambda t: math.exp(-t * t / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    shift = (pdf(alpha) - pdf(beta)) / mass
    var = std ** 2 * (1 + (alpha * pdf(alpha) - beta * pdf(beta)) / mass - shift ** 2)
    return {"lo": a, "hi": b, "mean": mean + std * shift, "var": var,
            "cdf": lambda x: min(max((_phi((x - mean) / std) - _phi(alpha)) / mass, 0.0), 1.0)}


def assert_follows(x: np.ndarray, law: dict, what: str) -> None:
    """Bounds hard; mean, variance and the CDF at 9 quantiles within Z standard errors."""
    x = np.asarray(x, dtype=np.float64).ravel()
    n = x.size
    dtype_lo, dtype_hi = law["lo"], law["hi"]
    assert x.min() >= dtype_lo and x.max() <= dtype_hi, \
        f"{what}: values in [{x.min()}, {x.max()}], outside [{dtype_lo}, {dtype_hi}]"
    mean, var = x.mean(), x.var()
    se_mean = math.sqrt(law["var"] / n)
    assert abs(mean - law["mean"]) <= Z * se_mean, \
        f"{what}: mean {mean} vs {law['mean']} (standard error {se_mean:.2e})"
    m4 = np.mean((x - mean) ** 4)
    se_var = math.sqrt((m4 - var ** 2) / n)
    assert abs(var - law["var"]) <= Z * se_var, \
        f"{what}: variance {var} vs {law['var']} (standard error {se_var:.2e})"
    std = math.sqrt(law["var"])
    for k in np.linspace(-2, 2, 9):
        point = law["mean"] + k * std
        expected = law["cdf"](point)
        observed = np.count_nonzero(x <= point) / n
        se = math.sqrt(max(expected * (1 - expected), 1e-12) / n)
        assert abs(observed - expected) <= Z * se + 1 / n, \
            f"{what}: CDF at mean{k:+.1f} std is {observed:.5f}, expected {expected:.5f}"


def _torch_fans(shape) -> tuple[int, int]:
    return torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


def _kaiming_std(shape, a, mode, nonlinearity) -> float:
    fan = torch.nn.init._calculate_correct_fan(torch.empty(shape), mode)
    return torch.nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan)


def _xavier_std(shape, gain) -> float:
    fan_in, fan_out = _torch_fans(shape)
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


# (our function, torch's, keyword arguments, the law computed with torch's helpers)
KAIMING_GAIN = dict(a=math.sqrt(5))  # torch's Linear and Conv default
RANDOM_CASES = {
    "uniform": (init.uniform_, torch.nn.init.uniform_, dict(a=-0.3, b=0.7),
                uniform_law(-0.3, 0.7)),
    "uniform_default": (init.uniform_, torch.nn.init.uniform_, {}, uniform_law(0.0, 1.0)),
    "normal": (init.normal_, torch.nn.init.normal_, dict(mean=0.5, std=2.0),
               normal_law(0.5, 2.0)),
    "normal_default": (init.normal_, torch.nn.init.normal_, {}, normal_law(0.0, 1.0)),
    "xavier_uniform": (init.xavier_uniform_, torch.nn.init.xavier_uniform_, {},
                       uniform_law(-math.sqrt(3) * _xavier_std(SHAPE, 1.0),
                                   math.sqrt(3) * _xavier_std(SHAPE, 1.0))),
    "xavier_uniform_tanh": (init.xavier_uniform_, torch.nn.init.xavier_uniform_,
                            dict(gain=5 / 3),
                            uniform_law(-math.sqrt(3) * _xavier_std(SHAPE, 5 / 3),
                                        math.sqrt(3) * _xavier_std(SHAPE, 5 / 3))),
    "xavier_normal": (init.xavier_normal_, torch.nn.init.xavier_normal_, dict(gain=2.0),
                      normal_law(0.0, _xavier_std(SHAPE, 2.0))),
    "kaiming_uniform": (init.kaiming_uniform_, torch.nn.init.kaiming_uniform_, {},
                        uniform_law(-math.sqrt(3) * _kaiming_std(SHAPE, 0, "fan_in", "leaky_relu"),
                                    math.sqrt(3) * _kaiming_std(SHAPE, 0, "fan_in", "leaky_relu"))),
    "kaiming_uniform_sqrt5": (init.kaiming_uniform_, torch.nn.init.kaiming_uniform_,
                              KAIMING_GAIN, uniform_law(-1 / math.sqrt(576), 1 / math.sqrt(576))),
    "kaiming_uniform_fan_out_relu": (
        init.kaiming_uniform_, torch.nn.init.kaiming_uniform_,
        dict(mode="fan_out", nonlinearity="relu"),
        uniform_law(-math.sqrt(3) * _kaiming_std(SHAPE, 0, "fan_out", "relu"),
                    math.sqrt(3) * _kaiming_std(SHAPE, 0, "fan_out", "relu"))),
    "kaiming_normal": (init.kaiming_normal_, torch.nn.init.kaiming_normal_, {},
                       normal_law(0.0, _kaiming_std(SHAPE, 0, "fan_in", "leaky_relu"))),
    "kaiming_normal_fan_out_leaky": (
        init.kaiming_normal_, torch.nn.init.kaiming_normal_,
        dict(a=0.2, mode="FAN_OUT", nonlinearity="leaky_relu"),
        normal_law(0.0, _kaiming_std(SHAPE, 0.2, "fan_out", "leaky_relu"))),
    "kaiming_normal_selu": (init.kaiming_normal_, torch.nn.init.kaiming_normal_,
                            dict(nonlinearity="selu"),
                            normal_law(0.0, _kaiming_std(SHAPE, 0, "fan_in", "selu"))),
    "trunc_normal": (init.trunc_normal_, torch.nn.init.trunc_normal_, {},
                     trunc_normal_law(0.0, 1.0, -2.0, 2.0)),
    "trunc_normal_vit": (init.trunc_normal_, torch.nn.init.trunc_normal_,
                         dict(mean=0.1, std=0.02, a=-0.05, b=0.12),
                         trunc_normal_law(0.1, 0.02, -0.05, 0.12)),
    # Less than 30% of the mass in [a, b]: torch's second sampler (uniform proposals).
    "trunc_normal_tail": (init.trunc_normal_, torch.nn.init.trunc_normal_,
                          dict(mean=0.0, std=1.0, a=1.0, b=3.0),
                          trunc_normal_law(0.0, 1.0, 1.0, 3.0)),
}


def _rounded(law: dict, dtype) -> dict:
    """The law with its bounds rounded to ``dtype`` (a draw in float64 rounds into
    [dtype(lo), dtype(hi)], as rounding is monotone)."""
    lo, hi = (float(np.asarray(v, dtype=dtype)) for v in (law["lo"], law["hi"]))
    return law | {"lo": lo, "hi": hi}


@pytest.mark.parametrize("name", list(RANDOM_CASES))
def test_torch_itself_follows_the_expected_law(name):
    """The laws above are torch's: its own initializer passes the same checks."""
    _, torch_fn, kwargs, law = RANDOM_CASES[name]
    values = torch_fn(torch.empty(SHAPE, dtype=torch.float64),
                      generator=torch.Generator().manual_seed(0), **kwargs)
    assert_follows(values.numpy(), law, f"torch {name}")


@each_dtype
@pytest.mark.parametrize("name", list(RANDOM_CASES))
def test_random_initializers_follow_torchs_law(name, dtype):
    fn, _, kwargs, law = RANDOM_CASES[name]
    w = np.empty(SHAPE, dtype=dtype)
    assert fn(w, generator=1, **kwargs) is w  # filled in place and returned
    assert w.dtype == dtype
    assert_follows(w, _rounded(law, dtype), name)
    if np.isfinite(law["hi"]) and name.startswith(("uniform", "xavier", "kaiming")):
        # The bound is reached, not only respected: a U(-b, b) sample of this size comes
        # within 1e-4 b of it (probability of missing: e^-15).
        assert np.abs(w).max() >= max(abs(law["lo"]), abs(law["hi"])) * (1 - 1e-4)


def test_trunc_normal_warns_like_torch_far_from_the_interval():
    with pytest.warns(UserWarning, match="mean is more than 2 std from"):
        torch.nn.init.trunc_normal_(torch.empty(100), mean=5.0, a=-1.0, b=1.0)
    w = np.empty(2000)
    with pytest.warns(UserWarning, match="mean is more than 2 std from"):
        init.trunc_normal_(w, mean=5.0, a=-1.0, b=1.0, generator=0)
    assert w.min() >= -1.0 and w.max() <= 1.0 and w.mean() > 0.5  # piled up near b


# ---------------------------------------------------------------- deterministic parts

GAIN_CASES = [("linear", None), ("conv1d", None), ("conv2d", None), ("conv3d", None),
              ("conv_transpose1d", None), ("conv_transpose2d", None),
              ("conv_transpose3d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
              ("leaky_relu", None), ("leaky_relu", 0), ("leaky_relu", 0.2),
              ("leaky_relu", 1), ("leaky_relu", math.sqrt(5)), ("selu", None)]


@pytest.mark.parametrize("nonlinearity, param", GAIN_CASES, ids=str)
def test_calculate_gain_equals_torch(nonlinearity, param):
    ours = init.calculate_gain(nonlinearity, param)
    assert ours == torch.nn.init.calculate_gain(nonlinearity, param)
    assert type(ours) is type(torch.nn.init.calculate_gain(nonlinearity, param))


def test_calculate_gain_errors_as_torch():
    assert init.calculate_gain("selu") == 0.75
    for nonlinearity, param in [("gelu", None), ("ReLU", None), ("leaky_relu", True),
                                ("leaky_relu", "0.1")]:
        with pytest.raises(ValueError):
            torch.nn.init.calculate_gain(nonlinearity, param)
        with pytest.raises(ValueError, match="calculate_gain"):
            init.calculate_gain(nonlinearity, param)


@pytest.mark.parametrize("shape", [(3, 4), (8, 3, 5), (16, 3, 3, 3), (2, 3, 4, 5, 6),
                                   (1, 1), (4, 0, 3)], ids=str)
def test_fans_equal_torch(shape):
    assert init._calculate_fan_in_and_fan_out(np.empty(shape)) == _torch_fans(shape)
    assert init._calculate_fan_in_and_fan_out(cr.Parameter(np.empty(shape))) == _torch_fans(shape)
    for mode in ("fan_in", "fan_out"):
        assert init._calculate_correct_fan(np.empty(shape), mode) == \
            torch.nn.init._calculate_correct_fan(torch.empty(shape), mode)


@pytest.mark.parametrize("shape", [(5,), ()], ids=str)
def test_fans_need_two_dimensions_as_in_torch(shape):
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init._calculate_fan_in_and_fan_out(np.empty(shape))
    for fn in (init.xavier_uniform_, init.xavier_normal_, init.kaiming_uniform_,
               init.kaiming_normal_):
        with pytest.raises(ValueError, match="fewer than 2 dimensions"):
            fn(np.empty(shape))
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        init.kaiming_uniform_(np.empty((3, 4)), mode="fan_avg")


@pytest.mark.parametrize("fn, args", [(init.constant_, (0.25,)), (init.ones_, ()),
                                      (init.zeros_, ())], ids=["constant", "ones", "zeros"])
@each_dtype
def test_constant_ones_zeros(fn, args, dtype):
    torch_fn = getattr(torch.nn.init, fn.__name__)
    p = cr.Parameter(np.full((4, 3, 2), 7.0, dtype))
    data = p.data
    assert fn(p, *args) is p and p.data is data  # the same object, filled in place
    expected = torch_fn(torch.empty((4, 3, 2), dtype=torch.float64), *args).numpy()
    np.testing.assert_array_equal(p.data, expected.astype(dtype))


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4)], ids=str)
def test_eye_equals_torch(shape):
    w = np.full(shape, 9.0)
    np.testing.assert_array_equal(init.eye_(w), torch.nn.init.eye_(torch.empty(shape)).numpy())
    with pytest.raises(ValueError, match="only tensors with 2 dimensions"):
        init.eye_(np.empty((2, 2, 2)))


@pytest.mark.parametrize("shape, groups", [((6, 3, 3), 1), ((4, 4, 3, 3), 2),
                                           ((3, 5, 5, 5), 1), ((8, 2, 3, 3, 3), 2),
                                           ((6, 4, 2, 4), 3)], ids=str)
def test_dirac_equals_torch(shape, groups):
    w = np.full(shape, 9.0, dtype=np.float32)
    expected = torch.nn.init.dirac_(torch.empty(shape), groups).numpy()
    np.testing.assert_array_equal(init.dirac_(w, groups), expected)


def test_dirac_errors_as_torch():
    for shape, groups, message in [((3, 3), 1, "3, 4, or 5 dimensions"),
                                   ((6, 3, 3), 4, "divisible by groups")]:
        with pytest.raises(ValueError):
            torch.nn.init.dirac_(torch.empty(shape), groups)
        with pytest.raises(ValueError, match=message):
            init.dirac_(np.empty(shape), groups)


ORTHOGONAL_SHAPES = [(3, 5), (5, 3), (4, 4), (6, 2, 3, 3), (20, 4, 1), (1, 7)]


@each_dtype
@pytest.mark.parametrize("gain", [1.0, 2.5])
@pytest.mark.parametrize("shape", ORTHOGONAL_SHAPES, ids=str)
def test_orthogonal_is_orthogonal(shape, gain, dtype):
    w = init.orthogonal_(np.empty(shape, dtype=dtype), gain=gain, generator=0)
    assert w.dtype == dtype
    rows = shape[0]
    flat = w.reshape(rows, -1).astype(np.float64)
    # The short side is orthonormal (times gain): W W^T for wide, W^T W for tall.
    gram = flat @ flat.T if rows <= flat.shape[1] else flat.T @ flat
    tol = 1e-12 if dtype == np.float64 else float32_tolerance(max(flat.shape))
    assert rel_error(gram, gain ** 2 * np.eye(len(gram))) <= tol


@pytest.mark.parametrize("shape", ORTHOGONAL_SHAPES, ids=str)
def test_orthogonal_follows_torchs_algorithm(shape):
    """Given the same Gaussian matrix, torch's steps (transpose a wide one, QR, multiply
    by the signs of R's diagonal, transpose back, times gain) give the same matrix."""
    rows = shape[0]
    cols = math.prod(shape) // rows
    flat = torch.tensor(np.random.default_rng(4).normal(0.0, 1.0, (rows, cols)))
    if rows < cols:
        flat = flat.T
    q, r = torch.linalg.qr(flat)
    q = q * torch.diag(r, 0).sign()
    if rows < cols:
        q = q.T
    expected = (q * 1.5).reshape(shape).numpy()
    ours = init.orthogonal_(np.empty(shape), gain=1.5, generator=np.random.default_rng(4))
    assert rel_error(ours, expected) <= 1e-12


def test_orthogonal_errors_and_empty_as_torch():
    with pytest.raises(ValueError, match="2 or more dimensions"):
        torch.nn.init.orthogonal_(torch.empty(5))
    with pytest.raises(ValueError, match="2 or more dimensions"):
        init.orthogonal_(np.empty(5))
    empty = np.empty((0, 3))
    assert init.orthogonal_(empty) is empty


def test_kaiming_warns_on_zero_element_tensors_as_torch():
    for ours, theirs in [(init.kaiming_uniform_, torch.nn.init.kaiming_uniform_),
                         (init.kaiming_normal_, torch.nn.init.kaiming_normal_)]:
        with pytest.warns(UserWarning, match="zero-element tensors is a no-op"):
            theirs(torch.empty(0, 3))
        empty = np.empty((0, 3))
        with pytest.warns(UserWarning, match="zero-element tensors is a no-op"):
            assert ours(empty) is empty


# ---------------------------------------------------------------- arguments

def test_parameters_are_filled_in_place():
    layer = cr.Linear(20, 10, rng=0)
    weight, data = layer.weight, layer.weight.data
    optimizer = cr.optim.SGD(layer.parameters(), lr=0.1)
    assert init.xavier_normal_(layer.weight, generator=0) is weight
    assert layer.weight.data is data and layer.weight.dtype == np.float32
    assert optimizer.param_groups[0]["params"][0] is weight


def test_generator_takes_a_seed_or_a_generator():
    a = init.kaiming_uniform_(np.empty((8, 5)), generator=3)
    b = init.kaiming_uniform_(np.empty((8, 5)), generator=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(3)
    first = init.normal_(np.empty(6), generator=rng)
    second = init.normal_(np.empty(6), generator=rng)  # the Generator moves on
    assert not np.array_equal(first, second)
    assert not np.array_equal(a, init.kaiming_uniform_(np.empty((8, 5)), generator=4))


@pytest.mark.parametrize("tensor", [np.zeros((3, 4), dtype=np.int64), [[0.0, 1.0]],
                                    torch.empty(3, 4)],
                         ids=["int array", "list", "torch tensor"])
def test_only_float_arrays_and_parameters(tensor):
    with pytest.raises(TypeError, match="chainrule.init.uniform_: expected a Parameter or a "
                                        "floating-point ndarray"):
        init.uniform_(tensor)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match="chainrule.init.xavier_uniform_"):
            init.xavier_uniform_(tensor)
