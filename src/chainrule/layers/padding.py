"""Padding layers: ZeroPad2d, ConstantPad2d, ReflectionPad2d, ReplicationPad2d.

Each pads the last two axes of an (N, C, H, W) or (C, H, W) input by
``padding = (left, right, top, bottom)`` (an int pads all four sides alike), as
``torch.nn``'s layers of the same names do. A negative amount crops that side instead.

Output size: ``H_out = H + top + bottom``, ``W_out = W + left + right``.

Reflection and replication are gathers: output position ``j`` of an axis reads input
position ``src(j - before)``, with ``src(p) = |p|`` reflected once more past the far end
(``2*(size - 1) - p``) for reflection, and ``clip(p, 0, size - 1)`` for replication. A
negative amount crops the padded result, as torch does. The backward is that gather's
adjoint, one axis at a time (width, then height): the middle of dL/dy goes back in place
and each border's gradient is added onto the rows/columns it copied, flipped for
reflection, summed into the edge for replication. A corner of the output copied one
input pixel through both axes, so its gradient reaches that pixel through both steps.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from ._args import finite_real
from ._movement import MovementLayer

Padding4 = tuple[int, int, int, int]


def _padding4(padding: Any, layer: str) -> Padding4:
    """An int, or a tuple/list of four ints (left, right, top, bottom), as a 4-tuple."""
    def as_int(v: Any) -> int | None:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            return None
        return operator.index(v)

    single = as_int(padding)
    if single is not None:
        return (single,) * 4
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        values = [as_int(v) for v in padding]
        if all(v is not None for v in values):
            return tuple(values)  # type: ignore[return-value]
    raise TypeError(f"{layer}: padding must be an int or a tuple of four ints (left, right, top, "
                    f"bottom), got {padding!r}")


def _span(cut_before: int, cut_after: int, size: int) -> slice:
    """The part of an axis of length ``size`` left when ``cut_before`` elements are cut at
    its start and ``cut_after`` at its end (negative amounts cut nothing)."""
    return slice(max(cut_before, 0), size - max(cut_after, 0))


def _source_index(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """For each output position of an axis padded by ``before``/``after``, the input
    position it copies: reflection (without repeating the edge) or replication."""
    p = np.arange(-before, size + after)                        # input coordinates, (size_out,)
    if mode == "reflect":
        p = np.abs(p)
        return np.where(p >= size, 2 * (size - 1) - p, p)
    return np.clip(p, 0, size - 1)


def _along(axis: int, index: Any) -> tuple:
    """An indexing tuple that applies ``index`` to ``axis`` (-1 or -2) of an array."""
    return (Ellipsis, index) if axis == -1 else (Ellipsis, index, slice(None))


def _fold(grad: np.ndarray, axis: int, size: int, before: int, after: int, mode: str) -> np.ndarray:
    """Adjoint of the gather ``_source_index`` along ``axis``: every output position's
    gradient is added onto the input position it copied. Vectorized over each border
    (a slice as wide as the padding), never a loop over positions.

    grad: (..., size + before + after) along ``axis``; returns (..., size) along ``axis``.
    """
    length = grad.shape[axis]
    shape = list(grad.shape)
    shape[axis] = size
    dx = np.zeros(shape, dtype=grad.dtype)
    # The middle: output positions that are input positions themselves.
    lo, hi = max(0, -before), min(size, size + after)
    if hi > lo:
        dx[_along(axis, slice(lo, hi))] = grad[_along(axis, slice(lo + before, hi + before))]
    # Border before the input: outputs j < before (p = j - before < 0); a crop at the other
    # end may have cut part of it.
    n_before = min(max(before, 0), length)
    if n_before:
        border = grad[_along(axis, slice(0, n_before))]
        if mode == "reflect":      # j -> before - j: the border lands flipped on 1..before
            dx[_along(axis, slice(before - n_before + 1, before + 1))] += np.flip(border, axis)
        else:                      # every j copied the first position
            dx[_along(axis, slice(0, 1))] += border.sum(axis, keepdims=True)
    # Border after the input: outputs j >= before + size (p >= size).
    start = max(before + size, 0)
    if start < length:
        border = grad[_along(axis, slice(start, length))]
        if mode == "reflect":      # p -> 2*(size - 1) - p, flipped onto size-1-after..
            first = 2 * (size - 1) - (start - before)       # source of j = start
            last = size - 1 - after                         # source of j = length - 1
            dx[_along(axis, slice(last, first + 1))] += np.flip(border, axis)
        else:                      # every j copied the last position
            dx[_along(axis, slice(size - 1, size))] += border.sum(axis, keepdims=True)
    return dx


class _Pad2d(MovementLayer):
    """Shared argument handling and input checks of the 2-D padding layers; each writes
    ``_move`` (pad) and ``_move_back`` (its adjoint, the unpad of the gradient)."""

    def __init__(self, padding: Any) -> None:
        super().__init__()
        self.padding: Padding4 = _padding4(padding, f"{type(self).__name__}(padding={padding!r})")

    def extra_repr(self) -> str:
        return f"{self.padding}"

    def _out_hw(self, x: np.ndarray) -> tuple[int, int]:
        self._check_ndim(x, (3, 4), "(N, C, H, W) or (C, H, W)")
        left, right, top, bottom = self.padding
        h, w = x.shape[-2:]
        return h + top + bottom, w + left + right


class ConstantPad2d(_Pad2d):
    """Pad the last two axes with a constant ``value``; negative padding crops.

    Args:
        padding: int, or (left, right, top, bottom); negative amounts crop that side (the
            crop may not remove more than the input has).
        value: the fill value (a finite number), cast to the input's dtype.

    Shape:
        (N, C, H, W) -> (N, C, H + top + bottom, W + left + right); (C, H, W) likewise.

    Backward:
        ``dL/dx = dL/dy[..., top:top + H, left:left + W]``, the middle of dL/dy; the filled
        border does not depend on x. Cropped input elements get a zero gradient.
    """

    def __init__(self, padding: Any, value: float) -> None:
        super().__init__(padding)
        # Finite: a checkpoint's JSON description could not hold inf or NaN.
        finite_real(value, "value", type(self).__name__, "a number")
        # an int stays an int, so that the repr reads like torch's (value=2)
        self.value: float = value if isinstance(value, (int, float)) else float(value)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, value={self.value}"

    def _move(self, x: np.ndarray) -> np.ndarray:
        out_h, out_w = self._out_hw(x)
        left, right, top, bottom = self.padding
        h, w = x.shape[-2:]
        if h + min(top, 0) + min(bottom, 0) < 0 or w + min(left, 0) + min(right, 0) < 0:
            raise ValueError(f"{self!r}: the negative padding crops more than the input has, for "
                             f"input of shape {x.shape}")
        out = np.full((*x.shape[:-2], out_h, out_w), self.value, dtype=x.dtype)
        out[..., _span(top, bottom, out_h), _span(left, right, out_w)] = \
            x[..., _span(-top, -bottom, h), _span(-left, -right, w)]
        return out

    def _move_back(self, grad: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        left, right, top, bottom = self.padding
        (h, w), (out_h, out_w) = x_shape[-2:], grad.shape[-2:]
        dx = np.zeros(x_shape, dtype=grad.dtype)
        dx[..., _span(-top, -bottom, h), _span(-left, -right, w)] = \
            grad[..., _span(top, bottom, out_h), _span(left, right, out_w)]
        return dx


class ZeroPad2d(ConstantPad2d):
    """Pad the last two axes with zeros; negative padding crops.

    Args:
        padding: int, or (left, right, top, bottom); negative amounts crop that side.

    Shape:
        (N, C, H, W) -> (N, C, H + top + bottom, W + left + right); (C, H, W) likewise.

    Backward:
        ``dL/dx = dL/dy[..., top:top + H, left:left + W]`` (cropped elements get 0).
    """

    def __init__(self, padding: Any) -> None:
        super().__init__(padding, 0.0)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class _GatherPad2d(_Pad2d):
    """Reflection and replication: a gather of input positions per axis (module doc)."""

    mode = ""

    def _check_input(self, x: np.ndarray) -> tuple[int, int]:
        out_h, out_w = self._out_hw(x)
        dims = x.shape[1:] if x.ndim == 4 else x.shape
        if 0 in dims:
            raise ValueError(f"{self!r}: expected an input with non-empty channel and spatial axes "
                             f"(only the batch may be empty), got shape {x.shape}")
        # torch's rule: an output with no rows and no columns is refused; one of them is not.
        if out_h < 0 or out_w < 0 or out_h == out_w == 0:
            raise ValueError(f"{self!r}: the negative padding crops more than the padded input "
                             f"has (output size {(out_h, out_w)}), for input of shape {x.shape}")
        return out_h, out_w

    def _move(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x)
        left, right, top, bottom = self.padding
        h, w = x.shape[-2:]
        rows = _source_index(h, top, bottom, self.mode)             # (H_out,)
        cols = _source_index(w, left, right, self.mode)             # (W_out,)
        return x[..., rows[:, None], cols[None, :]]                 # (..., H_out, W_out)

    def _move_back(self, grad: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        left, right, top, bottom = self.padding
        h, w = x_shape[-2:]
        rows_out = _fold(grad, -1, w, left, right, self.mode)       # (..., H_out, W)
        return _fold(rows_out, -2, h, top, bottom, self.mode)       # (..., H, W)


class ReflectionPad2d(_GatherPad2d):
    """Pad the last two axes with the reflection of the input at its edges (the edge
    itself is not repeated: ``[a b c]`` padded by 2 on the left reads ``c b a b c``).

    Args:
        padding: int, or (left, right, top, bottom); each must be smaller than the input
            size of its axis (checked on the input); negative amounts crop that side of the
            padded result.

    Shape:
        (N, C, H, W) -> (N, C, H + top + bottom, W + left + right); (C, H, W) likewise; channels
        and spatial axes must be non-empty.

    Backward:
        ``dL/dx`` = the middle of dL/dy, plus each border's gradient, flipped, added onto the
        rows/columns it mirrored (columns first, then rows, so a corner's gradient reaches the
        pixel it copied through both axes).
    """

    mode = "reflect"

    def _check_input(self, x: np.ndarray) -> tuple[int, int]:
        out_hw = super()._check_input(x)
        left, right, top, bottom = self.padding
        h, w = x.shape[-2:]
        for (before, after), size, axis in (((left, right), w, "width"),
                                            ((top, bottom), h, "height")):
            if before >= size or after >= size:
                raise ValueError(f"{self!r}: padding ({before}, {after}) must be smaller than the "
                                 f"input {axis} {size} (a reflection reaches at most size - 1 "
                                 f"elements), got input of shape {x.shape}")
        return out_hw


class ReplicationPad2d(_GatherPad2d):
    """Pad the last two axes by repeating the input's edge rows and columns.

    Args:
        padding: int, or (left, right, top, bottom); negative amounts crop that side of the
            padded result.

    Shape:
        (N, C, H, W) -> (N, C, H + top + bottom, W + left + right); (C, H, W) likewise; channels
        and spatial axes must be non-empty.

    Backward:
        ``dL/dx`` = the middle of dL/dy, plus the sum of each border's gradient added onto the
        edge row/column it repeated (a corner block's sum lands on the corner pixel).
    """

    mode = "replicate"
