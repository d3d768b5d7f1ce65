"""KLDivLoss: the Kullback-Leibler divergence of a target distribution from the model's."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Loss


class KLDivLoss(Loss):
    """KL divergence ``KL(target || model)`` with the model given as log-probabilities
    x (``torch.nn.KLDivLoss``), elementwise::

        log_target=False:  loss = xlogy(t, t) - t * x    (0 where t = 0: 0 log 0 = 0)
                           dL/dx = -t
        log_target=True:   loss = exp(t) * (t - x),      dL/dx = -exp(t)

    Reductions: "mean" divides by the number of elements (torch's default, which is
    *not* the divergence of each sample: for that use "batchmean", which divides the
    sum by the batch size x.shape[0] -- the sum for a 0-d input), "sum", "none".

    Shape:
        ``x`` and ``target`` of the same shape, e.g. (N, C) log-probabilities and probabilities over C
        classes; the losses of "none" have that shape.

    Backward:
        ``backward()`` returns ``dL/dx = -target`` (``-exp(target)`` with ``log_target``) per
        element, times ``grad`` and divided by the element count for "mean" or by the batch size
        for "batchmean"; with "none", multiplied element by element by the upstream ``grad``.

    Args:
        reduction: "mean", "batchmean", "sum" or "none".
        log_target: the target is given as log-probabilities.
    """

    reductions = ("mean", "batchmean", "sum", "none")

    def __init__(self, reduction: str = "mean", log_target: bool = False) -> None:
        super().__init__(reduction)
        if not isinstance(log_target, (bool, np.bool_)):
            raise TypeError(f"KLDivLoss: log_target must be a bool, got {log_target!r}")
        self.log_target = bool(log_target)

    def _extra_repr(self) -> str:
        return f", log_target={self.log_target}"

    def _losses(self, pred: np.ndarray, target: Any) -> tuple[np.ndarray, float, Any]:
        t = self._same_shape_target(pred, target)
        if self.log_target:
            weight = np.exp(t)                                      # the target probabilities
            losses = weight * (t - pred)
        else:
            weight = t
            # xlogy(t, t): 0 where t == 0 (a negative t is no probability: NaN, as torch)
            t_log_t = np.where(t == 0, 0, t * np.log(np.where(t == 0, 1, t)))
            losses = t_log_t - t * pred
        if self.reduction == "batchmean":
            count = pred.shape[0] if pred.ndim else 1
        else:
            count = pred.size
        return losses, count, weight

    def _grad(self, weight: np.ndarray, upstream: Any) -> np.ndarray:
        return -weight * upstream
