"""Learning-rate schedulers: argument checks (against what torch raises), checkpoints,
and the behaviours around them. Step-by-step parity with torch, uninterrupted and
resumed, is in test_lr_scheduler_parity.py."""

from __future__ import annotations

import functools
import json
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import chainrule as cr  # noqa: E402
from chainrule.optim import (  # noqa: E402
    SGD, CosineAnnealingLR, ExponentialLR, LambdaLR, LinearLR, LRScheduler, OneCycleLR,
    ReduceLROnPlateau, SequentialLR, StepLR,
)
from chainrule.parameter import Parameter  # noqa: E402
from tests.optim.test_lr_scheduler_parity import (  # noqa: E402
    OURS, THEIRS, WarmupFactor, make_optimizer,
)

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


def make_sgd():
    return SGD([{"params": [Parameter(np.zeros(2))], "lr": lr} for lr in BASE_LRS], lr=1.0)


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_state_dict_round_trip_optimizer_loaded_first(name, kwargs):
    # The optimizer's checkpoint loaded *before* building the scheduler: fine for the
    # schedulers whose constructor step keeps the lr (torch's warning covers LinearLR).
    cls = SCHEDULERS[name]
    opt = make_sgd()
    sched = cls(opt, **kwargs)
    for _ in range(5):
        sched.step()
    sd = sched.state_dict()
    json.dumps(sd)  # plain python values only

    opt2 = make_sgd()
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
    opt = make_sgd()
    sched = SequentialLR(opt, [LinearLR(opt), StepLR(opt, step_size=2)], milestones=[3])
    sd = sched.state_dict()
    sd["_last_lr"][0] = 123.0
    sd["_schedulers"][1]["base_lrs"].append(1.0)
    sd["_milestones"][0] = 9
    assert sched.get_last_lr() == [lr * (1 / 3) for lr in BASE_LRS]  # start_factor
    assert sched._schedulers[1].base_lrs == list(BASE_LRS) and sched._milestones == [3]
    got = sched.get_last_lr()
    got.append(0.0)
    assert len(sched.get_last_lr()) == 2


def test_load_state_dict_of_another_scheduler_raises():
    sd = StepLR(make_sgd(), step_size=2).state_dict()
    with pytest.raises(ValueError, match="CosineAnnealingLR.load_state_dict: missing keys"):
        CosineAnnealingLR(make_sgd(), T_max=5).load_state_dict(sd)
    opt = make_sgd()
    two = SequentialLR(opt, [LinearLR(opt), StepLR(opt, 2)], milestones=[3]).state_dict()
    opt = make_sgd()
    three = SequentialLR(opt, [LinearLR(opt), StepLR(opt, 2), StepLR(opt, 5)], milestones=[3, 9])
    with pytest.raises(ValueError, match="SequentialLR.load_state_dict: 2 schedulers saved, "
                                         "this one has 3"):
        three.load_state_dict(two)


def test_checkpoint_of_the_closed_form_version_loads():
    """Runs saved by chainrule 0.1.0 (closed-form schedulers) have no _step_count: they
    resume, the first step giving the closed form, as before."""
    opt = make_sgd()
    sched = CosineAnnealingLR(opt, T_max=10)
    old = {"T_max": 10, "eta_min": 0.0, "base_lrs": list(BASE_LRS), "last_epoch": 4,
           "_last_lr": [b * (1 + math.cos(math.pi * 4 / 10)) / 2 for b in BASE_LRS]}
    for group, lr in zip(opt.param_groups, old["_last_lr"]):
        group["lr"] = lr  # the optimizer's checkpoint holds the lr of epoch 4
    sched.load_state_dict(old)
    for epoch in range(5, 15):
        sched.step()
        closed = [b * (1 + math.cos(math.pi * epoch / 10)) / 2 for b in BASE_LRS]
        assert sched.get_last_lr() == pytest.approx(closed, rel=1e-12, abs=1e-15)


def test_initial_lr_is_shared_between_schedulers():
    # A second scheduler attached later starts from the original lr, as in torch.
    opt = make_sgd()
    sched = StepLR(opt, step_size=1, gamma=0.5)
    sched.step()
    second = CosineAnnealingLR(opt, T_max=4)
    assert second.base_lrs == list(BASE_LRS)


def test_resuming_without_initial_lr_raises():
    with pytest.raises(KeyError, match="initial_lr"):
        StepLR(make_sgd(), step_size=2, last_epoch=3)


def test_a_group_added_after_the_scheduler_is_named():
    opt = make_sgd()
    sched = LambdaLR(opt, lambda epoch: 0.5**epoch)
    opt.add_param_group({"params": [Parameter(np.zeros(1))], "lr": 0.2})
    with pytest.raises(ValueError, match="LambdaLR: the optimizer has 3 param groups but the "
                                         "scheduler computed 2 learning rates"):
        sched.step()


def test_base_get_lr_is_abstract():
    with pytest.raises(NotImplementedError):
        LRScheduler(make_sgd())


def test_names_and_the_alias_module():
    from chainrule.optim import scheduler as alias

    for name in OURS.__all__:
        assert getattr(cr.optim, name) is getattr(OURS, name) is getattr(alias, name), name
        assert hasattr(THEIRS, name), f"{name} is not a torch name"
    assert cr.optim.lr_scheduler is OURS


# ---------------------------------------------------------------------- LambdaLR state

def test_lambda_state_dict_keeps_callable_objects_only_as_torch():
    def halve(epoch):
        return 0.5**epoch

    dicts = {}
    for lib, L in (("ours", OURS), ("torch", THEIRS)):
        opt = make_optimizer(lib, "sgd")  # three groups
        fns = [halve, WarmupFactor(8), functools.partial(pow, 0.9)]
        sched = L.LambdaLR(opt, fns)
        fns[1].warmup = 4  # state of the callable object, changed after construction
        dicts[lib] = sched.state_dict()["lr_lambdas"]
    assert dicts["ours"] == dicts["torch"] == [None, {"warmup": 4}, {}]


def test_lambda_load_state_dict_restores_callable_objects():
    opt = make_optimizer("ours", "sgd")
    sched = LambdaLR(opt, [lambda e: 1.0, WarmupFactor(10), WarmupFactor(20)])
    sched.lr_lambdas[2].warmup = 5
    sched.step()
    saved = json.loads(json.dumps(sched.state_dict()))

    fresh = LambdaLR(make_optimizer("ours", "sgd"),
                     [lambda e: 1.0, WarmupFactor(10), WarmupFactor(20)])
    fresh.load_state_dict(saved)
    assert [getattr(fn, "warmup", None) for fn in fresh.lr_lambdas] == [None, 10, 5]
    assert saved["lr_lambdas"][0] is None and fresh.last_epoch == 1
    fresh.step()
    assert fresh.get_last_lr()[2] == pytest.approx(0.7 * 3 / 5)


def test_one_lambda_for_every_group():
    opt = make_optimizer("ours", "sgd")
    sched = LambdaLR(opt, lambda e: 1 / (e + 1))
    sched.step()
    assert sched.get_last_lr() == [0.1 / 2, 0.03 / 2, 0.7 / 2]


# ---------------------------------------------------------------------- ReduceLROnPlateau

def test_plateau_takes_array_metrics_and_reports_its_lr():
    opt = make_sgd()
    sched = ReduceLROnPlateau(opt, patience=1, factor=0.5)
    for value in (1.0, 1.0, np.float32(1.0), np.array(2.0)):
        sched.step(value)
    assert sched.get_last_lr() == [lr * 0.5 for lr in BASE_LRS]
    assert [g["lr"] for g in opt.param_groups] == sched.get_last_lr()
    assert sched.last_epoch == 4 and sched.num_bad_epochs == 1


def test_plateau_state_dict_round_trips_infinite_best():
    sched = ReduceLROnPlateau(make_sgd(), mode="max")
    state = json.loads(json.dumps(sched.state_dict()))  # -inf: JSON's -Infinity
    assert state["best"] == -math.inf
    fresh = ReduceLROnPlateau(make_sgd())
    fresh.load_state_dict(state)
    assert fresh.mode == "max" and fresh._is_better(0.5, fresh.best)
    state["threshold_mode"] = "percent"
    with pytest.raises(ValueError, match="threshold_mode must be 'rel' or 'abs'"):
        ReduceLROnPlateau(make_sgd()).load_state_dict(state)


# ---------------------------------------------------------------------- argument checks

def _stepped(make, steps=3):
    """A builder that also steps what it built (some errors come at a step, in torch)."""
    def build(L, o):
        sched = make(L, o)
        for _ in range(steps):
            o.step()
            sched.step(1.0) if isinstance(sched, L.ReduceLROnPlateau) else sched.step()
        return sched
    return build


def _other_optimizer(L, o):
    other = make_optimizer("ours" if L is OURS else "torch", "sgd")
    return L.SequentialLR(o, [L.LinearLR(o), L.StepLR(other, 2)], milestones=[3])


# (id, optimizer, build(lib, optimizer), our error, its message, what torch raises: the
# same type, another type, or None where it accepts the argument). We are stricter than
# torch only where torch divides by zero later or computes nonsense lrs.
ERRORS = [
    ("StepLR-step_size-0", "sgd", _stepped(lambda L, o: L.StepLR(o, 0)), ValueError,
     r"StepLR: step_size must be an integer >= 1, got 0", ZeroDivisionError),
    ("StepLR-step_size-float", "sgd", lambda L, o: L.StepLR(o, 2.5), ValueError,
     r"StepLR: step_size must be an integer >= 1, got 2.5", None),
    ("StepLR-gamma-negative", "sgd", lambda L, o: L.StepLR(o, 2, gamma=-0.5), ValueError,
     r"StepLR: gamma must be a finite number > 0, got -0.5", None),
    ("MultiStepLR-decreasing", "sgd", lambda L, o: L.MultiStepLR(o, [30, 10]), ValueError,
     r"MultiStepLR: milestones must be increasing, got \[30, 10\]", None),
    ("MultiStepLR-float", "sgd", lambda L, o: L.MultiStepLR(o, [1.5]), ValueError,
     r"MultiStepLR: milestones must be a list of integers, got \[1.5\]", None),
    ("MultiStepLR-gamma-0", "sgd", lambda L, o: L.MultiStepLR(o, [3], gamma=0), ValueError,
     r"MultiStepLR: gamma must be a finite number > 0, got 0", None),
    ("ExponentialLR-gamma-nan", "sgd", lambda L, o: L.ExponentialLR(o, math.nan), ValueError,
     r"ExponentialLR: gamma must be a finite number > 0, got nan", None),
    ("ExponentialLR-gamma-str", "sgd", _stepped(lambda L, o: L.ExponentialLR(o, "0.9")),
     ValueError, r"ExponentialLR: gamma must be a finite number > 0, got '0.9'", TypeError),
    ("LinearLR-start-0", "sgd", lambda L, o: L.LinearLR(o, start_factor=0), ValueError,
     r"LinearLR: start_factor must be in \(0, 1\], got 0", ValueError),
    ("LinearLR-start-1.5", "sgd", lambda L, o: L.LinearLR(o, start_factor=1.5), ValueError,
     r"LinearLR: start_factor must be in \(0, 1\], got 1.5", ValueError),
    ("LinearLR-end-negative", "sgd", lambda L, o: L.LinearLR(o, end_factor=-0.1), ValueError,
     r"LinearLR: end_factor must be in \[0, 1\], got -0.1", ValueError),
    ("LinearLR-total_iters-0", "sgd", lambda L, o: L.LinearLR(o, total_iters=0), ValueError,
     r"LinearLR: total_iters must be an integer >= 1, got 0", None),
    ("LambdaLR-count", "sgd", lambda L, o: L.LambdaLR(o, [abs, abs]), ValueError,
     r"LambdaLR: lr_lambda must be one function or a list of 3 \(one per param group\), "
     r"got 2", ValueError),
    ("LambdaLR-not-callable", "sgd", lambda L, o: L.LambdaLR(o, 5), TypeError,
     r"LambdaLR: lr_lambda\[0\] must be callable, got int", TypeError),
    ("CosineAnnealingLR-T_max-0", "sgd", _stepped(lambda L, o: L.CosineAnnealingLR(o, 0)),
     ValueError, r"CosineAnnealingLR: T_max must be >= 1, got 0", ZeroDivisionError),
    ("CosineAnnealingLR-eta_min-None", "sgd",
     _stepped(lambda L, o: L.CosineAnnealingLR(o, 5, eta_min=None)), ValueError,
     r"CosineAnnealingLR: eta_min must be a number, got None", TypeError),
    ("WarmRestarts-T_0-0", "sgd", lambda L, o: L.CosineAnnealingWarmRestarts(o, 0), ValueError,
     r"CosineAnnealingWarmRestarts: T_0 must be an integer >= 1, got 0", ValueError),
    ("WarmRestarts-T_0-float", "sgd", lambda L, o: L.CosineAnnealingWarmRestarts(o, 2.5),
     ValueError, r"CosineAnnealingWarmRestarts: T_0 must be an integer >= 1, got 2.5",
     ValueError),
    ("WarmRestarts-T_mult-0", "sgd", lambda L, o: L.CosineAnnealingWarmRestarts(o, 5, 0),
     ValueError, r"CosineAnnealingWarmRestarts: T_mult must be an integer >= 1, got 0",
     ValueError),
    ("WarmRestarts-T_mult-float", "sgd", lambda L, o: L.CosineAnnealingWarmRestarts(o, 5, 1.5),
     ValueError, r"CosineAnnealingWarmRestarts: T_mult must be an integer >= 1, got 1.5",
     ValueError),
    ("WarmRestarts-eta_min-str", "sgd",
     lambda L, o: L.CosineAnnealingWarmRestarts(o, 5, eta_min="0"), ValueError,
     r"CosineAnnealingWarmRestarts: eta_min must be a number, got '0'", ValueError),
    ("WarmRestarts-negative-epoch", "sgd",
     lambda L, o: L.CosineAnnealingWarmRestarts(o, 5).step(-1), ValueError,
     r"CosineAnnealingWarmRestarts.step: epoch must be a number >= 0, got -1", ValueError),
    ("OneCycleLR-no-length", "sgd", lambda L, o: L.OneCycleLR(o, 0.1), ValueError,
     r"OneCycleLR: give total_steps, or both epochs and steps_per_epoch \(got "
     r"total_steps=None, epochs=None, steps_per_epoch=None\)", ValueError),
    ("OneCycleLR-no-steps_per_epoch", "sgd", lambda L, o: L.OneCycleLR(o, 0.1, epochs=3),
     ValueError, r"OneCycleLR: give total_steps, or both epochs and steps_per_epoch",
     ValueError),
    ("OneCycleLR-total_steps-0", "sgd", lambda L, o: L.OneCycleLR(o, 0.1, 0), ValueError,
     r"OneCycleLR: total_steps must be a positive integer, got 0", ValueError),
    ("OneCycleLR-total_steps-float", "sgd", lambda L, o: L.OneCycleLR(o, 0.1, 10.0),
     ValueError, r"OneCycleLR: total_steps must be a positive integer, got 10.0", ValueError),
    ("OneCycleLR-epochs-0", "sgd",
     lambda L, o: L.OneCycleLR(o, 0.1, epochs=0, steps_per_epoch=10), ValueError,
     r"OneCycleLR: epochs must be a positive integer, got 0", ValueError),
    ("OneCycleLR-steps_per_epoch-negative", "sgd",
     lambda L, o: L.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=-1), ValueError,
     r"OneCycleLR: steps_per_epoch must be a positive integer, got -1", ValueError),
    ("OneCycleLR-pct_start-1.5", "sgd", lambda L, o: L.OneCycleLR(o, 0.1, 10, pct_start=1.5),
     ValueError, r"OneCycleLR: pct_start must be a number in \[0, 1\], got 1.5", ValueError),
    ("OneCycleLR-pct_start-negative", "sgd",
     lambda L, o: L.OneCycleLR(o, 0.1, 10, pct_start=-0.1), ValueError,
     r"OneCycleLR: pct_start must be a number in \[0, 1\], got -0.1", ValueError),
    ("OneCycleLR-anneal", "sgd",
     lambda L, o: L.OneCycleLR(o, 0.1, 10, anneal_strategy="exp"), ValueError,
     r"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got 'exp'", ValueError),
    ("OneCycleLR-max_lr-count", "sgd", lambda L, o: L.OneCycleLR(o, [0.1, 0.2], 10),
     ValueError, r"OneCycleLR: max_lr must have one value per param group \(3\), got 2 values",
     ValueError),
    ("OneCycleLR-base_momentum-count", "sgd",
     lambda L, o: L.OneCycleLR(o, 0.1, 10, base_momentum=[0.8]), ValueError,
     r"OneCycleLR: base_momentum must have one value per param group \(3\), got 1 values",
     ValueError),
    ("OneCycleLR-no-momentum", "adagrad", lambda L, o: L.OneCycleLR(o, 0.1, 10), ValueError,
     r"OneCycleLR: cycle_momentum=True needs an optimizer with 'momentum' or 'betas', and "
     r"Adagrad has neither; pass cycle_momentum=False", ValueError),
    ("OneCycleLR-empty-phase", "sgd", lambda L, o: L.OneCycleLR(o, 0.1, 10, pct_start=0.1),
     ValueError, r"OneCycleLR: phase 1 of the schedule starts and ends at step 0, so it has no "
     r"length; choose another pct_start for total_steps=10", ZeroDivisionError),
    ("OneCycleLR-empty-last-phase", "sgd",
     _stepped(lambda L, o: L.OneCycleLR(o, 0.1, 10, pct_start=1.0), steps=10), ValueError,
     r"OneCycleLR: phase 2 of the schedule starts and ends at step 9", ZeroDivisionError),
    ("OneCycleLR-div_factor-0", "sgd", lambda L, o: L.OneCycleLR(o, 0.1, 10, div_factor=0),
     ValueError, r"OneCycleLR: div_factor must be > 0, got 0", ZeroDivisionError),
    ("OneCycleLR-past-total_steps", "sgd",
     _stepped(lambda L, o: L.OneCycleLR(o, 0.1, total_steps=3), steps=4), ValueError,
     r"OneCycleLR: stepped 4 times, past total_steps=3", ValueError),
    ("SequentialLR-empty", "sgd", lambda L, o: L.SequentialLR(o, [], []), ValueError,
     r"SequentialLR: schedulers must hold at least one scheduler, got none", ValueError),
    ("SequentialLR-milestone-count", "sgd",
     lambda L, o: L.SequentialLR(o, [L.LinearLR(o), L.StepLR(o, 2)], milestones=[3, 6]),
     ValueError, r"SequentialLR: milestones must be 1 epoch\(s\), one fewer than the "
     r"schedulers, got \[3, 6\]", ValueError),
    ("SequentialLR-decreasing", "sgd",
     lambda L, o: L.SequentialLR(o, [L.StepLR(o, 2), L.StepLR(o, 2), L.StepLR(o, 2)],
                                 milestones=[20, 10]), ValueError,
     r"SequentialLR: milestones must be increasing integers >= 0, got \[20, 10\]", None),
    ("SequentialLR-other-optimizer", "sgd", _other_optimizer, ValueError,
     r"SequentialLR: schedulers\[1\] \(StepLR\) schedules another optimizer", ValueError),
    ("SequentialLR-plateau", "sgd",
     lambda L, o: L.SequentialLR(o, [L.LinearLR(o), L.ReduceLROnPlateau(o)], [3]), ValueError,
     r"SequentialLR: schedulers\[1\] is a ReduceLROnPlateau", ValueError),
    ("SequentialLR-not-a-scheduler", "sgd",
     lambda L, o: L.SequentialLR(o, [L.LinearLR(o), 3], [3]), TypeError,
     r"SequentialLR: schedulers\[1\] must be an LRScheduler, got int", TypeError),
    ("ReduceLROnPlateau-mode", "sgd", lambda L, o: L.ReduceLROnPlateau(o, mode="avg"),
     ValueError, r"ReduceLROnPlateau: mode must be 'min' or 'max', got 'avg'", ValueError),
    ("ReduceLROnPlateau-threshold_mode", "sgd",
     lambda L, o: L.ReduceLROnPlateau(o, threshold_mode="pct"), ValueError,
     r"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got 'pct'", ValueError),
    ("ReduceLROnPlateau-factor-1", "sgd", lambda L, o: L.ReduceLROnPlateau(o, factor=1.0),
     ValueError, r"ReduceLROnPlateau: factor must be in \[0, 1\), got 1.0", ValueError),
    ("ReduceLROnPlateau-factor-negative", "sgd",
     lambda L, o: L.ReduceLROnPlateau(o, factor=-0.5), ValueError,
     r"ReduceLROnPlateau: factor must be in \[0, 1\), got -0.5", None),
    ("ReduceLROnPlateau-min_lr-count", "sgd",
     lambda L, o: L.ReduceLROnPlateau(o, min_lr=[0.1, 0.2]), ValueError,
     r"ReduceLROnPlateau: min_lr must have one value per param group \(3\), got 2 values",
     ValueError),
    ("ReduceLROnPlateau-patience", "sgd", lambda L, o: L.ReduceLROnPlateau(o, patience=-1),
     ValueError, r"ReduceLROnPlateau: patience must be an integer >= 0, got -1", None),
    ("ReduceLROnPlateau-cooldown", "sgd", lambda L, o: L.ReduceLROnPlateau(o, cooldown=1.5),
     ValueError, r"ReduceLROnPlateau: cooldown must be an integer >= 0, got 1.5", None),
    ("StepLR-not-an-optimizer", "sgd", lambda L, o: L.StepLR([0.1], 2), TypeError,
     r"StepLR: optimizer must be an Optimizer, got list", TypeError),
    ("OneCycleLR-not-an-optimizer", "sgd", lambda L, o: L.OneCycleLR(None, 0.1, 10), TypeError,
     r"OneCycleLR: optimizer must be an Optimizer, got NoneType", TypeError),
    ("ReduceLROnPlateau-not-an-optimizer", "sgd", lambda L, o: L.ReduceLROnPlateau("sgd"),
     TypeError, r"ReduceLROnPlateau: optimizer must be an Optimizer, got str", TypeError),
    ("LambdaLR-not-an-optimizer", "sgd", lambda L, o: L.LambdaLR(object(), abs), TypeError,
     r"LambdaLR: optimizer must be an Optimizer, got object", AttributeError),
]


@pytest.mark.parametrize("name,kind,make,error,message,torch_error", ERRORS,
                         ids=[e[0] for e in ERRORS])
def test_invalid_arguments(name, kind, make, error, message, torch_error):
    with pytest.raises(error, match=f"^{message}"):
        make(OURS, make_optimizer("ours", kind))
    topt = make_optimizer("torch", kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if torch_error is None:
            make(THEIRS, topt)  # torch accepts it
        else:
            with pytest.raises(torch_error):
                make(THEIRS, topt)


def test_a_failed_step_changes_nothing():
    opt = make_sgd()
    sched = OneCycleLR(opt, max_lr=0.1, total_steps=2, cycle_momentum=False)
    sched.step()
    sched.step()
    before = (sched.state_dict(), [dict(g) for g in opt.param_groups])
    with pytest.raises(ValueError, match="past total_steps=2"):
        sched.step()
    assert (sched.state_dict(), [dict(g) for g in opt.param_groups]) == before


def test_exponential_lr_can_grow_the_lr():
    # gamma > 1 is allowed (an lr range test grows the lr exponentially).
    opt = make_sgd()
    sched = ExponentialLR(opt, gamma=1.5)
    sched.step()
    assert sched.get_last_lr() == [lr * 1.5 for lr in BASE_LRS]
