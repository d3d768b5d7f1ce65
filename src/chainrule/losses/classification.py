"""Multi-class losses: CrossEntropyLoss (from logits) and NLLLoss (from log-probabilities).

Both read the class axis as axis 1 of ``(N, C)`` or ``(N, C, d1, d2, ...)`` (one
classification per position, e.g. per pixel of ``(N, C, H, W)``), or axis 0 of an
unbatched ``(C,)``. Internally the classes are moved last and the positions flattened
into M = N * d1 * d2 * ... rows, so every formula below is over rows ``m`` of a
``(M, C)`` array, without a loop over the batch or the pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Loss, as_weight, weight_repr


def _rows(x: np.ndarray) -> np.ndarray:
    """(C,) -> (1, C); (N, C, d1, ...) -> (N * d1 * ..., C), classes last."""
    if x.ndim <= 2:
        return x.reshape(-1, x.shape[-1])                           # (M, C), a view
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])           # (M, C)


def _unrows(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of ``_rows``: (M, C) back to ``shape``."""
    if len(shape) <= 2:
        return rows.reshape(shape)
    moved = rows.reshape((shape[0], *shape[2:], shape[1]))        # (N, d1, ..., C)
    return np.moveaxis(moved, -1, 1)


def _position_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one value per position: (C,) -> (); (N, C, d...) -> (N, d...)."""
    return shape[:1] + shape[2:] if len(shape) > 1 else ()


class _ClassLoss(Loss):
    """What CrossEntropyLoss and NLLLoss share: class weights, ignore_index and the
    checks of class-index targets."""

    _input_name = "input"

    def __init__(self, weight: Any = None, ignore_index: int = -100,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.weight = as_weight(type(self).__name__, "weight", weight, one_dim=True)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise TypeError(f"{type(self).__name__}: ignore_index must be an int, got "
                            f"{ignore_index!r}")
        self.ignore_index = int(ignore_index)

    def _extra_repr(self) -> str:
        ignore = "" if self.ignore_index == -100 else f", ignore_index={self.ignore_index}"
        return weight_repr("weight", self.weight) + ignore

    def _check_input(self, pred: np.ndarray) -> int:
        if pred.ndim == 0:
            raise ValueError(f"{self!r}: expected {self._input_name} of shape (C,), (N, C) or "
                             f"(N, C, d1, ...), got a scalar")
        c = pred.shape[0] if pred.ndim == 1 else pred.shape[1]
        if self.weight is not None and self.weight.shape != (c,):
            raise ValueError(f"{self!r}: weight must hold one value per class ({c} classes in "
                             f"{self._input_name} {pred.shape}), got shape {self.weight.shape}")
        return c

    def _class_weights(self, dtype: np.dtype) -> np.ndarray | None:
        return None if self.weight is None else self.weight.astype(dtype)

    def _check_indices(self, pred: np.ndarray, target: np.ndarray, c: int,
                       also: str = "") -> np.ndarray:
        """Class-index targets of the position shape, as int64 in [0, C) or ignore_index."""
        expected = _position_shape(pred.shape)
        if target.shape != expected:
            where = ("one class index for the unbatched " if pred.ndim == 1 else
                     "one class index per row of " if pred.ndim == 2 else
                     "one class index per position of ")
            raise ValueError(f"{self!r}: expected targets of shape {expected} ({where}"
                             f"{self._input_name} {pred.shape}){also}, got shape {target.shape}")
        if not np.issubdtype(target.dtype, np.integer):
            # Integer-valued float labels (as loaded from a CSV, say) are accepted.
            if (target.size and np.issubdtype(target.dtype, np.floating) and
                    np.all(np.isfinite(target)) and np.all(target == np.round(target))):
                target = target.astype(np.int64)
            else:
                raise TypeError(f"{self!r}: targets must be integer class indices, got dtype "
                                f"{target.dtype}")
        target = target.astype(np.int64, copy=False)
        if not target.size or (target.min() >= 0 and target.max() < c):
            return target
        kept = target[target != self.ignore_index]  # ignore_index may lie outside [0, C)
        if kept.size and (kept.min() < 0 or kept.max() >= c):
            ignore = f" (or ignore_index={self.ignore_index})"
            raise ValueError(f"{self!r}: targets must be class indices in [0, {c}){ignore}, "
                             f"got values in [{kept.min()}, {kept.max()}]")
        return target

    def _picked(self, t: np.ndarray, dtype: np.dtype
                ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
        """For flat targets t (M,): ``keep`` (M,) bool, None when no row is ignored;
        safe class indices (M,); the weight of each row (M,), w[t] for kept rows and 0
        for ignored ones, None when every row has weight 1 (no weight, none ignored)."""
        keep = t != self.ignore_index
        w = self._class_weights(dtype)
        if keep.all():
            return None, t, (w[t] if w is not None else None)
        safe = np.where(keep, t, 0)
        return keep, safe, (w[safe] if w is not None else np.ones(t.shape, dtype)) * keep


class CrossEntropyLoss(_ClassLoss):
    """Cross-entropy from raw logits, with a log-softmax that cannot overflow
    (``torch.nn.CrossEntropyLoss``).

    ``log p = z - max(z) - log(sum(exp(z - max(z))))`` over the class axis.

    Class-index targets y (with class weights w, all 1 without ``weight``, smoothing ε
    over C classes); a row whose target is ``ignore_index`` has loss 0 and gradient 0::

        loss_m = (1 - ε) * w[y_m] * (-log p_m[y_m]) + ε / C * sum_c w_c * (-log p_mc)
        mean   = sum_m loss_m / sum of w[y_m] over the kept rows   (NaN when none is kept)
        dL/dz_m = (1 - ε) w[y_m] (p_m - onehot(y_m)) + ε / C (p_m * sum_c w_c - w)

    Class-probability targets q (float, of the logits' shape; ``q <- (1 - ε) q + ε / C``
    with smoothing; ``ignore_index`` must stay negative)::

        loss_m = -sum_c w_c q_mc log p_mc,    mean = sum_m loss_m / M
        dL/dz_m = p_m * sum_c w_c q_mc - w * q_m

    Shape:
        Logits (N, C), (N, C, d1, d2, ...) or (C,); class-index targets (N,), (N, d1, d2, ...)
        or () of integers; probability targets of the logits' shape; the losses of
        ``reduction="none"`` have the class-index targets' shape.

    Backward:
        ``backward()`` returns dL/dlogits: per row, ``dL/dz_m`` of the formulas above (for
        class-index targets without smoothing and weights, the familiar ``p_m - onehot(y_m)``,
        ``p`` the softmax kept by forward), 0 for ignored rows, times ``grad`` (1 by default)
        and divided by the mean's divisor for "mean"; with "none", multiplied element by element
        by the upstream ``grad``.

    Args:
        weight: a rescaling weight per class, shape (C,).
        ignore_index: a target value whose rows count neither in the loss nor the mean.
        reduction: "mean", "sum" or "none".
        label_smoothing: ε in [0, 1].
    """

    _input_name = "logits"

    def __init__(self, weight: Any = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight, ignore_index, reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got "
                             f"{label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def _extra_repr(self) -> str:
        return f", label_smoothing={self.label_smoothing}" + super()._extra_repr()

    def _losses(self, pred: np.ndarray, target: Any) -> tuple[np.ndarray, float, Any]:
        c = self._check_input(pred)
        target = np.asarray(target)
        dtype = pred.dtype
        z = _rows(pred)                                             # (M, C)
        shifted = z - z.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (M, C)
        eps = dtype.type(self.label_smoothing)
        w = self._class_weights(dtype)
        out_shape = _position_shape(pred.shape)
        if target.shape == pred.shape:
            return self._prob_losses(pred, target, log_p, w, c, eps, out_shape)
        target = self._check_indices(pred, target, c, also=(
            f" or class probabilities of the logits' shape {pred.shape}"))
        keep, safe, w_t = self._picked(target.reshape(-1), dtype)
        m = len(safe)
        losses = -log_p[np.arange(m), safe]                         # (M,)
        if w_t is not None:
            losses *= w_t
        if self.label_smoothing:
            smooth = -(log_p @ w if w is not None else log_p.sum(axis=1))
            losses = (1 - eps) * losses + (eps / c) * smooth
            if keep is not None:
                losses[~keep] = 0
        cache = ("index", log_p, keep, safe, w_t, w, pred.shape)
        return losses.reshape(out_shape), (m if w_t is None else w_t.sum()), cache

    def _prob_losses(self, pred: np.ndarray, target: np.ndarray, log_p: np.ndarray,
                     w: np.ndarray | None, c: int, eps: Any, out_shape: tuple[int, ...]
                     ) -> tuple[np.ndarray, float, Any]:
        if not np.issubdtype(target.dtype, np.floating):
            raise TypeError(f"{self!r}: targets of the logits' shape {pred.shape} are class "
                            f"probabilities and must be floating point, got dtype "
                            f"{target.dtype}")
        if self.ignore_index >= 0:
            raise ValueError(f"{self!r}: ignore_index is not supported for class-probability "
                             f"targets (keep it negative), got ignore_index="
                             f"{self.ignore_index}")
        q = _rows(target.astype(pred.dtype, copy=False))            # (M, C)
        if self.label_smoothing:
            q = q * (1 - eps) + eps / c
        wq = q * w if w is not None else q                          # (M, C)
        losses = -(wq * log_p).sum(axis=1)                          # (M,)
        return losses.reshape(out_shape), len(losses), ("prob", log_p, wq, w, pred.shape)

    def _grad(self, cache: Any, upstream: Any) -> np.ndarray:
        kind, log_p, *rest, shape = cache
        g = np.reshape(upstream, (-1, 1)) if np.ndim(upstream) else upstream  # (M, 1)
        p = np.exp(log_p)                                           # (M, C) softmax
        if kind == "prob":
            wq, w = rest
            grad = p * wq.sum(axis=1, keepdims=True) - wq
            return _unrows(grad * g, shape)
        keep, safe, w_t, w = rest
        m, c = log_p.shape
        eps = log_p.dtype.type(self.label_smoothing)
        # (1 - ε) w[y] (p - onehot(y)) + ε / C (p sum(w) - w), times the upstream,
        # computed in place on p (w_t is None when every w[y] is 1)
        picked = (1 - eps) * (w_t if w_t is not None else 1)        # (M,) or scalar
        if self.label_smoothing:
            p *= np.reshape(picked + (eps / c) * (w.sum() if w is not None else c), (-1, 1))
            p -= (eps / c) * (w if w is not None else 1)
        elif w_t is not None:
            p *= w_t[:, None]
        p[np.arange(m), safe] -= picked
        p *= g
        if keep is not None:
            # Ignored rows get exactly 0, even when the empty mean's scale is inf (torch).
            p[~keep] = 0
        return _unrows(p, shape)


class NLLLoss(_ClassLoss):
    """Negative log-likelihood of log-probabilities (``torch.nn.NLLLoss``); with a
    ``LogSoftmax`` before it, the same as ``CrossEntropyLoss`` on the logits.

    For class-index targets y with class weights w (all 1 without ``weight``); rows
    whose target is ``ignore_index`` have loss 0 and gradient 0::

        loss_m = -w[y_m] * x_m[y_m]
        mean   = sum_m loss_m / sum of w[y_m] over the kept rows   (NaN when none is kept)
        dL/dx_m = -w[y_m] * onehot(y_m)

    Shape:
        Input (N, C), (N, C, d1, d2, ...) or (C,) of log-probabilities; targets (N,), (N, d1,
        d2, ...) or () of integer class indices, also the shape of the losses of
        ``reduction="none"``.

    Backward:
        ``backward()`` returns dL/dinput: ``-w[y_m]`` at each row's target class, 0 elsewhere
        and in ignored rows, times ``grad`` (1 by default) and divided by the mean's divisor for
        "mean"; with "none", multiplied element by element by the upstream ``grad``.

    Args:
        weight: a rescaling weight per class, shape (C,).
        ignore_index: a target value whose rows count neither in the loss nor the mean.
        reduction: "mean", "sum" or "none".
    """

    def _losses(self, pred: np.ndarray, target: Any) -> tuple[np.ndarray, float, Any]:
        c = self._check_input(pred)
        target = self._check_indices(pred, np.asarray(target), c)
        x = _rows(pred)                                             # (M, C)
        keep, safe, w_t = self._picked(target.reshape(-1), pred.dtype)
        m = len(safe)
        losses = -x[np.arange(m), safe]                             # (M,)
        if w_t is not None:
            losses *= w_t  # a kept row of weight 0 and input -inf is NaN, as in torch
        if keep is not None:
            losses[~keep] = 0  # even where an ignored row's input is -inf
        return (losses.reshape(target.shape), (m if w_t is None else w_t.sum()),
                (keep, safe, w_t, x.shape, pred.shape, pred.dtype))

    def _grad(self, cache: Any, upstream: Any) -> np.ndarray:
        keep, safe, w_t, rows_shape, shape, dtype = cache
        g = np.reshape(upstream, -1) if np.ndim(upstream) else upstream  # (M,) or scalar
        picked = np.empty(len(safe), dtype)                         # (M,)
        picked[...] = -(w_t * g if w_t is not None else g)
        if keep is not None:
            picked[~keep] = 0  # even when the empty mean's scale is inf
        grad = np.zeros(rows_shape, dtype)                          # (M, C)
        grad[np.arange(len(safe)), safe] = picked
        return _unrows(grad, shape)
