"""Property-based fuzzing of the padding layers against torch.nn, in float64.

Hypothesis draws one of ZeroPad2d, ConstantPad2d, ReflectionPad2d, ReplicationPad2d, an
input shape ((N, C, H, W) or unbatched (C, H, W), spatial sizes from 1) and a 4-tuple of
paddings from a range around the legal one: negative amounts that crop, crops that cut
into the padded border, reflections of exactly size - 1, and (less often) paddings torch
refuses. Each example checks that chainrule refuses exactly the configurations torch
refuses (a ValueError where torch raises), and otherwise the forward output and the
input gradient for a random upstream gradient at a relative error of 1e-9.

Each property runs as a quick test (25 examples) and as a ``fuzz`` twin (thousands,
``pytest -m fuzz``); see ``conftest.py``.
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

TOL = 1e-9

KINDS = {
    "zero": (cr.ZeroPad2d, torch.nn.ZeroPad2d),
    "constant": (lambda p: cr.ConstantPad2d(p, 0.75), lambda p: torch.nn.ConstantPad2d(p, 0.75)),
    "reflection": (cr.ReflectionPad2d, torch.nn.ReflectionPad2d),
    "replication": (cr.ReplicationPad2d, torch.nn.ReplicationPad2d),
}


def _side(draw, size: int, kind: str) -> int:
    """One side's padding: mostly legal (reflection below the size, crops at most the
    size), sometimes just past the limit so the refusals are checked too."""
    top = size - 1 if kind == "reflection" else size + 2
    if draw(st.integers(0, 9)) == 0:
        return draw(st.integers(-size - 2, size + 2))        # anything near the limits
    return draw(st.integers(-size, top))


@st.composite
def pad_cases(draw):
    kind = draw(st.sampled_from(sorted(KINDS)))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    c = draw(st.integers(1, 3))
    shape = (c, h, w) if draw(st.booleans()) else (draw(st.integers(1, 3)), c, h, w)
    padding = (_side(draw, w, kind), _side(draw, w, kind), _side(draw, h, kind),
               _side(draw, h, kind))
    if draw(st.integers(0, 4)) == 0:
        padding = padding[0]                                  # an int: the same on all sides
    event(f"kind: {kind}")
    event("unbatched (C, H, W)" if len(shape) == 3 else "batched (N, C, H, W)")
    return kind, padding, shape, draw(st.integers(0, 2**32 - 1))


def check_padding(case) -> None:
    kind, padding, shape, seed = case
    make_ours, make_theirs = KINDS[kind]
    x = np.random.default_rng(seed).standard_normal(shape)
    pads = (padding,) * 4 if isinstance(padding, int) else padding
    if any(v < 0 for v in pads):
        event("a negative (cropping) side")
    if kind == "reflection" and (pads[0] == shape[-1] - 1 or pads[2] == shape[-2] - 1):
        event("reflection of size - 1")
    try:
        torch_module = make_theirs(padding)
        torch_module(torch.tensor(x))
    except (RuntimeError, NotImplementedError, IndexError):
        event("refused by torch")
        with pytest.raises(ValueError):
            make_ours(padding).forward(x)
        return
    ours = make_ours(padding)
    errors = assert_torch_parity(ours, torch_module, x, dtype=np.float64, seed=seed % 1000)
    assert max(errors.values()) <= TOL, errors


@quick_and_fuzz(pad_cases())
def test_padding_matches_torch(case):
    check_padding(case)
