"""ConvTranspose2d: finite differences, parity with torch.nn.ConvTranspose2d and the
plain-loop reference (forward and gradients) over a grid of kernels, strides, paddings,
output paddings, dilations and groups; the adjoint relation with Conv2d; unbatched
input; initialization, dtype, chunking and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import chainrule as cr
from tests import reference as ref
from tests.helpers import assert_gradcheck, assert_torch_parity, rel_error
from tests.layers.conv_cases import (assert_backward_needs_a_cached_forward,
                                     assert_gradients_accumulate,
                                     assert_unbatched_matches_a_batch_of_one, make_input)

torch = pytest.importorskip("torch")

# id -> (ConvTranspose2d keyword arguments, input shape (N, C_in, H, W)). Tiny shapes: the
# gradcheck costs two forward passes per input and weight element.
CASES = {
    "k1": (dict(in_channels=2, out_channels=3, kernel_size=1), (2, 2, 3, 4)),
    "k3": (dict(in_channels=2, out_channels=3, kernel_size=3), (2, 2, 4, 5)),
    "k2-s2": (dict(in_channels=2, out_channels=2, kernel_size=2, stride=2), (2, 2, 3, 4)),
    "k3-s2-p1-op1": (dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1,
                          output_padding=1), (2, 2, 4, 3)),
    "k3-s3-op2": (dict(in_channels=2, out_channels=2, kernel_size=3, stride=3, output_padding=2),
                  (1, 2, 3, 4)),
    "k2-s3-p2-op2-gaps": (dict(in_channels=2, out_channels=2, kernel_size=2, stride=3, padding=2,
                               output_padding=2), (2, 2, 4, 3)),   # outputs no kernel reaches
    "k3-p1": (dict(in_channels=2, out_channels=3, kernel_size=3, padding=1), (2, 2, 4, 5)),
    "k3-p2": (dict(in_channels=2, out_channels=2, kernel_size=3, padding=2), (1, 2, 5, 4)),
    "k3-d2": (dict(in_channels=2, out_channels=2, kernel_size=3, dilation=2), (2, 2, 3, 4)),
    "k3-s1-d2-op1": (dict(in_channels=2, out_channels=2, kernel_size=3, dilation=2,
                          output_padding=1), (2, 2, 3, 4)),            # op >= stride, < dilation
    "k2-s2-p1-d3-op2": (dict(in_channels=2, out_channels=3, kernel_size=2, stride=2, padding=1,
                             dilation=3, output_padding=2), (1, 2, 3, 3)),
    "k3x2-s2x1-p1x0-op1x0": (dict(in_channels=2, out_channels=2, kernel_size=(3, 2), stride=(2, 1),
                                  padding=(1, 0), output_padding=(1, 0)), (2, 2, 3, 4)),
    "k2x3-d2x1-s1x2": (dict(in_channels=2, out_channels=2, kernel_size=(2, 3), dilation=(2, 1),
                            stride=(1, 2)), (1, 2, 4, 3)),
    "groups2": (dict(in_channels=4, out_channels=6, kernel_size=3, groups=2), (2, 4, 3, 4)),
    "groups2-s2-p1-op1-d2": (dict(in_channels=4, out_channels=4, kernel_size=3, stride=2, padding=1,
                                  output_padding=1, dilation=2, groups=2), (1, 4, 4, 3)),
    "depthwise": (dict(in_channels=3, out_channels=3, kernel_size=3, padding=1, groups=3),
                  (2, 3, 4, 3)),
    "depthwise-multiplier2-s2": (dict(in_channels=3, out_channels=6, kernel_size=2, stride=2,
                                      groups=3), (1, 3, 3, 3)),
    "odd-7x5-s2-p1": (dict(in_channels=2, out_channels=2, kernel_size=3, stride=2, padding=1),
                      (1, 2, 7, 5)),
    "batch1": (dict(in_channels=3, out_channels=2, kernel_size=3), (1, 3, 3, 3)),
    "nobias": (dict(in_channels=2, out_channels=3, kernel_size=2, bias=False), (2, 2, 4, 3)),
    "1x1-input": (dict(in_channels=2, out_channels=2, kernel_size=3, stride=2), (2, 2, 1, 1)),
    "padding-leaves-1x1": (dict(in_channels=2, out_channels=2, kernel_size=3, padding=2),
                           (1, 2, 3, 3)),
    "everything": (dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 3),
                        padding=(1, 2), output_padding=(1, 2), dilation=(2, 1), groups=2,
                        bias=False), (2, 4, 3, 4)),
    # 16 output channels per group, stride 1: the forward is the flipped-kernel convolution
    # of Conv2d's input gradient, here with an output_padding past the stride.
    "flipped-kernel-op1-d2": (dict(in_channels=2, out_channels=16, kernel_size=3, padding=1,
                                   output_padding=1, dilation=2), (1, 2, 3, 4)),
    "flipped-kernel-groups2": (dict(in_channels=4, out_channels=32, kernel_size=3, padding=1,
                                    groups=2), (1, 4, 3, 3)),
}
PARAMS = [pytest.param(kwargs, shape, id=name) for name, (kwargs, shape) in CASES.items()]

# The backward's convolution of dL/dy by row unfolding (many output channels, a wide input):
# parity and reference only, its gradcheck would take thousands of forward passes.
ROWS_CASE = (dict(in_channels=4, out_channels=32, kernel_size=3, padding=1), (1, 4, 3, 12))
ALL_PARAMS = PARAMS + [pytest.param(*ROWS_CASE, id="rows-unfolding-backward")]


def pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def options(kwargs) -> dict:
    """The reference's arguments of a configuration, as pairs."""
    return dict(stride=pair(kwargs.get("stride", 1)), padding=pair(kwargs.get("padding", 0)),
                dilation=pair(kwargs.get("dilation", 1)), groups=kwargs.get("groups", 1))


def make(kwargs, dtype=np.float64, seed: int = 0) -> cr.ConvTranspose2d:
    return cr.ConvTranspose2d(**kwargs, dtype=dtype, rng=seed)


def most_terms(kwargs, shape) -> int:
    """The most terms any sum of the forward or backward adds: an output pixel sums at
    most C_in/G * kh*kw products, an input gradient C_out/G * kh*kw, the weight
    gradient N*H*W and the bias gradient N*H_out*W_out."""
    layer = make(kwargs)
    n, _, oh, ow = layer.output_shape(shape)
    kh, kw = layer.kernel_size
    groups = layer.groups
    return max(layer.in_channels // groups * kh * kw, layer.out_channels // groups * kh * kw,
               n * shape[2] * shape[3], n * oh * ow)


@pytest.mark.parametrize("kwargs, shape", PARAMS)
def test_gradcheck(kwargs, shape):
    assert_gradcheck(make(kwargs), make_input(shape), 1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("kwargs, shape", ALL_PARAMS)
def test_torch_parity(kwargs, shape, dtype):
    torch.manual_seed(0)
    theirs = torch.nn.ConvTranspose2d(**kwargs)
    assert_torch_parity(make(kwargs), theirs, make_input(shape), dtype=dtype,
                        terms=most_terms(kwargs, shape))


@pytest.mark.parametrize("kwargs, shape", ALL_PARAMS)
def test_matches_loop_reference(kwargs, shape):
    layer = make(kwargs)
    x = make_input(shape)
    bias = None if layer.bias is None else layer.bias.data
    opts = options(kwargs)
    expected = ref.conv_transpose2d(x, layer.weight.data, bias,
                                    output_padding=pair(kwargs.get("output_padding", 0)), **opts)
    out = layer.forward(x)
    assert out.shape == expected.shape == layer.output_shape(shape)
    assert rel_error(out, expected) <= 1e-12

    grad = make_input(out.shape, seed=2)
    dx = layer.backward(grad)
    dx_ref, dw_ref, db_ref = ref.conv_transpose2d_backward(x, layer.weight.data, grad, **opts)
    assert rel_error(dx, dx_ref) <= 1e-12
    assert rel_error(layer.weight.grad, dw_ref) <= 1e-12
    if bias is not None:
        assert rel_error(layer.bias.grad, db_ref) <= 1e-12


@pytest.mark.parametrize("kwargs, shape", ALL_PARAMS)
def test_is_the_adjoint_of_conv2d(kwargs, shape):
    """<ConvTranspose2d(x), y> = <x, Conv2d(y)> for the Conv2d from C_out to C_in channels
    with the same weight, stride, padding, dilation and groups (no bias)."""
    layer = make(dict(kwargs, bias=False))
    x = make_input(shape)
    y_shape = layer.output_shape(shape)
    y = make_input(y_shape, seed=3)
    conv = cr.Conv2d(layer.out_channels, layer.in_channels, layer.kernel_size, stride=layer.stride,
                     padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                     bias=False, dtype=np.float64)
    conv.weight.data[...] = layer.weight.data
    conv_y = conv.forward(y)
    # an output_padding of at least the stride gives Conv2d more outputs than x has
    conv_y = conv_y[:, :, :shape[2], :shape[3]]
    out = layer.forward(x)
    lhs, rhs = np.sum(out * y), np.sum(x * conv_y)
    scale = max(np.sum(np.abs(out * y)), np.sum(np.abs(x * conv_y)))   # bounds the rounding
    assert abs(lhs - rhs) <= 1e-12 * scale, (lhs, rhs)


# ---------------------------------------------------------------- unbatched input

def test_unbatched_input_matches_a_batch_of_one_and_torch():
    kwargs = dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1,
                  output_padding=1)
    layer = make(kwargs)
    x = make_input((2, 4, 5))
    y, grad = assert_unbatched_matches_a_batch_of_one(layer, x)
    assert y.shape == (3, 8, 10)
    torch.manual_seed(0)
    assert_torch_parity(make(kwargs), torch.nn.ConvTranspose2d(**kwargs), x)
    with pytest.raises(ValueError, match="gradient of shape"):
        layer.forward(x)
        layer.backward(grad[None])


# ---------------------------------------------------------------- options

@pytest.mark.parametrize("kwargs", [
    dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1, output_padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 3), padding=(1, 2),
         output_padding=(1, 2), dilation=(2, 1), groups=2),
    dict(in_channels=2, out_channels=16, kernel_size=3, padding=1),
], ids=["s2-p1-op1", "everything-groups2", "flipped-kernel"])
@pytest.mark.parametrize("chunk_bytes", [None, 1], ids=["one-chunk", "one-image-per-chunk"])
def test_skipping_the_input_gradient_and_chunking_keep_the_gradients(kwargs, chunk_bytes,
                                                                     monkeypatch):
    """backward(needs_input_grad=False) returns None and the same dW, db; processing one
    image per chunk (and not keeping G's columns) changes nothing beyond rounding."""
    from chainrule.functional import conv as fconv

    x = make_input((3, kwargs["in_channels"], 4, 5))
    layer = make(kwargs)
    grad = make_input(layer.output_shape(x.shape), seed=2)
    layer.forward(x)
    dx = layer.backward(grad)
    expected = [dx, layer.weight.grad.copy(), layer.bias.grad.copy()]
    if chunk_bytes is not None:
        monkeypatch.setattr(fconv, "CHUNK_BYTES", chunk_bytes)
        monkeypatch.setattr(fconv, "KEEP_COLUMNS_BYTES", 0)
    for needs_input_grad in (True, False):
        layer.zero_grad()
        out = layer.forward(x)
        assert rel_error(out, ref.conv_transpose2d(
            x, layer.weight.data, layer.bias.data,
            output_padding=layer.output_padding, **options(kwargs))) <= 1e-12
        dx = layer.backward(grad, needs_input_grad=needs_input_grad)
        assert (dx is None) == (not needs_input_grad)
        if dx is not None:
            assert rel_error(dx, expected[0]) <= 1e-13
        assert rel_error(layer.weight.grad, expected[1]) <= 1e-13
        assert rel_error(layer.bias.grad, expected[2]) <= 1e-13


def test_gradient_accumulates_across_backward_calls():
    layer = make(dict(in_channels=2, out_channels=3, kernel_size=3, stride=2))
    rng = np.random.default_rng(2)
    xs, grads = rng.standard_normal((2, 2, 2, 3, 4)), rng.standard_normal((2, 2, 3, 7, 9))
    assert_gradients_accumulate(layer, xs, grads)


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=4, out_channels=6, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 2), padding=(1, 1),
         output_padding=(1, 1), groups=2, bias=False, dilation=(2, 2)),
], ids=["plain", "everything"])
def test_repr_and_state_dict_match_torch(kwargs):
    ours, theirs = cr.ConvTranspose2d(**kwargs, rng=0), torch.nn.ConvTranspose2d(**kwargs)
    assert repr(ours) == repr(theirs)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in theirs.state_dict().items()}


# ---------------------------------------------------------------- initialization and dtype

@pytest.mark.parametrize("groups", [1, 2], ids=["dense", "groups2"])
def test_init_is_uniform_within_one_over_sqrt_of_torchs_fan_in(groups):
    layer = cr.ConvTranspose2d(16, 8, (3, 2), groups=groups, rng=0)
    theirs = torch.nn.ConvTranspose2d(16, 8, (3, 2), groups=groups)
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(theirs.weight)
    assert fan_in == 8 // groups * 3 * 2              # axis 1 of (C_in, C_out/G, kh, kw)
    bound = 1 / math.sqrt(fan_in)
    w = layer.weight.data.ravel().astype(np.float64)
    assert np.all(np.abs(w) <= bound) and np.all(np.abs(layer.bias.data) <= bound)
    assert abs(w.std() / (bound / math.sqrt(3)) - 1) < 0.1
    assert w.max() > 0.9 * bound and w.min() < -0.9 * bound
    assert np.abs(theirs.weight.detach().numpy()).max() <= bound
    assert np.abs(theirs.bias.detach().numpy()).max() <= bound


def test_float32_by_default_and_to_float64_casts():
    layer = cr.ConvTranspose2d(2, 3, 3, stride=2, rng=0)
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    x = make_input((1, 2, 3, 3))
    assert layer.forward(x).dtype == np.float32
    assert layer.backward(np.ones((1, 3, 7, 7))).dtype == np.float32
    y = layer.to(np.float64).forward(x)
    assert y.dtype == np.float64
    assert layer.backward(np.ones_like(y)).dtype == np.float64
    a, b = cr.ConvTranspose2d(2, 3, 3, rng=7), cr.ConvTranspose2d(2, 3, 3, rng=7)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("stride, dilation, output_padding", [
    (1, 1, 1), (2, 1, 1), (2, 1, 2), (1, 2, 1), (1, 2, 2), (2, 2, 2), (3, 1, 2), (2, 3, 2),
    ((2, 1), (1, 2), (1, 1)), ((2, 1), 1, (1, 1)), (1, (1, 3), (0, 2)),
])
def test_output_padding_is_refused_exactly_where_torch_refuses_it(stride, dilation,
                                                                  output_padding):
    kwargs = dict(stride=stride, dilation=dilation, output_padding=output_padding)
    try:
        torch.nn.ConvTranspose2d(2, 2, 3, **kwargs)(torch.zeros(1, 2, 4, 4))
        torch_refuses = False
    except RuntimeError as err:
        assert "output padding must be smaller than either stride or dilation" in str(err)
        torch_refuses = True
    if torch_refuses:
        with pytest.raises(ValueError, match="output_padding must be smaller than either "
                                             "stride or dilation"):
            cr.ConvTranspose2d(2, 2, 3, **kwargs)
    else:
        layer = cr.ConvTranspose2d(2, 2, 3, **kwargs, dtype=np.float64)
        assert layer.forward(np.zeros((1, 2, 4, 4))).shape == \
            tuple(torch.nn.ConvTranspose2d(2, 2, 3, **kwargs)(torch.zeros(1, 2, 4, 4)).shape)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(in_channels=3, out_channels=4, kernel_size=3, groups=2), ValueError, "groups must divide"),
    (dict(in_channels=4, out_channels=3, kernel_size=3, groups=2), ValueError, "groups must divide"),
    (dict(in_channels=2, out_channels=2, kernel_size=0), ValueError, "kernel_size must be >= 1"),
    (dict(in_channels=2, out_channels=2, kernel_size=3, stride=0), ValueError, "stride must be >= 1"),
    (dict(in_channels=2, out_channels=2, kernel_size=3, padding=-1), ValueError,
     "padding must be >= 0"),
    (dict(in_channels=2, out_channels=2, kernel_size=3, output_padding=-1), ValueError,
     "output_padding must be >= 0"),
    (dict(in_channels=2, out_channels=2, kernel_size=3, padding="same"), TypeError,
     "padding must be an int or a pair"),
    (dict(in_channels=0, out_channels=2, kernel_size=3), ValueError, "in_channels must be >= 1"),
    (dict(in_channels=2, out_channels=2, kernel_size=3, dtype=np.int32), TypeError, "float32 or"),
], ids=["in-not-divisible", "out-not-divisible", "kernel-0", "stride-0", "negative-padding",
        "negative-output-padding", "same-padding", "no-channels", "int-dtype"])
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        cr.ConvTranspose2d(**kwargs)
    assert "ConvTranspose2d(" in str(info.value)


def test_input_errors_are_clear():
    layer = cr.ConvTranspose2d(2, 2, 3, padding=2, rng=0)
    with pytest.raises(ValueError, match="input channels"):
        layer.forward(np.zeros((1, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"crops the whole output.*\(1, 2, 1, 2\)"):
        layer.forward(np.zeros((1, 2, 1, 2)))
    with pytest.raises(ValueError, match=r"4-D or 3-D\), got shape \(2, 2\)"):
        layer.forward(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="4-D or 3-D"):
        layer.forward(np.zeros((1, 1, 2, 4, 4)))


def test_backward_needs_a_cached_forward():
    assert_backward_needs_a_cached_forward(cr.ConvTranspose2d(1, 1, 3, rng=0),
                                           np.zeros((1, 1, 2, 2)), wrong_shape=(1, 1, 3, 3))

