"""NAdam: Adam with Nesterov momentum and a warming-up momentum schedule."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from chainrule.optim.adam import _AdamFamily
from chainrule.optim.optimizer import ParamsT, check_nonnegative, hyper_floats


class NAdam(_AdamFamily):
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
        params: Parameters or parameter-group dicts (see ``Optimizer``).
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
    _initial_scalars = {"mu_product": 1.0}
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
        super().__init__(params, lr, betas, eps, weight_decay, momentum_decay=momentum_decay,
                         decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)

    def _validate(self, hyper: Mapping[str, Any]) -> None:
        super()._validate(hyper)
        check_nonnegative(self._name, hyper, "momentum_decay")

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one update to every parameter (in place, so ``p.data`` stays the same array)."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, beta1, beta2, eps, momentum_decay = hyper_floats(
                group, "lr", "betas", "eps", "momentum_decay")
            for p in group["params"]:
                state, grad = self._update_moments(p, group, beta1, beta2)
                step, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]

                mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
                mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
                # float32 * float32, rounded to float32: torch's 0-d float32 tensor.
                mu_product = float(np.float32(state["mu_product"]) * np.float32(mu))
                state["mu_product"] = mu_product
                mu_product_next = mu_product * mu_next

                denom = np.sqrt(exp_avg_sq / (1 - beta2**step))
                denom += eps

                p.data -= (lr * (1.0 - mu) / (1.0 - mu_product)) * (grad / denom)
                p.data -= (lr * mu_next / (1.0 - mu_product_next)) * (exp_avg / denom)
        return loss
