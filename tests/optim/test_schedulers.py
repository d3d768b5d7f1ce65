"""Learning-rate schedulers: parity with torch.optim.lr_scheduler, checkpoints, checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from chainrule.optim import SGD, CosineAnnealingLR, LRScheduler, StepLR  # noqa: E402
from chainrule.parameter import Parameter  # noqa: E402

BASE_LRS = (0.1, 0.03)  # two param groups, so per-group base lrs are exercised

CASES = [
    ("StepLR", dict(step_size=7, gamma=0.5)),
    ("StepLR", dict(step_size=1, gamma=0.9)),
    ("StepLR", dict(step_size=3)),
    ("CosineAnnealingLR", dict(T_max=10, eta_min=1e-3)),  # 30 steps: past T_max and back up
    ("CosineAnnealingLR", dict(T_max=30)),
    ("CosineAnnealingLR", dict(T_max=1)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.01)),
]
SCHEDULERS = {"StepLR": StepLR, "CosineAnnealingLR": CosineAnnealingLR}


def make_optimizer():
    return SGD([{"params": [Parameter(np.zeros(2))], "lr": lr} for lr in BASE_LRS], lr=1.0)


def make_torch_optimizer():
    groups = [{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in BASE_LRS]
    return torch.optim.SGD(groups, lr=1.0)


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_matches_torch(name, kwargs):
    opt = make_optimizer()
    sched = SCHEDULERS[name](opt, **kwargs)
    topt = make_torch_optimizer()
    tsched = getattr(torch.optim.lr_scheduler, name)(topt, **kwargs)

    assert sched.get_last_lr() == pytest.approx(list(BASE_LRS), rel=1e-15)
    for epoch in range(30):
        topt.step()  # no grads: a no-op, but keeps torch's call-order warning quiet
        opt.step()
        tsched.step()
        sched.step()
        ours, theirs = sched.get_last_lr(), tsched.get_last_lr()
        assert ours == pytest.approx(theirs, rel=1e-10, abs=1e-15), f"epoch {epoch + 1}"
        assert [g["lr"] for g in opt.param_groups] == ours
    assert sched.last_epoch == tsched.last_epoch == 30


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_state_dict_round_trip(name, kwargs):
    cls = SCHEDULERS[name]
    opt = make_optimizer()
    sched = cls(opt, **kwargs)
    for _ in range(5):
        sched.step()
    sd = sched.state_dict()
    json.dumps(sd)  # plain python values only

    # Resume as a user would: optimizer checkpoint first, then the scheduler.
    opt2 = make_optimizer()
    opt2.load_state_dict(opt.state_dict())
    sched2 = cls(opt2, **kwargs)
    sched2.load_state_dict(sd)
    assert sched2.last_epoch == 5

    for _ in range(10):
        sched.step()
        sched2.step()
        assert sched2.get_last_lr() == sched.get_last_lr()  # bitwise
        assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


def test_state_dict_is_a_copy():
    opt = make_optimizer()
    sched = StepLR(opt, step_size=2)
    sd = sched.state_dict()
    sd["base_lrs"][0] = 123.0
    sd["_last_lr"].append(1.0)
    assert sched.base_lrs == list(BASE_LRS)
    assert sched.get_last_lr() == list(BASE_LRS)


def test_load_state_dict_of_another_scheduler_raises():
    opt = make_optimizer()
    sd = StepLR(opt, step_size=2).state_dict()
    with pytest.raises(ValueError, match="CosineAnnealingLR.load_state_dict: missing keys"):
        CosineAnnealingLR(make_optimizer(), T_max=5).load_state_dict(sd)


def test_initial_lr_is_shared_between_schedulers():
    # A second scheduler attached later starts from the original lr, as in torch.
    opt = make_optimizer()
    sched = StepLR(opt, step_size=1, gamma=0.5)
    sched.step()
    second = CosineAnnealingLR(opt, T_max=4)
    assert second.base_lrs == list(BASE_LRS)


def test_resuming_without_initial_lr_raises():
    with pytest.raises(KeyError, match="initial_lr"):
        StepLR(make_optimizer(), step_size=2, last_epoch=3)


@pytest.mark.parametrize(
    "make",
    [
        lambda opt: StepLR(opt, step_size=0),
        lambda opt: StepLR(opt, step_size=-2),
        lambda opt: StepLR(opt, step_size=1.5),
        lambda opt: CosineAnnealingLR(opt, T_max=0),
        lambda opt: CosineAnnealingLR(opt, T_max=-10),
    ],
    ids=["step0", "step-2", "step1.5", "tmax0", "tmax-10"],
)
def test_invalid_arguments(make):
    with pytest.raises(ValueError):
        make(make_optimizer())


def test_requires_an_optimizer():
    with pytest.raises(TypeError):
        StepLR(object(), step_size=1)


def test_base_get_lr_is_abstract():
    with pytest.raises(NotImplementedError):
        LRScheduler(make_optimizer())
