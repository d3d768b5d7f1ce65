"""MaxPool2d, AvgPool2d, AdaptiveAvgPool2d: finite differences, parity with torch.nn and
the plain-loop references over grids of windows; max pooling's tie-breaking; 3-D input."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from tests import reference as ref
from tests.helpers import assert_gradcheck, assert_torch_parity, each_dtype, pair, params, rel_error
from tests.layers.pool_cases import (ADAPTIVE_CASES, check_avg_pool_matches_loop_reference,
                                     check_max_pool_matches_reference_with_ties,
                                     check_max_pool_ties_route_like_torch, check_unbatched_input,
                                     distinct, torch_pair)

torch = pytest.importorskip("torch")


# ---------------------------------------------------------------- MaxPool2d

# id -> (MaxPool2d keyword arguments, input shape (N, C, H, W))
MAX_CASES = {
    "k2": (dict(kernel_size=2), (2, 3, 4, 6)),
    "k3-nondivisible-7x6": (dict(kernel_size=3), (1, 2, 7, 6)),
    "k2x3": (dict(kernel_size=(2, 3)), (2, 2, 5, 7)),
    "k2-s1": (dict(kernel_size=2, stride=1), (2, 2, 4, 5)),
    "k3-s1-overlap": (dict(kernel_size=3, stride=1), (1, 2, 5, 6)),
    "k3-s2-overlap-nondivisible": (dict(kernel_size=3, stride=2), (2, 2, 7, 8)),
    "k2-s1x2": (dict(kernel_size=2, stride=(1, 2)), (2, 2, 5, 6)),
    "k2-p1": (dict(kernel_size=2, padding=1), (2, 2, 5, 4)),
    "k2-nondivisible-5x7": (dict(kernel_size=2), (2, 3, 5, 7)),
    "k3-s2-p1": (dict(kernel_size=3, stride=2, padding=1), (2, 2, 7, 6)),
    "k3-s1-p1": (dict(kernel_size=3, stride=1, padding=1), (1, 2, 5, 4)),
    "k3-d2": (dict(kernel_size=3, stride=1, dilation=2), (1, 2, 7, 6)),
    "k3-s2-p1-d2": (dict(kernel_size=3, stride=2, padding=1, dilation=2), (2, 2, 8, 7)),
    "k2x3-s1x2-p1-nondivisible": (dict(kernel_size=(2, 3), stride=(1, 2), padding=1), (1, 3, 5, 8)),
    "k3-s3-nondivisible-8x7": (dict(kernel_size=3, stride=3), (2, 2, 8, 7)),
    "batch1": (dict(kernel_size=2), (1, 3, 5, 5)),
    "kernel-equals-input": (dict(kernel_size=(4, 5)), (2, 2, 4, 5)),
}


@pytest.mark.parametrize("kwargs, shape", params(MAX_CASES))
def test_max_pool_gradcheck(kwargs, shape):
    assert_gradcheck(cr.MaxPool2d(**kwargs), distinct(shape), 1e-6)


@each_dtype
@pytest.mark.parametrize("kwargs, shape", params(MAX_CASES))
def test_max_pool_torch_parity(kwargs, shape, dtype):
    assert_torch_parity(cr.MaxPool2d(**kwargs), torch.nn.MaxPool2d(**kwargs), distinct(shape), dtype=dtype)


@pytest.mark.parametrize("kwargs, shape", params(MAX_CASES))
def test_max_pool_matches_loop_reference(kwargs, shape):
    check_max_pool_matches_reference_with_ties(kwargs, shape)


TIE_CASES = {name: MAX_CASES[name] for name in (
    "k2", "k3-s1-overlap", "k3-s2-overlap-nondivisible", "k3-s2-p1", "k3-s2-p1-d2",
    "k2x3-s1x2-p1-nondivisible", "k2-p1", "k2-nondivisible-5x7")}


@pytest.mark.parametrize("values", ["constant", "integers-0-3"])
@pytest.mark.parametrize("kwargs, shape", params(TIE_CASES))
def test_max_pool_ties_route_like_torch(kwargs, shape, values):
    check_max_pool_ties_route_like_torch(kwargs, shape, values)


def test_max_pool_tie_goes_to_first_in_row_major_order():
    x = np.array([[[[1.0, 2.0], [2.0, 2.0]]]])
    layer = cr.MaxPool2d(2)
    layer.forward(x)
    np.testing.assert_array_equal(layer.backward(np.array([[[[3.0]]]])), [[[[0.0, 3.0], [0.0, 0.0]]]])


# ---------------------------------------------------------------- AvgPool2d

AVG_CASES = {
    "k2": (dict(kernel_size=2), (2, 3, 4, 6)),
    "k3-nondivisible-7x6": (dict(kernel_size=3), (1, 2, 7, 6)),
    "k2x3": (dict(kernel_size=(2, 3)), (2, 2, 5, 7)),
    "k2-s1": (dict(kernel_size=2, stride=1), (2, 2, 4, 5)),
    "k3-s1-overlap": (dict(kernel_size=3, stride=1), (1, 2, 5, 6)),
    "k3-s2-overlap-nondivisible": (dict(kernel_size=3, stride=2), (2, 2, 7, 8)),
    "k2-s1x2": (dict(kernel_size=2, stride=(1, 2)), (2, 2, 5, 6)),
    "k2-p1": (dict(kernel_size=2, padding=1), (2, 2, 5, 4)),
    "k3-s2-p1": (dict(kernel_size=3, stride=2, padding=1), (2, 2, 7, 6)),
    "k2-p1-exclude-pad": (dict(kernel_size=2, padding=1, count_include_pad=False), (2, 2, 5, 4)),
    "k3-s2-p1-exclude-pad": (dict(kernel_size=3, stride=2, padding=1, count_include_pad=False), (2, 2, 7, 6)),
    "k3-s1-p1-exclude-pad": (dict(kernel_size=3, stride=1, padding=1, count_include_pad=False), (1, 2, 4, 5)),
    "k3x2-s1x2-p1x0-exclude-pad": (dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0),
                                        count_include_pad=False), (2, 1, 5, 7)),
    "k2x3-s3-p0x1-nondivisible-exclude-pad": (dict(kernel_size=(2, 3), stride=3, padding=(0, 1),
                                                   count_include_pad=False), (1, 2, 8, 7)),
    "k3-s3-p1-nondivisible": (dict(kernel_size=3, stride=3, padding=1), (2, 2, 8, 7)),
    "exclude-pad-without-padding": (dict(kernel_size=2, count_include_pad=False), (1, 2, 4, 4)),
    "batch1": (dict(kernel_size=2), (1, 3, 5, 5)),
    "kernel-equals-input": (dict(kernel_size=(4, 5)), (2, 2, 4, 5)),
}


@pytest.mark.parametrize("kwargs, shape", params(AVG_CASES))
def test_avg_pool_gradcheck(kwargs, shape):
    assert_gradcheck(cr.AvgPool2d(**kwargs), np.random.default_rng(3).standard_normal(shape), 1e-6)


@each_dtype
@pytest.mark.parametrize("kwargs, shape", params(AVG_CASES))
def test_avg_pool_torch_parity(kwargs, shape, dtype):
    x = np.random.default_rng(4).standard_normal(shape)
    assert_torch_parity(cr.AvgPool2d(**kwargs), torch.nn.AvgPool2d(**kwargs), x, dtype=dtype)


@pytest.mark.parametrize("kwargs, shape", params(AVG_CASES))
def test_avg_pool_matches_loop_reference(kwargs, shape):
    x = np.random.default_rng(5).standard_normal(shape)
    check_avg_pool_matches_loop_reference(cr.AvgPool2d(**kwargs), kwargs, x, seed=6)


# ---------------------------------------------------------------- AdaptiveAvgPool2d

# Output sizes and inputs: pool_cases.ADAPTIVE_CASES (AdaptiveMaxPool2d's too).


@pytest.mark.parametrize("kwargs, shape", params(ADAPTIVE_CASES))
def test_adaptive_avg_pool_gradcheck(kwargs, shape):
    assert_gradcheck(cr.AdaptiveAvgPool2d(**kwargs), np.random.default_rng(6).standard_normal(shape),
                     1e-6)


@each_dtype
@pytest.mark.parametrize("kwargs, shape", params(ADAPTIVE_CASES))
def test_adaptive_avg_pool_torch_parity(kwargs, shape, dtype):
    x = np.random.default_rng(7).standard_normal(shape)
    assert_torch_parity(cr.AdaptiveAvgPool2d(**kwargs), torch.nn.AdaptiveAvgPool2d(**kwargs), x, dtype=dtype)


@pytest.mark.parametrize("kwargs, shape", params(ADAPTIVE_CASES))
def test_adaptive_avg_pool_matches_loop_reference(kwargs, shape):
    x = np.random.default_rng(8).standard_normal(shape)
    out = cr.AdaptiveAvgPool2d(**kwargs).forward(x)
    assert rel_error(out, ref.adaptive_avg_pool2d(x, pair(kwargs["output_size"]))) <= 1e-13


# ---------------------------------------------------------------- all three

LAYERS_3D = {
    "max-k3-s2-p1": (cr.MaxPool2d, torch.nn.MaxPool2d, dict(kernel_size=3, stride=2, padding=1)),
    "avg-k3-s2-p1-exclude-pad": (cr.AvgPool2d, torch.nn.AvgPool2d,
                                 dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    "avg-k2": (cr.AvgPool2d, torch.nn.AvgPool2d, dict(kernel_size=2)),
    "adaptive-3x2": (cr.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool2d, dict(output_size=(3, 2))),
    "adaptive-1": (cr.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool2d, dict(output_size=1)),
}


@pytest.mark.parametrize("ours, theirs, kwargs", LAYERS_3D.values(), ids=LAYERS_3D.keys())
def test_unbatched_chw_input(ours, theirs, kwargs):
    check_unbatched_input(ours, theirs, kwargs, distinct((3, 7, 6), seed=9))


@pytest.mark.parametrize("layer", [cr.MaxPool2d(2), cr.AvgPool2d(2), cr.AdaptiveAvgPool2d(1)],
                         ids=["max", "avg", "adaptive"])
def test_integer_input_becomes_float32(layer):
    out = layer.forward(np.arange(16, dtype=np.uint8).reshape(1, 1, 4, 4))
    assert out.dtype == np.float32


@pytest.mark.parametrize("make, match", [
    (lambda: cr.MaxPool2d(3, padding=2), "at most half"),
    (lambda: cr.AvgPool2d((2, 4), padding=(1, 3)), "at most half"),
    (lambda: cr.MaxPool2d(0), "kernel_size must be >= 1"),
    (lambda: cr.AdaptiveAvgPool2d(0), "output_size must be >= 1"),
], ids=["max-padding", "avg-padding", "kernel-0", "output-0"])
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_window_bigger_than_input_raises():
    with pytest.raises(ValueError, match="does not fit"):
        cr.MaxPool2d(3).forward(np.zeros((1, 1, 2, 5)))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(C, H, W\)"):
        cr.AvgPool2d(2).forward(np.zeros((4, 4)))


@pytest.mark.parametrize("kwargs", [dict(kernel_size=(1, 4)), dict(kernel_size=2, stride=1),
                                    dict(kernel_size=3, stride=2, padding=1),
                                    dict(kernel_size=2), dict(kernel_size=2, padding=1)])
def test_max_pool_routes_the_gradient_to_a_nan_as_torch_does(kwargs):
    x = np.arange(2 * 3 * 6 * 8, dtype=np.float64).reshape(2, 3, 6, 8) % 7
    x[0, 1, 2, 3] = x[1, 2, 4, 4] = x[1, 2, 4, 6] = np.nan  # two NaNs share some windows
    layer, twin = cr.MaxPool2d(**kwargs).to(np.float64), torch.nn.MaxPool2d(**kwargs)
    out = layer.forward(x)
    xt = torch.tensor(x, requires_grad=True)
    yt = twin(xt)
    upstream = np.ones(out.shape)
    yt.backward(torch.tensor(upstream))
    assert np.array_equal(np.isnan(out), np.isnan(yt.detach().numpy()))
    assert np.array_equal(layer.backward(upstream), xt.grad.numpy())


@pytest.mark.parametrize("hw", [(4, 6), (5, 7), (32, 32)])
def test_max_pool_2x2_path_matches_the_general_path(hw):
    """The pairwise 2x2/stride-2 kernel against the running max over offsets, on ties,
    -inf and a NaN, in a channel-major layout."""
    from chainrule.functional import pooling as P
    from chainrule.functional.im2col import _offset_slices

    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, (3, 4, *hw)).astype(np.float32)
    x[0, 0, 0, :2] = -np.inf
    x[1, 2, 1, 1] = np.nan
    x = x.transpose(1, 0, 2, 3).copy().transpose(1, 0, 2, 3)
    out_hw = (hw[0] // 2, hw[1] // 2)
    out, winner = P.max_pool_forward(x, (2, 2), (2, 2), (1, 1), out_hw)
    offsets = [_offset_slices(i, j, out_hw, (2, 2), (1, 1)) for i in range(2) for j in range(2)]
    best = np.empty(out.shape, np.float32)
    win = np.empty(out.shape, np.uint8)
    P._max_pool_by_offsets(x, offsets, best, win)
    for index, (rows, columns) in enumerate(offsets):      # the NaN fix-up of both paths
        win[np.isnan(x[..., rows, columns])] = index
    np.testing.assert_array_equal(out, best)
    np.testing.assert_array_equal(winner, win)
    assert out.strides[0] < out.strides[1]                  # channel-major kept


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("hw", [(4, 6), (5, 7), (32, 32)])
def test_max_pool_backward_with_non_finite_gradients_matches_torch(hw, threads, dtype,
                                                                   monkeypatch):
    """Each gradient reaches its window's winner unchanged and nothing else, also for
    -0.0, inf and NaN gradients (inf * 0 must not leak NaN into the losers): the
    float32 2x2 path (bits placed in 64-bit words) and the general path, with ties,
    remainder rows and columns, a channel-major layout and threads."""
    from chainrule.functional import _parallel

    monkeypatch.setattr(_parallel, "MIN_PARALLEL_ELEMENTS", 16)
    rng = np.random.default_rng(5)
    x = rng.integers(0, 3, (3, 4, *hw)).astype(dtype)           # ties
    x = x.transpose(1, 0, 2, 3).copy().transpose(1, 0, 2, 3)
    _parallel.set_num_workers(threads)
    try:
        layer = cr.MaxPool2d(2).to(dtype)
        out = layer.forward(x)
        grad = rng.standard_normal(out.shape).astype(dtype)
        grad[0, 0, 0, :2] = [-0.0, np.inf]
        grad[1, 1, 0, 0] = np.nan
        dx = layer.backward(grad)
    finally:
        _parallel.set_num_workers(None)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, torch_pair(torch.nn.MaxPool2d(2), x, grad)[1])


@pytest.mark.parametrize("kwargs, shape", params(MAX_CASES))
def test_max_pool_in_eval_mode_gives_the_training_output(kwargs, shape):
    """Eval mode skips the winners (no backward will need them); the maxima, NaN
    included, are those of training mode."""
    rng = np.random.default_rng(6)
    x = rng.integers(0, 3, shape).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    layer = cr.MaxPool2d(**kwargs)
    trained = layer.forward(x)
    layer.backward(np.ones_like(trained))
    layer.eval()
    evaluated = layer.forward(x)
    np.testing.assert_array_equal(evaluated, trained)       # NaN where training had NaN
    assert np.isnan(trained).any() or kwargs.get("dilation", 1) != 1
    assert layer._cache is None
