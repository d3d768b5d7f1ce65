"""MaxPool2d, AvgPool2d, AdaptiveAvgPool2d: finite differences, parity with torch.nn and
the plain-loop references over grids of windows; max pooling's tie-breaking; 3-D input."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from tests import reference as ref
from tests.helpers import assert_torch_parity, rel_error

torch = pytest.importorskip("torch")

DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])


def pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def distinct(shape, seed: int = 0) -> np.ndarray:
    """A random permutation of distinct values: no ties, so the max (and its gradient)
    is unique and finite differences (step 1e-6) never cross a kink."""
    values = np.random.default_rng(seed).permutation(int(np.prod(shape))) / 8.0 - 2.0
    return values.reshape(shape)


def params(cases):
    return [pytest.param(kwargs, shape, id=name) for name, (kwargs, shape) in cases.items()]


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
    layer = cr.MaxPool2d(**kwargs)
    error = cr.gradcheck(layer, distinct(shape))
    assert error < 1e-6, f"{layer!r}: gradcheck relative error {error:.2e}"


@DTYPES
@pytest.mark.parametrize("kwargs, shape", params(MAX_CASES))
def test_max_pool_torch_parity(kwargs, shape, dtype):
    assert_torch_parity(cr.MaxPool2d(**kwargs), torch.nn.MaxPool2d(**kwargs), distinct(shape), dtype=dtype)


@pytest.mark.parametrize("kwargs, shape", params(MAX_CASES))
def test_max_pool_matches_loop_reference(kwargs, shape):
    # Integer values in {0, 1, 2}: plenty of ties, which the reference breaks in
    # row-major window order, as the layer must.
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, shape).astype(np.float64)
    layer = cr.MaxPool2d(**kwargs)
    kernel = pair(kwargs["kernel_size"])
    stride = pair(kwargs.get("stride") or kwargs["kernel_size"])
    expected, argmax = ref.max_pool2d(x, kernel, stride, pair(kwargs.get("padding", 0)),
                                      pair(kwargs.get("dilation", 1)))
    out = layer.forward(x)
    np.testing.assert_array_equal(out, expected)
    grad = rng.integers(-4, 5, out.shape).astype(np.float64)  # integers: sums are exact
    np.testing.assert_array_equal(layer.backward(grad), ref.max_pool2d_backward(grad, argmax, shape))


def _torch_max_pool_input_grad(kwargs, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.MaxPool2d(**kwargs)(xt).backward(torch.tensor(grad))
    return xt.grad.numpy()


TIE_CASES = {name: MAX_CASES[name] for name in (
    "k2", "k3-s1-overlap", "k3-s2-overlap-nondivisible", "k3-s2-p1", "k3-s2-p1-d2",
    "k2x3-s1x2-p1-nondivisible", "k2-p1", "k2-nondivisible-5x7")}


@pytest.mark.parametrize("values", ["constant", "integers-0-3"])
@pytest.mark.parametrize("kwargs, shape", params(TIE_CASES))
def test_max_pool_ties_route_like_torch(kwargs, shape, values):
    """With ties the gradient is not unique; torch (and we) give the whole of it to the
    first maximum in row-major window order. Integer upstream gradients keep every sum
    exact, so the comparison can be exact whatever order the windows are added in."""
    rng = np.random.default_rng(2)
    if values == "constant":
        x = np.full(shape, 0.5)
    else:
        x = rng.integers(0, 3, shape).astype(np.float64)
    layer = cr.MaxPool2d(**kwargs)
    out = layer.forward(x)
    grad = rng.integers(-4, 5, out.shape).astype(np.float64)
    np.testing.assert_array_equal(layer.backward(grad), _torch_max_pool_input_grad(kwargs, x, grad))


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
    layer = cr.AvgPool2d(**kwargs)
    error = cr.gradcheck(layer, np.random.default_rng(3).standard_normal(shape))
    assert error < 1e-6, f"{layer!r}: gradcheck relative error {error:.2e}"


@DTYPES
@pytest.mark.parametrize("kwargs, shape", params(AVG_CASES))
def test_avg_pool_torch_parity(kwargs, shape, dtype):
    x = np.random.default_rng(4).standard_normal(shape)
    assert_torch_parity(cr.AvgPool2d(**kwargs), torch.nn.AvgPool2d(**kwargs), x, dtype=dtype)


@pytest.mark.parametrize("kwargs, shape", params(AVG_CASES))
def test_avg_pool_matches_loop_reference(kwargs, shape):
    x = np.random.default_rng(5).standard_normal(shape)
    kernel = pair(kwargs["kernel_size"])
    stride = pair(kwargs.get("stride") or kwargs["kernel_size"])
    expected = ref.avg_pool2d(x, kernel, stride, pair(kwargs.get("padding", 0)),
                              kwargs.get("count_include_pad", True))
    assert rel_error(cr.AvgPool2d(**kwargs).forward(x), expected) <= 1e-13


# ---------------------------------------------------------------- AdaptiveAvgPool2d

ADAPTIVE_CASES = {
    "global-1": (dict(output_size=1), (2, 3, 5, 4)),
    "2-divides-6x4": (dict(output_size=2), (2, 2, 6, 4)),
    "2-not-dividing-5x7": (dict(output_size=2), (1, 2, 5, 7)),
    "3x2-on-7x5": (dict(output_size=(3, 2)), (2, 2, 7, 5)),
    "3-on-8x7": (dict(output_size=3), (1, 2, 8, 7)),
    "5-bigger-than-3x4": (dict(output_size=5), (1, 2, 3, 4)),
    "4x6-bigger-than-3x2": (dict(output_size=(4, 6)), (2, 1, 3, 2)),
    "identity-4x5": (dict(output_size=(4, 5)), (1, 2, 4, 5)),
    "1-on-1x1": (dict(output_size=1), (2, 3, 1, 1)),
    "batch1-2x1": (dict(output_size=(2, 1)), (1, 3, 5, 3)),
}


@pytest.mark.parametrize("kwargs, shape", params(ADAPTIVE_CASES))
def test_adaptive_avg_pool_gradcheck(kwargs, shape):
    layer = cr.AdaptiveAvgPool2d(**kwargs)
    error = cr.gradcheck(layer, np.random.default_rng(6).standard_normal(shape))
    assert error < 1e-6, f"{layer!r}: gradcheck relative error {error:.2e}"


@DTYPES
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
    x = distinct((3, 7, 6), seed=9)
    layer = ours(**kwargs)
    assert_torch_parity(layer, theirs(**kwargs), x, dtype=np.float64)
    np.testing.assert_array_equal(layer.forward(x), ours(**kwargs).forward(x[None])[0])
    assert cr.gradcheck(layer, x) < 1e-6


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
    np.testing.assert_array_equal(dx, _torch_max_pool_input_grad(dict(kernel_size=2), x, grad))


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
