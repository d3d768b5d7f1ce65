"""Property-based check of the activation catalog against torch.nn, in float64.

Hypothesis draws an activation with its options (PReLU with one slope or one per
channel, Softmax/LogSoftmax with a dim that fits), an input shape of 1 to 4 axes and a
scale; the input mixes random values with the activation's kinks (0, +-1, +-3, 6, the
Softplus threshold, ...) so the derivatives there, which follow torch's choices, come up
often. Forward output, input gradient and slope gradient must match torch at 1e-9
(GELU: torch's own accurate formulation, see ``_AccurateGELU``).

Quick test (25 examples) and ``fuzz`` twin (``pytest -m fuzz``); see ``conftest.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event
from hypothesis import strategies as st

import chainrule as cr
from tests.fuzz.twins import quick_and_fuzz
from tests.helpers import assert_torch_parity

torch = pytest.importorskip("torch")
nn = torch.nn


# Values at which some activation of the catalog has a kink.
KINKS = np.array([0.0, -0.0, 1.0, -1.0, 3.0, -3.0, 6.0, 2.5, -2.0, 20.0])


@st.composite
def activation_cases(draw):
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    kind = draw(st.sampled_from([
        "ReLU6", "Hardtanh", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Hardswish",
        "Hardsigmoid", "Softplus", "PReLU", "Softmax", "LogSoftmax", "Identity"]))
    event(kind)
    real = st.floats(-3.0, 3.0, allow_nan=False).map(lambda v: round(v, 2))
    if kind == "Hardtanh":
        low = draw(real)
        high = low + draw(st.floats(0.1, 4.0).map(lambda v: round(v, 2)))
        args = (low, high)
    elif kind in ("ELU", "CELU"):
        args = (draw(st.sampled_from([1.0, 0.5, 2.5, 0.1])),)
    elif kind == "GELU":
        args = (draw(st.sampled_from(["none", "tanh"])),)
    elif kind == "Softplus":
        args = (draw(st.sampled_from([1.0, 2.0, 0.5])), draw(st.sampled_from([20.0, 5.0, 1.0])))
    elif kind == "PReLU":
        per_channel = len(shape) >= 2 and draw(st.booleans())
        args = (shape[1] if per_channel else 1, draw(real))
        event("PReLU per channel" if per_channel else "PReLU one slope")
    elif kind in ("Softmax", "LogSoftmax"):
        args = (draw(st.integers(-len(shape), len(shape) - 1)),)
    else:
        args = ()
    # Softmax saturated to one-hot (logits 30 apart) has an input gradient of 1e-13 that
    # y * (g - sum(g * y)) computes by cancellation, in torch as here: the last-bit
    # differences of y then show at 1e-7. Its inputs stay below that scale.
    scales = [1.0, 4.0] if kind == "Softmax" else [1.0, 4.0, 30.0]
    return kind, args, shape, draw(st.sampled_from(scales)), draw(st.integers(0, 2**32 - 1))


def check_activation(case) -> None:
    kind, args, shape, scale, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * scale
    at_kinks = rng.random(shape) < 0.3
    x[at_kinks] = rng.choice(KINKS, size=int(at_kinks.sum()))
    module = _AccurateGELU(*args) if kind == "GELU" else getattr(nn, kind)(*args)
    if kind == "PReLU":  # slopes of both signs, drawn from the example's seed
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(rng.uniform(-1, 1, args[0])))
    assert_torch_parity(getattr(cr, kind)(*args), module, x, dtype=np.float64)


class _AccurateGELU(nn.Module):
    """GELU from torch operations without cancellation, ``x/2 * erfc(-x / sqrt 2)`` and
    ``x * sigmoid(2u)`` for the tanh form, differentiated by torch's autograd (torch's
    erfc is accurate in the tail; its ``special.ndtr`` is not). nn.GELU computes ``1 + erf`` and ``1 + tanh``, which cancel for
    x << 0: an input whose every element is below -7 gets outputs with no correct digit
    even in float64 (tests/layers/test_activation_catalog.py compares with nn.GELU on
    moderate inputs)."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        if self.approximate == "tanh":
            u = (2.0 / np.pi) ** 0.5 * (x + 0.044715 * x ** 3)
            return x * torch.sigmoid(2 * u)
        return x * 0.5 * torch.erfc(-x * 0.5 ** 0.5)


@quick_and_fuzz(activation_cases())
def test_activations_match_torch(case):
    check_activation(case)
