"""Moving a run between chainrule and torch mid-training: optimizer_state_to_torch /
optimizer_state_from_torch, for every optimizer with several parameter groups. A run
moved after 10 steps and continued on the other side ends where the uninterrupted
run does, float64 to 1e-9."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import chainrule as cr  # noqa: E402
from chainrule.interop import optimizer_state_from_torch, optimizer_state_to_torch  # noqa: E402
from chainrule.parameter import Parameter  # noqa: E402
from tests.optim.cases import (  # noqa: E402
    F64_TOL, GROUP_CASES, GROUP_IDS, STEPS, compare, groups_of, make_values, signs_of,
    step_chainrule, step_torch, torch_optimizer,
)

HALF = STEPS // 2
# torch's load_state_dict casts every state tensor but "step" to the parameter's dtype,
# NAdam's float32 mu_product included, and goes on multiplying it in float64; chainrule
# rounds it to float32 after each multiplication (torch's behaviour before a load). The
# two differ by the float32 roundings of mu and of the product: 2**-23 per step.
MU_PRODUCT_TOL = (STEPS - HALF) * 2.0**-23


def check(opt, params, topt, tensors, mu_product_tol: float = 0.0) -> None:
    """Parameters and state to 1e-9; mu_product to ``mu_product_tol`` relative."""
    for p, t in zip(params, tensors):
        if "mu_product" in opt.state.get(p, {}):
            ours, theirs = opt.state[p]["mu_product"], topt.state[t]["mu_product"].item()
            assert abs(ours - theirs) <= mu_product_tol * abs(theirs), (ours, theirs)
            topt.state[t]["mu_product"].fill_(ours)  # for compare's exact check
    errors = compare(opt, params, topt, tensors)
    bad = {k: v for k, v in errors.items() if not v <= F64_TOL}
    assert not bad, bad


@pytest.mark.parametrize("name,defaults,options", GROUP_CASES, ids=GROUP_IDS)
def test_continue_in_torch(name, defaults, options):
    values, noise = make_values(np.float64, seed=9)
    signs = signs_of(defaults, options)
    straight = [Parameter(v.copy()) for v in values]
    straight_opt = getattr(cr.optim, name)(groups_of(straight, options), **defaults)
    for step in range(STEPS):
        step_chainrule(straight_opt, straight, noise, step, signs)

    params = [Parameter(v.copy()) for v in values]
    opt = getattr(cr.optim, name)(groups_of(params, options), **defaults)
    for step in range(HALF):
        step_chainrule(opt, params, noise, step, signs)
    # Move the weights and the optimizer; torch's optimizer starts with its own defaults.
    tensors = [torch.tensor(p.data, requires_grad=True) for p in params]
    topt = getattr(torch.optim, name)(groups_of(tensors, [{}, {}, {}]))
    topt.load_state_dict(optimizer_state_to_torch(opt.state_dict()))
    for step in range(HALF, STEPS):
        step_torch(topt, tensors, noise, step, signs)

    check(straight_opt, straight, topt, tensors, MU_PRODUCT_TOL)


@pytest.mark.parametrize("name,defaults,options", GROUP_CASES, ids=GROUP_IDS)
def test_continue_in_chainrule(name, defaults, options):
    values, noise = make_values(np.float64, seed=10)
    signs = signs_of(defaults, options)
    straight = [torch.tensor(v.copy(), requires_grad=True) for v in values]
    straight_opt = torch_optimizer(name, groups_of(straight, options), **defaults)
    for step in range(STEPS):
        step_torch(straight_opt, straight, noise, step, signs)

    tensors = [torch.tensor(v.copy(), requires_grad=True) for v in values]
    topt = torch_optimizer(name, groups_of(tensors, options), **defaults)
    for step in range(HALF):
        step_torch(topt, tensors, noise, step, signs)
    params = [Parameter(t.detach().numpy().copy()) for t in tensors]
    opt = getattr(cr.optim, name)(groups_of(params, [{}, {}, {}]))
    opt.load_state_dict(optimizer_state_from_torch(topt.state_dict()))
    for group, tgroup in zip(opt.param_groups, topt.param_groups):
        for key, value in group.items():
            assert key == "params" or value == tgroup[key], key
    for step in range(HALF, STEPS):
        step_chainrule(opt, params, noise, step, signs)

    check(opt, params, straight_opt, straight)  # mu_product stays float32 on both sides


def trained_nadam():
    values, noise = make_values(np.float64)
    params = [Parameter(v.copy()) for v in values]
    opt = cr.optim.NAdam(params, lr=0.01)
    for step in range(3):
        step_chainrule(opt, params, noise, step)
    return opt


def test_to_torch_types():
    sd = trained_nadam().state_dict()
    tsd = optimizer_state_to_torch(sd)
    entry = tsd["state"][0]
    # Scalars as torch's own optimizers hold them: 0-d tensors of the scalar dtype.
    for key in ("step", "mu_product"):
        assert torch.is_tensor(entry[key]) and entry[key].ndim == 0
        assert entry[key].dtype == torch.float32
    assert entry["step"].item() == 3 and entry["mu_product"].item() == sd["state"][0]["mu_product"]
    assert entry["exp_avg"].dtype == torch.float64
    # Copies: changing the converted state leaves the original alone.
    entry["exp_avg"].fill_(7.0)
    assert not np.any(sd["state"][0]["exp_avg"] == 7.0)
    assert tsd["param_groups"][0]["betas"] == (0.9, 0.999)


def test_to_torch_follows_torchs_default_dtype():
    sd = trained_nadam().state_dict()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        entry = optimizer_state_to_torch(sd)["state"][0]
    finally:
        torch.set_default_dtype(previous)
    assert entry["step"].dtype == entry["mu_product"].dtype == torch.float64


def test_from_torch_types_and_copies():
    t = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    topt = torch.optim.NAdam([t], lr=torch.tensor(0.01))  # a tensor lr, as torch allows
    t.grad = torch.ones_like(t)
    topt.step()
    sd = optimizer_state_from_torch(topt.state_dict())
    entry = sd["state"][0]
    assert type(entry["step"]) is int and entry["step"] == 1
    assert type(entry["mu_product"]) is float
    assert isinstance(entry["exp_avg"], np.ndarray) and entry["exp_avg"].dtype == np.float64
    assert type(sd["param_groups"][0]["lr"]) is float
    entry["exp_avg"][...] = 7.0
    assert not torch.any(topt.state[t]["exp_avg"] == 7.0)
    opt = cr.optim.NAdam([Parameter(np.array([1.0, 2.0]))])
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)


@pytest.mark.parametrize("convert", [optimizer_state_to_torch, optimizer_state_from_torch])
@pytest.mark.parametrize("bad", [None, {"state": {}}, [1, 2]])
def test_not_a_state_dict(convert, bad):
    with pytest.raises(ValueError, match=f"{convert.__name__}: expected a dict with 'state'"):
        convert(bad)


def test_a_fractional_step_is_refused():
    tsd = {"state": {0: {"step": torch.tensor(1.5)}}, "param_groups": [{"params": [0]}]}
    with pytest.raises(ValueError, match=r"state\[0\]\['step'\] should be a whole number"):
        optimizer_state_from_torch(tsd)


def test_bfloat16_state_names_the_entry():
    tsd = {"state": {0: {"exp_avg": torch.zeros(2, dtype=torch.bfloat16)}},
           "param_groups": [{"params": [0]}]}
    with pytest.raises(TypeError, match=r"state\[0\]\['exp_avg'\] is a torch.bfloat16"):
        optimizer_state_from_torch(tsd)
