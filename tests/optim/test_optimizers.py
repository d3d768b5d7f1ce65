"""Optimizers: parity with torch.optim, param groups, checkpoints and argument checks."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from chainrule.optim import (  # noqa: E402
    SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, NAdam, Optimizer, RAdam, RMSprop,
)
from chainrule.parameter import Parameter  # noqa: E402
from tests.helpers import float32_tolerance, rel_error  # noqa: E402

OPTIMIZERS = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW, "RMSprop": RMSprop,
              "Adagrad": Adagrad, "Adadelta": Adadelta, "Adamax": Adamax, "NAdam": NAdam,
              "RAdam": RAdam}
SHAPES = [(3, 4), (5,), (2, 3, 2)]
STEPS = 20
# float32: each step is a short chain of elementwise operations (no sums), and the
# rounding of one step carries into the next: STEPS chained layers of one term each.
TOL = {np.float64: 1e-9, np.float32: float32_tolerance(1, layers=STEPS)}

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
    # lerp weight > 0.5 branch. beta2 = 0.99, not 0.7: with 0.7 the run ends hopping
    # around the minimum by about lr * sign(g), g's sign being rounding noise, and float32
    # torch drifts 2e-5 from float64 torch itself (see well_conditioned below).
    ("Adam", dict(lr=0.05, betas=(0.3, 0.99), eps=1e-3)),
    ("AdamW", dict(lr=0.05)),
    ("AdamW", dict(lr=0.05, amsgrad=True, weight_decay=0.1, betas=(0.9, 0.8))),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
    ("RMSprop", dict(lr=0.01, weight_decay=0.1, alpha=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, maximize=True)),
    ("Adam", dict(lr=0.05, maximize=True, amsgrad=True)),
    ("Adam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True)),
    ("AdamW", dict(lr=0.05, maximize=True)),
    ("RMSprop", dict(lr=0.01, maximize=True, centered=True)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.2)),
    ("Adagrad", dict(lr=0.1, eps=1e-3, maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.5, weight_decay=0.1, eps=1e-4)),
    ("Adadelta", dict(lr=0.5, maximize=True)),
    ("Adamax", dict()),
    ("Adamax", dict(lr=0.05, betas=(0.3, 0.99), weight_decay=0.1, eps=1e-3)),
    ("Adamax", dict(lr=0.05, maximize=True)),
    ("NAdam", dict()),
    # eps=1e-2: NAdam with a small beta1 steps by about lr * g / |g| near the minimum,
    # as sensitive to rounding as Adam with beta2 = 0.7 (see well_conditioned).
    ("NAdam", dict(lr=0.05, betas=(0.3, 0.99), weight_decay=0.1, momentum_decay=0.05, eps=1e-2)),
    ("NAdam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("RAdam", dict()),
    ("RAdam", dict(lr=0.05, betas=(0.3, 0.99), weight_decay=0.1, eps=1e-3)),
    ("RAdam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
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


def set_grads(params, noise, sign: float = 1.0) -> None:
    """grad = p^3 + p/2 + noise: depends on p, so any divergence in p shows up.
    ``sign=-1`` gives the gradient of the negated (concave) loss, for ``maximize=True``.

    The loss p^4/4 + p^2/4 + noise*p is strictly convex (curvature >= 1/2), so
    rounding differences contract. With -p/2 the curvature vanishes near |p| = 0.41
    and float32 torch itself drifts ~1e-5 from float64 torch in 20 RMSprop steps.
    Neither side is bitwise torch: torch's CPU kernels fuse multiply-adds (FMA),
    NumPy rounds twice, so float64 agrees to ~1e-16 per step, not exactly.
    """
    for p, n in zip(params, noise):
        d = p.data
        p.grad[...] = sign * (d * d * d + 0.5 * d + n)


def set_torch_grads(tensors, noise, sign: float = 1.0) -> None:
    with torch.no_grad():
        for t, n in zip(tensors, noise):
            n = torch.from_numpy(n)
            t.grad = sign * (t * t * t + 0.5 * t + n)


def run(opt, params, noise, steps: int, sign: float = 1.0) -> None:
    for _ in range(steps):
        set_grads(params, noise, sign)
        opt.step()


def run_torch(opt, tensors, noise, steps: int, sign: float = 1.0) -> None:
    for _ in range(steps):
        set_torch_grads(tensors, noise, sign)
        opt.step()


def torch_optimizer(name: str, tensors_or_groups, **kwargs):
    return getattr(torch.optim, name)(tensors_or_groups, foreach=False, **kwargs)


def float32_drift(name: str, kwargs: dict, sign: float = 1.0) -> float:
    """How far torch's own float32 run ends from its float64 run: a float32 comparison
    with a tolerance derived from rounding means something only where this is well
    below it. Cases that amplify rounding (an adaptive step of about lr * sign(g) near
    the minimum, where g's sign is noise) fail this and must not be float32 cases."""
    ends = []
    for dtype in (np.float32, np.float64):
        _, tensors, noise = make_params(dtype)
        run_torch(torch_optimizer(name, tensors, **kwargs), tensors, noise, STEPS, sign)
        ends.append([t.detach().numpy() for t in tensors])
    return max(rel_error(a, b) for a, b in zip(*ends))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,kwargs", CASES, ids=CASE_IDS)
def test_matches_torch(name, kwargs, dtype):
    params, tensors, noise = make_params(dtype)
    opt = OPTIMIZERS[name](params, **kwargs)
    topt = torch_optimizer(name, tensors, **kwargs)
    data_refs = [p.data for p in params]

    # maximize=True climbs the negated loss, so that both runs converge as well.
    sign = -1.0 if kwargs.get("maximize") else 1.0
    run(opt, params, noise, STEPS, sign)
    run_torch(topt, tensors, noise, STEPS, sign)

    tol = TOL[dtype]
    if dtype == np.float32:
        drift = float32_drift(name, kwargs, sign)
        assert drift <= tol / 4, f"ill-conditioned in float32: torch drifts {drift:.2g}"
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
            if key in ("step", "mu_product"):  # numbers here, 0-d tensors in torch
                assert value == tstate[key].item(), key
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
        assert set(g) == set(tg)
        for key, value in g.items():
            if key != "foreach":  # torch_optimizer sets foreach=False; chainrule writes None
                assert tg[key] == value, key


@pytest.mark.parametrize("name,kwargs", CASES, ids=CASE_IDS)
def test_state_dict_round_trip_is_bitwise(name, kwargs):
    cls = OPTIMIZERS[name]
    params, _, noise = make_params(np.float64, seed=2)
    opt = cls(params, **kwargs)
    sign = -1.0 if kwargs.get("maximize") else 1.0
    run(opt, params, noise, 10, sign)

    sd = opt.state_dict()
    clones = [Parameter(p.data.copy()) for p in params]
    resumed = cls(clones, **kwargs)
    resumed.load_state_dict(sd)

    run(opt, params, noise, 10, sign)
    run(resumed, clones, noise, 10, sign)
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
    (Adagrad, dict(lr=-0.01), "-0.01"),
    (Adagrad, dict(lr_decay=-0.1), "-0.1"),
    (Adagrad, dict(weight_decay=-0.2), "-0.2"),
    (Adagrad, dict(initial_accumulator_value=-0.3), "-0.3"),
    (Adagrad, dict(eps=-1e-10), "-1e-10"),
    (Adadelta, dict(lr=-1.0), "-1.0"),
    (Adadelta, dict(rho=1.5), "1.5"),
    (Adadelta, dict(rho=-0.1), "-0.1"),
    (Adadelta, dict(eps=-1e-6), "-1e-06"),
    (Adadelta, dict(weight_decay=-0.4), "-0.4"),
    (Adamax, dict(lr=-2e-3), "-0.002"),
    (Adamax, dict(eps=-1e-8), "-1e-08"),
    (Adamax, dict(betas=(1.0, 0.999)), "1.0"),
    (Adamax, dict(betas=(0.9, -0.5)), "-0.5"),
    (Adamax, dict(weight_decay=-0.5), "-0.5"),
    (NAdam, dict(lr=-2e-3), "-0.002"),
    (NAdam, dict(eps=-1.0), "-1.0"),
    (NAdam, dict(betas=(0.9, 1.0)), "1.0"),
    (NAdam, dict(weight_decay=-0.6), "-0.6"),
    (NAdam, dict(momentum_decay=-4e-3), "-0.004"),
    (RAdam, dict(lr=-1e-3), "-0.001"),
    (RAdam, dict(eps=-2.0), "-2.0"),
    (RAdam, dict(betas=(1.2, 0.999)), "1.2"),
    (RAdam, dict(weight_decay=-0.7), "-0.7"),
    (Adam, dict(eps=float("nan")), "nan"),
]


@pytest.mark.parametrize(
    "cls,kwargs,value", INVALID, ids=[f"{c.__name__}-{k}" for c, k, _ in INVALID]
)
def test_invalid_hyper_parameters(cls, kwargs, value):
    with pytest.raises(ValueError) as info:
        cls([Parameter(np.zeros(3))], **kwargs)
    message = str(info.value)
    assert cls.__name__ in message and value in message, message
    if not ("nesterov" in kwargs or "betas" in kwargs):
        # the argument and the range it must lie in
        arg = next(iter(kwargs.keys() - {"lr"}), "lr")
        assert f"(expected " in message and arg in message, message
    # torch refuses the same values (not always with a ValueError: see the type tests)
    with pytest.raises(ValueError):
        getattr(torch.optim, cls.__name__)([torch.zeros(3, requires_grad=True)], **{
            "lr": 0.1, **kwargs})


@pytest.mark.parametrize("cls, kwargs, expected", [
    (Adadelta, dict(rho=1.0), "rho"),
    (Adadelta, dict(rho=0.0), "rho"),
    (Adam, dict(betas=(0.0, 0.0)), "betas"),
    (Adagrad, dict(lr=0, eps=0), "eps"),
], ids=["rho-1", "rho-0", "betas-0", "zeros"])
def test_the_ends_of_the_ranges_are_accepted(cls, kwargs, expected):
    opt = cls([Parameter(np.zeros(3))], **kwargs)
    assert opt.param_groups[0][expected] == kwargs[expected]


@pytest.mark.parametrize("cls, kwargs, words", [
    (Adam, dict(lr="0.1"), ["Adam", "lr", "real number", "str"]),
    (Adagrad, dict(eps=None), ["Adagrad", "eps", "real number", "NoneType"]),
    (RAdam, dict(betas=0.9), ["RAdam", "betas", "pair", "float"]),
    (NAdam, dict(betas=(0.9, "x")), ["NAdam", "betas[1]", "real number", "str"]),
    (Adadelta, dict(rho=[0.9]), ["Adadelta", "rho", "real number", "list"]),
], ids=["lr-str", "eps-None", "betas-float", "beta-str", "rho-list"])
def test_hyper_parameters_of_the_wrong_type(cls, kwargs, words):
    with pytest.raises(TypeError) as info:
        cls([Parameter(np.zeros(3))], **kwargs)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_a_0d_array_is_a_number():
    opt = SGD([Parameter(np.zeros(3))], lr=np.array(0.1))
    assert opt.param_groups[0]["lr"] == 0.1


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


# ---------------------------------------------------------------- the new optimizers' details

@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_maximize_is_descent_on_the_negated_gradient(name):
    # Bitwise: maximize flips the sign of g before anything else reads it, as in torch.
    kwargs = dict(lr=0.01, weight_decay=0.1) if name != "AdamW" else dict(lr=0.01)
    params, _, noise = make_params(np.float64, seed=3)
    twins = [Parameter(p.data.copy()) for p in params]
    up = OPTIMIZERS[name](params, maximize=True, **kwargs)
    down = OPTIMIZERS[name](twins, **kwargs)
    run(up, params, noise, 5, sign=-1.0)
    run(down, twins, noise, 5, sign=1.0)
    for p, q in zip(params, twins):
        np.testing.assert_array_equal(p.data, q.data)
    # and it is not a no-op: the first step climbs the gradient it is given
    p = Parameter(np.zeros(2))
    p.grad[...] = [1.0, -2.0]
    OPTIMIZERS[name]([p], maximize=True, lr=0.01).step()
    assert np.all(np.sign(p.data) == [1.0, -1.0])


def test_adagrad_state_exists_from_the_start_as_in_torch():
    p, t = Parameter(np.zeros((2, 3))), torch.zeros((2, 3), dtype=torch.float64, requires_grad=True)
    opt = Adagrad([p], initial_accumulator_value=0.25)
    topt = torch.optim.Adagrad([t], initial_accumulator_value=0.25)
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert set(sd["state"][0]) == set(tsd["state"][0]) == {"step", "sum"}
    assert sd["state"][0]["step"] == tsd["state"][0]["step"].item() == 0
    np.testing.assert_array_equal(sd["state"][0]["sum"], tsd["state"][0]["sum"].numpy())
    # A group added later gets its state on its first step, as in torch.
    q = Parameter(np.ones(2))
    opt.add_param_group({"params": [q]})
    assert q not in opt.state
    opt.step()
    assert opt.state[q]["step"] == 1


def test_adagrad_group_initial_accumulator_value_is_used():
    # torch fills every sum with the constructor's value (a group's own is ignored);
    # each group here gets its own, which is what two separate torch optimizers do.
    params, tensors, noise = make_params(np.float64, seed=5)
    opt = Adagrad([{"params": params[:1], "initial_accumulator_value": 2.0},
                   {"params": params[1:]}], lr=0.1, initial_accumulator_value=0.1)
    topts = [torch.optim.Adagrad(tensors[:1], lr=0.1, initial_accumulator_value=2.0),
             torch.optim.Adagrad(tensors[1:], lr=0.1, initial_accumulator_value=0.1)]
    assert np.all(opt.state[params[0]]["sum"] == 2.0)
    for _ in range(STEPS):
        set_grads(params, noise)
        opt.step()
        set_torch_grads(tensors, noise)
        for topt in topts:
            topt.step()
    for p, t in zip(params, tensors):
        assert rel_error(p.data, t.detach().numpy()) <= 1e-9


def test_nadam_mu_product_is_rounded_to_float32_as_torch():
    params, tensors, noise = make_params(np.float64)
    opt, topt = NAdam(params), torch.optim.NAdam(tensors)
    exact = 1.0
    for step in range(1, STEPS + 1):
        run(opt, params, noise, 1)
        run_torch(topt, tensors, noise, 1)
        exact *= 0.9 * (1 - 0.5 * 0.96 ** (step * 4e-3))
        mu_product = opt.state[params[0]]["mu_product"]
        assert mu_product == topt.state[tensors[0]]["mu_product"].item()
        assert mu_product == float(np.float32(mu_product))
    assert mu_product != exact  # so a float64 product would not match torch


def test_radam_takes_both_branches():
    # rho_t > 5 switches the adaptive step on; the parity grid must see both sides.
    def rho(beta2, t):
        rho_inf = 2 / (1 - beta2) - 1
        return rho_inf - 2 * t * beta2**t / (1 - beta2**t)

    for case in CASES:
        if case[0] == "RAdam":
            beta2 = case[1].get("betas", (0.9, 0.999))[1]
            taken = {rho(beta2, t) > 5 for t in range(1, STEPS + 1)}
            assert taken == {False, True}, case
