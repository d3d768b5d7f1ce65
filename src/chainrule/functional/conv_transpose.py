"""Transposed convolution: the adjoint of ``conv2d_forward``, run on conv2d's own kernels.

A transposed convolution with weight W (C_in, C_out // G, kh, kw) is the linear map
whose matrix is the transpose of a convolution's: the convolution from C_out to C_in
channels (weight W, the same array read as (C_out_conv, C_in_conv // G, kh, kw)) with
the same stride, padding and dilation, on an input of the transposed output's size.
Each of its three products is therefore one that ``functional.conv`` already computes:

    forward:          y = conv2d_input_gradient(W, x): col2im(W.T @ x), cropped
                      (each input pixel scatters a copy of the kernel, times its value)
    input gradient:   dx = conv2d_forward(pad(G), W): G correlated with the kernel
    weight gradient:  dW = the weight gradient of that convolution, with the padded G
                      as its input and x as its upstream gradient

so memory stays bounded by the same batch chunks (see ``functional.conv``). Arrays are
channel-major: x (C_in, N, H, W), y and G (C_out, N, H_out, W_out).

Output size per spatial dimension::

    H_out = (H - 1)*stride - 2*padding + dilation*(kh - 1) + output_padding + 1

``output_padding`` adds rows at the bottom (columns at the right) that the crop by
``padding`` would otherwise cut: it picks among the output sizes whose convolution
gives back H (the sizes a strided convolution maps to the same H).
"""

from __future__ import annotations

import numpy as np

from .conv import _weight_gradient, conv2d_forward, conv2d_input_gradient
from .im2col import Pair, pad_channel_major


def conv_transpose_output_size(size: int, kernel: int, stride: int, padding: int,
                               output_padding: int = 0, dilation: int = 1) -> int:
    """Output length of a transposed convolution along one dimension (may be <= 0:
    the caller turns that into a clear error)."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def conv_transpose2d_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                             stride: Pair, padding: Pair, dilation: Pair, groups: int,
                             out_hw: Pair, workspace_bytes: int | None = None) -> np.ndarray:
    """Transposed convolution of a channel-major input.

    Args:
        x: (C_in, N, H, W) input.
        weight: (C_in, C_out // G, kh, kw), G = ``groups`` (the weight alone cannot
            tell G: its first axis is C_in whatever G).
        bias: (C_out,) or None.
        padding: (ph, pw), cropped from both sides of the full output.
        out_hw: (H_out, W_out), ``output_padding`` included.
    Returns:
        (C_out, N, H_out, W_out), C-contiguous.
    """
    ph, pw = padding
    padded_hw = (out_hw[0] + 2 * ph, out_hw[1] + 2 * pw)
    out = conv2d_input_gradient(weight, x, groups, padded_hw, stride, dilation,
                                (ph, ph, pw, pw), workspace_bytes)        # (C_out, N, H_out, W_out)
    out = np.ascontiguousarray(out)
    if bias is not None:
        out += bias.reshape(-1, 1, 1, 1)
    return out


def conv_transpose2d_backward(x: np.ndarray, weight: np.ndarray, grad: np.ndarray, stride: Pair,
                              padding: Pair, dilation: Pair, groups: int, with_bias: bool,
                              workspace_bytes: int | None = None, input_grad: bool = True
                              ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of ``conv_transpose2d_forward``.

    Args:
        x: (C_in, N, H, W) the forward input, channel-major.
        weight: (C_in, C_out // G, kh, kw).
        grad: (C_out, N, H_out, W_out) upstream gradient, channel-major (a view is fine).
        with_bias: whether to return the bias gradient.
        input_grad: False skips dx (returned as None).
    Returns:
        dx: (C_in, N, H, W); dweight: (C_in, C_out // G, kh, kw); dbias: (C_out,) or None.

    dx is the convolution of G padded by ``padding`` with W (windows at the stride, only
    the first H x W of them: an ``output_padding`` of at least the stride leaves more);
    dW is that convolution's weight gradient with x in the role of its upstream gradient;
    it reads the columns of padded G that the product for dx unfolded, when they are
    small (``functional.conv.KEEP_COLUMNS_BYTES``), instead of unfolding G again.
    """
    h, w = x.shape[2:]
    kh, kw = weight.shape[2:]
    ph, pw = padding
    gp = pad_channel_major(grad.transpose(1, 0, 2, 3), (ph, ph, pw, pw))  # (C_out, N, Hp, Wp)
    dx = columns = None
    if input_grad:
        dx, columns = conv2d_forward(gp, weight, None, stride, dilation, (h, w), workspace_bytes,
                                     return_columns=True)                 # (C_in, N, H, W)
    dweight, _ = _weight_gradient(gp, np.ascontiguousarray(x), (kh, kw), groups, stride,
                                  dilation, False, workspace_bytes, columns)  # (G, C_in/G, K)
    dbias = grad.sum(axis=(1, 2, 3)) if with_bias else None
    return dx, dweight.reshape(weight.shape), dbias

