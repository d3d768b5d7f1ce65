"""RAdam: Adam whose adaptive step is switched on only once its variance is tractable."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from chainrule.optim.optimizer import (
    Optimizer, ParamsT, as_tuple, check_betas, check_range, lerp_, sign_flipped,
)


class RAdam(Optimizer):
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
        params: Parameters or parameter-group dicts (see :class:`Optimizer`).
        lr: learning rate, >= 0.
        betas: ``(beta1, beta2)``, each in [0, 1): decay rates of ``m`` and ``v``.
        eps: added to the denominator for stability, >= 0.
        weight_decay: weight decay coefficient, >= 0.
        decoupled_weight_decay: shrink ``p`` directly (as AdamW) instead of adding the
            decay to ``g``.
        maximize: maximize the objective (step along ``+grad``), keyword only.

    State per parameter: ``"step"`` (int), ``"exp_avg"`` (m) and ``"exp_avg_sq"`` (v).
    """

    _scalar_state = ("step",)
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
        defaults = dict(
            lr=lr, betas=as_tuple(betas), eps=eps, weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
        )
        super().__init__(params, defaults)

    def _validate(self, hyper: Mapping[str, Any]) -> None:
        name = self._name
        check_range(name, "lr", "learning rate", hyper["lr"])
        check_range(name, "eps", "epsilon value", hyper["eps"])
        check_betas(name, hyper["betas"])
        check_range(name, "weight_decay", "weight_decay value", hyper["weight_decay"])

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one update to every parameter (in place, so ``p.data`` stays the same array)."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            # Python floats, so float32 parameters are not promoted by a numpy scalar.
            lr = float(group["lr"])
            beta1, beta2 = (float(b) for b in group["betas"])
            eps = float(group["eps"])
            weight_decay = float(group["weight_decay"])
            rho_inf = 2 / (1 - beta2) - 1
            for p in group["params"]:
                state = self._param_state(p)
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = np.zeros_like(p.data)
                    state["exp_avg_sq"] = np.zeros_like(p.data)
                state["step"] += 1
                step = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]

                grad = sign_flipped(p.grad, group["maximize"])
                if weight_decay != 0:
                    if group["decoupled_weight_decay"]:
                        p.data *= 1 - lr * weight_decay
                    else:
                        grad = grad + weight_decay * p.data

                lerp_(exp_avg, grad, 1 - beta1)
                exp_avg_sq *= beta2
                exp_avg_sq += (1 - beta2) * grad * grad

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
