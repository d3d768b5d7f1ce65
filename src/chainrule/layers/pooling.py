"""Pooling layers: MaxPool2d, AvgPool2d, AdaptiveAvgPool2d."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from ._args import to_pair
from .base import Layer


class _Pool2d(Layer):
    """Shared argument handling and output-size check of the windowed pooling layers."""

    def __init__(self, kernel_size: Any, stride: Any, padding: Any, dilation: Any = 1) -> None:
        super().__init__()
        name = f"{type(self).__name__}(kernel_size={kernel_size!r})"
        self.kernel_size = to_pair(kernel_size, "kernel_size", name, 1)
        self.stride = self.kernel_size if stride is None else to_pair(stride, "stride", name, 1)
        self.padding = to_pair(padding, "padding", name, 0)
        self.dilation = to_pair(dilation, "dilation", name, 1)
        for k, p in zip(self.kernel_size, self.padding):
            # torch's rule: a window must always hold at least one real element.
            if p > k // 2:
                raise ValueError(f"{name}: padding should be at most half the kernel size, got "
                                 f"padding={padding!r} for kernel_size={kernel_size!r}")

    def extra_repr(self) -> str:
        text = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        return text

    def _output_hw(self, x: np.ndarray) -> tuple[int, int]:
        self._check_ndim(x, (3, 4), "(N, C, H, W) or (C, H, W)")
        h, w = x.shape[-2:]
        (ph, pw), (kh, kw), (sh, sw), (dh, dw) = self.padding, self.kernel_size, self.stride, self.dilation
        oh = F.conv_output_size(h, kh, sh, ph, ph, dh)
        ow = F.conv_output_size(w, kw, sw, pw, pw, dw)
        if oh < 1 or ow < 1:
            raise ValueError(f"{self!r}: the window {self.kernel_size} does not fit the padded input "
                             f"{(h + 2 * ph, w + 2 * pw)} for input of shape {x.shape}")
        return oh, ow

    def _crop(self, dxp: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        ph, pw = self.padding
        return dxp[..., ph:ph + hw[0], pw:pw + hw[1]]


class MaxPool2d(_Pool2d):
    """Max over sliding windows, channel by channel.

    Args:
        kernel_size: int or (kh, kw). stride: defaults to kernel_size. padding: implicit
        -inf padding on both sides, at most half the kernel. dilation: spacing of window
        elements.

    Shape: (N, C, H, W) -> (N, C, H_out, W_out),
        ``H_out = (H + 2*padding - dilation*(kh - 1) - 1) // stride + 1``.

    Backward: each output's gradient goes to the one input element that won its window's
    max; with tied maxima that is the first in row-major window order (as in PyTorch).
    Overlapping windows add their contributions.
    """

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 dilation: Any = 1) -> None:
        super().__init__(kernel_size, stride, padding, dilation)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        out_hw = self._output_hw(x)
        xp = F.pad_spatial(x, self.padding, -np.inf)
        out, winner = F.max_pool_forward(xp, self.kernel_size, self.stride, self.dilation, out_hw,
                                         with_winner=self.keeps_cache)
        if self.keeps_cache:
            self._cache = (winner, x.shape, xp.shape[-2:], out.dtype)
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        winner, x_shape, padded_hw, dtype = self._take_cache()
        grad = self._check_grad(grad, winner.shape, dtype)
        dxp = F.max_pool_backward(grad, winner, self.kernel_size, self.stride, self.dilation,
                                  padded_hw)
        return self._crop(dxp, x_shape[-2:])


class AvgPool2d(_Pool2d):
    """Mean over sliding windows, channel by channel.

    Args:
        kernel_size, stride (default kernel_size), padding (zeros, at most half the kernel).
        count_include_pad: divide by the full window size (True, torch's default) or by
            the number of real, non-padding elements in each window (False).

    Shape: (N, C, H, W) -> (N, C, H_out, W_out), ``H_out = (H + 2*padding - kh) // stride + 1``.

    Backward: each output's gradient is spread evenly over its window, ``dx += g / count``.
    """

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 count_include_pad: bool = True) -> None:
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = bool(count_include_pad)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", count_include_pad=False" if not self.count_include_pad else "")

    def _divisor(self, hw: tuple[int, int], out_hw: tuple[int, int], dtype: np.dtype):
        if self.count_include_pad or self.padding == (0, 0):
            return float(self.kernel_size[0] * self.kernel_size[1])
        return F.window_counts(hw, self.kernel_size, self.stride, self.padding, out_hw).astype(dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        out_hw = self._output_hw(x)
        divisor = self._divisor(x.shape[-2:], out_hw, x.dtype)
        xp = F.pad_spatial(x, self.padding, 0.0)
        out = F.avg_pool_forward(xp, self.kernel_size, self.stride, out_hw, divisor)
        if self.keeps_cache:
            self._cache = (divisor, x.shape, xp.shape[-2:], out.shape, out.dtype)
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        divisor, x_shape, padded_hw, out_shape, dtype = self._take_cache()
        grad = self._check_grad(grad, out_shape, dtype)
        dxp = F.avg_pool_backward(grad, self.kernel_size, self.stride, padded_hw, divisor)
        return self._crop(dxp, x_shape[-2:])


class AdaptiveAvgPool2d(Layer):
    """Average pooling to a fixed output size, whatever the input size.

    ``AdaptiveAvgPool2d(1)`` is global average pooling. Output cell (i, j) averages input
    rows ``floor(i*H/H_out) .. ceil((i+1)*H/H_out) - 1`` (and likewise columns), as torch.

    Shape: (N, C, H, W) -> (N, C, H_out, W_out).

    Backward: ``dx = P_h.T @ g @ P_w`` with the averaging matrices P of the forward pass.
    """

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        self.output_size = to_pair(output_size, "output_size", f"AdaptiveAvgPool2d({output_size!r})", 1)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        self._check_ndim(x, (3, 4), "(N, C, H, W) or (C, H, W)")
        h, w = x.shape[-2:]
        if self.output_size == (1, 1):
            out = x.mean(axis=(-2, -1), keepdims=True)
            pool = None
        else:
            pool = (F.adaptive_pool_matrix(h, self.output_size[0], x.dtype),
                    F.adaptive_pool_matrix(w, self.output_size[1], x.dtype))
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
