"""Issue 18's A/B: chainrule with its compiled (Numba) kernels, chainrule with
``CHAINRULE_NUMBA=0`` (the NumPy kernels), and torch, on compare.py's networks.

    python -m benchmarks.numba_ab --rounds 7 --threads 2,1

Three worker processes per network (compare.py's workers), driven in turn round after
round (the order rotating), so the machine's drifts hit all three alike. Threads: 2 runs
chainrule with ``CHAINRULE_NUM_THREADS=2`` and torch with ``set_num_threads(2)``; 1 with
``CHAINRULE_NUM_THREADS=1``, ``OPENBLAS_NUM_THREADS=1`` and ``set_num_threads(1)`` (one
core each). Printed per network: median ms of each, the median over rounds of the
per-round ratios numba/torch, numpy/torch and numba/numpy, and peak RSS.

``--variants numba,im2col,torch`` (issue 18, round 3) compares chainrule with its
Winograd convolutions (the default) against ``CHAINRULE_WINOGRAD=0`` (im2col for every
layer) instead: any three variants, the ratios being first/third, second/third and
first/second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from .compare import NETS, Worker

VARIANTS = {                                         # name: (engine, extra environment)
    "numba": ("chainrule", {"CHAINRULE_NUMBA": "1"}),
    "numpy": ("chainrule", {"CHAINRULE_NUMBA": "0"}),
    "im2col": ("chainrule", {"CHAINRULE_NUMBA": "1", "CHAINRULE_WINOGRAD": "0"}),
    "torch": ("torch", {}),
}


def _start(engine: str, env: dict[str, str]) -> Worker:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return Worker(engine)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run(net: str, threads: int, rounds: int,
        variants: tuple[str, str, str] = ("numba", "numpy", "torch")) -> list[str]:
    common = {"CHAINRULE_NUM_THREADS": str(threads), "COMPARE_TORCH_THREADS": str(threads)}
    if threads == 1:
        common["OPENBLAS_NUM_THREADS"] = "1"
    workers = {name: _start(VARIANTS[name][0], {**common, **VARIANTS[name][1]})
               for name in variants}
    try:
        for w in workers.values():
            w.ask("setup", net=net, batch=NETS[net]["batch"], warmup=2)
        times = {name: {"train": [], "infer": []} for name in workers}
        names = list(workers)
        for r in range(rounds):
            order = names[r % 3:] + names[:r % 3]
            for op in ("train", "infer"):
                for name in order:
                    time.sleep(0.2)
                    reply = workers[name].ask(op, min_reps=3, max_reps=50, min_seconds=0.6)
                    times[name][op].append(statistics.median(reply["times"]))
        rss = {name: w.ask("info")["maxrss_mib"] for name, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()
    lines = []
    a, b, c = variants
    for op in ("train", "infer"):
        t = times
        med = {n: statistics.median(t[n][op]) * 1e3 for n in t}
        ratio = lambda x, y: statistics.median(p / q for p, q in zip(t[x][op], t[y][op]))
        lines.append(f"| {net} | {threads} | {op} | {med[a]:.2f} | {med[b]:.2f} | "
                     f"{med[c]:.2f} | **{ratio(a, c):.2f}** | "
                     f"{ratio(b, c):.2f} | {ratio(a, b):.2f} |"
                     + (f" {rss[a]:.0f} / {rss[b]:.0f} / {rss[c]:.0f} |"
                        if op == "train" else " |"))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.numba_ab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", default="lenet,cifar,vgg")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", default="2,1")
    parser.add_argument("--variants", default="numba,numpy,torch",
                        help=f"three of {', '.join(VARIANTS)}")
    args = parser.parse_args(argv)
    variants = tuple(args.variants.split(","))
    if len(variants) != 3 or not set(variants) <= set(VARIANTS):
        parser.error(f"--variants: three of {', '.join(VARIANTS)}, got {args.variants!r}")
    a, b, c = variants
    print(f"| net | threads | step | {a} ms | {b} ms | {c} ms | {a}/{c} | "
          f"{b}/{c} | {a}/{b} | peak RSS MiB {a} / {b} / {c} |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for threads in (int(t) for t in args.threads.split(",")):
        for net in args.nets.split(","):
            load = os.getloadavg()[0]
            for line in run(net, threads, args.rounds, variants):
                print(line, flush=True)
            print(f"[{net}, {threads} thread(s): load {load:.2f} -> {os.getloadavg()[0]:.2f}, "
                  f"{time.strftime('%H:%M:%S')}]", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
