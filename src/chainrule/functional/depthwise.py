"""Depthwise convolution: each input channel convolved alone (``groups == C_in``).

im2col + product is a poor fit here: every group is a (M, kh*kw) @ (kh*kw, N*L) product
with M (the channel multiplier, usually 1) rows and 9 columns for a 3x3 kernel, so
BLAS does almost nothing per call and the unfolded input is 9x the input. Instead each
of the kh*kw kernel offsets is one broadcast multiply-add over the whole (C, N, H_out,
W_out) block: the same sums, in the order of the offsets.

All arrays are channel-major like the rest of ``functional.conv``: the padded input
``xp`` is (C, N, Hp, Wp), the weight (C*M, 1, kh, kw) (torch's layout: output channel
``c*M + m`` reads input channel c), the output and its gradient (C*M, N, H_out, W_out).
Channels are independent, so the work is cut into channel blocks shared among the
worker threads; the sums inside a block do not depend on the cut.

    forward:          y[c, m] = sum_(i,j) w[c, m, i, j] * xp[c, :, i*dh + s*y, j*dw + s*x] + b
    weight gradient:  dw[c, m, i, j] = sum over (n, y, x) of g[c, m] * (the same window)
    input gradient:   dxp[c, window (i, j)] += sum_m w[c, m, i, j] * g[c, m]
"""

from __future__ import annotations

import numpy as np

from ._parallel import parallel_slices
from .im2col import Pair, _offset_slices


def is_depthwise(c_in: int, weight_shape: tuple[int, ...]) -> bool:
    """Whether a convolution of ``c_in`` input channels with a weight of this shape has
    one input channel per group and more than one group (torch's depthwise case: then
    ``groups == c_in``, and C_out, a multiple of the groups, is ``c_in`` times any
    channel multiplier M)."""
    return weight_shape[1] == 1 and c_in > 1


def _offsets(kernel: Pair, out_hw: Pair, stride: Pair, dilation: Pair) -> list[tuple[slice, slice]]:
    kh, kw = kernel
    return [_offset_slices(i, j, out_hw, stride, dilation) for i in range(kh) for j in range(kw)]


def depthwise_forward(xp: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                      stride: Pair, dilation: Pair, out_hw: Pair) -> np.ndarray:
    """(C, N, Hp, Wp) padded input -> (C*M, N, H_out, W_out) output."""
    c, n = xp.shape[:2]
    c_out, _, kh, kw = weight.shape
    m = c_out // c
    w = weight.reshape(c, m, kh * kw, 1, 1, 1)
    out = np.empty((c, m, n, *out_hw), dtype=xp.dtype)
    offsets = _offsets((kh, kw), out_hw, stride, dilation)

    def piece(ix):
        x, block, wb = xp[ix][:, None], out[ix], w[ix]            # x: (c, 1, N, Hp, Wp)
        term = np.empty_like(block)
        np.multiply(x[..., offsets[0][0], offsets[0][1]], wb[:, :, 0], out=block)
        for index, (rows, columns) in enumerate(offsets[1:], start=1):
            np.multiply(x[..., rows, columns], wb[:, :, index], out=term)
            block += term
        if bias is not None:
            block += bias.reshape(c, m, 1, 1, 1)[ix]

    parallel_slices(piece, (c, m, n, *out_hw), 0)
    return out.reshape(c_out, n, *out_hw)


def depthwise_weight_gradient(xp: np.ndarray, grad: np.ndarray, kernel: Pair, stride: Pair,
                              dilation: Pair, with_bias: bool
                              ) -> tuple[np.ndarray, np.ndarray | None]:
    """dW (C*M, 1, kh, kw) and db (C*M,) or None from the padded input (C, N, Hp, Wp)
    and the upstream gradient (C*M, N, H_out, W_out)."""
    c, n = xp.shape[:2]
    c_out, _, oh, ow = grad.shape
    m = c_out // c
    kh, kw = kernel
    g = grad.reshape(c, m, n * oh * ow)                                 # (C, M, N*L)
    dweight = np.empty((c, m, kh * kw), dtype=grad.dtype)
    offsets = _offsets(kernel, (oh, ow), stride, dilation)

    def piece(ix):
        x, gb = xp[ix], g[ix]
        window = np.empty((x.shape[0], n, oh, ow), dtype=grad.dtype)
        for index, (rows, columns) in enumerate(offsets):
            np.copyto(window, x[..., rows, columns])                    # (c, N, H_out, W_out)
            # (c, M, N*L) @ (c, N*L, 1): one dot product per (channel, multiplier)
            np.matmul(gb, window.reshape(x.shape[0], -1, 1), out=dweight[ix][:, :, index:index + 1])

    parallel_slices(piece, (c, n, oh, ow), 0)
    dbias = g.sum(axis=2).reshape(c_out) if with_bias else None
    return dweight.reshape(c_out, 1, kh, kw), dbias


def depthwise_input_gradient(weight: np.ndarray, grad: np.ndarray, c_in: int, padded_hw: Pair,
                             stride: Pair, dilation: Pair) -> np.ndarray:
    """dL/dxp (C, N, Hp, Wp) of the padded input from the upstream gradient
    (C*M, N, H_out, W_out); the caller crops the padding. ``grad`` may have fewer rows
    or columns than the padded input gives windows (dropped last outputs): only the
    windows of the outputs it has receive gradient."""
    c_out, _, kh, kw = weight.shape
    _, n, oh, ow = grad.shape
    m = c_out // c_in
    w = weight.reshape(c_in, m, kh * kw, 1, 1, 1)
    g = grad.reshape(c_in, m, n, oh, ow)
    dxp = np.zeros((c_in, n, *padded_hw), dtype=grad.dtype)
    offsets = _offsets((kh, kw), (oh, ow), stride, dilation)

    def piece(ix):
        gb, wb, dx = g[ix], w[ix], dxp[ix]
        term = np.empty((gb.shape[0], m, n, oh, ow), dtype=grad.dtype)
        for index, (rows, columns) in enumerate(offsets):
            np.multiply(gb, wb[:, :, index], out=term)
            dx[..., rows, columns] += term[:, 0] if m == 1 else term.sum(axis=1)

    parallel_slices(piece, (c_in, n, *padded_hw), 0)
    return dxp
