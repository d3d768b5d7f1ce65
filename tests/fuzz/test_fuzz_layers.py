"""Property-based fuzzing of the layers against torch.nn, in float64.

Hypothesis draws a layer configuration and an input shape that fits it; each property
then checks, at a relative error of 1e-9, the forward output, the input gradient and
every parameter gradient against PyTorch for a random upstream gradient. The shapes are
drawn from the smallest legal size upwards, so the corners come up often: a (dilated)
kernel exactly as large as the padded input, sizes where ``(H + 2p - k)`` is not a
multiple of the stride, batch 1, 1x1 inputs and 1x1 outputs. Every drawn convolution
also checks that col2im is the exact adjoint of im2col for its configuration.

Max pooling is checked twice: on inputs without ties (the gradient is then unique, so a
1e-9 comparison is fair), and on integer-valued inputs full of ties with an
integer-valued upstream gradient, where every sum is exact and the gradient must equal
torch's bit for bit (the whole gradient goes to the first maximum in row-major window
order).

Each property runs as a quick test (25 examples) and as a ``fuzz`` twin (thousands,
``pytest -m fuzz``); see ``conftest.py``. ``--hypothesis-show-statistics`` lists how
often each corner case came up.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import chainrule as cr
from chainrule.functional import conv as fconv
from chainrule import functional as F
from tests.helpers import assert_torch_parity, rel_error

torch = pytest.importorskip("torch")

# torch's note that 'same' with an even kernel pads a copy of the input: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

QUICK = settings.get_profile("chainrule-quick")
FUZZ = settings.get_profile("chainrule-fuzz")
TOL = 1e-9

seeds = st.integers(0, 2**32 - 1)
# The extra length above the smallest legal input size (0: kernel == padded input).
extras = st.integers(0, 8)


def _randomize_torch_parameters(module, rng: np.random.Generator) -> None:
    """Draw torch's parameters from our Generator (not torch's global one), so that an
    example is reproduced by its seed alone; assert_torch_parity copies them over."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape))))


def _note_window_corners(size: int, effective: int, pad_total: int, stride: int, out: int) -> None:
    """Record (for --hypothesis-show-statistics) which corner case a dimension hit."""
    if size + pad_total == effective:
        event("kernel equals the padded input")
    if (size + pad_total - effective) % stride:
        event("non-divisible stride (a remainder is dropped)")
    if size == 1:
        event("1-pixel input dimension")
    if out == 1:
        event("1-pixel output dimension")


def _size_for(draw, effective: int, pad_total: int) -> int:
    """An input length >= 1 that leaves room for at least one window."""
    return max(1, effective - pad_total) + draw(extras)


# ---------------------------------------------------------------------------- Conv2d
@st.composite
def conv_cases(draw):
    kind = draw(st.sampled_from(["plain", "grouped", "depthwise"]))
    if kind == "plain":
        groups, c_in, c_out = 1, draw(st.integers(1, 4)), draw(st.integers(1, 4))
    elif kind == "grouped":
        groups = draw(st.integers(2, 3))
        c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    else:
        c_in = draw(st.integers(1, 4))
        groups, c_out = c_in, c_in * draw(st.integers(1, 2))   # channel multiplier 1 or 2
    event(f"conv kind: {kind}")
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding_kind = draw(st.sampled_from(["pair", "valid", "same"]))
    # 'same' is defined for stride 1 only (torch refuses the others, and so do we).
    stride = (1, 1) if padding_kind == "same" else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if padding_kind == "pair":
        padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
        pad4 = (padding[0], padding[0], padding[1], padding[1])
    elif padding_kind == "valid":
        padding, pad4 = "valid", (0, 0, 0, 0)
    else:
        # torch's 'same': total d*(k-1), the odd one out at the bottom/right.
        padding = "same"
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        pad4 = (totals[0] // 2, totals[0] - totals[0] // 2, totals[1] // 2, totals[1] - totals[1] // 2)
    event(f"conv padding: {padding_kind}")
    effective = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    h = _size_for(draw, effective[0], pad4[0] + pad4[1])
    w = _size_for(draw, effective[1], pad4[2] + pad4[3])
    n = draw(st.integers(1, 3))
    if n == 1:
        event("batch 1")
    kwargs = dict(in_channels=c_in, out_channels=c_out, kernel_size=kernel, stride=stride,
                  padding=padding, dilation=dilation, groups=groups, bias=draw(st.booleans()))
    return kwargs, pad4, (n, c_in, h, w), draw(seeds)


def _inner(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """<a, b> and sum|a*b|, the scale that bounds its rounding error."""
    return float(np.sum(a * b)), float(np.sum(np.abs(a * b)))


def _assert_adjoint(lhs: tuple[float, float], rhs: tuple[float, float], what: str) -> None:
    scale = max(lhs[1], rhs[1], 1e-300)
    assert abs(lhs[0] - rhs[0]) <= 1e-12 * scale, (
        f"{what}: <A x, y> = {lhs[0]!r} but <x, A^T y> = {rhs[0]!r} "
        f"(relative {abs(lhs[0] - rhs[0]) / scale:.2e})")


def check_conv2d(case) -> None:
    kwargs, pad4, shape, seed = case
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    kernel, stride, dilation = kwargs["kernel_size"], kwargs["stride"], kwargs["dilation"]
    out_hw = tuple(F.conv_output_size(size, k, s, before, after, d) for size, k, s, before, after, d in
                   ((h, kernel[0], stride[0], pad4[0], pad4[1], dilation[0]),
                    (w, kernel[1], stride[1], pad4[2], pad4[3], dilation[1])))
    for size, k, d, s, pads, out in ((h, kernel[0], dilation[0], stride[0], pad4[:2], out_hw[0]),
                                     (w, kernel[1], dilation[1], stride[1], pad4[2:], out_hw[1])):
        _note_window_corners(size, d * (k - 1) + 1, sum(pads), s, out)

    theirs = torch.nn.Conv2d(**kwargs, dtype=torch.float64)
    _randomize_torch_parameters(theirs, rng)
    ours = cr.Conv2d(**kwargs, dtype=np.float64)
    x = rng.standard_normal(shape)
    assert ours.output_shape(shape) == (n, kwargs["out_channels"], *out_hw)
    assert_torch_parity(ours, theirs, x, dtype=np.float64, seed=int(rng.integers(2**31)))

    # col2im is the adjoint of im2col, on the padded channel-major array and through
    # pad/unpad (the whole linear map that Conv2d's backward transposes).
    xp = F.pad_channel_major(x, pad4)                                  # (C, N, Hp, Wp)
    cols = F.im2col(xp, kernel, stride, dilation, out_hw)              # (C, kh, kw, N, oH, oW)
    assert cols.shape == (c, *kernel, n, *out_hw)
    y = rng.standard_normal(cols.shape)
    back = F.col2im(y, xp.shape[2:], stride, dilation)                 # (C, N, Hp, Wp)
    _assert_adjoint(_inner(cols, y), _inner(xp, back), "im2col/col2im")
    _assert_adjoint(_inner(cols, y), _inner(x, F.unpad_to_nchw(back, pad4, (h, w))),
                    "im2col(pad(.))/unpad(col2im(.))")

    # The row-unfolding forward (chosen by shape for wide layers with few output
    # channels, which these small cases rarely are) against im2col's, on every case it
    # can run on: stride 1 and a kernel wider than one column.
    if tuple(stride) == (1, 1) and kernel[1] > 1:
        weight, bias = ours.weight.data, None if ours.bias is None else ours.bias.data
        by_rows = fconv._forward_rows(xp, weight, bias, dilation, out_hw, None)
        by_columns = fconv.conv2d_forward(xp, weight, bias, stride, dilation, out_hw)
        scale = float(np.abs(by_columns).max(initial=0.0)) + 1e-300
        assert np.abs(by_rows - by_columns).max(initial=0.0) <= 1e-12 * scale, (
            f"Conv2d({kwargs}): row-unfolding forward differs from im2col's")

    # The stride-1 input gradient on the Wp-wide grid against col2im's, on every case
    # (assert_torch_parity above reaches it only for layers with few input channels).
    if tuple(stride) == (1, 1):
        groups = kwargs["groups"]
        g = rng.standard_normal((kwargs["out_channels"], n, *out_hw))
        flat = fconv._input_gradient_flat(ours.weight.data, g, groups, xp.shape[2:], dilation, None)
        plain = fconv._input_gradient_col2im(ours.weight.data, g, groups, xp.shape[2:], (1, 1),
                                             dilation, None)
        scale = float(np.abs(plain).max(initial=0.0)) + 1e-300
        assert np.abs(flat - plain).max(initial=0.0) <= 1e-12 * scale, (
            f"Conv2d({kwargs}): the flat stride-1 input gradient differs from col2im's")


@QUICK
@given(conv_cases())
def test_conv2d_matches_torch(case):
    check_conv2d(case)


@pytest.mark.fuzz
@FUZZ
@given(conv_cases())
def test_conv2d_matches_torch_fuzz(case):
    check_conv2d(case)


# ---------------------------------------------------------------------------- pooling
@st.composite
def pool_cases(draw, max_pool: bool):
    # One case in four is the common 2x2 window with stride 2, which has kernels of its own.
    common = draw(st.integers(0, 3)) == 0
    if common:
        event("2x2 windows, stride 2")
    kernel = (2, 2) if common else (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = None if common else draw(st.one_of(st.none(), st.tuples(st.integers(1, 3),
                                                                     st.integers(1, 3))))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    kwargs = dict(kernel_size=kernel, stride=stride, padding=padding)
    if max_pool:
        dilation = (1, 1) if common else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        kwargs["dilation"] = dilation
    else:
        dilation = (1, 1)
        kwargs["count_include_pad"] = draw(st.booleans())
    s = stride or kernel
    if s[0] < kernel[0] or s[1] < kernel[1]:
        event("overlapping windows")
    if padding != (0, 0):
        event("padding")
    effective = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    h = _size_for(draw, effective[0], 2 * padding[0])
    w = _size_for(draw, effective[1], 2 * padding[1])
    for size, e, p, st_, d, k in ((h, effective[0], padding[0], s[0], dilation[0], kernel[0]),
                                  (w, effective[1], padding[1], s[1], dilation[1], kernel[1])):
        _note_window_corners(size, e, 2 * p, st_, F.conv_output_size(size, k, st_, p, p, d))
    batched = draw(st.booleans())
    shape = ((draw(st.integers(1, 3)),) if batched else ()) + (draw(st.integers(1, 3)), h, w)
    if batched and shape[0] == 1:
        event("batch 1")
    return kwargs, shape, draw(seeds)


def _distinct(shape, rng: np.random.Generator) -> np.ndarray:
    """Values at least 0.5 apart: no ties, so every window has a unique maximum."""
    size = int(np.prod(shape))
    return (rng.permutation(size) + rng.uniform(-0.25, 0.25, size)).reshape(shape)


def _max_pool_pair(kwargs, x, upstream):
    """(our output, our input gradient, torch's output, torch's input gradient).

    With dilation and padding a window can lie entirely in the padding: its output is
    -inf and depends on no input, so its gradient must go nowhere. torch 2.13 gives such
    a window an out-of-range index and writes its gradient into a neighbouring element,
    so torch's backward is given a zero upstream gradient there; ours gets the full one
    and must still agree (nothing leaks from a window of padding).
    """
    ours = cr.MaxPool2d(**kwargs)
    y = ours.forward(x)
    dx = ours.backward(upstream)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.MaxPool2d(**kwargs)(xt)
    padding_only = np.isneginf(yt.detach().numpy())          # inputs are finite
    if padding_only.any():
        event("a window lies entirely in the padding")
    yt.backward(torch.tensor(np.where(padding_only, 0.0, upstream)))
    return y, dx, yt.detach().numpy(), xt.grad.numpy()


def check_max_pool_no_ties(case) -> None:
    kwargs, shape, seed = case
    rng = np.random.default_rng(seed)
    x = _distinct(shape, rng)
    out_shape = tuple(torch.nn.MaxPool2d(**kwargs)(torch.tensor(x)).shape)
    upstream = rng.standard_normal(out_shape)
    y, dx, yt, dxt = _max_pool_pair(kwargs, x, upstream)
    # A max only selects: the forward is exact (a window of padding only gives -inf in both).
    np.testing.assert_array_equal(y, yt)
    err = rel_error(dx, dxt)
    assert err <= TOL, f"MaxPool2d({kwargs}) input gradient differs from torch: rel {err:.2e}"


def check_max_pool_ties(case) -> None:
    kwargs, shape, seed = case
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, shape).astype(np.float64)      # few values: ties everywhere
    if rng.random() < 0.25:
        x = np.full(shape, float(rng.integers(-2, 3)))      # a constant input: all tied
        event("constant input")
    out_shape = tuple(torch.nn.MaxPool2d(**kwargs)(torch.tensor(x)).shape)
    upstream = rng.integers(-4, 5, out_shape).astype(np.float64)  # integer sums are exact
    y, dx, yt, dxt = _max_pool_pair(kwargs, x, upstream)
    np.testing.assert_array_equal(y, yt)
    np.testing.assert_array_equal(dx, dxt, err_msg=f"MaxPool2d({kwargs}) routes tied maxima "
                                                   "differently from torch")
    # float32 takes other kernels for 2x2 windows (the gradient's bits placed in 64-bit
    # words); small integers are exact in float32, so the results must be the same.
    ours32 = cr.MaxPool2d(**kwargs)
    y32 = ours32.forward(x.astype(np.float32))
    dx32 = ours32.backward(np.where(np.isneginf(yt), 0.0, upstream).astype(np.float32))
    np.testing.assert_array_equal(y32, yt)
    np.testing.assert_array_equal(dx32, dxt, err_msg=f"MaxPool2d({kwargs}) float32 routes tied "
                                                     "maxima differently from torch")


def check_avg_pool(case) -> None:
    kwargs, shape, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    theirs = torch.nn.AvgPool2d(**kwargs)
    assert_torch_parity(cr.AvgPool2d(**kwargs), theirs, x, dtype=np.float64,
                        seed=int(rng.integers(2**31)))


@QUICK
@given(pool_cases(max_pool=True))
def test_max_pool_matches_torch_without_ties(case):
    check_max_pool_no_ties(case)


@pytest.mark.fuzz
@FUZZ
@given(pool_cases(max_pool=True))
def test_max_pool_matches_torch_without_ties_fuzz(case):
    check_max_pool_no_ties(case)


@QUICK
@given(pool_cases(max_pool=True))
def test_max_pool_ties_route_exactly_like_torch(case):
    check_max_pool_ties(case)


@pytest.mark.fuzz
@FUZZ
@given(pool_cases(max_pool=True))
def test_max_pool_ties_route_exactly_like_torch_fuzz(case):
    check_max_pool_ties(case)


@QUICK
@given(pool_cases(max_pool=False))
def test_avg_pool_matches_torch(case):
    check_avg_pool(case)


@pytest.mark.fuzz
@FUZZ
@given(pool_cases(max_pool=False))
def test_avg_pool_matches_torch_fuzz(case):
    check_avg_pool(case)


# ---------------------------------------------------------------------------- BatchNorm
@st.composite
def batch_norm_cases(draw):
    layout = draw(st.sampled_from(["NC", "NCL", "NCHW"]))
    c = draw(st.integers(1, 4))
    n = draw(st.integers(1, 4))
    rest = {"NC": 0, "NCL": 1, "NCHW": 2}[layout]
    shape = (n, c) + tuple(draw(st.integers(1, 4)) for _ in range(rest))
    training = draw(st.booleans())
    track_running_stats = draw(st.booleans())
    per_channel = int(np.prod(shape)) // c
    if (training or not track_running_stats) and per_channel == 1:
        # Batch statistics of one value per channel are refused (by torch too): use two.
        shape = (2,) + shape[1:]
    if shape[0] == 1:
        event("batch 1")
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.1]))
    scale = draw(st.floats(0.01, 100.0))
    if int(np.prod(shape)) // c == 2:
        # Two values per channel normalize to about -1 and +1 whatever they are, so the
        # exact input gradient is only the eps term, O(eps / var), and every
        # implementation computes it as a difference of O(1) terms: its relative error is
        # about 1e-16 * var / eps. Keep var / eps below ~1e3 so that 1e-9 stays fair.
        event("two values per channel")
        scale = min(scale, 30 * eps ** 0.5)
    kwargs = dict(num_features=c, eps=eps, momentum=draw(st.sampled_from([0.1, 0.5, 0.0, 1.0, None])),
                  affine=draw(st.booleans()), track_running_stats=track_running_stats)
    event(f"BatchNorm {layout}, {'training' if training else 'eval'}")
    return layout, kwargs, shape, training, scale, draw(seeds)


def check_batch_norm(case) -> None:
    layout, kwargs, shape, training, scale, seed = case
    rng = np.random.default_rng(seed)
    if layout == "NCHW":
        ours, theirs = cr.BatchNorm2d(**kwargs, dtype=np.float64), torch.nn.BatchNorm2d(**kwargs)
    else:
        ours, theirs = cr.BatchNorm1d(**kwargs, dtype=np.float64), torch.nn.BatchNorm1d(**kwargs)
    theirs = theirs.double()
    _randomize_torch_parameters(theirs, rng)
    if kwargs["track_running_stats"]:
        c = kwargs["num_features"]
        theirs.running_mean.copy_(torch.from_numpy(rng.standard_normal(c)))
        theirs.running_var.copy_(torch.from_numpy(rng.uniform(0.1, 3.0, c)))
        theirs.num_batches_tracked.fill_(int(rng.integers(0, 5)))
    ours.train(training).gradients_in_eval(not training)
    theirs.train(training)
    x = rng.standard_normal(shape) * scale + rng.uniform(-3, 3)
    assert_torch_parity(ours, theirs, x, dtype=np.float64, seed=int(rng.integers(2**31)))
    if kwargs["track_running_stats"]:
        for name, value in theirs.named_buffers():
            mine = getattr(ours, name)
            if name == "num_batches_tracked":
                assert int(mine) == int(value), f"{name}: {mine} vs torch {value}"
            else:
                err = rel_error(mine, value.numpy())
                assert err <= TOL, f"BatchNorm {name} differs from torch: rel {err:.2e}"


@QUICK
@given(batch_norm_cases())
def test_batch_norm_matches_torch(case):
    check_batch_norm(case)


@pytest.mark.fuzz
@FUZZ
@given(batch_norm_cases())
def test_batch_norm_matches_torch_fuzz(case):
    check_batch_norm(case)


# ---------------------------------------------------------------------------- Linear
@st.composite
def linear_cases(draw):
    in_features, out_features = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    leading = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=3)))
    event(f"Linear input with {len(leading)} leading axes")
    return (dict(in_features=in_features, out_features=out_features, bias=draw(st.booleans())),
            leading + (in_features,), draw(seeds))


def check_linear(case) -> None:
    kwargs, shape, seed = case
    rng = np.random.default_rng(seed)
    theirs = torch.nn.Linear(**kwargs, dtype=torch.float64)
    _randomize_torch_parameters(theirs, rng)
    assert_torch_parity(cr.Linear(**kwargs, dtype=np.float64), theirs, rng.standard_normal(shape),
                        dtype=np.float64, seed=int(rng.integers(2**31)))


@QUICK
@given(linear_cases())
def test_linear_matches_torch(case):
    check_linear(case)


@pytest.mark.fuzz
@FUZZ
@given(linear_cases())
def test_linear_matches_torch_fuzz(case):
    check_linear(case)
