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
