"""Optimizer checkpoints for every optimizer: a resumed run equals an uninterrupted one
bit for bit (in memory and through a checkpoint file), and the state dict has torch's
layout: the same state names per parameter and the same group keys."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import chainrule as cr  # noqa: E402
from chainrule.parameter import Parameter  # noqa: E402
from tests.optim.cases import (  # noqa: E402
    GROUP_CASES, GROUP_IDS, NAMES, groups_of, make_values, signs_of, step_chainrule,
)

HALF = 10  # steps before and after the interruption


def fresh_run(name, defaults, options, values):
    params = [Parameter(v.copy()) for v in values]
    return params, getattr(cr.optim, name)(groups_of(params, options), **defaults)


def run_steps(opt, params, noise, steps, signs) -> None:
    for step in steps:
        step_chainrule(opt, params, noise, step, signs)


def assert_same_run(opt, params, other, other_params) -> None:
    for p, q in zip(params, other_params):
        np.testing.assert_array_equal(p.data, q.data)
        assert opt.state.get(p, {}).keys() == other.state.get(q, {}).keys()
        for key, value in opt.state.get(p, {}).items():
            np.testing.assert_array_equal(other.state[q][key], value, err_msg=key)
            assert type(other.state[q][key]) is type(value), key
    def hyper(groups):
        return [{k: v for k, v in g.items() if k != "params"} for g in groups]

    assert hyper(opt.param_groups) == hyper(other.param_groups)


@pytest.mark.parametrize("name,defaults,options", GROUP_CASES, ids=GROUP_IDS)
def test_resume_is_bitwise(name, defaults, options):
    values, noise = make_values(np.float64, seed=2)
    signs = signs_of(defaults, options)
    params, opt = fresh_run(name, defaults, options, values)
    run_steps(opt, params, noise, range(HALF), signs)

    sd = opt.state_dict()
    # The resumed optimizer is built with default options: the groups' own come back
    # from the state dict.
    clones = [Parameter(p.data.copy()) for p in params]
    resumed = getattr(cr.optim, name)(groups_of(clones, [{}, {}, {}]))
    resumed.load_state_dict(sd)

    run_steps(opt, params, noise, range(HALF, 2 * HALF), signs)
    run_steps(resumed, clones, noise, range(HALF, 2 * HALF), signs)
    assert_same_run(opt, params, resumed, clones)


@pytest.mark.parametrize("name,defaults,options", GROUP_CASES, ids=GROUP_IDS)
def test_resume_through_a_checkpoint_file_is_bitwise(tmp_path, name, defaults, options):
    # Arrays go to safetensors, numbers (step, NAdam's mu_product) to the JSON header.
    values, noise = make_values(np.float32, seed=6)
    signs = signs_of(defaults, options)
    params, opt = fresh_run(name, defaults, options, values)
    run_steps(opt, params, noise, range(HALF), signs)

    path = cr.save(cr.Linear(2, 2), tmp_path / "c.safetensors", optimizer=opt)
    ckpt = cr.load_checkpoint(path)
    assert ckpt.optimizer_type == name
    clones = [Parameter(p.data.copy()) for p in params]
    resumed = getattr(cr.optim, name)(groups_of(clones, [{}, {}, {}]))
    resumed.load_state_dict(ckpt.optimizer_state)

    run_steps(opt, params, noise, range(HALF, 2 * HALF), signs)
    run_steps(resumed, clones, noise, range(HALF, 2 * HALF), signs)
    assert_same_run(opt, params, resumed, clones)


@pytest.mark.parametrize("steps", [0, 3])
@pytest.mark.parametrize("name,defaults,options", GROUP_CASES, ids=GROUP_IDS)
def test_layout_matches_torch(name, defaults, options, steps):
    values, noise = make_values(np.float64, seed=7)
    signs = signs_of(defaults, options)
    params, opt = fresh_run(name, defaults, options, values)
    tensors = [torch.tensor(v.copy(), requires_grad=True) for v in values]
    # torch's defaults for foreach etc., as a user would build it.
    topt = getattr(torch.optim, name)(groups_of(tensors, options), **defaults)
    for step in range(steps):
        step_chainrule(opt, params, noise, step, signs)
        for t, p in zip(tensors, params):
            t.grad = torch.from_numpy(p.grad.copy())
        topt.step()

    sd, tsd = opt.state_dict(), topt.state_dict()
    assert list(sd["state"]) == list(tsd["state"])  # e.g. Adagrad's exists before step 1
    for index, state in sd["state"].items():
        tstate = tsd["state"][index]
        assert list(state) == list(tstate), index  # the names, in torch's order
        for key, value in state.items():
            if isinstance(value, np.ndarray):
                assert value.shape == tuple(tstate[key].shape), key
            else:
                assert value == tstate[key].item(), key
    assert len(sd["param_groups"]) == len(tsd["param_groups"])
    for group, tgroup in zip(sd["param_groups"], tsd["param_groups"]):
        assert group == tgroup  # every key and value, torch's implementation switches too


@pytest.mark.parametrize("name", NAMES)
def test_torch_implementation_switches_are_dropped_on_load(name):
    p = Parameter(np.ones(3))
    opt = getattr(cr.optim, name)([p], lr=0.1)
    sd = opt.state_dict()
    extras = type(opt)._torch_group_extras
    assert extras and set(extras) <= set(sd["param_groups"][0])
    assert set(extras) <= {"foreach", "fused", "capturable", "differentiable"}
    sd["param_groups"][0].update(foreach=False, differentiable=False)
    opt.load_state_dict(sd)
    assert not set(extras) & set(opt.param_groups[0]), "not hyper-parameters here"
    assert opt.state_dict()["param_groups"][0]["foreach"] is None


@pytest.mark.parametrize("name", NAMES)
def test_an_old_checkpoint_without_the_new_keys_loads(name):
    # Checkpoints written before maximize / decoupled_weight_decay existed lack them:
    # the optimizer's defaults fill in.
    p = Parameter(np.ones(3))
    opt = getattr(cr.optim, name)([p], lr=0.1)
    sd = opt.state_dict()
    for key in ("maximize", "decoupled_weight_decay"):
        sd["param_groups"][0].pop(key, None)
    fresh = getattr(cr.optim, name)([Parameter(np.ones(3))], lr=0.1)
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["maximize"] is False
    p.grad[...] = 1.0
    fresh.param_groups[0]["params"][0].grad[...] = 1.0
    opt.step()
    fresh.step()
    np.testing.assert_array_equal(fresh.param_groups[0]["params"][0].data, p.data)


def test_adamw_is_adam_with_decoupled_weight_decay():
    values, noise = make_values(np.float64, seed=8)
    a, b = [Parameter(v.copy()) for v in values], [Parameter(v.copy()) for v in values]
    adamw = cr.optim.AdamW(a, lr=0.05, weight_decay=0.2)
    adam = cr.optim.Adam(b, lr=0.05, weight_decay=0.2, decoupled_weight_decay=True)
    assert adamw.state_dict()["param_groups"] == adam.state_dict()["param_groups"]
    run_steps(adamw, a, noise, range(5), [1.0] * 4)
    run_steps(adam, b, noise, range(5), [1.0] * 4)
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.data, q.data)
