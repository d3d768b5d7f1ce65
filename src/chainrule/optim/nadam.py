"""NAdam: Adam with Nesterov momentum and a warming-up momentum schedule."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from chainrule.optim.optimizer import (
    Optimizer, ParamsT, as_tuple, check_betas, check_range, lerp_, sign_flipped,
)


class NAdam(Optimizer):
    """NAdam (Dozat, 2016) with PyTorch's update rule (``torch.optim.NAdam``).

    For each parameter ``p`` with gradient ``g = p.grad``; ``m = v = 0`` and
    ``mu_product = 1`` at first; on step ``t = 1, 2, ...``::

        if maximize:  g = -g
        if weight_decay != 0:
            if decoupled_weight_decay:  p = p * (1 - lr * weight_decay)   # NAdamW
            else:                       g = g + weight_decay * p         # L2, coupled
        mu      = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
        mu_product = mu_product * mu                           # prod of mu_1 .. mu_t
        m = m + (1 - beta1) * (g - m)                          # = beta1*m + (1-beta1)*g
        v = beta2 * v + (1 - beta2) * g * g
        denom = sqrt(v / (1 - beta2 ** t)) + eps
        p = p - lr * (1 - mu) / (1 - mu_product) * g / denom
        p = p - lr * mu_next / (1 - mu_product * mu_next) * m / denom

    The two last lines are the Nesterov look-ahead: the current gradient with this
    step's momentum weight plus the momentum with the next step's.

    ``mu_product`` is rounded to float32 after each multiplication, as torch does: it
    keeps it in a 0-d tensor of its default scalar dtype (float32 unless
    ``torch.set_default_dtype(torch.float64)``), multiplied by ``mu`` in that dtype.
    So float64 runs match torch bit for bit in this state and to rounding in ``p``.

    Args:
        params: Parameters or parameter-group dicts (see :class:`Optimizer`).
        lr: learning rate, >= 0.
        betas: ``(beta1, beta2)``, each in [0, 1): decay rates of ``m`` and ``v``.
        eps: added to the denominator for stability, >= 0.
        weight_decay: weight decay coefficient, >= 0.
        momentum_decay: ``psi``, how fast ``mu`` warms up to ``beta1``, >= 0.
        decoupled_weight_decay: shrink ``p`` directly (as AdamW) instead of adding the
            decay to ``g``.
        maximize: maximize the objective (step along ``+grad``), keyword only.

    State per parameter: ``"step"`` (int), ``"mu_product"`` (a python float, holding a
    float32 value), ``"exp_avg"`` (m) and ``"exp_avg_sq"`` (v).
    """

    _scalar_state = ("step", "mu_product")
    _torch_group_extras = {"foreach": None, "capturable": False, "differentiable": False}

    def __init__(
        self,
        params: ParamsT,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, betas=as_tuple(betas), eps=eps, weight_decay=weight_decay,
            momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _validate(self, hyper: Mapping[str, Any]) -> None:
        name = self._name
        check_range(name, "lr", "learning rate", hyper["lr"])
        check_range(name, "eps", "epsilon value", hyper["eps"])
        check_betas(name, hyper["betas"])
        check_range(name, "weight_decay", "weight_decay value", hyper["weight_decay"])
        check_range(name, "momentum_decay", "momentum_decay value", hyper["momentum_decay"])

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one update to every parameter (in place, so ``p.data`` stays the same array)."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            # Python floats, so float32 parameters are not promoted by a numpy scalar.
            lr = float(group["lr"])
            beta1, beta2 = (float(b) for b in group["betas"])
            eps = float(group["eps"])
            weight_decay = float(group["weight_decay"])
            momentum_decay = float(group["momentum_decay"])
            for p in group["params"]:
                state = self._param_state(p)
                if not state:
                    state["step"] = 0
                    state["mu_product"] = 1.0
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

                mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
                mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
                # float32 * float32, rounded to float32: torch's 0-d float32 tensor.
                mu_product = float(np.float32(state["mu_product"]) * np.float32(mu))
                state["mu_product"] = mu_product
                mu_product_next = mu_product * mu_next

                lerp_(exp_avg, grad, 1 - beta1)
                exp_avg_sq *= beta2
                exp_avg_sq += (1 - beta2) * grad * grad
                denom = np.sqrt(exp_avg_sq / (1 - beta2**step))
                denom += eps

                p.data -= (lr * (1.0 - mu) / (1.0 - mu_product)) * (grad / denom)
                p.data -= (lr * mu_next / (1.0 - mu_product_next)) * (exp_avg / denom)
        return loss
