"""Optimizers: parity with torch.optim, param groups, checkpoints and argument checks."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from chainrule.optim import SGD, Adam, AdamW, Optimizer, RMSprop  # noqa: E402
from chainrule.parameter import Parameter  # noqa: E402
from tests.helpers import rel_error  # noqa: E402

OPTIMIZERS = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW, "RMSprop": RMSprop}
SHAPES = [(3, 4), (5,), (2, 3, 2)]
TOL = {np.float64: 1e-9, np.float32: 1e-5}

# (optimizer, kwargs): every option on its own and a few together.
CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.1, weight_decay=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.8, weight_decay=0.1, nesterov=True)),
    ("Adam", dict(lr=0.05)),
    ("Adam", dict(lr=0.05, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, amsgrad=True, betas=(0.9, 0.8))),
    ("Adam", dict(lr=0.05, betas=(0.5, 0.9))),
    ("Adam", dict(lr=0.05, betas=(0.3, 0.7), eps=1e-3)),  # lerp weight > 0.5 branch
    ("AdamW", dict(lr=0.05)),
    ("AdamW", dict(lr=0.05, amsgrad=True, weight_decay=0.1, betas=(0.9, 0.8))),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
    ("RMSprop", dict(lr=0.01, weight_decay=0.1, alpha=0.9)),
]
CASE_IDS = [f"{name}-{kw}" for name, kw in CASES]


def make_params(dtype, seed: int = 0):
    """Parameters and matching torch leaf tensors, plus fixed per-parameter noise."""
    rng = np.random.default_rng(seed)
    values = [(0.8 * rng.standard_normal(s)).astype(dtype) for s in SHAPES]
    noise = [(0.3 * rng.standard_normal(s)).astype(dtype) for s in SHAPES]
    params = [Parameter(v.copy()) for v in values]
    tensors = [torch.tensor(v.copy(), requires_grad=True) for v in values]
    return params, tensors, noise


def set_grads(params, noise) -> None:
    """grad = p^3 + p/2 + noise: depends on p, so any divergence in p shows up.

    The loss p^4/4 + p^2/4 + noise*p is strictly convex (curvature >= 1/2), so
    rounding differences contract. With -p/2 the curvature vanishes near |p| = 0.41
    and float32 torch itself drifts ~1e-5 from float64 torch in 20 RMSprop steps.
    Neither side is bitwise torch: torch's CPU kernels fuse multiply-adds (FMA),
    NumPy rounds twice, so float64 agrees to ~1e-16 per step, not exactly.
    """
    for p, n in zip(params, noise):
        d = p.data
        p.grad[...] = d * d * d + 0.5 * d + n


def set_torch_grads(tensors, noise) -> None:
    with torch.no_grad():
        for t, n in zip(tensors, noise):
            n = torch.from_numpy(n)
            t.grad = t * t * t + 0.5 * t + n


def run(opt, params, noise, steps: int) -> None:
    for _ in range(steps):
        set_grads(params, noise)
        opt.step()


def run_torch(opt, tensors, noise, steps: int) -> None:
    for _ in range(steps):
        set_torch_grads(tensors, noise)
        opt.step()


def torch_optimizer(name: str, tensors_or_groups, **kwargs):
    return getattr(torch.optim, name)(tensors_or_groups, foreach=False, **kwargs)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,kwargs", CASES, ids=CASE_IDS)
def test_matches_torch(name, kwargs, dtype):
    params, tensors, noise = make_params(dtype)
    opt = OPTIMIZERS[name](params, **kwargs)
    topt = torch_optimizer(name, tensors, **kwargs)
    data_refs = [p.data for p in params]

    run(opt, params, noise, 20)
    run_torch(topt, tensors, noise, 20)

    tol = TOL[dtype]
    for i, (p, t) in enumerate(zip(params, tensors)):
        assert p.data is data_refs[i], "update must be in place"
        assert p.data.dtype == dtype
        err = rel_error(p.data, t.detach().numpy())
        assert err <= tol, f"param {i}: rel error {err:.3g} > {tol}"
        # The buffers must match too, not only their effect on p.
        tstate = topt.state[t]
        state = opt.state.get(p, {})  # plain SGD keeps none, like torch
        assert set(state) == set(tstate)
        for key, value in state.items():
            if key == "step":
                assert value == int(tstate[key].item())
                continue
            assert value.dtype == dtype, f"state {key!r} has dtype {value.dtype}"
            err = rel_error(value, tstate[key].numpy())
            assert err <= tol, f"param {i} state {key!r}: rel error {err:.3g} > {tol}"


def test_amsgrad_case_exercises_the_maximum():
    # Otherwise the amsgrad parity above could pass with amsgrad ignored.
    params, _, noise = make_params(np.float64)
    opt = Adam(params, lr=0.05, amsgrad=True, betas=(0.9, 0.8))
    run(opt, params, noise, 20)
    st = opt.state[params[0]]
    assert np.any(st["max_exp_avg_sq"] > st["exp_avg_sq"])


@pytest.mark.parametrize("cls, option, key", [
    (Adam, dict(amsgrad=True), "max_exp_avg_sq"),
    (RMSprop, dict(momentum=0.9), "momentum_buffer"),
    (RMSprop, dict(centered=True), "grad_avg"),
], ids=["Adam-amsgrad", "RMSprop-momentum", "RMSprop-centered"])
def test_an_option_switched_on_later_starts_its_buffer_once(cls, option, key):
    params, _, noise = make_params(np.float64)
    opt = cls(params, lr=0.01)
    run(opt, params, noise, 2)
    assert key not in opt.state[params[0]]
    opt.param_groups[0].update(option)
    run(opt, params, noise, 1)
    buffer = opt.state[params[0]][key]
    assert np.any(buffer != 0)
    run(opt, params, noise, 1)
    assert opt.state[params[0]][key] is buffer, "the buffer must persist, not restart"


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("SGD", dict(lr=0.1, momentum=0.9)),
        ("Adam", dict(lr=0.05)),
        ("RMSprop", dict(lr=0.01, centered=True)),
    ],
)
def test_param_groups_match_torch(name, kwargs):
    params, tensors, noise = make_params(np.float64, seed=1)
    group_lr = kwargs["lr"] * 3
    groups = [{"params": params[:1], "lr": group_lr}, {"params": params[1:]}]
    opt = OPTIMIZERS[name](groups, **kwargs)
    tgroups = [{"params": tensors[:1], "lr": group_lr}, {"params": tensors[1:]}]
    topt = torch_optimizer(name, tgroups, **kwargs)
    assert [g["lr"] for g in opt.param_groups] == [group_lr, kwargs["lr"]]

    run(opt, params, noise, 20)
    run_torch(topt, tensors, noise, 20)
    for p, t in zip(params, tensors):
        assert rel_error(p.data, t.detach().numpy()) <= 1e-9

    # Same checkpoint layout as torch: indices run on across groups.
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [g["params"] for g in tsd["param_groups"]]
    assert sorted(sd["state"]) == sorted(tsd["state"])
    for g, tg in zip(sd["param_groups"], tsd["param_groups"]):
        for key, value in g.items():
            assert tg[key] == value, key


@pytest.mark.parametrize("name,kwargs", CASES, ids=CASE_IDS)
def test_state_dict_round_trip_is_bitwise(name, kwargs):
    cls = OPTIMIZERS[name]
    params, _, noise = make_params(np.float64, seed=2)
    opt = cls(params, **kwargs)
    run(opt, params, noise, 10)

    sd = opt.state_dict()
    clones = [Parameter(p.data.copy()) for p in params]
    resumed = cls(clones, **kwargs)
    resumed.load_state_dict(sd)

    run(opt, params, noise, 10)
    run(resumed, clones, noise, 10)
    for p, q in zip(params, clones):
        np.testing.assert_array_equal(p.data, q.data)
    for p, q in zip(params, clones):
        for key, value in opt.state.get(p, {}).items():
            np.testing.assert_array_equal(resumed.state[q][key], value)


def test_state_dict_holds_copies():
    params, _, noise = make_params(np.float64)
    opt = Adam(params, lr=0.05)
    run(opt, params, noise, 3)
    before = copy.deepcopy(opt.state[params[0]])

    sd = opt.state_dict()
    sd["state"][0]["exp_avg"][...] = 1e9
    sd["state"][0]["step"] = 99
    sd["param_groups"][0]["lr"] = 1.0
    for key, value in before.items():
        np.testing.assert_array_equal(opt.state[params[0]][key], value)
    assert opt.param_groups[0]["lr"] == 0.05

    # And loading copies too: the checkpoint can be reused after a load.
    sd = opt.state_dict()
    other = Adam([Parameter(p.data.copy()) for p in params], lr=0.05)
    other.load_state_dict(sd)
    sd["state"][0]["exp_avg_sq"][...] = -1.0
    assert np.all(other.state[other.param_groups[0]["params"][0]]["exp_avg_sq"] >= 0)


def test_load_state_dict_casts_to_parameter_dtype():
    params, _, noise = make_params(np.float64)
    opt = RMSprop(params, momentum=0.9)
    run(opt, params, noise, 3)
    params32 = [Parameter(p.data.astype(np.float32)) for p in params]
    opt32 = RMSprop(params32, momentum=0.9)
    opt32.load_state_dict(opt.state_dict())
    for p in params32:
        for key, value in opt32.state[p].items():
            if key != "step":
                assert value.dtype == np.float32, key
    opt32.step()
    assert all(p.data.dtype == np.float32 for p in params32)


def test_zero_grad_fills_in_place():
    params, _, noise = make_params(np.float64)
    opt = SGD(params, lr=0.1)
    set_grads(params, noise)
    grads = [p.grad for p in params]
    opt.zero_grad()
    for p, g in zip(params, grads):
        assert p.grad is g
        assert not np.any(p.grad)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("Adam", dict(lr=0.05)),
        ("AdamW", dict(lr=0.05, weight_decay=0.5)),
        ("SGD", dict(lr=0.1, weight_decay=0.5)),
    ],
)
def test_zero_gradient_still_steps(name, kwargs):
    # torch steps every parameter that has a grad, even an all-zero one: the step
    # counter advances and decay still applies.
    params, tensors, _ = make_params(np.float64)
    opt = OPTIMIZERS[name](params, **kwargs)
    topt = torch_optimizer(name, tensors, **kwargs)
    for t in tensors:
        t.grad = torch.zeros_like(t)
    opt.step()
    topt.step()
    for p, t in zip(params, tensors):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=0)
        if "step" in topt.state[t]:
            assert opt.state[p]["step"] == 1


def test_closure_is_called_and_returned():
    params, _, noise = make_params(np.float64)
    opt = SGD(params, lr=0.1)
    assert opt.step(lambda: 1.5) == 1.5


# ---------------------------------------------------------------- invalid arguments

INVALID = [
    (SGD, dict(lr=-0.1), "-0.1"),
    (SGD, dict(lr=0.1, momentum=-0.5), "-0.5"),
    (SGD, dict(lr=0.1, weight_decay=-0.01), "-0.01"),
    (SGD, dict(lr=0.1, nesterov=True), "nesterov"),
    (SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "dampening=0.1"),
    (Adam, dict(lr=-1e-3), "-0.001"),
    (Adam, dict(eps=-1e-8), "-1e-08"),
    (Adam, dict(betas=(1.0, 0.999)), "1.0"),
    (Adam, dict(betas=(0.9, 1.5)), "1.5"),
    (Adam, dict(betas=(-0.1, 0.999)), "-0.1"),
    (Adam, dict(weight_decay=-0.2), "-0.2"),
    (AdamW, dict(lr=-2.0), "-2.0"),
    (AdamW, dict(betas=(0.9, 1.0)), "1.0"),
    (AdamW, dict(weight_decay=-0.3), "-0.3"),
    (RMSprop, dict(lr=-0.5), "-0.5"),
    (RMSprop, dict(eps=-1.0), "-1.0"),
    (RMSprop, dict(momentum=-0.9), "-0.9"),
    (RMSprop, dict(weight_decay=-0.7), "-0.7"),
    (RMSprop, dict(alpha=-0.99), "-0.99"),
]


@pytest.mark.parametrize(
    "cls,kwargs,value", INVALID, ids=[f"{c.__name__}-{k}" for c, k, _ in INVALID]
)
def test_invalid_hyper_parameters(cls, kwargs, value):
    with pytest.raises(ValueError) as info:
        cls([Parameter(np.zeros(3))], **kwargs)
    message = str(info.value)
    assert cls.__name__ in message and value in message, message


def test_invalid_hyper_parameter_in_a_group():
    with pytest.raises(ValueError, match=r"Adam: invalid learning rate: -1"):
        Adam([{"params": [Parameter(np.zeros(3))], "lr": -1}])


@pytest.mark.parametrize(
    "params",
    [[], [np.zeros(3)], "not params", Parameter(np.zeros(3)), {Parameter(np.zeros(3))},
     [{"params": [Parameter(np.zeros(2))]}, Parameter(np.zeros(2))]],
    ids=["empty", "ndarray", "str", "bare-parameter", "set", "mixed"],
)
def test_bad_params_raise_type_error(params):
    with pytest.raises(TypeError):
        SGD(params, lr=0.1)


def test_parameter_given_twice():
    p, q = Parameter(np.zeros(3)), Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="more than once"):
        SGD([p, q, p], lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        Adam([{"params": [p]}, {"params": [q, p]}])


def trained_adam():
    params, _, noise = make_params(np.float64)
    opt = Adam(params, lr=0.05)
    run(opt, params, noise, 2)
    return opt, params


def test_load_state_dict_wrong_shape():
    opt, params = trained_adam()
    sd = opt.state_dict()
    sd["state"][1]["exp_avg"] = np.zeros((4,))
    fresh = Adam([Parameter(p.data.copy()) for p in params])
    expected = re.escape("state[1]['exp_avg'] has shape (4,), expected (5,)")
    with pytest.raises(ValueError, match=expected) as info:
        fresh.load_state_dict(sd)
    assert "Adam" in str(info.value)
    assert fresh.state == {}, "a failed load must leave the optimizer untouched"


def test_load_state_dict_wrong_group_count_and_size():
    opt, params = trained_adam()
    sd = opt.state_dict()
    two_groups = Adam([{"params": [Parameter(p.data.copy())]} for p in params[:2]])
    expected = r"Adam.load_state_dict: expected 2 parameter group\(s\), got 1"
    with pytest.raises(ValueError, match=expected):
        two_groups.load_state_dict(sd)
    fewer = Adam([Parameter(p.data.copy()) for p in params[:2]])
    with pytest.raises(ValueError, match=r"parameter group 0 expected 2 parameter\(s\), got 3"):
        fewer.load_state_dict(sd)


def test_load_state_dict_rejects_bad_step_and_index():
    opt, params = trained_adam()
    sd = opt.state_dict()
    sd["state"][0]["step"] = np.zeros(3)
    with pytest.raises(ValueError, match="'step'.*should be a number"):
        Adam([Parameter(p.data.copy()) for p in params]).load_state_dict(sd)
    sd = opt.state_dict()
    sd["state"][7] = sd["state"].pop(0)
    with pytest.raises(ValueError, match="index 7"):
        Adam([Parameter(p.data.copy()) for p in params]).load_state_dict(sd)


def test_base_step_is_abstract():
    with pytest.raises(NotImplementedError):
        Optimizer([Parameter(np.zeros(1))], {}).step()
