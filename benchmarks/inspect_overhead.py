"""What ``chainrule train --inspect`` costs: training-step time with and without a Recorder.

Run ``python -m benchmarks.inspect_overhead`` (``--help`` for the options). Two identical
models (same seed, same data) train side by side, one with a ``Recorder`` attached (and
its optimizer watched), one plain. Each round times ``--steps`` steps of one, then of
the other, the order alternating from round to round so that a slow drift of a shared
machine hits both alike. Printed: the median step time of each, the overhead of every
round (recorded / plain - 1) and its median and interquartile range (the noise), and
the load average before and after.
"""

from __future__ import annotations

import argparse
import inspect  # the standard library's
import os
import statistics
import time

import numpy as np

import chainrule as cr
from chainrule.inspect import Recorder
from chainrule.train import train_step


def _setup(model_name: str):
    model = cr.models.MODELS[model_name](seed=0)
    optimizer = cr.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return model, optimizer


def _time_steps(model, optimizer, loss_fn, x, y, steps: int) -> tuple[float, float]:
    """(wall-clock, process CPU) seconds per step. CPU time counts only this process's
    work, so on a machine shared with other jobs it is the steadier of the two (with
    single-threaded BLAS; with several threads it also counts their spinning)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        train_step(model, loss_fn, optimizer, x, y)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5", choices=list(cr.models.MODELS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=5, help="steps per engine per round")
    parser.add_argument("--every", type=int, default=1, help="Recorder(every=...)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1 step (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps = 2, 1

    defaults = {k: v.default for k, v in
                inspect.signature(cr.models.MODELS[args.model]).parameters.items()}
    channels, size, classes = (defaults[k] for k in ("in_channels", "input_size", "num_classes"))
    plain = _setup(args.model)
    watched = _setup(args.model)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, channels, size, size)).astype(np.float32)
    y = rng.integers(0, classes, args.batch)
    loss_fn = cr.CrossEntropyLoss()
    recorder = Recorder(every=args.every).attach(*watched)

    for model, optimizer in (plain, watched):  # warm-up: caches, allocator, BLAS threads
        _time_steps(model, optimizer, loss_fn, x, y, 2)

    load_before = os.getloadavg()
    times = {(engine, clock): [] for engine in ("plain", "recorded") for clock in (0, 1)}
    ratios: dict[int, list[float]] = {0: [], 1: []}
    for r in range(args.rounds):
        order = [("plain", plain), ("recorded", watched)]
        if r % 2:
            order.reverse()
        got = {}
        for name, (model, optimizer) in order:
            got[name] = _time_steps(model, optimizer, loss_fn, x, y, args.steps)
        for clock in (0, 1):
            for name in got:
                times[name, clock].append(got[name][clock])
            ratios[clock].append(got["recorded"][clock] / got["plain"][clock] - 1.0)
    load_after = os.getloadavg()
    recorder.detach()

    print(f"{args.model}, batch {args.batch}, {args.rounds} rounds x {args.steps} steps, "
          f"Recorder(every={args.every}), {os.cpu_count()} CPUs, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    for clock, label in ((0, "wall-clock"), (1, "process CPU")):
        r = ratios[clock]
        q1, _, q3 = statistics.quantiles(r, n=4) if len(r) > 1 else (r[0],) * 3
        print(f"{label}: median step plain {statistics.median(times['plain', clock]) * 1e3:.1f} "
              f"ms, recorded {statistics.median(times['recorded', clock]) * 1e3:.1f} ms; "
              f"overhead per round: median {statistics.median(r):+.1%}, interquartile range "
              f"[{q1:+.1%}, {q3:+.1%}]")
    print(f"recorded steps: {len(recorder.records['step'])}")


if __name__ == "__main__":
    main()
