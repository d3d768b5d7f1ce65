"""Bounded memory: training holds steady over hundreds of steps, and a convolution over a
large batch stays within its workspace limit (``Conv2d.max_workspace_bytes``) while
giving the same results as one unchunked im2col over the whole batch.

Memory is measured with ``tracemalloc``, which sees NumPy's array buffers (NumPy reports
them to it) from every thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import chainrule as cr
import chainrule.functional.conv as conv_kernels
from tests.helpers import rel_error

SRC = Path(cr.__file__).resolve().parents[1]


@pytest.fixture
def traced():
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_over_500_training_steps(traced):
    model = cr.Sequential(
        cr.Conv2d(1, 4, 3, padding=1), cr.BatchNorm2d(4), cr.ReLU(), cr.MaxPool2d(2),
        cr.Flatten(), cr.Dropout(0.2), cr.Linear(4 * 4 * 4, 3),
    ).reset_parameters(0)
    data = np.random.default_rng(0)
    X = data.standard_normal((4000, 1, 8, 8)).astype(np.float32)
    y = data.integers(0, 3, 4000)
    current: dict[int, int] = {}

    def on_batch(epoch: int, step: int, loss: float) -> None:
        if step + 1 in (250, 500):
            current[step + 1] = tracemalloc.get_traced_memory()[0]

    cr.fit(model, cr.CrossEntropyLoss(), cr.optim.Adam(model.parameters(), lr=1e-3), (X, y),
           epochs=1, batch_size=8, on_batch=on_batch)
    growth = current[500] - current[250]
    # Everything a step allocates is released by the next one. Python's free lists of
    # small objects (tuples of shapes and axes), which tracemalloc counts as allocated,
    # fill up during the first 100-200 steps by ~40 KiB when this test runs alone (less
    # after other tests warmed them), then stay flat: hence the window from step 250.
    # A leak of one small array a step (a batch's activations here are 8 KiB) would add
    # megabytes over the 250 steps.
    assert growth < 32 * 1024, f"traced memory grew by {growth} bytes from step 250 to step 500"


# A convolution over a large batch, measured in a fresh interpreter: its scratch buffers
# (kept per thread between calls) then start empty, whatever ran before.
CONV_SCRIPT = """
import json, sys, tracemalloc
import numpy as np
import chainrule as cr

limit = int(sys.argv[1])
rng = np.random.default_rng(0)
x = rng.standard_normal((128, 2, 32, 32))                 # float64, 2 MiB
grad = rng.standard_normal((128, 2, 32, 32))
layer = cr.Conv2d(2, 2, 5, padding=2, dtype=np.float64, rng=1)
layer.max_workspace_bytes = limit
tracemalloc.start()
before = tracemalloc.get_traced_memory()[0]
layer.forward(x)
layer.backward(grad)
print(json.dumps({"peak": tracemalloc.get_traced_memory()[1] - before, "x": x.nbytes}))
"""
LIMIT = 4 << 20


def test_large_batch_convolution_stays_under_the_workspace_limit():
    """Forward and backward over 128 images with a 4 MiB workspace limit and two threads
    (the limit covers the buffers of all threads, but is at least one image per buffer
    and thread, 2 x 400 KiB here: two threads make it bind alike on every machine)."""
    env = dict(os.environ, PYTHONPATH=str(SRC), CHAINRULE_NUM_THREADS="2")
    done = subprocess.run([sys.executable, "-c", CONV_SCRIPT, str(LIMIT)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    peak, x = result["peak"], result["x"]
    # Beyond the limit only what every implementation holds, each about x.nbytes: the
    # padded input kept for backward, the output, a contiguous copy of the upstream
    # gradient and the padded input gradient; and one more for slack.
    assert peak <= LIMIT + 5 * x, \
        f"peak {peak / 2**20:.1f} MiB with a {LIMIT / 2**20:.0f} MiB workspace limit"
    columns = 25 * x                    # the whole (C*5*5, N*32*32) im2col matrix: 50 MiB
    assert peak < columns / 3, f"peak {peak / 2**20:.1f} MiB; im2col is {columns / 2**20:.0f} MiB"


def _conv_step(layer: cr.Conv2d, x: np.ndarray, grad: np.ndarray):
    layer.zero_grad()
    y = layer.forward(x)
    dx = layer.backward(grad)
    return y, dx, layer.weight.grad.copy(), layer.bias.grad.copy()


def test_chunked_convolution_equals_one_unchunked_im2col(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 2, 32, 32))
    grad = rng.standard_normal((128, 2, 32, 32))
    layer = cr.Conv2d(2, 2, 5, padding=2, dtype=np.float64, rng=1)
    layer.max_workspace_bytes = 1 << 20            # one or two images per chunk
    chunked = _conv_step(layer, x, grad)

    # The reference: one chunk holding the whole batch, as a plain im2col convolution.
    monkeypatch.setattr(conv_kernels, "CHUNK_BYTES", 1 << 40)
    layer.max_workspace_bytes = None
    whole = _conv_step(layer, x, grad)

    # Output and input gradient are computed image by image: bit for bit the same.
    np.testing.assert_array_equal(chunked[0], whole[0])
    np.testing.assert_array_equal(chunked[1], whole[1])
    # Weight and bias gradients sum over the batch in a different order per chunking.
    assert rel_error(chunked[2], whole[2]) <= 1e-12
    assert rel_error(chunked[3], whole[3]) <= 1e-12
