"""Convolution as im2col + matrix product, computed over batch chunks.

All arrays are channel-major, as made by ``pad_channel_major``: the padded input ``xp``
is (C_in, N, Hp, Wp) and the output (C_out, N, H_out, W_out). The batch is cut into
chunks whose column matrix fits in the CPU caches (and never exceeds a workspace limit);
each chunk is unfolded (``im2col``), multiplied and, for the input gradient, folded back
(``col2im``) while its columns are still in cache, and the chunks are shared among
threads (see ``_parallel``). Nothing of size (C_in*kh*kw, N*H_out*W_out) is ever
allocated: the backward pass unfolds each chunk again from the kept padded input.

With K = C_in/G * kh * kw columns per group, L = H_out * W_out pixels, per group g:

    forward:          out[g] = W[g] (Og, K) @ cols[g] (K, N*L) + bias
    weight gradient:  dW[g] = (cols[g] (K, N*L) @ G[g].T).T
    input gradient:   dxp = col2im(W[g].T (K, Og) @ G[g]); for stride 1 with enough input
                      channels, the forward kernel applied to the padded G with the
                      flipped, transposed kernel instead. ``conv2d_input_gradient``
                      computes it alone: it is also the forward of a transposed
                      convolution (``conv_transpose``)

For stride 1 and one group, backward unfolds only the padded G: its columns give the
input gradient (flipped kernel) and the weight gradient (columns @ x.T) in one pass
(``_backward_flipped``). For stride 1 with many input and few output channels the
forward unfolds only the kernel's rows and turns its columns into shifted additions
(``_forward_rows``), a product shape BLAS runs faster. A stride-1 col2im for narrow
outputs adds each kernel offset's columns as one flat run per image
(``_input_gradient_flat``). Depthwise convolutions (one input channel per group) skip
im2col altogether: ``functional.depthwise``.

Output size per spatial dimension::

    H_out = (H + pad_top + pad_bottom - dilation * (kh - 1) - 1) // stride + 1
"""

from __future__ import annotations

import numpy as np

from .depthwise import (depthwise_forward, depthwise_input_gradient, depthwise_weight_gradient,
                        is_depthwise)
from ._parallel import (batch_chunks, even_chunks, matmul, num_workers, product_in_thread,
                        run_split, scratch)
from .im2col import (Padding4, Pair, col2im, im2col, im2col_stage_bytes, pad_channel_major,
                     window_view)

# Columns of one chunk: about this many bytes, so a chunk's columns stay in the caches
# between the copy that makes them and the product that reads them.
CHUNK_BYTES = 4 << 20


# Fewest input channels per group for which the stride-1 input gradient is computed as
# a convolution with the flipped kernel rather than by col2im.
MIN_FLIPPED_ROWS = 16

# Stride-1 forward by row unfolding (``_forward_rows``) when each group has at least
# MIN_ROW_UNFOLD_ROWS rows (C_in/G * kh) in its unfolded input, at most
# MAX_ROW_UNFOLD_OUT and no more output than input channels (where im2col's product
# has few rows and runs slowly: measured 20-25% faster for 32 -> 32 channels at 32x32,
# 5-10% for 64 -> 64 at 16x16, no gain for 32 -> 64 or 64 -> 128), and an output at least
# MIN_ROW_UNFOLD_WIDTH_RATIO times wider than the kernel's reach (the columns it
# computes and then drops).
MIN_ROW_UNFOLD_ROWS = 64
MAX_ROW_UNFOLD_OUT = 64
MIN_ROW_UNFOLD_WIDTH_RATIO = 6

# The stride-1 col2im works on a Wp-wide grid (``_input_gradient_flat``) for outputs at
# most this wide, where col2im's W_out-long runs cost more than the product's extra
# columns. Measured, two threads: flat / row-by-row time 0.60-0.90 for W_out 4-16
# (LeNet's 6 -> 16 layer: 0.92 vs 1.15 ms), 1.10-1.39 for W_out 28-32 (LeNet's first
# layer: 1.03 vs 0.76 ms), where the wider product and its columns, out of cache, cost more.
MAX_FLAT_COL2IM_WIDTH = 16

# Below this many bytes of columns in all, a layer is not split over the threads.
MIN_SPLIT_BYTES = 256 << 10

# A training forward keeps the unfolded input for the weight gradient when it is at most
# this big (LeNet-5's two layers at batch 64: 5 and 4 MiB), instead of backward
# unfolding the input again. Larger layers keep only their padded input (9x smaller
# for a 3x3 kernel).
KEEP_COLUMNS_BYTES = 8 << 20


def _band_plan(channels: int, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair,
               in_hw: Pair, itemsize: int, workspace_bytes: int | None
               ) -> tuple[int, list[tuple[slice, slice]]] | None:
    """Bands for an image that alone, one per thread, would pass ``workspace_bytes``:
    ``(axis, [(output slice, padded-input slice), ...])``, cut along the rows (axis 2)
    or, for a single output row (Conv1d, or a band of one row still too big), along the
    columns (axis 3). Each band of outputs ``[a, b)`` reads the inputs ``[a*stride,
    (b - 1)*stride + dilation*(k - 1) + 1)``; the kernels run on each band as on a
    smaller image. None: whole images fit, no bands.

    An image is cut when its columns (``channels * kh * kw`` rows, the larger of C_in
    and C_out, of H_out * W_out pixels) and im2col's staging pass the limit, the
    measure ``_chunks`` uses; a band's size then counts every input pixel it reads (the
    padded extent across the cut, the kernel's reach along it), which bounds the
    scratch of every kernel path."""
    if workspace_bytes is None:
        return None
    (oh, ow), (kh, kw) = out_hw, kernel
    axis = 2 if oh > 1 else 3
    n_out, k, s, d = ((oh, kh, stride[0], dilation[0]) if axis == 2
                      else (ow, kw, stride[1], dilation[1]))
    across, line_hw = ((max(in_hw[1], ow), (1, ow)) if axis == 2
                       else (max(in_hw[0], oh), (oh, 1)))
    reach = d * (k - 1)
    per_line = (channels * kh * kw * across * itemsize
                + im2col_stage_bytes(channels, kernel, stride, dilation, line_hw, itemsize))
    share = workspace_bytes // num_workers()
    # Whole images when one fits by the measure _chunks uses (its columns and staging).
    whole = (channels * kh * kw * oh * ow * itemsize
             + im2col_stage_bytes(channels, kernel, stride, dilation, out_hw, itemsize))
    if n_out <= 1 or whole <= share:
        return None
    size = max(1, (share // per_line - reach - 1) // s + 1)
    bands = []
    for a in range(0, n_out, size):
        b = min(a + size, n_out)
        bands.append((slice(a, b), slice(a * s, (b - 1) * s + reach + 1)))
    return axis, bands


def _at(axis: int, index: slice) -> tuple[slice, ...]:
    """The index of ``index`` along ``axis`` of a channel-major (C, N, H, W) array."""
    return (slice(None),) * axis + (index,)


def _band_hw(hw: Pair, axis: int, index: slice) -> tuple[int, int]:
    """``hw`` with the extent of ``index`` on the banded axis."""
    extent = index.stop - index.start
    return (extent, hw[1]) if axis == 2 else (hw[0], extent)


def _chunks(n: int, per_image: int, workspace_bytes: int | None,
            stage_per_image: int = 0) -> list[tuple[int, int]]:
    """(start, stop) image ranges: cache-sized (by ``per_image``, the bytes of a chunk's
    main scratch buffer per image); at least one per thread when the layer is big
    enough to share; and within ``workspace_bytes`` for the scratch buffers of every
    thread together, im2col's staging (``stage_per_image``) included (at least one
    image: the callers cut an image that alone passes the limit into bands,
    ``_band_plan``)."""
    workers = num_workers()
    images = max(1, CHUNK_BYTES // max(1, per_image))
    if n * per_image >= MIN_SPLIT_BYTES:
        images = min(images, -(-n // workers))
    if workspace_bytes is not None:
        images = min(images, max(1, workspace_bytes
                                 // max(1, (per_image + stage_per_image) * workers)))
    chunks = batch_chunks(n, images)
    count = min(n, -(-len(chunks) // workers) * workers)
    if len(chunks) > 1 and count != len(chunks) and n * per_image >= MIN_SPLIT_BYTES:
        # a multiple of the thread count (when there are images enough), so that the
        # threads get equal work: 5 chunks on 2 threads would leave one idle a fifth
        # of the time
        chunks = even_chunks(n, count)
    return chunks


def conv2d_forward(xp: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: Pair,
                   dilation: Pair, out_hw: Pair, workspace_bytes: int | None = None,
                   return_columns: bool = False):
    """Convolve a padded channel-major input.

    Args:
        xp: (C_in, N, Hp, Wp) padded input.
        weight: (C_out, C_in // G, kh, kw); the number of groups G is
            ``C_in // weight.shape[1]``.
        bias: (C_out,) or None.
        workspace_bytes: upper bound on the scratch memory of the column matrices.
        return_columns: also return the unfolded input for ``conv2d_backward(columns=)``:
            (C_in*kh*kw, N*H_out*W_out), or None where keeping it does not pay (see
            ``KEEP_COLUMNS_BYTES`` and ``_backward_reads_input_columns``).
    Returns:
        (C_out, N, H_out, W_out) output; with ``return_columns``, (output, columns).
    """
    c_in, n = xp.shape[:2]
    c_out, c_group, kh, kw = weight.shape
    if is_depthwise(c_in, weight.shape):
        out = depthwise_forward(xp, weight, bias, stride, dilation, out_hw)
        return (out, None) if return_columns else out
    plan = _band_plan(max(c_in, c_out), (kh, kw), stride, dilation, out_hw, xp.shape[2:],
                      xp.dtype.itemsize, workspace_bytes)
    if plan is not None:  # each band of outputs reads its own part of the input
        axis, bands = plan
        out = np.empty((c_out, n) + tuple(out_hw), dtype=xp.dtype)
        for out_part, in_part in bands:
            out[_at(axis, out_part)] = conv2d_forward(
                xp[_at(axis, in_part)], weight, bias, stride, dilation,
                _band_hw(out_hw, axis, out_part), workspace_bytes)
        return (out, None) if return_columns else out
    groups = c_in // c_group
    oh, ow = out_hw
    reach = xp.shape[3] - ow          # dilation * (kw - 1) when the stride is 1
    if tuple(stride) == (1, 1) and kw > 1 and _rows_pay_off(c_group, c_out // groups, kh, ow, reach):
        out = _forward_rows(xp, weight, bias, dilation, out_hw, workspace_bytes)
        return (out, None) if return_columns else out
    pixels = oh * ow
    k_all = c_in * kh * kw
    w3 = weight.reshape(groups, c_out // groups, c_group * kh * kw)    # (G, Og, K)
    out = np.empty((c_out, n, oh, ow), dtype=xp.dtype)
    out3 = out.reshape(groups, c_out // groups, n * pixels)             # (G, Og, N*L)
    per_image = k_all * pixels * xp.dtype.itemsize
    chunks = _chunks(n, per_image, workspace_bytes, im2col_stage_bytes(
        c_in, (kh, kw), stride, dilation, out_hw, xp.dtype.itemsize))
    columns = None
    keep_limit = KEEP_COLUMNS_BYTES if workspace_bytes is None else min(KEEP_COLUMNS_BYTES,
                                                                         workspace_bytes)
    if (return_columns and n * per_image <= keep_limit
            and _backward_reads_input_columns(c_group, groups, stride)):
        columns = np.empty((k_all, n * pixels), dtype=xp.dtype)

    def task(_: int, my_chunks) -> None:
        for start, stop in my_chunks:
            m = (stop - start) * pixels
            if columns is None:
                cols = scratch("cols", (k_all, m), xp.dtype)
            else:
                cols = columns[:, start * pixels:stop * pixels]          # rows N*L apart
            im2col(xp[:, start:stop], (kh, kw), stride, dilation, out_hw,
                   out=_reshaped_view(cols, (c_in, kh, kw, stop - start, oh, ow)))
            block = out3[:, :, start * pixels:stop * pixels]             # (G, Og, n*L)
            product_in_thread(w3, _reshaped_view(cols, (groups, c_group * kh * kw, m)), block)
            if bias is not None:
                block += bias.reshape(groups, -1, 1)

    run_split(task, chunks)
    return (out, columns) if return_columns else out


def _reshaped_view(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A view of ``a`` with ``shape``; raises rather than copies. For arrays written
    through the result: ``reshape`` would silently copy a slice that cannot be viewed
    so (a slice of the kept columns, of an output), and the writes would be lost."""
    view = a.view()
    view.shape = shape          # AttributeError where only a copy could have this shape
    return view


def _flipped_kernel_pays_off(c_group: int, stride: Pair) -> bool:
    """Whether a stride-1 input gradient is computed as the flipped-kernel convolution
    of G (enough input channels per group: ``MIN_FLIPPED_ROWS``), when the padding
    allows it (``conv2d_backward``)."""
    return tuple(stride) == (1, 1) and c_group >= MIN_FLIPPED_ROWS


def _backward_reads_input_columns(c_group: int, groups: int, stride: Pair) -> bool:
    """Whether ``conv2d_backward`` unfolds the input for the weight gradient when it
    computes the input gradient too: all but the one-group flipped-kernel backward,
    which takes dW from the columns of G. (Without the input gradient it always does.)"""
    return not (groups == 1 and _flipped_kernel_pays_off(c_group, stride))


def _rows_pay_off(c_group: int, out_group: int, kh: int, ow: int, reach: int) -> bool:
    """Whether the row-unfolding forward is the faster one (see ``*_ROW_UNFOLD_*``)."""
    return (c_group * kh >= MIN_ROW_UNFOLD_ROWS and out_group <= min(c_group, MAX_ROW_UNFOLD_OUT)
            and ow >= MIN_ROW_UNFOLD_WIDTH_RATIO * reach)


def _forward_rows(xp: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, dilation: Pair,
                  out_hw: Pair, workspace_bytes: int | None) -> np.ndarray:
    """Stride-1 forward that unfolds only the kernel's rows; its columns become shifts.

    ``rows`` (C_in*kh, n*H_out*Wp) holds, for each input channel and kernel row i, the
    padded rows ``i*dh .. i*dh + H_out`` at their full padded width Wp (kh contiguous
    blocks per channel and image, instead of im2col's kh*kw strided windows). One
    product with the kernel reordered to rows (o, j) and columns (c, i) gives Z
    (C_out*kw, n*H_out*Wp); the output is the sum over kernel columns j of Z[(o, j)]
    shifted left by j*dw:

        out[o, n, y, x] = sum_j Z[(o, j), n, y, x + j*dw]

    The product does (Wp / W_out - 1) more work than im2col's (the columns past each
    row's end, dropped by the shifts) but its shape, 3x more rows and 3x less depth for
    a 3x3 kernel, runs faster in BLAS when C_out is small, and the unfolding copies 3x
    less. Chosen by ``conv2d_forward`` for wide inputs with many input channels and few
    output channels (``*_ROW_UNFOLD_*``).
    """
    c_in, n, hp, wp = xp.shape
    c_out, c_group, kh, kw = weight.shape
    groups = c_in // c_group
    og = c_out // groups
    dh, dw = dilation
    oh, ow = out_hw
    # (G, Og*kw, Cg*kh): rows (o, j), columns (c, i)
    wr = np.ascontiguousarray(weight.reshape(groups, og, c_group, kh, kw).transpose(0, 1, 4, 2, 3)
                              ).reshape(groups, og * kw, c_group * kh)
    out = np.empty((c_out, n, oh, ow), dtype=xp.dtype)
    per_image = (c_in * kh + c_out * kw) * oh * wp * xp.dtype.itemsize
    chunks = _chunks(n, per_image, workspace_bytes)

    def task(_: int, my_chunks) -> None:
        for start, stop in my_chunks:
            m = stop - start
            rows = scratch("cols", (c_in, kh, m, oh, wp), xp.dtype)
            # one copy of kh-row windows: (C, kh, 1, m, oh, Wp) -> (C, kh, m, oh, Wp)
            np.copyto(rows, window_view(xp[:, start:stop], (kh, 1), (1, 1), (dh, 1),
                                        (oh, wp))[:, :, 0])
            z = scratch("z", (groups, og * kw, m * oh * wp), xp.dtype)
            np.matmul(wr, rows.reshape(groups, c_group * kh, m * oh * wp), out=z)
            z5 = z.reshape(c_out, kw, m, oh, wp)
            block = out[:, start:stop]                                    # (C_out, m, oh, ow)
            np.add(z5[:, 0, :, :, :ow], z5[:, 1, :, :, dw:dw + ow], out=block)
            for j in range(2, kw):
                block += z5[:, j, :, :, j * dw:j * dw + ow]
            if bias is not None:
                block += bias.reshape(-1, 1, 1, 1)

    run_split(task, chunks)
    return out


def conv2d_backward(xp: np.ndarray, weight: np.ndarray, grad: np.ndarray, stride: Pair,
                    dilation: Pair, padding: Padding4, with_bias: bool,
                    workspace_bytes: int | None = None, input_grad: bool = True,
                    columns: np.ndarray | None = None
                    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of ``conv2d_forward``.

    Args:
        xp: (C_in, N, Hp, Wp) the padded input of the forward pass.
        weight: (C_out, C_in // G, kh, kw).
        grad: (C_out, N, H_out, W_out) upstream gradient, channel-major.
        padding: (top, bottom, left, right) that made ``xp`` from the input.
        with_bias: whether to return the bias gradient.
        input_grad: False skips dx (returned as None): the weight gradient alone costs
            one unfolding of the input and one product.
        columns: the unfolded input, as returned by ``conv2d_forward(return_columns=True)``
            for this ``xp``: the weight gradient reads it instead of unfolding again.
    Returns:
        dx: (C_in, N, H, W) gradient with respect to the unpadded input (may be a view);
        dweight: (C_out, C_in // G, kh, kw); dbias: (C_out,) or None.

    For stride 1 the input gradient is itself a convolution: the upstream gradient,
    padded by ``dilation*(k - 1) - padding``, correlated with the kernel flipped in space
    and with in/out channels swapped. That reuses the forward kernel, and its matrix
    product (C_in x C_out*kh*kw) @ (C_out*kh*kw x pixels) runs faster than
    ``W.T @ G``, whose inner dimension is only C_out, followed by col2im's additions;
    but only when it has enough rows (``MIN_FLIPPED_ROWS`` input channels per group):
    for a first layer with 1 or 3 input channels col2im wins.
    """
    c_in, n, hp, wp = xp.shape
    c_out, c_group, kh, kw = weight.shape
    groups = c_in // c_group
    top, bottom, left, right = padding
    grad = np.ascontiguousarray(grad)
    if is_depthwise(c_in, weight.shape):
        dweight, dbias = depthwise_weight_gradient(xp, grad, (kh, kw), stride, dilation, with_bias)
        dx = (conv2d_input_gradient(weight, grad, groups, (hp, wp), stride, dilation, padding)
              if input_grad else None)
        return dx, dweight, dbias
    plan = _band_plan(max(c_in, c_out), (kh, kw), stride, dilation, grad.shape[2:], (hp, wp),
                      xp.dtype.itemsize, workspace_bytes)
    if plan is not None:
        return _backward_in_bands(xp, weight, grad, stride, dilation, padding, with_bias,
                                  workspace_bytes, input_grad, *plan)
    reach = (dilation[0] * (kh - 1), dilation[1] * (kw - 1))
    grad_padding = (reach[0] - top, reach[0] - bottom, reach[1] - left, reach[1] - right)
    flipped_path = _flipped_kernel_pays_off(c_group, stride) and min(grad_padding) >= 0
    if not input_grad:
        dweight, dbias = _weight_gradient(xp, grad, (kh, kw), groups, stride, dilation,
                                          with_bias, workspace_bytes, columns)
        return None, dweight.reshape(weight.shape), dbias
    if flipped_path and groups == 1:
        return _backward_flipped(xp, weight, grad, dilation, padding, grad_padding, with_bias,
                                 workspace_bytes)
    dweight, dbias = _weight_gradient(xp, grad, (kh, kw), groups, stride, dilation, with_bias,
                                      workspace_bytes, columns)
    dx = conv2d_input_gradient(weight, grad, groups, (hp, wp), stride, dilation, padding,
                               workspace_bytes)
    return dx, dweight.reshape(weight.shape), dbias


def _backward_in_bands(xp: np.ndarray, weight: np.ndarray, grad: np.ndarray, stride: Pair,
                       dilation: Pair, padding: Padding4, with_bias: bool,
                       workspace_bytes: int | None, input_grad: bool, axis: int,
                       bands: list[tuple[slice, slice]]
                       ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``conv2d_backward`` one band of outputs at a time (``_band_plan``): the bands'
    weight and bias gradients add up, and so do their gradients of their own parts of
    the padded input (which overlap by the kernel's reach)."""
    c_in, n, hp, wp = xp.shape
    top, bottom, left, right = padding
    dxp = np.zeros_like(xp) if input_grad else None
    dweight = np.zeros(weight.shape, dtype=weight.dtype)
    dbias = np.zeros(weight.shape[0], dtype=weight.dtype) if with_bias else None
    for out_part, in_part in bands:
        dx_band, dw_band, db_band = conv2d_backward(
            xp[_at(axis, in_part)], weight, grad[_at(axis, out_part)], stride, dilation,
            (0, 0, 0, 0), with_bias, workspace_bytes, input_grad)
        dweight += dw_band
        if dbias is not None:
            dbias += db_band
        if dxp is not None:
            dxp[_at(axis, in_part)] += dx_band
    dx = None if dxp is None else dxp[:, :, top:hp - bottom, left:wp - right]
    return dx, dweight, dbias


def conv2d_input_gradient(weight: np.ndarray, grad: np.ndarray, groups: int, padded_hw: Pair,
                          stride: Pair, dilation: Pair, padding: Padding4,
                          workspace_bytes: int | None = None) -> np.ndarray:
    """dL/dx of ``conv2d_forward`` alone: ``col2im(W.T @ G)`` cropped to the input.

    Args:
        weight: (C_out, C_in // G, kh, kw).
        grad: (C_out, N, H_out, W_out) upstream gradient, channel-major. It may have
            fewer rows or columns than the padded input gives windows (the last outputs
            of the convolution dropped): ``conv_transpose2d_forward`` with an
            ``output_padding`` of at least the stride, where the dilation allows it.
        padded_hw: (Hp, Wp) of the padded input; padding: (top, bottom, left, right).
    Returns:
        (C_in, N, H, W), ``H = Hp - top - bottom`` (may be a view of a padded array).

    Stride 1 with enough input channels per group (``MIN_FLIPPED_ROWS``): the forward
    kernel applied to G padded by ``dilation*(k - 1) - padding`` (more at the end for
    dropped outputs) with the kernel flipped and its channels swapped (see
    ``conv2d_backward``); else col2im, on a Wp-wide grid for narrow stride-1 outputs.
    """
    c_out, c_group, kh, kw = weight.shape
    c_in = c_group * groups
    _, _, oh, ow = grad.shape
    hp, wp = padded_hw
    top, bottom, left, right = padding
    h, w = hp - top - bottom, wp - left - right
    grad = np.ascontiguousarray(grad)
    if is_depthwise(c_in, weight.shape):
        dxp = depthwise_input_gradient(weight, grad, c_in, (hp, wp), stride, dilation)
        return dxp[:, :, top:top + h, left:left + w]
    plan = _band_plan(max(c_in, c_out), (kh, kw), stride, dilation, (oh, ow), (hp, wp),
                      grad.dtype.itemsize, workspace_bytes)
    if plan is not None:  # bands of G; their gradients overlap by the kernel's reach
        axis, bands = plan
        dxp = np.zeros((c_in, grad.shape[1], hp, wp), dtype=grad.dtype)
        for out_part, in_part in bands:
            dxp[_at(axis, in_part)] += conv2d_input_gradient(
                weight, grad[_at(axis, out_part)], groups, _band_hw((hp, wp), axis, in_part),
                stride, dilation, (0, 0, 0, 0), workspace_bytes)
        return dxp[:, :, top:top + h, left:left + w]
    # G padded so that output y of the flipped convolution sees G[y + top - i*dh]: before
    # by the kernel's reach less the padding, after up to h + reach rows in all.
    grad_padding = (dilation[0] * (kh - 1) - top, hp - bottom - oh,
                    dilation[1] * (kw - 1) - left, wp - right - ow)
    if _flipped_kernel_pays_off(c_group, stride) and min(grad_padding) >= 0:
        og = c_out // groups
        flipped = weight.reshape(groups, og, c_group, kh, kw).transpose(0, 2, 1, 3, 4)
        flipped = np.ascontiguousarray(flipped[..., ::-1, ::-1]).reshape(c_in, og, kh, kw)
        gp = pad_channel_major(grad.transpose(1, 0, 2, 3), grad_padding)   # (C_out, N, ., .)
        return conv2d_forward(gp, flipped, None, (1, 1), dilation, (h, w), workspace_bytes)
    if tuple(stride) == (1, 1) and ow <= MAX_FLAT_COL2IM_WIDTH:
        dxp = _input_gradient_flat(weight, grad, groups, (hp, wp), dilation, workspace_bytes)
    else:
        dxp = _input_gradient_col2im(weight, grad, groups, (hp, wp), stride, dilation,
                                     workspace_bytes)
    return dxp[:, :, top:top + h, left:left + w]


def _backward_flipped(xp: np.ndarray, weight: np.ndarray, grad: np.ndarray, dilation: Pair,
                      padding: Padding4, grad_padding: Padding4, with_bias: bool,
                      workspace_bytes: int | None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Stride 1, one group: both gradients from the columns of the padded upstream
    gradient, unfolded once per chunk.

    With ``gcols`` (C_out*kh*kw, n*H*W) the im2col of G padded by ``reach - padding``
    (offsets in flipped order) and ``x`` (C_in, n*H*W) the unpadded input of the chunk:

        dx  (C_in, n*H*W)       = W_flipped (C_in, C_out*kh*kw) @ gcols
        dWf (C_out*kh*kw, C_in) = gcols @ x.T

    since dW[o, c, i, j] = sum_p x[c, p] * G[o, p + pad - dilation*(i, j)], which is row
    (o, kh-1-i, kw-1-j) of gcols. One unfolding (and one pass of the columns through
    the cache) serves both products, instead of unfolding the input for dW as well.
    """
    c_in, n, hp, wp = xp.shape
    c_out, _, kh, kw = weight.shape
    top, bottom, left, right = padding
    h, w = hp - top - bottom, wp - left - right
    pixels = h * w
    flipped = np.ascontiguousarray(weight.transpose(1, 0, 2, 3)[..., ::-1, ::-1])
    wf2 = flipped.reshape(c_in, c_out * kh * kw)                       # (C_in, C_out*kh*kw)
    gp = pad_channel_major(grad.transpose(1, 0, 2, 3), grad_padding)  # (C_out, N, ., .)
    dx = np.empty((c_in, n, h, w), dtype=grad.dtype)
    dx2 = dx.reshape(c_in, n * pixels)
    per_image = (c_out * kh * kw + c_in) * pixels * grad.dtype.itemsize  # gcols + x chunk
    chunks = _chunks(n, per_image, workspace_bytes, im2col_stage_bytes(
        c_out, (kh, kw), (1, 1), dilation, (h, w), grad.dtype.itemsize))

    def task(_: int, my_chunks):
        dwf = np.zeros((c_out * kh * kw, c_in), dtype=grad.dtype)
        part = np.empty_like(dwf)
        db = np.zeros(c_out, dtype=grad.dtype) if with_bias else None
        for start, stop in my_chunks:
            m = (stop - start) * pixels
            gcols = scratch("cols", (c_out, kh, kw, stop - start, h, w), grad.dtype)
            im2col(gp[:, start:stop], (kh, kw), (1, 1), dilation, (h, w), out=gcols)
            g2 = gcols.reshape(-1, m)                                    # (C_out*kh*kw, n*L)
            np.matmul(wf2, g2, out=dx2[:, start * pixels:stop * pixels])
            xc = scratch("x", (c_in, stop - start, h, w), grad.dtype)   # unpadded input
            np.copyto(xc, xp[:, start:stop, top:top + h, left:left + w])
            np.matmul(g2, xc.reshape(c_in, m).T, out=part)              # (C_out*kh*kw, C_in)
            dwf += part
            if db is not None:
                db += grad[:, start:stop].reshape(c_out, -1).sum(axis=1)
        return dwf, db

    dwf, dbias = _summed(run_split(task, chunks))
    # rows are (o, kh-1-i, kw-1-j): flip back and put C_in second
    dweight = np.ascontiguousarray(
        dwf.reshape(c_out, kh, kw, c_in)[:, ::-1, ::-1, :].transpose(0, 3, 1, 2))
    return dx, dweight, dbias


def _weight_gradient(xp: np.ndarray, grad: np.ndarray, kernel: Pair, groups: int, stride: Pair,
                     dilation: Pair, with_bias: bool, workspace_bytes: int | None,
                     columns: np.ndarray | None = None):
    """dW (G, Og, K) = transpose of the sum over chunks of cols (K, n*L) @ G.T (n*L, Og);
    db = sum(G). The columns are unfolded chunk by chunk, or read from the kept
    ``columns`` (C_in*kh*kw, N*L) when given: for one group as one product whose rows
    are shared among the threads (no unfolding left to keep in cache; LeNet's first
    layer has only 25 x 6 outputs, too few to give each thread a chunk's product)."""
    c_in, n = xp.shape[:2]
    c_out, _, oh, ow = grad.shape
    kh, kw = kernel
    plan = (None if columns is not None else
            _band_plan(c_in, kernel, stride, dilation, (oh, ow), xp.shape[2:], xp.dtype.itemsize,
                       workspace_bytes))
    if plan is not None:  # the sum of the bands' weight gradients
        axis, bands = plan
        dweight, dbias = None, None
        for out_part, in_part in bands:
            dw, db = _weight_gradient(xp[_at(axis, in_part)],
                                      np.ascontiguousarray(grad[_at(axis, out_part)]),
                                      kernel, groups, stride, dilation, with_bias,
                                      workspace_bytes)
            dweight = dw if dweight is None else dweight + dw
            dbias = db if dbias is None else dbias + db
        return dweight, dbias
    pixels = oh * ow
    grad3 = grad.reshape(groups, c_out // groups, n * pixels)          # (G, Og, N*L)
    if columns is not None and groups == 1:
        dweight_t = matmul(columns, grad3[0].T)                         # (K, C_out)
        dbias = grad3[0].sum(axis=1) if with_bias else None
        return np.ascontiguousarray(dweight_t.T).reshape(1, c_out, -1), dbias
    k_group = c_in // groups * kh * kw
    per_image = c_in * kh * kw * pixels * xp.dtype.itemsize
    chunks = _chunks(n, per_image, workspace_bytes, im2col_stage_bytes(
        c_in, kernel, stride, dilation, (oh, ow), xp.dtype.itemsize))

    def task(_: int, my_chunks):
        # dW.T = cols @ G.T, (K, Og): OpenBLAS runs this orientation (the long pixel
        # axis as the inner dimension of two row-major operands, the wide K as rows)
        # 8-30% faster than G @ cols.T for these narrow Og (BENCHMARKS.md, round 2).
        dwt = np.zeros((groups, k_group, c_out // groups), dtype=xp.dtype)
        part = np.empty_like(dwt)
        db = np.zeros(c_out, dtype=xp.dtype) if with_bias else None
        for start, stop in my_chunks:
            m = (stop - start) * pixels
            if columns is None:
                cols = scratch("cols", (c_in * kh * kw, m), xp.dtype)
                im2col(xp[:, start:stop], kernel, stride, dilation, (oh, ow),
                       out=_reshaped_view(cols, (c_in, kh, kw, stop - start, oh, ow)))
            else:
                cols = columns[:, start * pixels:stop * pixels]
            g = grad3[:, :, start * pixels:stop * pixels]                 # (G, Og, n*L)
            product_in_thread(_reshaped_view(cols, (groups, k_group, m)), g.transpose(0, 2, 1),
                              part)                                        # (G, K, Og)
            dwt += part
            if db is not None:
                db += g.sum(axis=2).reshape(c_out)
        return dwt, db

    dweight_t, dbias = _summed(run_split(task, chunks))
    return np.ascontiguousarray(dweight_t.transpose(0, 2, 1)), dbias   # (G, Og, K)


def _summed(parts: list[tuple[np.ndarray, np.ndarray | None]]
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """The sum of the threads' (weight gradient, bias gradient or None) partial sums,
    added into the first thread's arrays."""
    total, total_bias = parts[0]
    for part, bias in parts[1:]:
        total += part
        if total_bias is not None:
            total_bias += bias
    return total, total_bias


def _input_gradient_col2im(weight: np.ndarray, grad: np.ndarray, groups: int, padded_hw: Pair,
                           stride: Pair, dilation: Pair, workspace_bytes: int | None) -> np.ndarray:
    """dxp (C_in, N, Hp, Wp) = col2im(W.T @ G), chunk by chunk: any stride."""
    c_out, c_group, kh, kw = weight.shape
    c_in = c_group * groups
    _, n, oh, ow = grad.shape
    pixels = oh * ow
    wt = weight.reshape(groups, c_out // groups, -1).transpose(0, 2, 1)  # (G, K, Og)
    grad3 = grad.reshape(groups, c_out // groups, n * pixels)            # (G, Og, N*L)
    dxp = np.empty((c_in, n, *padded_hw), dtype=grad.dtype)
    per_image = c_in * kh * kw * pixels * grad.dtype.itemsize
    chunks = _chunks(n, per_image, workspace_bytes)

    def task(_: int, my_chunks) -> None:
        for start, stop in my_chunks:
            m = (stop - start) * pixels
            # the same per-thread slot as the columns: one scratch buffer per thread
            dcols = scratch("cols", (groups, c_group * kh * kw, m), grad.dtype)
            product_in_thread(wt, grad3[:, :, start * pixels:stop * pixels], dcols)  # (G, K, n*L)
            col2im(dcols.reshape(c_in, kh, kw, stop - start, oh, ow), padded_hw, stride,
                   dilation, out=dxp[:, start:stop])

    run_split(task, chunks)
    return dxp


def _input_gradient_flat(weight: np.ndarray, grad: np.ndarray, groups: int, padded_hw: Pair,
                         dilation: Pair, workspace_bytes: int | None) -> np.ndarray:
    """Stride-1 dxp (C_in, N, Hp, Wp) = col2im(W.T @ G), the columns on a Wp-wide grid.

    col2im adds each kernel offset's block (n, H_out, W_out) into the padded gradient,
    row by row: W_out-long runs, which for small images (LeNet's 10x10) cost NumPy more
    per element than the product itself. Here G is first widened to Wp columns, zeros
    past W_out, so each offset's columns, read as one flat run per image, land at a
    flat shift ``i*dh*Wp + j*dw`` of the image: one long addition per offset. The zero
    columns add nothing where they land (into the next row or past the image's end,
    which is cut off). The product does Wp/W_out times the work (1.4x for LeNet's
    second layer); measured, one thread, 32 images of LeNet's 6->16 layer: 0.93 ->
    0.63 ms.
    """
    c_out, c_group, kh, kw = weight.shape
    c_in = c_group * groups
    og = c_out // groups
    _, n, oh, ow = grad.shape
    hp, wp = padded_hw
    dh, dw = dilation
    wt = weight.reshape(groups, og, -1).transpose(0, 2, 1)               # (G, K, Og)
    dxp = np.empty((c_in, n, hp, wp), dtype=grad.dtype)
    run = oh * wp                                  # one image's columns, garbage included
    per_image = c_in * kh * kw * run * grad.dtype.itemsize
    chunks = _chunks(n, per_image, workspace_bytes)

    def task(_: int, my_chunks) -> None:
        for start, stop in my_chunks:
            m = stop - start
            wide = scratch("wide", (groups, og, m, oh, wp), grad.dtype)  # G, zero-widened
            wide[..., ow:] = 0
            wide[..., :ow] = grad[:, start:stop].reshape(groups, og, m, oh, ow)
            dcols = scratch("cols", (groups, c_group * kh * kw, m * run), grad.dtype)
            product_in_thread(wt, wide.reshape(groups, og, m * run), dcols)   # (G, K, m*oh*Wp)
            cols = dcols.reshape(c_in, kh, kw, m, run)
            flat = _reshaped_view(dxp[:, start:stop], (c_in, m, hp * wp))
            # offset (0, 0) covers the first oh*Wp of each image: written, the rest zeroed
            flat[:, :, :run] = cols[:, 0, 0]
            flat[:, :, run:] = 0
            for index in range(1, kh * kw):
                i, j = divmod(index, kw)
                shift = i * dh * wp + j * dw
                length = min(run, hp * wp - shift)  # what falls past the image is zeros
                flat[:, :, shift:shift + length] += cols[:, i, j, :, :length]

    run_split(task, chunks)
    return dxp
