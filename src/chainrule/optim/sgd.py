"""Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from chainrule.functional._parallel import scratch
from chainrule.optim.optimizer import (
    Optimizer, ParamsT, check_nonnegative, hyper_floats, prepared_gradient,
)


class SGD(Optimizer):
    """Stochastic gradient descent, with PyTorch's update rule (``torch.optim.SGD``).

    For each parameter ``p`` with gradient ``g = p.grad``, on step ``t = 1, 2, ...``::

        if maximize:  g = -g                      # ascend instead of descend
        if weight_decay != 0:  g = g + weight_decay * p
        if momentum != 0:
            if t == 1:  b = g                      # no dampening on the first step
            else:       b = momentum * b + (1 - dampening) * g
            if nesterov:  g = g + momentum * b
            else:         g = b
        p = p - lr * g

    Note the momentum form differs from Sutskever et al. (``v = mu*v + lr*g``):
    here ``lr`` multiplies the buffer, so changing ``lr`` mid-run rescales the
    whole step at once.

    Args:
        params: Parameters or parameter-group dicts (see ``Optimizer``).
        lr: learning rate, >= 0 (default 1e-3, as torch 2.x).
        momentum: momentum factor, >= 0.
        dampening: scales the new gradient in the momentum update (after step 1).
        weight_decay: L2 penalty coefficient, >= 0 (added to the gradient).
        nesterov: use Nesterov momentum; needs momentum > 0 and dampening == 0.
        maximize: maximize the objective (step along ``+grad``), keyword only.

    State per parameter: ``"momentum_buffer"`` (only when momentum != 0).
    """

    _torch_group_extras = {"foreach": None, "differentiable": False, "fused": None}

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening,
            weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
        )
        super().__init__(params, defaults)

    def _validate(self, hyper: Mapping[str, Any]) -> None:
        name = self._name
        check_nonnegative(name, hyper, "lr", "momentum", "weight_decay")
        if hyper["nesterov"] and (hyper["momentum"] <= 0 or hyper["dampening"] != 0):
            raise ValueError(
                f"{name}: nesterov momentum requires momentum > 0 and dampening == 0, got "
                f"momentum={hyper['momentum']!r}, dampening={hyper['dampening']!r}"
            )

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one update to every parameter (in place, so ``p.data`` stays the same array)."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, momentum, dampening = hyper_floats(group, "lr", "momentum", "dampening")
            for p in group["params"]:
                grad = prepared_gradient(p, group)
                # One reusable temporary per step for the products (the same float
                # operations as ``p.data -= lr * grad``, without a fresh array and its
                # page faults for every parameter).
                tmp = scratch("sgd", p.data.shape, p.data.dtype)
                if momentum != 0:
                    state = self._param_state(p)
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = grad.copy()
                    else:
                        buf *= momentum
                        if dampening == 0:        # (1 - 0) * grad is grad exactly
                            buf += grad
                        else:
                            buf += np.multiply(grad, 1 - dampening, out=tmp)
                    grad = grad + momentum * buf if group["nesterov"] else buf
                p.data -= np.multiply(grad, lr, out=tmp)
        return loss
