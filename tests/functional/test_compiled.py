"""The compiled (Numba) kernels of ``functional._compiled`` against the plain-loop
references of tests/reference.py, and the run-time switch ``CHAINRULE_NUMBA=0`` that
falls back to the NumPy kernels (whose own tests run in the rest of the suite)."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import chainrule.functional as F
from chainrule.functional import _compiled

from .. import reference as ref

needs_numba = pytest.mark.skipif(not _compiled.ENABLED, reason="Numba missing or CHAINRULE_NUMBA=0")


def _channel_major(x):
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "channel-major"])
def test_compiled_relu_matches_loop_reference(dtype, layout):
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, size=(3, 4, 5, 6)).astype(dtype)      # zeros included
    x[0, 0, 0, :3] = [np.nan, -np.nan, -0.0]
    if layout == "channel-major":
        x = _channel_major(x)
    y, positive = F.empty_with_layout(x), F.empty_with_layout(x, dtype=np.bool_)
    flat = _compiled.memory_flat(x, y, positive)
    assert flat is not None
    _compiled.relu_forward(*flat)
    expected, expected_positive = ref.relu(x)
    np.testing.assert_array_equal(y, expected)                    # NaNs in the same places
    np.testing.assert_array_equal(positive, expected_positive)
    y_eval = np.empty_like(x)
    _compiled.relu_forward_eval(*_compiled.memory_flat(x, y_eval))
    np.testing.assert_array_equal(y_eval, expected)

    grad = rng.standard_normal(x.shape).astype(dtype)
    grad[0, 0, 0, 3:] = np.inf                                     # where x <= 0 too
    grad = _channel_major(grad) if layout == "channel-major" else grad
    dx = F.empty_with_layout(x)
    _compiled.relu_backward(*_compiled.memory_flat(grad, positive, dx), dtype(0))
    np.testing.assert_array_equal(dx, ref.relu_backward(grad, x))


def test_memory_flat_refuses_arrays_it_cannot_walk_together():
    x = np.zeros((4, 6), np.float32)
    assert _compiled.memory_flat(x[:, ::2], np.zeros((4, 3), np.float32)) is None   # gaps
    assert _compiled.memory_flat(x, np.zeros((6, 4), np.float32).T) is None        # orders differ
    assert _compiled.memory_flat(x, np.zeros((4, 5), np.float32)) is None          # shapes differ
    a, b = _compiled.memory_flat(x.T, np.zeros((6, 4), np.float32, order="F"))
    assert a.shape == b.shape == (24,)


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hw", [(6, 8), (7, 9)])                 # odd sizes leave a remainder
def test_compiled_max_pool_2x2_matches_loop_reference(dtype, hw):
    rng = np.random.default_rng(1)
    x = rng.integers(-3, 3, size=(2, 3, *hw)).astype(dtype)        # many ties: first wins
    oh, ow = hw[0] // 2, hw[1] // 2
    out = np.empty((2, 3, oh, ow), dtype)
    winner = np.empty(out.shape, np.uint8)
    _compiled.max_pool_2x2_forward(x, out, winner)
    expected, argmax = ref.max_pool2d(x.astype(np.float64), (2, 2), (2, 2))
    np.testing.assert_array_equal(out, expected)
    rows, columns = np.divmod(winner, 2)
    np.testing.assert_array_equal(np.stack([2 * np.arange(oh)[:, None] + rows,
                                            2 * np.arange(ow) + columns], axis=-1), argmax)
    out_eval = np.empty_like(out)
    _compiled.max_pool_2x2_forward(x, out_eval, None)
    np.testing.assert_array_equal(out_eval, out)

    grad = rng.standard_normal(out.shape).astype(dtype)
    dx = np.full(x.shape, np.nan, dtype)
    dx[..., 2 * oh:, :] = 0
    dx[..., :2 * oh, 2 * ow:] = 0
    _compiled.max_pool_2x2_backward(grad, winner, dx, dtype(0))
    np.testing.assert_array_equal(dx, ref.max_pool2d_backward(grad, argmax, x.shape))


@needs_numba
def test_compiled_max_pool_nan_wins_as_in_torch():
    torch = pytest.importorskip("torch")
    x = np.array([[[[1, np.nan, np.nan, 2], [5, 3, 0, 1]]]], np.float32)   # (1, 1, 2, 4)
    out, winner = np.empty((1, 1, 1, 2), np.float32), np.empty((1, 1, 1, 2), np.uint8)
    _compiled.max_pool_2x2_forward(x, out, winner)
    t_out, t_index = torch.nn.functional.max_pool2d(torch.from_numpy(x), 2, return_indices=True)
    np.testing.assert_array_equal(out, t_out.numpy())
    assert np.isnan(out[0, 0, 0, 0]) and out[0, 0, 0, 1] != out[0, 0, 0, 1]
    # torch's flat index row * W + column against ours i * 2 + j
    rows, columns = np.divmod(winner[0, 0, 0], 2)
    assert (rows * 4 + columns + [0, 2]).tolist() == t_index[0, 0, 0].tolist()


@needs_numba
def test_cache_fallback_compiles_in_memory():
    """A function Numba cannot cache (here: no source file, as with no writable cache
    directory) is compiled without the cache instead of failing."""
    import numba

    namespace = {}
    exec("def add_one(a):\n    return a + 1\n", namespace)
    with pytest.raises(RuntimeError, match="cannot cache"):
        numba.njit(cache=True)(namespace["add_one"])(1)
    assert _compiled._jit(namespace["add_one"])(1) == 2


_LAYERS = """
import numpy as np, chainrule as cr
import chainrule.functional as F
from chainrule.functional import _compiled
rng = np.random.default_rng(3)
x = rng.standard_normal((4, 3, 10, 12)).astype(np.float32)
model = cr.Sequential(cr.Conv2d(3, 5, 3, padding=1), cr.BatchNorm2d(5), cr.ReLU(), cr.MaxPool2d(2))
model.reset_parameters(0)
y = model.forward(x)
dx = model.backward(np.ones_like(y))
np.savez(OUT, enabled=_compiled.ENABLED, y=y, dx=dx)
"""


@pytest.mark.parametrize("setting", ["0", "1"])
def test_environment_switch_falls_back_to_numpy(setting, tmp_path):
    """CHAINRULE_NUMBA=0 (inherited by child processes) turns the compiled kernels off;
    both paths give the same layers' outputs and gradients."""
    results = {}
    for value in ("0", setting):
        out = tmp_path / f"run{value}.npz"
        env = dict(os.environ, CHAINRULE_NUMBA=value)
        subprocess.run([sys.executable, "-c", _LAYERS.replace("OUT", repr(str(out)))],
                       check=True, env=env)
        results[value] = np.load(out)
    assert not results["0"]["enabled"]
    if setting == "1":
        assert results["1"]["enabled"] == (importlib.util.find_spec("numba") is not None)
    for key in ("y", "dx"):
        np.testing.assert_allclose(results[setting][key], results["0"][key], rtol=1e-5, atol=1e-6)


@needs_numba
@pytest.mark.parametrize("m", [37, 64])                           # a remainder past the 8 sums
@pytest.mark.parametrize("batch_stats", [True, False])
def test_compiled_batch_norm_matches_loop_reference(m, batch_stats):
    rng = np.random.default_rng(5)
    v = (rng.standard_normal((3, m)) * 2 + 5).astype(np.float32)
    g = rng.standard_normal((3, m)).astype(np.float32)
    weight = rng.uniform(0.5, 2, 3).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    eps = np.float32(1e-5)
    centered, out = np.empty_like(v), np.empty_like(v)
    mean, var, inv_std = (np.empty(3, np.float32) for _ in range(3))
    _compiled.batch_norm_forward(v, centered, out, mean, var, inv_std, weight, bias, eps)
    expected, expected_mean, expected_var = ref.batch_norm_rows(v, weight, bias, 1e-5)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-6)
    np.testing.assert_allclose(var, expected_var, rtol=1e-5)

    dx = np.empty_like(v)
    sum_g, sum_gc = np.empty(3, np.float32), np.empty(3, np.float32)
    _compiled.batch_norm_backward(g, centered, dx, weight * inv_std, inv_std, sum_g, sum_gc,
                                  m, batch_stats)
    expected_dx, dweight, dbias = ref.batch_norm_rows_backward(v, g, weight, 1e-5)
    if not batch_stats:                                  # running statistics: dx = a * g
        expected_dx = g * (weight * inv_std)[:, None]
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sum_gc * inv_std, dweight, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sum_g, dbias, rtol=1e-5, atol=1e-5)
