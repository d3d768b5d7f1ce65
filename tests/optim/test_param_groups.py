"""Parameter groups with their own options, for every optimizer: torch parity over 20
steps with all-zero gradients on a schedule and maximize in some groups, and
add_param_group in the middle of a run, as torch does it."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import chainrule as cr  # noqa: E402
from chainrule.parameter import Parameter  # noqa: E402
from tests.helpers import float32_tolerance, rel_error  # noqa: E402
from tests.optim.cases import (  # noqa: E402
    F64_TOL, GROUP_CASES, GROUP_IDS, GROUP_MEMBERS, NAMES, STEPS, Pair, compare, groups_of,
    make_values, signs_of, step_chainrule, step_torch, torch_optimizer,
)

# As in test_optimizers: STEPS chained elementwise updates.
TOL = {np.float64: F64_TOL, np.float32: float32_tolerance(1, layers=STEPS)}


def test_every_optimizer_has_group_cases():
    assert {name for name, _, _ in GROUP_CASES} == set(NAMES)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,defaults,options", GROUP_CASES, ids=GROUP_IDS)
def test_groups_match_torch(name, defaults, options, dtype):
    pair = Pair(name, defaults, options, dtype)
    # Each group holds its own options over the defaults, as torch's groups do.
    for group, tgroup, opts in zip(pair.opt.param_groups, pair.topt.param_groups, options):
        for key, value in {**defaults, **opts}.items():
            assert group[key] == value == tgroup[key], key
        for key in group:
            assert key == "params" or group[key] == tgroup[key], key
    pair.step(STEPS)
    errors = pair.errors()
    tol = TOL[dtype]
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"beyond {tol}: {bad}"
    if dtype == np.float32:  # a meaningful float32 case: torch's own float32 run tracks
        twin = Pair(name, defaults, options, np.float64)  # its float64 run (see
        twin.step(STEPS)  # test_optimizers.float32_drift)
        drift = max(rel_error(t.detach().numpy(), u.detach().numpy())
                    for t, u in zip(pair.tensors, twin.tensors))
        assert drift <= tol / 4, f"ill-conditioned in float32: torch drifts {drift:.2g}"


@pytest.mark.parametrize("name,defaults,options", GROUP_CASES, ids=GROUP_IDS)
def test_the_groups_options_matter(name, defaults, options):
    # The parity above could pass with a group's options ignored only if they change
    # nothing: check that dropping them changes the result.
    pair = Pair(name, defaults, options)
    plain = Pair(name, defaults, [{} for _ in options])
    plain.signs = pair.signs  # the same gradients: else maximize(-g) == minimize(g)
    pair.step(5)
    plain.step(5)
    changed = [not np.array_equal(p.data, q.data) for p, q in zip(pair.params, plain.params)]
    for opts, members in zip(options, GROUP_MEMBERS):
        if opts:
            assert all(changed[i] for i in members), opts


@pytest.mark.parametrize("name,defaults,options", GROUP_CASES, ids=GROUP_IDS)
def test_add_param_group_mid_training_matches_torch(name, defaults, options):
    values, noise = make_values(np.float64, seed=4)
    params = [Parameter(v.copy()) for v in values]
    tensors = [torch.tensor(v.copy(), requires_grad=True) for v in values]
    groups, tgroups = groups_of(params, options), groups_of(tensors, options)
    signs = signs_of(defaults, options)
    opt = getattr(cr.optim, name)(groups[:2], **defaults)
    topt = torch_optimizer(name, tgroups[:2], **defaults)
    for step in range(7):  # parameter 3 has a gradient but no optimizer yet
        step_chainrule(opt, params, noise, step, signs)
        step_torch(topt, tensors, noise, step, signs)
    np.testing.assert_array_equal(params[3].data, values[3])
    opt.add_param_group(groups[2])
    topt.add_param_group(tgroups[2])
    assert opt.param_groups[2]["params"] == [params[3]]
    for key, value in opt.param_groups[2].items():
        assert key == "params" or value == topt.param_groups[2][key], key
    for step in range(7, STEPS):
        step_chainrule(opt, params, noise, step, signs)
        step_torch(topt, tensors, noise, step, signs)
    errors = compare(opt, params, topt, tensors)
    bad = {k: v for k, v in errors.items() if not v <= F64_TOL}
    assert not bad, bad
    assert opt.state[params[3]].get("step", STEPS - 7) == STEPS - 7


@pytest.mark.parametrize("name", NAMES)
def test_add_param_group_checks_the_group(name):
    p, q = Parameter(np.zeros(2)), Parameter(np.zeros(3))
    opt = getattr(cr.optim, name)([p], lr=0.1)
    with pytest.raises(ValueError, match=f"{name}: invalid learning rate: -1"):
        opt.add_param_group({"params": [q], "lr": -1})
    with pytest.raises(ValueError, match="more than once"):
        opt.add_param_group({"params": [p]})
    assert len(opt.param_groups) == 1, "a refused group must not be added"
    opt.add_param_group({"params": q, "lr": 0.5})  # a bare Parameter is a group of one
    assert opt.param_groups[1]["params"] == [q] and opt.param_groups[1]["lr"] == 0.5
    assert {k for k in opt.param_groups[1]} == {k for k in opt.param_groups[0]}
