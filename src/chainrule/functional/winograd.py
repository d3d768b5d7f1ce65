"""Winograd F(2x2, 3x3): 3x3 convolutions with stride 1, dilation 1 and one group.

Each 2x2 block of outputs (a *tile*) is computed from the 4x4 block of the padded
input that it reads, with 16 multiplications per input and output channel instead of
36 (2.25x fewer; Lavin and Gray, 2015). With the transform matrices

    B^T = [[1,  0, -1,  0],      G = [[1,    0,    0  ],      A^T = [[1, 1,  1,  0],
           [0,  1,  1,  0],           [1/2,  1/2,  1/2],             [0, 1, -1, -1]]
           [0, -1,  1,  0],           [1/2, -1/2,  1/2],
           [0,  1,  0, -1]]           [0,    0,    1  ]]

a tile of output channel k is ``Y = A^T [sum_c (G g[k,c] G^T) * (B^T d[c] B)] A``, with
``g[k, c]`` the 3x3 kernel, ``d[c]`` the 4x4 input block and ``*`` element-wise. For
all tiles at once, with P tiles and the 16 positions t of a 4x4 block:

    U (16, K, C) = G g G^T              the kernel transform (once per call, NumPy)
    V (16, C, P) = B^T d B              the input transform
    M (16, K, P) = U @ V                16 matrix products (BLAS)
    Y (K, N, H_out, W_out) = A^T M A    the output transform

Backward runs the same steps transposed (the adjoint of each linear map):

    dM (16, K, P) = A dY A^T            the output gradient's transform
    dU (16, K, C) = dM @ V^T;  dW = G^T dU G      (sum over tiles: the weight gradient)
    dV (16, C, P) = U^T @ dM;  dx = sum over tiles of B dV B^T    (overlapping 4x4 blocks)

The transforms are additions and subtractions only (G's halves are exact), done by
compiled loops (``_compiled``, Numba) or, without Numba, by their NumPy twins here; the
products go through BLAS. Arrays are channel-major as in ``functional.conv``: the padded
input ``xp`` (C, N, Hp, Wp), the output and its gradient (K, N, H_out, W_out), with
``H_out = Hp - 2``. Tiles: ``th = ceil(H_out / 2)`` by ``tw = ceil(W_out / 2)`` per
image, tile p = (image, ty, tx) in row-major order; an odd H_out or W_out gives a last
row or column of tiles that reads one zero past the input and drops one output.

The batch is processed in chunks of images, as ``functional.conv`` does: each worker
thread transforms its chunk into scratch buffers V and M of (16, C or K, chunk tiles),
multiplies and transforms back while they are in cache. Nothing of the batch's size is
allocated beyond the output and the input gradient.
"""

from __future__ import annotations

import os

import numpy as np

from . import _compiled
from ._parallel import num_workers, product_in_thread, run_split, scratch
from .conv import _chunks, _summed
from .im2col import Padding4, pad_channel_major

# The transform matrices (see the module docstring).
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)


# Which layers take this path (``applies``), from the per-layer A/B (BENCHMARKS.md, issue
# 18 round 3). At least MIN_IN_CHANNELS input channels: below, the products are too thin
# to gain what the transforms cost (a 3 -> 32 first layer: forward 1.2-2.2x slower than
# im2col). And more output than input channels, or at least MIN_OUT_CHANNELS: where
# C_out <= C_in < 64, im2col's row-unfolding forward (``functional.conv._forward_rows``)
# is as fast or faster (32 -> 32 at 32x32: forward 1.1-1.5x slower by Winograd, forward
# + backward 1.02-1.15x; 64 -> 32 at 16x16: 0.9-1.2x), while 16 -> 32, 32 -> 64, 64 -> 64,
# 64 -> 128 and 128 -> 128 run at 0.59-1.05x of im2col's time (mostly 0.7-0.9x).
MIN_IN_CHANNELS = 16
MIN_OUT_CHANNELS = 64


def wanted() -> bool:
    """The default of ``Conv2d.winograd``: True unless the environment variable
    ``CHAINRULE_WINOGRAD`` is ``0`` (or false, no, off)."""
    return os.environ.get("CHAINRULE_WINOGRAD", "1").strip().lower() not in (
        "0", "false", "no", "off", "")


def applies(weight_shape: tuple[int, ...], stride, dilation, groups: int,
            out_hw: tuple[int, int], itemsize: int, workspace_bytes: int | None) -> bool:
    """Whether a layer's convolution pays by this path: ``eligible``, compiled
    transforms (Numba on; the NumPy twins are for checking, not speed), the channel
    counts above (``MIN_IN_CHANNELS``, ``MIN_OUT_CHANNELS``), and one image's buffers
    within the workspace."""
    c_out, c_in = weight_shape[:2]
    return (_compiled.ENABLED and eligible(weight_shape, stride, dilation, groups)
            and c_in >= MIN_IN_CHANNELS and (c_out > c_in or c_out >= MIN_OUT_CHANNELS)
            and fits(c_in, c_out, out_hw, itemsize, workspace_bytes))


def eligible(weight_shape: tuple[int, ...], stride, dilation, groups: int) -> bool:
    """Whether a convolution is one this module computes: a 3x3 kernel, stride 1,
    dilation 1, one group."""
    return (tuple(weight_shape[2:]) == (3, 3) and tuple(stride) == (1, 1)
            and tuple(dilation) == (1, 1) and groups == 1)


def tiles(out_hw: tuple[int, int]) -> tuple[int, int]:
    """(th, tw): 2x2 output tiles per image, ``ceil(H_out / 2)`` by ``ceil(W_out / 2)``."""
    return (out_hw[0] + 1) // 2, (out_hw[1] + 1) // 2


def _g_rows(a: np.ndarray, axis: int) -> np.ndarray:
    """G applied along ``axis`` (length 3 -> 4): (g0, (g0 + g1 + g2)/2, (g0 - g1 + g2)/2, g2)."""
    g0, g1, g2 = (np.take(a, i, axis=axis) for i in range(3))
    return np.stack([g0, (g0 + g1 + g2) * 0.5, (g0 - g1 + g2) * 0.5, g2], axis=axis)


def _gt_rows(a: np.ndarray, axis: int) -> np.ndarray:
    """G^T applied along ``axis`` (length 4 -> 3), the adjoint of ``_g_rows``:
    (u0 + (u1 + u2)/2, (u1 - u2)/2, (u1 + u2)/2 + u3)."""
    u0, u1, u2, u3 = (np.take(a, i, axis=axis) for i in range(4))
    return np.stack([u0 + (u1 + u2) * 0.5, (u1 - u2) * 0.5, (u1 + u2) * 0.5 + u3], axis=axis)


# The two kernel transforms are element-wise arithmetic, not products: a BLAS call here
# would run on every core between the threaded chunks, and OpenBLAS's helper threads keep
# spinning for a while after it (see _parallel.matmul): measured 1.4-2x slower layers
# at two threads when these were einsums.

def kernel_transform(weight: np.ndarray) -> np.ndarray:
    """U = G g G^T: (K, C, 3, 3) -> (16, K, C), in the weight's dtype."""
    u = _g_rows(_g_rows(weight, 3), 2)                                # (K, C, 4, 4)
    return np.ascontiguousarray(u.reshape(*weight.shape[:2], 16).transpose(2, 0, 1))


def kernel_transform_adjoint(du: np.ndarray) -> np.ndarray:
    """dW = G^T dU G: (16, K, C) -> (K, C, 3, 3), the adjoint of ``kernel_transform``."""
    k, c = du.shape[1:]
    u = du.transpose(1, 2, 0).reshape(k, c, 4, 4)
    return np.ascontiguousarray(_gt_rows(_gt_rows(u, 3), 2))


# ------------------------------------------------------------ NumPy twins of the transforms
# Same signatures and results as the compiled kernels in ``_compiled`` (which the library
# uses when Numba is on); written with array operations over all tiles at once.

def _tile_view(a: np.ndarray, th: int, tw: int, size: int, step: int) -> np.ndarray:
    """(..., th, tw, size, size) view of the ``size`` x ``size`` blocks of ``a`` (..., H, W)
    that start every ``step`` rows and columns."""
    *lead, sy, sx = a.strides
    return np.lib.stride_tricks.as_strided(
        a, a.shape[:-2] + (th, tw, size, size), tuple(lead) + (step * sy, step * sx, sy, sx),
        writeable=False)


def input_transform(xp: np.ndarray, v: np.ndarray) -> None:
    """V = B^T d B for every 4x4 input block. xp: (C, n, Hp, Wp); v: (16, C, n*th*tw),
    written. Rows and columns past the input (odd output sizes) read as zeros."""
    c, n, hp, wp = xp.shape
    th, tw = tiles((hp - 2, wp - 2))
    padded = np.zeros((c, n, 2 * th + 2, 2 * tw + 2), dtype=xp.dtype)
    padded[:, :, :hp, :wp] = xp
    d = _tile_view(padded, th, tw, 4, 2)                              # (C, n, th, tw, 4, 4)
    bt = BT.astype(xp.dtype)
    v.reshape(4, 4, c, n, th, tw)[...] = np.einsum("ai,cnyxij,bj->abcnyx", bt, d, bt,
                                                    optimize=True)


def output_transform(m: np.ndarray, bias: np.ndarray | None, out: np.ndarray) -> None:
    """Y = A^T M A (+ bias) for every tile. m: (16, K, n*th*tw); bias: (K,) or None;
    out: (K, n, H_out, W_out), written."""
    k, n, oh, ow = out.shape
    th, tw = tiles((oh, ow))
    at = AT.astype(m.dtype)
    y = np.einsum("ai,ijknyx,bj->knyaxb", at, m.reshape(4, 4, k, n, th, tw), at,
                  optimize=True).reshape(k, n, 2 * th, 2 * tw)
    out[...] = y[:, :, :oh, :ow]
    if bias is not None:
        out += bias.reshape(-1, 1, 1, 1)


def grad_transform(grad: np.ndarray, dm: np.ndarray) -> None:
    """dM = A dY A^T for every 2x2 tile of the output gradient (the adjoint of
    ``output_transform``). grad: (K, n, H_out, W_out); dm: (16, K, n*th*tw), written."""
    k, n, oh, ow = grad.shape
    th, tw = tiles((oh, ow))
    padded = np.zeros((k, n, 2 * th, 2 * tw), dtype=grad.dtype)
    padded[:, :, :oh, :ow] = grad
    dy = padded.reshape(k, n, th, 2, tw, 2)
    at = AT.astype(grad.dtype)
    dm.reshape(4, 4, k, n, th, tw)[...] = np.einsum("ia,knyixj,jb->abknyx", at, dy, at,
                                                     optimize=True)


def input_grad_transform(dv: np.ndarray, th: int, tw: int, top: int, left: int,
                         dx: np.ndarray) -> None:
    """dx = sum over tiles of B dV B^T (the adjoint of ``input_transform``: the 4x4 blocks
    overlap by two rows and columns), cropped to the unpadded input. dv: (16, C,
    n*th*tw); dx: (C, n, H, W), written; ``top``, ``left``: the padding before the input
    (padded row y is dx row y - top)."""
    c, n, h, w = dx.shape
    bt = BT.astype(dv.dtype)
    f = np.einsum("ai,abcnyx,bj->cnyixj", bt, dv.reshape(4, 4, c, n, th, tw), bt,
                  optimize=True)                                   # (C, n, th, 4, tw, 4)
    acc = np.zeros((c, n, th + 1, 2, tw + 1, 2), dtype=dv.dtype)   # the padded gradient
    for qy in (0, 1):              # the four 2x2 quarters of a 4x4 block, each a grid
        for qx in (0, 1):
            acc[:, :, qy:qy + th, :, qx:qx + tw, :] += f[:, :, :, 2 * qy:2 * qy + 2, :,
                                                         2 * qx:2 * qx + 2]
    acc = acc.reshape(c, n, 2 * th + 2, 2 * tw + 2)
    dx[...] = acc[:, :, top:top + h, left:left + w]


# ------------------------------------------------------------ the convolution, chunk by chunk

def _transforms():
    """(input, output, grad, input-grad) transforms: compiled when Numba is on."""
    if _compiled.ENABLED:
        return (_compiled.winograd_input_transform, _compiled.winograd_output_transform,
                _compiled.winograd_grad_transform, _compiled.winograd_input_grad_transform)
    return input_transform, output_transform, grad_transform, input_grad_transform


def scratch_bytes_per_image(c_in: int, c_out: int, out_hw: tuple[int, int], itemsize: int) -> int:
    """Bytes of the transformed buffers V and M of one image (16 values per tile and
    channel): what a chunk holds per image, 4/9 of im2col's columns for C_in = C_out."""
    th, tw = tiles(out_hw)
    return 16 * (c_in + c_out) * th * tw * itemsize


def fits(c_in: int, c_out: int, out_hw: tuple[int, int], itemsize: int,
         workspace_bytes: int | None) -> bool:
    """Whether one image per thread stays within ``workspace_bytes`` (else the caller
    takes the im2col path, which cuts an image into bands)."""
    return (workspace_bytes is None or scratch_bytes_per_image(c_in, c_out, out_hw, itemsize)
            * num_workers() <= workspace_bytes)


def winograd_forward(xp: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                     workspace_bytes: int | None = None) -> np.ndarray:
    """The 3x3 stride-1 convolution of a padded channel-major input by Winograd F(2x2, 3x3).

    Args:
        xp: (C_in, N, Hp, Wp) padded input.
        weight: (C_out, C_in, 3, 3); bias: (C_out,) or None.
        workspace_bytes: bound on the chunks' scratch buffers, all threads together.
    Returns:
        (C_out, N, Hp - 2, Wp - 2).
    """
    c_in, n, hp, wp = xp.shape
    c_out = weight.shape[0]
    out_hw = (hp - 2, wp - 2)
    th, tw = tiles(out_hw)
    u = kernel_transform(weight)                                       # (16, C_out, C_in)
    out = np.empty((c_out, n) + out_hw, dtype=xp.dtype)
    forward_in, forward_out, _, _ = _transforms()
    chunks = _chunks(n, scratch_bytes_per_image(c_in, c_out, out_hw, xp.dtype.itemsize),
                     workspace_bytes)

    def task(_: int, my_chunks) -> None:
        for start, stop in my_chunks:
            p = (stop - start) * th * tw
            # the im2col kernels' slots: one set of scratch buffers per thread
            v = scratch("cols", (16, c_in, p), xp.dtype)
            forward_in(xp[:, start:stop], v)
            m = scratch("z", (16, c_out, p), xp.dtype)
            product_in_thread(u, v, m)                                  # (16, C_out, p)
            forward_out(m, bias, out[:, start:stop])

    run_split(task, chunks)
    return out


def winograd_backward(xp: np.ndarray, weight: np.ndarray, grad: np.ndarray, padding: Padding4,
                      with_bias: bool, workspace_bytes: int | None = None,
                      input_grad: bool = True
                      ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of ``winograd_forward``, both by the transposed Winograd steps.

    Args:
        xp: (C_in, N, Hp, Wp) the padded input of the forward pass.
        weight: (C_out, C_in, 3, 3).
        grad: (C_out, N, Hp - 2, Wp - 2) upstream gradient, channel-major.
        padding: (top, bottom, left, right) that made ``xp`` from the input.
        input_grad: False skips dx (returned as None).
    Returns:
        dx (C_in, N, H, W) or None; dweight (C_out, C_in, 3, 3); dbias (C_out,) or None.
    """
    c_in, n, hp, wp = xp.shape
    c_out = weight.shape[0]
    top, bottom, left, right = padding
    out_hw = (hp - 2, wp - 2)
    th, tw = tiles(out_hw)
    grad = np.ascontiguousarray(grad)
    u_t = np.ascontiguousarray(kernel_transform(weight).transpose(0, 2, 1))  # (16, C_in, C_out)
    dx = (np.empty((c_in, n, hp - top - bottom, wp - left - right), dtype=grad.dtype)
          if input_grad else None)
    forward_in, _, grad_in, grad_out = _transforms()
    chunks = _chunks(n, scratch_bytes_per_image(c_in, c_out, out_hw, xp.dtype.itemsize),
                     workspace_bytes)

    def task(_: int, my_chunks):
        du = np.zeros((16, c_out, c_in), dtype=grad.dtype)
        part = np.empty_like(du)
        db = np.zeros(c_out, dtype=grad.dtype) if with_bias else None
        for start, stop in my_chunks:
            p = (stop - start) * th * tw
            v = scratch("cols", (16, c_in, p), xp.dtype)
            forward_in(xp[:, start:stop], v)
            dm = scratch("z", (16, c_out, p), xp.dtype)
            grad_in(grad[:, start:stop], dm)
            product_in_thread(dm, v.transpose(0, 2, 1), part)            # dU: (16, C_out, C_in)
            du += part
            if dx is not None:
                product_in_thread(u_t, dm, v)                           # dV, over V: (16, C_in, p)
                grad_out(v, th, tw, top, left, dx[:, start:stop])
            if db is not None:
                db += grad[:, start:stop].sum(axis=(1, 2, 3))
        return du, db

    du, dbias = _summed(run_split(task, chunks))
    return dx, kernel_transform_adjoint(du), dbias


def winograd_conv2d(x: np.ndarray, weight: np.ndarray, padding: int | Padding4 = 0,
                    bias: np.ndarray | None = None) -> np.ndarray:
    """A 3x3, stride-1 convolution (cross-correlation) of an (N, C_in, H, W) batch by
    Winograd F(2x2, 3x3) (the transforms in the module docstring).

    Args:
        x: (N, C_in, H, W).
        weight: (C_out, C_in, 3, 3); bias: (C_out,) or None.
        padding: zeros on every side, or (top, bottom, left, right).
    Returns:
        (N, C_out, H_out, W_out), ``H_out = H + top + bottom - 2``.
    """
    if weight.ndim != 4 or weight.shape[2:] != (3, 3) or weight.shape[1] != x.shape[1]:
        raise ValueError(f"winograd_conv2d: weight must be (C_out, {x.shape[1]}, 3, 3), "
                         f"got {weight.shape}")
    pad4 = (padding,) * 4 if isinstance(padding, int) else tuple(padding)
    xp = pad_channel_major(x, pad4)                                    # (C_in, N, Hp, Wp)
    if min(xp.shape[2:]) < 3:
        raise ValueError(f"winograd_conv2d: the padded input {xp.shape[2:]} is smaller "
                         "than the 3x3 kernel")
    return winograd_forward(xp, weight, bias).transpose(1, 0, 2, 3)
