"""Issue 18, round 3: per-layer A/B of the 3x3 stride-1 convolutions, im2col
(``functional.conv``) against Winograd F(2x2, 3x3) (``functional.winograd``).

    python -m benchmarks.winograd_ab --rounds 9

For each 3x3 layer of compare.py's CIFAR (batch 128) and VGG-BN (batch 64) networks, at
its input size: forward (as in training: the im2col path also returns the columns it
keeps, if any), backward (input and weight gradients; the bias gradient where the layer
has a bias) and an inference forward. The two paths run in turn, round after round
(order alternating), in one process; printed: the median over rounds of each path's
median time and of the per-round ratio winograd/im2col, and the float32 error of each
path against a float64 computation of the same layer. Threads: ``CHAINRULE_NUM_THREADS``
(as the library reads it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

from chainrule import functional as F
from chainrule.functional import _parallel
from chainrule.functional import winograd as W

from ._timing import time_calls

# (net, C_in, C_out, H = W, batch, bias)
LAYERS = [
    ("cifar", 3, 32, 32, 128, True), ("cifar", 32, 32, 32, 128, True),
    ("cifar", 32, 64, 16, 128, True), ("cifar", 64, 64, 16, 128, True),
    ("vgg", 3, 32, 32, 64, False), ("vgg", 32, 32, 32, 64, False),
    ("vgg", 32, 64, 16, 64, False), ("vgg", 64, 64, 16, 64, False),
    ("vgg", 64, 128, 8, 64, False), ("vgg", 128, 128, 8, 64, False),
]
PAD = (1, 1, 1, 1)
WORKSPACE = 512 << 20


def _im2col(xp, w, b, g):
    out, cols = F.conv2d_forward(xp, w, b, (1, 1), (1, 1), g.shape[2:], WORKSPACE,
                                 return_columns=True)
    return out, lambda: F.conv2d_backward(xp, w, g, (1, 1), (1, 1), PAD, b is not None,
                                          WORKSPACE, columns=cols)


def _winograd(xp, w, b, g):
    out = W.winograd_forward(xp, w, b, WORKSPACE)
    return out, lambda: W.winograd_backward(xp, w, g, PAD, b is not None, WORKSPACE)


PATHS = {"im2col": _im2col, "winograd": _winograd}


def _data(c_in, c_out, hw, batch, bias, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, c_in, hw, hw)).astype(dtype)
    w = (rng.standard_normal((c_out, c_in, 3, 3)) / np.sqrt(9 * c_in)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype) if bias else None
    g = rng.standard_normal((c_out, batch, hw, hw)).astype(dtype)
    return F.pad_channel_major(x, PAD), w, b, g


def errors(c_in, c_out, hw, batch, bias) -> dict[str, tuple[float, float]]:
    """Per path: (max abs, max abs / max |reference|) of the float32 output, dx and dW
    (the worst of the three) against the float64 im2col computation."""
    args64 = _data(c_in, c_out, min(hw, 16), min(batch, 8), bias, np.float64)
    out64, back64 = _im2col(*args64)
    ref = (out64,) + back64()[:2]
    result = {}
    for name, path in PATHS.items():
        args32 = [None if a is None else a.astype(np.float32) for a in args64]
        out, back = path(*args32)
        got = (out,) + back()[:2]
        worst_abs = max(float(np.max(np.abs(a - r))) for a, r in zip(got, ref))
        worst_rel = max(float(np.max(np.abs(a - r)) / np.max(np.abs(r))) for a, r in zip(got, ref))
        result[name] = (worst_abs, worst_rel)
    return result


def run(layer, rounds: int) -> str:
    net, c_in, c_out, hw, batch, bias = layer
    xp, w, b, g = _data(c_in, c_out, hw, batch, bias, np.float32)
    times = {name: {"fwd": [], "bwd": [], "infer": []} for name in PATHS}
    names = list(PATHS)
    for name in names:                                 # warm up (compile, scratch buffers)
        _, back = PATHS[name](xp, w, b, g)
        back()
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            path = PATHS[name]
            holder = {}

            def forward():
                holder["back"] = path(xp, w, b, g)[1]
            times[name]["fwd"].append(time_calls(forward, 3)[0])
            times[name]["bwd"].append(time_calls(lambda: holder["back"](), 3)[0])
            infer = ((lambda: F.conv2d_forward(xp, w, b, (1, 1), (1, 1), g.shape[2:], WORKSPACE))
                     if name == "im2col" else (lambda: W.winograd_forward(xp, w, b, WORKSPACE)))
            times[name]["infer"].append(time_calls(infer, 3)[0])
    cells = []
    for op in ("fwd", "bwd", "infer"):
        a, bb = times["im2col"][op], times["winograd"][op]
        ratio = statistics.median(y / x for x, y in zip(a, bb))
        cells.append(f"{statistics.median(a) * 1e3:.2f} | {statistics.median(bb) * 1e3:.2f} | "
                     f"**{ratio:.2f}**")
    err = errors(c_in, c_out, hw, batch, bias)
    e = " | ".join(f"{err[n][0]:.1e} / {err[n][1]:.1e}" for n in names)
    return (f"| {net} {c_in}->{c_out} {hw}x{hw} b{batch} | " + " | ".join(cells) + f" | {e} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.winograd_ab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--layers", default="", help="indices into LAYERS, comma-separated")
    args = parser.parse_args(argv)
    chosen = ([LAYERS[int(i)] for i in args.layers.split(",")] if args.layers else LAYERS)
    print(f"threads {_parallel.num_workers()}, load {os.getloadavg()[0]:.2f}, "
          f"{time.strftime('%H:%M:%S')}", file=sys.stderr)
    print("| layer | fwd im2col ms | fwd winograd ms | ratio | bwd im2col ms | bwd winograd ms | "
          "ratio | infer im2col ms | infer winograd ms | ratio | float32 error im2col "
          "(abs / rel) | float32 error winograd (abs / rel) |")
    print("| --- |" + " ---: |" * 11)
    for layer in chosen:
        print(run(layer, args.rounds), flush=True)
        print(f"[load {os.getloadavg()[0]:.2f}, {time.strftime('%H:%M:%S')}]", file=sys.stderr,
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
