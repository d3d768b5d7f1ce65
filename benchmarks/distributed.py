"""Data-parallel scaling: images/s of 1 and K processes (one BLAS thread each), the
gradient allreduce's time per step, and a model of the step time for K machines.

    mpiexec -n 1 python -m benchmarks.distributed       # (or plain python: one process)
    mpiexec -n 2 --oversubscribe python -m benchmarks.distributed

Each process trains the benchmark nets of benchmarks/compare.py (LeNet, the CIFAR CNN,
the VGG-style CNN with BatchNorm) at the nets' global batch B, B/K per process, and rank
0 prints one JSON line per net: median step time, median allreduce time, images/s. With
``--allreduce`` it also times ``allreduce_sum`` over message sizes and fits
``t(n) = latency + n / bandwidth``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

import chainrule as cr
from benchmarks.compare import NETS
from chainrule import distributed as dist


def build(layers: list[tuple]) -> cr.Sequential:
    make = {"conv": lambda ci, co, k, p, b: cr.Conv2d(ci, co, k, padding=p, bias=b),
            "bn2d": lambda c: cr.BatchNorm2d(c), "relu": cr.ReLU,
            "maxpool": lambda k: cr.MaxPool2d(k), "flatten": cr.Flatten,
            "linear": lambda i, o: cr.Linear(i, o)}
    cr.manual_seed(0)
    return cr.Sequential(*[make[kind](*args) for kind, *args in layers])


def bench_net(name: str, steps: int) -> dict:
    spec = NETS[name]
    k = dist.world_size()
    batch = spec["batch"] // k
    model = build(spec["layers"])
    dist.broadcast_model(model)
    opt = cr.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = cr.CrossEntropyLoss()
    rng = np.random.default_rng(dist.rank())
    x = rng.normal(size=(batch, *spec["input"])).astype(np.float32)
    y = rng.integers(0, 10, size=batch)
    step_times, wait_times, comm_times = [], [], []
    for i in range(steps + 2):
        dist.barrier()
        t0 = time.perf_counter()
        opt.zero_grad()
        out = model.forward(x)
        loss_fn(out, y)
        model.backward(loss_fn.backward())
        t1 = time.perf_counter()
        dist.barrier()   # waiting for the slower rank is not communication
        t2 = time.perf_counter()
        buckets = dist.allreduce_gradients(model.parameters())
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if i >= 2:   # two warm-up steps
            step_times.append(t4 - t0)
            wait_times.append(t2 - t1)
            comm_times.append(t3 - t2)
    # The slowest rank sets the pace: report rank-maximum medians.
    step, wait, comm = (float(np.max(dist.allgather_object(float(np.median(ts)))))
                        for ts in (step_times, wait_times, comm_times))
    grad_bytes = sum(p.data.nbytes for p in model.parameters())
    return {"net": name, "processes": k, "global_batch": batch * k, "step_ms": 1e3 * step,
            "allreduce_ms": 1e3 * comm, "wait_ms": 1e3 * wait,
            "compute_ms": 1e3 * (step - comm - wait),
            "images_per_s": batch * k / step, "gradient_bytes": grad_bytes,
            "buckets": buckets}


def bench_allreduce(repeats: int = 20) -> dict:
    sizes = [2**e for e in range(3, 24, 2)]   # bytes of float32: 8 B .. 8 MiB
    times = []
    for nbytes in sizes:
        a = np.ones(nbytes // 4, np.float32)
        dist.allreduce_sum(a)   # warm-up: the first call of a size sets up its path
        ts = []
        for _ in range(repeats):
            dist.barrier()
            t0 = time.perf_counter()
            dist.allreduce_sum(a)
            ts.append(time.perf_counter() - t0)
        # The fastest of the repeats: what the link can do; on a loaded machine the
        # median also measures how long a process waits for the CPU.
        times.append(float(np.min(ts)))
    # Latency: the fastest message of <= 512 bytes; bandwidth: the slope over the messages >= 512 KiB.
    big = [i for i, n in enumerate(sizes) if n >= 2**19]
    slope = np.polyfit([sizes[i] for i in big], [times[i] for i in big], 1)[0]
    return {"allreduce": True, "processes": dist.world_size(), "sizes": sizes,
            "seconds": times, "latency_us": 1e6 * min(t for n, t in zip(sizes, times) if n <= 512),
            "bandwidth_MBps": 1e-6 / slope}


def step_model(compute_1: float, grad_bytes: int, k: int, latency: float,
               bandwidth: float) -> dict[str, float]:
    """Modelled seconds per step on k machines: the single process's compute split k
    ways, plus the gradient exchange of the deterministic allreduce (an all-to-all and an
    allgather, each k-1 messages of n/k bytes per rank, as a ring allreduce):
    ``2 (k-1) * (latency + n / (k * bandwidth))``."""
    comm = 2 * (k - 1) * (latency + grad_bytes / (k * bandwidth))
    return {"k": k, "compute_ms": 1e3 * compute_1 / k, "allreduce_ms": 1e3 * comm}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nets", default="lenet,cifar,vgg")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--allreduce", action="store_true")
    p.add_argument("--compute-ms", help='JSON {"net": ms}: one process\'s compute per step, '
                   "for the model of K machines")
    args = p.parse_args()
    results = [bench_net(n, args.steps) for n in args.nets.split(",")]
    if args.allreduce and dist.world_size() > 1:
        fit = bench_allreduce()
        results.append(fit)
        if args.compute_ms:   # {net: ms of one process at the whole batch}
            one = json.loads(args.compute_ms)
            for r in results[:-1]:
                for k in (1, 2, 4, 8, 16, 32, 64):
                    m = step_model(one[r["net"]] / 1e3, r["gradient_bytes"], k,
                                   fit["latency_us"] / 1e6, fit["bandwidth_MBps"] * 1e6)
                    batch = r["global_batch"]
                    m.update(net=r["net"], images_per_s=batch / (
                        (m["compute_ms"] + m["allreduce_ms"]) / 1e3))
                    results.append(m)
    if dist.rank() == 0:
        for r in results:
            print(json.dumps(r), flush=True)
        print(json.dumps({"threads": os.environ.get("OMP_NUM_THREADS"),
                          "load": os.getloadavg()}))


if __name__ == "__main__":
    main()
