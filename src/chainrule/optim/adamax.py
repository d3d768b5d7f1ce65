"""Adamax: Adam with the infinity norm of past gradients in place of the second moment."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from chainrule.optim.adam import _AdamFamily
from chainrule.optim.optimizer import ParamsT, hyper_floats, lerp_, prepared_gradient


class Adamax(_AdamFamily):
    """Adamax (Kingma & Ba, 2014, section 7) with PyTorch's update rule
    (``torch.optim.Adamax``).

    For each parameter ``p`` with gradient ``g = p.grad``; ``m = u = 0`` at first; on
    step ``t = 1, 2, ...``::

        if maximize:  g = -g
        if weight_decay != 0:  g = g + weight_decay * p        # L2, coupled
        m = m + (1 - beta1) * (g - m)                          # = beta1*m + (1-beta1)*g
        u = max(beta2 * u, |g| + eps)                          # elementwise
        p = p - (lr / (1 - beta1 ** t)) * m / u

    ``u`` is an exponentially decaying maximum of ``|g|``, so it needs no bias
    correction; eps sits inside the maximum (torch's choice), not in a denominator.

    Args:
        params: Parameters or parameter-group dicts (see ``Optimizer``).
        lr: learning rate, >= 0.
        betas: ``(beta1, beta2)``, each in [0, 1): decay rates of ``m`` and ``u``.
        eps: the floor of ``u``, >= 0.
        weight_decay: L2 penalty coefficient, >= 0 (added to the gradient).
        maximize: maximize the objective (step along ``+grad``), keyword only.

    State per parameter: ``"step"`` (int), ``"exp_avg"`` (m) and ``"exp_inf"`` (u).
    """

    _torch_group_extras = {"foreach": None, "differentiable": False, "capturable": False}

    def __init__(
        self,
        params: ParamsT,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, maximize=maximize)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one update to every parameter (in place, so ``p.data`` stays the same array)."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, beta1, beta2, eps = hyper_floats(group, "lr", "betas", "eps")
            for p in group["params"]:
                state = self._state_for_step(p, "exp_avg", "exp_inf")
                exp_avg, exp_inf = state["exp_avg"], state["exp_inf"]
                grad = prepared_gradient(p, group)

                lerp_(exp_avg, grad, 1 - beta1)
                exp_inf *= beta2
                norm = np.abs(grad)
                norm += eps
                np.maximum(exp_inf, norm, out=exp_inf)

                clr = lr / (1 - beta1 ** state["step"])
                p.data -= clr * (exp_avg / exp_inf)
        return loss
