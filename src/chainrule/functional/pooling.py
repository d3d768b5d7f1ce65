"""Stateless pooling kernels over the last two (spatial) axes of an array.

They accept any leading layout (N, C, ...) because pooling treats every channel of
every image alike. Each loops over kernel offsets only (kh * kw slices), never over
pixels. Output size per spatial dimension (``pool_output_size``)::

    H_out = (H + 2*pad - dilation*(k - 1) - 1) // stride + 1

or, with ``ceil_mode``, the same quotient rounded up, less one when the last window
would start at or past ``H + pad`` (torch's rule). Windows that then hang past the
padded input are handled by padding the far (bottom/right) side further: with -inf
for a max, with zeros (and divisors of their own) for a mean.
"""

from __future__ import annotations

import numpy as np

from . import _compiled
from ._parallel import parallel_slices
from .im2col import Pair, _offset_slices


def pad_spatial(x: np.ndarray, padding: Pair, value: float, extra: Pair = (0, 0)) -> np.ndarray:
    """Pad the last two axes of ``x`` by ``padding`` = (ph, pw) on both sides, and by
    ``extra`` = (eh, ew) more rows and columns at the bottom and right (the room that
    ceil_mode's last windows hang into)."""
    (ph, pw), (eh, ew) = padding, extra
    if not ph and not pw and not eh and not ew:
        return x
    out = np.full((*x.shape[:-2], x.shape[-2] + 2 * ph + eh, x.shape[-1] + 2 * pw + ew), value,
                  dtype=x.dtype)
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

    compiled = _compiled.ENABLED and xq.ndim == 4 and pairs

    def piece(ix):
        x, best = xq[ix], out[ix]
        win = None if winner is None else winner[ix]
        if compiled:            # one pass over the windows, NaN and ties as below
            _compiled.max_pool_2x2_forward(x, best, win)
            return
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

    compiled = (_compiled.ENABLED and winq.ndim == 4 and disjoint
                and tuple(kernel) == (2, 2))

    def piece(ix):
        g, win, dx = gradq[ix], winq[ix], dxp[ix]
        if compiled:            # every element of the windows written once
            dx[..., 2 * oh:, :] = 0
            dx[..., :2 * oh, 2 * ow:] = 0
            _compiled.max_pool_2x2_backward(g, win, dx, dx.dtype.type(0))
            return
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
    """(H_out, W_out) number of *real* (non-padding) input elements in each window, as
    float64: the product of each axis's count (``avg_pool_window_sizes``)."""
    rows, columns = (avg_pool_window_sizes(size, k, s, p, n)[1]
                     for size, k, s, p, n in zip(hw, kernel, stride, padding, out_hw))
    return np.outer(rows, columns).astype(np.float64)


def adaptive_pool_matrix(size: int, out_size: int, dtype: np.dtype) -> np.ndarray:
    """(out_size, size) averaging matrix of adaptive pooling along one axis: row i
    averages input positions floor(i*size/out) .. ceil((i+1)*size/out) - 1, as torch.

    Adaptive average pooling is separable: out = P_h @ x @ P_w.T per channel.
    """
    matrix = np.zeros((out_size, size), dtype=np.float64)
    starts, ends = adaptive_windows(size, out_size)
    for i, (start, end) in enumerate(zip(starts, ends)):   # output cells of one axis, not pixels
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix.astype(dtype)


# ---------------------------------------------------------------------- ceil_mode windows

def pool_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1,
                     ceil_mode: bool = False) -> int:
    """Number of windows along one axis, by torch's rule.

    ``(size + 2*padding - dilation*(kernel - 1) - 1) / stride + 1``, the quotient rounded
    down, or up with ``ceil_mode``; a ceil_mode window that would start at or past
    ``size + padding`` (in the right padding, or beyond it) is dropped, so every window
    starts inside the input or its left padding. May be < 1: the caller refuses that.
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def pool_overhang(size: int, kernel: int, stride: int, padding: int, dilation: int, out: int) -> int:
    """How far the last of ``out`` windows reaches past the padded input (0 without
    ceil_mode): the extra elements to pad at the far end so that every window fits."""
    return max(0, (out - 1) * stride + dilation * (kernel - 1) + 1 - (size + 2 * padding))


def avg_pool_window_sizes(size: int, kernel: int, stride: int, padding: int, out: int
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(out,) int arrays ``(pool, real)`` along one axis of average pooling: ``pool`` is
    the window's length clipped at ``size + padding`` (padding counts, the ceil_mode
    overhang beyond it does not: torch's ``pool_size``), ``real`` its length clipped to
    the input itself. A 2-D window's counts are the products of its two axes' counts."""
    start = np.arange(out) * stride - padding
    end = np.minimum(start + kernel, size + padding)
    real = np.minimum(end, size) - np.maximum(start, 0)
    return end - start, real


# ---------------------------------------------------------------------- adaptive max pooling

def adaptive_windows(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """(out,) ``(start, end)`` of adaptive pooling's windows along one axis: window i is
    ``floor(i*size/out) .. ceil((i+1)*size/out) - 1``, as torch (windows may overlap,
    and differ in length by one)."""
    i = np.arange(out)
    return (i * size) // out, -((-(i + 1) * size) // out)


def _windowed_max(x: np.ndarray, starts: np.ndarray, ends: np.ndarray, axis: int,
                  with_winner: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Max of ``x`` over the adaptive windows ``[start, end)`` along ``axis`` (-1 or -2).

    A loop over the offsets t of a window (at most ``max(end - start)`` of them): offset
    t reads position ``min(start + t, end - 1)``, so a shorter window reads its last
    element again, which can neither change a max nor win a tie (a later equal value
    never takes over). Returns the maxima and the winners' positions along ``axis``
    (int64): the first maximum in order on ties, the last NaN when there is one (as
    torch's CPU kernel, whose ``val > maxval || isnan(val)`` lets every NaN take over).
    """
    length = int((ends - starts).max())
    positions = [np.minimum(starts + t, ends - 1) for t in range(length)]
    # Positions broadcast along the pooled axis: (out, 1) for rows, (out,) for columns.
    as_index = (lambda p: p[:, None]) if axis == -2 else (lambda p: p)
    best = np.take(x, positions[0], axis=axis)        # a copy, ``out`` long along axis
    if not with_winner:
        for position in positions[1:]:
            np.maximum(best, np.take(x, position, axis=axis), out=best)
        return best, None
    winner = np.empty(best.shape, dtype=np.int64)
    winner[...] = as_index(positions[0])
    better = np.empty(best.shape, dtype=np.bool_)
    for position in positions[1:]:
        candidate = np.take(x, position, axis=axis)
        np.greater(candidate, best, out=better)       # strictly: ties stay with the first
        np.copyto(winner, as_index(position), where=better)
        np.maximum(best, candidate, out=best)         # np.maximum propagates NaN
    if np.isnan(best).any():
        for position in positions:                    # in order: the last NaN wins
            np.copyto(winner, as_index(position), where=np.isnan(np.take(x, position, axis=axis)))
    return best, winner


def adaptive_max_pool_forward(x: np.ndarray, out_hw: Pair, with_winner: bool = True
                              ) -> tuple[np.ndarray, np.ndarray | None]:
    """Adaptive max pooling of the last two axes of ``x`` (..., H, W) to ``out_hw``.

    Separable, columns first: each row's max over every column window (..., H, W_out),
    then the max of those over every row window. Scanning the rows in order and, within
    the winning row, the columns in order finds the first maximum in row-major window
    order, which is torch's winner on ties; a NaN makes its row's value NaN, so the last
    row with a NaN and its last NaN win, torch's last NaN in row-major order.

    Returns:
        out: (..., H_out, W_out) window maxima.
        winner: (..., H_out, W_out) int64 position ``row * W + column`` of each window's
            winner in its (H, W) plane, or None when ``with_winner`` is False.
    """
    (h, w), (oh, ow) = x.shape[-2:], out_hw
    col_starts, col_ends = adaptive_windows(w, ow)
    row_starts, row_ends = adaptive_windows(h, oh)
    by_row, col_winner = _windowed_max(x, col_starts, col_ends, -1, with_winner)   # (..., H, W_out)
    out, row_winner = _windowed_max(by_row, row_starts, row_ends, -2, with_winner)  # (..., H_out, W_out)
    if not with_winner:
        return out, None
    column = np.take_along_axis(col_winner, row_winner, axis=-2)   # the winning row's winner
    row_winner *= w
    row_winner += column
    return out, row_winner


def adaptive_max_pool_backward(grad: np.ndarray, winner: np.ndarray, hw: Pair) -> np.ndarray:
    """Add each output gradient (..., H_out, W_out) into its window's winner of a zero
    (..., H, W) array; windows that share a winner (they may overlap) add.

    One ``bincount`` over the flat positions of all winners: no loop at all. It sums in
    float64 (exact for the few terms an element receives from overlapping windows, up
    to the one rounding back to a float32 gradient's dtype)."""
    planes = int(np.prod(grad.shape[:-2], dtype=np.int64))
    size = hw[0] * hw[1]
    flat = winner.reshape(planes, -1) + (np.arange(planes, dtype=np.int64) * size)[:, None]
    dx = np.bincount(flat.ravel(), weights=grad.reshape(-1).astype(np.float64, copy=False),
                     minlength=planes * size)
    return dx.astype(grad.dtype, copy=False).reshape(*grad.shape[:-2], *hw)
