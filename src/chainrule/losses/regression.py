"""Regression losses on the difference d = pred - target: MSELoss, L1Loss, SmoothL1Loss,
HuberLoss. Each takes pred and target of one shape (the shape of the losses of
``reduction="none"``); "mean" divides by the number of elements."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Loss


class _DifferenceLoss(Loss):
    """A loss of d = pred - target elementwise; the cache is d."""

    def _diff(self, pred: np.ndarray, target: Any) -> np.ndarray:
        return pred - self._same_shape_target(pred, target)


class MSELoss(_DifferenceLoss):
    """Mean squared error (``torch.nn.MSELoss``)::

        loss = d**2,    dL/dpred = 2 d

    Shape:
        ``pred`` and ``target`` of the same shape.

    Backward:
        ``backward()`` returns ``dL/dpred = 2 * d``, ``d = pred - target``, times ``grad`` (1 by
        default) and divided by the mean's divisor for "mean"; with "none", multiplied element
        by element by the upstream ``grad``.

    Args:
        reduction: "mean", "sum" or "none".
    """

    def _losses(self, pred: np.ndarray, target: Any) -> tuple[np.ndarray, float, Any]:
        d = self._diff(pred, target)
        return d * d, d.size, d

    def _grad(self, d: np.ndarray, upstream: Any) -> np.ndarray:
        return d * (2 * upstream)


class L1Loss(_DifferenceLoss):
    """Mean absolute error (``torch.nn.L1Loss``)::

        loss = |d|,    dL/dpred = sign(d)   (0 at d = 0, as torch)

    Shape:
        ``pred`` and ``target`` of the same shape.

    Backward:
        ``backward()`` returns ``dL/dpred = sign(d)`` (0 at ``d = 0``), times ``grad`` (1 by
        default) and divided by the mean's divisor for "mean"; with "none", multiplied element
        by element by the upstream ``grad``.

    Args:
        reduction: "mean", "sum" or "none".
    """

    def _losses(self, pred: np.ndarray, target: Any) -> tuple[np.ndarray, float, Any]:
        d = self._diff(pred, target)
        return np.abs(d), d.size, d

    def _grad(self, d: np.ndarray, upstream: Any) -> np.ndarray:
        return np.sign(d) * upstream


class SmoothL1Loss(_DifferenceLoss):
    """Smooth L1 (``torch.nn.SmoothL1Loss``): quadratic below ``beta``, linear above::

        loss  = 0.5 d**2 / beta   if |d| < beta,    |d| - 0.5 beta   otherwise
        dL/dpred = d / beta       if |d| < beta,    sign(d)          otherwise

    ``beta = 0`` is ``L1Loss`` (as torch). ``SmoothL1Loss(beta)`` = ``HuberLoss(beta) / beta``.

    Shape:
        ``pred`` and ``target`` of the same shape.

    Backward:
        ``backward()`` returns ``dL/dpred = d / beta`` where ``|d| < beta``, ``sign(d)``
        elsewhere (``sign(d)`` everywhere for ``beta = 0``), times ``grad`` (1 by default) and
        divided by the mean's divisor for "mean"; with "none", multiplied element by element by
        the upstream ``grad``.

    Args:
        reduction: "mean", "sum" or "none".
        beta: the threshold, >= 0.
    """

    def __init__(self, reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__(reduction)
        if not beta >= 0:
            raise ValueError(f"SmoothL1Loss: beta must be >= 0, got {beta!r}")
        self.beta = float(beta)

    def _extra_repr(self) -> str:
        return f", beta={self.beta}"

    def _losses(self, pred: np.ndarray, target: Any) -> tuple[np.ndarray, float, Any]:
        d = self._diff(pred, target)
        z = np.abs(d)
        if self.beta == 0:
            return z, d.size, d
        beta = pred.dtype.type(self.beta)
        half = pred.dtype.type(0.5)
        return np.where(z < beta, half * z * z / beta, z - half * beta), d.size, d

    def _grad(self, d: np.ndarray, upstream: Any) -> np.ndarray:
        if self.beta == 0:
            return np.sign(d) * upstream
        beta = d.dtype.type(self.beta)
        return np.where(np.abs(d) < beta, d / beta, np.sign(d)) * upstream


class HuberLoss(_DifferenceLoss):
    """Huber loss (``torch.nn.HuberLoss``): quadratic below ``delta``, linear above::

        loss  = 0.5 d**2                    if |d| < delta,    else delta (|d| - 0.5 delta)
        dL/dpred = d                        if |d| < delta,    else delta sign(d)

    Shape:
        ``pred`` and ``target`` of the same shape.

    Backward:
        ``backward()`` returns ``dL/dpred = clip(d, -delta, delta)`` (``d`` where
        ``|d| < delta``, ``delta * sign(d)`` elsewhere), times ``grad`` (1 by default) and
        divided by the mean's divisor for "mean"; with "none", multiplied element by element by
        the upstream ``grad``.

    Args:
        reduction: "mean", "sum" or "none".
        delta: the threshold, > 0.
    """

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        if not delta > 0:
            raise ValueError(f"HuberLoss: delta must be > 0, got {delta!r}")
        self.delta = float(delta)

    def _extra_repr(self) -> str:
        return f", delta={self.delta}"

    def _losses(self, pred: np.ndarray, target: Any) -> tuple[np.ndarray, float, Any]:
        d = self._diff(pred, target)
        z = np.abs(d)
        delta = pred.dtype.type(self.delta)
        half = pred.dtype.type(0.5)
        return np.where(z < delta, half * z * z, delta * (z - half * delta)), d.size, d

    def _grad(self, d: np.ndarray, upstream: Any) -> np.ndarray:
        delta = d.dtype.type(self.delta)
        return np.clip(d, -delta, delta) * upstream
