"""RMSprop: divide the gradient by a running root-mean-square of recent gradients."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from chainrule.optim.optimizer import (
    Optimizer, ParamsT, check_nonnegative, ema_square_, hyper_floats, lerp_, prepared_gradient,
)


class RMSprop(Optimizer):
    """RMSprop (Hinton, lecture 6e) with PyTorch's update rule (``torch.optim.RMSprop``).

    For each parameter ``p`` with gradient ``g = p.grad``; ``v = g_avg = b = 0`` at
    first; on every step::

        if maximize:  g = -g
        if weight_decay != 0:  g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        if centered:
            g_avg = g_avg + (1 - alpha) * (g - g_avg)          # = alpha*g_avg + (1-alpha)*g
            avg = sqrt(v - g_avg * g_avg) + eps                # an estimate of the std
        else:
            avg = sqrt(v) + eps
        if momentum > 0:
            b = momentum * b + g / avg
            p = p - lr * b
        else:
            p = p - lr * g / avg

    Unlike Adam there is no bias correction, so the first steps are large
    (``v`` starts at 0): with alpha = 0.99 the first step is about ``10 * lr * sign(g)``.

    Args:
        params: Parameters or parameter-group dicts (see ``Optimizer``).
        lr: learning rate, >= 0.
        alpha: smoothing constant of the running averages, >= 0.
        eps: added to the denominator for stability, >= 0.
        weight_decay: L2 penalty coefficient, >= 0 (added to the gradient).
        momentum: momentum factor, >= 0.
        centered: normalise by the estimated variance instead of the raw second moment.
        maximize: maximize the objective (step along ``+grad``), keyword only.

    State per parameter: ``"step"`` (int), ``"square_avg"`` (v), and
    ``"momentum_buffer"`` (b) when momentum > 0, ``"grad_avg"`` when centered.
    """

    _scalar_state = ("step",)
    _torch_group_extras = {"capturable": False, "foreach": None, "differentiable": False}

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
            momentum=momentum, centered=centered, maximize=maximize,
        )
        super().__init__(params, defaults)

    def _validate(self, hyper: Mapping[str, Any]) -> None:
        check_nonnegative(self._name, hyper, "lr", "eps", "momentum", "weight_decay", "alpha")

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one update to every parameter (in place, so ``p.data`` stays the same array)."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, alpha, eps, momentum = hyper_floats(group, "lr", "alpha", "eps", "momentum")
            for p in group["params"]:
                state = self._state_for_step(p, "square_avg")
                # Checked on every step, not only at init: torch creates these buffers
                # on the first step only, so a group switched to momentum/centered later
                # would raise KeyError there; starting them at zero is the natural fix.
                if momentum > 0 and "momentum_buffer" not in state:
                    state["momentum_buffer"] = np.zeros_like(p.data)
                if group["centered"] and "grad_avg" not in state:
                    state["grad_avg"] = np.zeros_like(p.data)
                square_avg = state["square_avg"]
                grad = prepared_gradient(p, group)

                ema_square_(square_avg, grad, alpha)

                if group["centered"]:
                    grad_avg = state["grad_avg"]
                    lerp_(grad_avg, grad, 1 - alpha)
                    avg = np.sqrt(square_avg - grad_avg * grad_avg)
                else:
                    avg = np.sqrt(square_avg)
                avg += eps

                if momentum > 0:
                    buf = state["momentum_buffer"]
                    buf *= momentum
                    buf += grad / avg
                    p.data -= lr * buf
                else:
                    p.data -= lr * grad / avg
        return loss
