"""What the loss tests share: parity of a chainrule loss with its torch.nn twin (value and
dL/dpred, every reduction), central finite differences of dL/dpred, and the record of
the worst parity error per loss class and dtype."""

from __future__ import annotations

from typing import Any

import numpy as np

from tests.helpers import float32_tolerance, rel_error

# (loss class name, dtype name) -> (worst relative error, case): what the parity tests
# measured, read by the final report and by tests/test_losses.py's coverage test.
WORST: dict[tuple[str, str], tuple[float, str]] = {}


def tolerance(dtype: Any, terms: int) -> float:
    """1e-9 for float64; for float32 the rounding bound of ``terms``-term sums."""
    return 1e-9 if np.dtype(dtype) == np.float64 else float32_tolerance(terms)


def nan_aware_error(ours: Any, theirs: Any) -> float:
    """``rel_error`` over the entries that are not NaN in either; NaNs must coincide."""
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(theirs, dtype=np.float64)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    assert np.array_equal(np.isnan(a), np.isnan(b)), f"NaNs differ:\n{a}\n{b}"
    finite = ~np.isnan(a)
    return rel_error(a[finite], b[finite])


def torch_tensor(value: Any, dtype: Any):
    """A float array as a torch tensor of ``dtype``; an integer array as int64."""
    import torch

    value = np.asarray(value)
    if np.issubdtype(value.dtype, np.floating):
        return torch.tensor(value.astype(dtype))
    return torch.tensor(value.astype(np.int64))


def assert_loss_parity(ours, theirs, pred: np.ndarray, target: Any, dtype: Any, terms: int,
                       seed: int = 0) -> dict[str, float]:
    """The value and dL/dpred of ``ours`` against ``theirs`` (a torch module built for
    ``dtype``), on ``pred`` cast to ``dtype`` (a float ``target`` too). With
    ``reduction="none"`` both get the same random upstream gradient.

    float64 within 1e-9 relative; float32 within ``float32_tolerance(terms)``, ``terms``
    the most terms any sum of the loss adds. Returns the errors; NaNs must coincide."""
    import torch

    dtype = np.dtype(dtype)
    pred = np.asarray(pred).astype(dtype)
    target = np.asarray(target)
    if np.issubdtype(target.dtype, np.floating):
        target = target.astype(dtype)
    pt = torch.tensor(pred, requires_grad=True)
    ref = theirs(pt, torch_tensor(target, dtype))
    upstream = None
    if ours.reduction == "none":
        upstream = np.random.default_rng(seed).standard_normal(tuple(ref.shape)).astype(dtype)
        ref.backward(torch.tensor(upstream))
    else:
        ref.backward()
    ref_grad = pt.grad.numpy()

    value = ours(pred, target.copy())
    grad = ours.backward(upstream)
    if ours.reduction == "none":
        assert isinstance(value, np.ndarray) and value.dtype == dtype, type(value)
    else:
        assert type(value) is float, type(value)
    assert grad.shape == pred.shape and grad.dtype == dtype, (grad.shape, grad.dtype)
    errors = {"forward": nan_aware_error(value, ref.detach().numpy()),
              "grad": nan_aware_error(grad, ref_grad)}
    key = (type(ours).__name__, dtype.name)
    worst = max(errors.values())
    if key not in WORST or worst > WORST[key][0]:
        WORST[key] = (worst, f"{ours!r} on {pred.shape}")
    tol = tolerance(dtype, terms)
    assert all(e <= tol for e in errors.values()), \
        f"{ours!r} differs from torch beyond {tol:.2e} ({dtype}): {errors}"
    return errors


def numeric_grad(loss, pred: np.ndarray, target: Any, upstream: np.ndarray | None,
                 eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of ``sum(upstream * loss(pred, target))`` (the loss
    itself for "mean" and "sum") with respect to every prediction, float64."""
    pred = np.array(pred, dtype=np.float64)
    grad = np.empty_like(pred)
    flat, out = pred.reshape(-1), grad.reshape(-1)

    def scalar() -> float:
        value = loss(pred, target)
        return float(np.sum(upstream * value)) if upstream is not None else value

    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + eps
        plus = scalar()
        flat[i] = original - eps
        minus = scalar()
        flat[i] = original
        out[i] = (plus - minus) / (2 * eps)
    loss._cache = None
    return grad


def assert_finite_differences(loss, pred: np.ndarray, target: Any, seed: int = 0,
                              tol: float = 1e-7) -> float:
    """dL/dpred of ``loss`` (float64) against central differences, contracted with a
    random upstream gradient for "none"; returns the relative error."""
    pred = np.asarray(pred, dtype=np.float64)
    value = loss(pred, target)
    upstream = None
    if loss.reduction == "none":
        upstream = np.random.default_rng(seed).standard_normal(np.shape(value))
    grad = loss.backward(upstream)
    error = rel_error(grad, numeric_grad(loss, pred, target, upstream))
    assert error < tol, f"{loss!r}: finite-difference relative error {error:.3g}"
    return error
