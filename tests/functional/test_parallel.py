"""The threaded helpers of chainrule.functional._parallel."""

from __future__ import annotations

import numpy as np
import pytest

from chainrule.functional import _parallel


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("shape", [(1, 7, 5), (2, 3, 1), (64, 400, 120), (129, 300, 10), (0, 4, 3),
                                   (16, 300, 700)])
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


@pytest.mark.parametrize("shape, split", [((64, 50, 16), "rows"), ((16, 50, 64), "columns")])
def test_matmul_splits_the_longer_side(shape, split, monkeypatch):
    """Rows of a when M >= N, else columns of b: the operand every thread reads whole
    is the smaller one (a linear layer's weight is split at a small batch)."""
    monkeypatch.setattr(_parallel, "MIN_SPLIT_MULADDS", 1)
    pieces = []
    real = _parallel.product_in_thread
    monkeypatch.setattr(_parallel, "product_in_thread",
                        lambda a, b, out: pieces.append((a.shape, b.shape)) or real(a, b, out))
    m, k, n = shape
    _parallel.set_num_workers(2)
    try:
        _parallel.matmul(np.ones((m, k)), np.ones((k, n)))
    finally:
        _parallel.set_num_workers(None)
    half = {"rows": [((m // 2, k), (k, n))] * 2, "columns": [((m, k), (k, n // 2))] * 2}
    assert pieces == half[split]


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

    def spy(real):
        def call(*args, **kwargs):
            seen.append([c.num_threads for c in controllers])
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(_parallel.np, "matmul", spy(np.matmul))
    monkeypatch.setattr(_parallel.np, "dot", spy(np.dot))
    monkeypatch.setattr(_parallel, "MIN_SPLIT_MULADDS", 1)
    _parallel.matmul(np.ones((8, 4)), np.ones((4, 3)))            # small: np.dot pieces
    _parallel.matmul(np.ones((64, 4)), np.ones((4, 40)))          # large: np.matmul pieces
    assert len(seen) >= 4 and all(all(n == 1 for n in counts) for counts in seen)


@pytest.mark.parametrize("shape", [(25, 300, 6), (3, 25, 30, 6), (30, 40, 20), (4, 20, 10, 30)],
                         ids=["small-2d", "small-stacked", "large-2d", "large-stacked"])
def test_product_in_thread_matches_matmul(shape, monkeypatch):
    """Small products (fewer outputs than np.matmul keeps the GIL for) go through np.dot,
    per group when stacked; larger ones through np.matmul; the results are the same."""
    *lead, m, k, n = shape
    rng = np.random.default_rng(1)
    a = rng.standard_normal((*lead, m, k))
    b = np.swapaxes(rng.standard_normal((*lead, n, k)), -1, -2)      # strided, as G.T
    calls = []
    for name in ("dot", "matmul"):
        real = getattr(np, name)
        monkeypatch.setattr(_parallel.np, name,
                            lambda *args, _real=real, _name=name, **kw: calls.append(_name)
                            or _real(*args, **kw))
    out = np.empty((*lead, m, n))
    assert _parallel.product_in_thread(a, b, out) is out
    np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-12)
    small = out.size < _parallel.MATMUL_KEEPS_GIL_BELOW
    assert set(calls) == ({"dot"} if small else {"matmul"})


@pytest.fixture
def small_kernels(monkeypatch):
    """Pretend the BLAS has OpenBLAS's small-matrix kernels, with a small size limit so
    that test-sized products get cut."""
    monkeypatch.setitem(_parallel._state, "small_kernels", True)
    monkeypatch.setattr(_parallel, "SMALL_PRODUCT_MULADDS", 1000)
    monkeypatch.setattr(_parallel, "MIN_THIN_PIECE", 8)


def test_thin_piece_width_cuts_only_long_thin_float32_products(small_kernels, monkeypatch):
    width = _parallel.thin_piece_width(4, 25, 103, np.float32)
    assert width == 10 and 4 * 25 * width <= _parallel.SMALL_PRODUCT_MULADDS
    assert _parallel.thin_piece_width(4, 25, 10, np.float32) is None        # small: whole
    assert _parallel.thin_piece_width(8, 25, 500, np.float32) is None       # a too thick
    assert _parallel.thin_piece_width(4, 25, 103, np.float64) is None       # not measured
    monkeypatch.setitem(_parallel._state, "small_kernels", False)           # e.g. Haswell
    assert _parallel.thin_piece_width(4, 25, 103, np.float32) is None


def test_blas_targets_with_small_kernels_are_recognised(monkeypatch):
    class Controller:
        internal_api = "openblas"
        architecture = "SkylakeX"

    monkeypatch.setitem(_parallel._state, "small_kernels", None)
    monkeypatch.setitem(_parallel._state, "blas", [Controller()])
    assert _parallel._blas_has_small_kernels() is True
    Controller.architecture = "Haswell"
    monkeypatch.setitem(_parallel._state, "small_kernels", None)
    assert _parallel._blas_has_small_kernels() is False


@pytest.mark.parametrize("stacked", [False, True], ids=["2d", "one-group-stacked"])
def test_thin_products_run_in_column_pieces(small_kernels, stacked, monkeypatch):
    """Every column of out written once, by pieces no wider than the limit allows, into
    a strided out (a slice of a larger array, as a convolution's output block)."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((4, 25)).astype(np.float32)
    b = rng.standard_normal((103, 25)).astype(np.float32).T               # strided, as G.T
    whole = np.full((4, 120), np.nan, np.float32)
    out = whole[:, 7:110]
    widths = []
    for name in ("matmul", "dot"):          # pieces this small go through np.dot
        real = getattr(np, name)
        monkeypatch.setattr(_parallel.np, name, lambda x, y, _real=real, **kw:
                            widths.append(y.shape[1]) or _real(x, y, **kw))
    if stacked:
        _parallel.product_in_thread(a[None], b[None], out[None])
    else:
        _parallel.product_in_thread(a, b, out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)
    assert np.isnan(whole[:, :7]).all() and np.isnan(whole[:, 110:]).all()
    assert widths == [10] * 10 + [3]
