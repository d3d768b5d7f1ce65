"""KLDivLoss against torch.nn over shapes, the four reductions and log_target, targets
with zeros (0 log 0 = 0), finite differences, and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from tests.losses.parity import assert_finite_differences, assert_loss_parity

torch = pytest.importorskip("torch")

DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
REDUCTIONS = pytest.mark.parametrize("reduction", ["mean", "batchmean", "sum", "none"])
SHAPES = {"scalar": (), "vector": (5,), "rows": (4, 6), "sequence": (2, 3, 4)}
SHAPE_PARAMS = pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))


def distributions(shape, seed: int, zeros: bool):
    """Model log-probabilities and target probabilities over the last axis (some target
    entries exactly 0 with ``zeros``)."""
    rng = np.random.default_rng(seed)
    if shape == ():
        return np.log(rng.uniform(0.1, 1.0)), rng.uniform(0.1, 1.0) if not zeros else 0.0
    z, t = rng.standard_normal(shape), rng.uniform(0.1, 1.0, shape)
    if zeros:
        t.reshape(-1)[::3] = 0.0
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return log_p, t / t.sum(axis=-1, keepdims=True)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")  # torch's advice
@DTYPES
@REDUCTIONS
@SHAPE_PARAMS
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("zeros", [False, True], ids=["positive", "zeros"])
def test_kl_div_matches_torch(zeros, log_target, shape, reduction, dtype):
    x, t = distributions(shape, seed=0, zeros=zeros)
    if log_target:  # a zero probability is a log-target of -inf: NaN loss, zero gradient
        with np.errstate(divide="ignore"):
            t = np.log(t)
    ours = cr.KLDivLoss(reduction=reduction, log_target=log_target)
    theirs = torch.nn.KLDivLoss(reduction=reduction, log_target=log_target)
    assert_loss_parity(ours, theirs, x, t, dtype, terms=max(np.size(x), 1))


@REDUCTIONS
@SHAPE_PARAMS
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_backward_matches_finite_differences(log_target, shape, reduction):
    x, t = distributions(shape, seed=1, zeros=not log_target)
    loss = cr.KLDivLoss(reduction=reduction, log_target=log_target)
    assert_finite_differences(loss, x, np.log(t) if log_target else t, seed=2)


def test_batchmean_is_the_divergence_per_sample():
    x, t = distributions((3, 5), seed=3, zeros=True)
    kl = cr.KLDivLoss(reduction="batchmean")(x, t)
    kept = t > 0
    by_hand = np.sum(t[kept] * (np.log(t[kept]) - x[kept])) / 3
    assert kl == pytest.approx(by_hand, rel=1e-14)
    t[~kept] = 1e-300  # exp(log(1e-300)) (log 1e-300 - x) is 0 in float64 too
    assert cr.KLDivLoss(reduction="batchmean", log_target=True)(x, np.log(t)) == \
        pytest.approx(by_hand, rel=1e-14)
    assert cr.KLDivLoss(reduction="batchmean")(x, np.exp(x)) == pytest.approx(0.0, abs=1e-15)


def test_zero_targets_cost_nothing_and_warn_nothing():
    loss = cr.KLDivLoss(reduction="none")
    with np.errstate(all="raise"):
        values = loss(np.array([-1.0, -2.0]), np.array([0.0, 1.0]))
    assert values.tolist() == [0.0, 2.0]


def test_kl_div_arguments_are_checked():
    with pytest.raises(ValueError, match=r"KLDivLoss.*reduction.*'mean', 'batchmean', 'sum' or "
                                         r"'none'.*'avg'"):
        cr.KLDivLoss(reduction="avg")
    with pytest.raises(TypeError, match=r"KLDivLoss.*log_target.*bool.*'yes'"):
        cr.KLDivLoss(log_target="yes")
    with pytest.raises(ValueError, match=r"KLDivLoss.*\(2, 3\).*\(3,\)"):
        cr.KLDivLoss()(np.zeros((2, 3)), np.zeros(3))
    assert repr(cr.KLDivLoss("batchmean", True)) == \
        "KLDivLoss(reduction='batchmean', log_target=True)"
