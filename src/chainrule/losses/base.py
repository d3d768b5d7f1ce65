"""Loss: the reductions, the forward/backward cache and the checks every loss shares.

A concrete loss writes two methods:

- ``_losses(pred, target)`` returns ``(losses, count, cache)``: the unreduced loss of
  every element, the divisor of ``reduction="mean"`` (the element count, or the summed
  class weights of the kept targets for the classification losses) and what the
  gradient needs;
- ``_grad(cache, upstream)`` returns dLoss/dpred, given ``upstream`` = dLoss/d(each
  element's loss): a scalar (``1 / count`` for "mean", 1 for "sum", times the caller's
  scalar gradient) or an array of the losses' shape (``reduction="none"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

REDUCTIONS = ("mean", "sum", "none")


def _quoted(choices: tuple[str, ...]) -> str:
    """('mean', 'sum', 'none') as "'mean', 'sum' or 'none'"."""
    names = [repr(c) for c in choices]
    return ", ".join(names[:-1]) + " or " + names[-1]


class Loss:
    """Base of the losses: ``loss(pred, target)`` then ``loss.backward()``.

    ``reduction="mean"`` or ``"sum"``: calling the loss returns a Python float;
    ``backward(grad=None)`` returns dLoss/dpred (``grad``, a scalar, multiplies it).
    ``reduction="none"``: calling the loss returns the array of per-element losses, and
    ``backward(grad)`` needs the upstream gradient dL/d(losses) of that array's shape.
    Each forward supports one backward.

    Args:
        reduction: ``"mean"`` (the average of the per-element losses), ``"sum"`` or
            ``"none"``.

    Shape:
        ``pred`` and ``target`` as each loss states; the loss is a Python float, or with
        ``"none"`` an array of the per-element losses.

    Backward:
        ``backward(grad=None)`` returns dLoss/dpred, of ``pred``'s shape and dtype: each
        element's ``d loss_i / d pred`` times the reduction's scale (``1 / count`` for
        "mean", 1 for "sum") times ``grad``; with "none", times the upstream
        ``grad[i]`` of each element's loss. A subclass writes the per-element gradient
        (``_grad``).
    """

    reductions: tuple[str, ...] = REDUCTIONS

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in self.reductions:
            raise ValueError(f"{type(self).__name__}: reduction must be "
                             f"{_quoted(self.reductions)}, got {reduction!r}")
        self.reduction = reduction
        self._cache: Any = None

    # ------------------------------------------------------------------ the protocol
    def __call__(self, pred: np.ndarray, target: np.ndarray) -> Any:
        return self.forward(pred, target)

    def forward(self, pred: np.ndarray, target: np.ndarray) -> float | np.ndarray:
        """The loss of ``pred`` against ``target``: a Python float for "mean" and "sum",
        the per-element array (``pred``'s dtype) for "none"."""
        pred = self._as_float(pred)
        self._cache = None
        with np.errstate(divide="ignore", invalid="ignore"):
            losses, count, cache = self._losses(pred, target)
        losses = np.asarray(losses)  # a 0-d input gives NumPy scalars
        if self.reduction == "none":
            self._cache = (cache, pred.dtype, losses.shape, None)
            return losses
        total = losses.sum()
        scale = 1.0
        if self.reduction != "sum":
            # An empty mean (every target ignored, an empty batch) is NaN, as in torch;
            # its gradient scale 1/0 = inf only reaches kept elements (see _grad).
            with np.errstate(divide="ignore", invalid="ignore"):
                total = total / pred.dtype.type(count)
                scale = np.float64(1.0) / np.float64(count)
        self._cache = (cache, pred.dtype, losses.shape, scale)
        return float(total)

    def backward(self, grad: Any = None) -> np.ndarray:
        """dLoss/dpred, of ``pred``'s shape and dtype.

        Args:
            grad: for "mean" and "sum", None (dL/dloss = 1) or a scalar that multiplies
                the gradient; for "none", dL/d(losses), an array of the shape the call
                returned (required).
        """
        cached = self._cached()
        if self.reduction == "none" and grad is None:
            raise ValueError(f"{self!r}: backward() needs the upstream gradient with "
                             "reduction='none': pass backward(grad), grad of the shape of "
                             "the losses the call returned")
        # A refused gradient leaves the cache in place, so a corrected call can follow.
        cache, dtype, shape, scale = cached
        if self.reduction == "none":
            upstream = np.asarray(grad)
            if upstream.shape != shape:
                raise ValueError(f"{self!r}: expected an upstream gradient of shape {shape} "
                                 f"(the losses'), got shape {upstream.shape}")
            upstream = self._float_grad(upstream, dtype)
        else:
            g = 1.0 if grad is None else np.asarray(grad)
            if np.ndim(g) != 0:
                raise ValueError(f"{self!r}: with reduction={self.reduction!r} the loss is a "
                                 f"scalar, so backward(grad) takes a scalar grad; got shape "
                                 f"{np.shape(g)}")
            upstream = dtype.type(scale * self._float_grad(g, np.dtype(np.float64)))
        self._cache = None
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return np.asarray(self._grad(cache, upstream), dtype=dtype)

    def release(self) -> None:
        """Drop what the last call kept for ``backward`` (e.g. the softmax), when no
        backward follows (evaluation, a diagnosis). ``backward`` releases it itself."""
        self._cache = None

    def _losses(self, pred: np.ndarray, target: Any) -> tuple[np.ndarray, float, Any]:
        raise NotImplementedError

    def _grad(self, cache: Any, upstream: Any) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def _cached(self) -> Any:
        """What the last forward kept (``backward`` releases it once it succeeds)."""
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward called before the loss was computed; call "
                               "loss(pred, target) first (each call supports one backward)")
        return self._cache

    def _float_grad(self, grad: Any, dtype: np.dtype) -> np.ndarray:
        grad = np.asarray(grad)
        if not (np.issubdtype(grad.dtype, np.floating) or np.issubdtype(grad.dtype, np.integer)):
            raise TypeError(f"{self!r}: the upstream gradient must be numeric, got dtype "
                            f"{grad.dtype}")
        return grad.astype(dtype, copy=False)

    def _as_float(self, pred: Any) -> np.ndarray:
        pred = np.asarray(pred)
        if not np.issubdtype(pred.dtype, np.floating):
            raise TypeError(f"{self!r}: predictions must be a floating-point array, got dtype "
                            f"{pred.dtype}")
        return pred

    def _same_shape_target(self, pred: np.ndarray, target: Any, what: str = "target"
                           ) -> np.ndarray:
        """``target`` as a float array of ``pred``'s shape and dtype, or a clear error."""
        target = np.asarray(target)
        if target.shape != pred.shape:
            raise ValueError(f"{self!r}: expected {what} of shape {pred.shape} (the "
                             f"prediction's), got shape {target.shape}")
        if not (np.issubdtype(target.dtype, np.floating) or
                np.issubdtype(target.dtype, np.integer) or target.dtype == np.bool_):
            raise TypeError(f"{self!r}: {what} must be numeric, got dtype {target.dtype}")
        return target.astype(pred.dtype, copy=False)

    def _broadcast_weight(self, name: str, weight: np.ndarray | None, pred: np.ndarray
                          ) -> np.ndarray | None:
        """A weight array that must broadcast to ``pred``'s shape without growing it."""
        if weight is None:
            return None
        try:
            grown = np.broadcast_shapes(weight.shape, pred.shape)
        except ValueError:
            grown = None
        if grown != pred.shape:
            raise ValueError(f"{self!r}: {name} of shape {weight.shape} must broadcast to the "
                             f"input's shape {pred.shape}")
        return weight.astype(pred.dtype, copy=False)

    def _extra_repr(self) -> str:
        """The options after ``reduction`` in the repr, e.g. ``", beta=0.5"``."""
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r}{self._extra_repr()})"


def as_weight(owner: str, name: str, weight: Any, one_dim: bool = False) -> np.ndarray | None:
    """A constructor's weight argument as a float64 array (None stays None)."""
    if weight is None:
        return None
    array = np.asarray(weight)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{owner}: {name} must be an array of numbers, got dtype {array.dtype}")
    if one_dim and array.ndim != 1:
        raise ValueError(f"{owner}: {name} must be a 1-D array of one value per class, got "
                         f"shape {array.shape}")
    return array.astype(np.float64)


def weight_repr(name: str, weight: np.ndarray | None) -> str:
    """``", weight=[0.5, 2.0]"`` for a short 1-D weight (6 digits), else its shape."""
    if weight is None:
        return ""
    if weight.ndim == 1 and weight.size <= 8:
        shown = str([float(f"{v:.6g}") for v in weight.tolist()])
    else:
        shown = f"<array {weight.shape}>"
    return f", {name}={shown}"
