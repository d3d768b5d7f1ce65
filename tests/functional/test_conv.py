"""The chunked, threaded convolution kernels (``chainrule.functional.conv``) and the
element-wise kernels that split work over threads.

Every fast path is checked against the plain-loop reference (``tests/reference.py``) and
against itself run one image per chunk and on one thread: the chunking and the threads
must not change the result beyond float rounding of the weight-gradient sums.
"""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule import functional as F
from chainrule.functional import _parallel
from chainrule.functional import conv as fconv
from tests import reference as ref


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def workers(request):
    _parallel.set_num_workers(request.param)
    yield request.param
    _parallel.set_num_workers(None)


def _conv_grads(x, weight, grad, stride, padding, dilation, workspace):
    """Forward output and (dx, dW, db) of the functional kernels, in (N, C, H, W)."""
    xp = F.pad_channel_major(x, padding)
    out_hw = grad.shape[2:]
    bias = np.linspace(-1, 1, weight.shape[0])
    y = F.conv2d_forward(xp, weight, bias, stride, dilation, out_hw, workspace)
    dx, dw, db = F.conv2d_backward(xp, weight, grad.transpose(1, 0, 2, 3), stride, dilation,
                                   padding, True, workspace)
    return y.transpose(1, 0, 2, 3), dx.transpose(1, 0, 2, 3), dw, db


# (N, C_in, C_out, H, W, kernel, stride, dilation, padding (top, bottom, left, right), groups)
CASES = {
    "k3-p1": (5, 3, 4, 6, 5, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1),
    "k3x2-s2-d2-p1x0-groups2": (4, 4, 6, 9, 8, (3, 2), (2, 2), (2, 1), (1, 1, 0, 0), 2),
    "k1-s2": (3, 2, 3, 5, 5, (1, 1), (2, 2), (1, 1), (0, 0, 0, 0), 1),
    "k3-d2-p1x3-groups2": (3, 4, 2, 7, 8, (3, 3), (1, 1), (2, 2), (1, 2, 3, 0), 2),
    "k2-p3-wider-than-reach": (2, 2, 3, 4, 4, (2, 2), (1, 1), (1, 1), (3, 0, 1, 1), 1),
    "k2x4-d3x2-p2x1-groups3": (3, 6, 9, 8, 9, (2, 4), (1, 1), (3, 2), (2, 1, 1, 2), 3),
    "k5-p2": (2, 2, 3, 7, 6, (5, 5), (1, 1), (1, 1), (2, 2, 2, 2), 1),
}


def _case_data(case, seed: int):
    """Random float64 input, weight and upstream gradient of a CASES entry."""
    n, c_in, c_out, h, w, kernel, stride, dilation, padding, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, h, w))
    weight = rng.standard_normal((c_out, c_in // groups, *kernel))
    top, bottom, left, right = padding
    oh = ref.out_size(h, kernel[0], stride[0], top, bottom, dilation[0])
    ow = ref.out_size(w, kernel[1], stride[1], left, right, dilation[1])
    return x, weight, rng.standard_normal((n, c_out, oh, ow))


@pytest.fixture(params=["col2im", "flipped-kernel"])
def input_gradient_path(request, monkeypatch):
    """Both ways to the stride-1 input gradient, whatever the channel count."""
    monkeypatch.setattr(fconv, "MIN_FLIPPED_ROWS", 1 << 30 if request.param == "col2im" else 1)
    return request.param


@pytest.fixture(params=["im2col", "row-unfold"])
def forward_path(request, monkeypatch):
    """Both forward kernels (row unfolding applies to stride 1 with kw > 1 only)."""
    monkeypatch.setattr(fconv, "_rows_pay_off", lambda *args: request.param == "row-unfold")
    return request.param


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
@pytest.mark.parametrize("workspace", [None, 1], ids=["one-chunk", "one-image-per-chunk"])
def test_conv_kernels_match_reference(case, workspace, workers, input_gradient_path, forward_path):
    n, c_in, c_out, h, w, kernel, stride, dilation, padding, groups = case
    x, weight, grad = _case_data(case, seed=0)

    y, dx, dw, db = _conv_grads(x, weight, grad, stride, padding, dilation, workspace)
    bias = np.linspace(-1, 1, c_out)
    np.testing.assert_allclose(y, ref.conv2d(x, weight, bias, stride, padding, dilation, groups),
                               rtol=1e-12, atol=1e-12)
    # The gradients are the adjoint of the (linear) convolution: <G, conv(dx-direction)>.
    # Check them against the reference through finite linear combinations instead:
    # dx = d<G, conv(x)>/dx, which for a linear map is conv's transpose applied to G.
    basis_dx = np.zeros_like(x)
    for index in [(0, 0, 0, 0), (n - 1, c_in - 1, h - 1, w - 1), (n // 2, c_in // 2, h // 2, w // 2)]:
        basis_dx[...] = 0
        basis_dx[index] = 1.0
        expected = np.sum(grad * ref.conv2d(basis_dx, weight, None, stride, padding, dilation, groups))
        assert dx[index] == pytest.approx(expected, rel=1e-12, abs=1e-12)
    basis_w = np.zeros_like(weight)
    for index in [(0, 0, 0, 0), (c_out - 1, c_in // groups - 1, kernel[0] - 1, kernel[1] - 1)]:
        basis_w[...] = 0
        basis_w[index] = 1.0
        expected = np.sum(grad * ref.conv2d(x, basis_w, None, stride, padding, dilation, groups))
        assert dw[index] == pytest.approx(expected, rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(db, grad.sum(axis=(0, 2, 3)), rtol=1e-12)


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_float32_kernels_with_thin_product_pieces_match_reference(case, workers, monkeypatch):
    """float32 products with a thin left operand run in column pieces on OpenBLAS's
    AVX-512 targets (``_parallel.thin_piece_width``); forced here for test sizes, on
    whatever BLAS runs the tests, the kernels must give the reference's results."""
    monkeypatch.setitem(_parallel._state, "small_kernels", True)
    monkeypatch.setattr(_parallel, "SMALL_PRODUCT_MULADDS", 150)
    monkeypatch.setattr(_parallel, "MIN_THIN_PIECE", 1)
    cut = []
    real = _parallel.thin_piece_width
    monkeypatch.setattr(_parallel, "thin_piece_width",
                        lambda *args: cut.append(real(*args)) or cut[-1])
    n, c_in, c_out, h, w, kernel, stride, dilation, padding, groups = case
    x, weight, grad = _case_data(case, seed=3)
    f32 = [a.astype(np.float32) for a in (x, weight, grad)]
    y, dx, dw, db = _conv_grads(*f32, stride, padding, dilation, None)
    y64, dx64, dw64, db64 = _conv_grads(x, weight, grad, stride, padding, dilation, None)
    assert any(width is not None for width in cut), "no product was cut"
    np.testing.assert_allclose(
        y64, ref.conv2d(x, weight, np.linspace(-1, 1, c_out), stride, padding, dilation, groups),
        rtol=1e-12, atol=1e-12)
    for got, expected in [(y, y64), (dx, dx64), (dw, dw64), (db, db64)]:
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_workspace_limit_chunks_the_batch_and_keeps_results(monkeypatch):
    """A Conv2d whose workspace limit fits one image computes in many chunks, with the
    same results as one chunk."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3, 7, 6))
    grad = rng.standard_normal((6, 4, 7, 6))
    seen = []
    real = fconv.batch_chunks
    monkeypatch.setattr(fconv, "batch_chunks", lambda n, k: seen.append(real(n, k)) or seen[-1])

    results = []
    chunk_counts = []
    for limit in (512 << 20, 1):
        seen.clear()
        layer = cr.Conv2d(3, 4, 3, padding=1, rng=0).double()
        layer.max_workspace_bytes = limit
        y = layer.forward(x)
        dx = layer.backward(grad)
        results.append((y, dx, layer.weight.grad.copy(), layer.bias.grad.copy()))
        chunk_counts.append({len(chunks) for chunks in seen})
    assert chunk_counts == [{1}, {x.shape[0]}]           # one chunk; then one per image
    for big, small in zip(*results):
        np.testing.assert_allclose(small, big, rtol=1e-12, atol=1e-12)
    assert cr.Conv2d.max_workspace_bytes == 512 << 20          # the class default is untouched


def test_chunks_respect_the_limit_and_use_every_thread(workers):
    per_image = 1 << 20
    whole = fconv.CHUNK_BYTES // per_image                         # images in a cache-sized chunk
    sizes = lambda chunks: {stop - start for start, stop in chunks}
    assert sizes(fconv._chunks(4 * whole, per_image, None)) == {whole}
    assert len(fconv._chunks(2, per_image, None)) == min(2, workers)   # big enough to share
    assert len(fconv._chunks(2, 16, None)) == 1                        # too small to share
    limit = 3 * per_image * workers
    assert max(sizes(fconv._chunks(100, per_image, limit))) <= 3
    assert sizes(fconv._chunks(5, per_image, 1)) == {1}             # never less than one image
    odd = fconv._chunks(5 * whole, per_image, None)                  # 5 cache-sized chunks...
    assert len(odd) % workers == 0 and max(sizes(odd)) <= whole      # ...evened out per thread
    assert [a for a, _ in odd[1:]] == [b for _, b in odd[:-1]] and odd[-1][1] == 5 * whole


@pytest.mark.parametrize("kernel, dilation, padding", [((3, 3), (1, 1), (1, 1, 1, 1)),
                                                      ((3, 2), (2, 1), (2, 1, 1, 0)),
                                                      ((5, 5), (1, 1), (0, 0, 0, 0))])
def test_flipped_backward_gives_every_weight_gradient_entry(kernel, dilation, padding, workers,
                                                            monkeypatch):
    """The stride-1 backward that takes dW from the columns of the padded gradient (rows
    in flipped order) agrees, entry by entry, with dW from the columns of the input."""
    rng = np.random.default_rng(3)
    n, c_in, c_out, h, w = 3, 4, 5, 7, 6
    x = rng.standard_normal((n, c_in, h, w))
    weight = rng.standard_normal((c_out, c_in, *kernel))
    top, bottom, left, right = padding
    oh = ref.out_size(h, kernel[0], 1, top, bottom, dilation[0])
    ow = ref.out_size(w, kernel[1], 1, left, right, dilation[1])
    grad = rng.standard_normal((n, c_out, oh, ow))
    results = []
    for rows in (1, 1 << 30):                          # flipped columns, then col2im
        monkeypatch.setattr(fconv, "MIN_FLIPPED_ROWS", rows)
        results.append(_conv_grads(x, weight, grad, (1, 1), padding, dilation, 1)[1:])
    for fused, separate in zip(*results):
        np.testing.assert_allclose(fused, separate, rtol=1e-12, atol=1e-12)


# (C_in, C_out, groups, kernel, dilation, padded (Hp, Wp)): the zero-widened columns
# overflow past the image's end (kw > 1), land in the next row, or do not exist (kw = 1).
FLAT_CASES = {
    "lenet-conv2": (6, 16, 1, (5, 5), (1, 1), (14, 14)),
    "k3-d2x1-groups2": (4, 6, 2, (3, 3), (2, 1), (11, 13)),
    "k3x2-d1x2": (3, 8, 1, (3, 2), (1, 2), (7, 9)),
    "one-channel-k5": (1, 6, 1, (5, 5), (1, 1), (12, 12)),
    "k1-groups2": (2, 2, 2, (1, 1), (1, 1), (5, 4)),
    "kernel-as-wide-as-input": (2, 3, 1, (2, 4), (1, 1), (5, 4)),
}


@pytest.mark.parametrize("case", FLAT_CASES.values(), ids=list(FLAT_CASES))
@pytest.mark.parametrize("workspace", [None, 1], ids=["one-chunk", "one-image-per-chunk"])
def test_flat_input_gradient_matches_col2im(case, workspace, workers):
    """The stride-1 input gradient on a Wp-wide grid (one shifted addition per kernel
    offset) equals col2im's, whose adjointness to im2col is tested in test_im2col."""
    c_in, c_out, groups, kernel, dilation, (hp, wp) = case
    n = 3
    rng = np.random.default_rng(4)
    weight = rng.standard_normal((c_out, c_in // groups, *kernel))
    oh, ow = hp - dilation[0] * (kernel[0] - 1), wp - dilation[1] * (kernel[1] - 1)
    grad = rng.standard_normal((c_out, n, oh, ow))
    flat = fconv._input_gradient_flat(weight, grad, groups, (hp, wp), dilation, workspace)
    plain = fconv._input_gradient_col2im(weight, grad, groups, (hp, wp), (1, 1), dilation,
                                         workspace)
    np.testing.assert_allclose(flat, plain, rtol=1e-12, atol=1e-12)


def test_flat_col2im_is_chosen_for_narrow_stride_1_outputs(monkeypatch):
    """LeNet's second layer (10 wide) takes the flat col2im, its first (28 wide) and
    any stride other than 1 the row-by-row one."""
    chosen = []
    for name in ("_input_gradient_flat", "_input_gradient_col2im"):
        real = getattr(fconv, name)
        monkeypatch.setattr(fconv, name, lambda *a, _real=real, _name=name, **k:
                            chosen.append(_name) or _real(*a, **k))
    rng = np.random.default_rng(6)
    for c_in, c_out, hw, stride, pad in [(6, 16, 14, 1, 0), (1, 6, 28, 1, 2), (6, 16, 14, 2, 0)]:
        xp = F.pad_channel_major(rng.standard_normal((2, c_in, hw, hw)), (pad,) * 4)
        out = (hw + 2 * pad - 5) // stride + 1
        F.conv2d_backward(xp, rng.standard_normal((c_out, c_in, 5, 5)),
                          rng.standard_normal((c_out, 2, out, out)), (stride, stride), (1, 1),
                          (pad,) * 4, True)
    assert chosen == ["_input_gradient_flat", "_input_gradient_col2im", "_input_gradient_col2im"]


def test_batch_chunks_cover_the_batch_evenly():
    assert _parallel.batch_chunks(10, 4) == [(0, 3), (3, 7), (7, 10)]
    assert _parallel.batch_chunks(3, 8) == [(0, 3)]
    assert _parallel.batch_chunks(1, 1) == [(0, 1)]


@pytest.mark.parametrize("layout", ["nchw", "channel-major"])
def test_threaded_relu_and_max_pool_match_one_thread(layout, monkeypatch):
    """Split over threads (the size threshold lowered): same values, same memory order."""
    monkeypatch.setattr(_parallel, "MIN_PARALLEL_ELEMENTS", 1024)
    rng = np.random.default_rng(2)
    shape = (8, 16, 34, 32)
    x = rng.integers(-4, 4, size=shape).astype(np.float32)           # many ties
    if layout == "channel-major":
        x = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    grad_pool = rng.standard_normal((8, 16, 17, 16)).astype(np.float32)
    outputs = {}
    for threads in (1, 2):
        _parallel.set_num_workers(threads)
        try:
            relu, pool = cr.ReLU(), cr.MaxPool2d(2)
            y = pool.forward(relu.forward(x))
            dx = relu.backward(pool.backward(grad_pool))
        finally:
            _parallel.set_num_workers(None)
        outputs[threads] = (y, dx)
    for one, two in zip(outputs[1], outputs[2]):
        np.testing.assert_array_equal(one, two)
        assert np.argsort(one.strides).tolist() == np.argsort(x.strides).tolist()
    expected, argmax = ref.max_pool2d(np.maximum(x[:1, :2], 0).astype(np.float64), (2, 2), (2, 2))
    np.testing.assert_array_equal(outputs[2][0][:1, :2], expected)


@pytest.mark.parametrize("layout", ["nchw", "channel-major"])
@pytest.mark.parametrize("training", [True, False])
def test_threaded_batch_norm_matches_one_thread(layout, training, monkeypatch):
    """BatchNorm2d shares its channels among the threads: the same values, bit for bit,
    and the same running statistics."""
    monkeypatch.setattr(_parallel, "MIN_PARALLEL_ELEMENTS", 1024)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 5, 9, 7)).astype(np.float32) * 3 + 1
    if layout == "channel-major":
        x = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    upstream = rng.standard_normal(x.shape).astype(np.float32)
    results = {}
    for threads in (1, 2, 3):
        _parallel.set_num_workers(threads)
        try:
            bn = cr.BatchNorm2d(5)
            bn.weight.data[:] = rng.uniform(0.5, 2, 5) if threads == 1 else results[1][-1]
            bn.train(training).gradients_in_eval()
            y = bn.forward(x)
            dx = bn.backward(upstream)
        finally:
            _parallel.set_num_workers(None)
        results[threads] = (y, dx, bn.weight.grad.copy(), bn.bias.grad.copy(),
                            bn.running_mean.copy(), bn.running_var.copy(), bn.weight.data.copy())
    for threads in (2, 3):
        for one, many in zip(results[1], results[threads]):
            np.testing.assert_array_equal(one, many)


def test_row_unfolding_is_chosen_for_the_wide_few_output_layers():
    """The forward picks row unfolding where it was measured faster, im2col elsewhere."""
    assert fconv._rows_pay_off(32, 32, 3, 32, 2)            # 32 -> 32 at 32x32
    assert fconv._rows_pay_off(64, 64, 3, 16, 2)            # 64 -> 64 at 16x16
    assert not fconv._rows_pay_off(32, 64, 3, 16, 2)        # more outputs than inputs
    assert not fconv._rows_pay_off(128, 128, 3, 8, 2)       # narrow, many outputs
    assert not fconv._rows_pay_off(3, 32, 3, 32, 2)         # first layer: few rows
