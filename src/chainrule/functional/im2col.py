"""im2col and its adjoint col2im: the stateless kernels behind convolution.

Layout. Both work on a *channel-major* layout ``(C, N, H, W)`` internally: the columns
of one input channel and one kernel offset are then a single contiguous block of
``N * H_out * W_out`` values, so im2col is ``kh * kw`` slice copies and col2im is
``kh * kw`` slice additions (no Python loop over pixels or batch elements), and the
convolution itself is one matrix product per group.

Output size, per spatial dimension::

    H_out = (H + pad_top + pad_bottom - dilation * (kh - 1) - 1) // stride + 1
"""

from __future__ import annotations

import numpy as np

from ._parallel import parallel_slices, scratch

Pair = tuple[int, int]
Padding4 = tuple[int, int, int, int]  # (top, bottom, left, right)


def conv_output_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int,
                     dilation: int = 1) -> int:
    """Output length of a sliding window along one dimension (may be <= 0: the caller
    turns that into a clear error)."""
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


def pad_channel_major(x: np.ndarray, padding: Padding4, value: float = 0.0) -> np.ndarray:
    """Copy ``x`` (N, C, H, W) into a fresh padded array of layout (C, N, Hp, Wp).

    The transpose and the padding cost one copy together (only the border is filled,
    and large inputs are copied by the worker threads), and every later slice over a
    channel is contiguous in (N, Hp, Wp).
    """
    n, c, h, w = x.shape
    top, bottom, left, right = padding
    hp, wp = h + top + bottom, w + left + right
    out = np.empty((c, n, hp, wp), dtype=x.dtype)
    source = x.transpose(1, 0, 2, 3)                                # (C, N, H, W) view

    def piece(ix):
        block = out[ix]
        if top or bottom or left or right:
            block[:, :, :top] = value
            block[:, :, top + h:] = value
            block[:, :, top:top + h, :left] = value
            block[:, :, top:top + h, left + w:] = value
        block[:, :, top:top + h, left:left + w] = source[ix]

    parallel_slices(piece, out.shape, 0)
    return out


def _offset_slices(i: int, j: int, out_hw: Pair, stride: Pair, dilation: Pair):
    """Slices of the padded input that kernel offset (i, j) touches, one per output pixel."""
    sh, sw = stride
    dh, dw = dilation
    oh, ow = out_hw
    return (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
            slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


# im2col copies in two stages when the outputs are at most this wide and the stride
# along the height is 1 (``_two_stage_rows``). A one-stage copy of the (C, kh, kw, N,
# H_out, W_out) windows moves W_out-long runs, which NumPy copies slowly when short;
# the first of two stages copies kh times fewer such runs, the second whole (H_out,
# W_out) blocks. Measured, one thread, a chunk's unfolding: LeNet's 6 -> 16 layer
# (10x10 outputs) 1.68x faster, 3x3 kernels on 8x8 outputs 1.62-2.34x, on 16x16
# 1.09-1.42x, on 32x32 0.97-1.15x, 5x5 kernels on 32x32 1.26x; wider: about even.
MAX_TWO_STAGE_WIDTH = 32


def im2col(xp: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair,
           out: np.ndarray | None = None) -> np.ndarray:
    """Unfold a padded channel-major input into columns.

    Args:
        xp: (C, N, Hp, Wp) padded input, as made by ``pad_channel_major``.
        out: optional (C, kh, kw, N, H_out, W_out) array to write into.
    Returns:
        cols: (C, kh, kw, N, H_out, W_out); reshaped to (C*kh*kw, N*H_out*W_out) it is
        the right-hand matrix of the convolution GEMM.

    For narrow stride-1 outputs the copy goes through a per-thread scratch array of
    ``im2col_stage_bytes`` (see MAX_TWO_STAGE_WIDTH): first the kw column shifts,
    (C, kw, N, rows, W_out), then the kh row shifts of that, whose (H_out, W_out)
    blocks are contiguous.
    """
    c, n = xp.shape[:2]
    kh, kw = kernel
    cols = np.empty((c, kh, kw, n, *out_hw), dtype=xp.dtype) if out is None else out
    rows = _two_stage_rows(kernel, stride, dilation, out_hw)
    if not rows:
        np.copyto(cols, window_view(xp, kernel, stride, dilation, out_hw))
        return cols
    _check_windows_fit(xp.shape, kernel, stride, dilation, out_hw)
    oh, ow = out_hw
    s_c, s_n, s_h, s_w = xp.strides
    stage = scratch("im2col-stage", (c, kw, n, rows, ow), xp.dtype)
    # stage[c, j, n, r, x] = xp[c, n, r, x*sw + j*dw]
    np.copyto(stage, np.lib.stride_tricks.as_strided(
        xp, stage.shape, (s_c, dilation[1] * s_w, s_n, s_h, stride[1] * s_w), writeable=False))
    # cols[c, i, j, n, y, x] = stage[c, j, n, y + i*dh, x]
    t_c, t_j, t_n, t_r, t_x = stage.strides
    np.copyto(cols, np.lib.stride_tricks.as_strided(
        stage, (c, kh, kw, n, oh, ow), (t_c, dilation[0] * t_r, t_j, t_n, t_r, t_x),
        writeable=False))
    return cols


def _two_stage_rows(kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair) -> int:
    """Rows of the padded input that im2col's first stage copies; 0 for one stage."""
    (kh, _), (oh, ow) = kernel, out_hw
    if stride[0] != 1 or kh == 1 or ow > MAX_TWO_STAGE_WIDTH:
        return 0
    return oh + dilation[0] * (kh - 1)


def im2col_stage_bytes(channels: int, kernel: Pair, stride: Pair, dilation: Pair,
                       out_hw: Pair, itemsize: int) -> int:
    """Bytes per image of im2col's scratch for the two-stage copy (0 without it)."""
    return channels * kernel[1] * _two_stage_rows(kernel, stride, dilation, out_hw) \
        * out_hw[1] * itemsize


def window_view(xp: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair,
                out_hw: Pair) -> np.ndarray:
    """A read-only (C, kh, kw, N, H_out, W_out) view of a padded (C, N, Hp, Wp) input:
    element [c, i, j, n, y, x] is ``xp[c, n, y*sh + i*dh, x*sw + j*dw]``.

    Copying it is im2col in one NumPy call, instead of one per kernel offset: with two
    threads unfolding at once, every call is a point where they pass Python's GIL to
    each other (a context switch each on a loaded machine)."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    c, n = xp.shape[:2]
    _check_windows_fit(xp.shape, kernel, stride, dilation, out_hw)
    s_c, s_n, s_h, s_w = xp.strides
    # as_strided directly: sliding_window_view's checks cost 16 us a call, this 4 us
    return np.lib.stride_tricks.as_strided(
        xp, (c, kh, kw, n, oh, ow), (s_c, dh * s_h, dw * s_w, s_n, sh * s_h, sw * s_w),
        writeable=False)


def _check_windows_fit(shape: tuple[int, ...], kernel: Pair, stride: Pair, dilation: Pair,
                       out_hw: Pair) -> None:
    """Raise unless ``out_hw`` windows fit a padded (..., Hp, Wp) input: the unfolding
    views are made with as_strided, which does not check, and a view past the array
    would read foreign memory."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    hp, wp = shape[-2:]
    if sh * (oh - 1) + dh * (kh - 1) >= hp or sw * (ow - 1) + dw * (kw - 1) >= wp:
        raise ValueError(f"im2col: {out_hw} outputs of a {kernel} kernel (stride {stride}, "
                         f"dilation {dilation}) do not fit a padded input of {(hp, wp)}")


def col2im(cols: np.ndarray, padded_hw: Pair, stride: Pair, dilation: Pair,
           out: np.ndarray | None = None) -> np.ndarray:
    """The adjoint of ``im2col``: add every column entry back onto the input position it
    came from (overlapping windows *add*, they do not overwrite).

    Args:
        cols: (C, kh, kw, N, H_out, W_out).
        padded_hw: (Hp, Wp), the padded input size.
        out: optional (C, N, Hp, Wp) array to write the result into (overwritten).
    Returns:
        (C, N, Hp, Wp) gradient with respect to the padded, channel-major input.
    """
    c, kh, kw, n, oh, ow = cols.shape
    dxp = np.empty((c, n, *padded_hw), dtype=cols.dtype) if out is None else out
    if tuple(stride) == (1, 1):
        # Offset (0, 0) covers the block [:oh, :ow]: write it instead of adding it to
        # zeros, and zero only the rest.
        dxp[:, :, :oh, :ow] = cols[:, 0, 0]
        dxp[:, :, oh:] = 0
        dxp[:, :, :oh, ow:] = 0
        first = 1
    else:
        dxp.fill(0)
        first = 0
    for index in range(first, kh * kw):
        i, j = divmod(index, kw)
        rows, columns = _offset_slices(i, j, (oh, ow), stride, dilation)
        dxp[:, :, rows, columns] += cols[:, i, j]
    return dxp


def unpad_to_nchw(dxp: np.ndarray, padding: Padding4, hw: Pair) -> np.ndarray:
    """Crop a (C, N, Hp, Wp) padded gradient back to an (N, C, H, W) view."""
    top, _, left, _ = padding
    h, w = hw
    return dxp[:, :, top:top + h, left:left + w].transpose(1, 0, 2, 3)
