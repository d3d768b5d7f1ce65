"""Splitting a batch across the CPU cores, and reusable scratch buffers.

NumPy's element-wise operations and copies run on one core; BLAS uses all of them but
only inside a matrix product. The convolution kernels therefore cut the batch into
chunks and hand them to ``num_workers()`` threads: each thread runs its chunks' copies,
additions *and* matrix products, with BLAS held at one thread meanwhile so the threads
do not oversubscribe the cores. NumPy releases the GIL inside ufuncs, copies and BLAS
calls, so the threads really run in parallel. BLAS threads are set through
``threadpoolctl`` when it is installed; without it everything runs in the calling
thread, with BLAS at its own setting.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

T = TypeVar("T")


_lock = threading.Lock()
_state: dict = {"pool": None, "blas": None, "workers": None}
_scratch = threading.local()


def _blas_controllers() -> list:
    """threadpoolctl controllers of the BLAS libraries NumPy loaded ([] without threadpoolctl)."""
    if _state["blas"] is None:
        try:
            from threadpoolctl import ThreadpoolController
            _state["blas"] = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        except Exception:  # not installed, or a BLAS it cannot drive: run serially
            _state["blas"] = []
    return _state["blas"]


def num_workers() -> int:
    """Threads the kernels split a batch across: ``CHAINRULE_NUM_THREADS`` if set, else
    the number of cores (1 when BLAS threads cannot be controlled)."""
    if _state["workers"] is None:
        wanted = int(os.environ.get("CHAINRULE_NUM_THREADS", "0") or 0) or (os.cpu_count() or 1)
        _state["workers"] = max(1, wanted) if _blas_controllers() else 1
    return _state["workers"]


def set_num_workers(n: int | None) -> None:
    """Override the number of threads (None: back to the default). For tests and tuning."""
    with _lock:
        _state["workers"] = None if n is None else max(1, int(n))
        if _state["pool"] is not None:     # sized for the old count
            _state["pool"].shutdown(wait=False)
            _state["pool"] = None


def _pool() -> ThreadPoolExecutor:
    """The helper threads (the calling thread is always the first worker)."""
    with _lock:
        if _state["pool"] is None:
            _state["pool"] = ThreadPoolExecutor(max_workers=max(1, num_workers() - 1),
                                                thread_name_prefix="chainrule")
        return _state["pool"]


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    controllers = _blas_controllers()
    before = [c.num_threads for c in controllers]
    for c in controllers:
        c.set_num_threads(1)
    try:
        yield
    finally:
        for c, n in zip(controllers, before):
            c.set_num_threads(n)


def _in_parallel(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run ``calls[0]`` in the calling thread and the others on the helper threads;
    return their results in order."""
    futures = [_pool().submit(call) for call in calls[1:]]
    first = calls[0]()
    return [first] + [f.result() for f in futures]


def run_split(task: Callable[[int, Sequence[tuple[int, int]]], T],
              chunks: Sequence[tuple[int, int]]) -> list[T]:
    """Run ``task(worker, my_chunks)`` on each worker with an interleaved share of
    ``chunks`` ((start, stop) batch ranges); returns the workers' results in order.

    With one worker or one chunk, ``task(0, chunks)`` runs in the calling thread with
    BLAS untouched (so a single big product still uses every core)."""
    workers = min(num_workers(), len(chunks))
    if workers <= 1:
        return [task(0, chunks)]
    shares = [chunks[w::workers] for w in range(workers)]
    with _single_threaded_blas():
        return _in_parallel([partial(task, w, shares[w]) for w in range(workers)])


# Below this many multiply-adds a matrix product is not worth splitting over threads.
MIN_SPLIT_MULADDS = 1 << 22


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a @ b`` for 2-D ``a`` (M, K) and ``b`` (K, N), shared among the worker threads,
    BLAS at one thread in each: the rows of ``a`` when M >= N, else the columns of ``b``
    (each thread reads all of the operand that is not split, so the smaller one is read
    twice: at batch 16, a linear layer's x @ W.T split by rows read the whole 4 MiB
    weight in both threads).

    Why not let BLAS thread the product itself: OpenBLAS's helper threads keep spinning
    on a core for a while (about 0.1 s) after every multi-threaded call, and the
    convolutions' own threads then run next to a busy core. Measured on the CIFAR-style
    net: the convolution backward right after the linear layers took 63-98 ms instead of
    38-48 ms. So chainrule never asks BLAS for more than one thread."""
    m, n = a.shape[0], b.shape[1]
    if out is None:
        out = np.empty((m, n), dtype=np.result_type(a, b))
    workers = min(num_workers(), max(m, n))
    with _single_threaded_blas():
        if workers <= 1 or m * a.shape[1] * n < MIN_SPLIT_MULADDS:
            return product_in_thread(a, b, out)
        if m >= n:
            calls = [partial(product_in_thread, a[lo:hi], b, out[lo:hi])
                     for lo, hi in even_chunks(m, workers)]
        else:
            calls = [partial(product_in_thread, a, b[:, lo:hi], out[:, lo:hi])
                     for lo, hi in even_chunks(n, workers)]
        _in_parallel(calls)
    return out


# np.matmul keeps the GIL for a product with fewer output elements than this (NumPy
# releases it only above this problem size; measured: 25x20 outputs keep it, 22x23
# release it), so two threads' small products run one after the other. np.dot
# releases it whatever the size.
MATMUL_KEEPS_GIL_BELOW = 500

# OpenBLAS (0.3.17 and later) computes a product of at most this many multiply-adds
# (M*N*K) with its "small matrix" kernels on its AVX-512 targets, which read the
# operands where they lie instead of packing them first. Its regular kernel runs thin
# products slowly there, so ``product_in_thread`` cuts a long float32 product whose
# a is thin (M*K small: a convolution's first layer, 1-3 input channels) into column
# pieces under this size. Measured with one thread (SkylakeX kernel on a Zen 4 core):
# (32, 27) @ (27, 32768), a 3-channel first layer's forward, 46 -> 69 GFLOP/s; LeNet's
# first layer (6, 25) @ (25, 25088) 34 -> 56. Narrower pieces gain less than the extra
# calls cost ((32, 288) @ (288, 8192): 56 -> 59, (288, 32) @ (32, 8192): 55 -> 40),
# hence MIN_THIN_PIECE; on OpenBLAS's Haswell kernel, which has no small kernels, the
# pieces were 4-11% slower, hence the check of the BLAS's target. Cutting the inner
# dimension of a weight gradient's small (K, C_out) product instead was 2.5x faster
# alone but slower in the layers: pieces with under MATMUL_KEEPS_GIL_BELOW outputs
# hold the GIL in np.matmul, and np.dot copies their transposed operand.
SMALL_PRODUCT_MULADDS = 1_000_000
MIN_THIN_PIECE = 1024
_SMALL_KERNEL_TARGETS = ("skylakex", "cooperlake", "sapphirerapids")


def _blas_has_small_kernels() -> bool:
    """Whether NumPy's BLAS is an OpenBLAS running one of its AVX-512 targets."""
    if _state.get("small_kernels") is None:
        _state["small_kernels"] = any(
            getattr(c, "internal_api", "") == "openblas"
            and str(getattr(c, "architecture", "")).lower() in _SMALL_KERNEL_TARGETS
            for c in _blas_controllers())
    return _state["small_kernels"]


def thin_piece_width(m: int, k: int, n: int, dtype: np.dtype) -> int | None:
    """Columns per piece for a long (M, K) @ (K, N) product with a thin ``a``, cut so
    that each piece fits SMALL_PRODUCT_MULADDS; None to leave the product whole."""
    if (m * k * n <= SMALL_PRODUCT_MULADDS or m * k * MIN_THIN_PIECE > SMALL_PRODUCT_MULADDS
            or np.dtype(dtype) != np.float32 or not _blas_has_small_kernels()):
        return None
    return SMALL_PRODUCT_MULADDS // (m * k)


def product_in_thread(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``np.matmul(a, b, out=out)`` that lets the other threads run and feeds BLAS the
    shapes it runs fastest: for 2-D or stacked (G, M, K) @ (G, K, N) operands.

    Small products (fewer than MATMUL_KEEPS_GIL_BELOW outputs, such as the (25, 6)
    weight gradient of LeNet's first layer, whose inner dimension is 25,088 pixels per
    thread) go through np.dot, which releases the GIL: measured, two such halves on two
    threads took 0.70 ms one after the other with np.matmul, 0.48-0.55 ms together with
    np.dot. np.dot is slower otherwise (it copies operands that are not contiguous, and
    ran this shape 15% slower even when they are), so larger products keep np.matmul.
    Long products with a thin ``a`` are cut into column pieces (``thin_piece_width``)."""
    if out.ndim == 3:
        if out.shape[0] > 1 and out[0].size >= MATMUL_KEEPS_GIL_BELOW:
            return np.matmul(a, b, out=out)              # all groups in one call
        for a_g, b_g, out_g in zip(a, b, out):
            product_in_thread(a_g, b_g, out_g)
        return out
    (m, k), n = a.shape, b.shape[1]
    width = thin_piece_width(m, k, n, out.dtype)
    if width is None:
        return _one_product(a, b, out)
    for lo in range(0, n, width):
        _one_product(a, b[:, lo:lo + width], out[:, lo:lo + width])
    return out


def _one_product(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """One 2-D BLAS call, through np.dot when np.matmul would keep the GIL."""
    if out.size >= MATMUL_KEEPS_GIL_BELOW:
        return np.matmul(a, b, out=out)
    if out.flags.c_contiguous:
        return np.dot(a, b, out=out)
    out[...] = np.dot(a, b)               # np.dot writes only into a C-contiguous out
    return out


def batch_chunks(n: int, per_chunk: int) -> list[tuple[int, int]]:
    """Cut range(n) into (start, stop) pieces of at most ``per_chunk`` items, made equal."""
    return even_chunks(n, -(-n // max(1, per_chunk)))


def even_chunks(n: int, count: int) -> list[tuple[int, int]]:
    """Cut range(n) into ``count`` (start, stop) pieces whose sizes differ by at most one
    (fewer when n < count: no empty pieces)."""
    if n <= 0 or count <= 0:
        return []
    bounds = [round(i * n / count) for i in range(count + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


# Scratch buffers larger than this are allocated per call instead of kept per thread,
# and a thread keeps at most this many bytes of buffers in all (its other slots are
# dropped when a new one would pass it).
MAX_KEPT_SCRATCH_BYTES = 64 << 20
# Every thread's buffers, so that release_scratch() reaches the helper threads' too.
_all_buffers: list[dict[str, np.ndarray]] = []


def scratch(slot: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A per-thread scratch array of ``shape``, reused between calls: no fresh pages to
    fault in for every chunk. Valid until the same thread asks for the same slot again.
    A thread keeps at most ``MAX_KEPT_SCRATCH_BYTES`` of them; ``release_scratch()``
    frees them all."""
    buffers = _scratch.__dict__.get("buffers")
    if buffers is None:
        buffers = _scratch.buffers = {}
        with _lock:
            _all_buffers.append(buffers)
    size = math.prod(shape) * np.dtype(dtype).itemsize
    if size > MAX_KEPT_SCRATCH_BYTES:
        # A rare huge chunk (one very large image): not worth holding for the process's life.
        return np.empty(shape, dtype=dtype)
    buf = buffers.get(slot)
    if buf is None or buf.size < size:
        buffers.pop(slot, None)
        if kept_scratch_bytes(buffers) + size > MAX_KEPT_SCRATCH_BYTES:
            buffers.clear()  # (arrays handed out earlier stay valid: they hold their memory)
        buf = buffers[slot] = np.empty(size, dtype=np.uint8)
    return buf[:size].view(dtype).reshape(shape)


def kept_scratch_bytes(buffers: dict[str, np.ndarray] | None = None) -> int:
    """Bytes of scratch buffers kept: of one thread's ``buffers``, or of every thread."""
    if buffers is not None:
        return sum(b.nbytes for b in buffers.values())
    with _lock:
        return sum(kept_scratch_bytes(b) for b in _all_buffers)


def release_scratch() -> None:
    """Free every thread's kept scratch buffers (e.g. after training a large model);
    the kernels allocate new ones when next needed."""
    with _lock:
        for buffers in _all_buffers:
            buffers.clear()


# Below this many elements an element-wise operation is not worth a thread hand-off.
MIN_PARALLEL_ELEMENTS = 1 << 20


def outer_axis(a: np.ndarray) -> int:
    """The axis with the largest stride: cutting along it gives each thread the biggest
    contiguous pieces of memory."""
    if not a.ndim:
        return 0
    return max(range(a.ndim), key=lambda ax: (abs(a.strides[ax]) if a.shape[ax] > 1 else -1, -ax))


def parallel_slices(fn: Callable[[tuple], None], shape: tuple[int, ...], axis: int) -> None:
    """Call ``fn(index)`` for pieces of an array of ``shape`` cut along ``axis``, the
    pieces spread over the worker threads (in the calling thread alone when the array is
    small). ``index`` is a tuple of slices; the pieces never overlap."""
    if not shape:                        # 0-d: one piece, indexed so it stays a view
        fn((Ellipsis,))
        return
    size = math.prod(shape)
    length = shape[axis]
    pieces = min(num_workers(), length) if size >= MIN_PARALLEL_ELEMENTS else 1
    head = (slice(None),) * axis
    if pieces <= 1:
        fn(head + (slice(None),))
        return
    _in_parallel([partial(fn, head + (slice(a, b),))
                  for a, b in batch_chunks(length, -(-length // pieces))])


def empty_with_layout(template: np.ndarray, dtype=None) -> np.ndarray:
    """An uninitialized array of the template's shape whose axes are laid out in memory
    in the same order as ``template``'s (e.g. channel-major memory behind an
    (N, C, H, W) view), so element-wise work between the two runs over contiguous
    memory. Only the order of the axes is copied, not the template's gaps."""
    shape = template.shape
    dtype = template.dtype if dtype is None else dtype
    if template.flags.c_contiguous:
        return np.empty(shape, dtype=dtype)
    order = sorted(range(template.ndim), key=lambda ax: (-abs(template.strides[ax]), ax))
    inverse = [0] * template.ndim
    for position, ax in enumerate(order):
        inverse[ax] = position
    return np.empty([shape[ax] for ax in order], dtype=dtype).transpose(inverse)
