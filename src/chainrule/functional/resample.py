"""Stateless resampling kernels: interpolation along one axis, and the pixel and channel
shuffles.

Interpolation. Nearest and (bi)linear resizing are separable: each spatial axis is
resampled on its own, by a sparse (L_out, L) matrix ``A`` whose row i holds one weight 1
(nearest) or two weights that add up to 1 (linear), so that a 2-D resize is
``y = A_h @ x @ A_w.T`` and its backward ``dx = A_h.T @ g @ A_w``. An ``AxisPlan`` keeps
``A`` by its non-zeros (the source indices and weights of every output position) and is
applied by gathering, never as a dense product: O(output) work, and a NaN or inf stays
where it was instead of spreading through ``0 * inf`` along a whole row. The plans
reproduce torch's CPU kernels index for index and, for the weights, bit for bit (the
arithmetic below follows torch's own, float32 for a float32 layer):

- output length ``L_out = size`` or ``floor(L * scale_factor)``;
- ``ratio`` = ``1 / scale_factor`` when a scale factor is used for the coordinates,
  else ``L / L_out``; ``(L - 1) / (L_out - 1)`` with align_corners (0 when L_out == 1);
- linear: source ``src = ratio * (i + 0.5) - 0.5`` (one rounding: torch's compiled
  kernel fuses it into a multiply-add), negative sources clamped to 0; with align_corners
  ``src = ratio * i``. Taps ``i0 = min(floor(src), L - 1)``, ``i1 = min(i0 + 1, L - 1)``,
  weights ``w1 = clamp(src - i0, 0, 1)``, ``w0 = 1 - w1``; ``L_out == L`` copies;
- nearest: ``min(floor(i * ratio), L - 1)``;
- nearest-exact: ``min(floor(src + 0.5), L - 1)`` with src as for linear (the pixel
  centre rounded half up).

torch computes nearest indices in two ways (``kernel``), and its CPU forward picks one by
the output size, so both are here. "generic" (torch's separable kernel: every 1-D
forward, and 2-D forwards with H_out + W_out > 128) is the formula above in the layer's
precision. "indexed" (torch's per-pixel ``nearest_idx``/``nearest_exact_idx``: 2-D
forwards with H_out + W_out <= 128, and every nearest backward) works in float32 whatever
the dtype, and for "nearest" copies when L_out == L and takes ``i // 2`` when
L_out == 2 L, even when a scale factor says otherwise. Linear interpolation has one rule
in all of torch's kernels.

Every index sequence is non-decreasing in i, so the backward's scatter-add is a sum over
contiguous runs of outputs (``np.add.reduceat``), with no Python loop over pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AxisPlan:
    """How one axis of length ``size`` is resampled to ``len(index0)`` positions.

    Output i is ``x[index0[i]]`` (one tap: nearest, or a plain copy) or
    ``weight0[i] * x[index0[i]] + weight1[i] * x[index1[i]]`` (two taps: linear).
    Indices are non-decreasing int64 arrays; weights are in the layer's dtype.
    """

    size: int
    index0: np.ndarray
    index1: np.ndarray | None = None
    weight0: np.ndarray | None = None
    weight1: np.ndarray | None = None

    @property
    def out_size(self) -> int:
        return len(self.index0)

    def matrix(self, dtype: np.dtype | None = None) -> np.ndarray:
        """The dense (out_size, size) interpolation matrix A (for tests and export)."""
        dtype = np.dtype(dtype or (np.float64 if self.weight0 is None else self.weight0.dtype))
        rows = np.arange(self.out_size)
        a = np.zeros((self.out_size, self.size), dtype=dtype)
        if self.index1 is None:
            a[rows, self.index0] = 1
        else:
            np.add.at(a, (rows, self.index0), self.weight0)
            np.add.at(a, (rows, self.index1), self.weight1)
        return a

    def max_taps_per_source(self) -> int:
        """The most outputs that read one input position: the number of terms the
        backward adds for it along this axis."""
        counts = np.bincount(self.index0, minlength=self.size)
        if self.index1 is not None:
            counts = counts + np.bincount(self.index1, minlength=self.size)
        return int(counts.max())


def output_length(size: int, length: int | None, scale_factor: float | None) -> int:
    """The resized length: ``length`` when given, else ``floor(size * scale_factor)``
    (in double precision, as torch)."""
    return int(length) if length is not None else int(math.floor(size * scale_factor))


def _ratio(size: int, out: int, scale_factor: float | None, dtype: np.dtype) -> np.floating:
    """torch's source-per-output step: 1/scale_factor (computed in double, then rounded)
    when the scale factor drives the coordinates, else size/out in ``dtype``."""
    t = np.dtype(dtype).type
    if scale_factor is not None and scale_factor > 0:
        return t(1.0 / scale_factor)
    return t(size) / t(out)


def _centre_source(ratio: np.floating, out: int, dtype: np.dtype) -> np.ndarray:
    """``ratio * (i + 0.5) - 0.5`` for i in range(out), rounded once (a fused
    multiply-add, as torch's compiled kernel computes it)."""
    if np.dtype(dtype) == np.float32:
        # float64 holds the float32 product exactly, and subtracting 0.5 stays exact for
        # every non-negative result (negative ones are clamped to 0 anyway): one rounding.
        i = np.arange(out, dtype=np.float64)
        return (np.float64(ratio) * (i + 0.5) - 0.5).astype(np.float32)
    # float64: the exact value (p*(2i+1) - q) / (2q) of ratio = p/q, by Python's correctly
    # rounded integer division. A loop over the positions of one axis, not over pixels.
    p, q = float(ratio).as_integer_ratio()
    return np.array([(p * (2 * i + 1) - q) / (2 * q) for i in range(out)], dtype=np.float64)


def _floor_index(src: np.ndarray, size: int) -> np.ndarray:
    """``min(floor(src), size - 1)`` with floor taken in float32, as torch's ``floorf``
    does even for float64 sources."""
    return np.minimum(np.floor(src.astype(np.float32)).astype(np.int64), size - 1)


def linear_plan(size: int, out: int, scale_factor: float | None, align_corners: bool,
                dtype: np.dtype) -> AxisPlan:
    """Linear interpolation along one axis of length ``size`` to ``out`` positions, with
    torch's source coordinates (see the module docstring); ``scale_factor`` None means
    the coordinates come from ``size / out``."""
    dtype = np.dtype(dtype)
    t = dtype.type
    if out == size:  # torch copies (whatever the scale factor)
        return AxisPlan(size, np.arange(out))
    if align_corners:
        ratio = t(size - 1) / t(out - 1) if out > 1 else t(0)
        src = (ratio * np.arange(out, dtype=dtype)).astype(dtype)
    else:
        src = _centre_source(_ratio(size, out, scale_factor, dtype), out, dtype)
        src = np.maximum(src, t(0))
    i0 = _floor_index(src, size)
    w1 = np.clip(src - i0.astype(dtype), t(0), t(1)).astype(dtype)
    i1 = np.minimum(i0 + 1, size - 1)
    return AxisPlan(size, i0, i1, (t(1) - w1).astype(dtype), w1)


def nearest_plan(size: int, out: int, scale_factor: float | None, dtype: np.dtype,
                 kernel: str = "generic") -> AxisPlan:
    """Nearest neighbour (torch's "nearest", OpenCV's INTER_NEAREST) along one axis:
    ``min(floor(i * ratio), size - 1)``, in one of torch's two index computations (see
    the module docstring): "generic" in ``dtype``; "indexed" copies when out == size,
    takes ``i // 2`` when out == 2*size and computes the rest in float32.
    """
    i = np.arange(out)
    if kernel == "indexed":
        if out == size:
            return AxisPlan(size, i)
        if out == 2 * size:
            return AxisPlan(size, i >> 1)
        dtype = np.dtype(np.float32)
    ratio = _ratio(size, out, scale_factor, dtype)
    return AxisPlan(size, _floor_index(i.astype(dtype) * ratio, size))


def nearest_exact_plan(size: int, out: int, scale_factor: float | None, dtype: np.dtype,
                       kernel: str = "generic") -> AxisPlan:
    """torch's "nearest-exact" (Pillow's and scikit-image's nearest) along one axis: the
    input pixel whose centre is nearest to the output's centre, ``floor((i + 0.5) *
    ratio)``, at most ``size - 1``. "generic" computes ``floor(src + 0.5)`` with ``src =
    max(ratio * (i + 0.5) - 0.5, 0)`` in ``dtype``; "indexed" multiplies a float32 ratio
    by ``i + 0.5`` in double and floors the product rounded to float32."""
    dtype = np.dtype(dtype)
    t = dtype.type
    if kernel == "indexed":
        ratio = np.float64(_ratio(size, out, scale_factor, np.float32))
        src = ((np.arange(out) + 0.5) * ratio).astype(np.float32)
        return AxisPlan(size, _floor_index(src, size))
    src = np.maximum(_centre_source(_ratio(size, out, scale_factor, dtype), out, dtype), t(0))
    return AxisPlan(size, _floor_index((src + t(0.5)).astype(dtype), size))


def _axis_shape(ndim: int, axis: int) -> list[int]:
    shape = [1] * ndim
    shape[axis] = -1
    return shape


def resample_axis(x: np.ndarray, plan: AxisPlan, axis: int) -> np.ndarray:
    """Apply ``plan`` to ``axis`` of ``x``: (..., L, ...) -> (..., L_out, ...)."""
    out = np.take(x, plan.index0, axis=axis)
    if plan.index1 is None:
        return out
    shape = _axis_shape(x.ndim, axis)
    out *= plan.weight0.reshape(shape)
    out += np.take(x, plan.index1, axis=axis) * plan.weight1.reshape(shape)
    return out


def _segment_sum(values: np.ndarray, index: np.ndarray, size: int, axis: int) -> np.ndarray:
    """``out[..., k, ...] = sum of values[..., i, ...] over the i with index[i] == k``,
    ``out`` having length ``size`` along ``axis``. ``index`` is non-decreasing, so the
    positions of each k form one run: np.add.reduceat sums the runs."""
    starts = np.flatnonzero(np.diff(index, prepend=-1))   # the first position of each run
    sums = np.add.reduceat(values, starts, axis=axis)      # (..., runs, ...)
    shape = list(values.shape)
    shape[axis] = size
    out = np.zeros(shape, dtype=values.dtype)
    where = [slice(None)] * values.ndim
    where[axis] = index[starts]
    out[tuple(where)] = sums
    return out


def resample_axis_backward(grad: np.ndarray, plan: AxisPlan, axis: int) -> np.ndarray:
    """The adjoint of ``resample_axis`` (``A.T`` along ``axis``): each output's gradient
    goes back to its taps with the same weights. (..., L_out, ...) -> (..., L, ...)."""
    if plan.index1 is None:
        return _segment_sum(grad, plan.index0, plan.size, axis)
    shape = _axis_shape(grad.ndim, axis)
    dx = _segment_sum(grad * plan.weight0.reshape(shape), plan.index0, plan.size, axis)
    dx += _segment_sum(grad * plan.weight1.reshape(shape), plan.index1, plan.size, axis)
    return dx


# ---------------------------------------------------------------------- shuffles

def pixel_shuffle(x: np.ndarray, r: int) -> np.ndarray:
    """(*, C*r*r, H, W) -> (*, C, H*r, W*r), torch's order:
    ``out[..., c, h*r + i, w*r + j] = x[..., c*r*r + i*r + j, h, w]``."""
    *lead, crr, h, w = x.shape
    c = crr // (r * r)
    t = x.reshape(*lead, c, r, r, h, w)                     # (*, C, i, j, H, W)
    n = len(lead)
    t = t.transpose(*range(n), n, n + 3, n + 1, n + 4, n + 2)  # (*, C, H, i, W, j)
    return t.reshape(*lead, c, h * r, w * r)


def pixel_unshuffle(x: np.ndarray, r: int) -> np.ndarray:
    """(*, C, H*r, W*r) -> (*, C*r*r, H, W): the inverse (and so the adjoint) of
    ``pixel_shuffle``."""
    *lead, c, hr, wr = x.shape
    h, w = hr // r, wr // r
    t = x.reshape(*lead, c, h, r, w, r)                     # (*, C, H, i, W, j)
    n = len(lead)
    t = t.transpose(*range(n), n, n + 2, n + 4, n + 1, n + 3)  # (*, C, i, j, H, W)
    return t.reshape(*lead, c * r * r, h, w)


def channel_shuffle(x: np.ndarray, groups: int) -> np.ndarray:
    """(N, g*c, *) -> (N, c*g, *): channel ``k*c + j`` moves to ``j*g + k`` (torch's
    ``channel_shuffle``). ``channel_shuffle(., c)`` is its inverse."""
    n, channels = x.shape[:2]
    rest = int(np.prod(x.shape[2:]))
    t = x.reshape(n, groups, channels // groups, rest)      # (N, g, c, rest)
    return t.transpose(0, 2, 1, 3).reshape(x.shape)         # (N, c, g, rest) -> (N, C, *)
