"""Binary (and multi-label) losses: BCELoss on probabilities, BCEWithLogitsLoss on logits."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Loss, as_weight, weight_repr

# torch clamps each log of BCELoss to >= -100 so that p = 0 or 1 gives a finite loss,
# and divides its gradient by max(p (1 - p), 1e-12), a float32 constant in torch (in
# float64 it is 9.99999996e-13: the clamped gradients then agree to the last bit).
_LOG_FLOOR = -100.0
_GRAD_EPS = float(np.float32(1e-12))


class BCELoss(Loss):
    """Binary cross-entropy of probabilities (``torch.nn.BCELoss``)::

        loss = -w * (y * max(log p, -100) + (1 - y) * max(log(1 - p), -100))
        dL/dp = w * (p - y) / max(p (1 - p), 1e-12)   (torch's float32 1e-12)

    The clamps are torch's: p = 0 or 1 gives a loss of at most 100 per element and a
    large but finite gradient. ``mean`` divides by the number of elements.

    Shape:
        p and y of any one shape, with values in [0, 1] (checked, as torch does); ``weight``
        broadcasts to that shape; the losses of "none" have it.

    Backward:
        ``backward()`` returns ``dL/dp = w * (p - y) / max(p (1 - p), 1e-12)`` per element,
        times ``grad`` (1 by default) and divided by the mean's divisor for "mean"; with "none",
        multiplied element by element by the upstream ``grad``.

    Args:
        weight: a rescaling weight of each element, broadcast to the input's shape.
        reduction: "mean", "sum" or "none".
    """

    def __init__(self, weight: Any = None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.weight = as_weight("BCELoss", "weight", weight)

    def _extra_repr(self) -> str:
        return weight_repr("weight", self.weight)

    def _losses(self, pred: np.ndarray, target: Any) -> tuple[np.ndarray, float, Any]:
        y = self._same_shape_target(pred, target)
        w = self._broadcast_weight("weight", self.weight, pred)
        for name, a in (("input", pred), ("target", y)):
            if not np.all((a >= 0) & (a <= 1)):   # also refuses NaN, as torch does
                bad = a[~((a >= 0) & (a <= 1))]
                raise ValueError(f"{self!r}: all elements of {name} must be probabilities in "
                                 f"[0, 1], got {bad.size} outside (e.g. {float(bad.flat[0])})")
        one = pred.dtype.type(1)
        log_p = np.maximum(np.log(pred), _LOG_FLOOR)
        log_1mp = np.maximum(np.log(one - pred), _LOG_FLOOR)
        losses = (y - one) * log_1mp - y * log_p
        if w is not None:
            losses = losses * w
        return losses, losses.size, (pred, y, w)

    def _grad(self, cache: Any, upstream: Any) -> np.ndarray:
        p, y, w = cache
        one = p.dtype.type(1)
        grad = (p - y) / np.maximum((one - p) * p, p.dtype.type(_GRAD_EPS)) * upstream
        return grad * w if w is not None else grad


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy of logits, a sigmoid and ``BCELoss`` in one stable step
    (``torch.nn.BCEWithLogitsLoss``). With ``log σ(x) = min(x, 0) - log1p(exp(-|x|))``
    (no overflow at any x) and ``l = 1 + (pos_weight - 1) * y``::

        loss = w * ((1 - y) * x - l * log σ(x))
        dL/dx = w * (l * σ(x) - pos_weight * y)      (= w * (σ(x) - y) without pos_weight)

    ``mean`` divides by the number of elements.

    Shape:
        x and y of any one shape; ``weight`` and ``pos_weight`` broadcast to it (``pos_weight``
        of shape (C,) weighs the positives of each of C labels along the last axis; use (C, 1,
        1) for the channels of (N, C, H, W)); the losses of "none" have x's shape.

    Backward:
        ``backward()`` returns ``dL/dx = w * (l * sigmoid(x) - pos_weight * y)`` per element
        (``w * (sigmoid(x) - y)`` without ``pos_weight``), times ``grad`` (1 by default) and
        divided by the mean's divisor for "mean"; with "none", multiplied element by element by
        the upstream ``grad``.

    Args:
        weight: a rescaling weight of each element, broadcast to the input's shape.
        reduction: "mean", "sum" or "none".
        pos_weight: a weight of the positive examples, broadcast to the input's shape.
    """

    def __init__(self, weight: Any = None, reduction: str = "mean",
                 pos_weight: Any = None) -> None:
        super().__init__(reduction)
        self.weight = as_weight("BCEWithLogitsLoss", "weight", weight)
        self.pos_weight = as_weight("BCEWithLogitsLoss", "pos_weight", pos_weight)

    def _extra_repr(self) -> str:
        return weight_repr("weight", self.weight) + weight_repr("pos_weight", self.pos_weight)

    def _losses(self, pred: np.ndarray, target: Any) -> tuple[np.ndarray, float, Any]:
        y = self._same_shape_target(pred, target)
        w = self._broadcast_weight("weight", self.weight, pred)
        pw = self._broadcast_weight("pos_weight", self.pos_weight, pred)
        one = pred.dtype.type(1)
        log_sigmoid = np.minimum(pred, 0) - np.log1p(np.exp(-np.abs(pred)))
        if pw is not None:
            log_weight = (pw - one) * y + one
            losses = (one - y) * pred - log_weight * log_sigmoid
        else:
            losses = (one - y) * pred - log_sigmoid
        if w is not None:
            losses = losses * w
        return losses, losses.size, (pred, y, w, pw)

    def _grad(self, cache: Any, upstream: Any) -> np.ndarray:
        x, y, w, pw = cache
        one = x.dtype.type(1)
        e = np.exp(-np.abs(x))                                      # in (0, 1]: no overflow
        sigmoid = np.where(x >= 0, one / (one + e), e / (one + e))
        if pw is not None:
            t = pw * y
            grad = (t + one - y) * sigmoid - t
        else:
            grad = sigmoid - y
        grad = grad * upstream
        return grad * w if w is not None else grad
