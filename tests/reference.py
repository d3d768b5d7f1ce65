"""Slow, obviously correct references of the convolution and pooling kernels.

Plain Python loops over batch, channel, output pixel and kernel offset: nothing clever,
so each one reads as the definition it checks. The fast kernels in ``chainrule`` are
tested against these as well as against PyTorch. Use them on tiny arrays only.

Conventions (as in PyTorch): arrays are (N, C, H, W); output pixel (oy, ox) with kernel
offset (ky, kx) reads input row ``oy*stride_h + ky*dilation_h - pad_top`` and column
``ox*stride_w + kx*dilation_w - pad_left``; a position outside the input is padding.
Output size per spatial dimension::

    H_out = (H + pad_top + pad_bottom - dilation*(k - 1) - 1) // stride + 1
"""

from __future__ import annotations

import math

import numpy as np


def out_size(size: int, k: int, stride: int, pad_before: int, pad_after: int,
             dilation: int = 1) -> int:
    return (size + pad_before + pad_after - dilation * (k - 1) - 1) // stride + 1


def _window(oy: int, ox: int, kernel, stride, dilation, top: int, left: int):
    """(ky, kx, y, x) for every kernel offset of output pixel (oy, ox), in row-major
    window order; (y, x) may lie in the padding (outside the input)."""
    for ky in range(kernel[0]):
        for kx in range(kernel[1]):
            yield (ky, kx, oy * stride[0] + ky * dilation[0] - top,
                   ox * stride[1] + kx * dilation[1] - left)


def _inside(y: int, x: int, h: int, w: int) -> bool:
    return 0 <= y < h and 0 <= x < w


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride=(1, 1),
           padding=(0, 0, 0, 0), dilation=(1, 1), groups: int = 1) -> np.ndarray:
    """Cross-correlation with zero padding (top, bottom, left, right).

    x: (N, C_in, H, W); weight: (C_out, C_in // groups, kh, kw); bias: (C_out,) or None.
    Returns (N, C_out, H_out, W_out). Output channel ``o`` belongs to group
    ``o // (C_out // groups)`` and sees only that group's ``C_in // groups`` input channels.
    """
    n, c_in, h, w = x.shape
    c_out, c_group, kh, kw = weight.shape
    top, bottom, left, right = padding
    oh = out_size(h, kh, stride[0], top, bottom, dilation[0])
    ow = out_size(w, kw, stride[1], left, right, dilation[1])
    out_per_group = c_out // groups
    out = np.zeros((n, c_out, oh, ow), dtype=np.float64)
    for b in range(n):
        for o in range(c_out):
            first_channel = (o // out_per_group) * c_group
            for oy in range(oh):
                for ox in range(ow):
                    total = 0.0 if bias is None else float(bias[o])
                    for c in range(c_group):
                        for ky, kx, y, xx in _window(oy, ox, (kh, kw), stride, dilation, top, left):
                            if _inside(y, xx, h, w):
                                total += x[b, first_channel + c, y, xx] * weight[o, c, ky, kx]
                    out[b, o, oy, ox] = total
    return out


def im2col(x: np.ndarray, kernel, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1)) -> np.ndarray:
    """Columns of a zero-padded input: (N, C, H, W) -> (C, kh, kw, N, H_out, W_out), the
    layout of ``chainrule.functional.im2col``; entry [c, ky, kx, n, oy, ox] is the input
    value that kernel offset (ky, kx) of output pixel (oy, ox) sees (0 in the padding)."""
    n, c, h, w = x.shape
    top, bottom, left, right = padding
    oh = out_size(h, kernel[0], stride[0], top, bottom, dilation[0])
    ow = out_size(w, kernel[1], stride[1], left, right, dilation[1])
    cols = np.zeros((c, kernel[0], kernel[1], n, oh, ow), dtype=x.dtype)
    for b in range(n):
        for ch in range(c):
            for oy in range(oh):
                for ox in range(ow):
                    for ky, kx, y, xx in _window(oy, ox, kernel, stride, dilation, top, left):
                        if _inside(y, xx, h, w):
                            cols[ch, ky, kx, b, oy, ox] = x[b, ch, y, xx]
    return cols


def _pool_out_hw(x, kernel, stride, padding, dilation):
    h, w = x.shape[-2:]
    return (out_size(h, kernel[0], stride[0], padding[0], padding[0], dilation[0]),
            out_size(w, kernel[1], stride[1], padding[1], padding[1], dilation[1]))


def max_pool2d(x: np.ndarray, kernel, stride, padding=(0, 0), dilation=(1, 1)):
    """Max over the real (non-padding) elements of each window.

    x: (N, C, H, W). Returns (out, argmax): out (N, C, H_out, W_out) and, per output,
    the (y, x) input position of the *first* maximum in row-major window order (a later
    equal value does not take over), as an (N, C, H_out, W_out, 2) int array.
    """
    n, c, h, w = x.shape
    oh, ow = _pool_out_hw(x, kernel, stride, padding, dilation)
    out = np.zeros((n, c, oh, ow), dtype=np.float64)
    argmax = np.zeros((n, c, oh, ow, 2), dtype=np.int64)
    for b in range(n):
        for ch in range(c):
            for oy in range(oh):
                for ox in range(ow):
                    best, where = -math.inf, None
                    for _, _, y, xx in _window(oy, ox, kernel, stride, dilation, *padding):
                        if _inside(y, xx, h, w) and (where is None or x[b, ch, y, xx] > best):
                            best, where = x[b, ch, y, xx], (y, xx)
                    out[b, ch, oy, ox] = best
                    argmax[b, ch, oy, ox] = where
    return out, argmax


def max_pool2d_backward(grad: np.ndarray, argmax: np.ndarray, input_shape) -> np.ndarray:
    """Each output's gradient goes, whole, to its window's first maximum; windows that
    share a winner add. grad: (N, C, H_out, W_out) -> (N, C, H, W)."""
    dx = np.zeros(input_shape, dtype=np.float64)
    n, c, oh, ow = grad.shape
    for b in range(n):
        for ch in range(c):
            for oy in range(oh):
                for ox in range(ow):
                    y, xx = argmax[b, ch, oy, ox]
                    dx[b, ch, y, xx] += grad[b, ch, oy, ox]
    return dx


def avg_pool2d(x: np.ndarray, kernel, stride, padding=(0, 0), count_include_pad: bool = True):
    """Mean of each window: the sum of its real elements divided by kh*kw
    (``count_include_pad=True``, padding counts as zeros) or by the number of real
    elements (``False``). x: (N, C, H, W) -> (N, C, H_out, W_out)."""
    n, c, h, w = x.shape
    oh, ow = _pool_out_hw(x, kernel, stride, padding, (1, 1))
    out = np.zeros((n, c, oh, ow), dtype=np.float64)
    for b in range(n):
        for ch in range(c):
            for oy in range(oh):
                for ox in range(ow):
                    total, count = 0.0, 0
                    for _, _, y, xx in _window(oy, ox, kernel, stride, (1, 1), *padding):
                        if _inside(y, xx, h, w):
                            total += x[b, ch, y, xx]
                            count += 1
                    out[b, ch, oy, ox] = total / (kernel[0] * kernel[1] if count_include_pad else count)
    return out


def adaptive_avg_pool2d(x: np.ndarray, output_size) -> np.ndarray:
    """Output cell (i, j) averages rows floor(i*H/H_out) .. ceil((i+1)*H/H_out) - 1 and
    the columns alike. x: (N, C, H, W) -> (N, C, H_out, W_out)."""
    n, c, h, w = x.shape
    oh, ow = output_size
    out = np.zeros((n, c, oh, ow), dtype=np.float64)
    for b in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    y0, y1 = (i * h) // oh, math.ceil((i + 1) * h / oh)
                    x0, x1 = (j * w) // ow, math.ceil((j + 1) * w / ow)
                    out[b, ch, i, j] = x[b, ch, y0:y1, x0:x1].mean()
    return out
