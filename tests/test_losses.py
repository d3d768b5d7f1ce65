"""CrossEntropyLoss and MSELoss: values and gradients against torch and finite
differences, extreme logits, and bad targets."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from tests.helpers import rel_error

torch = pytest.importorskip("torch")

DTYPES = [np.float64, np.float32]
TOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-5}


def numeric_grad(loss_fn, pred: np.ndarray, target, eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar loss with respect to every prediction."""
    pred = pred.astype(np.float64).copy()
    grad = np.empty_like(pred)
    flat, out = pred.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + eps
        plus = loss_fn(pred, target)
        flat[i] = original - eps
        minus = loss_fn(pred, target)
        flat[i] = original
        out[i] = (plus - minus) / (2 * eps)
    loss_fn._cache = None
    return grad


def torch_loss_and_grad(torch_loss, pred: np.ndarray, target) -> tuple[float, np.ndarray]:
    pt = torch.tensor(pred, requires_grad=True)
    value = torch_loss(pt, torch.as_tensor(target))
    value.backward()
    return value.item(), pt.grad.numpy()


# ----------------------------------------------------------------------------- cross-entropy
CE_SHAPES = [(1, 3), (4, 5), (7, 2), (3, 10)]


def logits_and_labels(shape, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) * 2, rng.integers(0, shape[1], shape[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
def test_cross_entropy_matches_torch(shape, reduction, smoothing, dtype):
    z, y = logits_and_labels(shape, seed=1)
    z = z.astype(dtype)
    ours = cr.CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing)
    value = ours(z, y)
    grad = ours.backward()
    ref_value, ref_grad = torch_loss_and_grad(
        torch.nn.CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing), z, y)
    assert isinstance(value, float)
    tol = TOL[np.dtype(dtype)]
    assert abs(value - ref_value) <= tol * max(1.0, abs(ref_value)), (value, ref_value)
    assert grad.dtype == dtype and grad.shape == shape
    assert rel_error(grad, ref_grad) < tol, rel_error(grad, ref_grad)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
def test_cross_entropy_backward_matches_finite_differences(shape, reduction, smoothing):
    z, y = logits_and_labels(shape, seed=2)
    loss = cr.CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing)
    loss(z, y)
    grad = loss.backward()
    err = rel_error(grad, numeric_grad(loss, z, y))
    assert err < 1e-7, f"finite-difference relative error {err:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_of_huge_logits_is_finite_and_matches_torch(smoothing, dtype):
    z = np.array([[1000.0, -1000.0, 0.0],
                  [-1000.0, 1000.0, 1000.0],
                  [-1000.0, -1000.0, -1000.0],
                  [1000.0, 0.0, -1000.0]], dtype=dtype)
    y = np.array([1, 2, 0, 0])
    ours = cr.CrossEntropyLoss(label_smoothing=smoothing)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = ours(z, y)
        grad = ours.backward()
    ref_value, ref_grad = torch_loss_and_grad(
        torch.nn.CrossEntropyLoss(label_smoothing=smoothing), z, y)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert abs(value - ref_value) <= 1e-6 * abs(ref_value), (value, ref_value)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-6, atol=1e-7)
    if smoothing == 0.0:
        # rows: 1000 - (-1000) = 2000 (all mass on a wrong class), log 2 (a tie of two),
        # log 3 (a tie of three), 0 (certain and right)
        assert value == pytest.approx((2000 + np.log(2) + np.log(3) + 0) / 4, rel=1e-6)


def test_cross_entropy_accepts_integer_valued_float_labels():
    z, y = logits_and_labels((4, 3), seed=3)
    a = cr.CrossEntropyLoss()(z, y)
    b = cr.CrossEntropyLoss()(z, y.astype(np.float64))
    assert a == b


@pytest.mark.parametrize("labels, error, needles", [
    (np.array([0, 3, 1]), ValueError, ["CrossEntropyLoss", "[0, 3)", "[0, 3]"]),
    (np.array([0, -1, 2]), ValueError, ["CrossEntropyLoss", "[0, 3)", "[-1, 2]"]),
    (np.array([[0], [1], [2]]), ValueError, ["CrossEntropyLoss", "(3,)", "(3, 1)"]),
    (np.array([0, 1]), ValueError, ["CrossEntropyLoss", "(3,)", "(2,)"]),
    (np.array([0.0, 1.5, 2.0]), TypeError, ["CrossEntropyLoss", "integer", "float64"]),
    (np.array(["a", "b", "c"]), TypeError, ["CrossEntropyLoss", "integer"]),
], ids=["too_large", "negative", "column", "too_few", "fractional", "strings"])
def test_cross_entropy_bad_labels_raise_clearly(labels, error, needles):
    z = np.zeros((3, 3))
    loss = cr.CrossEntropyLoss()
    with pytest.raises(error) as info:
        loss(z, labels)
    for needle in needles:
        assert needle in str(info.value), f"{needle!r} not in {info.value}"
    with pytest.raises(RuntimeError):
        loss.backward()  # a refused forward leaves nothing to differentiate


def test_cross_entropy_needs_two_dimensional_float_logits():
    with pytest.raises(ValueError, match=r"CrossEntropyLoss.*\(N, C\).*\(2, 3, 4\)"):
        cr.CrossEntropyLoss()(np.zeros((2, 3, 4)), np.zeros(2, np.int64))
    with pytest.raises(TypeError, match=r"CrossEntropyLoss.*floating.*int64"):
        cr.CrossEntropyLoss()(np.zeros((2, 3), np.int64), np.zeros(2, np.int64))


@pytest.mark.parametrize("smoothing", [-0.1, 1.5])
def test_cross_entropy_label_smoothing_out_of_range(smoothing):
    with pytest.raises(ValueError, match=r"CrossEntropyLoss.*label_smoothing.*\[0, 1\]"):
        cr.CrossEntropyLoss(label_smoothing=smoothing)


# ----------------------------------------------------------------------------- MSE
MSE_SHAPES = [(1,), (5,), (1, 3), (4, 3), (2, 3, 2, 2), (1, 1, 3, 1)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", MSE_SHAPES, ids=str)
def test_mse_matches_torch(shape, reduction, dtype):
    rng = np.random.default_rng(4)
    pred = rng.standard_normal(shape).astype(dtype)
    target = rng.standard_normal(shape).astype(dtype)
    ours = cr.MSELoss(reduction=reduction)
    value = ours(pred, target)
    grad = ours.backward()
    ref_value, ref_grad = torch_loss_and_grad(torch.nn.MSELoss(reduction=reduction), pred, target)
    tol = TOL[np.dtype(dtype)]
    assert abs(value - ref_value) <= tol * max(1.0, abs(ref_value)), (value, ref_value)
    assert grad.dtype == dtype and grad.shape == shape
    assert rel_error(grad, ref_grad) < tol


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", MSE_SHAPES, ids=str)
def test_mse_backward_matches_finite_differences(shape, reduction):
    rng = np.random.default_rng(5)
    pred, target = rng.standard_normal(shape), rng.standard_normal(shape)
    loss = cr.MSELoss(reduction=reduction)
    loss(pred, target)
    grad = loss.backward()
    err = rel_error(grad, numeric_grad(loss, pred, target))
    assert err < 1e-7, f"finite-difference relative error {err:.3g}"


def test_mse_target_shape_must_match():
    with pytest.raises(ValueError, match=r"MSELoss.*\(4, 1\).*\(4,\)"):
        cr.MSELoss()(np.zeros((4, 1)), np.zeros(4))


def test_mse_value_by_hand():
    assert cr.MSELoss()(np.array([1.0, 2.0]), np.array([0.0, 0.0])) == 2.5
    assert cr.MSELoss(reduction="sum")(np.array([1.0, 2.0]), np.array([0.0, 0.0])) == 5.0


# ----------------------------------------------------------------------------- both
@pytest.mark.parametrize("make", [cr.CrossEntropyLoss, cr.MSELoss])
def test_backward_before_forward_and_twice_raises(make):
    loss = make()
    with pytest.raises(RuntimeError, match=rf"{make.__name__}.*backward.*before"):
        loss.backward()
    target = np.zeros(2, np.int64) if make is cr.CrossEntropyLoss else np.zeros((2, 3))
    loss(np.zeros((2, 3)), target)
    loss.backward()
    with pytest.raises(RuntimeError, match=make.__name__):
        loss.backward()


@pytest.mark.parametrize("reduction", ["none", "average", "MEAN"])
@pytest.mark.parametrize("make", [cr.CrossEntropyLoss, cr.MSELoss])
def test_invalid_reduction_raises(make, reduction):
    pattern = rf"{make.__name__}.*reduction.*'mean' or 'sum'.*{reduction}"
    with pytest.raises(ValueError, match=pattern):
        make(reduction=reduction)
