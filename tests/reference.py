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


def conv2d_backward(x: np.ndarray, weight: np.ndarray, grad: np.ndarray, stride=(1, 1),
                    padding=(0, 0, 0, 0), dilation=(1, 1), groups: int = 1):
    """Gradients of ``conv2d`` for the upstream gradient ``grad`` (N, C_out, H_out, W_out):
    (dx (N, C_in, H, W), dweight (C_out, C_in // groups, kh, kw), dbias (C_out,)), in
    float64. Each product ``x * weight`` of the forward sends ``grad * weight`` to dx and
    ``grad * x`` to dweight."""
    n, c_in, h, w = x.shape
    c_out, c_group, kh, kw = weight.shape
    top, _, left, _ = padding
    _, _, oh, ow = grad.shape
    out_per_group = c_out // groups
    dx = np.zeros(x.shape, dtype=np.float64)
    dweight = np.zeros(weight.shape, dtype=np.float64)
    for b in range(n):
        for o in range(c_out):
            first_channel = (o // out_per_group) * c_group
            for oy in range(oh):
                for ox in range(ow):
                    g = float(grad[b, o, oy, ox])
                    for c in range(c_group):
                        for ky, kx, y, xx in _window(oy, ox, (kh, kw), stride, dilation, top, left):
                            if _inside(y, xx, h, w):
                                dx[b, first_channel + c, y, xx] += g * weight[o, c, ky, kx]
                                dweight[o, c, ky, kx] += g * x[b, first_channel + c, y, xx]
    return dx, dweight, grad.sum(axis=(0, 2, 3), dtype=np.float64)


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


def pool_out_size(size: int, k: int, stride: int, pad: int, dilation: int = 1,
                  ceil_mode: bool = False) -> int:
    """torch's number of pooling windows along one axis: the quotient rounded down, or
    up with ceil_mode, dropping a last window that would start at or past size + pad."""
    span = size + 2 * pad - dilation * (k - 1) - 1
    out = (math.ceil(span / stride) if ceil_mode else math.floor(span / stride)) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def max_pool2d(x: np.ndarray, kernel, stride, padding=(0, 0), dilation=(1, 1),
               ceil_mode: bool = False):
    """Max over the real (non-padding) elements of each window, with torch's output size
    (``pool_out_size``): with ceil_mode, a window that hangs past the padded input takes
    the max of the real elements it covers.

    x: (N, C, H, W). Returns (out, argmax): out (N, C, H_out, W_out) and, per output,
    the (y, x) input position of the *first* maximum in row-major window order (a later
    equal value does not take over), as an (N, C, H_out, W_out, 2) int array. A window
    without any real element gives -inf and argmax (-1, -1).
    """
    n, c, h, w = x.shape
    oh = pool_out_size(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    ow = pool_out_size(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    out = np.full((n, c, oh, ow), -math.inf)
    argmax = np.full((n, c, oh, ow, 2), -1, dtype=np.int64)
    for b in range(n):
        for ch in range(c):
            for oy in range(oh):
                for ox in range(ow):
                    best, where = -math.inf, None
                    for _, _, y, xx in _window(oy, ox, kernel, stride, dilation, *padding):
                        if _inside(y, xx, h, w) and (where is None or x[b, ch, y, xx] > best):
                            best, where = x[b, ch, y, xx], (y, xx)
                    if where is not None:
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


def _avg_window(o: int, k: int, stride: int, pad: int, size: int) -> tuple[int, int, int]:
    """(first, end, pool_size) of average-pooling window o along one axis, as torch's CPU
    kernel: the window clipped at size + pad gives pool_size (padding counts, ceil_mode's
    overhang past it does not), then clipped to the input gives [first, end)."""
    start = o * stride - pad
    end = min(start + k, size + pad)
    return max(start, 0), min(end, size), end - start


def _avg_windows(input_hw, out_hw, kernel, stride, padding, count_include_pad: bool,
                 divisor_override: int | None):
    """(oy, ox, rows, cols, divisor) for every average-pooling window: the input rows and
    columns it covers (ranges) and the divisor of its sum, divisor_override if given,
    else pool_size (count_include_pad) or the number of real elements."""
    for oy in range(out_hw[0]):
        y0, y1, pool_h = _avg_window(oy, kernel[0], stride[0], padding[0], input_hw[0])
        for ox in range(out_hw[1]):
            x0, x1, pool_w = _avg_window(ox, kernel[1], stride[1], padding[1], input_hw[1])
            if divisor_override is not None:
                divisor = divisor_override
            elif count_include_pad:
                divisor = pool_h * pool_w
            else:
                divisor = (y1 - y0) * (x1 - x0)
            yield oy, ox, range(y0, y1), range(x0, x1), divisor


def avg_pool2d(x: np.ndarray, kernel, stride, padding=(0, 0), count_include_pad: bool = True,
               ceil_mode: bool = False, divisor_override: int | None = None) -> np.ndarray:
    """Mean of each window with torch's output size and divisor (``_avg_windows``):
    padding counts as zeros with count_include_pad, ceil_mode's overhang never does.
    x: (N, C, H, W) -> (N, C, H_out, W_out)."""
    n, c, h, w = x.shape
    out_hw = (pool_out_size(h, kernel[0], stride[0], padding[0], 1, ceil_mode),
              pool_out_size(w, kernel[1], stride[1], padding[1], 1, ceil_mode))
    out = np.zeros((n, c, *out_hw), dtype=np.float64)
    for oy, ox, rows, cols, divisor in _avg_windows((h, w), out_hw, kernel, stride, padding,
                                                    count_include_pad, divisor_override):
        for b in range(n):
            for ch in range(c):
                out[b, ch, oy, ox] = sum(x[b, ch, y, xx] for y in rows for xx in cols) / divisor
    return out


def avg_pool2d_backward(grad: np.ndarray, input_shape, kernel, stride, padding=(0, 0),
                        count_include_pad: bool = True,
                        divisor_override: int | None = None) -> np.ndarray:
    """The input gradient of avg_pool2d: each output's gradient divided by its window's
    divisor, added to every real element of the window.
    grad: (N, C, H_out, W_out) -> (N, C, H, W)."""
    n, c, h, w = input_shape
    dx = np.zeros(input_shape, dtype=np.float64)
    for oy, ox, rows, cols, divisor in _avg_windows((h, w), grad.shape[2:], kernel, stride,
                                                    padding, count_include_pad, divisor_override):
        for b in range(n):
            for ch in range(c):
                for y in rows:
                    for xx in cols:
                        dx[b, ch, y, xx] += grad[b, ch, oy, ox] / divisor
    return dx


def _adaptive_windows(h: int, w: int, oh: int, ow: int):
    """(i, j, y0, y1, x0, x1) for every output cell (i, j) of an adaptive pool: it reads
    rows floor(i*H/H_out) .. ceil((i+1)*H/H_out) - 1 ([y0, y1)) and the columns alike."""
    for i in range(oh):
        for j in range(ow):
            yield (i, j, (i * h) // oh, math.ceil((i + 1) * h / oh),
                   (j * w) // ow, math.ceil((j + 1) * w / ow))


def adaptive_avg_pool2d(x: np.ndarray, output_size) -> np.ndarray:
    """Output cell (i, j) averages its window (``_adaptive_windows``).
    x: (N, C, H, W) -> (N, C, H_out, W_out)."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, *output_size), dtype=np.float64)
    for b in range(n):
        for ch in range(c):
            for i, j, y0, y1, x0, x1 in _adaptive_windows(h, w, *output_size):
                out[b, ch, i, j] = x[b, ch, y0:y1, x0:x1].mean()
    return out


def adaptive_max_pool2d(x: np.ndarray, output_size):
    """Output cell (i, j) is the max over its window (``_adaptive_windows``), scanned in
    row-major order as torch's CPU kernel: a value takes over when it is greater than the
    running max or is NaN (so ties stay with the first maximum and the last NaN wins).
    Returns (out, argmax) as max_pool2d does. x: (N, C, H, W) -> (N, C, H_out, W_out)."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, *output_size), dtype=np.float64)
    argmax = np.zeros((n, c, *output_size, 2), dtype=np.int64)
    for b in range(n):
        for ch in range(c):
            for i, j, y0, y1, x0, x1 in _adaptive_windows(h, w, *output_size):
                best, where = -math.inf, (y0, x0)
                for y in range(y0, y1):
                    for xx in range(x0, x1):
                        value = x[b, ch, y, xx]
                        if value > best or math.isnan(value):
                            best, where = value, (y, xx)
                out[b, ch, i, j] = best
                argmax[b, ch, i, j] = where
    return out, argmax


# ---------------------------------------------------------------- transposed convolution

def conv_transpose_out_size(size: int, k: int, stride: int, padding: int, output_padding: int = 0,
                            dilation: int = 1) -> int:
    return (size - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1


def _scatter_targets(x_shape, weight_shape, out_hw, stride, padding, dilation, groups):
    """(b, c, y, xx, o, ky, kx, oy, ox) for every product the transposed convolution adds:
    input pixel (y, xx) of channel c, times kernel entry weight[c, o, ky, kx], lands on
    output channel ``group*C_out/G + o`` at (y*stride + ky*dilation - padding, ...);
    landings outside the output (cropped by the padding) are left out."""
    n, c_in, h, w = x_shape
    _, out_per_group, kh, kw = weight_shape
    in_per_group = c_in // groups
    for b in range(n):
        for c in range(c_in):
            first_out = (c // in_per_group) * out_per_group
            for y in range(h):
                for xx in range(w):
                    for o in range(out_per_group):
                        for ky in range(kh):
                            for kx in range(kw):
                                oy = y * stride[0] + ky * dilation[0] - padding[0]
                                ox = xx * stride[1] + kx * dilation[1] - padding[1]
                                if _inside(oy, ox, *out_hw):
                                    yield b, c, y, xx, first_out + o, o, ky, kx, oy, ox


def conv_transpose2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
                     stride=(1, 1), padding=(0, 0), output_padding=(0, 0), dilation=(1, 1),
                     groups: int = 1) -> np.ndarray:
    """Transposed convolution by scattering: every input pixel adds itself times the
    kernel into the output (see ``_scatter_targets``); ``output_padding`` only makes the
    output larger at the bottom/right.

    x: (N, C_in, H, W); weight: (C_in, C_out // groups, kh, kw); bias: (C_out,) or None.
    Returns (N, C_out, H_out, W_out),
    ``H_out = (H - 1)*stride - 2*padding + dilation*(kh - 1) + output_padding + 1``.
    """
    n, _, h, w = x.shape
    _, out_per_group, kh, kw = weight.shape
    out_hw = (conv_transpose_out_size(h, kh, stride[0], padding[0], output_padding[0], dilation[0]),
              conv_transpose_out_size(w, kw, stride[1], padding[1], output_padding[1], dilation[1]))
    out = np.zeros((n, out_per_group * groups, *out_hw), dtype=np.float64)
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64).reshape(-1, 1, 1)
    for b, c, y, xx, oc, o, ky, kx, oy, ox in _scatter_targets(x.shape, weight.shape, out_hw, stride,
                                                               padding, dilation, groups):
        out[b, oc, oy, ox] += x[b, c, y, xx] * weight[c, o, ky, kx]
    return out


def conv_transpose2d_backward(x: np.ndarray, weight: np.ndarray, grad: np.ndarray, stride=(1, 1),
                              padding=(0, 0), dilation=(1, 1), groups: int = 1):
    """Gradients of ``conv_transpose2d`` by the same loop: each product
    ``x[b, c, y, xx] * weight[c, o, ky, kx]`` that landed on output (oc, oy, ox) sends
    ``grad[b, oc, oy, ox]`` times the weight to x and times the input to the weight.

    grad: (N, C_out, H_out, W_out). Returns dx (N, C_in, H, W), dweight (like weight)
    and dbias (C_out,), the sum of grad over (N, H_out, W_out)."""
    dx = np.zeros(x.shape, dtype=np.float64)
    dweight = np.zeros(weight.shape, dtype=np.float64)
    for b, c, y, xx, oc, o, ky, kx, oy, ox in _scatter_targets(x.shape, weight.shape, grad.shape[2:],
                                                               stride, padding, dilation, groups):
        dx[b, c, y, xx] += grad[b, oc, oy, ox] * weight[c, o, ky, kx]
        dweight[c, o, ky, kx] += grad[b, oc, oy, ox] * x[b, c, y, xx]
    return dx, dweight, grad.sum(axis=(0, 2, 3))


def relu(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Element by element: (max(x, 0), x > 0); a NaN stays NaN and is not positive."""
    flat = x.reshape(-1)
    y = np.empty(flat.shape, dtype=x.dtype)
    positive = np.empty(flat.shape, dtype=np.bool_)
    for i, v in enumerate(flat):
        positive[i] = v > 0
        y[i] = v if (v > 0 or v != v) else 0
    return y.reshape(x.shape), positive.reshape(x.shape)


def batch_norm_rows(v: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float):
    """Training BatchNorm of each row of a (C, M) matrix, element by element in float64:
    (y, mean, biased var)."""
    rows, m = v.shape
    y = np.empty((rows, m))
    mean, var = np.empty(rows), np.empty(rows)
    for c in range(rows):
        mean[c] = sum(float(e) for e in v[c]) / m
        var[c] = sum((float(e) - mean[c]) ** 2 for e in v[c]) / m
        for i in range(m):
            y[c, i] = (float(v[c, i]) - mean[c]) / math.sqrt(var[c] + eps) * weight[c] + bias[c]
    return y, mean, var


def batch_norm_rows_backward(v: np.ndarray, g: np.ndarray, weight: np.ndarray, eps: float):
    """Gradients of ``batch_norm_rows`` (training statistics), element by element in
    float64: dx = weight/std * (g - mean(g) - x̂ mean(g x̂)); (dx, dweight, dbias)."""
    rows, m = v.shape
    dx = np.empty((rows, m))
    dweight, dbias = np.empty(rows), np.empty(rows)
    for c in range(rows):
        mean = sum(float(e) for e in v[c]) / m
        std = math.sqrt(sum((float(e) - mean) ** 2 for e in v[c]) / m + eps)
        xhat = [(float(e) - mean) / std for e in v[c]]
        dbias[c] = sum(float(e) for e in g[c])
        dweight[c] = sum(float(g[c, i]) * xhat[i] for i in range(m))
        for i in range(m):
            dx[c, i] = weight[c] / std * (g[c, i] - dbias[c] / m - xhat[i] * dweight[c] / m)
    return dx, dweight, dbias


def relu_backward(grad: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Element by element: grad where x > 0, else 0 (a selection, as torch's
    threshold_backward: an inf gradient where x <= 0 gives 0)."""
    g, v = grad.reshape(-1), x.reshape(-1)
    dx = np.empty(g.shape, dtype=grad.dtype)
    for i in range(g.size):
        dx[i] = g[i] if v[i] > 0 else 0
    return dx.reshape(grad.shape)
