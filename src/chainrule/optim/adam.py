"""Adam and AdamW: bias-corrected first and second moment estimates of the gradient."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from chainrule.optim.optimizer import (
    Optimizer, ParamsT, as_tuple, check_betas, check_nonnegative, ema_square_, hyper_floats,
    lerp_, prepared_gradient,
)
from chainrule.parameter import Parameter


class _AdamFamily(Optimizer):
    """What Adam, AdamW, Adamax, NAdam and RAdam share: the hyper-parameters ``lr``,
    ``betas``, ``eps`` and ``weight_decay`` (in that order in every group, then the
    member's own ``options``), torch's checks of them, a ``"step"`` count in the state
    of each parameter and, but for Adamax, the moment updates of
    ``_update_moments``. Each member's ``step`` holds its own update rule."""

    _scalar_state: tuple[str, ...] = ("step",)
    # Python numbers a member keeps in the state besides "step", with their first
    # values; they come before the arrays in the state, as in torch.
    _initial_scalars: Mapping[str, Any] = {}

    def __init__(self, params: ParamsT, lr: float, betas: tuple[float, float], eps: float,
                 weight_decay: float, **options: Any) -> None:
        defaults = dict(lr=lr, betas=as_tuple(betas), eps=eps, weight_decay=weight_decay,
                        **options)
        super().__init__(params, defaults)

    def _validate(self, hyper: Mapping[str, Any]) -> None:
        check_nonnegative(self._name, hyper, "lr", "eps")
        check_betas(self._name, hyper["betas"])
        check_nonnegative(self._name, hyper, "weight_decay")

    def _update_moments(self, p: Parameter, group: Mapping[str, Any], beta1: float,
                        beta2: float) -> tuple[dict[str, Any], np.ndarray]:
        """Count a step of ``p`` and update its moment estimates, as Adam, NAdam and
        RAdam all begin::

            t = t + 1
            g = p.grad, flipped and decayed (see prepared_gradient)
            m = m + (1 - beta1) * (g - m)                      # = beta1*m + (1-beta1)*g
            v = beta2 * v + (1 - beta2) * g * g

        Returns:
            ``(state, g)``: the state holds ``"step"`` (t), ``"exp_avg"`` (m) and
            ``"exp_avg_sq"`` (v), both zero before the first step.
        """
        state = self._state_for_step(p, "exp_avg", "exp_avg_sq", **self._initial_scalars)
        grad = prepared_gradient(p, group, decoupled=group["decoupled_weight_decay"])
        lerp_(state["exp_avg"], grad, 1 - beta1)
        ema_square_(state["exp_avg_sq"], grad, beta2)
        return state, grad


class Adam(_AdamFamily):
    """Adam (Kingma & Ba, 2014) with PyTorch's update rule (``torch.optim.Adam``).

    For each parameter ``p`` with gradient ``g = p.grad``; ``m = v = v_max = 0`` at
    first; on step ``t = 1, 2, ...``::

        if maximize:  g = -g
        if weight_decay != 0:
            if decoupled_weight_decay:  p = p * (1 - lr * weight_decay)   # AdamW
            else:                       g = g + weight_decay * p         # L2, coupled
        m = m + (1 - beta1) * (g - m)                          # = beta1*m + (1-beta1)*g
        v = beta2 * v + (1 - beta2) * g * g
        bias_correction1 = 1 - beta1 ** t
        bias_correction2 = 1 - beta2 ** t
        if amsgrad:  v_max = max(v_max, v);  v_hat = v_max
        else:        v_hat = v
        denom = sqrt(v_hat) / sqrt(bias_correction2) + eps
        p = p - (lr / bias_correction1) * m / denom

    The operations are in torch's order (eps is added *after* the bias correction of
    ``sqrt(v)``, not to ``sqrt(v / bias_correction2)`` in a different association),
    so float64 runs agree with torch to a few ulps per step.

    Args:
        params: Parameters or parameter-group dicts (see ``Optimizer``).
        lr: learning rate, >= 0.
        betas: ``(beta1, beta2)``, each in [0, 1): decay rates of ``m`` and ``v``.
        eps: added to the denominator for stability, >= 0.
        weight_decay: L2 penalty coefficient, >= 0 (added to the gradient).
        amsgrad: normalise by the running maximum of ``v`` (Reddi et al., 2018).
        maximize: maximize the objective (step along ``+grad``), keyword only.
        decoupled_weight_decay: shrink ``p`` directly instead of adding the decay to
            ``g`` (then this is ``AdamW``), keyword only.

    State per parameter: ``"step"`` (int), ``"exp_avg"`` (m), ``"exp_avg_sq"`` (v)
    and, with amsgrad, ``"max_exp_avg_sq"`` (v_max).
    """

    _torch_group_extras = {"foreach": None, "capturable": False, "differentiable": False,
                           "fused": None}

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad=amsgrad,
                         maximize=maximize, decoupled_weight_decay=decoupled_weight_decay)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one update to every parameter (in place, so ``p.data`` stays the same array)."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, beta1, beta2, eps = hyper_floats(group, "lr", "betas", "eps")
            for p in group["params"]:
                state, _ = self._update_moments(p, group, beta1, beta2)
                step, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
                bias_correction1 = 1 - beta1**step
                bias_correction2 = 1 - beta2**step
                step_size = lr / bias_correction1
                bias_correction2_sqrt = bias_correction2**0.5

                if group["amsgrad"]:
                    # Made here rather than with the other buffers, so that a group may
                    # switch amsgrad on after its state exists (torch would raise
                    # KeyError): the maximum starts at zero then.
                    if "max_exp_avg_sq" not in state:
                        state["max_exp_avg_sq"] = np.zeros_like(p.data)
                    max_sq = state["max_exp_avg_sq"]
                    np.maximum(max_sq, exp_avg_sq, out=max_sq)
                    denom = np.sqrt(max_sq) / bias_correction2_sqrt
                else:
                    denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt
                denom += eps
                p.data -= step_size * exp_avg / denom
        return loss


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay
    (``torch.optim.AdamW``).

    Identical to ``Adam`` except that the decay shrinks the parameter directly
    instead of being added to the gradient, so it is not rescaled by ``1/denom``
    (``decoupled_weight_decay=True`` in every group, as in torch 2.x)::

        if maximize:  g = -g
        p = p * (1 - lr * weight_decay)                        # before the Adam step
        m = m + (1 - beta1) * (g - m)
        v = beta2 * v + (1 - beta2) * g * g
        bias_correction1 = 1 - beta1 ** t
        bias_correction2 = 1 - beta2 ** t
        v_hat = max(v_max, v) if amsgrad else v                # v_max keeps the max
        denom = sqrt(v_hat) / sqrt(bias_correction2) + eps
        p = p - (lr / bias_correction1) * m / denom

    Args:
        params: Parameters or parameter-group dicts (see ``Optimizer``).
        lr: learning rate, >= 0.
        betas: ``(beta1, beta2)``, each in [0, 1).
        eps: added to the denominator for stability, >= 0.
        weight_decay: decoupled decay coefficient, >= 0 (default 1e-2, as torch).
        amsgrad: normalise by the running maximum of ``v``.
        maximize: maximize the objective (step along ``+grad``), keyword only.

    State per parameter: as ``Adam``.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)
