"""Property-based fuzzing of the resampling layers against torch.nn, in float64.

Upsample: hypothesis draws a mode, a 3-D or 4-D input of small odd or even sizes, and
either an output size or a scale factor (drawn floats as well as round ones, up and
down, recomputed or not), with align_corners for the linear modes. The forward must
equal torch's within 1e-9 (nearest modes: exactly), and the backward must be the
forward's adjoint. It must also equal torch's backward, except where torch's own nearest
backward is not its forward's derivative: torch's 1-D nearest forward and its backward
use different index computations (see ``chainrule.functional.resample``), and where those
pick different pixels the case is only checked against the adjoint (and counted as an
event). The 2-D outputs drawn here stay small, where torch's two agree.

PixelShuffle, PixelUnshuffle, ChannelShuffle: random factors, channel counts and shapes
(batched and unbatched, 3-D to 5-D for ChannelShuffle); a permutation must match torch
exactly, forward and backward.

Each property runs as a quick test (25 examples) and as a ``fuzz`` twin (thousands,
``pytest -m fuzz``); see ``conftest.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, event
from hypothesis import strategies as st

import chainrule as cr
from chainrule.functional import resample as R
from tests.fuzz.twins import quick_and_fuzz
from tests.helpers import assert_torch_parity, rel_error

torch = pytest.importorskip("torch")

TOL = 1e-9

seeds = st.integers(0, 2**32 - 1)
round_scales = st.sampled_from([0.5, 1 / 3, 0.7, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0])
scales = st.one_of(round_scales, st.floats(0.2, 4.0, allow_nan=False, allow_infinity=False))


# ---------------------------------------------------------------------------- Upsample
@st.composite
def upsample_cases(draw):
    mode = draw(st.sampled_from(["nearest", "nearest-exact", "bilinear", "linear"]))
    axes = {"linear": 1, "bilinear": 2}.get(mode) or draw(st.sampled_from([1, 2]))
    spatial = tuple(draw(st.integers(1, 9)) for _ in range(axes))
    kwargs: dict = {"mode": mode}
    if mode in ("linear", "bilinear"):
        kwargs["align_corners"] = draw(st.sampled_from([None, False, True]))
    if draw(st.booleans()):
        sizes = tuple(draw(st.integers(1, 20)) for _ in range(axes))
        kwargs["size"] = sizes[0] if axes == 1 or draw(st.booleans()) else sizes
        event("size given")
    else:
        factors = tuple(draw(scales) for _ in range(axes))
        assume(all(math.floor(n * f) >= 1 for n, f in zip(spatial, factors)))
        single = draw(st.booleans())
        if single:
            assume(all(math.floor(n * factors[0]) >= 1 for n in spatial))
        kwargs["scale_factor"] = factors[0] if single else factors
        kwargs["recompute_scale_factor"] = draw(st.sampled_from([None, False, True]))
        event("scale factor given")
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), *spatial)
    event(f"mode {mode}, {axes}-D")
    return kwargs, shape, draw(seeds)


def _torch_backward_is_ours(layer: cr.Upsample, shape: tuple[int, ...]) -> bool:
    """Whether torch's nearest backward (always its "indexed" index computation) reads the
    pixels our forward (torch's forward) read; the linear modes have one rule."""
    if layer.mode not in ("nearest", "nearest-exact"):
        return True
    plan = R.nearest_plan if layer.mode == "nearest" else R.nearest_exact_plan
    for axis, ours in enumerate(layer.plans(shape, np.float64)):
        factor = None
        if layer.scale_factor is not None and not layer.recompute_scale_factor:
            f = layer.scale_factor
            factor = f[axis] if isinstance(f, tuple) else f
        torch_backward = plan(ours.size, ours.out_size, factor, np.float64, "indexed")
        if not np.array_equal(ours.index0, torch_backward.index0):
            return False
    return True


def _check_upsample(case) -> None:
    kwargs, shape, seed = case
    layer = cr.Upsample(**kwargs)
    module = torch.nn.Upsample(**kwargs)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    y = layer.forward(x)
    expected = module(torch.tensor(x)).numpy()
    if layer.mode in ("nearest", "nearest-exact"):
        np.testing.assert_array_equal(y, expected, err_msg=repr(layer))
    else:
        assert rel_error(y, expected) <= TOL, repr(layer)
    g = rng.standard_normal(y.shape)
    dx = layer.backward(g)
    # The adjoint: <A x, g> == <x, A^T g>, for the backward of this very forward.
    assert abs(np.sum(y * g) - np.sum(x * dx)) <= 1e-12 * max(np.sum(np.abs(y * g)), 1e-300)
    if _torch_backward_is_ours(layer, shape):
        assert_torch_parity(cr.Upsample(**kwargs), module, x, seed=seed)
    else:
        event("torch's nearest backward reads other pixels than its forward")


@quick_and_fuzz(upsample_cases())
def test_upsample_matches_torch(case):
    _check_upsample(case)


# ---------------------------------------------------------------------------- shuffles
@st.composite
def pixel_shuffle_cases(draw):
    r = draw(st.integers(1, 3))
    lead = (draw(st.integers(1, 3)),) if draw(st.booleans()) else ()
    if not lead:
        event("unbatched (C, H, W)")
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    return r, (*lead, c, h, w), draw(seeds)


def _check_pixel_shuffle(case) -> None:
    r, (*lead, c, h, w), seed = case
    x = np.random.default_rng(seed).standard_normal((*lead, c * r * r, h, w))
    errors = assert_torch_parity(cr.PixelShuffle(r), torch.nn.PixelShuffle(r), x, seed=seed)
    assert max(errors.values()) == 0.0
    x = np.random.default_rng(seed).standard_normal((*lead, c, h * r, w * r))
    errors = assert_torch_parity(cr.PixelUnshuffle(r), torch.nn.PixelUnshuffle(r), x, seed=seed)
    assert max(errors.values()) == 0.0


@quick_and_fuzz(pixel_shuffle_cases())
def test_pixel_shuffle_and_unshuffle_match_torch(case):
    _check_pixel_shuffle(case)


@st.composite
def channel_shuffle_cases(draw):
    groups = draw(st.integers(1, 4))
    channels = groups * draw(st.integers(1, 3))
    rest = tuple(draw(st.integers(1, 4)) for _ in range(draw(st.integers(1, 3))))
    event(f"{2 + len(rest)}-D input")
    return groups, (draw(st.integers(1, 3)), channels, *rest), draw(seeds)


def _check_channel_shuffle(case) -> None:
    groups, shape, seed = case
    x = np.random.default_rng(seed).standard_normal(shape)
    errors = assert_torch_parity(cr.ChannelShuffle(groups), torch.nn.ChannelShuffle(groups), x,
                                 seed=seed)
    assert max(errors.values()) == 0.0


@quick_and_fuzz(channel_shuffle_cases())
def test_channel_shuffle_matches_torch(case):
    _check_channel_shuffle(case)
