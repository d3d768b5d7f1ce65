"""The stateless kernels: im2col/col2im and the pooling windows.

Each fast kernel is checked against the plain-loop reference in ``tests/reference.py``,
and each backward kernel against the definition of an adjoint: for a linear map A,
``<A x, y> == <x, A^T y>`` for every x and y. col2im is the adjoint of im2col (and
unpad of pad); avg_pool_backward is the adjoint of avg_pool_forward; for a fixed set of
winners, max pooling is the linear map "pick the winner of each window", and
max_pool_backward must be its adjoint.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from chainrule import functional as F
from chainrule.functional.im2col import window_view
from tests import reference as ref

# the module (chainrule.functional re-exports its im2col function under the same name)
im2col_module = importlib.import_module("chainrule.functional.im2col")


def inner(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """<a, b> and sum|a*b|, the scale that bounds its rounding error."""
    return float(np.sum(a * b)), float(np.sum(np.abs(a * b)))


def assert_adjoint(lhs: tuple[float, float], rhs: tuple[float, float], rtol: float = 1e-12) -> None:
    (a, scale_a), (b, scale_b) = lhs, rhs
    scale = max(scale_a, scale_b, 1e-300)
    assert abs(a - b) <= rtol * scale, \
        f"<A x, y> = {a!r} but <x, A^T y> = {b!r} (rel {abs(a - b) / scale:.2e})"


# (N, C, H, W, kernel, stride, dilation, padding (top, bottom, left, right))
IM2COL_CASES = {
    "k3-s1-5x5": (2, 3, 5, 5, (3, 3), (1, 1), (1, 1), (0, 0, 0, 0)),
    "k3-s2-p1-6x7-remainder": (2, 2, 6, 7, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),
    "k2-s3-7x8-remainder": (1, 2, 7, 8, (2, 2), (3, 3), (1, 1), (0, 0, 0, 0)),
    "k3x2-s2x1-d1x2-asym-pad": (2, 2, 5, 6, (3, 2), (2, 1), (1, 2), (1, 0, 2, 1)),
    "k3-d2-7x6": (1, 2, 7, 6, (3, 3), (1, 1), (2, 2), (0, 0, 0, 0)),
    "k2x3-s1x2-d1x3-5x9": (2, 1, 5, 9, (2, 3), (1, 2), (1, 3), (0, 0, 0, 0)),
    "kernel-equals-input-4x5": (2, 2, 4, 5, (4, 5), (1, 1), (1, 1), (0, 0, 0, 0)),
    "kernel-equals-padded-input": (2, 1, 3, 1, (5, 5), (1, 1), (1, 1), (1, 1, 2, 2)),
    "1x1-spatial-k1": (3, 2, 1, 1, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0)),
    "1x1-spatial-k3-p1": (2, 2, 1, 1, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),
    "k1-s2-5x5": (1, 3, 5, 5, (1, 1), (2, 2), (1, 1), (0, 0, 0, 0)),
    "k5-s2-d2-p3-9x8": (1, 2, 9, 8, (5, 5), (2, 3), (2, 2), (3, 3, 3, 3)),
}


def _unfold(x: np.ndarray, kernel, stride, dilation, padding) -> tuple[np.ndarray, tuple]:
    """The layer's path: pad to channel-major, then im2col. Returns (cols, padded_hw)."""
    n, c, h, w = x.shape
    top, bottom, left, right = padding
    out_hw = (F.conv_output_size(h, kernel[0], stride[0], top, bottom, dilation[0]),
              F.conv_output_size(w, kernel[1], stride[1], left, right, dilation[1]))
    xp = F.pad_channel_major(x, padding)                 # (C, N, Hp, Wp)
    return F.im2col(xp, kernel, stride, dilation, out_hw), xp.shape[2:]


@pytest.fixture(params=["auto", "one-stage", "two-stage"])
def unfolding(request, monkeypatch):
    """im2col's copy as chosen by width, or forced to one stage, or to two stages
    wherever the stride along the height allows it."""
    widths = {"auto": im2col_module.MAX_TWO_STAGE_WIDTH, "one-stage": -1,
              "two-stage": 1 << 30}
    monkeypatch.setattr(im2col_module, "MAX_TWO_STAGE_WIDTH", widths[request.param])
    return request.param


@pytest.mark.parametrize("case", IM2COL_CASES.values(), ids=IM2COL_CASES.keys())
def test_im2col_matches_loop_reference(case, unfolding):
    n, c, h, w, kernel, stride, dilation, padding = case
    x = np.random.default_rng(0).standard_normal((n, c, h, w))
    cols, _ = _unfold(x, kernel, stride, dilation, padding)
    expected = ref.im2col(x, kernel, stride, padding, dilation)
    assert cols.shape == expected.shape
    np.testing.assert_array_equal(cols, expected)


@pytest.mark.parametrize("case", IM2COL_CASES.values(), ids=IM2COL_CASES.keys())
def test_col2im_is_adjoint_of_im2col(case):
    n, c, h, w, kernel, stride, dilation, padding = case
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c, h, w))
    cols, padded_hw = _unfold(x, kernel, stride, dilation, padding)
    y = rng.standard_normal(cols.shape)
    # On the padded, channel-major array: the kernels themselves.
    xp = F.pad_channel_major(x, padding)
    assert_adjoint(inner(F.im2col(xp, kernel, stride, dilation, cols.shape[-2:]), y),
                   inner(xp, F.col2im(y, padded_hw, stride, dilation)))
    # Through pad and unpad too: the full map that Conv2d differentiates.
    dx = F.unpad_to_nchw(F.col2im(y, padded_hw, stride, dilation), padding, (h, w))
    assert dx.shape == x.shape
    assert_adjoint(inner(cols, y), inner(x, dx))


@pytest.mark.parametrize("stride, dilation", [((1, 1), (1, 1)), ((1, 2), (2, 1)), ((2, 1), (1, 1))])
def test_im2col_into_a_strided_out_and_from_a_taller_input(stride, dilation, monkeypatch):
    """The kept columns of a batch are written chunk by chunk into a slice of a larger
    matrix; the padded input may have rows below the last window (unused): both copies
    must read and write exactly what the one-stage view does."""
    rng = np.random.default_rng(3)
    xp = rng.standard_normal((3, 4, 9, 8))
    kernel, out_hw = (3, 2), (3, 4)
    window_rows = stride[0] * (out_hw[0] - 1) + dilation[0] * (kernel[0] - 1) + 1
    assert window_rows < xp.shape[2]
    expected = np.array(window_view(xp, kernel, stride, dilation, out_hw))
    whole = np.full((3 * 3 * 2, 2 * 4 * 3 * 4), np.nan)
    out = whole[:, 4 * 3 * 4:].reshape(3, 3, 2, 4, 3, 4)           # rows 96 floats apart
    assert not out.flags.c_contiguous
    stages = []
    real = im2col_module.scratch
    monkeypatch.setattr(im2col_module, "scratch",
                        lambda *args: stages.append(args[1]) or real(*args))
    assert F.im2col(xp, kernel, stride, dilation, out_hw, out=out) is out
    np.testing.assert_array_equal(out, expected)
    assert np.isnan(whole[:, :4 * 3 * 4]).all()
    two_stage = stride[0] == 1
    assert stages == ([(3, 2, 4, 3 + dilation[0] * 2, 4)] if two_stage else [])


def test_window_view_refuses_windows_past_the_input():
    """The view is made with as_strided, which would read past the array: a kernel and
    output size that do not fit the padded input are an error, not foreign memory."""
    xp = np.zeros((2, 3, 5, 6))
    assert window_view(xp, (3, 3), (1, 1), (1, 1), (3, 4)).shape == (2, 3, 3, 3, 3, 4)
    for out_hw, stride in [((4, 4), (1, 1)), ((3, 5), (1, 1)), ((2, 2), (3, 1))]:
        with pytest.raises(ValueError, match="do not fit"):
            window_view(xp, (3, 3), stride, (1, 1), out_hw)


def test_col2im_adds_overlapping_windows():
    # k3 s1 on 4x4: the centre pixels belong to 9 windows, the corners to 1.
    cols = np.ones((1, 3, 3, 1, 2, 2))
    counts = F.col2im(cols, (4, 4), (1, 1), (1, 1))[0, 0]
    np.testing.assert_array_equal(counts, [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]])


def test_conv_output_size_formula():
    assert F.conv_output_size(7, 3, 2, 1, 1, 1) == 4      # (7 + 2 - 3) // 2 + 1
    assert F.conv_output_size(8, 2, 3, 0, 0, 1) == 3      # remainder dropped
    assert F.conv_output_size(7, 3, 1, 0, 0, 3) == 1      # dilated extent 7
    assert F.conv_output_size(3, 5, 1, 1, 1, 1) == 1      # kernel == padded input
    assert F.conv_output_size(3, 5, 1, 0, 0, 1) <= 0      # does not fit: caller raises


# ---------------------------------------------------------------- pooling kernels

# (N, C, H, W, kernel, stride, dilation, padding (ph, pw))
POOL_CASES = {
    "k2-s2-4x6": (2, 2, 4, 6, (2, 2), (2, 2), (1, 1), (0, 0)),
    "k3-s1-overlap-5x6": (1, 2, 5, 6, (3, 3), (1, 1), (1, 1), (0, 0)),
    "k3-s2-overlap-p1-7x6": (2, 2, 7, 6, (3, 3), (2, 2), (1, 1), (1, 1)),
    "k2x3-s1x2-5x7": (1, 3, 5, 7, (2, 3), (1, 2), (1, 1), (0, 1)),
    "k3-s2-d2-p1-8x7": (1, 2, 8, 7, (3, 3), (2, 2), (2, 2), (1, 1)),
    "k2-s3-remainder-7x8": (2, 1, 7, 8, (2, 2), (3, 3), (1, 1), (0, 0)),
    "kernel-equals-input": (2, 2, 3, 4, (3, 4), (1, 1), (1, 1), (0, 0)),
    "1x1-spatial-k1": (2, 3, 1, 1, (1, 1), (1, 1), (1, 1), (0, 0)),
}
AVG_CASES = {name: case for name, case in POOL_CASES.items() if case[6] == (1, 1)}  # no dilation


def _pool_out_hw(h, w, kernel, stride, dilation, padding):
    return (F.conv_output_size(h, kernel[0], stride[0], padding[0], padding[0], dilation[0]),
            F.conv_output_size(w, kernel[1], stride[1], padding[1], padding[1], dilation[1]))


def _distinct(rng: np.random.Generator, shape) -> np.ndarray:
    """A random permutation of distinct values (no ties: the max is unique)."""
    return rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64) / 7.0


@pytest.mark.parametrize("case", POOL_CASES.values(), ids=POOL_CASES.keys())
def test_max_pool_kernels_match_loop_reference(case):
    n, c, h, w, kernel, stride, dilation, padding = case
    rng = np.random.default_rng(2)
    x = rng.integers(0, 3, (n, c, h, w)).astype(np.float64)  # many ties: first max wins
    out_hw = _pool_out_hw(h, w, kernel, stride, dilation, padding)
    xp = F.pad_spatial(x, padding, -np.inf)
    out, winner = F.max_pool_forward(xp, kernel, stride, dilation, out_hw)
    expected, argmax = ref.max_pool2d(x, kernel, stride, padding, dilation)
    np.testing.assert_array_equal(out, expected)

    grad = rng.standard_normal(out.shape)
    dxp = F.max_pool_backward(grad, winner, kernel, stride, dilation, xp.shape[-2:])
    ph, pw = padding
    assert not np.any(dxp[..., :ph, :]) and not np.any(dxp[..., :, :pw]), "gradient routed to padding"
    np.testing.assert_allclose(dxp[..., ph:ph + h, pw:pw + w],
                               ref.max_pool2d_backward(grad, argmax, x.shape), rtol=0, atol=1e-15)


@pytest.mark.parametrize("case", POOL_CASES.values(), ids=POOL_CASES.keys())
def test_max_pool_backward_is_adjoint_of_winner_selection(case):
    n, c, h, w, kernel, stride, dilation, _ = case
    rng = np.random.default_rng(3)
    x = _distinct(rng, (n, c, h, w))
    out_hw = _pool_out_hw(h, w, kernel, stride, dilation, (0, 0))
    out, winner = F.max_pool_forward(x, kernel, stride, dilation, out_hw)
    y = rng.standard_normal(out.shape)
    dx = F.max_pool_backward(y, winner, kernel, stride, dilation, (h, w))
    # S(x) = x at the winners = the forward output.
    assert_adjoint(inner(out, y), inner(x, dx))
    # S(z) for any other z, with the winners of x taken from the loop reference.
    _, argmax = ref.max_pool2d(x, kernel, stride, (0, 0), dilation)
    z = rng.standard_normal(x.shape)
    b, ch = np.indices(out.shape)[:2]
    assert_adjoint(inner(z[b, ch, argmax[..., 0], argmax[..., 1]], y), inner(z, dx))


def test_max_pool_forward_ties_go_to_first_and_nan_propagates():
    x = np.array([[[[1.0, 3.0, 3.0], [3.0, 2.0, np.nan]]]])
    out, winner = F.max_pool_forward(x, (2, 2), (1, 1), (1, 1), (1, 2))
    # Window 1 holds 3 at (0,1) and at (1,0): the first in row-major order, index 0*2+1, wins.
    assert out[0, 0, 0, 0] == 3.0 and winner[0, 0, 0, 0] == 1
    assert np.isnan(out[0, 0, 0, 1])


@pytest.mark.parametrize("count_include_pad", [True, False], ids=["include-pad", "exclude-pad"])
@pytest.mark.parametrize("case", AVG_CASES.values(), ids=AVG_CASES.keys())
def test_avg_pool_kernels_match_reference_and_are_adjoint(case, count_include_pad):
    n, c, h, w, kernel, stride, dilation, padding = case
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, c, h, w))
    out_hw = _pool_out_hw(h, w, kernel, stride, dilation, padding)
    if count_include_pad:
        divisor = float(kernel[0] * kernel[1])
    else:
        divisor = F.window_counts((h, w), kernel, stride, padding, out_hw)
    xp = F.pad_spatial(x, padding, 0.0)
    out = F.avg_pool_forward(xp, kernel, stride, out_hw, divisor)
    np.testing.assert_allclose(out, ref.avg_pool2d(x, kernel, stride, padding, count_include_pad),
                               rtol=1e-13, atol=1e-14)
    y = rng.standard_normal(out.shape)
    dxp = F.avg_pool_backward(y, kernel, stride, xp.shape[-2:], divisor)
    assert_adjoint(inner(out, y), inner(xp, dxp))


def test_window_counts_counts_real_elements():
    # k3 s2 p1 on 4x4 -> 2x2 windows: the top-left window has a padded row and column.
    counts = F.window_counts((4, 4), (3, 3), (2, 2), (1, 1), (2, 2))
    np.testing.assert_array_equal(counts, [[4, 6], [6, 9]])


def test_pooling_kernels_accept_any_leading_axes():
    x = _distinct(np.random.default_rng(5), (3, 4, 5))                  # (C, H, W)
    out, winner = F.max_pool_forward(x, (2, 2), (2, 2), (1, 1), (2, 2))
    expected, _ = ref.max_pool2d(x[None], (2, 2), (2, 2))
    np.testing.assert_array_equal(out, expected[0])
    assert F.max_pool_backward(np.ones_like(out), winner, (2, 2), (2, 2), (1, 1), (4, 5)).shape == x.shape


@pytest.mark.parametrize("size, out_size", [(5, 1), (6, 2), (7, 3), (3, 5), (4, 4)],
                         ids=lambda v: str(v))
def test_adaptive_pool_matrix_rows(size, out_size):
    matrix = F.adaptive_pool_matrix(size, out_size, np.float64)
    assert matrix.shape == (out_size, size)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=1e-15)
    x = np.random.default_rng(6).standard_normal((1, 1, size, 1))
    np.testing.assert_allclose(matrix @ x[0, 0, :, 0],
                               ref.adaptive_avg_pool2d(x, (out_size, 1))[0, 0, :, 0], rtol=1e-13)
