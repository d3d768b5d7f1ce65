"""What a ``cr.Graph`` costs over the same network as a ``Sequential``.

Run ``python -m benchmarks.graph_overhead`` (``--help`` for the options). For each zoo
network (LeNet-5 and the CIFAR-style CNN by default) two copies are built from the same
seed: the zoo's ``Sequential``, and a ``Graph`` of the same layers declared node by node
(``x = layer(x, name=str(i))``, so even the ``state_dict`` keys agree). Each round times
``--steps`` training steps (SGD with momentum) of one, then of the other, then as many
inferences (eval mode) of each, the order alternating from round to round so that a
slow drift of a shared machine hits both alike. Printed per network and mode: the median
time of each, the overhead of every round (graph / sequential - 1) with its median and
interquartile range (the noise), and the load average before and after.
"""

from __future__ import annotations

import argparse
import inspect  # the standard library's
import os
import statistics
import time

import numpy as np

import chainrule as cr

from benchmarks._timing import quartiles, time_calls
from chainrule.train import train_step

# The networks of benchmarks/compare.py and their batch sizes there.
NETS = {"lenet5": 64, "cifar_cnn": 128}


def as_graph(model: cr.Sequential, sample_shape: tuple[int, ...]) -> cr.Graph:
    """The chain ``model`` declared as a ``Graph``: one node per layer, named by its index
    in the Sequential, so the two have the same ``state_dict`` keys. The layers are
    ``model``'s own objects: give it a copy to keep the two apart."""
    x = inputs = cr.Input(sample_shape)
    for index, layer in enumerate(model):
        x = layer(x, name=str(index))
    return cr.Graph(inputs, x)


def _default_input(name: str) -> tuple[tuple[int, ...], int]:
    d = {k: v.default for k, v in inspect.signature(cr.models.MODELS[name]).parameters.items()}
    return (d["in_channels"], d["input_size"], d["input_size"]), d["num_classes"]


def bench_net(name: str, batch: int, rounds: int, steps: int) -> dict[str, dict]:
    """Per mode ("train", "infer"): the per-round times of each engine and the ratios."""
    shape, classes = _default_input(name)
    builder = cr.models.MODELS[name]
    engines = {"sequential": builder(seed=0), "graph": as_graph(builder(seed=0), shape)}
    a, b = engines["sequential"].state_dict(), engines["graph"].state_dict()
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    y = rng.integers(0, classes, batch)
    loss_fn = cr.CrossEntropyLoss()
    optimizers = {k: cr.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
                  for k, m in engines.items()}

    def train(k: str):
        engines[k].train()
        return lambda: train_step(engines[k], loss_fn, optimizers[k], x, y)

    def infer(k: str):
        engines[k].eval()
        return lambda: engines[k].forward(x)

    results = {}
    for mode, make in (("train", train), ("infer", infer)):
        for k in engines:                       # warm-up: caches, allocator, BLAS threads
            time_calls(make(k), 2)
        times: dict[tuple[str, int], list[float]] = {(k, c): [] for k in engines for c in (0, 1)}
        ratios: dict[int, list[float]] = {0: [], 1: []}
        for r in range(rounds):
            order = ["sequential", "graph"] if r % 2 == 0 else ["graph", "sequential"]
            got = {k: time_calls(make(k), steps) for k in order}
            for c in (0, 1):
                for k in engines:
                    times[k, c].append(got[k][c])
                ratios[c].append(got["graph"][c] / got["sequential"][c] - 1.0)
        results[mode] = {"times": times, "ratios": ratios}
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default=",".join(NETS),
                        help=f"comma-separated zoo models (default {','.join(NETS)})")
    parser.add_argument("--batch", type=int, help="batch size (default: lenet5 64, "
                                                  "cifar_cnn 128, others 64)")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--steps", type=int, default=3, help="calls per engine per round")
    parser.add_argument("--quick", action="store_true",
                        help="2 rounds of 1 call on batch 2 (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.batch = 2, 1, 2

    threads = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
    print(f"{args.rounds} rounds x {args.steps} calls per engine, alternating; "
          f"{os.cpu_count()} CPUs, OPENBLAS_NUM_THREADS={threads}, "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}")
    for name in args.nets.split(","):
        batch = args.batch or NETS.get(name, 64)
        load_before = os.getloadavg()
        results = bench_net(name, batch, args.rounds, args.steps)
        load_after = os.getloadavg()
        print(f"\n{name}, batch {batch}: load average before {load_before[0]:.2f}, "
              f"after {load_after[0]:.2f}")
        for mode, label in (("train", "training step"), ("infer", "inference")):
            r = results[mode]
            for clock, clock_label in ((0, "wall-clock"), (1, "process CPU")):
                seq = statistics.median(r["times"]["sequential", clock]) * 1e3
                graph = statistics.median(r["times"]["graph", clock]) * 1e3
                q1, median, q3 = quartiles(r["ratios"][clock])
                print(f"  {label}, {clock_label}: median sequential {seq:.2f} ms, graph "
                      f"{graph:.2f} ms; graph overhead per round: median {median:+.1%}, "
                      f"interquartile range [{q1:+.1%}, {q3:+.1%}]")


if __name__ == "__main__":
    main()
