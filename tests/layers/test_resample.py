"""Upsample (UpsamplingNearest2d, UpsamplingBilinear2d), PixelShuffle, PixelUnshuffle,
ChannelShuffle: finite differences in float64, parity with torch.nn over grids of modes,
sizes and scale factors, torch's interpolation matrices reproduced bit for bit, the two
index kernels of torch's nearest modes, the adjoint property of every backward, errors,
and the ONNX export's choice between Resize's sizes and scales."""

from __future__ import annotations

import math

import numpy as np
import pytest

import chainrule as cr
from chainrule.functional import resample as R
from chainrule.interop import UnsupportedModuleError
from tests.helpers import FLOAT32_UNIT_ROUNDOFF as U
from tests.helpers import (assert_gradcheck, assert_torch_parity, each_dtype, float32_tolerance, params,
                           rel_error)

torch = pytest.importorskip("torch")
F = torch.nn.functional


def upsample_terms(layer: cr.Upsample, shape: tuple[int, ...]) -> int:
    """The most terms any sum of the layer adds: 2 per linear axis in the forward (a
    nearest copy adds none); in the backward, per axis, the outputs that read one input."""
    plans = layer.plans(shape, np.float32)
    forward = math.prod(1 if p.index1 is None else 2 for p in plans)
    backward = math.prod(p.max_taps_per_source() for p in plans)
    return max(forward, backward)


# ---------------------------------------------------------------- Upsample grid

# id -> (Upsample keyword arguments, input shape). Every 2-D case has H_out + W_out <= 128
# and every 1-D nearest case agrees in both of torch's index kernels, so torch's own
# backward is the derivative of its forward (see the kernel tests further down).
UPSAMPLE_CASES = {
    "nearest-x2": (dict(scale_factor=2), (2, 3, 4, 5)),
    "nearest-x3-odd": (dict(scale_factor=3), (1, 2, 3, 5)),
    "nearest-x1.5": (dict(scale_factor=1.5), (2, 2, 5, 7)),
    "nearest-x0.5-down": (dict(scale_factor=0.5), (2, 2, 7, 6)),
    "nearest-scales-2x0.7": (dict(scale_factor=(2, 0.7)), (1, 3, 5, 9)),
    "nearest-size-bigger-odd": (dict(size=(7, 11)), (2, 2, 3, 4)),
    "nearest-size-smaller": (dict(size=(3, 2)), (2, 2, 7, 5)),
    "nearest-size-mixed": (dict(size=(9, 4)), (1, 2, 5, 7)),
    "nearest-size-int": (dict(size=6), (2, 1, 4, 3)),
    "nearest-recompute-1.7": (dict(scale_factor=1.7, recompute_scale_factor=True), (2, 2, 5, 6)),
    "nearest-to-1x1": (dict(size=1), (2, 3, 4, 5)),
    "nearest-1d-x2.5": (dict(scale_factor=2.5), (2, 3, 6)),
    "nearest-1d-size": (dict(size=4), (1, 2, 9)),
    "nearest-exact-x1.5": (dict(scale_factor=1.5, mode="nearest-exact"), (2, 2, 5, 4)),
    "nearest-exact-size": (dict(size=(7, 3), mode="nearest-exact"), (1, 2, 4, 5)),
    "nearest-exact-1d-down": (dict(scale_factor=0.6, mode="nearest-exact"), (2, 2, 9)),
    "bilinear-x2": (dict(scale_factor=2, mode="bilinear"), (2, 3, 4, 5)),
    "bilinear-x3-odd": (dict(scale_factor=3, mode="bilinear"), (1, 2, 3, 5)),
    "bilinear-x1.5": (dict(scale_factor=1.5, mode="bilinear"), (2, 2, 5, 7)),
    "bilinear-x0.5-down": (dict(scale_factor=0.5, mode="bilinear"), (2, 2, 7, 6)),
    "bilinear-scales-2.5x0.4": (dict(scale_factor=(2.5, 0.4), mode="bilinear"), (1, 2, 3, 11)),
    "bilinear-size-bigger": (dict(size=(7, 11), mode="bilinear"), (2, 2, 3, 4)),
    "bilinear-size-smaller": (dict(size=(3, 2), mode="bilinear"), (2, 2, 7, 5)),
    "bilinear-recompute-1.7": (dict(scale_factor=1.7, mode="bilinear",
                                    recompute_scale_factor=True), (2, 2, 5, 6)),
    "bilinear-to-1x1": (dict(size=1, mode="bilinear"), (2, 3, 4, 5)),
    "bilinear-to-1xW": (dict(size=(1, 6), mode="bilinear"), (1, 2, 4, 3)),
    "bilinear-align-x2": (dict(scale_factor=2, mode="bilinear", align_corners=True), (2, 3, 4, 5)),
    "bilinear-align-x1.5": (dict(scale_factor=1.5, mode="bilinear", align_corners=True),
                            (2, 2, 5, 7)),
    "bilinear-align-down": (dict(size=(3, 2), mode="bilinear", align_corners=True), (2, 2, 7, 5)),
    "bilinear-align-to-1x1": (dict(size=1, mode="bilinear", align_corners=True), (2, 3, 4, 5)),
    "bilinear-align-from-1x1": (dict(size=(3, 4), mode="bilinear", align_corners=True),
                                (1, 2, 1, 1)),
    "bilinear-align-false-explicit": (dict(scale_factor=2.5, mode="bilinear",
                                           align_corners=False), (1, 2, 3, 4)),
    "linear-1d-x2": (dict(scale_factor=2, mode="linear"), (2, 3, 5)),
    "linear-1d-size": (dict(size=11, mode="linear"), (1, 2, 4)),
    "linear-1d-align-down": (dict(scale_factor=0.6, mode="linear", align_corners=True), (2, 2, 9)),
    "linear-1d-to-1": (dict(size=1, mode="linear"), (2, 2, 6)),
    "batch1-bilinear": (dict(scale_factor=2, mode="bilinear"), (1, 1, 3, 3)),
}


@pytest.mark.parametrize("kwargs, shape", params(UPSAMPLE_CASES))
def test_upsample_gradcheck(kwargs, shape):
    assert_gradcheck(cr.Upsample(**kwargs), np.random.default_rng(0).standard_normal(shape), 1e-7)


@each_dtype
@pytest.mark.parametrize("kwargs, shape", params(UPSAMPLE_CASES))
def test_upsample_torch_parity(kwargs, shape, dtype):
    layer = cr.Upsample(**kwargs)
    x = np.random.default_rng(1).standard_normal(shape)
    assert_torch_parity(layer, torch.nn.Upsample(**kwargs), x, dtype=dtype,
                        terms=upsample_terms(layer, shape))


SUBCLASS_CASES = {
    "nearest2d-x2": (cr.UpsamplingNearest2d, torch.nn.UpsamplingNearest2d, dict(scale_factor=2),
                     (2, 3, 4, 5)),
    "nearest2d-size": (cr.UpsamplingNearest2d, torch.nn.UpsamplingNearest2d, dict(size=(5, 3)),
                       (1, 2, 4, 7)),
    "bilinear2d-x2": (cr.UpsamplingBilinear2d, torch.nn.UpsamplingBilinear2d,
                      dict(scale_factor=2), (2, 3, 4, 5)),
    "bilinear2d-size": (cr.UpsamplingBilinear2d, torch.nn.UpsamplingBilinear2d,
                        dict(size=(7, 3)), (1, 2, 4, 5)),
}


@each_dtype
@pytest.mark.parametrize("ours, theirs, kwargs, shape",
                         [pytest.param(*v, id=k) for k, v in SUBCLASS_CASES.items()])
def test_upsampling_subclasses_match_torch(ours, theirs, kwargs, shape, dtype):
    layer = ours(**kwargs)
    x = np.random.default_rng(2).standard_normal(shape)
    assert_torch_parity(layer, theirs(**kwargs), x, dtype=dtype, terms=upsample_terms(layer, shape))
    assert_gradcheck(layer, x, 1e-7)
    assert repr(layer) == repr(theirs(**kwargs))


def test_upsampling_bilinear2d_is_align_corners_true():
    x = np.random.default_rng(3).standard_normal((1, 2, 3, 4))
    np.testing.assert_array_equal(
        cr.UpsamplingBilinear2d(scale_factor=2).forward(x),
        cr.Upsample(scale_factor=2, mode="bilinear", align_corners=True).forward(x))


# ---------------------------------------------------------------- torch's matrices, bit for bit

def torch_matrix(mode: str, length: int, dtype, axis: str = "w", **kwargs) -> np.ndarray:
    """The (L_out, L) matrix torch applies along one axis: interpolate the identity, one
    basis vector per batch item, on a 4-D input (the other axis of length 2 kept) or a
    3-D one (axis="l")."""
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    eye = torch.eye(length, dtype=tdt)
    size, scale = kwargs.pop("size", None), kwargs.pop("scale_factor", None)
    if axis == "l":
        y = F.interpolate(eye.reshape(length, 1, length), size=size, scale_factor=scale,
                          mode="linear" if mode == "bilinear" else mode, **kwargs)
        return y[:, 0, :].numpy().T
    x = eye.reshape(length, 1, 1, length).expand(length, 1, 2, length).contiguous()
    y = F.interpolate(x, size=None if size is None else (2, size),
                      scale_factor=None if scale is None else (1.0, scale), mode=mode, **kwargs)
    return y[:, 0, 0, :].numpy().T


MATRIX_GRID = [(length, dict(size=s)) for length in (1, 2, 3, 5, 8) for s in (1, 2, 3, 4, 7, 13)]
MATRIX_GRID += [(length, dict(scale_factor=f, **rc)) for length in (2, 3, 5, 8, 13)
                for f in (0.5, 0.7, 1.1, 1.5, 2.0, 2.05, 1 / 3, 2.9)
                for rc in ({}, {"recompute_scale_factor": True})
                if math.floor(length * f) >= 1]


@pytest.mark.parametrize("mode, align", [("nearest", None), ("nearest-exact", None),
                                         ("bilinear", False), ("bilinear", True)])
@each_dtype
def test_interpolation_matrices_are_torchs_bit_for_bit(mode, align, dtype):
    """Every index and every float32/float64 weight is torch's own, on 4-D inputs (torch's
    "indexed" nearest kernel: the outputs are small) and 3-D ones (its generic kernel),
    for sizes and scale factors, recomputed or not."""
    extra = {} if align is None else {"align_corners": align}
    for length, kwargs in MATRIX_GRID:
        for axis in ("w", "l"):
            layer_mode = "linear" if (axis == "l" and mode == "bilinear") else mode
            per_axis = dict(kwargs)
            if axis == "w":           # the H axis of length 2 stays as it is
                if "size" in kwargs:
                    per_axis["size"] = (2, kwargs["size"])
                else:
                    per_axis["scale_factor"] = (1.0, kwargs["scale_factor"])
            layer = cr.Upsample(mode=layer_mode, **per_axis, **extra)
            shape = (1, 1, 2, length) if axis == "w" else (1, 1, length)
            ours = layer.plans(shape, dtype)[-1].matrix(dtype)
            theirs = torch_matrix(mode, length, dtype, axis, **kwargs, **extra)
            assert np.array_equal(ours, theirs), f"{layer!r}, axis {axis}, L={length}, {dtype}"


def test_torchs_two_nearest_kernels_are_both_reproduced():
    """torch's 2-D nearest forward uses its float32 "indexed" kernel (with shortcuts for
    L_out == L and 2 L) while H_out + W_out <= 128, its generic one (the layer's dtype, no
    shortcuts) above it; the layer follows torch on both sides."""
    # 93 -> 186 = 2 L with scale 2.01 and 2 + 186 > 128: generic, floor(i / 2.01).
    x = np.arange(2 * 93.0).reshape(1, 1, 2, 93)
    layer = cr.Upsample(scale_factor=(1.0, 2.01))
    ours = layer.forward(x)
    np.testing.assert_array_equal(ours, torch.nn.Upsample(scale_factor=(1.0, 2.01))(
        torch.tensor(x)).numpy())
    assert ours[0, 0, 0, 2] == 0.0                       # i // 2 would read pixel 1
    # 7 -> 14 = 2 L with the same scale and 2 + 14 <= 128: indexed, i // 2.
    x = np.arange(7.0).reshape(1, 1, 1, 7)
    ours = cr.Upsample(scale_factor=2.01).forward(x)
    np.testing.assert_array_equal(ours, torch.nn.Upsample(scale_factor=2.01)(
        torch.tensor(x)).numpy())
    np.testing.assert_array_equal(ours[0, 0, 0], np.arange(14) // 2)


@pytest.mark.parametrize("kwargs, shape", [
    (dict(scale_factor=1.1), (1, 1, 2)),                  # 1-D: L_out == L, scale not 1
    (dict(scale_factor=2.01), (1, 1, 9)),                 # 1-D: L_out == 2 L, scale not 2
    (dict(size=(70, 80)), (1, 1, 2, 3)),                  # 2-D: generic kernel (150 > 128)
])
def test_nearest_backward_is_the_adjoint_where_torchs_is_not(kwargs, shape):
    """torch's nearest backward always uses its indexed kernel; where its forward did not
    (every 1-D forward, large 2-D outputs) torch's gradient can disagree with its own
    forward. Ours is the forward's adjoint; the forward is torch's."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape)
    layer = cr.Upsample(**kwargs)
    y = layer.forward(x)
    np.testing.assert_array_equal(y, torch.nn.Upsample(**kwargs)(torch.tensor(x)).numpy())
    g = rng.standard_normal(y.shape)
    dx = layer.backward(g)
    assert abs(np.sum(y * g) - np.sum(x * dx)) <= 1e-12 * np.sum(np.abs(y * g))
    assert_gradcheck(layer, x, 1e-7)


def test_float64_generic_kernel_differs_from_float32_where_torch_does():
    # 2 -> 656: the step 2/656 in double and in float32 floor differently somewhere.
    x = np.arange(2.0).reshape(1, 1, 1, 2)
    outs = {}
    for dtype in (np.float64, np.float32):
        layer = cr.Upsample(size=(1, 656))
        outs[dtype] = layer.forward(x.astype(dtype))
        theirs = torch.nn.Upsample(size=(1, 656))(torch.tensor(x.astype(dtype))).numpy()
        np.testing.assert_array_equal(outs[dtype], theirs)
    assert not np.array_equal(outs[np.float64], outs[np.float32])


# ---------------------------------------------------------------- exactness corners

@pytest.mark.parametrize("kwargs, shape", [
    (dict(scale_factor=3), (2, 2, 3, 4)), (dict(size=(5, 2)), (1, 3, 4, 7)),
    (dict(scale_factor=0.5, mode="nearest-exact"), (2, 1, 6, 5)),
    (dict(scale_factor=2, mode="bilinear"), (2, 2, 3, 4)),
    (dict(scale_factor=2, mode="bilinear", align_corners=True), (1, 2, 3, 5)),
])
def test_integer_data_matches_torch_bit_for_bit(kwargs, shape):
    """Integer inputs and gradients with weights of few bits (copies, 1/4 and 3/4, thirds
    of align_corners excepted): every sum is exact, so ours must equal torch's to the
    bit, whatever order each adds in."""
    rng = np.random.default_rng(5)
    x = rng.integers(-8, 9, shape).astype(np.float64)
    layer = cr.Upsample(**kwargs)
    y = layer.forward(x)
    g = rng.integers(-4, 5, y.shape).astype(np.float64)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.Upsample(**kwargs)(xt)
    yt.backward(torch.tensor(g))
    if kwargs.get("align_corners"):
        assert rel_error(y, yt.detach().numpy()) <= 1e-15
        assert rel_error(layer.backward(g), xt.grad.numpy()) <= 1e-15
    else:
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_array_equal(layer.backward(g), xt.grad.numpy())


def test_nan_and_inf_stay_where_torch_puts_them():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = np.inf
    for kwargs in (dict(scale_factor=2), dict(scale_factor=2, mode="bilinear")):
        with np.errstate(invalid="ignore"):
            ours = cr.Upsample(**kwargs).forward(x)
        theirs = torch.nn.Upsample(**kwargs)(torch.tensor(x)).numpy()
        np.testing.assert_array_equal(ours, theirs)
        assert np.isfinite(ours[0, 0, -1]).all()          # far rows are untouched


def test_output_size_formula_and_repr_like_torch():
    for kwargs, shape in [(dict(scale_factor=1.7), (1, 1, 5, 7)),
                          (dict(scale_factor=0.3), (1, 1, 7, 10)),
                          (dict(size=(3, 8)), (2, 1, 5, 5)),
                          (dict(scale_factor=(2, 1.5)), (1, 2, 3, 3))]:
        layer = cr.Upsample(**kwargs)
        assert layer.forward(np.zeros(shape)).shape == torch.nn.Upsample(**kwargs)(
            torch.zeros(shape)).shape
        assert repr(layer) == repr(torch.nn.Upsample(**kwargs))
    assert cr.Upsample(scale_factor=2).forward(np.zeros((1, 1, 3, 5))).shape == (1, 1, 6, 10)
    assert repr(cr.Upsample(size=4, mode="bilinear", align_corners=True)) == \
        "Upsample(size=4, mode='bilinear', align_corners=True)"
    assert "recompute_scale_factor=True" in repr(cr.Upsample(scale_factor=2,
                                                             recompute_scale_factor=True))
    assert cr.Upsample(scale_factor=2).scale_factor == 2.0 and isinstance(
        cr.Upsample(scale_factor=2).scale_factor, float)
    assert cr.Upsample(size=[3, 4]).size == (3, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept_and_integers_become_float32(dtype):
    layer = cr.Upsample(scale_factor=2, mode="bilinear")
    assert layer.forward(np.ones((1, 1, 2, 2), dtype=dtype)).dtype == dtype
    assert layer.forward(np.ones((1, 1, 2, 2), dtype=np.uint8)).dtype == np.float32
    assert layer.backward(np.ones((1, 1, 4, 4), dtype=np.float32)).dtype == np.float32


def test_eval_keeps_no_cache_and_empty_batch_passes():
    layer = cr.Upsample(scale_factor=2).eval()
    layer.forward(np.ones((1, 1, 2, 2)))
    with pytest.raises(RuntimeError, match="without a cached forward"):
        layer.backward(np.ones((1, 1, 4, 4)))
    layer.train()
    assert layer.forward(np.ones((0, 2, 3, 3))).shape == (0, 2, 6, 6)
    assert layer.backward(np.ones((0, 2, 6, 6))).shape == (0, 2, 3, 3)


def test_plans_are_built_once_per_input_size_and_options_and_are_read_only():
    layer = cr.Upsample(scale_factor=1.5, mode="bilinear")
    first = layer.plans((2, 3, 4, 5), np.float32)
    again = cr.Upsample(scale_factor=1.5, mode="bilinear").plans((7, 1, 4, 5), np.float32)
    assert len(first) == len(again) == 2
    assert all(a is b for a, b in zip(first, again))      # the batch and channels do not matter
    # another spatial size, dtype or option is another plan
    for other in (layer.plans((2, 3, 4, 6), np.float32), layer.plans((2, 3, 4, 5), np.float64),
                  cr.Upsample(scale_factor=1.5, mode="bilinear", align_corners=True)
                  .plans((2, 3, 4, 5), np.float32)):
        assert other[1] is not first[1]
    with pytest.raises(ValueError, match="read-only"):
        first[0].weight0[0] = 0.0


def test_backward_checks_the_gradient_shape():
    layer = cr.Upsample(scale_factor=2)
    layer.forward(np.ones((1, 1, 2, 2)))
    with pytest.raises(ValueError, match=r"gradient of shape \(1, 1, 4, 4\)"):
        layer.backward(np.ones((1, 1, 2, 2)))


def test_segment_sum_is_the_adjoint_of_the_gather_on_random_plans():
    rng = np.random.default_rng(6)
    for _ in range(30):
        size, out = int(rng.integers(1, 12)), int(rng.integers(1, 30))
        scale = None if rng.random() < 0.5 else float(rng.uniform(0.2, 4))
        for plan in (R.linear_plan(size, out, scale, bool(rng.random() < 0.5), np.float64),
                     R.nearest_plan(size, out, scale, np.float64),
                     R.nearest_exact_plan(size, out, scale, np.float64, "indexed")):
            x = rng.standard_normal((2, size, 3))
            g = rng.standard_normal((2, out, 3))
            y = R.resample_axis(x, plan, 1)
            a = plan.matrix(np.float64)
            np.testing.assert_allclose(y, np.einsum("oi,nic->noc", a, x), rtol=1e-13, atol=1e-13)
            np.testing.assert_allclose(R.resample_axis_backward(g, plan, 1),
                                       np.einsum("oi,noc->nic", a, g), rtol=1e-13, atol=1e-13)


# ---------------------------------------------------------------- Upsample errors

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(scale_factor=2, mode="bicubic"), ValueError, "bicubic, trilinear and area are not"),
    (dict(scale_factor=2, mode="area"), ValueError, "mode must be one of"),
    (dict(scale_factor=2, mode="Nearest"), ValueError, "mode must be one of"),
    (dict(), ValueError, "exactly one of size and scale_factor"),
    (dict(size=3, scale_factor=2), ValueError, "exactly one of size and scale_factor"),
    (dict(size=0), ValueError, "size must be >= 1"),
    (dict(size=2.5), TypeError, "size must be an int"),
    (dict(size=(1, 2, 3)), TypeError, "size must be an int or a tuple of one or two"),
    (dict(size=True), TypeError, "size must be an int"),
    (dict(scale_factor=0), ValueError, "scale_factor must be positive and finite"),
    (dict(scale_factor=-2.0), ValueError, "scale_factor must be positive"),
    (dict(scale_factor=float("inf")), ValueError, "positive and finite"),
    (dict(scale_factor="2"), TypeError, "scale_factor must be a number"),
    (dict(scale_factor=(2, 2, 2)), TypeError, "one or two numbers"),
    (dict(scale_factor=2, align_corners=True), ValueError, "align_corners can only be set"),
    (dict(scale_factor=2, mode="nearest-exact", align_corners=False), ValueError,
     "align_corners can only be set"),
    (dict(scale_factor=2, mode="bilinear", align_corners=1), TypeError, "align_corners must be"),
    (dict(size=4, recompute_scale_factor=True), ValueError, "recompute_scale_factor=True"),
])
def test_bad_arguments_name_the_layer_and_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        cr.Upsample(**kwargs)
    assert str(info.value).startswith("Upsample")


@pytest.mark.parametrize("kwargs, shape, match", [
    (dict(scale_factor=2, mode="bilinear"), (1, 2, 5), r"\(N, C, H, W\) \(4-D\), got shape"),
    (dict(scale_factor=2, mode="linear"), (1, 2, 5, 5), r"\(N, C, L\) \(3-D\), got shape"),
    (dict(scale_factor=2), (2, 5), r"\(N, C, L\) or \(N, C, H, W\)"),
    (dict(scale_factor=2), (1, 1, 2, 2, 2), r"\(3-D or 4-D\), got shape \(1, 1, 2, 2, 2\)"),
    (dict(size=(3, 4)), (1, 2, 5), "size has 2 entries but the input of shape"),
    (dict(scale_factor=(2,)), (1, 2, 5, 5), "scale_factor has 1 entries"),
    (dict(scale_factor=0.2), (1, 2, 3, 8), r"output of shape \(1, 2, 0, 1\) would be empty"),
    (dict(scale_factor=2), (1, 0, 3, 3), "non-empty channel and spatial axes"),
])
def test_wrong_input_names_the_expected_and_the_given_shape(kwargs, shape, match):
    layer = cr.Upsample(**kwargs)
    with pytest.raises(ValueError, match=match):
        layer.forward(np.zeros(shape))


def test_subclasses_take_torchs_two_arguments_only():
    with pytest.raises(TypeError):
        cr.UpsamplingBilinear2d(scale_factor=2, mode="nearest")
    with pytest.raises(ValueError, match="UpsamplingNearest2d: give exactly one"):
        cr.UpsamplingNearest2d()


# ---------------------------------------------------------------- shuffles

SHUFFLE_CASES = {
    "r1": (1, (2, 3, 4, 5)),
    "r2": (2, (2, 8, 3, 5)),
    "r3-odd": (3, (1, 9, 3, 1)),
    "r2-batch1-1x1": (2, (1, 4, 1, 1)),
    "r2-unbatched": (2, (12, 2, 3)),
}


@each_dtype
@pytest.mark.parametrize("r, shape", [pytest.param(*v, id=k) for k, v in SHUFFLE_CASES.items()])
def test_pixel_shuffle_and_unshuffle_match_torch(r, shape, dtype):
    x = np.random.default_rng(7).standard_normal(shape)
    errors = assert_torch_parity(cr.PixelShuffle(r), torch.nn.PixelShuffle(r), x, dtype=dtype,
                                 terms=1)
    assert max(errors.values()) == 0.0                   # a permutation: exact
    unshuffled = (*shape[:-3], shape[-3] // (r * r), shape[-2] * r, shape[-1] * r)
    errors = assert_torch_parity(cr.PixelUnshuffle(r), torch.nn.PixelUnshuffle(r),
                                 x.reshape(unshuffled), dtype=dtype, terms=1)
    assert max(errors.values()) == 0.0


@pytest.mark.parametrize("r, shape", [pytest.param(*v, id=k) for k, v in SHUFFLE_CASES.items()])
def test_shuffles_gradcheck_and_invert_each_other(r, shape):
    x = np.random.default_rng(8).standard_normal(shape)
    shuffle, unshuffle = cr.PixelShuffle(r), cr.PixelUnshuffle(r)
    assert_gradcheck(shuffle, x, 1e-7)
    y = shuffle.forward(x)
    assert_gradcheck(unshuffle, y, 1e-7)
    np.testing.assert_array_equal(unshuffle.forward(y), x)
    np.testing.assert_array_equal(shuffle.backward(y), x)   # backward = the inverse


def test_pixel_shuffle_channel_order_is_torchs():
    x = np.arange(8.0).reshape(1, 8, 1, 1)                   # 2 channels of 2x2 blocks
    y = cr.PixelShuffle(2).forward(x)
    np.testing.assert_array_equal(y[0, 0], [[0, 1], [2, 3]])
    np.testing.assert_array_equal(y[0, 1], [[4, 5], [6, 7]])


CHANNEL_CASES = {
    "g2-4d": (2, (2, 6, 3, 4)),
    "g3-3d": (3, (1, 6, 5)),
    "g1": (1, (2, 3, 2, 2)),
    "g-all": (4, (2, 4, 3, 1)),
    "g2-5d": (2, (1, 4, 2, 2, 3)),
}


@each_dtype
@pytest.mark.parametrize("groups, shape",
                         [pytest.param(*v, id=k) for k, v in CHANNEL_CASES.items()])
def test_channel_shuffle_matches_torch(groups, shape, dtype):
    x = np.random.default_rng(9).standard_normal(shape)
    errors = assert_torch_parity(cr.ChannelShuffle(groups), torch.nn.ChannelShuffle(groups), x,
                                 dtype=dtype, terms=1)
    assert max(errors.values()) == 0.0
    assert_gradcheck(cr.ChannelShuffle(groups), x, 1e-7)


def test_channel_shuffle_order_and_inverse():
    x = np.arange(6.0).reshape(1, 6, 1)
    layer = cr.ChannelShuffle(2)
    y = layer.forward(x)
    np.testing.assert_array_equal(y[0, :, 0], [0, 3, 1, 4, 2, 5])
    np.testing.assert_array_equal(layer.backward(y), x)
    np.testing.assert_array_equal(cr.ChannelShuffle(3).forward(y), x)


@pytest.mark.parametrize("build, shape, error, match", [
    (lambda: cr.PixelShuffle(2), (1, 6, 2, 2), ValueError,
     r"divisible by 4, got shape \(1, 6, 2, 2\)"),
    (lambda: cr.PixelShuffle(2), (4, 2), ValueError, r"\(N, C\*r\^2, H, W\) or \(C\*r\^2, H, W\)"),
    (lambda: cr.PixelShuffle(2), (1, 1, 4, 2, 2), ValueError, "3-D or 4-D"),
    (lambda: cr.PixelUnshuffle(2), (1, 2, 3, 4), ValueError,
     r"divisible by 2, got shape \(1, 2, 3, 4\)"),
    (lambda: cr.PixelUnshuffle(3), (2, 3, 5), ValueError, "height and width divisible by 3"),
    (lambda: cr.ChannelShuffle(2), (1, 3, 4), ValueError,
     r"C divisible by 2, got shape \(1, 3, 4\)"),
    (lambda: cr.ChannelShuffle(2), (4, 2), ValueError, "at least 3 axes"),
])
def test_shuffle_input_errors(build, shape, error, match):
    with pytest.raises(error, match=match):
        build().forward(np.zeros(shape))


@pytest.mark.parametrize("build, error, match", [
    (lambda: cr.PixelShuffle(0), ValueError,
     r"PixelShuffle\(upscale_factor=0\): upscale_factor must be >= 1"),
    (lambda: cr.PixelShuffle(2.0), TypeError, "upscale_factor must be a positive int"),
    (lambda: cr.PixelUnshuffle(-1), ValueError, "downscale_factor must be >= 1"),
    (lambda: cr.ChannelShuffle(0), ValueError, r"ChannelShuffle\(groups=0\): groups must be >= 1"),
    (lambda: cr.ChannelShuffle(True), TypeError, "groups must be a positive int"),
])
def test_shuffle_argument_errors(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_shuffle_reprs_are_torchs():
    for ours, theirs in [(cr.PixelShuffle(3), torch.nn.PixelShuffle(3)),
                         (cr.PixelUnshuffle(2), torch.nn.PixelUnshuffle(2)),
                         (cr.ChannelShuffle(4), torch.nn.ChannelShuffle(4))]:
        assert repr(ours) == repr(theirs)


# ---------------------------------------------------------------- in a network, interop

def test_in_a_network_gradcheck():
    model = cr.Sequential(cr.Conv2d(2, 8, 3, padding=1, rng=0), cr.PixelShuffle(2),
                          cr.ChannelShuffle(2), cr.Upsample(scale_factor=1.5, mode="bilinear"),
                          cr.PixelUnshuffle(3), cr.Upsample(size=(3, 2)))
    x = np.random.default_rng(10).standard_normal((2, 2, 3, 3))
    assert model.forward(x).shape == (2, 18, 3, 2)
    assert_gradcheck(model, x, 1e-6)


def test_from_torch_refuses_modes_chainrule_lacks():
    from chainrule.interop import from_torch
    with pytest.raises(UnsupportedModuleError, match=r"torch.nn.Upsample\(mode='bicubic'\)"):
        from_torch(torch.nn.Upsample(scale_factor=2, mode="bicubic"))
    with pytest.raises(UnsupportedModuleError, match="align_corners can only be set"):
        from_torch(torch.nn.Sequential(torch.nn.Upsample(scale_factor=2, align_corners=True)))
    layer = from_torch(torch.nn.Upsample(size=[3, 5], mode="bilinear"))
    assert type(layer) is cr.Upsample and layer.size == (3, 5)


def _ort_run(path, x):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": x})[0]


@pytest.mark.parametrize("kwargs, shape, via", [
    (dict(scale_factor=2, mode="bilinear"), (2, 4, 6), "Shape"),           # 1/2 == 4/8
    (dict(scale_factor=1.7, mode="bilinear"), (2, 5, 7), "scales"),        # 1/1.7 != 5/8
    (dict(size=(7, 9), mode="bilinear"), (2, 4, 6), "Shape"),
    (dict(scale_factor=1.7, mode="bilinear", recompute_scale_factor=True), (2, 5, 7), "Shape"),
    (dict(scale_factor=(1.3, 0.4)), (2, 5, 11), "scales"),
])
def test_onnx_resize_takes_torchs_scale_from_sizes_or_scales(kwargs, shape, via, tmp_path):
    pytest.importorskip("onnx")
    layer = cr.Upsample(**kwargs)
    proto = cr.export_onnx(layer, tmp_path / "m.onnx", shape)
    inits = {t.name for t in proto.graph.initializer}
    ops = [n.op_type for n in proto.graph.node]
    assert ops[-1] == "Resize"
    assert (via == "scales") == ("scales" in inits) and (via == "Shape") == ("Shape" in ops)
    x = np.random.default_rng(11).standard_normal((3, *shape)).astype(np.float32)
    assert rel_error(_ort_run(tmp_path / "m.onnx", x), layer.eval().forward(x)) <= 1e-6


@pytest.mark.parametrize("build, shape, match", [
    # torch floors i * float32(2/230) to 0 at i = 115, Resize divides i / 115 exactly.
    (lambda: cr.Upsample(size=(1, 230)), (1, 1, 2), "pick other source pixels"),
    # W keeps its length 2: torch copies it, Resize with scales does not (scale 1.3 != 1),
    # and sizes (W copied) give the wrong step on H.
    (lambda: cr.Upsample(scale_factor=(2.6, 1.3), mode="bilinear"), (1, 9, 2),
     "pick other source pixels"),
    (lambda: cr.Upsample(scale_factor=2, mode="nearest-exact"), (1, 4, 4), "nearest-exact"),
    (lambda: cr.PixelShuffle(1), (1, 4), "batch axis would be its channels"),
])
def test_onnx_refuses_what_resize_does_not_reproduce(build, shape, match, tmp_path):
    pytest.importorskip("onnx")
    with pytest.raises(UnsupportedModuleError, match=r"^1: .*" + match):
        cr.export_onnx(cr.Sequential(cr.Identity(), build()), tmp_path / "m.onnx", shape)


def test_onnx_float64_model_exports_valid_double_resize(tmp_path):
    # ONNX Runtime's CPU provider has no double Resize kernel; the file is still valid.
    onnx = pytest.importorskip("onnx")
    model = cr.Sequential(cr.BatchNorm2d(2), cr.Upsample(scale_factor=1.5, mode="bilinear"))
    proto = cr.export_onnx(model.double(), tmp_path / "m.onnx", (2, 3, 5))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert proto.graph.node[-1].op_type == "Resize"


def test_onnx_resize_model_matches_onnx_runtime_over_a_grid(tmp_path):
    """The export's model of Resize (float32 coordinates as ONNX Runtime computes them)
    decides between sizes, scales and refusal; over a grid of sizes and scale factors every
    exported layer must give chainrule's numbers in ONNX Runtime."""
    pytest.importorskip("onnx")
    rng = np.random.default_rng(13)
    exported = refused = 0
    for mode, align in (("nearest", None), ("bilinear", False), ("bilinear", True)):
        for length in (1, 2, 3, 5, 8, 13):
            for kwargs in ([dict(size=(2, s)) for s in (1, 2, 3, 7, 13, 26, 40)]
                           + [dict(scale_factor=(1.0, f))
                              for f in (0.5, 0.7, 1.1, 1.5, 1.7, 2.05, 2.5, 3)
                              if math.floor(length * f) >= 1]):
                layer = cr.Upsample(mode=mode, align_corners=align, **kwargs)
                try:
                    cr.export_onnx(layer, tmp_path / "m.onnx", (1, 2, length))
                except UnsupportedModuleError:
                    refused += 1
                    continue
                exported += 1
                x = rng.standard_normal((2, 1, 2, length)).astype(np.float32)
                ours = layer.forward(x)
                theirs = _ort_run(tmp_path / "m.onnx", x)
                if mode == "nearest":
                    np.testing.assert_array_equal(theirs, ours, err_msg=repr(layer))
                    continue
                # Each of the two weights may differ by the export's bound on Resize's
                # float32 coordinate, 4 u max(L, L_out); then the rounding of 2 products.
                bound = 2 * 4 * U * max(length, ours.shape[-1]) + float32_tolerance(2)
                error = np.max(np.abs(theirs - ours)) / np.max(np.abs(x))
                assert error <= bound, f"{layer!r}: {error:.2e} > {bound:.2e}"
    assert exported > 200 and refused < exported / 10
