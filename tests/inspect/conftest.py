"""Small models shared by the inspect tests: sized so a test runs in well under a second."""

from __future__ import annotations

import numpy as np

import chainrule as cr


def small_convnet(seed: int = 0, dtype=np.float32) -> cr.Sequential:
    """(N, 1, 8, 8) -> (N, 3): conv, ReLU, max-pool, conv, ReLU, flatten, linear."""
    model = cr.Sequential(
        cr.Conv2d(1, 4, 3, padding=1), cr.ReLU(), cr.MaxPool2d(2),
        cr.Conv2d(4, 6, 3), cr.ReLU(), cr.Flatten(), cr.Linear(6 * 2 * 2, 3))
    return model.reset_parameters(seed).to(dtype)


def batch(n: int = 8, seed: int = 1, shape=(1, 8, 8), classes: int = 3, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, *shape)).astype(dtype), rng.integers(0, classes, n))
