"""Stateless pooling kernels over the last two (spatial) axes of an array.

They accept any leading layout (N, C, ...) because pooling treats every channel of
every image alike. Each loops over kernel offsets only (kh * kw slices), never over
pixels. Output size per spatial dimension::

    H_out = (H + 2*pad - dilation*(k - 1) - 1) // stride + 1
"""

from __future__ import annotations

import numpy as np

from ._parallel import parallel_slices
from .im2col import Pair, _offset_slices


def pad_spatial(x: np.ndarray, padding: Pair, value: float) -> np.ndarray:
    """Pad the last two axes of ``x`` by ``padding`` = (ph, pw) on both sides."""
    ph, pw = padding
    if not ph and not pw:
        return x
    out = np.full((*x.shape[:-2], x.shape[-2] + 2 * ph, x.shape[-1] + 2 * pw), value, dtype=x.dtype)
    out[..., ph:ph + x.shape[-2], pw:pw + x.shape[-1]] = x
    return out


def _memory_order(a: np.ndarray) -> tuple[list[int], np.ndarray]:
    """A permutation of ``a``'s axes that puts the leading (non-spatial) axes in memory
    order, largest stride first, the two spatial axes last; and its inverse."""
    lead = a.ndim - 2
    order = sorted(range(lead), key=lambda ax: (-abs(a.strides[ax]) if a.shape[ax] > 1 else 0, ax))
    perm = order + [lead, lead + 1]
    return perm, np.argsort(perm)


def max_pool_forward(xp: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair,
                     out_hw: Pair, with_winner: bool = True
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """Max over each window of a (-inf padded) input.

    Args:
        xp: (..., Hp, Wp) padded input.
        with_winner: False skips the winners (inference needs no backward): None is
            returned in their place, and the maxima cost about half as much.
    Returns:
        out: (..., H_out, W_out) window maxima.
        winner: (..., H_out, W_out) uint8/uint16 index ``i * kw + j`` of the element that
            won the max: the *first* in row-major window order on ties, as in PyTorch.
            A NaN anywhere in a window propagates to the output, and the window's last
            NaN is its winner (as in PyTorch).

    Both outputs keep the memory order of ``xp``'s leading axes (a channel-major batch
    stays channel-major); large inputs are split over the worker threads.
    """
    kh, kw = kernel
    index_dtype = np.uint8 if kh * kw <= 256 else np.uint16
    offsets = [_offset_slices(i, j, out_hw, stride, dilation) for i in range(kh) for j in range(kw)]
    # Work on a view whose leading axes are in memory order, with outputs and
    # temporaries allocated C-ordered in that same order: every operand of every ufunc
    # then walks memory the same way (a channel-major view seen as (N, C, ...) would
    # otherwise be iterated against the grain of its temporaries).
    perm, inverse = _memory_order(xp)
    xq = xp.transpose(perm)
    out = np.empty((*xq.shape[:-2], *out_hw), dtype=xp.dtype)
    winner = np.empty(out.shape, dtype=index_dtype) if with_winner else None
    pairs = tuple(kernel) == (2, 2) and tuple(stride) == (2, 2) and tuple(dilation) == (1, 1)

    def piece(ix):
        x, best = xq[ix], out[ix]
        win = None if winner is None else winner[ix]
        if pairs:
            _max_pool_2x2(x, best, win)
        else:
            _max_pool_by_offsets(x, offsets, best, win)
        if win is not None and np.isnan(best).any():
            # Rare (training stops at a NaN loss anyway): route like torch, whose max
            # takes any NaN it meets, so a window's last NaN wins.
            for index, (rows, columns) in enumerate(offsets):
                win[np.isnan(x[..., rows, columns])] = index

    parallel_slices(piece, xq.shape, 0)         # pieces of the leading axis; size: all of x
    return out.transpose(inverse), None if winner is None else winner.transpose(inverse)


def _max_pool_by_offsets(x: np.ndarray, offsets: list, best: np.ndarray,
                         win: np.ndarray | None) -> None:
    """Any window: a running max over the kernel offsets, one strided view each (and
    the winners, unless ``win`` is None)."""
    np.copyto(best, x[(..., *offsets[0])])
    if win is None:
        for rows, columns in offsets[1:]:
            np.maximum(best, x[..., rows, columns], out=best)
        return
    win.fill(0)
    better = np.empty(best.shape, dtype=np.bool_)
    for index, (rows, columns) in enumerate(offsets[1:], start=1):
        candidate = x[..., rows, columns]
        # Strictly greater: an equal later element never takes over, so ties go to the
        # first element; np.maximum (not the mask) makes NaN propagate. Offsets come in
        # increasing index order, so the winner is the largest index that ever beat the
        # running max: win = max(win, index * better).
        np.greater(candidate, best, out=better)
        np.maximum(win, np.multiply(better, index, dtype=win.dtype), out=win)
        np.maximum(best, candidate, out=best)


# The 2x2 kernel works through its input in blocks of about this many bytes, so that its
# temporaries stay in the CPU caches between passes (5.1 against 7.2 ms, one thread,
# (4096, 32, 32) float32 in blocks of 4 x 128 images).
POOL_BLOCK_BYTES = 2 << 20


def _max_pool_2x2(x: np.ndarray, best: np.ndarray, win: np.ndarray | None) -> None:
    """``_max_pool_2x2_block`` over blocks of the leading axis (x: (L, ..., Hp, Wp))."""
    step = max(1, POOL_BLOCK_BYTES // max(1, x[0].nbytes))
    for start in range(0, x.shape[0], step):
        block = slice(start, start + step)
        _max_pool_2x2_block(x[block], best[block], None if win is None else win[block])


def _max_pool_2x2_block(x: np.ndarray, best: np.ndarray, win: np.ndarray | None) -> None:
    """2x2 windows with stride 2 (the common case): max of each row's pair of columns,
    then of the two rows, writing no array in place.

    The running max above updates ``best`` in place from a strided view of ``x``, and
    its speed then swings 3-4x with the two arrays' relative addresses (7 to 23 ms for
    the same (32, 128, 32, 32) input, measured: a store/load aliasing effect); these
    pairwise passes take the same time whatever the addresses. Ties: the left column
    wins within a row and the top row between rows, which is the first element in
    row-major window order, as the general path and torch choose."""
    oh, ow = best.shape[-2:]
    x = x[..., :2 * oh, :2 * ow]
    # Copied apart first: NumPy's maximum runs ~5x slower on stride-2 views than on
    # contiguous arrays, and the two copies cost less than that (3.2 ms against 1.3 +
    # 0.4 ms for a (4096, 32, 32) float32 input).
    left = np.empty(x.shape[:-1] + (ow,), dtype=x.dtype)     # (..., 2*oh, ow)
    right = np.empty_like(left)
    np.copyto(left, x[..., 0::2])
    np.copyto(right, x[..., 1::2])
    row_max = np.maximum(left, right)
    top, bottom = row_max[..., 0::2, :], row_max[..., 1::2, :]
    np.maximum(top, bottom, out=best)
    if win is None:
        return
    right_won = np.greater(right, left)
    bottom_won = np.greater(bottom, top)
    right_top, right_bottom = right_won[..., 0::2, :], right_won[..., 1::2, :]
    # the column chosen in the winning row: right_bottom where the bottom row won
    column = right_top ^ (bottom_won & (right_top ^ right_bottom))
    np.left_shift(bottom_won.view(np.uint8), 1, out=win)    # index = 2 * row + column
    win |= column.view(np.uint8)


def max_pool_backward(grad: np.ndarray, winner: np.ndarray, kernel: Pair, stride: Pair,
                      dilation: Pair, padded_hw: Pair) -> np.ndarray:
    """Route each output gradient to the input element that won its window's max.

    Args:
        grad: (..., H_out, W_out) upstream gradient.
        winner: (..., H_out, W_out) as returned by ``max_pool_forward``.
    Returns:
        (..., Hp, Wp) gradient with respect to the padded input; overlapping windows add.
        It has the memory order of ``winner``'s leading axes.
    """
    kh, kw = kernel
    oh, ow = grad.shape[-2:]
    perm, inverse = _memory_order(winner)
    winq, gradq = winner.transpose(perm), grad.transpose(perm)   # same memory order
    dxp = np.empty((*winq.shape[:-2], *padded_hw), dtype=grad.dtype)
    offsets = [_offset_slices(i, j, (oh, ow), stride, dilation) for i in range(kh) for j in range(kw)]
    # Windows that do not overlap (stride == kernel, no dilation) cover each input
    # element at most once: every offset *writes* its part, no zero-fill, no adds.
    disjoint = tuple(stride) == tuple(kernel) and tuple(dilation) == (1, 1)

    # 2x2 windows, stride 2, float32, rows starting 8-byte aligned: the bit-placing path.
    pairs = (disjoint and tuple(kernel) == (2, 2) and grad.dtype == np.float32
             and padded_hw[1] % 2 == 0 and np.little_endian)

    def piece(ix):
        g, win, dx = gradq[ix], winq[ix], dxp[ix]
        # g * won is the fast way to keep the winners' gradients, but inf * 0 is NaN:
        # with a non-finite gradient, add through the mask into zeros instead (losers
        # stay 0, as in torch). The bit-placing 2x2 path moves bits and needs neither.
        finite = pairs or bool(np.isfinite(g).all())
        if disjoint and finite:
            dx[..., oh * kh:, :] = 0                       # rows and columns no window
            dx[..., :oh * kh, ow * kw:] = 0                # reaches (remainders)
        else:
            dx.fill(0)
        if pairs:
            _max_pool_2x2_backward(g, win, dx[..., :2 * oh, :2 * ow])
            return
        won = np.empty(win.shape, dtype=np.bool_)
        for index, (rows, columns) in enumerate(offsets):
            np.equal(win, index, out=won)
            target = dx[..., rows, columns]
            if not finite:
                np.add(target, g, out=target, where=won)
            elif disjoint:
                np.multiply(g, won, out=target)
            else:
                target += g * won

    parallel_slices(piece, dxp.shape, 0)        # pieces of the leading axis; size: all of dx
    return dxp.transpose(inverse)


def _max_pool_2x2_backward(g: np.ndarray, win: np.ndarray, dx: np.ndarray) -> None:
    """Write each float32 gradient of ``g`` (..., oh, ow) into its window's winner of
    ``dx`` (..., 2*oh, 2*ow), every other element zero, with contiguous writes only.

    Writing through stride-2 views is what costs in the general path (~2.5 ns per
    element, four times over). Here each pair of neighbours in a row of ``dx`` is one
    64-bit word: the gradient's 32 bits go to the low half (the left column, on a
    little-endian machine) or the high half (the right column) by a shift of 0 or 32,
    the other half stays zero, and each of the two rows of a window is then a
    contiguous row of words. The bits are moved, not computed, so the result is exact."""
    bits = g.view(np.uint32).astype(np.uint64)
    right = np.bitwise_and(win, 1).astype(np.uint64)        # the winner's column
    right *= 32
    np.left_shift(bits, right, out=bits)
    bottom = np.greater_equal(win, 2)                       # the winner's row
    lower = np.multiply(bits, bottom, dtype=np.uint64)      # the bottom row's words
    bits -= lower                                           # the top row's words
    words = dx.view(np.uint64)                              # (..., 2*oh, ow)
    words[..., 0::2, :] = bits
    words[..., 1::2, :] = lower


def avg_pool_forward(xp: np.ndarray, kernel: Pair, stride: Pair, out_hw: Pair,
                     divisor: np.ndarray | float) -> np.ndarray:
    """Sum over each window of a zero-padded input, divided by ``divisor`` (a scalar, or
    an (H_out, W_out) array of per-window element counts)."""
    kh, kw = kernel
    out = np.zeros((*xp.shape[:-2], *out_hw), dtype=xp.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, columns = _offset_slices(i, j, out_hw, stride, (1, 1))
            out += xp[..., rows, columns]
    out /= divisor
    return out


def avg_pool_backward(grad: np.ndarray, kernel: Pair, stride: Pair, padded_hw: Pair,
                      divisor: np.ndarray | float) -> np.ndarray:
    """Spread each output gradient evenly (``grad / divisor``) over its window."""
    kh, kw = kernel
    share = grad / divisor
    dxp = np.zeros((*grad.shape[:-2], *padded_hw), dtype=grad.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, columns = _offset_slices(i, j, grad.shape[-2:], stride, (1, 1))
            dxp[..., rows, columns] += share
    return dxp


def window_counts(hw: Pair, kernel: Pair, stride: Pair, padding: Pair, out_hw: Pair) -> np.ndarray:
    """(H_out, W_out) number of *real* (non-padding) input elements in each window."""
    ones = pad_spatial(np.ones(hw, dtype=np.float64), padding, 0.0)
    return avg_pool_forward(ones, kernel, stride, out_hw, 1.0)


def adaptive_pool_matrix(size: int, out_size: int, dtype: np.dtype) -> np.ndarray:
    """(out_size, size) averaging matrix of adaptive pooling along one axis: row i
    averages input positions floor(i*size/out) .. ceil((i+1)*size/out) - 1, as torch.

    Adaptive average pooling is separable: out = P_h @ x @ P_w.T per channel.
    """
    matrix = np.zeros((out_size, size), dtype=np.float64)
    for i in range(out_size):  # loops over output cells of one axis, not pixels
        start = (i * size) // out_size
        end = -((-(i + 1) * size) // out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix.astype(dtype)
