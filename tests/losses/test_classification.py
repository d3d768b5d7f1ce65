"""CrossEntropyLoss and NLLLoss against torch.nn over grids of shapes (rows, unbatched,
sequences, pixels), reductions and options (class weights, ignore_index, label
smoothing, class-probability targets, all targets ignored), finite differences,
extreme logits, and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from tests.helpers import rel_error
from tests.losses.parity import assert_finite_differences, assert_loss_parity

torch = pytest.importorskip("torch")

DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
REDUCTIONS = pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
# logits shapes: (N, C), one row, unbatched (C,), (N, C, L), (N, C, H, W)
SHAPES = {"rows": (6, 5), "one_row": (1, 3), "unbatched": (4,), "sequence": (2, 3, 5),
          "pixels": (2, 4, 3, 2)}
SHAPE_PARAMS = pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))

# name -> (constructor options, which targets). "weight": True becomes a weight per class.
CE_CASES = {
    "plain": ({}, "index"),
    "weight": ({"weight": True}, "index"),
    "ignored": ({}, "some_ignored"),
    "ignore_a_class": ({"ignore_index": 1}, "index"),
    "weight_ignored": ({"weight": True}, "some_ignored"),
    "smoothing": ({"label_smoothing": 0.1}, "index"),
    "smoothing_1": ({"label_smoothing": 1.0}, "index"),
    "smoothing_weight_ignored": ({"weight": True, "label_smoothing": 0.2}, "some_ignored"),
    "all_ignored": ({}, "all_ignored"),
    "all_ignored_weight_smoothing": ({"weight": True, "label_smoothing": 0.3}, "all_ignored"),
    "prob": ({}, "prob"),
    "prob_weight_smoothing": ({"weight": True, "label_smoothing": 0.2}, "prob"),
}
NLL_CASES = {k: CE_CASES[k] for k in ("plain", "weight", "ignored", "ignore_a_class",
                                      "weight_ignored", "all_ignored")}


def n_classes(shape) -> int:
    return shape[0] if len(shape) == 1 else shape[1]


def make_case(shape, options: dict, targets: str, seed: int = 0):
    """Logits, targets and the options (a weight array in place of ``True``)."""
    rng = np.random.default_rng(seed)
    c = n_classes(shape)
    z = rng.standard_normal(shape) * 2
    options = dict(options)
    if options.get("weight"):
        options["weight"] = rng.uniform(0.2, 3.0, c)
    index_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    if targets == "prob":
        logits = rng.standard_normal(shape)
        axis = 0 if len(shape) == 1 else 1
        y = np.exp(logits) / np.exp(logits).sum(axis=axis, keepdims=True)
    else:
        y = rng.integers(0, c, index_shape)
        if targets == "some_ignored" and y.size > 1:
            y.reshape(-1)[::3] = -100
        elif targets == "all_ignored":
            y = np.full(index_shape, -100)
    return z, y, options


def torch_options(options: dict, dtype) -> dict:
    out = dict(options)
    if out.get("weight") is not None:
        out["weight"] = torch.tensor(np.asarray(out["weight"], dtype=dtype))
    return out


@DTYPES
@REDUCTIONS
@SHAPE_PARAMS
@pytest.mark.parametrize("options, targets", list(CE_CASES.values()), ids=list(CE_CASES))
def test_cross_entropy_matches_torch(options, targets, shape, reduction, dtype):
    z, y, options = make_case(shape, options, targets)
    ours = cr.CrossEntropyLoss(reduction=reduction, **options)
    theirs = torch.nn.CrossEntropyLoss(reduction=reduction, **torch_options(options, dtype))
    assert_loss_parity(ours, theirs, z, y, dtype, terms=z.size)


@DTYPES
@REDUCTIONS
@SHAPE_PARAMS
@pytest.mark.parametrize("options, targets", list(NLL_CASES.values()), ids=list(NLL_CASES))
def test_nll_matches_torch(options, targets, shape, reduction, dtype):
    z, y, options = make_case(shape, options, targets)
    axis = 0 if len(shape) == 1 else 1
    log_p = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
    ours = cr.NLLLoss(reduction=reduction, **options)
    theirs = torch.nn.NLLLoss(reduction=reduction, **torch_options(options, dtype))
    assert_loss_parity(ours, theirs, log_p, y, dtype, terms=z.size)


@REDUCTIONS
@SHAPE_PARAMS
@pytest.mark.parametrize("options, targets", list(CE_CASES.values()), ids=list(CE_CASES))
def test_cross_entropy_backward_matches_finite_differences(options, targets, shape, reduction):
    z, y, options = make_case(shape, options, targets, seed=1)
    loss = cr.CrossEntropyLoss(reduction=reduction, **options)
    if targets == "all_ignored" and reduction == "mean":  # no finite differences of NaN
        assert np.isnan(loss(z, y)) and not np.any(loss.backward())
        return
    assert_finite_differences(loss, z, y, seed=2)


@REDUCTIONS
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 2, 2)], ids=str)
@pytest.mark.parametrize("options, targets", list(NLL_CASES.values())[:5],
                         ids=list(NLL_CASES)[:5])
def test_nll_backward_matches_finite_differences(options, targets, shape, reduction):
    z, y, options = make_case(shape, options, targets, seed=3)
    assert_finite_differences(cr.NLLLoss(reduction=reduction, **options), z, y, seed=4)


def test_all_ignored_mean_is_nan_with_zero_gradient():
    z = np.random.default_rng(0).standard_normal((3, 4))
    for loss in (cr.CrossEntropyLoss(weight=[1.0, 2, 3, 4], label_smoothing=0.1),
                 cr.NLLLoss(ignore_index=7)):
        y = np.full(3, loss.ignore_index)
        with np.errstate(all="raise"):
            value = loss(z, y)
            grad = loss.backward()
        assert np.isnan(value) and np.array_equal(grad, np.zeros_like(z)), (loss, value, grad)


@REDUCTIONS
def test_nll_ignores_rows_whose_log_probabilities_are_minus_inf(reduction):
    """An ignored row costs 0 even where its input is -inf (a log-softmax of -inf logits)."""
    x = np.array([[-0.5, -1.0, -2.0], [-np.inf, 0.0, -np.inf], [-1.5, -0.3, -2.5]])
    y = np.array([1, -100, 2])
    ours = cr.NLLLoss(reduction=reduction)
    theirs = torch.nn.NLLLoss(reduction=reduction)
    assert_loss_parity(ours, theirs, x, y, np.float64, terms=x.size)
    assert np.all(np.isfinite(ours(x, y)))


def test_weighted_mean_divides_by_the_kept_weights():
    """Two rows, one ignored: the mean is the kept row's loss, whatever its weight."""
    z = np.array([[2.0, 0.0], [0.0, 1.0]])
    y = np.array([0, -100])
    value = cr.CrossEntropyLoss(weight=[5.0, 1.0])(z, y)
    assert value == pytest.approx(np.log1p(np.exp(-2.0)), rel=1e-15)


def test_integer_labels_and_integer_valued_float_labels_agree():
    z, y, _ = make_case((4, 3), {}, "index", seed=3)
    assert cr.CrossEntropyLoss()(z, y) == cr.CrossEntropyLoss()(z, y.astype(np.float64))


# ----------------------------------------------------------------------------- extreme logits
EXTREME = np.array([[1000.0, -1000.0, 0.0],
                    [-1000.0, 1000.0, 1000.0],
                    [-1000.0, -1000.0, -1000.0],
                    [1000.0, 0.0, -1000.0]])


@DTYPES
@pytest.mark.parametrize("options, y", [
    ({}, np.array([1, 2, 0, 0])),
    ({"label_smoothing": 0.1}, np.array([1, 2, 0, 0])),
    ({"weight": np.array([0.5, 2.0, 1.0]), "label_smoothing": 0.2}, np.array([1, -100, 0, 2])),
    ({"label_smoothing": 0.1}, np.array([[0.0, 1, 0], [0.5, 0.5, 0], [1, 0, 0], [0.2, 0.3, 0.5]])),
], ids=["plain", "smoothing", "weight_ignore_smoothing", "prob"])
@REDUCTIONS
def test_cross_entropy_of_huge_logits_is_finite_and_matches_torch(options, y, reduction, dtype):
    ours = cr.CrossEntropyLoss(reduction=reduction, **options)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = ours(EXTREME.astype(dtype), y)
        grad = ours.backward(np.ones(np.shape(value), dtype) if reduction == "none" else None)
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    theirs = torch.nn.CrossEntropyLoss(reduction=reduction, **torch_options(options, dtype))
    assert_loss_parity(ours, theirs, EXTREME, y, dtype, terms=EXTREME.size)


def test_cross_entropy_of_huge_logits_by_hand():
    value = cr.CrossEntropyLoss()(EXTREME, np.array([1, 2, 0, 0]))
    # rows: 1000 - (-1000) = 2000 (all mass on a wrong class), log 2 (a tie of two),
    # log 3 (a tie of three), 0 (certain and right)
    assert value == pytest.approx((2000 + np.log(2) + np.log(3) + 0) / 4, rel=1e-12)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("labels, error, needles", [
    (np.array([0, 3, 1]), ValueError, ["CrossEntropyLoss", "[0, 3)", "[0, 3]"]),
    (np.array([0, -1, 2]), ValueError, ["CrossEntropyLoss", "[0, 3)", "[-1, 2]", "-100"]),
    (np.array([[0], [1], [2]]), ValueError, ["CrossEntropyLoss", "(3,)", "(3, 1)"]),
    (np.array([0, 1]), ValueError, ["CrossEntropyLoss", "(3,)", "(2,)", "(3, 3)"]),
    (np.array([0.0, 1.5, 2.0]), TypeError, ["CrossEntropyLoss", "integer", "float64"]),
    (np.array([0.0, np.nan, 2.0]), TypeError, ["CrossEntropyLoss", "integer", "float64"]),
    (np.array(["a", "b", "c"]), TypeError, ["CrossEntropyLoss", "integer"]),
    (np.ones((3, 3), np.int64), TypeError, ["CrossEntropyLoss", "probabilities", "int64"]),
], ids=["too_large", "negative", "column", "too_few", "fractional", "nan", "strings",
        "integer_probabilities"])
def test_cross_entropy_bad_labels_raise_clearly(labels, error, needles):
    loss = cr.CrossEntropyLoss()
    with pytest.raises(error) as info:
        loss(np.zeros((3, 3)), labels)
    for needle in needles:
        assert needle in str(info.value), f"{needle!r} not in {info.value}"
    with pytest.raises(RuntimeError):
        loss.backward()  # a refused forward leaves nothing to differentiate


@pytest.mark.parametrize("make", [cr.CrossEntropyLoss, cr.NLLLoss])
def test_ignore_index_may_lie_outside_the_classes_but_others_may_not(make):
    z = np.zeros((2, 3, 2))
    make(ignore_index=-1)(z, np.array([[0, -1], [2, -1]]))
    with pytest.raises(ValueError, match=rf"{make.__name__}.*\[0, 3\).*ignore_index=-1.*"
                                         r"\[-100, 2\]"):
        make(ignore_index=-1)(z, np.array([[0, -100], [2, -1]]))


@pytest.mark.parametrize("make", [cr.CrossEntropyLoss, cr.NLLLoss])
def test_spatial_target_shape_is_checked(make):
    with pytest.raises(ValueError, match=rf"{make.__name__}.*\(2, 4\).*per position.*"
                                         r"\(2, 3, 4\).*got shape \(2,\)"):
        make()(np.zeros((2, 3, 4)), np.zeros(2, np.int64))


@pytest.mark.parametrize("make", [cr.CrossEntropyLoss, cr.NLLLoss])
def test_weight_of_the_wrong_length_or_rank_raises(make):
    with pytest.raises(ValueError, match=rf"{make.__name__}.*weight.*3 classes.*\(4,\)"):
        make(weight=np.ones(4))(np.zeros((2, 3)), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=rf"{make.__name__}.*weight.*1-D.*\(2, 2\)"):
        make(weight=np.ones((2, 2)))
    with pytest.raises(TypeError, match=rf"{make.__name__}.*weight.*numbers.*<U1"):
        make(weight=np.array(["a", "b"]))


@pytest.mark.parametrize("make", [cr.CrossEntropyLoss, cr.NLLLoss])
def test_logits_must_be_float_and_not_scalar(make):
    with pytest.raises(ValueError, match=rf"{make.__name__}.*\(C,\), \(N, C\).*scalar"):
        make()(np.float64(1.0), np.int64(0))
    with pytest.raises(TypeError, match=rf"{make.__name__}.*floating.*int64"):
        make()(np.zeros((2, 3), np.int64), np.zeros(2, np.int64))
    with pytest.raises(TypeError, match=rf"{make.__name__}.*ignore_index.*int.*0.5"):
        make(ignore_index=0.5)


def test_probability_targets_refuse_a_non_negative_ignore_index():
    with pytest.raises(ValueError, match=r"CrossEntropyLoss.*ignore_index.*probability.*got "
                                         r"ignore_index=0"):
        cr.CrossEntropyLoss(ignore_index=0)(np.zeros((2, 3)), np.full((2, 3), 1 / 3))


def test_nll_refuses_probability_targets():
    with pytest.raises(ValueError, match=r"NLLLoss.*\(2,\).*\(2, 3\)"):
        cr.NLLLoss()(np.zeros((2, 3)), np.full((2, 3), 1 / 3))


@pytest.mark.parametrize("smoothing", [-0.1, 1.5])
def test_cross_entropy_label_smoothing_out_of_range(smoothing):
    with pytest.raises(ValueError, match=r"CrossEntropyLoss.*label_smoothing.*\[0, 1\]"):
        cr.CrossEntropyLoss(label_smoothing=smoothing)


def test_repr_shows_the_options():
    assert repr(cr.CrossEntropyLoss()) == "CrossEntropyLoss(reduction='mean', label_smoothing=0.0)"
    assert repr(cr.NLLLoss(weight=[1, 2], ignore_index=0, reduction="none")) == \
        "NLLLoss(reduction='none', weight=[1.0, 2.0], ignore_index=0)"


def test_nll_of_log_softmax_is_cross_entropy():
    z, y, options = make_case((2, 4, 3), {"weight": True}, "some_ignored", seed=5)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    ce, nll = cr.CrossEntropyLoss(**options), cr.NLLLoss(**options)
    assert ce(z, y) == pytest.approx(nll(log_p, y), rel=1e-14)
    dz = ce.backward()
    dlogp = nll.backward()
    p = np.exp(log_p)
    # chain rule through log-softmax: dz = dlogp - p * sum_c dlogp
    assert rel_error(dz, dlogp - p * dlogp.sum(axis=1, keepdims=True)) < 1e-14
