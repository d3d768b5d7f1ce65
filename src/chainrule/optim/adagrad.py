"""Adagrad: per-coordinate step sizes from the running sum of squared gradients."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from chainrule.optim.optimizer import (
    Optimizer, ParamsT, check_nonnegative, hyper_floats, prepared_gradient,
)
from chainrule.parameter import Parameter


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011) with PyTorch's update rule (``torch.optim.Adagrad``).

    For each parameter ``p`` with gradient ``g = p.grad``; ``s = initial_accumulator_value``
    (every element) at first; on step ``t = 1, 2, ...``::

        if maximize:  g = -g
        if weight_decay != 0:  g = g + weight_decay * p        # L2, coupled
        clr = lr / (1 + (t - 1) * lr_decay)
        s = s + g * g
        p = p - clr * g / (sqrt(s) + eps)

    The sum only grows, so every coordinate's step shrinks like ``1/sqrt(t)``: large
    steps for rarely seen features, small ones for frequent ones.

    As in torch, the state of the parameters given to the constructor exists from the
    start (``step`` 0, ``sum`` filled); a group added later by ``add_param_group``
    gets its state on its first step. One difference: torch fills ``sum`` with the
    constructor's ``initial_accumulator_value`` even for a group that sets its own;
    here each group's own value is used (the results agree when groups do not set it).

    Args:
        params: Parameters or parameter-group dicts (see ``Optimizer``).
        lr: learning rate, >= 0.
        lr_decay: learning-rate decay per step, >= 0.
        weight_decay: L2 penalty coefficient, >= 0 (added to the gradient).
        initial_accumulator_value: the starting value of ``s``, >= 0.
        eps: added to the denominator for stability, >= 0.
        maximize: maximize the objective (step along ``+grad``), keyword only.

    State per parameter: ``"step"`` (int) and ``"sum"`` (s, the parameter's shape).
    """

    _scalar_state = ("step",)
    _torch_group_extras = {"foreach": None, "differentiable": False, "fused": None}

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value, maximize=maximize,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, group)

    def _validate(self, hyper: Mapping[str, Any]) -> None:
        check_nonnegative(self._name, hyper, "lr", "lr_decay", "weight_decay",
                          "initial_accumulator_value", "eps")

    def _init_state(self, p: Parameter, group: Mapping[str, Any]) -> dict[str, Any]:
        state = self._param_state(p)
        if not state:
            state["step"] = 0
            state["sum"] = np.full_like(p.data, float(group["initial_accumulator_value"]))
        return state

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one update to every parameter (in place, so ``p.data`` stays the same array)."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, lr_decay, eps = hyper_floats(group, "lr", "lr_decay", "eps")
            for p in group["params"]:
                state = self._init_state(p, group)
                state["step"] += 1
                grad = prepared_gradient(p, group)
                clr = lr / (1 + (state["step"] - 1) * lr_decay)

                state_sum = state["sum"]
                state_sum += grad * grad
                std = np.sqrt(state_sum)
                std += eps
                p.data -= clr * (grad / std)
        return loss
