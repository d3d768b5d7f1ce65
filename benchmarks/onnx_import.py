"""A 224x224 ResNet-18 forward after ``from_onnx`` against the same network built directly.

Run ``python -m benchmarks.onnx_import`` (``--help`` for the options). torchvision's
resnet18 (random weights, through tests/interop/torchvision_models.py) is converted
three ways:

- ``direct``: ``from_torch(module)``, the network built directly in chainrule;
- ``onnx``: ``torch.onnx.export(..., dynamo=False, training=PRESERVE,
  do_constant_folding=False)`` read by ``from_onnx``: the same layers (BatchNorm kept),
  so the two must cost the same;
- ``onnx_folded``: torch's default export, BatchNorm folded into the convolutions, read
  by ``from_onnx`` (what users usually get; fewer layers).

Each round times ``--steps`` eval-mode forwards of each, the order rotating from round to
round so that a slow drift of a shared machine hits all alike. Printed: the median time
of each, and per round the ratio onnx / direct - 1 with its median and interquartile
range, for wall-clock and process CPU time, and the load average before and after.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import chainrule as cr

from benchmarks._timing import quartiles, time_calls


def build_engines(size: int) -> dict[str, cr.Graph]:
    import onnx
    import torch
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.interop.torchvision_models import builder

    torch.manual_seed(0)
    module = builder("resnet18")(weights=None).eval()
    x = torch.zeros(1, 3, size, size)

    def export(**options) -> cr.Graph:
        buffer = io.BytesIO()
        torch.onnx.export(module, (x,), buffer, dynamo=False, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "N"}},
                          **options)
        return cr.interop.from_onnx(onnx.load_from_string(buffer.getvalue()))

    return {"direct": cr.interop.from_torch(module).eval(),
            "onnx": export(training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False),
            "onnx_folded": export()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=1, help="forwards per engine per round")
    parser.add_argument("--quick", action="store_true", help="2 rounds on 32x32 (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.size = 2, 32

    engines = build_engines(args.size)
    x = np.random.default_rng(0).standard_normal((args.batch, 3, args.size, args.size)) \
        .astype(np.float32)
    reference = engines["direct"].forward(x)
    for name, engine in engines.items():
        scale = np.max(np.abs(reference))
        error = np.max(np.abs(engine.forward(x) - reference)) / scale
        print(f"{name}: {len(engine.nodes)} nodes, max |output - direct| / max|direct| "
              f"= {error:.1e}")
    print(f"{args.rounds} rounds x {args.steps} forward(s) of batch {args.batch} at "
          f"{args.size}x{args.size}, order rotating; {os.cpu_count()} CPUs, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}")
    names = list(engines)
    load_before = os.getloadavg()
    times = {(k, c): [] for k in names for c in (0, 1)}
    ratios = {(k, c): [] for k in names[1:] for c in (0, 1)}
    for k in names:                                # warm-up
        time_calls(lambda: engines[k].forward(x), 1)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        got = {k: time_calls(lambda: engines[k].forward(x), args.steps) for k in order}
        for c in (0, 1):
            for k in names:
                times[k, c].append(got[k][c])
            for k in names[1:]:
                ratios[k, c].append(got[k][c] / got["direct"][c] - 1.0)
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    for c, clock in ((0, "wall-clock"), (1, "process CPU")):
        medians = ", ".join(f"{k} {statistics.median(times[k, c]) * 1e3:.0f} ms" for k in names)
        print(f"  {clock}: median {medians}")
        for k in names[1:]:
            q1, median, q3 = quartiles(ratios[k, c])
            print(f"    {k} / direct - 1 per round: median {median:+.1%}, interquartile range "
                  f"[{q1:+.1%}, {q3:+.1%}]")


if __name__ == "__main__":
    main()
