"""Adadelta: step sizes from running averages of squared gradients and squared updates."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from chainrule.optim.optimizer import (
    Optimizer, ParamsT, check_nonnegative, check_range, ema_square_, hyper_floats,
    prepared_gradient,
)


class Adadelta(Optimizer):
    """Adadelta (Zeiler, 2012) with PyTorch's update rule (``torch.optim.Adadelta``).

    For each parameter ``p`` with gradient ``g = p.grad``; ``v = u = 0`` at first; on
    every step::

        if maximize:  g = -g
        if weight_decay != 0:  g = g + weight_decay * p        # L2, coupled
        v = rho * v + (1 - rho) * g * g                        # square_avg
        delta = sqrt(u + eps) / sqrt(v + eps) * g
        u = rho * u + (1 - rho) * delta * delta                # acc_delta
        p = p - lr * delta

    The ratio of the two root-mean-squares carries the units of ``p``, so ``lr`` is
    a plain multiplier (1.0, its default, is Zeiler's method as published).

    Args:
        params: Parameters or parameter-group dicts (see ``Optimizer``).
        lr: scales ``delta`` before it is applied, >= 0.
        rho: decay rate of both running averages, in [0, 1].
        eps: added inside both square roots, >= 0.
        weight_decay: L2 penalty coefficient, >= 0 (added to the gradient).
        maximize: maximize the objective (step along ``+grad``), keyword only.

    State per parameter: ``"step"`` (int), ``"square_avg"`` (v) and ``"acc_delta"``
    (u), the last two of the parameter's shape.
    """

    _scalar_state = ("step",)
    _torch_group_extras = {"capturable": False, "foreach": None, "differentiable": False}

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _validate(self, hyper: Mapping[str, Any]) -> None:
        check_nonnegative(self._name, hyper, "lr")
        check_range(self._name, "rho", "rho value", hyper["rho"], 0.0, 1.0, high_inclusive=True)
        check_nonnegative(self._name, hyper, "eps", "weight_decay")

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one update to every parameter (in place, so ``p.data`` stays the same array)."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, rho, eps = hyper_floats(group, "lr", "rho", "eps")
            for p in group["params"]:
                state = self._state_for_step(p, "square_avg", "acc_delta")
                square_avg, acc_delta = state["square_avg"], state["acc_delta"]
                grad = prepared_gradient(p, group)

                ema_square_(square_avg, grad, rho)
                std = np.sqrt(square_avg + eps)
                delta = np.sqrt(acc_delta + eps)
                delta /= std
                delta *= grad
                ema_square_(acc_delta, delta, rho)
                p.data -= lr * delta
        return loss
