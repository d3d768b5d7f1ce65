"""Conv1d: finite differences, parity with torch.nn.Conv1d and the plain-loop reference
over a grid of kernels, strides, paddings ('same', 'valid'), dilations and groups;
unbatched (C, L) input; initialization, dtype, padding_mode and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import chainrule as cr
from tests import reference as ref
from tests.helpers import assert_gradcheck, assert_torch_parity, rel_error
from tests.layers.conv_cases import (assert_backward_needs_a_cached_forward,
                                     assert_unbatched_matches_a_batch_of_one, make_input)

torch = pytest.importorskip("torch")

# torch's note that 'same' with an even kernel pads a copy of the input: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

# id -> (Conv1d keyword arguments, input shape (N, C_in, L)).
CASES = {
    "k1": (dict(in_channels=2, out_channels=3, kernel_size=1), (2, 2, 5)),
    "k3": (dict(in_channels=2, out_channels=3, kernel_size=3), (2, 2, 7)),
    "k5-p2": (dict(in_channels=1, out_channels=2, kernel_size=5, padding=2), (2, 1, 6)),
    "k3-s2-remainder": (dict(in_channels=2, out_channels=2, kernel_size=3, stride=2), (2, 2, 8)),
    "k2-s3-p1-remainder": (dict(in_channels=2, out_channels=3, kernel_size=2, stride=3, padding=1),
                           (1, 2, 9)),
    "same-k3": (dict(in_channels=2, out_channels=3, kernel_size=3, padding="same"), (2, 2, 6)),
    "same-k4-even-d2": (dict(in_channels=2, out_channels=2, kernel_size=4, padding="same",
                             dilation=2), (1, 2, 9)),
    "valid-k3": (dict(in_channels=2, out_channels=2, kernel_size=3, padding="valid"), (2, 2, 6)),
    "k3-d2-p1": (dict(in_channels=2, out_channels=2, kernel_size=3, dilation=2, padding=1),
                 (2, 2, 7)),
    "k3-s2-p2-d3": (dict(in_channels=2, out_channels=2, kernel_size=3, stride=2, padding=2,
                         dilation=3), (1, 2, 9)),
    "groups2": (dict(in_channels=4, out_channels=6, kernel_size=3, groups=2), (2, 4, 6)),
    "depthwise": (dict(in_channels=3, out_channels=3, kernel_size=3, padding=1, groups=3),
                  (2, 3, 5)),
    "depthwise-multiplier2-nobias": (dict(in_channels=3, out_channels=6, kernel_size=2, groups=3,
                                          bias=False), (1, 3, 5)),
    "batch1": (dict(in_channels=3, out_channels=2, kernel_size=3), (1, 3, 4)),
    "nobias": (dict(in_channels=2, out_channels=3, kernel_size=2, bias=False), (2, 2, 5)),
    "kernel-equals-input": (dict(in_channels=2, out_channels=3, kernel_size=5), (2, 2, 5)),
    "length1-k3-p1": (dict(in_channels=2, out_channels=2, kernel_size=3, padding=1), (2, 2, 1)),
    "tuple-arguments": (dict(in_channels=2, out_channels=2, kernel_size=(3,), stride=(2,),
                             padding=(1,), dilation=(1,)), (2, 2, 6)),
    "everything": (dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=2,
                        dilation=2, groups=2, bias=False), (2, 4, 9)),
    # 16 input channels, stride 1, one group: backward takes both gradients from the
    # columns of the padded upstream gradient (functional.conv._backward_flipped)
    "flipped-backward": (dict(in_channels=16, out_channels=2, kernel_size=3, padding=1), (1, 16, 4)),
}
PARAMS = [pytest.param(kwargs, shape, id=name) for name, (kwargs, shape) in CASES.items()]

# Forward by row unfolding (many input channels, few outputs, a long input): parity and
# reference only (its gradcheck would take thousands of forward passes).
ROWS_CASE = (dict(in_channels=64, out_channels=4, kernel_size=3, padding=1), (1, 64, 24))
ALL_PARAMS = PARAMS + [pytest.param(*ROWS_CASE, id="rows-unfolding-forward")]


def single(value) -> int:
    return value if isinstance(value, int) else value[0]


def make(kwargs, dtype=np.float64, seed: int = 0) -> cr.Conv1d:
    return cr.Conv1d(**kwargs, dtype=dtype, rng=seed)


def most_terms(kwargs, shape) -> int:
    """The most terms any sum adds: an output C_in/G * k, an input gradient C_out/G * k,
    the weight and bias gradients N * L_out."""
    layer = make(kwargs)
    k, groups = layer.kernel_size[0], layer.groups
    n, _, length = layer.output_shape(shape)
    return max(layer.in_channels // groups * k, layer.out_channels // groups * k, n * length)


@pytest.mark.parametrize("kwargs, shape", PARAMS)
def test_gradcheck(kwargs, shape):
    assert_gradcheck(make(kwargs), make_input(shape), 1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("kwargs, shape", ALL_PARAMS)
def test_torch_parity(kwargs, shape, dtype):
    torch.manual_seed(0)
    assert_torch_parity(make(kwargs), torch.nn.Conv1d(**kwargs), make_input(shape), dtype=dtype,
                        terms=most_terms(kwargs, shape))


@pytest.mark.parametrize("kwargs, shape", ALL_PARAMS)
def test_forward_matches_loop_reference(kwargs, shape):
    """The reference Conv2d on the (N, C, 1, L) view with a (C_out, C_in/G, 1, k) kernel."""
    layer = make(kwargs)
    x = make_input(shape)
    padding = kwargs.get("padding", 0)
    if padding == "same":
        total = single(kwargs.get("dilation", 1)) * (single(kwargs["kernel_size"]) - 1)
        left, right = total // 2, total - total // 2
    else:
        left = right = 0 if padding == "valid" else single(padding)
    bias = None if layer.bias is None else layer.bias.data
    expected = ref.conv2d(x[:, :, None, :], layer.weight.data[:, :, None, :], bias,
                          (1, single(kwargs.get("stride", 1))), (0, 0, left, right),
                          (1, single(kwargs.get("dilation", 1))), kwargs.get("groups", 1))[:, :, 0]
    out = layer.forward(x)
    assert out.shape == expected.shape == layer.output_shape(shape)
    assert rel_error(out, expected) <= 1e-12
    if padding == "same":
        assert out.shape[2] == shape[2]


# ---------------------------------------------------------------- unbatched input

@pytest.mark.parametrize("kwargs", [
    dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1),
    dict(in_channels=4, out_channels=4, kernel_size=4, padding="same", groups=2),
], ids=["s2-p1", "same-groups2"])
def test_unbatched_input_matches_a_batch_of_one_and_torch(kwargs):
    layer = make(kwargs)
    x = make_input((kwargs["in_channels"], 7))
    assert_unbatched_matches_a_batch_of_one(layer, x)
    torch.manual_seed(0)
    assert_torch_parity(make(kwargs), torch.nn.Conv1d(**kwargs), x)


# ---------------------------------------------------------------- options

@pytest.mark.parametrize("kwargs", [
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, dilation=2, groups=2),
    dict(in_channels=16, out_channels=4, kernel_size=3, padding=1),
], ids=["k3-p1", "s2-d2-groups2", "flipped-backward"])
def test_skipping_the_input_gradient_keeps_the_parameter_gradients(kwargs):
    layer = make(kwargs)
    x = make_input((3, kwargs["in_channels"], 9))
    grad = make_input(layer.output_shape(x.shape), seed=2)
    layer.forward(x)
    assert layer.backward(grad) is not None
    expected = {name: p.grad.copy() for name, p in layer.named_parameters()}
    layer.zero_grad()
    layer.forward(x)
    assert layer.backward(grad, needs_input_grad=False) is None
    for name, p in layer.named_parameters():
        assert rel_error(p.grad, expected[name]) <= 1e-13, name


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=4, out_channels=6, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, dilation=2, groups=2,
         bias=False),
], ids=["plain", "everything"])
def test_repr_and_state_dict_match_torch(kwargs):
    ours, theirs = cr.Conv1d(**kwargs, rng=0), torch.nn.Conv1d(**kwargs)
    assert repr(ours) == repr(theirs)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert ours.kernel_size == theirs.kernel_size and ours.stride == theirs.stride


@pytest.mark.parametrize("groups", [1, 4], ids=["dense", "groups4"])
def test_init_is_uniform_within_one_over_sqrt_fan_in(groups):
    layer = cr.Conv1d(8, 64, 3, groups=groups, rng=0)
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(
        torch.nn.Conv1d(8, 64, 3, groups=groups).weight)
    assert fan_in == 8 // groups * 3
    bound = 1 / math.sqrt(fan_in)
    w = layer.weight.data.ravel().astype(np.float64)
    assert np.all(np.abs(w) <= bound) and np.all(np.abs(layer.bias.data) <= bound)
    assert abs(w.std() / (bound / math.sqrt(3)) - 1) < 0.1
    assert w.max() > 0.9 * bound and w.min() < -0.9 * bound


def test_float32_by_default_and_to_float64_casts():
    layer = cr.Conv1d(2, 3, 3, rng=0)
    assert layer.weight.dtype == np.float32 and layer.weight.shape == (3, 2, 3)
    x = make_input((1, 2, 6))
    assert layer.forward(x).dtype == np.float32
    y = layer.to(np.float64).forward(x)
    assert y.dtype == np.float64
    assert layer.backward(np.ones_like(y)).dtype == np.float64


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(in_channels=3, out_channels=4, kernel_size=3, groups=2), ValueError, "groups must divide"),
    (dict(in_channels=4, out_channels=3, kernel_size=3, groups=2), ValueError, "groups must divide"),
    (dict(in_channels=2, out_channels=2, kernel_size=3, stride=2, padding="same"), ValueError,
     "stride 1"),
    (dict(in_channels=2, out_channels=2, kernel_size=3, padding="full"), ValueError,
     "padding must be"),
    (dict(in_channels=2, out_channels=2, kernel_size=0), ValueError, "kernel_size must be >= 1"),
    (dict(in_channels=2, out_channels=2, kernel_size=(3, 3)), TypeError,
     "kernel_size must be an int or a 1-tuple"),
    (dict(in_channels=2, out_channels=2, kernel_size=3, padding=-1), ValueError,
     "padding must be >= 0"),
    (dict(in_channels=2, out_channels=2, kernel_size=3, padding_mode="reflect"), ValueError,
     "padding_mode must be 'zeros'.*got 'reflect'"),
    (dict(in_channels=2, out_channels=2, kernel_size=3, padding_mode="circular"), ValueError,
     "padding_mode must be 'zeros'"),
], ids=["in-not-divisible", "out-not-divisible", "same-with-stride", "unknown-padding",
        "kernel-0", "kernel-pair", "negative-padding", "reflect", "circular"])
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        cr.Conv1d(**kwargs)
    assert "Conv1d(" in str(info.value)


def test_from_torch_refuses_other_padding_modes():
    from chainrule.interop import UnsupportedModuleError, from_torch

    module = torch.nn.Sequential(torch.nn.Conv1d(2, 2, 3, padding=1, padding_mode="replicate"))
    with pytest.raises(UnsupportedModuleError, match=r"^0: torch.nn.Conv1d\(padding_mode="
                                                     r"'replicate'\) is not supported"):
        from_torch(module)


def test_input_errors_are_clear():
    layer = cr.Conv1d(2, 2, 5, rng=0)
    with pytest.raises(ValueError, match="input channels"):
        layer.forward(np.zeros((1, 3, 6)))
    with pytest.raises(ValueError, match=r"longer than the padded input \(4\)"):
        layer.forward(np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match=r"3-D or 2-D\), got shape \(1, 2, 6, 6\)"):
        layer.forward(np.zeros((1, 2, 6, 6)))
    with pytest.raises(ValueError, match="3-D or 2-D"):
        layer.forward(np.zeros(6))


def test_backward_needs_a_cached_forward():
    assert_backward_needs_a_cached_forward(cr.Conv1d(1, 1, 3, rng=0), np.zeros((1, 1, 4)),
                                           wrong_shape=(1, 2))
