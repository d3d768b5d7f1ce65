"""Conv2d: finite differences, parity with torch.nn.Conv2d and the plain-loop reference
over a grid of kernels, strides, paddings, dilations and groups; initialization, dtype,
'same' padding and gradient accumulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

import chainrule as cr
from tests import reference as ref
from tests.helpers import assert_gradcheck, assert_torch_parity, rel_error
from tests.layers.conv_cases import (assert_backward_needs_a_cached_forward,
                                     assert_gradients_accumulate, make_input)

torch = pytest.importorskip("torch")

# id -> (Conv2d keyword arguments, input shape (N, C_in, H, W)). Shapes are tiny: the
# gradcheck costs two forward passes per input and weight element.
CASES = {
    "k1": (dict(in_channels=2, out_channels=3, kernel_size=1), (2, 2, 4, 5)),
    "k3": (dict(in_channels=2, out_channels=3, kernel_size=3), (2, 2, 5, 5)),
    "k5-p2": (dict(in_channels=1, out_channels=2, kernel_size=5, padding=2), (2, 1, 6, 5)),
    "k3x2": (dict(in_channels=2, out_channels=2, kernel_size=(3, 2)), (2, 2, 5, 4)),
    "k1x5-p0x2": (dict(in_channels=2, out_channels=3, kernel_size=(1, 5), padding=(0, 2)), (1, 2, 3, 6)),
    "k3-s2-remainder": (dict(in_channels=2, out_channels=2, kernel_size=3, stride=2), (2, 2, 8, 7)),
    "k2-s3-remainder": (dict(in_channels=2, out_channels=3, kernel_size=2, stride=3), (1, 2, 8, 7)),
    "k3-s2x1-p1": (dict(in_channels=2, out_channels=2, kernel_size=3, stride=(2, 1), padding=1),
                   (2, 2, 6, 5)),
    "k3-s3-p1-remainder": (dict(in_channels=1, out_channels=2, kernel_size=3, stride=3, padding=1),
                           (2, 1, 7, 6)),
    "k3-p1": (dict(in_channels=2, out_channels=3, kernel_size=3, padding=1), (2, 2, 5, 4)),
    "k3-p2x0": (dict(in_channels=2, out_channels=2, kernel_size=3, padding=(2, 0)), (1, 2, 4, 5)),
    "same-k3": (dict(in_channels=2, out_channels=3, kernel_size=3, padding="same"), (2, 2, 5, 4)),
    "same-k4-even": (dict(in_channels=2, out_channels=2, kernel_size=4, padding="same"), (1, 2, 5, 6)),
    "same-k2x3-d2": (dict(in_channels=2, out_channels=2, kernel_size=(2, 3), dilation=2, padding="same"),
                     (2, 2, 5, 6)),
    "same-k3-d1x3": (dict(in_channels=1, out_channels=2, kernel_size=3, dilation=(1, 3), padding="same"),
                     (2, 1, 4, 7)),
    "same-k2-nobias": (dict(in_channels=2, out_channels=2, kernel_size=2, padding="same", bias=False),
                       (1, 2, 3, 4)),
    "valid-k3": (dict(in_channels=2, out_channels=2, kernel_size=3, padding="valid"), (2, 2, 5, 6)),
    "k3-d2": (dict(in_channels=2, out_channels=2, kernel_size=3, dilation=2), (1, 2, 7, 6)),
    "k2x3-d1x3": (dict(in_channels=2, out_channels=2, kernel_size=(2, 3), dilation=(1, 3)), (2, 2, 5, 8)),
    "k3-s2-p1-d2-remainder": (dict(in_channels=2, out_channels=2, kernel_size=3, stride=2, padding=1,
                                   dilation=2), (1, 2, 8, 7)),
    "groups2": (dict(in_channels=4, out_channels=6, kernel_size=3, groups=2), (2, 4, 5, 5)),
    "groups2-s2-p1-d2": (dict(in_channels=4, out_channels=4, kernel_size=3, stride=2, padding=1,
                              dilation=2, groups=2), (1, 4, 7, 6)),
    "depthwise": (dict(in_channels=3, out_channels=3, kernel_size=3, padding=1, groups=3), (2, 3, 5, 4)),
    "depthwise-multiplier2": (dict(in_channels=3, out_channels=6, kernel_size=3, groups=3), (1, 3, 5, 5)),
    "depthwise-same-nobias": (dict(in_channels=2, out_channels=4, kernel_size=(3, 2), padding="same",
                                   groups=2, bias=False), (2, 2, 4, 5)),
    "depthwise-s2-p1-d2-remainder": (dict(in_channels=3, out_channels=3, kernel_size=3, stride=2,
                                          padding=1, dilation=2, groups=3), (2, 3, 8, 7)),
    "depthwise-multiplier3-s3x2-k2x3": (dict(in_channels=2, out_channels=6, kernel_size=(2, 3),
                                             stride=(3, 2), padding=(1, 0), groups=2), (1, 2, 7, 9)),
    "depthwise-1x1-spatial-k3-p1": (dict(in_channels=4, out_channels=4, kernel_size=3, padding=1,
                                         groups=4), (2, 4, 1, 1)),
    "odd-7x5-s2-p1": (dict(in_channels=2, out_channels=2, kernel_size=3, stride=2, padding=1), (1, 2, 7, 5)),
    "batch1": (dict(in_channels=3, out_channels=2, kernel_size=3), (1, 3, 4, 4)),
    "nobias": (dict(in_channels=2, out_channels=3, kernel_size=2, bias=False), (2, 2, 4, 3)),
    "kernel-equals-input": (dict(in_channels=2, out_channels=3, kernel_size=(4, 5)), (2, 2, 4, 5)),
    "kernel-equals-padded-input": (dict(in_channels=2, out_channels=2, kernel_size=5, padding=1),
                                   (2, 2, 3, 3)),
    "dilated-kernel-equals-padded-input": (dict(in_channels=1, out_channels=2, kernel_size=3, dilation=2,
                                                padding=1), (2, 1, 3, 3)),
    "1x1-spatial-k1": (dict(in_channels=3, out_channels=2, kernel_size=1), (2, 3, 1, 1)),
    "1x1-spatial-k3-p1": (dict(in_channels=2, out_channels=2, kernel_size=3, padding=1), (1, 2, 1, 1)),
    "everything": (dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2),
                        dilation=(2, 1), groups=2, bias=False), (2, 4, 7, 6)),
}
PARAMS = [pytest.param(kwargs, shape, id=name) for name, (kwargs, shape) in CASES.items()]


def padding4(kwargs) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding of a Conv2d configuration, by torch's rule:
    'same' pads dilation*(k-1) in total per dimension, the odd one at the bottom/right."""
    padding = kwargs.get("padding", 0)
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        pads = []
        for k, d in zip(pair(kwargs["kernel_size"]), pair(kwargs.get("dilation", 1))):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return (ph, ph, pw, pw)


def pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def make(kwargs, dtype=np.float64, seed: int = 0) -> cr.Conv2d:
    return cr.Conv2d(**kwargs, dtype=dtype, rng=seed)


@pytest.mark.parametrize("kwargs, shape", PARAMS)
def test_gradcheck(kwargs, shape):
    assert_gradcheck(make(kwargs), make_input(shape), 1e-6)


# torch warns that an even 'same' kernel pads a copy of the input: true, and irrelevant here.
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("kwargs, shape", PARAMS)
def test_torch_parity(kwargs, shape, dtype):
    torch.manual_seed(0)
    torch_conv = torch.nn.Conv2d(**kwargs)
    assert_torch_parity(make(kwargs), torch_conv, make_input(shape), dtype=dtype)


@pytest.mark.parametrize("kwargs, shape", PARAMS)
def test_forward_matches_loop_reference(kwargs, shape):
    layer = make(kwargs)
    x = make_input(shape)
    bias = None if layer.bias is None else layer.bias.data
    expected = ref.conv2d(x, layer.weight.data, bias, pair(kwargs.get("stride", 1)), padding4(kwargs),
                          pair(kwargs.get("dilation", 1)), kwargs.get("groups", 1))
    out = layer.forward(x)
    assert out.shape == expected.shape == layer.output_shape(shape)
    assert rel_error(out, expected) <= 1e-12
    if kwargs.get("padding") == "same":
        assert out.shape[2:] == shape[2:]


# ---------------------------------------------------------------- initialization and dtype

@pytest.mark.parametrize("groups", [1, 4], ids=["dense", "groups4"])
def test_default_init_is_uniform_within_one_over_sqrt_fan_in(groups):
    layer = cr.Conv2d(8, 64, 3, groups=groups, rng=0)
    fan_in = 8 // groups * 9
    bound = 1 / math.sqrt(fan_in)
    w = layer.weight.data.ravel().astype(np.float64)
    assert np.all(np.abs(w) <= bound) and np.all(np.abs(layer.bias.data) <= bound)
    # U(-b, b): mean 0, std b/sqrt(3), a quarter of the values in each quarter of the range.
    assert abs(w.mean()) < 4 * bound / math.sqrt(3 * w.size)
    assert abs(w.std() / (bound / math.sqrt(3)) - 1) < 0.05
    quarters = np.histogram(w, bins=4, range=(-bound, bound))[0] / w.size
    np.testing.assert_allclose(quarters, 0.25, atol=0.03)
    assert w.max() > 0.95 * bound and w.min() < -0.95 * bound  # the whole range is used


def test_init_matches_torch_bound():
    torch.manual_seed(0)
    torch_conv = torch.nn.Conv2d(6, 32, (3, 2), groups=2)
    bound = 1 / math.sqrt(3 * 3 * 2)
    ours = cr.Conv2d(6, 32, (3, 2), groups=2, rng=0)
    for name, p in ours.named_parameters():
        theirs = dict(torch_conv.named_parameters())[name].detach().numpy()
        assert p.shape == theirs.shape
        assert np.abs(p.data).max() <= bound and np.abs(theirs).max() <= bound
        assert abs(p.data.std() - theirs.std()) < 0.25 * theirs.std()


def test_same_seed_same_weights():
    a = cr.Conv2d(3, 4, 3, rng=7)
    b = cr.Conv2d(3, 4, 3, rng=np.random.default_rng(7))
    c = cr.Conv2d(3, 4, 3, rng=8)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)
    assert not np.array_equal(a.weight.data, c.weight.data)
    c.reset_parameters(7)
    np.testing.assert_array_equal(a.weight.data, c.weight.data)
    np.testing.assert_array_equal(a.bias.data, c.bias.data)


def test_float32_by_default_and_to_float64_casts():
    layer = cr.Conv2d(2, 3, 3, rng=0)
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    assert layer.weight.grad.dtype == np.float32
    x = make_input((1, 2, 4, 4))
    assert layer.forward(x).dtype == np.float32  # float64 data into a float32 model
    before = layer.weight.data.copy()
    assert layer.to(np.float64) is layer
    for p in layer.parameters():
        assert p.data.dtype == np.float64 and p.grad.dtype == np.float64
    np.testing.assert_array_equal(layer.weight.data, before)
    y = layer.forward(x)
    assert y.dtype == np.float64
    assert layer.backward(np.ones_like(y)).dtype == np.float64


@pytest.mark.parametrize("kernel, dilation", [(1, 1), (2, 1), (3, 1), (4, 1), (5, 2), ((2, 5), (3, 1))],
                         ids=["k1", "k2", "k3", "k4", "k5-d2", "k2x5-d3x1"])
def test_same_padding_keeps_spatial_size(kernel, dilation):
    layer = cr.Conv2d(2, 3, kernel, padding="same", dilation=dilation, rng=0)
    x = make_input((2, 2, 7, 6))
    y = layer.forward(x)
    assert y.shape == (2, 3, 7, 6)
    assert layer.backward(np.ones_like(y)).shape == x.shape


def test_gradient_accumulates_across_backward_calls():
    layer = cr.Conv2d(2, 3, 3, padding=1, dtype=np.float64, rng=0)
    rng = np.random.default_rng(2)
    xs, grads = rng.standard_normal((2, 2, 2, 5, 4)), rng.standard_normal((2, 2, 3, 5, 4))
    assert_gradients_accumulate(layer, xs, grads)


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=2, dilation=(1, 2), groups=2),
    dict(in_channels=1, out_channels=6, kernel_size=5, padding=2),
], ids=["k3-p1", "s2-d1x2-groups2", "lenet-conv1"])
@pytest.mark.parametrize("needs_input_grad", [True, False])
@pytest.mark.parametrize("chunk_bytes", [None, 1], ids=["one-chunk", "one-image-per-chunk"])
def test_kept_columns_give_the_same_gradients_as_unfolding_again(kwargs, needs_input_grad,
                                                                 chunk_bytes, monkeypatch):
    """A small layer keeps its forward's columns for dW; the results equal those of
    unfolding the input again in backward, up to the rounding of dW's sums (one
    product instead of a sum over chunks); dx does not read the columns."""
    from chainrule.functional import conv as fconv

    if chunk_bytes is not None:
        monkeypatch.setattr(fconv, "CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, kwargs["in_channels"], 9, 8)).astype(np.float32)
    grad = rng.standard_normal(cr.Conv2d(**kwargs).output_shape(x.shape)).astype(np.float32)
    results = []
    for limit in (fconv.KEEP_COLUMNS_BYTES, 0):
        monkeypatch.setattr(fconv, "KEEP_COLUMNS_BYTES", limit)
        layer = cr.Conv2d(**kwargs, rng=0)
        layer.forward(x)
        assert (layer._cache[2] is not None) == (limit > 0)       # kept only when allowed
        dx = layer.backward(grad, needs_input_grad=needs_input_grad)
        results.append((dx, layer.weight.grad, layer.bias.grad))
    (dx_kept, dw_kept, db_kept), (dx, dw, db) = results
    assert (dx_kept is None) == (dx is None) == (not needs_input_grad)
    if needs_input_grad:
        np.testing.assert_array_equal(dx_kept, dx)
    np.testing.assert_allclose(dw_kept, dw, rtol=1e-5, atol=1e-5 * np.abs(dw).max())
    np.testing.assert_allclose(db_kept, db, rtol=1e-5, atol=1e-5 * np.abs(db).max())
    assert np.any(dw != 0)


def test_columns_are_kept_only_when_small_and_used():
    """Kept: a small im2col layer in training. Not kept: in eval, above
    KEEP_COLUMNS_BYTES or the workspace limit, on the row-unfolding forward, and where
    backward takes dW from the columns of G (stride 1, one group, >= 16 channels)."""
    from chainrule.functional import conv as fconv

    def kept(layer, shape):
        layer.forward(np.zeros(shape, np.float32))
        return layer._cache is not None and layer._cache[2] is not None

    assert kept(cr.Conv2d(1, 6, 5, padding=2), (64, 1, 28, 28))            # LeNet: 5 MiB
    assert not kept(cr.Conv2d(1, 6, 5, padding=2).eval(), (64, 1, 28, 28))
    assert not kept(cr.Conv2d(3, 32, 3, padding=1), (128, 3, 32, 32))      # 14 MiB
    for limit in (1 << 20, 0):                                              # 0: none at all
        small_workspace = cr.Conv2d(1, 6, 5, padding=2)
        small_workspace.max_workspace_bytes = limit
        assert not kept(small_workspace, (64, 1, 28, 28))
    assert not kept(cr.Conv2d(32, 32, 3, padding=1), (2, 32, 32, 32))      # row unfolding
    assert not kept(cr.Conv2d(16, 8, 3, padding=1), (2, 16, 6, 6))         # flipped backward
    assert kept(cr.Conv2d(16, 8, 3, padding=1, stride=2), (2, 16, 6, 6))
    assert kept(cr.Conv2d(16, 8, 3, padding=1, groups=2), (2, 16, 6, 6))
    assert fconv.KEEP_COLUMNS_BYTES == 8 << 20


# ---------------------------------------------------------------- errors

def test_backward_needs_a_cached_forward():
    assert_backward_needs_a_cached_forward(cr.Conv2d(1, 1, 3, rng=0), np.zeros((1, 1, 4, 4)),
                                           wrong_shape=(1, 1, 3, 3))


@pytest.mark.parametrize("kwargs, match", [
    (dict(in_channels=3, out_channels=4, kernel_size=3, groups=2), "groups must divide"),
    (dict(in_channels=2, out_channels=2, kernel_size=3, stride=2, padding="same"), "stride 1"),
    (dict(in_channels=2, out_channels=2, kernel_size=3, padding="full"), "padding must be"),
    (dict(in_channels=2, out_channels=2, kernel_size=0), "kernel_size must be >= 1"),
], ids=["groups-not-dividing", "same-with-stride", "unknown-padding", "kernel-0"])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cr.Conv2d(**kwargs)


def test_input_errors_are_clear():
    layer = cr.Conv2d(2, 2, 5, rng=0)
    with pytest.raises(ValueError, match="input channels"):
        layer.forward(np.zeros((1, 3, 6, 6)))
    with pytest.raises(ValueError, match="larger than the padded input"):
        layer.forward(np.zeros((1, 2, 4, 6)))
    with pytest.raises(ValueError, match="4-D"):
        layer.forward(np.zeros((2, 6, 6)))
