"""BCELoss and BCEWithLogitsLoss against torch.nn over shapes, reductions, weights and
pos_weight broadcasting, the log clamp at p = 0 and 1, logits of +-1000, finite
differences, and bad arguments."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import chainrule as cr
from tests.losses.parity import assert_finite_differences, assert_loss_parity

torch = pytest.importorskip("torch")

DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
REDUCTIONS = pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
SHAPES = {"vector": (7,), "labels": (5, 3), "pixels": (2, 3, 2, 2)}
SHAPE_PARAMS = pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))


def weight_of(kind: str | None, shape, rng) -> np.ndarray | None:
    """A weight that broadcasts to ``shape``: per element, per last axis (C,), per
    sample (N, 1, ...), per channel (C, 1, 1) of (N, C, H, W), or one value (1,)."""
    if kind is None:
        return None
    wshape = {"full": shape, "last": shape[-1:], "sample": shape[:1] + (1,) * (len(shape) - 1),
              "channel": shape[1:2] + (1,) * (len(shape) - 2), "one": (1,)}[kind]
    return rng.uniform(0.2, 3.0, wshape)


def data(shape, seed: int, hard: bool = False, corners: bool = False):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, shape)
    y = rng.integers(0, 2, shape).astype(np.float64) if hard else rng.uniform(0, 1, shape)
    if corners:  # probabilities of exactly 0 and 1, where torch clamps the logs at -100
        flat = p.reshape(-1)
        flat[::3] = 0.0
        flat[1::3] = 1.0
    return p, y, rng


def torch_weights(options: dict, dtype) -> dict:
    return {k: None if v is None else torch.tensor(np.asarray(v, dtype=dtype))
            for k, v in options.items()}


BCE_CASES = {"plain": (None, False, False), "hard_targets": (None, True, False),
             "clamped_logs": (None, False, True), "clamped_hard": (None, True, True),
             "weight_full": ("full", False, False), "weight_last": ("last", False, False),
             "weight_sample": ("sample", True, False), "weight_one": ("one", False, True)}


@DTYPES
@REDUCTIONS
@SHAPE_PARAMS
@pytest.mark.parametrize("weight, hard, corners", list(BCE_CASES.values()), ids=list(BCE_CASES))
def test_bce_matches_torch(weight, hard, corners, shape, reduction, dtype):
    p, y, rng = data(shape, seed=0, hard=hard, corners=corners)
    options = {"weight": weight_of(weight, shape, rng)}
    ours = cr.BCELoss(reduction=reduction, **options)
    theirs = torch.nn.BCELoss(reduction=reduction, **torch_weights(options, dtype))
    assert_loss_parity(ours, theirs, p, y, dtype, terms=p.size)


BCE_LOGITS_CASES = {
    "plain": (None, None), "weight_full": ("full", None), "weight_sample": ("sample", None),
    "pos_weight_last": (None, "last"), "pos_weight_one": (None, "one"),
    "pos_weight_full": (None, "full"), "both": ("last", "last"), "both_sample": ("sample", "one"),
}


@DTYPES
@REDUCTIONS
@SHAPE_PARAMS
@pytest.mark.parametrize("weight, pos_weight", list(BCE_LOGITS_CASES.values()),
                         ids=list(BCE_LOGITS_CASES))
def test_bce_with_logits_matches_torch(weight, pos_weight, shape, reduction, dtype):
    _, y, rng = data(shape, seed=1)
    x = rng.standard_normal(shape) * 3
    options = {"weight": weight_of(weight, shape, rng),
               "pos_weight": weight_of(pos_weight, shape, rng)}
    ours = cr.BCEWithLogitsLoss(reduction=reduction, **options)
    theirs = torch.nn.BCEWithLogitsLoss(reduction=reduction, **torch_weights(options, dtype))
    assert_loss_parity(ours, theirs, x, y, dtype, terms=x.size)


@DTYPES
@REDUCTIONS
def test_bce_with_logits_per_channel_pos_weight_of_images(reduction, dtype):
    """pos_weight (C, 1, 1) weighs the positives of each channel of (N, C, H, W)."""
    shape = (2, 3, 4, 4)
    _, y, rng = data(shape, seed=2, hard=True)
    x = rng.standard_normal(shape)
    options = {"pos_weight": weight_of("channel", shape, rng),
               "weight": weight_of("channel", shape, rng)}
    ours = cr.BCEWithLogitsLoss(reduction=reduction, **options)
    theirs = torch.nn.BCEWithLogitsLoss(reduction=reduction, **torch_weights(options, dtype))
    assert_loss_parity(ours, theirs, x, y, dtype, terms=x.size)


@REDUCTIONS
@SHAPE_PARAMS
@pytest.mark.parametrize("weight", [None, "last"])
def test_bce_backward_matches_finite_differences(weight, shape, reduction):
    p, y, rng = data(shape, seed=3)
    loss = cr.BCELoss(weight=weight_of(weight, shape, rng), reduction=reduction)
    assert_finite_differences(loss, p, y, seed=4)


@REDUCTIONS
@SHAPE_PARAMS
@pytest.mark.parametrize("weight, pos_weight", [(None, None), ("sample", "last"), (None, "one")])
def test_bce_with_logits_backward_matches_finite_differences(weight, pos_weight, shape, reduction):
    _, y, rng = data(shape, seed=5)
    x = rng.standard_normal(shape) * 3
    loss = cr.BCEWithLogitsLoss(weight=weight_of(weight, shape, rng),
                                pos_weight=weight_of(pos_weight, shape, rng), reduction=reduction)
    assert_finite_differences(loss, x, y, seed=6)


@DTYPES
@REDUCTIONS
@pytest.mark.parametrize("pos_weight", [None, np.array([0.5, 3.0, 1.0, 2.0])])
def test_bce_with_logits_is_stable_at_huge_logits(pos_weight, reduction, dtype):
    x = np.array([[1000.0, -1000.0, 50.0, -50.0],
                  [-1000.0, 1000.0, 0.0, 88.0],
                  [1000.0, 1000.0, -1000.0, -1000.0]])
    y = np.array([[1.0, 0.0, 0.3, 1.0],
                  [1.0, 0.0, 1.0, 0.0],
                  [0.0, 0.7, 0.2, 1.0]])
    ours = cr.BCEWithLogitsLoss(reduction=reduction, pos_weight=pos_weight)
    upstream = np.ones(x.shape, dtype) if reduction == "none" else None
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        value = ours(x.astype(dtype), y)
        grad = ours.backward(upstream)
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    theirs = torch.nn.BCEWithLogitsLoss(reduction=reduction,
                                        **torch_weights({"pos_weight": pos_weight}, dtype))
    assert_loss_parity(ours, theirs, x, y, dtype, terms=x.size)
    # right and certain costs 0; wrong by 1000 costs 1000 (times pos_weight for y = 1)
    losses = cr.BCEWithLogitsLoss(reduction="none")(x, y)
    assert losses[0, 0] == 0 and losses[0, 1] == 0 and losses[1, 0] == 1000


def test_bce_clamps_its_logs_at_minus_100():
    loss = cr.BCELoss(reduction="none")
    values = loss(np.array([0.0, 1.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0, 1.0]))
    assert values.tolist() == [100.0, 100.0, 0.0, 0.0]
    grad = loss.backward(np.ones(4))
    # (p - y) / max(p (1 - p), 1e-12), torch's 1e-12 being a float32 constant
    big = 1 / float(np.float32(1e-12))
    assert grad.tolist() == [-big, big, 0.0, 0.0]
    pt = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
    torch.nn.BCELoss(reduction="sum")(pt, torch.tensor([1.0, 0.0, 0.0, 1.0],
                                                        dtype=torch.float64)).backward()
    assert pt.grad.tolist() == grad.tolist()


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("p, y, needle", [
    (np.array([0.5, 1.5]), np.array([0.0, 1.0]), "input"),
    (np.array([-0.1, 0.5]), np.array([0.0, 1.0]), "input"),
    (np.array([np.nan, 0.5]), np.array([0.0, 1.0]), "input"),
    (np.array([0.5, 0.5]), np.array([0.0, 2.0]), "target"),
    (np.array([0.5, 0.5]), np.array([-1.0, 1.0]), "target"),
], ids=["above_1", "below_0", "nan", "target_above_1", "target_below_0"])
def test_bce_refuses_values_outside_0_1(p, y, needle):
    """torch raises for probabilities or targets outside [0, 1] (and NaN inputs)."""
    loss = cr.BCELoss()
    with pytest.raises(ValueError, match=rf"BCELoss.*{needle} must be probabilities in \[0, 1\]"):
        loss(p, y)
    with pytest.raises(RuntimeError, match="BCELoss.*before"):
        loss.backward()


@pytest.mark.parametrize("make", [cr.BCELoss, cr.BCEWithLogitsLoss])
def test_target_shape_must_match(make):
    with pytest.raises(ValueError, match=rf"{make.__name__}.*\(3,\).*\(3, 1\)"):
        make()(np.full(3, 0.5), np.zeros((3, 1)))


@pytest.mark.parametrize("make, name", [(cr.BCELoss, "weight"), (cr.BCEWithLogitsLoss, "weight"),
                                        (cr.BCEWithLogitsLoss, "pos_weight")])
@pytest.mark.parametrize("wshape", [(4,), (2, 3)], ids=["mismatch", "grows"])
def test_weights_must_broadcast_to_the_input(make, name, wshape):
    """torch raises when a weight does not broadcast or would grow the input's shape."""
    loss = make(**{name: np.ones(wshape)})
    with pytest.raises(ValueError, match=rf"{make.__name__}.*{name} of shape "
                                         rf"\({wshape[0]}, ?{wshape[1] if len(wshape) > 1 else ''}"
                                         r"\).*broadcast.*\(3,\)"):
        loss(np.full(3, 0.5), np.zeros(3))


def test_repr_shows_the_weights():
    assert repr(cr.BCEWithLogitsLoss(pos_weight=[2.0])) == \
        "BCEWithLogitsLoss(reduction='mean', pos_weight=[2.0])"
    assert repr(cr.BCELoss()) == "BCELoss(reduction='mean')"
    assert repr(cr.BCELoss(weight=np.ones((2, 1)), reduction="sum")) == \
        "BCELoss(reduction='sum', weight=<array (2, 1)>)"
