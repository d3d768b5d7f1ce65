"""Data-parallel training over processes and machines, on MPI (``mpi4py``).

As Horovod does it: every process (rank) holds the whole model, takes its own shard of
each mini-batch, runs forward and backward, and then the gradients are averaged across
the ranks with one allreduce per *bucket* of parameters (not one per parameter) before
every rank applies the same update. Nothing else in the loop changes; rank 0 alone
writes files. ``chainrule.fit(..., distributed=True)`` does all of this.

    mpiexec -n 2 python train.py            # or: chainrule train --workers 2 ...

Without MPI (no ``mpi4py``, or a process not started by ``mpiexec``) the world is one
process: ``rank() == 0``, ``world_size() == 1``, and every collective returns its input.

Determinism: ``allreduce_sum`` cuts the buffer into K chunks; rank r receives
chunk r of every rank (all-to-all), adds them in rank order (0, 1, ..., K-1) and all
ranks gather the sums. So K ranks give bitwise-identical results run after run (an MPI
``Allreduce`` may choose its reduction tree by message size and placement), with the
traffic of a ring allreduce (2 (K-1)/K of the buffer per rank); ``deterministic=False``
uses MPI's own ``Allreduce`` instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["init", "is_initialized", "rank", "world_size", "barrier", "broadcast_",
           "allreduce_sum", "allreduce_gradients", "GradientReducer", "backward_and_reduce", "broadcast_model", "broadcast_object", "allgather_object", "launched_by_mpi",
           "DEFAULT_BUCKET_BYTES"]

# DistributedDataParallel's default bucket size.
DEFAULT_BUCKET_BYTES = 25 * 2**20

# Variables that MPI launchers set in the processes they start.
_LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK",
                       "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE", "I_MPI_HYDRA_HOST_FILE")


class _World:
    comm: Any = None          # an mpi4py communicator, or None: a world of one
    initialized = False


_world = _World()


def launched_by_mpi() -> bool:
    """Whether this process was started by an MPI launcher (``mpiexec``/``mpirun``)."""
    return any(v in os.environ for v in _LAUNCHER_VARIABLES)


def init() -> None:
    """Join the MPI world this process was started in; idempotent.

    A process not started by an MPI launcher is a world of one (``mpi4py`` is then
    not even imported). Started by one, ``mpi4py`` must be importable: install
    ``chainrule[mpi]``."""
    if _world.initialized:
        return
    if launched_by_mpi():
        try:
            from mpi4py import MPI
        except ImportError as err:  # a launcher but no mpi4py: K copies of one world
            raise RuntimeError("chainrule.distributed: this process was started by an MPI "
                               "launcher, but mpi4py is not installed: pip install "
                               "'chainrule[mpi]'") from err
        comm = MPI.COMM_WORLD
        # A failed collective raises (instead of aborting silently) so the message names it.
        comm.Set_errhandler(MPI.ERRORS_RETURN)
        _world.comm = comm if comm.Get_size() > 1 else None
    _world.initialized = True


def is_initialized() -> bool:
    return _world.initialized


def rank() -> int:
    """This process's rank, from 0 (0 in a world of one). Calls ``init``."""
    init()
    return 0 if _world.comm is None else _world.comm.Get_rank()


def world_size() -> int:
    """The number of processes K (1 without MPI). Calls ``init``."""
    init()
    return 1 if _world.comm is None else _world.comm.Get_size()


def barrier() -> None:
    init()
    if _world.comm is not None:
        _world.comm.Barrier()


def broadcast_(array: np.ndarray, root: int = 0) -> np.ndarray:
    """Overwrite ``array`` (contiguous) on every rank with root's, in place; returns it."""
    init()
    if _world.comm is not None:
        if not array.flags.c_contiguous:
            raise ValueError("broadcast_: the array must be C-contiguous")
        _world.comm.Bcast(array, root=root)
    return array


def allreduce_sum(buffer: np.ndarray, deterministic: bool = True) -> np.ndarray:
    """The element-wise sum of ``buffer`` (a 1-D contiguous array, the same shape and
    dtype on every rank) over all ranks, as a new array equal on every rank.

    ``deterministic``: rank r adds the K parts of the r-th K-th of the buffer in rank
    order, then every rank gathers the K sums (a reduce-scatter and an allgather, the
    traffic of a ring allreduce; bitwise the same on every rank and every run); else
    MPI's ``Allreduce``."""
    init()
    buffer = np.ascontiguousarray(buffer)
    comm = _world.comm
    if comm is None:
        return buffer.copy()
    if not deterministic:
        from mpi4py import MPI
        out = np.empty_like(buffer)
        comm.Allreduce(buffer, out, op=MPI.SUM)
        return out
    received, request = _start_reduce(buffer, comm)
    request.Wait()
    return _finish_reduce(received, buffer.size, comm)


def _start_reduce(flat: np.ndarray, comm: Any) -> tuple[np.ndarray, Any]:
    """Phase 1 of the deterministic allreduce (a reduce-scatter): ``flat`` (n,) is cut
    into K chunks of m = ceil(n / K), and rank r receives chunk r of every rank, as
    ``received[q]`` (K, m), with a non-blocking all-to-all."""
    k = comm.Get_size()
    m = -(-flat.size // k)
    send = np.zeros(k * m, flat.dtype)
    send[:flat.size] = flat
    send = send.reshape(k, m)                                      # (K, m)
    received = np.empty_like(send)                                 # (K, m)
    return received, comm.Ialltoall(send, received)


def _finish_reduce(received: np.ndarray, n: int, comm: Any) -> np.ndarray:
    """Phase 2: add this rank's chunk over the ranks in rank order (0 + 1 + ... +
    (K-1), so the bits depend on K alone), then gather every rank's summed chunk: the
    sum of all n elements, equal on every rank. Each rank sends and receives
    2 (K-1)/K * n elements, as a ring allreduce does."""
    mine = received[0].copy()                                      # (m,)
    for r in range(1, len(received)):
        mine += received[r]
    out = np.empty_like(received)                                  # (K, m)
    comm.Allgather(mine, out)
    return out.reshape(-1)[:n]


class GradientReducer:
    """Averages gradients across the ranks while backward is still running.

    Give it each parameter as soon as its gradient is final (``add``: backward walks the
    layers in reverse, so the last layers' parameters come first); it packs them into
    buckets of about ``bucket_bytes`` and starts a non-blocking gather of a bucket as soon
    as the bucket is full (the reduce-scatter of ``allreduce_sum``, non-blocking), so
    that the messages travel while earlier layers compute their gradients (``progress``
    lets MPI move them along between layers). ``finish`` waits for each bucket, adds its
    K parts in rank order, gathers the sums (deterministic, as ``allreduce_sum``) and
    writes the mean (``average``) or the sum back into each ``grad``.
    """

    def __init__(self, bucket_bytes: int = DEFAULT_BUCKET_BYTES, average: bool = True,
                 deterministic: bool = True) -> None:
        init()
        self.bucket_bytes, self.average, self.deterministic = bucket_bytes, average, deterministic
        self._open: list[Any] = []           # parameters of the bucket being filled
        self._open_bytes = 0
        self._sent: list[tuple[list[Any], np.ndarray, Any, Any]] = []  # (params, buf, req)
        self.collectives = 0

    def add(self, parameters: Iterable[Any]) -> None:
        for p in parameters:
            if getattr(p, "grad", None) is None:
                continue
            if self._open and (self._open_bytes + p.grad.nbytes > self.bucket_bytes
                               or p.grad.dtype != self._open[0].grad.dtype):
                self._send()
            self._open.append(p)
            self._open_bytes += p.grad.nbytes

    def _send(self) -> None:
        params, self._open, self._open_bytes = self._open, [], 0
        comm = _world.comm
        flat = np.concatenate([p.grad.ravel() for p in params])    # (bucket size,)
        self.collectives += 1
        if comm is None:
            self._sent.append((params, flat, None, None))
        elif self.deterministic:
            received, request = _start_reduce(flat, comm)
            self._sent.append((params, flat, received, request))
        else:
            from mpi4py import MPI
            out = np.empty_like(flat)
            self._sent.append((params, flat, out, comm.Iallreduce(flat, out, op=MPI.SUM)))

    def progress(self) -> None:
        """Let MPI advance the messages in flight (Open MPI moves non-blocking
        collectives only inside MPI calls)."""
        requests = [req for *_, req in self._sent if req is not None]
        if requests:
            from mpi4py import MPI
            MPI.Request.Testall(requests)

    def finish(self) -> int:
        """Wait for every bucket and write the reduced gradients back; returns the
        number of collectives (buckets)."""
        if self._open:
            self._send()
        k = world_size()
        for params, flat, received, req in self._sent:
            if req is None:      # a world of one
                continue
            req.Wait()
            if self.deterministic:
                total = _finish_reduce(received, flat.size, _world.comm)
            else:
                total = received
            if self.average:
                total /= k
            start = 0
            for p in params:
                p.grad[...] = total[start:start + p.grad.size].reshape(p.grad.shape)
                start += p.grad.size
        count, self._sent, self.collectives = self.collectives, [], 0
        return count


def allreduce_gradients(parameters: Iterable[Any], average: bool = True,
                        bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                        deterministic: bool = True) -> int:
    """Sum (``average``: and divide by K) every parameter's ``grad`` over the ranks, in
    place, with one collective per bucket of about ``bucket_bytes``. Parameters are
    bucketed in reverse order, as backward produces their gradients. Returns the number
    of collectives (0 in a world of one)."""
    init()
    params = [p for p in parameters if getattr(p, "grad", None) is not None]
    if _world.comm is None or not params:
        return 0
    reducer = GradientReducer(bucket_bytes, average, deterministic)
    reducer.add(reversed(params))
    return reducer.finish()


def backward_and_reduce(model: Any, grad: np.ndarray,
                        bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> int:
    """Backward of ``model`` for its parameter gradients, averaged across the ranks.

    For a ``Sequential`` whose layers share no parameter, each layer's gradients are
    handed to a ``GradientReducer`` as soon as that layer's backward is done, so the
    allreduce of the last layers overlaps the backward of the first ones; any other
    model reduces after its whole backward. Returns the number of collectives."""
    from .layers.base import backward_parameters_only
    from .layers.container import Sequential
    init()
    reducer = GradientReducer(bucket_bytes)
    layers = list(model._children.values()) if type(model) is Sequential else []
    per_layer = [layer.parameters() for layer in layers]
    ids = [id(p) for ps in per_layer for p in ps]
    if _world.comm is None or not layers or len(ids) != len(set(ids)):
        backward_parameters_only(model, grad)
        return allreduce_gradients(model.parameters(), bucket_bytes=bucket_bytes)
    for i in range(len(layers) - 1, -1, -1):
        if i > 0:
            grad = layers[i].backward(grad)
        else:
            backward_parameters_only(layers[0], grad)
        reducer.add(reversed(per_layer[i]))
        reducer.progress()
    return reducer.finish()


def broadcast_model(model: Any, root: int = 0) -> None:
    """Give every rank root's parameters and buffers (run once before training, as
    Horovod's ``broadcast_parameters``, so that all ranks start from the same weights)."""
    init()
    if _world.comm is None:
        return
    for p in model.parameters():
        broadcast_(p.data, root)
    for module in model.modules():
        for name in module._buffers:
            fresh = np.array(getattr(module, name), copy=True, order="C")
            broadcast_(fresh.reshape(-1), root)     # (a 0-d counter as shape (1,))
            setattr(module, name, fresh)


def broadcast_object(obj: Any, root: int = 0) -> Any:
    """root's ``obj`` (picklable) on every rank."""
    init()
    if _world.comm is None:
        return obj
    return _world.comm.bcast(obj, root=root)


def allgather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order."""
    init()
    if _world.comm is None:
        return [obj]
    return _world.comm.allgather(obj)
