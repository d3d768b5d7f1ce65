"""Winograd F(2x2, 3x3) (``chainrule.functional.winograd``): forward and both gradients
against the plain-loop reference (tests/reference.py) and torch, in float64 and float32,
its compiled transforms against their NumPy twins, the chunks and threads, and the
switches that choose it (``Conv2d.winograd``, ``CHAINRULE_WINOGRAD``)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import chainrule as cr
from chainrule import functional as F
from chainrule.functional import _compiled, _parallel
from chainrule.functional import winograd as W
from tests import reference as ref
from tests.helpers import assert_torch_parity, float32_tolerance, rel_error

needs_numba = pytest.mark.skipif(not _compiled.ENABLED, reason="Numba missing or CHAINRULE_NUMBA=0")

# (N, C_in, C_out, H, W, padding (top, bottom, left, right)): odd and even sizes, padding
# 0, 1 and uneven, batch 1 and several, 1 to 64 channels
CASES = {
    "c1-k1-odd-p1": (1, 1, 1, 5, 7, (1, 1, 1, 1)),
    "c3-k4-even-p0": (3, 3, 4, 6, 8, (0, 0, 0, 0)),
    "c5-k2-odd-by-even-p1": (2, 5, 2, 7, 6, (1, 1, 1, 1)),
    "c16-k8-uneven-padding": (2, 16, 8, 5, 4, (2, 0, 1, 2)),
    "c1-k64-p0": (2, 1, 64, 4, 5, (0, 0, 0, 0)),
    "c64-k64-p1": (1, 64, 64, 3, 4, (1, 1, 1, 1)),
}


def _case_data(case, seed=0):
    n, c_in, c_out, h, w, padding = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, h, w))
    weight = rng.standard_normal((c_out, c_in, 3, 3))
    bias = rng.standard_normal(c_out)
    top, bottom, left, right = padding
    grad = rng.standard_normal((n, c_out, h + top + bottom - 2, w + left + right - 2))
    return x, weight, bias, grad


def _winograd(x, weight, bias, grad, padding, workspace=None):
    """Output, dx, dW, db of the functional Winograd kernels, in (N, C, H, W)."""
    xp = F.pad_channel_major(x, padding)
    y = F.winograd_forward(xp, weight, bias, workspace)
    dx, dw, db = F.winograd_backward(xp, weight, grad.transpose(1, 0, 2, 3), padding, True,
                                     workspace)
    return y.transpose(1, 0, 2, 3), dx.transpose(1, 0, 2, 3), dw, db


@pytest.fixture(params=["compiled", "numpy"])
def transforms(request, monkeypatch):
    """The compiled transforms and their NumPy twins (``_transforms`` reads ENABLED)."""
    if request.param == "compiled" and not _compiled.ENABLED:
        pytest.skip("Numba missing or CHAINRULE_NUMBA=0")
    monkeypatch.setattr(_compiled, "ENABLED", request.param == "compiled")
    return request.param


_reference_cache: dict = {}


def _reference(name):
    """The loop reference's (y, dx, dW, db) in float64, computed once per case."""
    if name not in _reference_cache:
        x, weight, bias, grad = _case_data(CASES[name])
        padding = CASES[name][5]
        y = ref.conv2d(x, weight, bias, padding=padding)
        _reference_cache[name] = (y,) + ref.conv2d_backward(x, weight, grad, padding=padding)
    return _reference_cache[name]


@pytest.mark.parametrize("name", list(CASES))
def test_winograd_matches_loop_reference_in_float64(name, transforms):
    x, weight, bias, grad = _case_data(CASES[name])
    got = _winograd(x, weight, bias, grad, CASES[name][5])
    for label, a, b in zip(("y", "dx", "dW", "db"), got, _reference(name)):
        assert rel_error(a, b) < 1e-12, f"{label}: {rel_error(a, b):.2e}"


@pytest.mark.parametrize("name", list(CASES))
def test_winograd_float32_error_within_parity_tolerance(name, transforms):
    """Float32 against the float64 loop reference, within the float32 tolerance the
    parity tests use for a sum of as many terms (C_in*9 for y, C_out*9 for dx, N*H_out*
    W_out for dW). Measured (BENCHMARKS.md): relative errors 1e-7 to 1e-6, as im2col."""
    n, c_in, c_out, h, w, padding = CASES[name]
    x, weight, bias, grad = (a.astype(np.float32) for a in _case_data(CASES[name]))
    got = _winograd(x, weight, bias, grad, padding)
    assert all(a.dtype == np.float32 for a in got)
    terms = (c_in * 9, c_out * 9, n * grad.shape[2] * grad.shape[3], n * grad[0, 0].size)
    for label, a, b, t in zip(("y", "dx", "dW", "db"), got, _reference(name), terms):
        assert rel_error(a, b) <= float32_tolerance(t), f"{label}: {rel_error(a, b):.2e}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,padding", [((3, 16, 9, 8), 1), ((2, 32, 6, 7), 0),
                                           ((1, 64, 5, 5), 1)], ids=["c16-odd", "c32-p0", "c64"])
def test_conv2d_layer_on_winograd_matches_torch(shape, padding, dtype):
    """A Conv2d the Winograd path serves (3x3, stride 1, >= 16 input channels and more
    output channels) against torch.nn.Conv2d: output and every gradient, float64 and
    float32."""
    c_in = shape[1]
    c_out = c_in + 8
    layer = cr.Conv2d(c_in, c_out, 3, padding=padding, dtype=dtype, rng=0)
    assert layer._uses_winograd(layer.output_shape(shape)[2:]) == _compiled.ENABLED
    x = np.random.default_rng(1).standard_normal(shape)
    out_pixels = shape[0] * np.prod(layer.output_shape(shape)[2:])
    assert_torch_parity(layer, torch.nn.Conv2d(c_in, c_out, 3, padding=padding), x, dtype=dtype,
                        terms=max(c_in * 9, c_out * 9, out_pixels))


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hw", [(4, 4), (5, 7), (8, 3), (3, 6)])
def test_compiled_transforms_match_numpy_twins(hw, dtype):
    """Each compiled transform against its NumPy twin, odd and even sizes, on
    non-contiguous chunks of a batch as the threads pass them."""
    rng = np.random.default_rng(2)
    c, k, n = 3, 5, 4
    oh, ow = hw
    th, tw = W.tiles(hw)
    xp = rng.standard_normal((c, n, oh + 2, ow + 2)).astype(dtype)[:, 1:3]
    grad = rng.standard_normal((k, n, oh, ow)).astype(dtype)[:, 1:3]
    m = rng.standard_normal((16, k, 2 * th * tw)).astype(dtype)
    bias = rng.standard_normal(k).astype(dtype)
    pairs = [
        (_compiled.winograd_input_transform, W.input_transform, (xp,), (16, c, 2 * th * tw)),
        (_compiled.winograd_grad_transform, W.grad_transform, (grad,), (16, k, 2 * th * tw)),
    ]
    for compiled, twin, args, shape in pairs:
        a, b = np.full(shape, np.nan, dtype), np.full(shape, np.nan, dtype)
        compiled(*args, a)
        twin(*args, b)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    for bias_or_none in (bias, None):
        a, b = np.full((k, 2, oh, ow), np.nan, dtype), np.full((k, 2, oh, ow), np.nan, dtype)
        _compiled.winograd_output_transform(m, bias_or_none, a)
        W.output_transform(m, bias_or_none, b)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    dv = rng.standard_normal((16, c, 2 * th * tw)).astype(dtype)
    for top, left in ((1, 1), (0, 2)):
        h, w = oh + 2 - top - (1 if top else 0), ow + 2 - left
        a, b = np.full((c, 2, h, w), np.nan, dtype), np.full((c, 2, h, w), np.nan, dtype)
        _compiled.winograd_input_grad_transform(dv, th, tw, top, left, a)
        W.input_grad_transform(dv, th, tw, top, left, b)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("workers", [1, 2])
def test_chunks_and_threads_do_not_change_the_result(workers):
    """One image per chunk (a workspace of one byte) on one or two threads gives what
    one chunk gives, up to the rounding of dW's sum over chunks."""
    x, weight, bias, grad = _case_data((5, 16, 8, 6, 7, (1, 1, 1, 1)))
    whole = _winograd(x, weight, bias, grad, (1, 1, 1, 1))
    _parallel.set_num_workers(workers)
    try:
        chunked = _winograd(x, weight, bias, grad, (1, 1, 1, 1), workspace=1)
    finally:
        _parallel.set_num_workers(None)
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_backward_without_input_gradient():
    x, weight, bias, grad = _case_data(CASES["c5-k2-odd-by-even-p1"])
    xp = F.pad_channel_major(x, (1, 1, 1, 1))
    dx, dw, db = F.winograd_backward(xp, weight, grad.transpose(1, 0, 2, 3), (1, 1, 1, 1),
                                     False, input_grad=False)
    assert dx is None and db is None
    np.testing.assert_allclose(dw, _reference("c5-k2-odd-by-even-p1")[2], rtol=1e-12)


def test_winograd_conv2d_matches_reference_and_checks_its_arguments():
    x, weight, bias, _ = _case_data(CASES["c3-k4-even-p0"])
    np.testing.assert_allclose(W.winograd_conv2d(x, weight, 1, bias),
                               ref.conv2d(x, weight, bias, padding=(1, 1, 1, 1)), rtol=1e-12)
    with pytest.raises(ValueError, match="3, 3"):
        W.winograd_conv2d(x, weight[..., :2], 1)
    with pytest.raises(ValueError, match="smaller than the 3x3 kernel"):
        W.winograd_conv2d(x[..., :2, :2], weight, 0)


def test_applies_only_where_it_serves_and_pays():
    def applies(shape=(64, 32, 3, 3), stride=(1, 1), dilation=(1, 1), groups=1,
                workspace=512 << 20):
        return W.applies(shape, stride, dilation, groups, (16, 16), 4, workspace)

    assert applies() == _compiled.ENABLED          # the NumPy twins never take a layer
    assert not applies(stride=(2, 2))
    assert not applies(dilation=(2, 1))
    assert not applies(groups=2)
    assert not applies(shape=(64, 32, 5, 5))
    assert not applies(shape=(64, 32, 1, 3))       # Conv1d's kernel as 2-D
    assert not applies(shape=(64, W.MIN_IN_CHANNELS - 1, 3, 3))
    assert applies(shape=(W.MIN_OUT_CHANNELS, W.MIN_OUT_CHANNELS, 3, 3)) == _compiled.ENABLED
    assert not applies(shape=(W.MIN_OUT_CHANNELS - 1, W.MIN_OUT_CHANNELS - 1, 3, 3))
    assert not applies(shape=(16, 32, 3, 3))       # fewer outputs: im2col's row unfolding
    assert not applies(workspace=1 << 10)          # one image's buffers would not fit


@needs_numba
@pytest.mark.parametrize("how", ["class", "layer"])
def test_winograd_switch_keeps_im2col(how, monkeypatch):
    """Conv2d.winograd = False (on the class or on one layer) keeps the im2col path;
    both paths agree."""
    x = np.random.default_rng(3).standard_normal((2, 16, 6, 5)).astype(np.float32)
    results = []
    for on in (True, False):
        layer = cr.Conv2d(16, 24, 3, padding=1, rng=0)
        if how == "class":
            monkeypatch.setattr(cr.Conv2d, "winograd", on)
        else:
            layer.winograd = on
        y = layer.forward(x)
        assert layer._cache[3] is on                 # the path forward took, for backward
        dx = layer.backward(np.ones_like(y))
        results.append((y, dx, layer.weight.grad))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


_CHILD = """
import chainrule as cr
print(cr.Conv2d.winograd, cr.Conv2d(16, 32, 3, padding=1)._uses_winograd((8, 8)))
"""


@pytest.mark.parametrize("env,expected", [
    ({"CHAINRULE_WINOGRAD": "0"}, "False False"),
    ({"CHAINRULE_WINOGRAD": "off"}, "False False"),
    ({"CHAINRULE_WINOGRAD": "1"}, "True True"),
    ({"CHAINRULE_WINOGRAD": "1", "CHAINRULE_NUMBA": "0"}, "True False"),
])
def test_environment_switch(env, expected):
    """CHAINRULE_WINOGRAD=0 sets Conv2d.winograd's default to False; with Numba off
    (CHAINRULE_NUMBA=0) no layer takes the path, whatever the switch."""
    if "CHAINRULE_NUMBA" not in env and not _compiled.ENABLED:
        expected = expected.split()[0] + " False"
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    child_env = dict(os.environ, **env, PYTHONPATH=os.path.abspath(src))
    out = subprocess.run([sys.executable, "-c", _CHILD], check=True, env=child_env,
                         capture_output=True, text=True).stdout.strip()
    assert out == expected
