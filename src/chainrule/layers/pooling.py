"""Pooling layers: MaxPool1d, MaxPool2d, AvgPool1d, AvgPool2d, AdaptiveMaxPool2d,
AdaptiveAvgPool2d.

The windowed pools share one set of 2-D kernels (``chainrule.functional.pooling``); a 1-D
pool runs them on its (N, C, L) input seen as (N, C, 1, L), with a window one row high.

``return_indices``: torch's max pools can return the argmax indices as a second output.
chainrule layers return one array, so ``return_indices=True`` is refused with a
ValueError (the argument exists so that torch's signatures carry over unchanged).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from ._args import to_pair, to_single
from .base import Layer

Pair = tuple[int, int]


def _refuse_return_indices(return_indices: Any, layer: str) -> None:
    if return_indices:
        raise ValueError(f"{layer}: return_indices=True is not supported: chainrule layers "
                         "return one array (the pooled values), not torch's (values, indices) "
                         "pair; use return_indices=False")


class _WindowPool(Layer):
    """Shared by the windowed pools: the arguments, the output-size rule (ceil_mode
    included), the overhang padding of ceil_mode, and the 2-D view of 1-D inputs.

    A 2-D pool keeps each size as an (h, w) pair; a 1-D pool (``_spatial_dims = 1``)
    keeps ints and runs the 2-D kernels with windows one row high (``_pairs``)."""

    _spatial_dims = 2

    def __init__(self, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
                 ceil_mode: bool) -> None:
        super().__init__()
        name = f"{type(self).__name__}(kernel_size={kernel_size!r})"
        size = to_pair if self._spatial_dims == 2 else to_single
        self.kernel_size = size(kernel_size, "kernel_size", name, 1)
        self.stride = self.kernel_size if stride is None else size(stride, "stride", name, 1)
        self.padding = size(padding, "padding", name, 0)
        self.dilation = size(dilation, "dilation", name, 1)
        self.ceil_mode = bool(ceil_mode)
        kernel, _, pads, _ = self._pairs()
        for k, p in zip(kernel, pads):
            # torch's rule: a window must always hold at least one real element.
            if p > k // 2:
                raise ValueError(f"{name}: padding should be at most half the kernel size, got "
                                 f"padding={padding!r} for kernel_size={kernel_size!r}")

    def _pairs(self) -> tuple[Pair, Pair, Pair, Pair]:
        """(kernel, stride, padding, dilation) as the 2-D kernels take them."""
        if self._spatial_dims == 2:
            return self.kernel_size, self.stride, self.padding, self.dilation
        return ((1, self.kernel_size), (1, self.stride), (0, self.padding), (1, self.dilation))

    def extra_repr(self) -> str:
        text = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        if self._pairs()[3] != (1, 1):
            text += f", dilation={self.dilation}"
        if self.ceil_mode:
            text += ", ceil_mode=True"
        return text

    def _planes(self, x: np.ndarray) -> np.ndarray:
        """Check the input's ndim; return it as (..., H, W) planes."""
        if self._spatial_dims == 2:
            self._check_ndim(x, (3, 4), "(N, C, H, W) or (C, H, W)")
            return x
        self._check_ndim(x, (2, 3), "(N, C, L) or (C, L)")
        return x[..., None, :]                                   # (..., 1, L)

    def _as_planes(self, a: np.ndarray) -> np.ndarray:
        return a if self._spatial_dims == 2 else a[..., None, :]

    def _from_planes(self, a: np.ndarray) -> np.ndarray:
        return a if self._spatial_dims == 2 else a[..., 0, :]

    def _geometry(self, x: np.ndarray, planes: np.ndarray) -> tuple[Pair, Pair]:
        """(H_out, W_out) and the (bottom, right) overhang padding ceil_mode needs."""
        kernel, stride, padding, dilation = self._pairs()
        out, extra = [], []
        for size, k, s, p, d in zip(planes.shape[-2:], kernel, stride, padding, dilation):
            n = F.pool_output_size(size, k, s, p, d, self.ceil_mode)
            out.append(n)
            extra.append(F.pool_overhang(size, k, s, p, d, n) if n >= 1 else 0)
        if min(out) < 1:
            padded = tuple(size + 2 * p for size, p in zip(planes.shape[-2:], padding))
            if self._spatial_dims == 1:
                padded = padded[1]
            raise ValueError(f"{self!r}: the window does not fit the padded input {padded} for "
                             f"input of shape {x.shape}")
        return (out[0], out[1]), (extra[0], extra[1])

    def _crop(self, dxp: np.ndarray, hw: tuple[int, ...]) -> np.ndarray:
        _, _, (ph, pw), _ = self._pairs()
        return dxp[..., ph:ph + hw[0], pw:pw + hw[1]]


class _MaxPool(_WindowPool):
    """Forward and backward of the windowed max pools (see MaxPool2d)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        planes = self._planes(x)
        out_hw, extra = self._geometry(x, planes)
        kernel, stride, padding, dilation = self._pairs()
        # -inf padding, and ceil_mode's overhang padded alike: a window clipped to the
        # input has the same max as the window over -inf padding.
        xp = F.pad_spatial(planes, padding, -np.inf, extra)
        out, winner = F.max_pool_forward(xp, kernel, stride, dilation, out_hw,
                                         with_winner=self.keeps_cache)
        out = self._from_planes(out)
        if self.keeps_cache:
            self._cache = (winner, planes.shape[-2:], xp.shape[-2:], out.shape, out.dtype)
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        winner, hw, padded_hw, out_shape, dtype = self._take_cache()
        grad = self._check_grad(grad, out_shape, dtype)
        kernel, stride, _, dilation = self._pairs()
        dxp = F.max_pool_backward(self._as_planes(grad), winner, kernel, stride, dilation,
                                  padded_hw)
        return self._from_planes(self._crop(dxp, hw))


class MaxPool2d(_MaxPool):
    """Max over sliding windows, channel by channel.

    Args:
        kernel_size: int or (kh, kw).
        stride: int or pair; defaults to kernel_size.
        padding: implicit -inf padding on both sides, at most half the kernel.
        dilation: spacing of window elements.
        return_indices: must be False (chainrule layers return one array; see the module
            docstring).
        ceil_mode: round the number of windows up instead of down (see below).

    Shape:
        (N, C, H, W) or (C, H, W) -> (N, C, H_out, W_out) or (C, H_out, W_out),
        ``H_out = (H + 2*padding - dilation*(kh - 1) - 1) // stride + 1``. With ``ceil_mode``
        the quotient is rounded up, less one if the last window would then start at or past
        ``H + padding``; a last window that hangs past the padded input takes the max of what it
        covers. W_out alike.

    Backward:
        Each output's gradient goes to the one input element that won its window's max; with
        tied maxima that is the first in row-major window order (as in PyTorch), with NaNs the
        window's last NaN. Overlapping windows add their contributions.
    """

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 dilation: Any = 1, return_indices: bool = False, ceil_mode: bool = False) -> None:
        _refuse_return_indices(return_indices, f"MaxPool2d(kernel_size={kernel_size!r})")
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)


class MaxPool1d(_MaxPool):
    """Max over sliding windows along the last axis, channel by channel.

    Args:
        kernel_size: int (or a tuple of one int).
        stride: defaults to kernel_size.
        padding: implicit -inf padding on both ends, at most half the kernel.
        dilation: spacing of window elements.
        return_indices: must be False (see the module docstring).
        ceil_mode: round the number of windows up (as MaxPool2d).

    Shape:
        (N, C, L) or (C, L) -> (N, C, L_out) or (C, L_out),
        ``L_out = (L + 2*padding - dilation*(kernel_size - 1) - 1) // stride + 1``, or with
        ``ceil_mode`` rounded up, less one if the last window would start at or past
        ``L + padding``.

    Backward:
        Each output's gradient goes to its window's max, the first one on ties (as in PyTorch);
        overlapping windows add. Runs MaxPool2d's kernels on (N, C, 1, L).
    """

    _spatial_dims = 1

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 dilation: Any = 1, return_indices: bool = False, ceil_mode: bool = False) -> None:
        _refuse_return_indices(return_indices, f"MaxPool1d(kernel_size={kernel_size!r})")
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)


class _AvgPool(_WindowPool):
    """Forward and backward of the windowed average pools (see AvgPool2d)."""

    count_include_pad: bool
    divisor_override: int | None = None

    def _divisor(self, hw: tuple[int, ...], out_hw: Pair, extra: Pair, dtype: np.dtype):
        """The scalar or the (H_out, W_out) array each window's sum is divided by."""
        if self.divisor_override is not None:
            return float(self.divisor_override)
        kernel, stride, padding, _ = self._pairs()
        if extra == (0, 0) and (self.count_include_pad or padding == (0, 0)):
            return float(kernel[0] * kernel[1])          # every window counts kh * kw
        counts = [F.avg_pool_window_sizes(size, k, s, p, n)[0 if self.count_include_pad else 1]
                  for size, k, s, p, n in zip(hw, kernel, stride, padding, out_hw)]
        return np.outer(counts[0], counts[1]).astype(dtype)   # (H_out, W_out)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        planes = self._planes(x)
        out_hw, extra = self._geometry(x, planes)
        kernel, stride, padding, _ = self._pairs()
        divisor = self._divisor(planes.shape[-2:], out_hw, extra, x.dtype)
        xp = F.pad_spatial(planes, padding, 0.0, extra)
        out = self._from_planes(F.avg_pool_forward(xp, kernel, stride, out_hw, divisor))
        if self.keeps_cache:
            self._cache = (divisor, planes.shape[-2:], xp.shape[-2:], out.shape, out.dtype)
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        divisor, hw, padded_hw, out_shape, dtype = self._take_cache()
        grad = self._check_grad(grad, out_shape, dtype)
        kernel, stride, _, _ = self._pairs()
        dxp = F.avg_pool_backward(self._as_planes(grad), kernel, stride, padded_hw, divisor)
        return self._from_planes(self._crop(dxp, hw))


class AvgPool2d(_AvgPool):
    """Mean over sliding windows, channel by channel.

    Args:
        kernel_size: int or (kh, kw).
        stride: int or pair; defaults to kernel_size.
        padding: zeros on both sides, at most half the kernel.
        ceil_mode: round the number of windows up instead of down (output size as
            MaxPool2d's, without dilation).
        count_include_pad: divide by the window size counting the padding (True, torch's
            default) or by the number of real, non-padding elements in each window (False).
        divisor_override: an int > 0 that replaces the divisor of every window.

    Shape:
        (N, C, H, W) or (C, H, W) -> (N, C, H_out, W_out) or (C, H_out, W_out),
        ``H_out = (H + 2*padding - kh) // stride + 1`` (ceil_mode: see MaxPool2d).

    Divisor of a window, as torch's CPU kernel: ``divisor_override`` if given; else with
    count_include_pad the window's size clipped at ``H + padding`` (padding counts, the
    part of a ceil_mode window past the padding does not), kh*kw for every window
    without ceil_mode; else the number of real elements it covers.

    Backward:
        Each output's gradient is spread over its window's real elements, ``dx += g / divisor``.
    """

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None) -> None:
        super().__init__(kernel_size, stride, padding, 1, ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        if divisor_override is not None:
            name = f"AvgPool2d(kernel_size={kernel_size!r})"
            if isinstance(divisor_override, bool) or not isinstance(divisor_override,
                                                                    (int, np.integer)):
                raise TypeError(f"{name}: divisor_override must be None or a positive int, got "
                                f"{divisor_override!r}")
            if divisor_override < 1:
                raise ValueError(f"{name}: divisor_override must be a positive int (torch refuses "
                                 f"a zero divisor too), got {divisor_override!r}")
            divisor_override = int(divisor_override)
        self.divisor_override = divisor_override

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if not self.count_include_pad:
            text += ", count_include_pad=False"
        if self.divisor_override is not None:
            text += f", divisor_override={self.divisor_override}"
        return text


class AvgPool1d(_AvgPool):
    """Mean over sliding windows along the last axis, channel by channel.

    Args:
        kernel_size: int (or a tuple of one int).
        stride: defaults to kernel_size.
        padding: zeros on both ends, at most half the kernel.
        ceil_mode: round the number of windows up (as MaxPool1d).
        count_include_pad: divide by the window size counting the padding (True) or by
            its real elements (False), as AvgPool2d.

    Shape:
        (N, C, L) or (C, L) -> (N, C, L_out) or (C, L_out),
        ``L_out = (L + 2*padding - kernel_size) // stride + 1`` (ceil_mode: see MaxPool1d).

    Backward:
        ``dx += g / divisor`` over each window's real elements, with AvgPool2d's divisors. Runs
        AvgPool2d's kernels on (N, C, 1, L).
    """

    _spatial_dims = 1

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True) -> None:
        super().__init__(kernel_size, stride, padding, 1, ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", count_include_pad=False" if not self.count_include_pad else "")


def _adaptive_size(value: Any, layer: str) -> tuple[int | None, int | None]:
    """torch's output_size: an int, or a pair of ints and Nones (None keeps that axis's
    input size). A bare None is refused (torch takes it, then fails in forward)."""
    if isinstance(value, (tuple, list)) and len(value) == 2 and None in value:
        return tuple(None if v is None else to_pair(v, "output_size", layer, 1)[0]
                     for v in value)                      # type: ignore[return-value]
    if value is None:
        raise TypeError(f"{layer}: output_size must be an int or a pair of ints (None entries "
                        "keep the input's size on that axis), got None")
    return to_pair(value, "output_size", layer, 1)


class _AdaptivePool(Layer):
    """output_size handling of the adaptive pools."""

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        self.output_size = _adaptive_size(output_size, f"{type(self).__name__}({output_size!r})")

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"

    def _output_hw(self, h: int, w: int) -> Pair:
        """output_size with each None replaced by the input's size on that axis."""
        oh, ow = self.output_size
        return (h if oh is None else oh, w if ow is None else ow)


class AdaptiveAvgPool2d(_AdaptivePool):
    """Average pooling to a fixed output size, whatever the input size.

    ``AdaptiveAvgPool2d(1)`` is global average pooling. Output cell (i, j) averages input
    rows ``floor(i*H/H_out) .. ceil((i+1)*H/H_out) - 1`` (and likewise columns), as torch.
    ``output_size`` is an int, a pair, or a pair with None for "keep the input's size".

    Shape:
        (N, C, H, W) or (C, H, W) -> (N, C, H_out, W_out) or (C, H_out, W_out).

    Backward:
        ``dx = P_h.T @ g @ P_w`` with the averaging matrices P of the forward pass.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        self._check_ndim(x, (3, 4), "(N, C, H, W) or (C, H, W)")
        h, w = x.shape[-2:]
        out_hw = self._output_hw(h, w)
        if out_hw == (1, 1):
            out = x.mean(axis=(-2, -1), keepdims=True)
            pool = None
        else:
            pool = (F.adaptive_pool_matrix(h, out_hw[0], x.dtype),
                    F.adaptive_pool_matrix(w, out_hw[1], x.dtype))
            out = pool[0] @ x @ pool[1].T                      # (..., H_out, W_out)
        if self.keeps_cache:
            self._cache = (pool, x.shape, out.shape, out.dtype)
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        pool, x_shape, out_shape, dtype = self._take_cache()
        grad = self._check_grad(grad, out_shape, dtype)
        if pool is None:
            return np.broadcast_to(grad / (x_shape[-2] * x_shape[-1]), x_shape).copy()
        return pool[0].T @ grad @ pool[1]


class AdaptiveMaxPool2d(_AdaptivePool):
    """Max pooling to a fixed output size, whatever the input size.

    ``AdaptiveMaxPool2d(1)`` is global max pooling. Output cell (i, j) is the max over
    input rows ``floor(i*H/H_out) .. ceil((i+1)*H/H_out) - 1`` and the columns alike, as
    torch: windows may overlap and differ in size by one. ``output_size`` is an int, a
    pair, or a pair with None for "keep the input's size". ``return_indices`` must be
    False (see the module docstring).

    Shape:
        (N, C, H, W) or (C, H, W) -> (N, C, H_out, W_out) or (C, H_out, W_out).

    Backward:
        Each output's gradient goes to its window's max: on ties the first in row-major window
        order, with NaNs the window's last NaN (torch's CPU kernel); overlapping windows that
        share a winner add.
    """

    def __init__(self, output_size: Any, return_indices: bool = False) -> None:
        _refuse_return_indices(return_indices, f"AdaptiveMaxPool2d({output_size!r})")
        super().__init__(output_size)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        self._check_ndim(x, (3, 4), "(N, C, H, W) or (C, H, W)")
        out, winner = F.adaptive_max_pool_forward(x, self._output_hw(*x.shape[-2:]),
                                                  with_winner=self.keeps_cache)
        if self.keeps_cache:
            self._cache = (winner, x.shape[-2:], out.shape, out.dtype)
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        winner, hw, out_shape, dtype = self._take_cache()
        grad = self._check_grad(grad, out_shape, dtype)
        return F.adaptive_max_pool_backward(grad, winner, hw)
