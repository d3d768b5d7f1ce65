"""Losses. ``loss(pred, target)`` returns a Python float and keeps what ``backward()``
needs; ``backward()`` returns dLoss/dpred."""

from __future__ import annotations

from typing import Any

import numpy as np


class Loss:
    """Base of the losses: reduction handling and the forward/backward cache."""

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in ("mean", "sum"):
            raise ValueError(f"{type(self).__name__}: reduction must be 'mean' or 'sum', got "
                             f"{reduction!r}")
        self.reduction = reduction
        self._cache: Any = None

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> float:
        return self.forward(pred, target)

    def forward(self, pred: np.ndarray, target: np.ndarray) -> float:
        raise NotImplementedError

    def backward(self) -> np.ndarray:
        raise NotImplementedError

    def _take_cache(self) -> Any:
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward called before the loss was computed; call "
                               "loss(pred, target) first (each call supports one backward)")
        cache, self._cache = self._cache, None
        return cache

    def _as_float(self, pred: Any) -> np.ndarray:
        pred = np.asarray(pred)
        if not np.issubdtype(pred.dtype, np.floating):
            raise TypeError(f"{self!r}: predictions must be a floating-point array, got dtype "
                            f"{pred.dtype}")
        return pred

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class CrossEntropyLoss(Loss):
    """Cross-entropy from raw logits, with a log-softmax that cannot overflow.

    ``log p = z - max(z) - log(sum(exp(z - max(z))))`` per row; with label smoothing ε
    over C classes the target distribution is ``q = (1 - ε) * onehot(y) + ε / C`` and
    the loss of one sample is ``-sum(q * log p)`` (PyTorch's definition).

    Shape: logits (N, C), target (N,) integer class indices in [0, C).

    Backward: ``dL/dz = softmax(z) - q``, divided by N for ``reduction="mean"``.
    """

    def __init__(self, reduction: str = "mean", label_smoothing: float = 0.0) -> None:
        super().__init__(reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got "
                             f"{label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def __repr__(self) -> str:
        return (f"CrossEntropyLoss(reduction={self.reduction!r}, "
                f"label_smoothing={self.label_smoothing})")

    def _check_target(self, logits: np.ndarray, target: Any) -> np.ndarray:
        target = np.asarray(target)
        if logits.ndim != 2:
            raise ValueError(f"{self!r}: expected logits of shape (N, C), got shape {logits.shape}")
        n, c = logits.shape
        if target.shape != (n,):
            raise ValueError(f"{self!r}: expected targets of shape ({n},) (one class index per "
                             f"row of logits {logits.shape}), got shape {target.shape}")
        if not np.issubdtype(target.dtype, np.integer):
            if target.size and np.issubdtype(target.dtype, np.floating) and \
                    np.all(target == np.round(target)):
                target = target.astype(np.int64)
            else:
                raise TypeError(f"{self!r}: targets must be integer class indices, got dtype "
                                f"{target.dtype}")
        if target.size and (target.min() < 0 or target.max() >= c):
            raise ValueError(f"{self!r}: targets must be class indices in [0, {c}), got values in "
                             f"[{target.min()}, {target.max()}]")
        return target

    def forward(self, pred: np.ndarray, target: np.ndarray) -> float:
        logits = self._as_float(pred)
        target = self._check_target(logits, target)
        n, c = logits.shape
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        log_p = shifted - log_sum                                   # (N, C) log-softmax
        rows = np.arange(n)
        eps = self.label_smoothing
        per_sample = -(1.0 - eps) * log_p[rows, target]
        if eps:
            per_sample = per_sample - eps / c * log_p.sum(axis=1)
        total = per_sample.sum()
        scale = 1.0 / n if self.reduction == "mean" else 1.0
        self._cache = (log_p, target, scale)
        return float(total * scale)

    def backward(self) -> np.ndarray:
        log_p, target, scale = self._take_cache()
        n, c = log_p.shape
        eps = self.label_smoothing
        grad = np.exp(log_p)                                        # softmax
        if eps:
            grad -= log_p.dtype.type(eps / c)
        grad[np.arange(n), target] -= log_p.dtype.type(1.0 - eps)
        grad *= log_p.dtype.type(scale)
        return grad


class MSELoss(Loss):
    """Mean squared error ``sum((pred - target)**2)``, divided by the number of elements
    for ``reduction="mean"``.

    Shape: pred and target of the same shape. Backward: ``dL/dpred = 2 (pred - target)``
    (divided by the element count for "mean")."""

    def forward(self, pred: np.ndarray, target: np.ndarray) -> float:
        pred = self._as_float(pred)
        target = np.asarray(target)
        if target.shape != pred.shape:
            raise ValueError(f"{self!r}: expected target of shape {pred.shape} (the prediction's), "
                             f"got shape {target.shape}")
        diff = pred - target.astype(pred.dtype, copy=False)
        scale = 1.0 / diff.size if self.reduction == "mean" else 1.0
        self._cache = (diff, scale)
        return float(np.sum(diff * diff) * scale)

    def backward(self) -> np.ndarray:
        diff, scale = self._take_cache()
        return diff * diff.dtype.type(2.0 * scale)
