"""Property-based fuzzing of the pooling catalog against torch.nn, in float64: MaxPool2d
and AvgPool2d with ceil_mode, divisor_override and count_include_pad, MaxPool1d,
AvgPool1d and AdaptiveMaxPool2d (output sizes with None included).

Hypothesis draws a configuration and an input that fits it, from the smallest legal
size upwards, so ceil_mode's corners come up often: a last window that hangs past the
padded input (its max and its divisor are those of what it covers), one that torch
drops because it would start in the padding, inputs smaller than the window.

Max pools are checked twice, as in test_fuzz_layers.py: on inputs without ties at a
relative error of 1e-9, and on integer inputs full of ties with integer upstream
gradients, where every sum is exact and the input gradient must equal torch's bit for
bit (the whole gradient goes to the first maximum in row-major window order).

Each property runs as a quick test (25 examples) and as a ``fuzz`` twin
(``pytest -m fuzz``); see ``conftest.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, event
from hypothesis import strategies as st

import chainrule as cr
from tests import reference as ref
from tests.fuzz.twins import quick_and_fuzz
from tests.helpers import assert_torch_parity, rel_error

torch = pytest.importorskip("torch")

TOL = 1e-9

seeds = st.integers(0, 2**32 - 1)


def _note_ceil_corners(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> None:
    """Record (for --hypothesis-show-statistics) which ceil_mode corner an axis hit."""
    out = ref.pool_out_size(size, k, s, p, d, ceil_mode)
    if not ceil_mode:
        return
    if (out - 1) * s + d * (k - 1) + 1 > size + 2 * p:      # the window ceil_mode adds
        event("a last window hangs past the padded input")
    span = size + 2 * p - d * (k - 1) - 1
    if -(-span // s) + 1 != out:
        event("ceil_mode dropped a window that would start in the padding")
    if d * (k - 1) + 1 > size + 2 * p:
        event("the window is larger than the padded input")


@st.composite
def axis(draw, dilated: bool):
    """(size, kernel, stride, padding, dilation) of one axis; the size leaves room for at
    least one window (checked by the caller with torch's rule)."""
    k = draw(st.integers(1, 4))
    s = draw(st.integers(1, 3))
    p = draw(st.integers(0, k // 2))
    d = draw(st.integers(1, 3)) if dilated else 1
    size = max(1, d * (k - 1) + 1 - 2 * p - (s - 1)) + draw(st.integers(0, 7))
    return size, k, s, p, d


@st.composite
def window_cases(draw, dims: int, max_pool: bool):
    """(torch keyword arguments, input shape) of a windowed pool with ``dims`` spatial
    axes; AvgPool2d draws count_include_pad and divisor_override, AvgPool1d the former."""
    axes = [draw(axis(dilated=max_pool)) for _ in range(dims)]
    ceil_mode = draw(st.booleans())
    assume(all(ref.pool_out_size(*a, ceil_mode) >= 1 for a in axes))
    for a in axes:
        _note_ceil_corners(*a, ceil_mode)
    sizes, kernel, stride, padding, dilation = (tuple(v) for v in zip(*axes))
    single = (lambda v: v[0]) if dims == 1 else (lambda v: v)
    kwargs = dict(kernel_size=single(kernel), padding=single(padding), ceil_mode=ceil_mode)
    kwargs["stride"] = None if draw(st.booleans()) and stride == kernel else single(stride)
    if max_pool:
        kwargs["dilation"] = single(dilation)
    else:
        kwargs["count_include_pad"] = draw(st.booleans())
        if dims == 2 and draw(st.integers(0, 2)) == 0:
            kwargs["divisor_override"] = draw(st.integers(1, 10))
            event("divisor_override")
    batched = draw(st.booleans())
    shape = ((draw(st.integers(1, 3)),) if batched else ()) + (draw(st.integers(1, 3)), *sizes)
    return kwargs, shape, draw(seeds)


def _distinct(shape, rng: np.random.Generator) -> np.ndarray:
    """Values at least 0.5 apart: no ties, so every window has a unique maximum."""
    size = int(np.prod(shape))
    return (rng.permutation(size) + rng.uniform(-0.25, 0.25, size)).reshape(shape)


def _classes(dims: int, max_pool: bool):
    if max_pool:
        return (cr.MaxPool1d, torch.nn.MaxPool1d) if dims == 1 else (cr.MaxPool2d, torch.nn.MaxPool2d)
    return (cr.AvgPool1d, torch.nn.AvgPool1d) if dims == 1 else (cr.AvgPool2d, torch.nn.AvgPool2d)


def _max_pool_pair(dims: int, kwargs, x, upstream):
    """(our output, our input gradient, torch's output, torch's input gradient).

    With dilation a window can lie entirely in the padding (or past it): its output is
    -inf and depends on no input, so its gradient must go nowhere. torch writes such a
    window's gradient into some input element, so torch is given a zero upstream
    gradient there; ours gets the full one and must still agree."""
    ours_cls, theirs_cls = _classes(dims, True)
    ours = ours_cls(**kwargs)
    y = ours.forward(x)
    dx = ours.backward(upstream)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs_cls(**kwargs)(xt)
    padding_only = np.isneginf(yt.detach().numpy())          # inputs are finite
    if padding_only.any():
        event("a window covers no input element")
    yt.backward(torch.tensor(np.where(padding_only, 0.0, upstream)))
    return y, dx, yt.detach().numpy(), xt.grad.numpy(), padding_only


def check_max_pool_no_ties(dims: int, case) -> None:
    kwargs, shape, seed = case
    rng = np.random.default_rng(seed)
    x = _distinct(shape, rng)
    out_shape = tuple(_classes(dims, True)[1](**kwargs)(torch.tensor(x)).shape)
    y, dx, yt, dxt, _ = _max_pool_pair(dims, kwargs, x, rng.standard_normal(out_shape))
    np.testing.assert_array_equal(y, yt)                      # a max only selects
    err = rel_error(dx, dxt)
    assert err <= TOL, f"MaxPool{dims}d({kwargs}) input gradient differs from torch: rel {err:.2e}"


def check_max_pool_ties(dims: int, case) -> None:
    kwargs, shape, seed = case
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, shape).astype(np.float64)        # few values: ties everywhere
    if rng.random() < 0.25:
        x = np.full(shape, float(rng.integers(-2, 3)))
        event("constant input")
    out_shape = tuple(_classes(dims, True)[1](**kwargs)(torch.tensor(x)).shape)
    upstream = rng.integers(-4, 5, out_shape).astype(np.float64)    # integer sums are exact
    y, dx, yt, dxt, padding_only = _max_pool_pair(dims, kwargs, x, upstream)
    np.testing.assert_array_equal(y, yt)
    np.testing.assert_array_equal(dx, dxt, err_msg=f"MaxPool{dims}d({kwargs}) routes tied maxima "
                                                   "differently from torch")
    ours32 = _classes(dims, True)[0](**kwargs)                 # float32 kernels: the same routes
    y32 = ours32.forward(x.astype(np.float32))
    dx32 = ours32.backward(np.where(padding_only, 0.0, upstream).astype(np.float32))
    np.testing.assert_array_equal(y32, yt)
    np.testing.assert_array_equal(dx32, dxt)


def check_avg_pool(dims: int, case) -> None:
    kwargs, shape, seed = case
    rng = np.random.default_rng(seed)
    ours, theirs = _classes(dims, False)
    assert_torch_parity(ours(**kwargs), theirs(**kwargs), rng.standard_normal(shape),
                        dtype=np.float64, seed=int(rng.integers(2**31)))


@quick_and_fuzz(window_cases(2, max_pool=True))
def test_max_pool2d_ceil_mode_matches_torch_without_ties(case):
    check_max_pool_no_ties(2, case)


@quick_and_fuzz(window_cases(2, max_pool=True))
def test_max_pool2d_ceil_mode_ties_route_exactly_like_torch(case):
    check_max_pool_ties(2, case)


@quick_and_fuzz(window_cases(2, max_pool=False))
def test_avg_pool2d_ceil_mode_and_divisor_match_torch(case):
    check_avg_pool(2, case)


@quick_and_fuzz(window_cases(1, max_pool=True))
def test_max_pool1d_matches_torch_without_ties(case):
    check_max_pool_no_ties(1, case)


@quick_and_fuzz(window_cases(1, max_pool=True))
def test_max_pool1d_ties_route_exactly_like_torch(case):
    check_max_pool_ties(1, case)


@quick_and_fuzz(window_cases(1, max_pool=False))
def test_avg_pool1d_matches_torch(case):
    check_avg_pool(1, case)


# ---------------------------------------------------------------------------- AdaptiveMaxPool2d
@st.composite
def adaptive_cases(draw):
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    # Mostly fewer outputs than inputs (uneven, overlapping windows), sometimes more.
    sizes = [draw(st.one_of(st.none(), st.integers(1, size), st.integers(1, 10))) for size in (h, w)]
    output_size = sizes[0] if sizes[0] == sizes[1] and sizes[0] is not None else tuple(sizes)
    for size, out in ((h, sizes[0]), (w, sizes[1])):
        if out is None:
            event("None keeps the input size")
        elif out > size:
            event("more outputs than inputs (windows repeat elements)")
        elif size % out:
            event("uneven windows")
    batched = draw(st.booleans())
    shape = ((draw(st.integers(1, 3)),) if batched else ()) + (draw(st.integers(1, 3)), h, w)
    return output_size, shape, draw(seeds)


def check_adaptive_max_no_ties(case) -> None:
    output_size, shape, seed = case
    rng = np.random.default_rng(seed)
    assert_torch_parity(cr.AdaptiveMaxPool2d(output_size), torch.nn.AdaptiveMaxPool2d(output_size),
                        _distinct(shape, rng), dtype=np.float64, seed=int(rng.integers(2**31)))


def check_adaptive_max_ties(case) -> None:
    output_size, shape, seed = case
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, shape).astype(np.float64)
    if rng.random() < 0.25:
        x = np.full(shape, float(rng.integers(-2, 3)))
        event("constant input")
    elif rng.random() < 0.25:
        x[rng.random(shape) < 0.2] = np.nan
        event("NaNs")
    for dtype in (np.float64, np.float32):
        ours = cr.AdaptiveMaxPool2d(output_size)
        y = ours.forward(x.astype(dtype))
        upstream = rng.integers(-4, 5, y.shape).astype(dtype)
        dx = ours.backward(upstream)
        xt = torch.tensor(x.astype(dtype), requires_grad=True)
        yt = torch.nn.AdaptiveMaxPool2d(output_size)(xt)
        yt.backward(torch.tensor(upstream))
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_array_equal(dx, xt.grad.numpy(), err_msg=f"AdaptiveMaxPool2d({output_size}) "
                                      f"routes tied maxima differently from torch ({np.dtype(dtype)})")


@quick_and_fuzz(adaptive_cases())
def test_adaptive_max_pool_matches_torch_without_ties(case):
    check_adaptive_max_no_ties(case)


@quick_and_fuzz(adaptive_cases())
def test_adaptive_max_pool_ties_route_exactly_like_torch(case):
    check_adaptive_max_ties(case)
