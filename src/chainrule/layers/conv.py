"""Convolutions (cross-correlations, as in every deep learning library): Conv1d, Conv2d
and ConvTranspose2d, all on the kernels of ``chainrule.functional.conv``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import functional as F
from ..parameter import Parameter
from ..random import generator
from ._args import positive_int, to_pair, to_single
from .base import DEFAULT_DTYPE, Layer, as_float_dtype


class _ConvBase(Layer):
    """What every convolution shares: the checks of its channels, kernel, stride,
    dilation and groups, its weight and bias with torch's initialization, and its repr.

    A subclass sets ``_spatial_dims`` (2: each size an int or an (h, w) pair; 1: an int
    or a 1-tuple, kept as a 1-tuple as torch does) and ``_transposed`` (a weight of
    shape (C_in, C_out // groups, *k) instead of (C_out, C_in // groups, *k)), and
    checks and keeps ``padding`` itself.
    """

    _spatial_dims: int
    _transposed = False

    max_workspace_bytes: int = 512 << 20

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any,
                 dilation: Any, groups: int, bias: bool, dtype: Any,
                 rng: np.random.Generator | int | None) -> None:
        super().__init__()
        name = self._called_as(in_channels, out_channels, kernel_size)
        self.in_channels = positive_int(in_channels, "in_channels", name)
        self.out_channels = positive_int(out_channels, "out_channels", name)
        self.kernel_size = self._sizes(kernel_size, "kernel_size", name, 1)
        self.stride = self._sizes(stride, "stride", name, 1)
        self.dilation = self._sizes(dilation, "dilation", name, 1)
        self.groups = positive_int(groups, "groups", name)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: groups must divide in_channels and out_channels, got "
                             f"groups={groups} for {in_channels} -> {out_channels} channels")
        dtype = as_float_dtype(dtype, name)
        rows, grouped = ((in_channels, out_channels) if self._transposed
                         else (out_channels, in_channels))
        self.weight = Parameter(np.zeros((rows, grouped // groups) + self.kernel_size, dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype)) if bias else None
        self._reset_own_parameters(generator(rng))

    def _called_as(self, in_channels: Any, out_channels: Any, kernel_size: Any) -> str:
        """The layer as it was called, say ``Conv2d(3, 8, kernel_size=3)``: the start of
        every argument error."""
        return f"{type(self).__name__}({in_channels}, {out_channels}, kernel_size={kernel_size!r})"

    def _sizes(self, value: Any, name: str, layer: str, minimum: int) -> tuple[int, ...]:
        """One size per spatial dimension, each at least ``minimum``."""
        if self._spatial_dims == 1:
            return (to_single(value, name, layer, minimum),)
        return to_pair(value, name, layer, minimum)

    def _reset_own_parameters(self, rng: np.random.Generator) -> None:
        """torch's initialization of every convolution: kaiming_uniform_(a=sqrt(5)), which
        gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias. torch's
        fan_in is the weight's axis 1 times the kernel size, ``weight[0].size``: C_in/G * k
        for a convolution, C_out/G * k for a transposed one (weight (C_in, C_out/G, ...))."""
        bound = 1.0 / math.sqrt(self.weight.data[0].size)
        self.weight.data[...] = rng.uniform(-bound, bound, self.weight.shape)
        if self.bias is not None:
            self.bias.data[...] = rng.uniform(-bound, bound, self.bias.shape)

    def extra_repr(self) -> str:
        zeros, ones = (0,) * self._spatial_dims, (1,) * self._spatial_dims
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding not in (zeros, "valid"):
            text += f", padding={self.padding!r}"
        if self.dilation != ones:
            text += f", dilation={self.dilation}"
        if self._transposed and self.output_padding != zeros:
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text


class _ConvNd(_ConvBase):
    """Conv1d and Conv2d: int, ``"same"`` or ``"valid"`` padding, the output size, and
    forward and backward by the 2-D kernels (``F.conv2d_forward``, ``F.conv2d_backward``)
    on a 4-D view: a 2-D layer's arrays as they are, a 1-D layer's (N, C, L) or (C, L)
    arrays as (N, C, 1, L) and its kernel (C_out, C_in // G, k) as (C_out, C_in // G, 1, k).
    """

    can_skip_input_grad = True

    # Winograd F(2x2, 3x3) (``functional.winograd``) for the layers it serves; False (on
    # the class or one layer; CHAINRULE_WINOGRAD=0 for the default) keeps im2col.
    winograd: bool = F.winograd.wanted()

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 dtype: Any = DEFAULT_DTYPE, rng: np.random.Generator | int | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, groups, bias,
                         dtype, rng)
        name = self._called_as(in_channels, out_channels, kernel_size)
        dims = self._spatial_dims
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                sizes = "a pair" if dims == 2 else "a 1-tuple"
                raise ValueError(f"{name}: padding must be an int, {sizes}, 'same' or 'valid', "
                                 f"got {padding!r}")
            if padding == "same" and self.stride != (1,) * dims:
                raise ValueError(f"{name}: padding='same' needs stride 1, got stride={stride!r}")
            self.padding: Any = padding
            # torch's "same": dilation*(k - 1) zeros in all, the odd one at the bottom/right
            totals = [d * (k - 1) if padding == "same" else 0
                      for k, d in zip(self.kernel_size, self.dilation)]
            sides = [(total // 2, total - total // 2) for total in totals]
        else:
            self.padding = self._sizes(padding, "padding", name, 0)
            sides = [(p, p) for p in self.padding]
        # (top, bottom, left, right) of the 4-D view, whose height a 1-D layer never pads
        self._pad4 = tuple(p for side in [(0, 0)] * (2 - dims) + sides for p in side)

    def _as_2d(self, sizes: tuple[int, ...]) -> tuple[int, ...]:
        """A stride, dilation or output size as that of the 4-D view: (1, s) for 1-D."""
        return sizes if self._spatial_dims == 2 else (1,) + sizes

    def _view4(self, a: np.ndarray) -> np.ndarray:
        """An input or an upstream gradient as the 4-D view (N, C, H, W), not a copy."""
        if self._spatial_dims == 2:
            return a
        return (a[None] if a.ndim == 2 else a)[:, :, None, :]       # (N, C, 1, L)

    def _unview(self, a4: np.ndarray, ndim: int) -> np.ndarray:
        """The inverse of ``_view4`` for an array that had ``ndim`` dimensions."""
        if self._spatial_dims == 2:
            return a4
        a3 = a4[:, :, 0]                                            # (N, C, L)
        return a3[0] if ndim == 2 else a3

    def _weight4(self) -> np.ndarray:
        w = self.weight.data
        return w if self._spatial_dims == 2 else w[:, :, None, :]   # (C_out, C_in // G, 1, k)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(N, C_out, H_out, W_out) for an input of shape (N, C_in, H, W) (Conv2d);
        (N, C_out, L_out) for one of shape (N, C_in, L), (C_out, L_out) for (C_in, L)
        (Conv1d). Raises a clear ValueError when the input is wrong or the kernel does
        not fit."""
        shape = tuple(input_shape)
        dims = self._spatial_dims
        ndims, layout = ((4,), "(N, C, H, W)") if dims == 2 else ((3, 2), "(N, C, L) or (C, L)")
        if len(shape) not in ndims:
            raise ValueError(f"{self!r}: expected input of shape {layout} "
                             f"({' or '.join(f'{n}-D' for n in ndims)}), got shape {shape}")
        c, sizes = shape[-dims - 1], shape[-dims:]
        if c != self.in_channels:
            raise ValueError(f"{self!r}: expected {self.in_channels} input channels, got input of "
                             f"shape {shape} with {c}")
        sides = self._pad4[4 - 2 * dims:]                    # (before, after) per dimension
        before, after = sides[0::2], sides[1::2]
        # From a list, not tuple(generator): that shrinks a fresh 10-tuple, and each call
        # then leaves one more small tuple in CPython's free list (test_memory sees it).
        out = tuple([F.conv_output_size(*args) for args in zip(
            sizes, self.kernel_size, self.stride, before, after, self.dilation)])
        if min(out) < 1:
            padded = tuple(n + b + a for n, b, a in zip(sizes, before, after))
            shown, bigger = (padded, "larger") if dims == 2 else (f"({padded[0]})", "longer")
            raise ValueError(
                f"{self!r}: the dilated kernel {self.kernel_size} (dilation {self.dilation}) is "
                f"{bigger} than the padded input {shown} for input of shape {shape}")
        return shape[:-dims - 1] + (self.out_channels,) + out

    def _uses_winograd(self, out_hw: tuple[int, int]) -> bool:
        """Whether this forward takes the Winograd path (see ``winograd`` and
        ``functional.winograd.applies``: 3x3, stride 1, dilation 1, one group, enough
        input channels, Numba on)."""
        return self.winograd and F.winograd.applies(
            self._weight4().shape, self._as_2d(self.stride), self._as_2d(self.dilation),
            self.groups, out_hw, self.weight.dtype.itemsize, self.max_workspace_bytes)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C_in, H, W) -> (N, C_out, H_out, W_out) (Conv2d); (N, C_in, L) ->
        (N, C_out, L_out) and (C_in, L) -> (C_out, L_out) (Conv1d)."""
        x = self._cast_input(x)
        out_shape = self.output_shape(x.shape)
        xp = F.pad_channel_major(self._view4(x), self._pad4)          # (C_in, N, Hp, Wp)
        bias = None if self.bias is None else self.bias.data
        out_hw = self._as_2d(out_shape[-self._spatial_dims:])
        if self._uses_winograd(out_hw):
            out = F.winograd_forward(xp, self._weight4(), bias, self.max_workspace_bytes)
            if self.keeps_cache:
                self._cache = (xp, out_shape, None, True)
            return self._unview(out.transpose(1, 0, 2, 3), x.ndim)
        args = (xp, self._weight4(), bias, self._as_2d(self.stride), self._as_2d(self.dilation),
                out_hw, self.max_workspace_bytes)
        if self.keeps_cache:
            # The padded input, and its columns only when they are small (see
            # functional.conv.KEEP_COLUMNS_BYTES): otherwise backward unfolds the input
            # again chunk by chunk, which keeps a 9x (kh*kw x) larger matrix out of memory.
            out, columns = F.conv2d_forward(*args, return_columns=True)
            self._cache = (xp, out_shape, columns, False)
        else:
            out = F.conv2d_forward(*args)                  # (C_out, N, H_out, W_out)
        # Channel-major memory seen as (N, C_out, H_out, W_out): the next layers work
        # on it as it is, and the next convolution's transpose-and-pad copy is then a
        # straight copy per channel.
        return self._unview(out.transpose(1, 0, 2, 3), x.ndim)

    def backward(self, grad: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        """dL/dy of the output's shape -> dL/dx of the input's shape (None when
        ``needs_input_grad`` is False); adds into weight.grad and bias.grad."""
        xp, out_shape, columns, winograd = self._take_cache()
        grad = self._check_grad(grad, out_shape, self.weight.dtype)
        if winograd:
            dx, dweight, dbias = F.winograd_backward(
                xp, self._weight4(), self._view4(grad).transpose(1, 0, 2, 3), self._pad4,
                self.bias is not None, self.max_workspace_bytes, input_grad=needs_input_grad)
        else:
            dx, dweight, dbias = F.conv2d_backward(
                xp, self._weight4(), self._view4(grad).transpose(1, 0, 2, 3),
                self._as_2d(self.stride), self._as_2d(self.dilation), self._pad4,
                self.bias is not None, self.max_workspace_bytes, input_grad=needs_input_grad,
                columns=columns)                                  # dx (C_in, N, H, W)
        self.weight.grad += dweight.reshape(self.weight.shape)  # a 1-D kernel's unit row dropped
        if self.bias is not None:
            self.bias.grad += dbias
        return None if dx is None else self._unview(dx.transpose(1, 0, 2, 3), len(out_shape))


class Conv2d(_ConvNd):
    """2-D convolution over an (N, C_in, H, W) batch, with PyTorch's arguments.

    Args:
        in_channels: C_in, the channels of the input.
        out_channels: C_out, the channels of the output.
        kernel_size: int or (h, w) pair.
        stride: int or (h, w) pair.
        dilation: int or (h, w) pair, the spacing between kernel elements.
        padding: int, (h, w) pair (zeros on both sides), ``"valid"`` (no padding) or
            ``"same"`` (output size = input size, stride 1 only; an even total padding
            puts the extra row/column at the bottom/right, as torch does).
        groups: C_in and C_out are split into ``groups`` independent convolutions
            (``groups == in_channels`` is a depthwise convolution).
        bias: whether to add a learned per-channel bias.
        dtype: float32 (default) or float64.
        rng: numpy Generator or seed for the initial weights (Kaiming-uniform, as torch).

    Shape:
        Input (N, C_in, H, W) -> output (N, C_out, H_out, W_out) with
        ``H_out = (H + pad_top + pad_bottom - dilation*(kh - 1) - 1) // stride + 1``. weight:
        (C_out, C_in // groups, kh, kw); bias: (C_out,).

    Backward:
        With the im2col matrix ``X_col`` ``(C_in*kh*kw, N*H_out*W_out)`` of the input and
        the upstream gradient G ``(C_out, N*H_out*W_out)``, ``dW = G @ X_col.T`` (the gradient
        correlated with the input), ``db = sum(G)``, and ``dX = col2im(W.T @ G)`` (the gradient
        correlated with the flipped kernel). With stride 1 and enough input channels both come
        from the columns of the padded G instead (see ``chainrule.functional.conv2d_backward``).

    Winograd: a 3x3 layer with stride 1, dilation 1 and one group, at least 16 input
    channels and more output channels (or at least 64), computes forward and both
    gradients by Winograd F(2x2, 3x3) instead, with compiled transforms
    (``chainrule.functional.winograd``; Numba on). ``Conv2d.winograd = False`` (on the
    class or one layer) or the environment variable ``CHAINRULE_WINOGRAD=0`` keeps
    im2col. Float32 results differ from im2col's by rounding only (relative errors
    2e-7 to 9e-7 against float64 on the CIFAR and VGG layers, as im2col's 4e-7 to 7e-7).

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

    # Said again by each class: a backward set on the class itself (a spy in a test, a
    # wrapper) is still passed needs_input_grad (see base._backward_can_skip_input_grad).
    can_skip_input_grad = True
    _spatial_dims = 2


class Conv1d(_ConvNd):
    """1-D convolution over an (N, C_in, L) batch or one (C_in, L) sequence, with
    PyTorch's arguments.

    Args:
        in_channels: C_in, the channels of the input.
        out_channels: C_out, the channels of the output.
        kernel_size: int or 1-tuple (stored as a 1-tuple, as torch).
        stride: int or 1-tuple.
        dilation: int or 1-tuple, the spacing between kernel elements.
        padding: int or 1-tuple (zeros at both ends), ``"valid"`` (none) or ``"same"``
            (L_out = L, stride 1 only; an odd total puts the extra zero at the end).
        groups: C_in and C_out are split into ``groups`` independent convolutions.
        bias: whether to add a learned per-channel bias.
        padding_mode: ``"zeros"`` only (torch's reflect, replicate and circular padding
            are refused with a ValueError).
        dtype: float32 (default) or float64.
        rng: numpy Generator or seed for the initial weights (Kaiming-uniform, as torch).

    Shape:
        Input (N, C_in, L) or (C_in, L) -> output (N, C_out, L_out) or (C_out, L_out),
        ``L_out = (L + pad_left + pad_right - dilation*(k - 1) - 1) // stride + 1``. weight:
        (C_out, C_in // groups, k); bias: (C_out,).

    Computed as Conv2d on the input seen as (N, C_in, 1, L) with the kernel seen as
    (C_out, C_in // groups, 1, k), by the same chunked kernels (see ``Conv2d`` for the
    memory bound ``max_workspace_bytes``).

    Backward:
        With ``X_col`` ``(C_in*k, N*L_out)`` the unfolded input and G ``(C_out, N*L_out)``
        the upstream gradient: ``dW = G @ X_col.T``, ``db = sum(G)``,
        ``dX = col2im(W.T @ G)`` (G correlated with the flipped kernel).
        ``backward(grad, needs_input_grad=False)`` computes dW and db only and returns None.
    """

    can_skip_input_grad = True
    _spatial_dims = 1

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", dtype: Any = DEFAULT_DTYPE,
                 rng: np.random.Generator | int | None = None) -> None:
        if padding_mode != "zeros":
            raise ValueError(f"{self._called_as(in_channels, out_channels, kernel_size)}: "
                             f"padding_mode must be 'zeros' (torch's 'reflect', 'replicate' and "
                             f"'circular' are not supported), got {padding_mode!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, dtype, rng)
        self.padding_mode = padding_mode


class ConvTranspose2d(_ConvBase):
    """2-D transposed convolution (the adjoint of Conv2d, sometimes called
    "deconvolution") over an (N, C_in, H, W) batch or one (C_in, H, W) image, with
    PyTorch's arguments in PyTorch's order.

    Args:
        in_channels: C_in, the channels of the input.
        out_channels: C_out, the channels of the output.
        kernel_size: int or (h, w) pair.
        stride: int or (h, w) pair.
        dilation: int or (h, w) pair, the spacing between kernel elements.
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
        Input (N, C_in, H, W) or (C_in, H, W) -> output (N, C_out, H_out, W_out) or (C_out,
        H_out, W_out) with
        ``H_out = (H - 1)*stride - 2*padding + dilation*(kh - 1) + output_padding + 1``. weight:
        (C_in, C_out // groups, kh, kw); bias: (C_out,).

    Forward: each input pixel scatters the kernel, times its value, into the output at
    ``stride`` spacing; overlaps add: ``y = col2im(W.T @ x)`` cropped by ``padding``,
    plus the bias. That is the input gradient of Conv2d(C_out -> C_in) with the same
    weight, stride, padding and dilation, and is computed by the same kernel.

    Backward:
        With G (N, C_out, H_out, W_out) the upstream gradient: ``dX = correlate(G, W)`` (the
        Conv2d forward of G zero-padded by ``padding``, at the stride), ``dW = correlate(G, X)``
        (that Conv2d's weight gradient with the roles of input and gradient swapped: G is
        unfolded, X multiplies it), ``db = sum(G)``. Memory is bounded by Conv2d's batch chunks
        (``max_workspace_bytes``, see ``Conv2d``). ``backward(grad, needs_input_grad=False)``
        computes dW and db only and returns None.
    """

    can_skip_input_grad = True
    _spatial_dims = 2
    _transposed = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, output_padding: Any = 0, groups: int = 1, bias: bool = True,
                 dilation: Any = 1, dtype: Any = DEFAULT_DTYPE,
                 rng: np.random.Generator | int | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, groups, bias,
                         dtype, rng)
        name = self._called_as(in_channels, out_channels, kernel_size)
        self.padding = to_pair(padding, "padding", name, 0)
        self.output_padding = to_pair(output_padding, "output_padding", name, 0)
        for extra, s, d in zip(self.output_padding, self.stride, self.dilation):
            if extra >= s and extra >= d:   # torch's condition, checked at its forward
                raise ValueError(
                    f"{name}: output_padding must be smaller than either stride or dilation in "
                    f"each dimension, got output_padding={output_padding!r} with "
                    f"stride={stride!r}, dilation={dilation!r}")

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
