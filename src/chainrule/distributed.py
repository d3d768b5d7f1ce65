"""Data-parallel training over processes and machines, on MPI (``mpi4py``).

As Horovod does it: every process (rank) holds the whole model, takes its own shard of
each mini-batch, runs forward and backward, and then the gradients are averaged across
the ranks with one allreduce per *bucket* of parameters (not one per parameter) before
every rank applies the same update. Nothing else in the loop changes; rank 0 alone
writes files. ``chainrule.fit(..., distributed=True)`` does all of this.

    mpiexec -n 2 python train.py            # or: chainrule train --workers 2 ...

Without MPI (no ``mpi4py``, or a process not started by ``mpiexec``) the world is one
process: ``rank() == 0``, ``world_size() == 1``, and every collective returns its input.

Determinism: :func:`allreduce_sum` gathers every rank's buffer and adds them in rank
order (0, 1, ..., K-1), the same way on every rank, so K ranks give bitwise-identical
results run after run (an MPI ``Allreduce`` may choose its reduction tree by message
size and placement). It moves K times the data of a ring allreduce; ``deterministic=
False`` uses MPI's own ``Allreduce`` instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["init", "is_initialized", "rank", "world_size", "barrier", "broadcast_",
           "allreduce_sum", "allreduce_gradients", "broadcast_model", "broadcast_object", "allgather_object", "launched_by_mpi",
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
    """This process's rank, from 0 (0 in a world of one). Calls :func:`init`."""
    init()
    return 0 if _world.comm is None else _world.comm.Get_rank()


def world_size() -> int:
    """The number of processes K (1 without MPI). Calls :func:`init`."""
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

    ``deterministic``: gather all K buffers and add them in rank order (bitwise the
    same on every rank and every run); else MPI's ``Allreduce``."""
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
    gathered = np.empty((comm.Get_size(),) + buffer.shape, buffer.dtype)   # (K, n)
    comm.Allgather(buffer, gathered)
    out = gathered[0].copy()
    for r in range(1, len(gathered)):   # a fixed order: 0 + 1 + ... + (K-1)
        out += gathered[r]
    return out


def _buckets(arrays: Sequence[np.ndarray], bucket_bytes: int) -> list[list[int]]:
    """Consecutive runs of same-dtype arrays of at most ``bucket_bytes`` each (an array
    larger than that gets a bucket of its own)."""
    buckets: list[list[int]] = []
    size = 0
    for i, a in enumerate(arrays):
        if (not buckets or size + a.nbytes > bucket_bytes
                or a.dtype != arrays[buckets[-1][0]].dtype):
            buckets.append([])
            size = 0
        buckets[-1].append(i)
        size += a.nbytes
    return buckets


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
    k = world_size()
    grads = [p.grad for p in reversed(params)]
    buckets = _buckets(grads, bucket_bytes)
    for bucket in buckets:
        flat = np.concatenate([grads[i].ravel() for i in bucket])   # (sum of sizes,)
        total = allreduce_sum(flat, deterministic)
        if average:
            total /= k
        start = 0
        for i in bucket:
            g = grads[i]
            g[...] = total[start:start + g.size].reshape(g.shape)
            start += g.size
    return len(buckets)


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
