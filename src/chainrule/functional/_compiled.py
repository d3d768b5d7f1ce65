"""Compiled twins (Numba) of NumPy kernels, chosen at run time.

Each kernel here has a NumPy reference with the same meaning beside its caller (the
caller picks one or the other) and a slow, plain-loop reference in ``tests/reference.py``
that the tests check it against. The kernels are written as the obvious loops: one pass
over the data where NumPy needs several, which is what they buy.

Run time choice: ``ENABLED`` is True when Numba imports and the environment variable
``CHAINRULE_NUMBA`` is not ``0`` (``CHAINRULE_NUMBA=0`` falls back to NumPy everywhere;
child processes inherit it). The kernels are compiled with ``nogil=True`` and no
``parallel``: they run inside ``parallel_slices``'s worker threads, so chainrule's own
threads (``CHAINRULE_NUM_THREADS``) stay the only ones, and a kernel call on one piece
never starts a second pool. ``fastmath`` stays off: results round as NumPy's do.

Compile cost: ``cache=True`` keeps the machine code next to this module (``__pycache__``)
or in ``NUMBA_CACHE_DIR``, so only a process that finds no cache compiles (measured in
BENCHMARKS.md). Where no cache directory is writable (a read-only install without
``NUMBA_CACHE_DIR``), Numba refuses ``cache=True``; the kernels are then compiled in memory
in each process instead.
"""

from __future__ import annotations

import os
import warnings

import numpy as np


def _wanted() -> bool:
    return os.environ.get("CHAINRULE_NUMBA", "1").strip() not in ("0", "false", "no", "off", "")


try:
    if not _wanted():
        raise ImportError("disabled by CHAINRULE_NUMBA")
    import numba
    from numba.core.errors import NumbaWarning
except ImportError:          # no Numba, or switched off: every caller keeps its NumPy path
    numba = None

ENABLED = numba is not None


def _jit(fn):
    """``numba.njit(cache=True, nogil=True)``; compiled in memory where no cache
    directory is writable. Without Numba the Python function itself is returned (never
    called by the library then: callers check ``ENABLED``)."""
    if numba is None:
        return fn
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", NumbaWarning)
            return numba.njit(cache=True, nogil=True, fastmath=False)(fn)
    except (RuntimeError, NumbaWarning, OSError):
        return numba.njit(cache=False, nogil=True, fastmath=False)(fn)


def memory_flat(*arrays: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """1-D views of the arrays' memory, in one shared element order, when all of them are
    dense (contiguous in some order of their axes) with the same shape and strides in
    elements; None otherwise (the caller then takes its NumPy path). Element-wise kernels
    run over these views whatever the arrays' layout (e.g. channel-major batches)."""
    first = arrays[0]
    order = sorted(range(first.ndim), key=lambda ax: (-abs(first.strides[ax]), ax))
    flats = []
    for a in arrays:
        if a.shape != first.shape:
            return None
        if tuple(s // a.itemsize for s in a.strides) != tuple(s // first.itemsize for s in first.strides):
            return None
        view = a.transpose(order)
        if not view.flags.c_contiguous:
            return None
        flats.append(view.reshape(-1))
    return tuple(flats)


# ---------------------------------------------------------------------- ReLU

@_jit
def relu_forward(x, y, positive):
    """y = max(x, 0) (NaN stays NaN, as np.maximum) and positive = x > 0, in one pass.
    x, y: (n,) float; positive: (n,) bool."""
    for i in range(x.shape[0]):
        v = x[i]
        positive[i] = v > 0
        y[i] = v - v if v < 0 else v   # v - v: +0.0 in x's own dtype


@_jit
def relu_forward_eval(x, y):
    """y = max(x, 0) only (no mask: inference keeps nothing). x, y: (n,) float."""
    for i in range(x.shape[0]):
        v = x[i]
        y[i] = v - v if v < 0 else v   # v - v: +0.0 in x's own dtype


@_jit
def relu_backward(grad, positive, dx, zero):
    """dx = grad where positive, else zero (0 in grad's dtype): a selection, as torch's
    threshold_backward, so an inf gradient where x <= 0 gives 0, not inf * 0 = NaN.
    grad, dx: (n,) float; positive: (n,) bool."""
    for i in range(grad.shape[0]):
        dx[i] = grad[i] if positive[i] else zero


# ---------------------------------------------------------------------- max pooling

@_jit
def _better(v, best):
    """A window element takes over the running max when greater, or when NaN: the first
    maximum wins ties, the last NaN wins (torch's ``val > maxval || isnan(val)``)."""
    return v > best or v != v


@_jit
def max_pool_2x2_forward(x, out, winner):
    """``max_pool_forward`` for 2x2 windows with stride 2 (the common case), the four
    elements of a window compared in row-major order. ``winner`` may be None."""
    na, nb, oh, ow = out.shape
    for a in range(na):
        for b in range(nb):
            for oy in range(oh):
                top, bottom, o = x[a, b, 2 * oy], x[a, b, 2 * oy + 1], out[a, b, oy]
                for ox in range(ow):
                    best, index = top[2 * ox], 0
                    v = top[2 * ox + 1]
                    if _better(v, best):
                        best, index = v, 1
                    v = bottom[2 * ox]
                    if _better(v, best):
                        best, index = v, 2
                    v = bottom[2 * ox + 1]
                    if _better(v, best):
                        best, index = v, 3
                    o[ox] = best
                    if winner is not None:
                        winner[a, b, oy, ox] = index


@_jit
def max_pool_2x2_backward(grad, winner, dx, zero):
    """Each output gradient written into its 2x2 window's winner, the window's other
    three elements zero: every element of ``dx[..., :2*H_out, :2*W_out]`` written once.
    grad, winner: (A, B, H_out, W_out); dx: (A, B, >= 2*H_out, >= 2*W_out), whose
    remaining rows and columns the caller zeroes; zero: 0 in grad's dtype. Exact (values are moved, not
    multiplied: an inf gradient reaches its winner and no NaN appears elsewhere)."""
    na, nb, oh, ow = grad.shape
    for a in range(na):
        for b in range(nb):
            for oy in range(oh):
                g, win = grad[a, b, oy], winner[a, b, oy]
                top, bottom = dx[a, b, 2 * oy], dx[a, b, 2 * oy + 1]
                for ox in range(ow):
                    index, v = win[ox], g[ox]
                    top[2 * ox] = v if index == 0 else zero
                    top[2 * ox + 1] = v if index == 1 else zero
                    bottom[2 * ox] = v if index == 2 else zero
                    bottom[2 * ox + 1] = v if index == 3 else zero


# ---------------------------------------------------------------------- BatchNorm
#
# Sums run in float64 over 8 interleaved accumulators (element i goes to i % 8): one
# accumulator is a chain of dependent additions, 4-5 times slower than NumPy's pairwise
# sums, and without fastmath the compiler may not reorder them itself.

@_jit
def _sum(row):
    """sum(row) in float64, row: (M,)."""
    m = row.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    end = m - m % 8
    for i in range(0, end, 8):
        s0 += row[i]
        s1 += row[i + 1]
        s2 += row[i + 2]
        s3 += row[i + 3]
        s4 += row[i + 4]
        s5 += row[i + 5]
        s6 += row[i + 6]
        s7 += row[i + 7]
    for i in range(end, m):
        s0 += row[i]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@_jit
def _center(row, mu, cen):
    """cen = row - mu; returns sum(cen ** 2) in float64. row, cen: (M,)."""
    m = row.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    end = m - m % 8
    for i in range(0, end, 8):
        for k in range(8):
            cen[i + k] = row[i + k] - mu
        s0 += np.float64(cen[i]) * cen[i]
        s1 += np.float64(cen[i + 1]) * cen[i + 1]
        s2 += np.float64(cen[i + 2]) * cen[i + 2]
        s3 += np.float64(cen[i + 3]) * cen[i + 3]
        s4 += np.float64(cen[i + 4]) * cen[i + 4]
        s5 += np.float64(cen[i + 5]) * cen[i + 5]
        s6 += np.float64(cen[i + 6]) * cen[i + 6]
        s7 += np.float64(cen[i + 7]) * cen[i + 7]
    for i in range(end, m):
        cen[i] = row[i] - mu
        s0 += np.float64(cen[i]) * cen[i]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@_jit
def _sums_with(g, cen):
    """(sum(g), sum(g * cen)) in float64. g, cen: (M,)."""
    m = g.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    t0 = t1 = t2 = t3 = 0.0
    end = m - m % 4
    for i in range(0, end, 4):
        s0 += g[i]
        s1 += g[i + 1]
        s2 += g[i + 2]
        s3 += g[i + 3]
        t0 += np.float64(g[i]) * cen[i]
        t1 += np.float64(g[i + 1]) * cen[i + 1]
        t2 += np.float64(g[i + 2]) * cen[i + 2]
        t3 += np.float64(g[i + 3]) * cen[i + 3]
    for i in range(end, m):
        s0 += g[i]
        t0 += np.float64(g[i]) * cen[i]
    return (s0 + s1) + (s2 + s3), (t0 + t1) + (t2 + t3)


@_jit
def batch_norm_forward(v, centered, out, mean, var, inv_std, weight, bias, eps):
    """Training forward of BatchNorm over the rows of a (C, M) matrix, three passes per
    row (NumPy's path takes six): the mean; ``centered = v - mean`` and the biased
    variance; ``out = centered * (inv_std * weight) + bias``. Sums in float64.
    v, centered, out: (C, M); mean, var, inv_std (written), weight, bias: (C,).
    """
    rows, m = v.shape
    for c in range(rows):
        row, cen, o = v[c], centered[c], out[c]
        mean[c] = _sum(row) / m
        var[c] = _center(row, mean[c], cen) / m
        inv_std[c] = 1.0 / np.sqrt(var[c] + eps)
        scale = inv_std[c] * weight[c]
        shift = bias[c]
        for i in range(m):
            o[i] = cen[i] * scale + shift


@_jit
def batch_norm_backward(g, centered, dx, a, inv_std, sum_g, sum_gc, n, batch_stats):
    """Backward of BatchNorm over the rows of (C, M) matrices, two passes per row:
    ``sum_g = sum(g)``, ``sum_gc = sum(g * centered)`` (float64 sums), then
    ``dx = a * (g - sum(g)/n - x̂ * sum(g x̂)/n)`` (batch statistics) or ``dx = a * g``.
    g, centered, dx: (C, M); a = weight * inv_std, inv_std: (C,); sum_g, sum_gc: (C,)
    written."""
    rows, m = g.shape
    for c in range(rows):
        gr, cen, d = g[c], centered[c], dx[c]
        sum_g[c], sum_gc[c] = _sums_with(gr, cen)
        ac = a[c]
        if batch_stats:
            factor = -ac * inv_std[c] * inv_std[c] * sum_gc[c] / n
            shift = -ac * sum_g[c] / n
            for i in range(m):
                d[i] = gr[i] * ac + cen[i] * factor + shift
        else:
            for i in range(m):
                d[i] = gr[i] * ac


# ---------------------------------------------------------------------- Winograd F(2x2, 3x3)
#
# The four transforms of ``functional.winograd`` (see its docstring for the matrices and
# the layout: tile p = (image, ty, tx) row-major, th = ceil(H_out / 2) by tw = ceil(W_out
# / 2) tiles per image). Written with plain indexing and no array views inside the
# loops: a view made per row of tiles cost more than the arithmetic (measured 3-8x
# slower for the input transform on 8x8-32x32 images).

@_jit
def _bt_rows(a, b, c, d):
    """(a - c, b + c, c - b, b - d): B^T applied to four values (a column or a row)."""
    return a - c, b + c, c - b, b - d


@_jit
def _b_rows(a, b, c, d):
    """(a, b - c + d, c + b - a, -d): B applied to four values, the adjoint of ``_bt_rows``."""
    return a, b - c + d, -a + b + c, -d


@_jit
def winograd_input_transform(xp, v):
    """V = B^T d B for every 4x4 input block. xp: (C, n, Hp, Wp); v: (16, C, n*th*tw),
    written, th = (Hp - 1) // 2, tw = (Wp - 1) // 2. Rows and columns past the input
    (odd output sizes) read as zeros.

    Per image, the row step (B^T d) runs for all rows of tiles into ``even`` and ``odd``
    (the even and odd columns apart, so the column step reads neighbours at unit
    stride); the column step (. B) then writes each of the 16 rows of V."""
    c_in, n, hp, wp = xp.shape
    th, tw = (hp - 1) // 2, (wp - 1) // 2
    half = wp // 2
    even = np.zeros((4, th, tw + 1), dtype=xp.dtype)   # column tw: zeros (odd W_out)
    odd = np.zeros((4, th, tw + 1), dtype=xp.dtype)
    for c in range(c_in):
        for b in range(n):
            for ty in range(th):
                y = 2 * ty
                last = y + 3 < hp                     # else the fourth row is zeros
                for t in range(half):
                    x = 2 * t
                    for col in range(2):
                        d0, d1, d2 = xp[c, b, y, x + col], xp[c, b, y + 1, x + col], xp[c, b, y + 2, x + col]
                        r0, r1, r2 = d0 - d2, d1 + d2, d2 - d1
                        r3 = d1 - xp[c, b, y + 3, x + col] if last else d1
                        if col == 0:
                            even[0, ty, t], even[1, ty, t], even[2, ty, t], even[3, ty, t] = r0, r1, r2, r3
                        else:
                            odd[0, ty, t], odd[1, ty, t], odd[2, ty, t], odd[3, ty, t] = r0, r1, r2, r3
                if wp % 2:                            # the last column pair has one column
                    x = wp - 1
                    d0, d1, d2 = xp[c, b, y, x], xp[c, b, y + 1, x], xp[c, b, y + 2, x]
                    even[0, ty, half], even[1, ty, half], even[2, ty, half] = d0 - d2, d1 + d2, d2 - d1
                    even[3, ty, half] = d1 - xp[c, b, y + 3, x] if last else d1
            p0 = b * th * tw
            for i in range(4):
                for ty in range(th):
                    q = p0 + ty * tw
                    for t in range(tw):
                        v0, v1, v2, v3 = _bt_rows(even[i, ty, t], odd[i, ty, t],
                                                  even[i, ty, t + 1], odd[i, ty, t + 1])
                        v[4 * i, c, q + t] = v0
                        v[4 * i + 1, c, q + t] = v1
                        v[4 * i + 2, c, q + t] = v2
                        v[4 * i + 3, c, q + t] = v3


@_jit
def winograd_output_transform(m, bias, out):
    """Y = A^T M A (+ bias) for every tile. m: (16, K, n*th*tw); bias: (K,) or None;
    out: (K, n, H_out, W_out), written.

    Per image: M A row by row of the 4x4 blocks (four of M's rows at a time: reading all
    16, whose starts lie a multiple of 4 KiB apart, was 3x slower), into ``half``; then
    A^T (M A) into a (2*th, 2*tw) buffer, copied to ``out`` with the bias (an odd size
    drops the last row or column)."""
    k_out, n, oh, ow = out.shape
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    per_image = th * tw
    half = np.empty((4, 2, per_image), dtype=out.dtype)          # M A: 4 rows, 2 columns
    img = np.empty((2 * th, 2 * tw), dtype=out.dtype)
    for k in range(k_out):
        for b in range(n):
            q0 = b * per_image
            for i in range(4):           # (m0, m1, m2, m3) A = (m0 + m1 + m2, m1 - m2 - m3)
                for t in range(per_image):
                    q = q0 + t
                    m1, m2 = m[4 * i + 1, k, q], m[4 * i + 2, k, q]
                    half[i, 0, t] = m[4 * i, k, q] + m1 + m2
                    half[i, 1, t] = m1 - m2 - m[4 * i + 3, k, q]
            for ty in range(th):
                y = 2 * ty
                for tx in range(tw):
                    t, x = ty * tw + tx, 2 * tx
                    for j in range(2):   # A^T: rows h0 + h1 + h2 and h1 - h2 - h3
                        h1, h2 = half[1, j, t], half[2, j, t]
                        img[y, x + j] = half[0, j, t] + h1 + h2
                        img[y + 1, x + j] = h1 - h2 - half[3, j, t]
            if bias is not None:
                for y in range(oh):
                    for x in range(ow):
                        out[k, b, y, x] = img[y, x] + bias[k]
            else:
                for y in range(oh):
                    for x in range(ow):
                        out[k, b, y, x] = img[y, x]


@_jit
def winograd_grad_transform(grad, dm):
    """dM = A dY A^T for every 2x2 tile of the output gradient (the adjoint of the
    output transform; outputs past an odd size count as zero). grad: (K, n, H_out,
    W_out); dm: (16, K, n*th*tw), written. Each image is copied into a zero-padded
    (2*th, 2*tw) buffer first; dM is then written four rows at a time (all 16 at once,
    a multiple of 4 KiB apart, was 3-7x slower)."""
    k_out, n, oh, ow = grad.shape
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    img = np.zeros((2 * th, 2 * tw), dtype=grad.dtype)   # the padding stays zero
    for k in range(k_out):
        for b in range(n):
            for y in range(oh):
                for x in range(ow):
                    img[y, x] = grad[k, b, y, x]
            for i in range(4):           # row i of A dY: a, a + c, a - c, -c
                for ty in range(th):
                    q0 = (b * th + ty) * tw
                    y = 2 * ty
                    for tx in range(tw):
                        q, x = q0 + tx, 2 * tx
                        a0, a1, c0, c1 = img[y, x], img[y, x + 1], img[y + 1, x], img[y + 1, x + 1]
                        if i == 0:
                            e0, e1 = a0, a1
                        elif i == 1:
                            e0, e1 = a0 + c0, a1 + c1
                        elif i == 2:
                            e0, e1 = a0 - c0, a1 - c1
                        else:
                            e0, e1 = -c0, -c1
                        # the row times A^T: (e0, e0 + e1, e0 - e1, -e1)
                        dm[4 * i, k, q] = e0
                        dm[4 * i + 1, k, q] = e0 + e1
                        dm[4 * i + 2, k, q] = e0 - e1
                        dm[4 * i + 3, k, q] = -e1


@_jit
def winograd_input_grad_transform(dv, th, tw, top, left, dx):
    """dx = sum over tiles of B dV B^T (the adjoint of the input transform: the 4x4
    blocks overlap by two rows and columns), cropped to the unpadded input.
    dv: (16, C, n*th*tw); dx: (C, n, H, W), written; ``top``, ``left``: the padding
    before the input (padded row y is dx row y - top).

    Per image: dV B^T row by row (four of dV's rows at a time, as in the output
    transform) into ``rows``; then B (dV B^T) per block, added into a padded image."""
    c_in, n, h, w = dx.shape
    per_image = th * tw
    rows = np.empty((4, 4, per_image), dtype=dx.dtype)
    acc = np.empty((2 * th + 2, 2 * tw + 2), dtype=dx.dtype)
    for c in range(c_in):
        for b in range(n):
            q0 = b * per_image
            for i in range(4):
                for t in range(per_image):
                    q = q0 + t
                    rows[i, 0, t], rows[i, 1, t], rows[i, 2, t], rows[i, 3, t] = _b_rows(
                        dv[4 * i, c, q], dv[4 * i + 1, c, q], dv[4 * i + 2, c, q], dv[4 * i + 3, c, q])
            acc[:] = 0
            for ty in range(th):
                y = 2 * ty
                for tx in range(tw):
                    t, x = ty * tw + tx, 2 * tx
                    for j in range(4):
                        f0, f1, f2, f3 = _b_rows(rows[0, j, t], rows[1, j, t], rows[2, j, t],
                                                 rows[3, j, t])
                        acc[y, x + j] += f0
                        acc[y + 1, x + j] += f1
                        acc[y + 2, x + j] += f2
                        acc[y + 3, x + j] += f3
            for y in range(h):
                for x in range(w):
                    dx[c, b, y, x] = acc[top + y, left + x]
