"""The pooling catalog: ceil_mode and divisor_override of MaxPool2d/AvgPool2d, MaxPool1d,
AvgPool1d, AdaptiveMaxPool2d (and output sizes with None). Finite differences, parity with
torch.nn in float64 and float32, the plain-loop references of tests/reference.py (exact,
with ties and integer gradients), tie and NaN routing bit for bit against torch, errors,
checkpoints (old descriptions included), torch conversion and ONNX Runtime."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import chainrule as cr
from chainrule.inspect import derivative_of
from chainrule.serialize import build, describe
from tests import reference as ref
from tests.helpers import (assert_gradcheck, assert_torch_parity, each_dtype, float32_tolerance, pair,
                           params, rel_error)
from tests.layers.pool_cases import (ADAPTIVE_CASES, check_avg_pool_matches_loop_reference,
                                     check_max_pool_matches_reference_with_ties,
                                     check_max_pool_ties_route_like_torch, check_unbatched_input,
                                     distinct, max_pool_reference, torch_pair)

torch = pytest.importorskip("torch")
nn = torch.nn


def window_terms(kwargs) -> int:
    """The most terms a sum of a windowed pool adds: a window's kh*kw elements forward,
    at most as many overlapping windows per input element backward."""
    return int(np.prod(pair(kwargs["kernel_size"])))


# ---------------------------------------------------------------- MaxPool2d, ceil_mode

# id -> (MaxPool2d keyword arguments, input shape (N, C, H, W)). Every case has
# ceil_mode=True; the comments say what the last windows do on each axis.
MAX_CEIL_CASES = {
    # H: the last window covers rows 6, 7 and one past the end; W: fits exactly
    "k3-s2-hangs": (dict(kernel_size=3, stride=2), (2, 2, 8, 7)),
    "k2-odd-sizes-hang": (dict(kernel_size=2), (2, 3, 5, 7)),
    # the first windows start in the padding, the last ones run past it
    "k3-s2-p1-starts-in-padding-and-hangs": (dict(kernel_size=3, stride=2, padding=1), (1, 2, 6, 5)),
    # ceil gives 3 windows, but the third would start in the padding: dropped (2 remain)
    "k2-s3-p1-last-window-dropped": (dict(kernel_size=2, stride=3, padding=1), (1, 2, 4, 4)),
    "k1-s2-dropped-on-w": (dict(kernel_size=1, stride=2), (1, 2, 5, 6)),
    # the input is smaller than the window: one clipped window (torch allows it)
    "k3-input-smaller-than-kernel": (dict(kernel_size=3), (2, 2, 2, 5)),
    "k2x3-s1x2-p1x0-rect": (dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0)), (1, 3, 5, 8)),
    "k2-s2-p1-d2-dilated-hangs": (dict(kernel_size=2, stride=2, padding=1, dilation=2), (2, 2, 7, 6)),
    "k3-s2-p1-d2-dilated": (dict(kernel_size=3, stride=2, padding=1, dilation=2), (1, 2, 8, 9)),
    "k2-s2-p1-batch1": (dict(kernel_size=2, stride=2, padding=1), (1, 1, 5, 5)),
    "k2-divisible-no-overhang": (dict(kernel_size=2), (2, 2, 4, 6)),
}
MAX_CEIL_CASES = {name: (dict(kwargs, ceil_mode=True), shape)
                  for name, (kwargs, shape) in MAX_CEIL_CASES.items()}


@pytest.mark.parametrize("kwargs, shape", params(MAX_CEIL_CASES))
def test_max_pool_ceil_mode_gradcheck(kwargs, shape):
    assert_gradcheck(cr.MaxPool2d(**kwargs), distinct(shape), 1e-6)


@each_dtype
@pytest.mark.parametrize("kwargs, shape", params(MAX_CEIL_CASES))
def test_max_pool_ceil_mode_torch_parity(kwargs, shape, dtype):
    assert_torch_parity(cr.MaxPool2d(**kwargs), nn.MaxPool2d(**kwargs), distinct(shape), dtype=dtype,
                        terms=window_terms(kwargs))


@pytest.mark.parametrize("kwargs, shape", params(MAX_CEIL_CASES))
def test_max_pool_ceil_mode_matches_loop_reference_with_ties(kwargs, shape):
    check_max_pool_matches_reference_with_ties(kwargs, shape)


@pytest.mark.parametrize("values", ["constant", "integers-0-3"])
@pytest.mark.parametrize("kwargs, shape", params(MAX_CEIL_CASES))
def test_max_pool_ceil_mode_ties_route_like_torch(kwargs, shape, values):
    check_max_pool_ties_route_like_torch(kwargs, shape, values)


def test_ceil_mode_output_sizes_follow_torch_on_a_grid():
    """Every (size, kernel, stride, padding, dilation) up to small bounds: the same output
    size as torch, or the same refusal when no window fits."""
    from chainrule.functional import pool_output_size

    for size in range(1, 9):
        for k in range(1, 5):
            for s in range(1, 4):
                for p in range(0, k // 2 + 1):
                    for d in (1, 2):
                        x = torch.zeros(1, 1, 1, size)
                        module = nn.MaxPool2d((1, k), (1, s), (0, p), (1, d), ceil_mode=True)
                        try:
                            expected = module(x).shape[-1]
                        except RuntimeError:
                            expected = None
                        got = pool_output_size(size, k, s, p, d, True)
                        assert got == ref.pool_out_size(size, k, s, p, d, True)
                        if expected is not None:
                            assert got == expected, (size, k, s, p, d)
                            continue
                        assert got < 1, (size, k, s, p, d)
                        with pytest.raises(ValueError, match="does not fit"):
                            cr.MaxPool2d((1, k), (1, s), (0, p), (1, d), ceil_mode=True).forward(
                                np.zeros((1, 1, 1, size)))


# ---------------------------------------------------------------- AvgPool2d, ceil_mode and divisor_override

AVG_WINDOWS = {
    "k3-s2-hangs": (dict(kernel_size=3, stride=2), (2, 2, 8, 7)),
    "k2-odd-sizes-hang": (dict(kernel_size=2), (2, 3, 5, 7)),
    # the last window: rows 5 (input), 6 (padding), 7 (overhang): torch divides by 2 rows
    "k3-s2-p1-starts-in-padding-and-hangs": (dict(kernel_size=3, stride=2, padding=1), (1, 2, 6, 5)),
    "k2-s3-p1-last-window-dropped": (dict(kernel_size=2, stride=3, padding=1), (1, 2, 4, 4)),
    "k3-input-smaller-than-kernel": (dict(kernel_size=3), (2, 2, 2, 5)),
    "k3x2-s2x1-p1x0-rect": (dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)), (1, 3, 6, 5)),
    "k4-s3-p2-batch1": (dict(kernel_size=4, stride=3, padding=2), (1, 1, 7, 8)),
}
AVG_CASES = {}
for _name, (_kwargs, _shape) in AVG_WINDOWS.items():
    AVG_CASES[f"{_name}-ceil-count-pad"] = (dict(_kwargs, ceil_mode=True), _shape)
    AVG_CASES[f"{_name}-ceil-exclude-pad"] = (dict(_kwargs, ceil_mode=True, count_include_pad=False),
                                              _shape)
    AVG_CASES[f"{_name}-ceil-divisor-5"] = (dict(_kwargs, ceil_mode=True, divisor_override=5), _shape)
AVG_CASES["k3-s2-ceil-divisor-1-exclude-pad"] = (dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                                      count_include_pad=False, divisor_override=1),
                                                 (2, 2, 6, 7))
AVG_CASES["k2-divisor-7-no-padding"] = (dict(kernel_size=2, divisor_override=7), (1, 2, 4, 6))
AVG_CASES["k3-s2-p1-divisor-2-floor"] = (dict(kernel_size=3, stride=2, padding=1, divisor_override=2),
                                         (2, 1, 7, 6))


@pytest.mark.parametrize("kwargs, shape", params(AVG_CASES))
def test_avg_pool_ceil_and_divisor_gradcheck(kwargs, shape):
    assert_gradcheck(cr.AvgPool2d(**kwargs), np.random.default_rng(3).standard_normal(shape), 1e-6)


@each_dtype
@pytest.mark.parametrize("kwargs, shape", params(AVG_CASES))
def test_avg_pool_ceil_and_divisor_torch_parity(kwargs, shape, dtype):
    x = np.random.default_rng(4).standard_normal(shape)
    assert_torch_parity(cr.AvgPool2d(**kwargs), nn.AvgPool2d(**kwargs), x, dtype=dtype,
                        terms=window_terms(kwargs))


@pytest.mark.parametrize("kwargs, shape", params(AVG_CASES))
def test_avg_pool_ceil_and_divisor_match_loop_reference(kwargs, shape):
    x = np.random.default_rng(5).standard_normal(shape)
    check_avg_pool_matches_loop_reference(cr.AvgPool2d(**kwargs), kwargs, x, seed=6)


def test_avg_pool_ceil_mode_divisor_counts_padding_but_not_the_overhang():
    """A hand-checked window: 1x6 input of ones, kernel 3, stride 2, padding 1, ceil_mode:
    windows start at -1, 1, 3, 5; the last covers column 5 (input), 6 (padding) and 7
    (past the padded input). torch divides it by 2 with count_include_pad (column 7 does
    not count) and by 1 without."""
    x = np.ones((1, 1, 1, 6))
    counted = cr.AvgPool2d((1, 3), (1, 2), (0, 1), ceil_mode=True).forward(x)
    real = cr.AvgPool2d((1, 3), (1, 2), (0, 1), ceil_mode=True, count_include_pad=False).forward(x)
    np.testing.assert_array_equal(counted[0, 0, 0], [2 / 3, 1, 1, 1 / 2])
    np.testing.assert_array_equal(real[0, 0, 0], [1, 1, 1, 1])
    theirs = nn.AvgPool2d((1, 3), (1, 2), (0, 1), ceil_mode=True)(torch.tensor(x)).numpy()
    np.testing.assert_array_equal(counted, theirs)


# ---------------------------------------------------------------- MaxPool1d, AvgPool1d

POOL1D_WINDOWS = {
    "k3": (dict(kernel_size=3), (2, 3, 10)),
    "k3-s2-p1": (dict(kernel_size=3, stride=2, padding=1), (2, 2, 9)),
    "k4-s1-p2": (dict(kernel_size=4, stride=1, padding=2), (1, 2, 7)),
    "k3-s2-ceil-hangs": (dict(kernel_size=3, stride=2, ceil_mode=True), (2, 2, 8)),
    "k2-s3-p1-ceil-last-dropped": (dict(kernel_size=2, stride=3, padding=1, ceil_mode=True), (1, 2, 7)),
    "k3-s2-p1-ceil": (dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), (2, 1, 10)),
    "kernel-equals-input": (dict(kernel_size=6), (2, 2, 6)),
    "k3-ceil-input-smaller-than-kernel": (dict(kernel_size=3, ceil_mode=True), (1, 2, 2)),
}
MAX1D_CASES = dict(POOL1D_WINDOWS)
MAX1D_CASES["k2-s1-d2"] = (dict(kernel_size=2, stride=1, dilation=2), (1, 2, 8))
MAX1D_CASES["k3-s2-p1-d2-ceil"] = (dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True),
                                   (2, 2, 10))
MAX1D_CASES["tuple-arguments"] = (dict(kernel_size=(3,), stride=(2,), padding=(1,), dilation=(1,)),
                                  (2, 2, 9))
AVG1D_CASES = dict(POOL1D_WINDOWS)
for _name, (_kwargs, _shape) in POOL1D_WINDOWS.items():
    AVG1D_CASES[f"{_name}-exclude-pad"] = (dict(_kwargs, count_include_pad=False), _shape)


def _as_2d(kwargs: dict) -> dict:
    """The 2-D pool with a one-row window that a 1-D pool equals."""
    single = {k: (v[0] if isinstance(v, tuple) else v) for k, v in kwargs.items()}
    out = dict(single)
    for key, fill in (("kernel_size", 1), ("stride", 1), ("padding", 0), ("dilation", 1)):
        if key in single:
            out[key] = (fill, single[key])
    if "stride" not in single:
        out["stride"] = (1, single["kernel_size"])
    return out


@pytest.mark.parametrize("kwargs, shape", params(MAX1D_CASES))
def test_max_pool1d_gradcheck(kwargs, shape):
    assert_gradcheck(cr.MaxPool1d(**kwargs), distinct(shape), 1e-6)


@each_dtype
@pytest.mark.parametrize("kwargs, shape", params(MAX1D_CASES))
def test_max_pool1d_torch_parity(kwargs, shape, dtype):
    assert_torch_parity(cr.MaxPool1d(**kwargs), nn.MaxPool1d(**kwargs), distinct(shape), dtype=dtype,
                        terms=window_terms(_as_2d(kwargs)))


@pytest.mark.parametrize("kwargs, shape", params(MAX1D_CASES))
def test_max_pool1d_matches_loop_reference_and_torch_with_ties(kwargs, shape):
    rng = np.random.default_rng(6)
    x = rng.integers(0, 3, shape).astype(np.float64)
    layer = cr.MaxPool1d(**kwargs)
    expected, argmax = max_pool_reference(_as_2d(kwargs), x[:, :, None, :])
    out = layer.forward(x)
    np.testing.assert_array_equal(out, expected[:, :, 0])
    grad = rng.integers(-4, 5, out.shape).astype(np.float64)
    dx = layer.backward(grad)
    np.testing.assert_array_equal(
        dx, ref.max_pool2d_backward(grad[:, :, None], argmax, x[:, :, None].shape)[:, :, 0])
    np.testing.assert_array_equal(dx, torch_pair(nn.MaxPool1d(**kwargs), x, grad)[1])


@pytest.mark.parametrize("kwargs, shape", params(AVG1D_CASES))
def test_avg_pool1d_gradcheck(kwargs, shape):
    assert_gradcheck(cr.AvgPool1d(**kwargs), np.random.default_rng(7).standard_normal(shape), 1e-6)


@each_dtype
@pytest.mark.parametrize("kwargs, shape", params(AVG1D_CASES))
def test_avg_pool1d_torch_parity(kwargs, shape, dtype):
    x = np.random.default_rng(8).standard_normal(shape)
    assert_torch_parity(cr.AvgPool1d(**kwargs), nn.AvgPool1d(**kwargs), x, dtype=dtype,
                        terms=window_terms(_as_2d(kwargs)))


@pytest.mark.parametrize("kwargs, shape", params(AVG1D_CASES))
def test_avg_pool1d_matches_loop_reference(kwargs, shape):
    x = np.random.default_rng(9).standard_normal(shape)
    check_avg_pool_matches_loop_reference(cr.AvgPool1d(**kwargs), _as_2d(kwargs), x, seed=10)


# ---------------------------------------------------------------- AdaptiveMaxPool2d

ADAPTIVE_MAX_CASES = {
    **ADAPTIVE_CASES,
    "none-keeps-rows": (dict(output_size=(None, 3)), (2, 2, 4, 7)),
    "none-keeps-columns": (dict(output_size=(3, None)), (1, 2, 7, 4)),
    "none-none-identity": (dict(output_size=(None, None)), (1, 2, 3, 4)),
}


def adaptive_terms(kwargs, shape) -> int:
    """Windows that can share an input element, so add at that element backward."""
    h, w = shape[-2:]
    oh, ow = pair(kwargs["output_size"])
    oh, ow = oh or h, ow or w
    return (math.ceil(oh / h) + 1) * (math.ceil(ow / w) + 1)


@pytest.mark.parametrize("kwargs, shape", params(ADAPTIVE_MAX_CASES))
def test_adaptive_max_pool_gradcheck(kwargs, shape):
    assert_gradcheck(cr.AdaptiveMaxPool2d(**kwargs), distinct(shape, seed=10), 1e-6)


@each_dtype
@pytest.mark.parametrize("kwargs, shape", params(ADAPTIVE_MAX_CASES))
def test_adaptive_max_pool_torch_parity(kwargs, shape, dtype):
    assert_torch_parity(cr.AdaptiveMaxPool2d(**kwargs), nn.AdaptiveMaxPool2d(**kwargs),
                        distinct(shape, seed=11), dtype=dtype, terms=adaptive_terms(kwargs, shape))


def _resolved(kwargs, shape):
    oh, ow = pair(kwargs["output_size"]) if kwargs["output_size"] is not None else (None, None)
    return (oh or shape[-2], ow or shape[-1])


@pytest.mark.parametrize("values", ["constant", "integers-0-3", "nans"])
@pytest.mark.parametrize("kwargs, shape", params(ADAPTIVE_MAX_CASES))
def test_adaptive_max_pool_matches_loop_reference_and_torch_exactly(kwargs, shape, values):
    """Ties go to the first maximum in row-major window order, NaNs to the window's last
    NaN, as torch's CPU kernel; integer gradients make every sum exact."""
    rng = np.random.default_rng(12)
    if values == "constant":
        x = np.full(shape, -1.5)
    else:
        x = rng.integers(0, 3, shape).astype(np.float64)
        if values == "nans":
            x[rng.random(shape) < 0.2] = np.nan
    layer = cr.AdaptiveMaxPool2d(**kwargs)
    out = layer.forward(x)
    expected, argmax = ref.adaptive_max_pool2d(x, _resolved(kwargs, shape))
    np.testing.assert_array_equal(out, expected)
    grad = rng.integers(-4, 5, out.shape).astype(np.float64)
    theirs, dx_torch = torch_pair(nn.AdaptiveMaxPool2d(**kwargs), x, grad)
    np.testing.assert_array_equal(out, theirs)
    dx = layer.backward(grad)
    np.testing.assert_array_equal(dx, ref.max_pool2d_backward(grad, argmax, shape))
    np.testing.assert_array_equal(dx, dx_torch)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adaptive_max_pool_non_finite_gradients_reach_only_the_winners(dtype):
    rng = np.random.default_rng(13)
    x = rng.integers(0, 3, (2, 3, 7, 5)).astype(dtype)
    layer = cr.AdaptiveMaxPool2d((3, 2))
    out = layer.forward(x)
    grad = rng.standard_normal(out.shape).astype(dtype)
    grad[0, 0, 0, :2] = [-0.0, np.inf]
    grad[1, 1, 2, 1] = np.nan
    dx = layer.backward(grad)
    assert dx.dtype == dtype
    xt = torch.tensor(x, requires_grad=True)
    nn.AdaptiveMaxPool2d((3, 2))(xt).backward(torch.tensor(grad))
    np.testing.assert_array_equal(dx, xt.grad.numpy())


# ---------------------------------------------------------------- AdaptiveAvgPool2d with None

@each_dtype
@pytest.mark.parametrize("output_size", [(None, 3), (2, None), (None, None)],
                         ids=["none-3", "2-none", "none-none"])
def test_adaptive_avg_pool_keeps_the_input_size_where_none(output_size, dtype):
    x = np.random.default_rng(14).standard_normal((2, 3, 5, 7))
    layer = cr.AdaptiveAvgPool2d(output_size)
    assert_torch_parity(layer, nn.AdaptiveAvgPool2d(output_size), x, dtype=dtype, terms=35)
    assert_gradcheck(layer, x, 1e-6)


# ---------------------------------------------------------------- every new layer

NEW_LAYERS = {
    "max2d-ceil": (cr.MaxPool2d, nn.MaxPool2d, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                   (3, 6, 7)),
    "avg2d-ceil-divisor": (cr.AvgPool2d, nn.AvgPool2d, dict(kernel_size=3, stride=2, ceil_mode=True,
                                                            divisor_override=4), (3, 6, 7)),
    "max1d": (cr.MaxPool1d, nn.MaxPool1d, dict(kernel_size=3, stride=2, padding=1), (3, 9)),
    "avg1d": (cr.AvgPool1d, nn.AvgPool1d, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                              count_include_pad=False), (3, 9)),
    "adaptive-max": (cr.AdaptiveMaxPool2d, nn.AdaptiveMaxPool2d, dict(output_size=(3, 2)), (3, 7, 5)),
}


@pytest.mark.parametrize("ours, theirs, kwargs, shape", NEW_LAYERS.values(), ids=NEW_LAYERS.keys())
def test_unbatched_input(ours, theirs, kwargs, shape):
    check_unbatched_input(ours, theirs, kwargs, distinct(shape, seed=15))


@pytest.mark.parametrize("ours, theirs, kwargs, shape", NEW_LAYERS.values(), ids=NEW_LAYERS.keys())
def test_eval_mode_gives_the_training_output_and_keeps_no_cache(ours, theirs, kwargs, shape):
    rng = np.random.default_rng(16)
    x = rng.integers(0, 3, (2, *shape)).astype(np.float32)
    x[0, 0, ..., 0] = np.nan
    layer = ours(**kwargs)
    trained = layer.forward(x)
    layer.backward(np.ones_like(trained))
    layer.eval()
    np.testing.assert_array_equal(layer.forward(x), trained)
    assert layer._cache is None
    assert trained.dtype == np.float32


@pytest.mark.parametrize("layer", [cr.MaxPool1d(2), cr.AvgPool1d(2)], ids=["max1d", "avg1d"])
def test_1d_integer_input_becomes_float32(layer):
    assert layer.forward(np.arange(16, dtype=np.uint8).reshape(2, 8)).dtype == np.float32


def test_reprs_read_like_torch():
    assert repr(cr.MaxPool2d(2, ceil_mode=True)) == \
        "MaxPool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0), ceil_mode=True)"
    assert repr(cr.AvgPool2d(3, 1, 1, True, False, 2)) == (
        "AvgPool2d(kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), ceil_mode=True, "
        "count_include_pad=False, divisor_override=2)")
    assert repr(cr.MaxPool1d((3,), dilation=2)) == "MaxPool1d(kernel_size=3, stride=3, padding=0, dilation=2)"
    assert repr(cr.AvgPool1d(3, 2, 1)) == "AvgPool1d(kernel_size=3, stride=2, padding=1)"
    assert repr(cr.AdaptiveMaxPool2d((None, 2))) == "AdaptiveMaxPool2d(output_size=(None, 2))"


def test_positional_arguments_follow_torch_order():
    """AvgPool2d(kernel_size, stride, padding, ceil_mode, count_include_pad,
    divisor_override) and MaxPool2d(kernel_size, stride, padding, dilation,
    return_indices, ceil_mode), as torch.nn."""
    avg = cr.AvgPool2d(3, 2, 1, True, False, 5)
    assert (avg.ceil_mode, avg.count_include_pad, avg.divisor_override) == (True, False, 5)
    assert cr.MaxPool2d(3, 2, 1, 2, False, True).ceil_mode
    assert cr.MaxPool1d(3, 2, 1, 2, False, True).ceil_mode
    avg1 = cr.AvgPool1d(3, 2, 1, True, False)
    assert (avg1.ceil_mode, avg1.count_include_pad) == (True, False)


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("make, error, match", [
    (lambda: cr.MaxPool2d(2, return_indices=True), ValueError, r"MaxPool2d.*return_indices=True"),
    (lambda: cr.MaxPool1d(2, return_indices=True), ValueError, r"MaxPool1d.*return_indices=True"),
    (lambda: cr.AdaptiveMaxPool2d(2, return_indices=True), ValueError,
     r"AdaptiveMaxPool2d.*return_indices=True"),
    (lambda: cr.AvgPool2d(2, divisor_override=0), ValueError, r"AvgPool2d.*divisor_override.*got 0"),
    (lambda: cr.AvgPool2d(2, divisor_override=-2), ValueError, r"divisor_override.*got -2"),
    (lambda: cr.AvgPool2d(2, divisor_override=1.5), TypeError, r"divisor_override.*got 1.5"),
    (lambda: cr.AvgPool2d(2, divisor_override=True), TypeError, r"divisor_override.*got True"),
    (lambda: cr.MaxPool1d((2, 2)), TypeError, r"MaxPool1d.*kernel_size must be an int"),
    (lambda: cr.AvgPool1d(0), ValueError, r"AvgPool1d.*kernel_size must be >= 1"),
    (lambda: cr.MaxPool1d(3, padding=2), ValueError, r"MaxPool1d.*at most half"),
    (lambda: cr.AvgPool1d(2, stride=0), ValueError, r"stride must be >= 1"),
    (lambda: cr.AdaptiveMaxPool2d(0), ValueError, r"output_size must be >= 1"),
    (lambda: cr.AdaptiveMaxPool2d((None, 0)), ValueError, r"output_size must be >= 1"),
    (lambda: cr.AdaptiveAvgPool2d((None, "a")), TypeError, r"output_size must be an int"),
    (lambda: cr.AdaptiveMaxPool2d((1, 2, 3)), TypeError, r"output_size must be an int"),
    (lambda: cr.AdaptiveAvgPool2d(None), TypeError, r"AdaptiveAvgPool2d.*output_size.*got None"),
], ids=["max2d-indices", "max1d-indices", "adaptive-indices", "divisor-0", "divisor-negative",
        "divisor-float", "divisor-bool", "1d-pair-kernel", "1d-kernel-0", "1d-padding",
        "1d-stride-0", "adaptive-0", "adaptive-none-0", "adaptive-str", "adaptive-triple", "adaptive-none"])
def test_bad_arguments_raise(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("layer, shape, match", [
    (cr.MaxPool1d(2), (1, 2, 3, 4), r"MaxPool1d.*\(N, C, L\) or \(C, L\).*\(1, 2, 3, 4\)"),
    (cr.AvgPool1d(2), (5,), r"AvgPool1d.*\(N, C, L\) or \(C, L\).*\(5,\)"),
    (cr.AdaptiveMaxPool2d(2), (4, 4), r"AdaptiveMaxPool2d.*\(N, C, H, W\) or \(C, H, W\).*\(4, 4\)"),
    (cr.MaxPool1d(4), (1, 2, 3), r"MaxPool1d.*does not fit the padded input 3.*\(1, 2, 3\)"),
    (cr.AvgPool2d(3, stride=1, ceil_mode=True), (1, 1, 2, 5),
     r"AvgPool2d.*does not fit the padded input \(2, 5\)"),
], ids=["max1d-4d", "avg1d-1d", "adaptive-2d", "max1d-too-short", "avg-ceil-too-small"])
def test_wrong_inputs_raise(layer, shape, match):
    with pytest.raises(ValueError, match=match):
        layer.forward(np.zeros(shape))


def test_backward_checks_the_gradient_shape():
    for layer, shape in ((cr.MaxPool1d(2), (1, 2, 6)), (cr.AvgPool1d(2), (1, 2, 6)),
                         (cr.AdaptiveMaxPool2d(2), (1, 2, 5, 5))):
        out = layer.forward(np.zeros(shape))
        with pytest.raises(ValueError, match="expected a gradient of shape"):
            layer.backward(np.zeros(out.shape + (1,)))


# ---------------------------------------------------------------- checkpoints

def test_old_descriptions_without_the_new_arguments_still_build():
    """Checkpoints written before ceil_mode/divisor_override were described: the
    constructor defaults fill them in."""
    old_max = {"type": "MaxPool2d", "args": {"kernel_size": [3, 3], "stride": [2, 2],
                                             "padding": [1, 1], "dilation": [1, 1]}}
    old_avg = {"type": "AvgPool2d", "args": {"kernel_size": [2, 2], "stride": [2, 2],
                                             "padding": [0, 0], "count_include_pad": False}}
    old_adaptive = {"type": "AdaptiveAvgPool2d", "args": {"output_size": [2, 3]}}
    max_pool, avg_pool, adaptive = build(old_max), build(old_avg), build(old_adaptive)
    assert not max_pool.ceil_mode
    assert (avg_pool.ceil_mode, avg_pool.count_include_pad, avg_pool.divisor_override) == (False, False, None)
    assert adaptive.output_size == (2, 3)
    assert describe(max_pool)["args"] == dict(old_max["args"], ceil_mode=False)
    assert describe(avg_pool)["args"] == dict(old_avg["args"], ceil_mode=False, divisor_override=None)


def _drop_new_pooling_args(entry):
    """A description as written before ceil_mode/divisor_override were described."""
    if isinstance(entry, dict):
        args = entry.get("args", {})
        if entry.get("type") in ("MaxPool2d", "AvgPool2d"):
            entry["args"] = {k: v for k, v in args.items() if k not in ("ceil_mode", "divisor_override")}
        for value in entry.values():
            _drop_new_pooling_args(value)
    elif isinstance(entry, list):
        for value in entry:
            _drop_new_pooling_args(value)


def test_old_checkpoint_file_loads(tmp_path):
    """A checkpoint file whose architecture lacks the new keys loads, with the defaults."""
    model = cr.Sequential(cr.MaxPool2d(3, 2, 1), cr.AvgPool2d(2, count_include_pad=False))
    path = cr.save(model, tmp_path / "m.safetensors")
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    architecture = json.loads(header["__metadata__"]["architecture"])
    _drop_new_pooling_args(architecture)
    assert "ceil_mode" not in json.dumps(architecture)
    header["__metadata__"]["architecture"] = json.dumps(architecture)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    old = tmp_path / "old.safetensors"
    old.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length:])
    loaded = cr.load(old)
    assert repr(loaded) == repr(model)
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 9)).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


@pytest.mark.parametrize("layer", [
    cr.MaxPool2d(3, 2, 1, 2, ceil_mode=True),
    cr.AvgPool2d(3, 2, 1, True, False, 7),
    cr.MaxPool1d(3, 2, 1, 2, ceil_mode=True),
    cr.AvgPool1d(4, 3, 2, True, False),
    cr.AdaptiveMaxPool2d((None, 3)),
    cr.AdaptiveMaxPool2d(2),
    cr.AdaptiveAvgPool2d((2, None)),
], ids=repr)
def test_description_round_trip(layer):
    desc = json.loads(json.dumps(describe(layer)))
    rebuilt = build(desc)
    assert type(rebuilt) is type(layer) and repr(rebuilt) == repr(layer)
    assert describe(rebuilt) == desc


@pytest.mark.parametrize("desc, match", [
    ({"type": "AvgPool2d", "args": {"kernel_size": 2, "divisor_override": "3"}}, "an int or null"),
    ({"type": "AvgPool2d", "args": {"kernel_size": 2, "divisor_override": 0}}, "divisor_override"),
    ({"type": "AdaptiveMaxPool2d", "args": {"output_size": [None, 2.5]}}, "list of two ints or nulls"),
    ({"type": "MaxPool1d", "args": {"kernel_size": [3, 3]}}, "must be an int"),
    ({"type": "MaxPool2d", "args": {"kernel_size": 2, "ceil_mode": "yes"}}, "true or false"),
])
def test_bad_descriptions_are_refused(desc, match):
    with pytest.raises(ValueError, match=match):
        build(desc)


# ---------------------------------------------------------------- torch conversion

def test_from_torch_converts_the_new_modules_and_options():
    from chainrule.interop import from_torch, to_torch

    module = nn.Sequential(
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        nn.AvgPool2d(2, divisor_override=3, ceil_mode=True),
        nn.AdaptiveMaxPool2d((None, 2)),
        nn.AdaptiveAvgPool2d((2, None)),
        nn.Flatten(2),
        nn.MaxPool1d((2,), stride=(1,), dilation=(1,), ceil_mode=True),
        nn.AvgPool1d(2, ceil_mode=True, count_include_pad=False),
    ).double()
    model = from_torch(module)
    assert [type(m).__name__ for m in model.children()] == [
        "MaxPool2d", "AvgPool2d", "AvgPool2d", "AdaptiveMaxPool2d", "AdaptiveAvgPool2d", "Flatten",
        "MaxPool1d", "AvgPool1d"]
    x = np.random.default_rng(17).standard_normal((2, 3, 13, 11))
    with torch.no_grad():
        expected = module(torch.tensor(x)).numpy()
    assert rel_error(model.forward(x), expected) <= 1e-12
    back = to_torch(model)
    with torch.no_grad():
        assert rel_error(back(torch.tensor(x)).numpy(), expected) <= 1e-12
    assert back[2].divisor_override == 3 and back[0].ceil_mode and back[7].ceil_mode


# ---------------------------------------------------------------- ONNX Runtime

ONNX_CASES = {
    # ceil_mode: windows that hang past the padded input, count_include_pad both ways
    **{f"avg-k{k}-s{s}-p{p}-{'count' if count else 'nocount'}":
       (lambda k=k, s=s, p=p, count=count: cr.AvgPool2d(k, s, p, ceil_mode=True,
                                                        count_include_pad=count), (2, 7, 8))
       for k, s, p in ((3, 2, 1), (2, 2, 1), (3, 3, 0), (4, 3, 2), (2, 3, 1)) for count in (True, False)},
    **{f"max-k{k}-s{s}-p{p}-d{d}": (lambda k=k, s=s, p=p, d=d: cr.MaxPool2d(k, s, p, d, ceil_mode=True),
                                     (2, 7, 8))
       for k, s, p, d in ((3, 2, 1, 1), (2, 2, 1, 1), (3, 2, 1, 2), (2, 3, 0, 3), (4, 3, 2, 1))},
    "avg-divisor-3-ceil-pad": (lambda: cr.AvgPool2d(3, 2, 1, True, False, 3), (2, 7, 8)),
    "avg-divisor-5-rect": (lambda: cr.AvgPool2d((2, 3), (1, 2), (1, 0), divisor_override=5), (2, 7, 8)),
    "max1d-ceil": (lambda: cr.MaxPool1d(3, 2, 1, 2, ceil_mode=True), (3, 11)),
    "avg1d-ceil-count": (lambda: cr.AvgPool1d(4, 3, 2, ceil_mode=True), (3, 11)),
    "avg1d-ceil-nocount": (lambda: cr.AvgPool1d(3, 2, 1, ceil_mode=True, count_include_pad=False), (3, 11)),
    "adaptive-max-uneven": (lambda: cr.AdaptiveMaxPool2d((3, 5)), (2, 7, 8)),
    "adaptive-max-upsampling": (lambda: cr.AdaptiveMaxPool2d((9, 4)), (2, 7, 3)),
    "adaptive-max-global": (lambda: cr.AdaptiveMaxPool2d(1), (2, 7, 8)),
    "adaptive-avg-none": (lambda: cr.AdaptiveAvgPool2d((None, 3)), (2, 7, 8)),
}


@pytest.mark.parametrize("build_layer, shape", ONNX_CASES.values(), ids=ONNX_CASES.keys())
def test_onnx_runtime_gives_torch_numbers(build_layer, shape, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from chainrule.interop import to_torch

    layer = build_layer()
    path = tmp_path / "m.onnx"
    cr.export_onnx(cr.Sequential(layer), path, shape)
    x = np.random.default_rng(18).standard_normal((3, *shape)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = session.run(["output"], {"input": x})[0]
    with torch.no_grad():
        expected = to_torch(layer)(torch.tensor(x)).numpy()
    assert theirs.shape == expected.shape
    terms = int(np.prod(shape[1:]))                # no sum adds more terms than that
    assert rel_error(theirs, expected) <= float32_tolerance(terms)
    assert rel_error(theirs, layer.forward(x)) <= float32_tolerance(terms)


# ---------------------------------------------------------------- explain

@pytest.mark.parametrize("layer, divisor", [
    (cr.AvgPool2d(2), "/ 4,"),
    (cr.AvgPool2d(3, 2, 1, count_include_pad=False), "/ (the number of input elements in its window)"),
    (cr.AvgPool2d(3, 2, ceil_mode=True, count_include_pad=False), "/ (the number of input elements"),
    (cr.AvgPool2d(3, 2, ceil_mode=True), "/ 9 (a ceil_mode window"),
    (cr.AvgPool2d(3, divisor_override=5), "/ 5,"),
    (cr.AvgPool1d(3), "/ 3,"),
], ids=["plain", "exclude-pad", "ceil-exclude-pad", "ceil", "divisor", "1d"])
def test_explain_names_the_divisor(layer, divisor):
    formula = derivative_of(layer).formula
    assert formula.startswith(type(layer).__name__ + ": dL/dx = dL/dy ")
    assert divisor in formula, formula
