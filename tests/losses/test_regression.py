"""MSELoss, L1Loss, SmoothL1Loss and HuberLoss against torch.nn over shapes, reductions
and thresholds (beta = 0, differences exactly at 0 and at +-beta / +-delta), finite
differences away from the kinks, and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from tests.losses.parity import assert_finite_differences, assert_loss_parity

torch = pytest.importorskip("torch")

DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
REDUCTIONS = pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
SHAPES = {"one": (1,), "vector": (6,), "rows": (4, 3), "images": (2, 3, 2, 2)}
SHAPE_PARAMS = pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))

# name -> (chainrule factory, torch factory, threshold): the threshold's kinks (0 and
# +-threshold) are hit exactly by the corner cases.
LOSSES = {
    "MSELoss": (lambda r: cr.MSELoss(reduction=r), lambda r: torch.nn.MSELoss(reduction=r), None),
    "L1Loss": (lambda r: cr.L1Loss(reduction=r), lambda r: torch.nn.L1Loss(reduction=r), 0.0),
    **{f"SmoothL1Loss_beta{b}": (lambda r, b=b: cr.SmoothL1Loss(reduction=r, beta=b),
                                 lambda r, b=b: torch.nn.SmoothL1Loss(reduction=r, beta=b), b)
       for b in (1.0, 0.5, 2.5, 0.0)},
    **{f"HuberLoss_delta{d}": (lambda r, d=d: cr.HuberLoss(reduction=r, delta=d),
                               lambda r, d=d: torch.nn.HuberLoss(reduction=r, delta=d), d)
       for d in (1.0, 0.25, 3.0)},
}


def pred_and_target(shape, seed: int, kinks: float | None = None, away: float | None = None):
    """Random differences; with ``kinks``, some exactly 0 and +-kinks (exact in binary);
    with ``away``, none within 0.05 of 0 or +-away (for finite differences)."""
    rng = np.random.default_rng(seed)
    target = rng.integers(-8, 8, shape) / 4.0                    # exact binary fractions
    d = rng.standard_normal(shape) * 2
    if kinks is not None:
        flat = d.reshape(-1)
        flat[::4] = 0.0
        flat[1::4] = kinks
        flat[2::4] = -kinks
    if away is not None:
        for point in {0.0, away, -away}:
            near = np.abs(d - point) < 0.05
            d[near] = point + np.where(d[near] >= point, 0.1, -0.1)
    return target + d, target


@DTYPES
@REDUCTIONS
@SHAPE_PARAMS
@pytest.mark.parametrize("corners", [False, True], ids=["random", "kinks"])
@pytest.mark.parametrize("ours, theirs, threshold", list(LOSSES.values()), ids=list(LOSSES))
def test_matches_torch(ours, theirs, threshold, corners, shape, reduction, dtype):
    pred, target = pred_and_target(shape, seed=0,
                                   kinks=(threshold or 0.0) if corners else None)
    assert_loss_parity(ours(reduction), theirs(reduction).to(getattr(torch, np.dtype(dtype).name)),
                       pred, target, dtype, terms=pred.size)


@REDUCTIONS
@SHAPE_PARAMS
@pytest.mark.parametrize("ours, _, threshold", list(LOSSES.values()), ids=list(LOSSES))
def test_backward_matches_finite_differences(ours, _, threshold, shape, reduction):
    pred, target = pred_and_target(shape, seed=1, away=threshold or 0.0)
    assert_finite_differences(ours(reduction), pred, target, seed=2)


def test_values_by_hand():
    d = np.array([0.0, 0.5, -1.0, 3.0])
    zero = np.zeros(4)
    assert cr.MSELoss()(np.array([1.0, 2.0]), np.zeros(2)) == 2.5
    assert cr.MSELoss(reduction="sum")(np.array([1.0, 2.0]), np.zeros(2)) == 5.0
    assert cr.L1Loss(reduction="none")(d, zero).tolist() == [0.0, 0.5, 1.0, 3.0]
    # beta = 1: 0.5 d^2 inside, |d| - 0.5 outside
    assert cr.SmoothL1Loss(reduction="none")(d, zero).tolist() == [0.0, 0.125, 0.5, 2.5]
    assert cr.SmoothL1Loss(reduction="none", beta=0.0)(d, zero).tolist() == [0.0, 0.5, 1.0, 3.0]
    # delta = 2: 0.5 d^2 inside, 2 (|d| - 1) outside
    assert cr.HuberLoss(reduction="none", delta=2.0)(d, zero).tolist() == [0.0, 0.125, 0.5, 4.0]
    loss = cr.HuberLoss(reduction="sum", delta=2.0)
    loss(d, zero)
    assert loss.backward().tolist() == [0.0, 0.5, -1.0, 2.0]


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_smooth_l1_is_huber_over_beta(beta):
    pred, target = pred_and_target((5, 4), seed=3)
    smooth = cr.SmoothL1Loss(reduction="none", beta=beta)
    huber = cr.HuberLoss(reduction="none", delta=beta)
    np.testing.assert_allclose(smooth(pred, target), huber(pred, target) / beta, rtol=1e-14)


@pytest.mark.parametrize("make", [cr.MSELoss, cr.L1Loss, cr.SmoothL1Loss, cr.HuberLoss])
def test_target_shape_and_dtype_must_match(make):
    with pytest.raises(ValueError, match=rf"{make.__name__}.*\(4, 1\).*\(4,\)"):
        make()(np.zeros((4, 1)), np.zeros(4))
    with pytest.raises(TypeError, match=rf"{make.__name__}.*target.*numeric.*<U1"):
        make()(np.zeros(2), np.array(["a", "b"]))


def test_thresholds_are_checked():
    with pytest.raises(ValueError, match=r"SmoothL1Loss.*beta.*>= 0.*-1"):
        cr.SmoothL1Loss(beta=-1)
    for delta in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match=r"HuberLoss.*delta.*> 0"):
            cr.HuberLoss(delta=delta)
    with pytest.raises(ValueError, match=r"SmoothL1Loss.*beta.*>= 0.*nan"):
        cr.SmoothL1Loss(beta=float("nan"))


def test_repr_shows_the_threshold():
    assert repr(cr.SmoothL1Loss(beta=0.5)) == "SmoothL1Loss(reduction='mean', beta=0.5)"
    assert repr(cr.HuberLoss("sum", 2)) == "HuberLoss(reduction='sum', delta=2.0)"
    assert repr(cr.MSELoss()) == "MSELoss(reduction='mean')"
