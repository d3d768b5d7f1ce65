"""The threaded helpers of chainrule.functional._parallel."""

from __future__ import annotations

import numpy as np
import pytest

from chainrule.functional import _parallel


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("shape", [(1, 7, 5), (2, 3, 1), (64, 400, 120), (129, 300, 10), (0, 4, 3)])
@pytest.mark.parametrize("transposed", [False, True])
def test_matmul_matches_numpy(workers, shape, transposed, monkeypatch):
    monkeypatch.setattr(_parallel, "MIN_SPLIT_MULADDS", 1)     # split even tiny products
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m)).T if transposed else rng.standard_normal((m, k))
    b = rng.standard_normal((n, k)).T                          # a strided operand, as W.T
    _parallel.set_num_workers(workers)
    try:
        got = _parallel.matmul(a, b)
    finally:
        _parallel.set_num_workers(None)
    np.testing.assert_allclose(got, a @ b, rtol=1e-12, atol=1e-12)
    assert got.shape == (m, n)


def test_matmul_writes_into_out_and_restores_blas_threads():
    controllers = _parallel._blas_controllers()
    before = [c.num_threads for c in controllers]
    a = np.arange(12.0).reshape(4, 3)
    b = np.ones((3, 2))
    out = np.full((4, 2), np.nan)
    result = _parallel.matmul(a, b, out=out)
    assert result is out
    np.testing.assert_array_equal(out, a @ b)
    assert [c.num_threads for c in controllers] == before


def test_blas_runs_single_threaded_inside_matmul(monkeypatch):
    """The reason for the helper: BLAS never gets more than one thread from chainrule."""
    controllers = _parallel._blas_controllers()
    if not controllers:
        pytest.skip("threadpoolctl cannot drive this BLAS")
    seen = []
    real = np.matmul

    def spy(*args, **kwargs):
        seen.append([c.num_threads for c in controllers])
        return real(*args, **kwargs)

    monkeypatch.setattr(_parallel.np, "matmul", spy)
    monkeypatch.setattr(_parallel, "MIN_SPLIT_MULADDS", 1)
    _parallel.matmul(np.ones((8, 4)), np.ones((4, 3)))
    assert seen and all(all(n == 1 for n in counts) for counts in seen)
