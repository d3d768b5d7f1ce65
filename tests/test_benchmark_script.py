"""The benchmark script must keep running: one --quick pass on tiny batches.

No timing is asserted (timings belong in BENCHMARKS.md, not in a test)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_compare_quick_runs_every_net():
    pytest.importorskip("torch")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    done = subprocess.run([sys.executable, "-m", "benchmarks.compare", "--quick", "--profile"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for title in ("LeNet-5, batch 2", "CIFAR-style CNN, batch 2", "VGG-style CNN with BatchNorm, batch 2",
                  "Scaling: CIFAR-style CNN", "per-layer profile", "measured peak"):
        assert title in out, f"{title!r} missing from the output:\n{out}"
    assert out.count("**median") == 6          # train + infer ratio for each of 3 nets


def test_flop_count_of_one_conv():
    sys.path.insert(0, str(ROOT))
    from benchmarks.compare import count_flops

    forward, train = count_flops([("conv", 3, 8, 3, 1, True)], (3, 4, 4), batch=2)
    assert forward == 2 * 2 * 8 * 4 * 4 * 3 * 3 * 3
    assert train == 2 * forward                 # no input gradient for the first layer


def test_graph_overhead_quick_runs_and_builds_the_same_network(capsys):
    sys.path.insert(0, str(ROOT))
    import numpy as np

    import chainrule as cr
    from benchmarks.graph_overhead import as_graph, main

    # The graph replays the chain's layers: same keys, and bit for bit the same outputs and
    # gradients (the same kernels run in the same order), so only the bookkeeping differs.
    chain, graph = cr.models.lenet5(seed=0), as_graph(cr.models.lenet5(seed=0), (1, 28, 28))
    assert list(chain.state_dict()) == list(graph.state_dict())
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    out = chain.forward(x)
    assert np.array_equal(out, graph.forward(x))
    assert np.array_equal(chain.backward(np.ones_like(out)), graph.backward(np.ones_like(out)))
    for (key, p), (_, q) in zip(chain.named_parameters(), graph.named_parameters()):
        assert np.array_equal(p.grad, q.grad), key

    main(["--quick"])
    out = capsys.readouterr().out
    assert out.count("graph overhead per round: median") == 8   # 2 nets x 2 modes x 2 clocks
    assert "lenet5, batch 2" in out and "cifar_cnn, batch 2" in out
