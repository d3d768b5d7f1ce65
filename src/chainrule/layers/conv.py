"""Conv2d: 2-D convolution (cross-correlation, as in every deep learning library)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import functional as F
from ..parameter import Parameter
from ._args import positive_int, to_pair
from .base import DEFAULT_DTYPE, Layer, as_float_dtype


class Conv2d(Layer):
    """2-D convolution over an (N, C_in, H, W) batch, with PyTorch's arguments.

    Args:
        in_channels, out_channels: C_in and C_out.
        kernel_size, stride, dilation: int or (h, w) pair.
        padding: int, (h, w) pair (zeros on both sides), ``"valid"`` (no padding) or
            ``"same"`` (output size = input size, stride 1 only; an even total padding
            puts the extra row/column at the bottom/right, as torch does).
        groups: C_in and C_out are split into ``groups`` independent convolutions
            (``groups == in_channels`` is a depthwise convolution).
        bias: whether to add a learned per-channel bias.
        dtype: float32 (default) or float64.
        rng: numpy Generator or seed for the initial weights (Kaiming-uniform, as torch).

    Shape:
        input (N, C_in, H, W) -> output (N, C_out, H_out, W_out) with
        ``H_out = (H + pad_top + pad_bottom - dilation*(kh - 1) - 1) // stride + 1``.
        weight: (C_out, C_in // groups, kh, kw); bias: (C_out,).

    Backward: with the im2col matrix ``X_col`` (C_in*kh*kw, N*H_out*W_out) of the
    input and the upstream gradient G (C_out, N*H_out*W_out),
    ``dW = G @ X_col.T`` (the gradient correlated with the input), ``db = sum(G)``, and
    ``dX = col2im(W.T @ G)`` (the gradient correlated with the flipped kernel). With
    stride 1 and enough input channels both come from the columns of the padded G
    instead (see ``chainrule.functional.conv2d_backward``).

    Memory: ``X_col`` is built whole only for small layers (at most 8 MiB, such as
    LeNet's), kept in training for backward's ``dW``. Otherwise the batch is processed
    in chunks (see ``chainrule.functional.conv2d_forward``) whose scratch buffers stay
    under ``max_workspace_bytes`` (class attribute, 512 MiB by default; set it on the
    class or on one layer; None: no limit beyond the cache-sized chunks), and only the
    padded input is kept for backward, which unfolds it again. Results do not depend on
    the chunking beyond float rounding of the weight-gradient sums.

    ``backward(grad, needs_input_grad=False)`` computes dW and db only and returns None
    (a first layer's input gradient is not needed for training).
    """

    can_skip_input_grad = True

    max_workspace_bytes: int = 512 << 20

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 dtype: Any = DEFAULT_DTYPE, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        name = f"Conv2d({in_channels}, {out_channels}, kernel_size={kernel_size!r})"
        self.in_channels = positive_int(in_channels, "in_channels", name)
        self.out_channels = positive_int(out_channels, "out_channels", name)
        self.kernel_size = to_pair(kernel_size, "kernel_size", name, 1)
        self.stride = to_pair(stride, "stride", name, 1)
        self.dilation = to_pair(dilation, "dilation", name, 1)
        self.groups = positive_int(groups, "groups", name)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: groups must divide in_channels and out_channels, got "
                             f"groups={groups} for {in_channels} -> {out_channels} channels")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{name}: padding must be an int, a pair, 'same' or 'valid', "
                                 f"got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"{name}: padding='same' needs stride 1, got stride={stride!r}")
            self.padding: Any = padding
            self._pad4 = self._same_padding() if padding == "same" else (0, 0, 0, 0)
        else:
            self.padding = to_pair(padding, "padding", name, 0)
            ph, pw = self.padding
            self._pad4 = (ph, ph, pw, pw)
        dtype = as_float_dtype(dtype, name)
        kh, kw = self.kernel_size
        self.weight = Parameter(np.zeros((out_channels, in_channels // groups, kh, kw), dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype)) if bias else None
        self._reset_own_parameters(np.random.default_rng(rng))

    def _same_padding(self) -> tuple[int, int, int, int]:
        pads = []
        for k, d in zip(self.kernel_size, self.dilation):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return tuple(pads)  # type: ignore[return-value]

    def _reset_own_parameters(self, rng: np.random.Generator) -> None:
        # torch: kaiming_uniform_(a=sqrt(5)) gives bound = 1/sqrt(fan_in); the bias uses
        # the same bound.
        fan_in = self.weight.data[0].size
        bound = 1.0 / math.sqrt(fan_in)
        self.weight.data[...] = rng.uniform(-bound, bound, self.weight.shape)
        if self.bias is not None:
            self.bias.data[...] = rng.uniform(-bound, bound, self.bias.shape)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding not in ((0, 0), "valid"):
            text += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """(N, C_out, H_out, W_out) for an input of shape (N, C_in, H, W); raises a clear
        ValueError when the input is wrong or the kernel does not fit."""
        if len(input_shape) != 4:
            raise ValueError(f"{self!r}: expected input of shape (N, C, H, W) (4-D), got shape "
                             f"{tuple(input_shape)}")
        n, c, h, w = input_shape
        if c != self.in_channels:
            raise ValueError(f"{self!r}: expected {self.in_channels} input channels, got input of "
                             f"shape {tuple(input_shape)} with {c}")
        top, bottom, left, right = self._pad4
        oh = F.conv_output_size(h, self.kernel_size[0], self.stride[0], top, bottom, self.dilation[0])
        ow = F.conv_output_size(w, self.kernel_size[1], self.stride[1], left, right, self.dilation[1])
        if oh < 1 or ow < 1:
            raise ValueError(
                f"{self!r}: the dilated kernel {self.kernel_size} (dilation {self.dilation}) is larger "
                f"than the padded input {(h + top + bottom, w + left + right)} for input of shape "
                f"{tuple(input_shape)}")
        return n, self.out_channels, oh, ow

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C_in, H, W) -> (N, C_out, H_out, W_out)."""
        x = self._cast_input(x)
        n, c_out, oh, ow = self.output_shape(x.shape)
        xp = F.pad_channel_major(x, self._pad4)                       # (C_in, N, Hp, Wp)
        bias = None if self.bias is None else self.bias.data
        args = (xp, self.weight.data, bias, self.stride, self.dilation, (oh, ow),
                self.max_workspace_bytes)
        if self.keeps_cache:
            # The padded input, and its columns only when they are small (see
            # functional.conv.KEEP_COLUMNS_BYTES): otherwise backward unfolds the input
            # again chunk by chunk, which keeps a 9x (kh*kw x) larger matrix out of memory.
            out, columns = F.conv2d_forward(*args, return_columns=True)
            self._cache = (xp, out.shape, columns)
        else:
            out = F.conv2d_forward(*args)                  # (C_out, N, H_out, W_out)
        # Channel-major memory seen as (N, C_out, H_out, W_out): the next layers work
        # on it as it is, and the next convolution's transpose-and-pad copy is then a
        # straight copy per channel.
        return out.transpose(1, 0, 2, 3)

    def backward(self, grad: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        """dL/dy (N, C_out, H_out, W_out) -> dL/dx (N, C_in, H, W) (None when
        ``needs_input_grad`` is False); adds into weight.grad and bias.grad."""
        xp, cn_shape, columns = self._take_cache()
        c_out, n, oh, ow = cn_shape
        grad = self._check_grad(grad, (n, c_out, oh, ow), self.weight.dtype)
        dx, dweight, dbias = F.conv2d_backward(
            xp, self.weight.data, grad.transpose(1, 0, 2, 3), self.stride, self.dilation,
            self._pad4, self.bias is not None, self.max_workspace_bytes,
            input_grad=needs_input_grad, columns=columns)                 # (C_in, N, H, W)
        self.weight.grad += dweight
        if self.bias is not None:
            self.bias.grad += dbias
        return None if dx is None else dx.transpose(1, 0, 2, 3)
