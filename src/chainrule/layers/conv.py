"""Convolutions (cross-correlations, as in every deep learning library): Conv1d, Conv2d
and ConvTranspose2d, all on the kernels of ``chainrule.functional.conv``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import functional as F
from ..parameter import Parameter
from ._args import positive_int, to_pair
from .base import DEFAULT_DTYPE, Layer, as_float_dtype


def _kaiming_uniform(weight: Parameter, bias: Parameter | None, rng: np.random.Generator) -> None:
    """torch's initialization of every convolution: kaiming_uniform_(a=sqrt(5)), which
    gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias. torch's
    fan_in is the weight's axis 1 times the kernel size, ``weight[0].size``: C_in/G * k
    for a convolution, C_out/G * k for a transposed one (weight (C_in, C_out/G, ...))."""
    bound = 1.0 / math.sqrt(weight.data[0].size)
    weight.data[...] = rng.uniform(-bound, bound, weight.shape)
    if bias is not None:
        bias.data[...] = rng.uniform(-bound, bound, bias.shape)


def _check_groups(name: str, in_channels: int, out_channels: int, groups: int) -> None:
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"{name}: groups must divide in_channels and out_channels, got "
                         f"groups={groups} for {in_channels} -> {out_channels} channels")


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
        _check_groups(name, in_channels, out_channels, groups)
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
        _kaiming_uniform(self.weight, self.bias, rng)

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


def _to_single(value: Any, name: str, layer: str, minimum: int) -> tuple[int]:
    """An int or a 1-tuple of an int (torch's ``(3,)``) as a 1-tuple, at least ``minimum``."""
    item = value[0] if isinstance(value, (tuple, list)) and len(value) == 1 else value
    if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
        raise TypeError(f"{layer}: {name} must be an int or a 1-tuple of an int, got {value!r}")
    if item < minimum:
        raise ValueError(f"{layer}: {name} must be >= {minimum}, got {value!r}")
    return (int(item),)


class Conv1d(Layer):
    """1-D convolution over an (N, C_in, L) batch or one (C_in, L) sequence, with
    PyTorch's arguments.

    Args:
        in_channels, out_channels: C_in and C_out.
        kernel_size, stride, dilation: int or 1-tuple (stored as 1-tuples, as torch).
        padding: int or 1-tuple (zeros at both ends), ``"valid"`` (none) or ``"same"``
            (L_out = L, stride 1 only; an odd total puts the extra zero at the end).
        groups: C_in and C_out are split into ``groups`` independent convolutions.
        bias: whether to add a learned per-channel bias.
        padding_mode: ``"zeros"`` only (torch's reflect, replicate and circular padding
            are refused with a ValueError).
        dtype: float32 (default) or float64.
        rng: numpy Generator or seed for the initial weights (Kaiming-uniform, as torch).

    Shape:
        input (N, C_in, L) or (C_in, L) -> output (N, C_out, L_out) or (C_out, L_out),
        ``L_out = (L + pad_left + pad_right - dilation*(k - 1) - 1) // stride + 1``.
        weight: (C_out, C_in // groups, k); bias: (C_out,).

    Computed as Conv2d on the input seen as (N, C_in, 1, L) with the kernel seen as
    (C_out, C_in // groups, 1, k), by the same chunked kernels (see ``Conv2d`` for the
    memory bound ``max_workspace_bytes``). Backward, with X_col (C_in*k, N*L_out) the
    unfolded input and G (C_out, N*L_out) the upstream gradient: ``dW = G @ X_col.T``,
    ``db = sum(G)``, ``dX = col2im(W.T @ G)`` (G correlated with the flipped kernel).
    ``backward(grad, needs_input_grad=False)`` computes dW and db only and returns None.
    """

    can_skip_input_grad = True

    max_workspace_bytes: int = 512 << 20

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", dtype: Any = DEFAULT_DTYPE,
                 rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        name = f"Conv1d({in_channels}, {out_channels}, kernel_size={kernel_size!r})"
        self.in_channels = positive_int(in_channels, "in_channels", name)
        self.out_channels = positive_int(out_channels, "out_channels", name)
        self.kernel_size = _to_single(kernel_size, "kernel_size", name, 1)
        self.stride = _to_single(stride, "stride", name, 1)
        self.dilation = _to_single(dilation, "dilation", name, 1)
        self.groups = positive_int(groups, "groups", name)
        _check_groups(name, in_channels, out_channels, groups)
        if padding_mode != "zeros":
            raise ValueError(f"{name}: padding_mode must be 'zeros' (torch's 'reflect', "
                             f"'replicate' and 'circular' are not supported), got {padding_mode!r}")
        self.padding_mode = padding_mode
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{name}: padding must be an int, a 1-tuple, 'same' or 'valid', "
                                 f"got {padding!r}")
            if padding == "same" and self.stride != (1,):
                raise ValueError(f"{name}: padding='same' needs stride 1, got stride={stride!r}")
            self.padding: Any = padding
            total = self.dilation[0] * (self.kernel_size[0] - 1) if padding == "same" else 0
            left, right = total // 2, total - total // 2
        else:
            self.padding = _to_single(padding, "padding", name, 0)
            left = right = self.padding[0]
        self._pad4 = (0, 0, left, right)               # the (N, C, 1, L) view's padding
        dtype = as_float_dtype(dtype, name)
        self.weight = Parameter(np.zeros((out_channels, in_channels // groups,
                                          self.kernel_size[0]), dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype)) if bias else None
        self._reset_own_parameters(np.random.default_rng(rng))

    def _reset_own_parameters(self, rng: np.random.Generator) -> None:
        _kaiming_uniform(self.weight, self.bias, rng)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding not in ((0,), "valid"):
            text += f", padding={self.padding!r}"
        if self.dilation != (1,):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(N, C_out, L_out) for an input of shape (N, C_in, L), (C_out, L_out) for one
        of shape (C_in, L); raises a clear ValueError when the input is wrong or the
        kernel does not fit."""
        shape = tuple(input_shape)
        if len(shape) not in (2, 3):
            raise ValueError(f"{self!r}: expected input of shape (N, C, L) or (C, L) (3-D or "
                             f"2-D), got shape {shape}")
        c, length = shape[-2:]
        if c != self.in_channels:
            raise ValueError(f"{self!r}: expected {self.in_channels} input channels, got input of "
                             f"shape {shape} with {c}")
        _, _, left, right = self._pad4
        out = F.conv_output_size(length, self.kernel_size[0], self.stride[0], left, right,
                                 self.dilation[0])
        if out < 1:
            raise ValueError(
                f"{self!r}: the dilated kernel {self.kernel_size} (dilation {self.dilation}) is "
                f"longer than the padded input ({length + left + right}) for input of shape {shape}")
        return shape[:-2] + (self.out_channels, out)

    def _weight4(self) -> np.ndarray:
        return self.weight.data[:, :, None, :]                    # (C_out, C_in // G, 1, k)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C_in, L) -> (N, C_out, L_out); (C_in, L) -> (C_out, L_out)."""
        x = self._cast_input(x)
        out_shape = self.output_shape(x.shape)
        unbatched = x.ndim == 2
        x3 = x[None] if unbatched else x                          # (N, C_in, L)
        xp = F.pad_channel_major(x3[:, :, None, :], self._pad4)    # (C_in, N, 1, Lp)
        bias = None if self.bias is None else self.bias.data
        args = (xp, self._weight4(), bias, (1,) + self.stride, (1,) + self.dilation,
                (1, out_shape[-1]), self.max_workspace_bytes)
        if self.keeps_cache:
            out, columns = F.conv2d_forward(*args, return_columns=True)
            self._cache = (xp, out.shape, columns, unbatched)
        else:
            out = F.conv2d_forward(*args)                          # (C_out, N, 1, L_out)
        y = out[:, :, 0].transpose(1, 0, 2)                        # (N, C_out, L_out) view
        return y[0] if unbatched else y

    def backward(self, grad: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        """dL/dy (N, C_out, L_out) or (C_out, L_out) -> dL/dx of the input's shape (None
        when ``needs_input_grad`` is False); adds into weight.grad and bias.grad."""
        xp, cn_shape, columns, unbatched = self._take_cache()
        c_out, n, _, l_out = cn_shape
        expected = (c_out, l_out) if unbatched else (n, c_out, l_out)
        grad = self._check_grad(grad, expected, self.weight.dtype)
        g3 = grad[None] if unbatched else grad                     # (N, C_out, L_out)
        dx, dweight, dbias = F.conv2d_backward(
            xp, self._weight4(), g3.transpose(1, 0, 2)[:, :, None, :], (1,) + self.stride,
            (1,) + self.dilation, self._pad4, self.bias is not None, self.max_workspace_bytes,
            input_grad=needs_input_grad, columns=columns)          # dx (C_in, N, 1, L)
        self.weight.grad += dweight.reshape(self.weight.shape)
        if self.bias is not None:
            self.bias.grad += dbias
        if dx is None:
            return None
        dx = dx[:, :, 0].transpose(1, 0, 2)                        # (N, C_in, L)
        return dx[0] if unbatched else dx


class ConvTranspose2d(Layer):
    """2-D transposed convolution (the adjoint of Conv2d, sometimes called
    "deconvolution") over an (N, C_in, H, W) batch or one (C_in, H, W) image, with
    PyTorch's arguments in PyTorch's order.

    Args:
        in_channels, out_channels: C_in and C_out.
        kernel_size, stride, dilation: int or (h, w) pair.
        padding: int or (h, w) pair: ``dilation*(k - 1) - padding`` zeros are, in
            effect, added to each side of the input, i.e. ``padding`` rows and columns
            are cropped from each side of the full output.
        output_padding: int or (h, w) pair, extra rows/columns at the bottom/right of
            the output; each must be smaller than the stride or the dilation of its
            dimension (as torch). A strided Conv2d maps several input sizes to the same
            output size; ``output_padding`` picks which one this layer gives back (torch's
            ``forward(x, output_size)`` is not offered: choose ``output_padding`` instead).
        groups: C_in and C_out are split into ``groups`` independent convolutions.
        bias: whether to add a learned per-channel bias.
        dtype: float32 (default) or float64.
        rng: numpy Generator or seed for the initial weights (Kaiming-uniform as torch,
            over torch's fan_in for this layout, C_out // groups * kh * kw).

    Shape:
        input (N, C_in, H, W) or (C_in, H, W) -> output (N, C_out, H_out, W_out) or
        (C_out, H_out, W_out) with
        ``H_out = (H - 1)*stride - 2*padding + dilation*(kh - 1) + output_padding + 1``.
        weight: (C_in, C_out // groups, kh, kw); bias: (C_out,).

    Forward: each input pixel scatters the kernel, times its value, into the output at
    ``stride`` spacing; overlaps add: ``y = col2im(W.T @ x)`` cropped by ``padding``,
    plus the bias. That is the input gradient of Conv2d(C_out -> C_in) with the same
    weight, stride, padding and dilation, and is computed by the same kernel.

    Backward, with G (N, C_out, H_out, W_out) the upstream gradient:
    ``dX = correlate(G, W)`` (the Conv2d forward of G zero-padded by ``padding``, at the
    stride), ``dW = correlate(G, X)`` (that Conv2d's weight gradient with the roles of
    input and gradient swapped: G is unfolded, X multiplies it), ``db = sum(G)``. Memory
    is bounded by Conv2d's batch chunks (``max_workspace_bytes``, see ``Conv2d``).
    ``backward(grad, needs_input_grad=False)`` computes dW and db only and returns None.
    """

    can_skip_input_grad = True

    max_workspace_bytes: int = 512 << 20

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, output_padding: Any = 0, groups: int = 1, bias: bool = True,
                 dilation: Any = 1, dtype: Any = DEFAULT_DTYPE,
                 rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        name = f"ConvTranspose2d({in_channels}, {out_channels}, kernel_size={kernel_size!r})"
        self.in_channels = positive_int(in_channels, "in_channels", name)
        self.out_channels = positive_int(out_channels, "out_channels", name)
        self.kernel_size = to_pair(kernel_size, "kernel_size", name, 1)
        self.stride = to_pair(stride, "stride", name, 1)
        self.padding = to_pair(padding, "padding", name, 0)
        self.output_padding = to_pair(output_padding, "output_padding", name, 0)
        self.dilation = to_pair(dilation, "dilation", name, 1)
        self.groups = positive_int(groups, "groups", name)
        _check_groups(name, in_channels, out_channels, groups)
        for extra, s, d in zip(self.output_padding, self.stride, self.dilation):
            if extra >= s and extra >= d:   # torch's condition, checked at its forward
                raise ValueError(
                    f"{name}: output_padding must be smaller than either stride or dilation in "
                    f"each dimension, got output_padding={output_padding!r} with "
                    f"stride={stride!r}, dilation={dilation!r}")
        dtype = as_float_dtype(dtype, name)
        kh, kw = self.kernel_size
        self.weight = Parameter(np.zeros((in_channels, out_channels // groups, kh, kw), dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype)) if bias else None
        self._reset_own_parameters(np.random.default_rng(rng))

    def _reset_own_parameters(self, rng: np.random.Generator) -> None:
        _kaiming_uniform(self.weight, self.bias, rng)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(N, C_out, H_out, W_out) for an input of shape (N, C_in, H, W), (C_out, H_out,
        W_out) for one of shape (C_in, H, W); raises a clear ValueError when the input is
        wrong or the padding crops the whole output."""
        shape = tuple(input_shape)
        if len(shape) not in (3, 4):
            raise ValueError(f"{self!r}: expected input of shape (N, C, H, W) or (C, H, W) "
                             f"(4-D or 3-D), got shape {shape}")
        c, h, w = shape[-3:]
        if c != self.in_channels:
            raise ValueError(f"{self!r}: expected {self.in_channels} input channels, got input of "
                             f"shape {shape} with {c}")
        out_hw = tuple(F.conv_transpose_output_size(size, k, s, p, op, d) for size, k, s, p, op, d
                       in zip((h, w), self.kernel_size, self.stride, self.padding,
                              self.output_padding, self.dilation))
        if min(out_hw) < 1:
            raise ValueError(f"{self!r}: the padding {self.padding} crops the whole output: "
                             f"output size {out_hw} for input of shape {shape}")
        return shape[:-3] + (self.out_channels,) + out_hw

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C_in, H, W) -> (N, C_out, H_out, W_out); (C_in, H, W) -> (C_out, H_out, W_out)."""
        x = self._cast_input(x)
        out_shape = self.output_shape(x.shape)
        unbatched = x.ndim == 3
        x4 = x[None] if unbatched else x
        # Channel-major, as the kernels want it: a no-op for a Conv2d's output.
        xc = np.ascontiguousarray(x4.transpose(1, 0, 2, 3))       # (C_in, N, H, W)
        bias = None if self.bias is None else self.bias.data
        out = F.conv_transpose2d_forward(xc, self.weight.data, bias, self.stride, self.padding,
                                         self.dilation, self.groups, out_shape[-2:],
                                         self.max_workspace_bytes)  # (C_out, N, H_out, W_out)
        if self.keeps_cache:
            self._cache = (xc, out.shape, unbatched)
        y = out.transpose(1, 0, 2, 3)                              # (N, C_out, H_out, W_out)
        return y[0] if unbatched else y

    def backward(self, grad: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        """dL/dy (N, C_out, H_out, W_out) or (C_out, H_out, W_out) -> dL/dx of the input's
        shape (None when ``needs_input_grad`` is False); adds into weight.grad and bias.grad."""
        xc, cn_shape, unbatched = self._take_cache()
        c_out, n, oh, ow = cn_shape
        expected = (c_out, oh, ow) if unbatched else (n, c_out, oh, ow)
        grad = self._check_grad(grad, expected, self.weight.dtype)
        g4 = grad[None] if unbatched else grad                     # (N, C_out, H_out, W_out)
        dx, dweight, dbias = F.conv_transpose2d_backward(
            xc, self.weight.data, g4.transpose(1, 0, 2, 3), self.stride, self.padding,
            self.dilation, self.groups, self.bias is not None, self.max_workspace_bytes,
            input_grad=needs_input_grad)                           # dx (C_in, N, H, W)
        self.weight.grad += dweight
        if self.bias is not None:
            self.bias.grad += dbias
        if dx is None:
            return None
        dx = dx.transpose(1, 0, 2, 3)                              # (N, C_in, H, W)
        return dx[0] if unbatched else dx
