"""What the optimizer tests share: every optimizer with several parameter groups that set
their own options, a gradient that depends on the parameters (with all-zero gradients
on a schedule), and running the same steps in chainrule and in torch.optim."""

from __future__ import annotations

import numpy as np
import torch

import chainrule as cr
from chainrule.parameter import Parameter
from tests.helpers import rel_error

NAMES = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam")
SHAPES = [(3, 4), (5,), (2, 3, 2), (4,)]
# Which parameters each of the three groups holds.
GROUP_MEMBERS = [[0], [1, 2], [3]]
STEPS = 20
F64_TOL = 1e-9

# (optimizer, defaults, per-group options): every group changes lr, weight_decay,
# betas, maximize or the optimizer's own options somewhere.
GROUP_CASES = [
    ("SGD", dict(lr=0.05, momentum=0.9),
     [dict(), dict(lr=0.1, nesterov=True, weight_decay=0.05),
      dict(maximize=True, dampening=0.3, momentum=0.5)]),
    ("SGD", dict(lr=0.05),
     [dict(maximize=True), dict(weight_decay=0.1, lr=0.02), dict(momentum=0.8)]),
    ("Adam", dict(lr=0.05),
     [dict(amsgrad=True, betas=(0.9, 0.8)), dict(weight_decay=0.1, maximize=True),
      dict(lr=0.02, decoupled_weight_decay=True, weight_decay=0.1, eps=1e-3)]),
    ("AdamW", dict(lr=0.05, amsgrad=True),
     [dict(), dict(weight_decay=0.3, betas=(0.3, 0.7), maximize=True),
      dict(lr=0.02, amsgrad=False)]),
    ("RMSprop", dict(lr=0.01),
     [dict(centered=True, momentum=0.5), dict(maximize=True, alpha=0.9, weight_decay=0.1),
      dict(lr=0.02, momentum=0.9, eps=1e-3)]),
    ("Adagrad", dict(lr=0.1),
     [dict(), dict(lr_decay=0.05, weight_decay=0.1), dict(maximize=True, eps=1e-3, lr=0.05)]),
    ("Adagrad", dict(lr=0.05, initial_accumulator_value=0.5, lr_decay=0.01),
     [dict(maximize=True), dict(lr=0.2), dict(weight_decay=0.3)]),
    ("Adadelta", dict(lr=0.5),
     [dict(), dict(rho=0.5, weight_decay=0.1), dict(maximize=True, eps=1e-3, rho=0.99)]),
    ("Adadelta", dict(rho=0.95, eps=1e-4),
     [dict(lr=0.1, rho=1.0), dict(rho=0.0, lr=0.2, maximize=True), dict(lr=2.0)]),
    ("Adamax", dict(lr=0.05),
     [dict(), dict(betas=(0.5, 0.9), weight_decay=0.1),
      dict(maximize=True, eps=1e-3, betas=(0.3, 0.7))]),
    ("NAdam", dict(lr=0.05),
     [dict(), dict(betas=(0.5, 0.9), weight_decay=0.1, momentum_decay=0.1),
      dict(maximize=True, decoupled_weight_decay=True, weight_decay=0.1)]),
    ("NAdam", dict(lr=0.02, betas=(0.3, 0.7), weight_decay=0.05, decoupled_weight_decay=True),
     [dict(momentum_decay=0.0), dict(lr=0.1, eps=1e-3), dict(decoupled_weight_decay=False)]),
    # betas=(0.5, 0.6): rho_inf = 4, so that group never takes the adaptive step, while
    # the default beta2 switches it on at step 6 (see test_radam_takes_both_branches).
    ("RAdam", dict(lr=0.05),
     [dict(), dict(betas=(0.5, 0.6), weight_decay=0.1),
      dict(maximize=True, decoupled_weight_decay=True, weight_decay=0.1, betas=(0.9, 0.8))]),
    ("RAdam", dict(lr=0.02, betas=(0.3, 0.95), eps=1e-3),
     [dict(weight_decay=0.2, decoupled_weight_decay=True), dict(lr=0.1), dict(maximize=True)]),
]
GROUP_IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(GROUP_CASES)]


def make_values(dtype, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Starting values of the parameters and fixed per-parameter noise."""
    rng = np.random.default_rng(seed)
    values = [(0.8 * rng.standard_normal(s)).astype(dtype) for s in SHAPES]
    noise = [(0.3 * rng.standard_normal(s)).astype(dtype) for s in SHAPES]
    return values, noise


def gradient(value: np.ndarray, noise: np.ndarray, step: int, index: int,
             sign: float = 1.0) -> np.ndarray:
    """grad = p^3 + p/2 + noise (strictly convex: rounding differences contract), but
    all zeros for parameter ``index`` on the steps where ``(step + index) % 4 == 0``:
    every parameter meets a zero gradient, parameter 0 on its very first step.
    ``sign=-1``: the gradient of the negated loss, for parameters that maximize."""
    if (step + index) % 4 == 0:
        return np.zeros_like(value)
    return sign * (value * value * value + 0.5 * value + noise)


def signs_of(defaults: dict, options: list[dict]) -> list[float]:
    """-1 for each parameter whose group maximizes: it climbs the negated loss."""
    signs = [1.0] * len(SHAPES)
    for members, opts in zip(GROUP_MEMBERS, options):
        for i in members:
            signs[i] = -1.0 if {**defaults, **opts}.get("maximize") else 1.0
    return signs


def groups_of(items: list, options: list[dict]) -> list[dict]:
    return [{"params": [items[i] for i in members], **opts}
            for members, opts in zip(GROUP_MEMBERS, options)]


def torch_optimizer(name: str, params_or_groups, **kwargs):
    """torch's optimizer, on its single-tensor ("for-loop") implementation."""
    return getattr(torch.optim, name)(params_or_groups, foreach=False, **kwargs)


class Pair:
    """The same parameters and optimizer in chainrule and in torch, stepped alike."""

    def __init__(self, name: str, defaults: dict, options: list[dict], dtype=np.float64,
                 seed: int = 0) -> None:
        values, self.noise = make_values(dtype, seed)
        self.params = [Parameter(v.copy()) for v in values]
        self.tensors = [torch.tensor(v.copy(), requires_grad=True) for v in values]
        self.opt = getattr(cr.optim, name)(groups_of(self.params, options), **defaults)
        self.topt = torch_optimizer(name, groups_of(self.tensors, options), **defaults)
        self.signs = signs_of(defaults, options)
        self.steps = 0

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            step_chainrule(self.opt, self.params, self.noise, self.steps, self.signs)
            step_torch(self.topt, self.tensors, self.noise, self.steps, self.signs)
            self.steps += 1

    def errors(self) -> dict[str, float]:
        """rel_error of every parameter and every state array; scalar state (step,
        mu_product) is asserted equal exactly."""
        return compare(self.opt, self.params, self.topt, self.tensors)


def step_chainrule(opt, params: list[Parameter], noise, step: int,
                   signs: list[float] | None = None) -> None:
    signs = signs or [1.0] * len(params)
    for i, (p, n) in enumerate(zip(params, noise)):
        p.grad[...] = gradient(p.data, n, step, i, signs[i])
    opt.step()


def step_torch(topt, tensors, noise, step: int, signs: list[float] | None = None) -> None:
    # The same NumPy gradient, so that only the optimizers' arithmetic differs.
    signs = signs or [1.0] * len(tensors)
    for i, (t, n) in enumerate(zip(tensors, noise)):
        t.grad = torch.from_numpy(gradient(t.detach().numpy(), n, step, i, signs[i]))
    topt.step()


def compare(opt, params, topt, tensors) -> dict[str, float]:
    errors = {}
    for i, (p, t) in enumerate(zip(params, tensors)):
        errors[f"p{i}"] = rel_error(p.data, t.detach().numpy())
        state, tstate = opt.state.get(p, {}), topt.state.get(t, {})
        assert set(state) == set(tstate), f"param {i}: state keys {set(state)} vs {set(tstate)}"
        for key, value in state.items():
            tvalue = tstate[key]
            if isinstance(value, np.ndarray):
                assert value.dtype == p.dtype, f"state {key!r} has dtype {value.dtype}"
                errors[f"p{i}.{key}"] = rel_error(value, tvalue.numpy())
            else:  # step and mu_product: the same number exactly
                assert value == tvalue.item(), f"param {i} {key}: {value!r} vs {tvalue.item()!r}"
    return errors
