"""Property-based fuzzing of ConvTranspose2d and Conv1d against torch.nn, in float64.

ConvTranspose2d's index arithmetic has the most corners of the convolutions: the
output size ``(H - 1)*stride - 2*padding + dilation*(k - 1) + output_padding + 1``,
paddings that crop almost the whole output, output rows that no kernel reaches (stride
above the dilated kernel, or ``output_padding`` past the reach), and ``output_padding``
of at least the stride, which torch allows below the dilation. Hypothesis draws
every legal combination of stride, padding, output_padding, dilation, groups, kernel
and input size; each example checks the forward output, the input gradient and every
parameter gradient against PyTorch at a relative error of 1e-9, the weight and bias
gradients of ``backward(needs_input_grad=False)``, and (on small examples) the
plain-loop reference of ``tests/reference.py``. One kind of example has 16 output
channels per group at stride 1, where the forward runs as the flipped-kernel
convolution of ``functional.conv.conv2d_input_gradient``.

Conv1d, Conv2d's kernels on a (N, C, 1, L) view, is checked the same way, cheaply,
unbatched (C, L) inputs included.

Each property runs as a quick test (25 examples) and as a ``fuzz`` twin (thousands,
``pytest -m fuzz``); see ``conftest.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import settings
from hypothesis import strategies as st

import chainrule as cr
from tests import reference as ref
from tests.helpers import assert_torch_parity, rel_error

torch = pytest.importorskip("torch")

# torch's note that 'same' with an even kernel pads a copy of the input: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

QUICK = settings.get_profile("chainrule-quick")
FUZZ = settings.get_profile("chainrule-fuzz")

seeds = st.integers(0, 2**32 - 1)

# The plain-loop reference runs when the loop has at most this many iterations.
MAX_REFERENCE_PRODUCTS = 20_000


def _randomize_torch_parameters(module, rng: np.random.Generator) -> None:
    """Draw torch's parameters from our Generator, so an example is reproduced by its seed."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape))))


def _check_against_torch(ours_cls, torch_cls, kwargs: dict, shape: tuple, rng):
    """Our layer and torch's built from ``kwargs`` with torch's parameters drawn from
    ``rng``: output shape, forward, input gradient and parameter gradients at 1e-9 in
    float64. Returns our layer, the input and the output shape."""
    theirs = torch_cls(**kwargs, dtype=torch.float64)
    _randomize_torch_parameters(theirs, rng)
    ours = ours_cls(**kwargs, dtype=np.float64)
    x = rng.standard_normal(shape)
    expected_shape = tuple(theirs(torch.from_numpy(x)).shape)
    assert ours.output_shape(shape) == expected_shape
    assert_torch_parity(ours, theirs, x, dtype=np.float64, seed=int(rng.integers(2**31)))
    return ours, x, expected_shape


def _channels(draw, wide_ok: bool) -> tuple[int, int, int, str]:
    kinds = ["plain", "grouped", "depthwise"] + (["wide"] if wide_ok else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "plain":
        groups, c_in, c_out = 1, draw(st.integers(1, 3)), draw(st.integers(1, 3))
    elif kind == "grouped":
        groups = draw(st.integers(2, 3))
        c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    elif kind == "depthwise":
        c_in = draw(st.integers(1, 3))
        groups, c_out = c_in, c_in * draw(st.integers(1, 2))
    else:                        # 16 output channels per group
        groups = draw(st.integers(1, 2))
        c_in, c_out = groups, 16 * groups
    event(f"channels: {kind}")
    return c_in, c_out, groups, kind


# ---------------------------------------------------------------------------- ConvTranspose2d
@st.composite
def conv_transpose_cases(draw):
    c_in, c_out, groups, kind = _channels(draw, wide_ok=True)
    kernel, stride, padding, output_padding, dilation, size = [], [], [], [], [], []
    for _ in range(2):
        k, d = draw(st.integers(1, 4)), draw(st.integers(1, 3))
        s = 1 if kind == "wide" else draw(st.integers(1, 3))
        op = draw(st.integers(0, max(s, d) - 1))        # torch: below the stride or dilation
        h = draw(st.integers(1, 5))
        full = (h - 1) * s + d * (k - 1) + op           # H_out + 2*padding - 1
        p = draw(st.integers(0, min(3, full // 2)))     # leaves at least one output row
        if op >= s:
            event("output_padding >= stride")
        if full - 2 * p == 0:
            event("1-pixel output dimension")
        if s > d * (k - 1) + 1:
            event("stride past the kernel: unreached output rows")
        for values, v in zip((kernel, stride, padding, output_padding, dilation, size),
                             (k, s, p, op, d, h)):
            values.append(v)
    n = draw(st.integers(1, 3))
    kwargs = dict(in_channels=c_in, out_channels=c_out, kernel_size=tuple(kernel),
                  stride=tuple(stride), padding=tuple(padding),
                  output_padding=tuple(output_padding), groups=groups,
                  bias=draw(st.booleans()), dilation=tuple(dilation))
    return kwargs, (n, c_in, *size), draw(seeds)


def check_conv_transpose2d(case) -> None:
    kwargs, shape, seed = case
    rng = np.random.default_rng(seed)
    ours, x, expected_shape = _check_against_torch(cr.ConvTranspose2d, torch.nn.ConvTranspose2d,
                                                   kwargs, shape, rng)
    grad = rng.standard_normal(expected_shape)
    ours.zero_grad()
    ours.forward(x)
    dx = ours.backward(grad)
    full = {name: p.grad.copy() for name, p in ours.named_parameters()}
    ours.zero_grad()
    ours.forward(x)
    assert ours.backward(grad, needs_input_grad=False) is None
    for name, p in ours.named_parameters():
        assert rel_error(p.grad, full[name]) <= 1e-13, f"{kwargs}: {name} without dx"

    out_per_group = kwargs["out_channels"] // kwargs["groups"]
    products = x.size * out_per_group * int(np.prod(kwargs["kernel_size"]))
    if products <= MAX_REFERENCE_PRODUCTS:
        opts = dict(stride=kwargs["stride"], padding=kwargs["padding"],
                    dilation=kwargs["dilation"], groups=kwargs["groups"])
        bias = None if ours.bias is None else ours.bias.data
        y_ref = ref.conv_transpose2d(x, ours.weight.data, bias,
                                     output_padding=kwargs["output_padding"], **opts)
        assert rel_error(ours.forward(x), y_ref) <= 1e-12, f"{kwargs}: forward vs reference"
        dx_ref, dw_ref, _ = ref.conv_transpose2d_backward(x, ours.weight.data, grad, **opts)
        assert rel_error(dx, dx_ref) <= 1e-12, f"{kwargs}: dx vs reference"
        assert rel_error(full["weight"], dw_ref) <= 1e-12, f"{kwargs}: dW vs reference"


@QUICK
@given(conv_transpose_cases())
def test_conv_transpose2d_matches_torch(case):
    check_conv_transpose2d(case)


@pytest.mark.fuzz
@FUZZ
@given(conv_transpose_cases())
def test_conv_transpose2d_matches_torch_fuzz(case):
    check_conv_transpose2d(case)


# ---------------------------------------------------------------------------- Conv1d
@st.composite
def conv1d_cases(draw):
    c_in, c_out, groups, _ = _channels(draw, wide_ok=False)
    k, d = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    padding_kind = draw(st.sampled_from(["int", "valid", "same"]))
    stride = 1 if padding_kind == "same" else draw(st.integers(1, 3))
    if padding_kind == "int":
        padding = draw(st.integers(0, 3))
        total = 2 * padding
    else:
        padding = padding_kind
        total = d * (k - 1) if padding_kind == "same" else 0
    event(f"conv1d padding: {padding_kind}")
    length = max(1, d * (k - 1) + 1 - total) + draw(st.integers(0, 6))
    batch = draw(st.one_of(st.none(), st.integers(1, 3)))          # None: unbatched (C, L)
    if batch is None:
        event("unbatched (C, L)")
    shape = (c_in, length) if batch is None else (batch, c_in, length)
    kwargs = dict(in_channels=c_in, out_channels=c_out, kernel_size=k, stride=stride,
                  padding=padding, dilation=d, groups=groups, bias=draw(st.booleans()))
    return kwargs, shape, draw(seeds)


def check_conv1d(case) -> None:
    kwargs, shape, seed = case
    _check_against_torch(cr.Conv1d, torch.nn.Conv1d, kwargs, shape, np.random.default_rng(seed))


@QUICK
@given(conv1d_cases())
def test_conv1d_matches_torch(case):
    check_conv1d(case)


@pytest.mark.fuzz
@FUZZ
@given(conv1d_cases())
def test_conv1d_matches_torch_fuzz(case):
    check_conv1d(case)
