"""RAdam: Adam whose adaptive step is switched on only once its variance is tractable."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from chainrule.optim.adam import _AdamFamily
from chainrule.optim.optimizer import ParamsT, hyper_floats


class RAdam(_AdamFamily):
    """RAdam (Liu et al., 2020) with PyTorch's update rule (``torch.optim.RAdam``).

    For each parameter ``p`` with gradient ``g = p.grad``; ``m = v = 0`` at first;
    ``rho_inf = 2 / (1 - beta2) - 1``; on step ``t = 1, 2, ...``::

        if maximize:  g = -g
        if weight_decay != 0:
            if decoupled_weight_decay:  p = p * (1 - lr * weight_decay)   # RAdamW
            else:                       g = g + weight_decay * p         # L2, coupled
        m = m + (1 - beta1) * (g - m)                          # = beta1*m + (1-beta1)*g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** t)
        rho_t = rho_inf - 2 * t * beta2 ** t / (1 - beta2 ** t)
        if rho_t > 5:                                          # adaptive step
            l = sqrt(1 - beta2 ** t) / (sqrt(v) + eps)
            r = sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                     / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            p = p - m_hat * lr * l * r
        else:                                                  # SGD with momentum
            p = p - m_hat * lr

    ``rho_t`` is the length of the simple moving average that ``v`` approximates; at
    or below 5 the variance of the adaptive rate is unbounded, so the first steps
    (the first 5 with the default betas) use the bias-corrected momentum alone.

    Args:
        params: Parameters or parameter-group dicts (see ``Optimizer``).
        lr: learning rate, >= 0.
        betas: ``(beta1, beta2)``, each in [0, 1): decay rates of ``m`` and ``v``.
        eps: added to the denominator for stability, >= 0.
        weight_decay: weight decay coefficient, >= 0.
        decoupled_weight_decay: shrink ``p`` directly (as AdamW) instead of adding the
            decay to ``g``.
        maximize: maximize the objective (step along ``+grad``), keyword only.

    State per parameter: ``"step"`` (int), ``"exp_avg"`` (m) and ``"exp_avg_sq"`` (v).
    """

    _torch_group_extras = {"foreach": None, "capturable": False, "differentiable": False}

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay,
                         decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one update to every parameter (in place, so ``p.data`` stays the same array)."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, beta1, beta2, eps = hyper_floats(group, "lr", "betas", "eps")
            rho_inf = 2 / (1 - beta2) - 1
            for p in group["params"]:
                state, _ = self._update_moments(p, group, beta1, beta2)
                step, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
                bias_correction1 = 1 - beta1**step
                bias_correction2 = 1 - beta2**step
                m_hat = exp_avg / bias_correction1
                rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction2
                if rho_t > 5.0:
                    adaptive = np.sqrt(exp_avg_sq)
                    adaptive += eps
                    adaptive = bias_correction2**0.5 / adaptive
                    rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                            / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
                    p.data -= m_hat * lr * adaptive * rect
                else:
                    p.data -= m_hat * lr
        return loss
