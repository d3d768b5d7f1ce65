"""Every learning-rate scheduler against torch.optim.lr_scheduler, step by step over 120
steps with three param groups of different base lrs: each group's lr (and OneCycleLR's
momentum/betas), uninterrupted and resumed from a state dict at several steps."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import chainrule as cr  # noqa: E402
from chainrule.parameter import Parameter  # noqa: E402
from tests.helpers import rel_error  # noqa: E402

OURS, THEIRS = cr.optim.lr_scheduler, torch.optim.lr_scheduler
BASE_LRS = (0.1, 0.03, 0.7)
STEPS = 120
TOL = 1e-9  # float64: the lrs are python floats on both sides
# The group entries a scheduler reads or writes (OneCycleLR: all of them).
KEYS = ("lr", "initial_lr", "momentum", "betas", "max_lr", "min_lr", "max_momentum",
        "base_momentum")

# The metric ReduceLROnPlateau watches: a noisy decreasing loss, with plateaus.
LOSS = [float(v) for v in np.exp(-np.arange(STEPS) / 30)
        + 0.08 * np.random.default_rng(7).random(STEPS)]


class WarmupFactor:
    """A callable object (not a function): LambdaLR's state_dict keeps its __dict__."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup

    def __call__(self, epoch: int) -> float:
        return min(1.0, (epoch + 1) / self.warmup)


OPTIMIZERS = {  # (name, kwargs) of the same optimizer in both libraries
    "sgd": ("SGD", dict(lr=1.0, momentum=0.9)),
    "sgd0": ("SGD", dict(lr=1.0)),
    "adam": ("Adam", dict(lr=1.0)),
    "adamw": ("AdamW", dict(lr=1.0, betas=(0.8, 0.99))),
    "rmsprop": ("RMSprop", dict(lr=1.0, momentum=0.5)),
    "adagrad": ("Adagrad", dict(lr=1.0)),  # neither momentum nor betas
}

# (id, optimizer, build(lib, optimizer) -> scheduler or list of chained schedulers).
# Each builder is called with lib = chainrule's module and with torch's: same API.
CASES = [
    ("StepLR-7-0.5", "sgd", lambda L, o: L.StepLR(o, step_size=7, gamma=0.5)),
    ("StepLR-1-0.97", "sgd", lambda L, o: L.StepLR(o, step_size=1, gamma=0.97)),
    ("StepLR-3-default", "sgd", lambda L, o: L.StepLR(o, 3)),
    ("MultiStepLR-repeated", "sgd",
     lambda L, o: L.MultiStepLR(o, milestones=[10, 30, 30, 80], gamma=0.5)),
    ("MultiStepLR-default", "sgd", lambda L, o: L.MultiStepLR(o, [5, 50])),
    ("ExponentialLR-0.97", "sgd", lambda L, o: L.ExponentialLR(o, gamma=0.97)),
    ("ExponentialLR-1.02", "adam", lambda L, o: L.ExponentialLR(o, 1.02)),
    ("LinearLR-default", "sgd", lambda L, o: L.LinearLR(o)),
    ("LinearLR-warmup", "sgd", lambda L, o: L.LinearLR(o, start_factor=0.01, total_iters=40)),
    ("LinearLR-decay", "sgd",
     lambda L, o: L.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=60)),
    ("LinearLR-to-zero", "sgd",
     lambda L, o: L.LinearLR(o, start_factor=0.5, end_factor=0.0, total_iters=100)),
    ("LambdaLR-one", "sgd", lambda L, o: L.LambdaLR(o, lambda e: 0.95**e)),
    ("LambdaLR-per-group", "sgd",
     lambda L, o: L.LambdaLR(o, [lambda e: 1 / (1 + e), lambda e: 0.9 ** (e // 10),
                                 WarmupFactor(12)])),
    ("CosineAnnealingLR-past-T_max", "sgd",
     lambda L, o: L.CosineAnnealingLR(o, T_max=10, eta_min=1e-3)),
    ("CosineAnnealingLR-120", "sgd", lambda L, o: L.CosineAnnealingLR(o, T_max=120)),
    ("CosineAnnealingLR-1", "sgd", lambda L, o: L.CosineAnnealingLR(o, T_max=1)),
    ("CosineAnnealingLR-7", "sgd", lambda L, o: L.CosineAnnealingLR(o, T_max=7, eta_min=0.01)),
    ("WarmRestarts-10", "sgd", lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=10)),
    ("WarmRestarts-7x2", "sgd",
     lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=7, T_mult=2, eta_min=1e-4)),
    ("WarmRestarts-1x2", "sgd", lambda L, o: L.CosineAnnealingWarmRestarts(o, 1, 2)),
    ("WarmRestarts-3x3", "sgd",
     lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=3, eta_min=0.001)),
    ("OneCycleLR-sgd", "sgd",
     lambda L, o: L.OneCycleLR(o, max_lr=[1.0, 0.3, 0.05], total_steps=STEPS)),
    ("OneCycleLR-adam-linear", "adam",
     lambda L, o: L.OneCycleLR(o, max_lr=0.01, epochs=12, steps_per_epoch=10,
                               anneal_strategy="linear")),
    ("OneCycleLR-three-phase", "sgd",
     lambda L, o: L.OneCycleLR(o, 0.5, STEPS, pct_start=0.25, three_phase=True,
                               div_factor=10.0, final_div_factor=100.0)),
    ("OneCycleLR-adamw-momentum-lists", "adamw",
     lambda L, o: L.OneCycleLR(o, max_lr=[0.02, 0.01, 0.05], total_steps=STEPS,
                               base_momentum=[0.8, 0.85, 0.9], max_momentum=(0.9, 0.95, 0.99),
                               three_phase=True, anneal_strategy="linear")),
    ("OneCycleLR-no-momentum", "sgd0",
     lambda L, o: L.OneCycleLR(o, 0.1, STEPS, pct_start=0.5, cycle_momentum=False)),
    ("OneCycleLR-rmsprop", "rmsprop", lambda L, o: L.OneCycleLR(o, 0.01, STEPS, pct_start=0.1)),
    ("SequentialLR-warmup-cosine", "sgd",  # the classic recipe
     lambda L, o: L.SequentialLR(o, [L.LinearLR(o, start_factor=0.1, total_iters=5),
                                     L.CosineAnnealingLR(o, T_max=STEPS - 5)], milestones=[5])),
    ("SequentialLR-three", "sgd",
     lambda L, o: L.SequentialLR(o, [L.ExponentialLR(o, 0.9), L.StepLR(o, 10, 0.5),
                                     L.MultiStepLR(o, [5, 30], 0.3)], milestones=[20, 50])),
    ("SequentialLR-warm-restarts", "adam",
     lambda L, o: L.SequentialLR(o, [L.LinearLR(o, 0.2, total_iters=10),
                                     L.CosineAnnealingWarmRestarts(o, T_0=15, T_mult=2)],
                                 milestones=[10])),
    ("SequentialLR-lambda-cosine", "sgd",
     lambda L, o: L.SequentialLR(o, [L.LambdaLR(o, lambda e: (e + 1) / 8),
                                     L.CosineAnnealingLR(o, T_max=50, eta_min=1e-3)],
                                 milestones=[8])),
    ("chained-exponential-multistep", "sgd",
     lambda L, o: [L.ExponentialLR(o, 0.98), L.MultiStepLR(o, [30, 60, 90], 0.5)]),
    ("chained-linear-cosine", "sgd",
     lambda L, o: [L.LinearLR(o, 0.1, total_iters=10), L.CosineAnnealingLR(o, T_max=STEPS)]),
    ("ReduceLROnPlateau-default", "sgd", lambda L, o: L.ReduceLROnPlateau(o)),
    ("ReduceLROnPlateau-max-abs", "sgd",
     lambda L, o: L.ReduceLROnPlateau(o, mode="max", factor=0.5, patience=2, threshold=0.01,
                                      threshold_mode="abs", cooldown=3,
                                      min_lr=[0.01, 0.001, 0.05])),
    ("ReduceLROnPlateau-eps", "adam",
     lambda L, o: L.ReduceLROnPlateau(o, factor=0.7, patience=0, threshold=0.0,
                                      threshold_mode="abs", min_lr=1e-3, eps=1e-3)),
    ("ReduceLROnPlateau-max-rel", "sgd",
     lambda L, o: L.ReduceLROnPlateau(o, "max", patience=4, cooldown=1, threshold=1e-3)),
]
IDS = [case[0] for case in CASES]


def make_optimizer(lib: str, kind: str):
    name, kwargs = OPTIMIZERS[kind]
    if lib == "ours":
        groups = [{"params": [Parameter(np.zeros(2))], "lr": lr} for lr in BASE_LRS]
        return getattr(cr.optim, name)(groups, **kwargs)
    groups = [{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in BASE_LRS]
    return getattr(torch.optim, name)(groups, **kwargs)


def build(lib: str, kind: str, make):
    opt = make_optimizer(lib, kind)
    scheds = make(OURS if lib == "ours" else THEIRS, opt)
    return opt, scheds if isinstance(scheds, list) else [scheds]


def advance(opt, scheds, t: int) -> None:
    """Step ``t`` of training: the optimizer (torch checks the call order), then each
    scheduler (ReduceLROnPlateau with the metric of that step)."""
    if isinstance(opt, torch.optim.Optimizer):
        opt.step()  # no gradients: a no-op
    for sched in scheds:
        if isinstance(sched, (OURS.ReduceLROnPlateau, THEIRS.ReduceLROnPlateau)):
            sched.step(LOSS[t] if sched.mode == "min" else 1 - LOSS[t])
        else:
            sched.step()


def snapshot(opt, scheds) -> list:
    """Every group's scheduled entries, then each scheduler's get_last_lr()."""
    # (betas come back from JSON as a list)
    groups = [{k: list(g[k]) if k == "betas" else g[k] for k in KEYS if k in g}
              for g in opt.param_groups]
    return [groups, [list(s.get_last_lr()) for s in scheds]]


def run(lib, kind, make, start=0, stop=STEPS, state=None):
    """The snapshots after the constructor (when start == 0) and after steps
    start..stop-1; with ``state``, resume from it first (torch's order: build, then
    the optimizer's state, then the schedulers')."""
    opt, scheds = build(lib, kind, make)
    if state is not None:
        opt.load_state_dict(state[0])
        for sched, sd in zip(scheds, state[1]):
            sched.load_state_dict(sd)
    shots = [snapshot(opt, scheds)] if start == 0 else []
    for t in range(start, stop):
        advance(opt, scheds, t)
        shots.append(snapshot(opt, scheds))
    return shots, (opt, scheds)


def worst_error(ours: list, theirs: list) -> tuple[float, str]:
    """The largest relative error, per number, between two runs' snapshots."""
    worst, where = 0.0, ""
    for t, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        (groups_a, last_a), (groups_b, last_b) = a, b
        pairs = [(f"group {i} {k}", ga.get(k), gb[k])
                 for i, (ga, gb) in enumerate(zip(groups_a, groups_b, strict=True)) for k in gb]
        pairs += [(f"scheduler {j} get_last_lr", la, lb)
                  for j, (la, lb) in enumerate(zip(last_a, last_b, strict=True))]
        for what, x, y in pairs:
            assert x is not None, f"step {t}: {what} missing in ours"
            error = rel_error(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
            if error > worst:
                worst, where = error, f"step {t}: {what}: ours {x}, torch {y}"
    return worst, where


@pytest.mark.parametrize("name,kind,make", CASES, ids=IDS)
def test_matches_torch(name, kind, make):
    ours, _ = run("ours", kind, make)
    theirs, _ = run("torch", kind, make)
    assert len(ours) == len(theirs) == STEPS + 1
    error, where = worst_error(ours, theirs)
    assert error <= TOL, where
    # The schedule does change the lr (so the comparison above could fail).
    lrs = {round(g["lr"], 12) for shot in ours for g in shot[0]}
    assert len(lrs) > 3


@pytest.mark.parametrize("k", [1, 5, 37])
@pytest.mark.parametrize("name,kind,make", CASES, ids=IDS)
def test_resume_from_state_dict(name, kind, make, k):
    straight, _ = run("ours", kind, make)
    _, (opt, scheds) = run("ours", kind, make, stop=k)
    # Through JSON, as a checkpoint stores them: plain python values only.
    state = json.loads(json.dumps([opt.state_dict(), [s.state_dict() for s in scheds]]))
    resumed, _ = run("ours", kind, make, start=k, state=state)
    assert resumed == straight[k + 1:]  # bit for bit

    _, (topt, tscheds) = run("torch", kind, make, stop=k)
    tstate = [topt.state_dict(), [s.state_dict() for s in tscheds]]
    theirs, _ = run("torch", kind, make, start=k, state=tstate)
    error, where = worst_error(resumed, theirs)
    assert error <= TOL, where


@pytest.mark.parametrize("T_0,T_mult", [(3, 1), (2, 2), (1, 3)])
def test_warm_restarts_fractional_epochs(T_0, T_mult):
    """step(epoch + i / iters) after every batch, torch's documented per-batch use."""
    opt, (sched,) = build("ours", "sgd", lambda L, o: L.CosineAnnealingWarmRestarts(
        o, T_0=T_0, T_mult=T_mult, eta_min=1e-3))
    topt, (tsched,) = build("torch", "sgd", lambda L, o: L.CosineAnnealingWarmRestarts(
        o, T_0=T_0, T_mult=T_mult, eta_min=1e-3))
    iters, restarts = 7, 0
    for i in range(STEPS + 1):
        epoch = i / iters
        sched.step(epoch)
        tsched.step(epoch)
        for a, b in zip(sched.get_last_lr(), tsched.get_last_lr()):
            assert rel_error(a, b) <= TOL, f"epoch {epoch}"
        assert (sched.T_i, sched.last_epoch) == (tsched.T_i, tsched.last_epoch)
        assert sched.T_cur == pytest.approx(tsched.T_cur, rel=TOL, abs=1e-12)
        restarts += sched.T_cur < 1 / iters / 2
    assert restarts >= 3  # the fractional form crosses restarts


@pytest.mark.parametrize("name", ["StepLR", "ExponentialLR", "LinearLR", "CosineAnnealingLR"])
def test_resume_through_last_epoch(name):
    """torch's other resume route: load the optimizer, then build with last_epoch=k."""
    kwargs = {"StepLR": dict(step_size=4), "ExponentialLR": dict(gamma=0.9),
              "LinearLR": dict(start_factor=0.05, total_iters=30),
              "CosineAnnealingLR": dict(T_max=25, eta_min=1e-3)}[name]
    lrs = {}
    for lib, L in (("ours", OURS), ("torch", THEIRS)):
        opt = make_optimizer(lib, "sgd")
        sched = getattr(L, name)(opt, **kwargs)
        for t in range(12):
            advance(opt, [sched], t)
        opt2 = make_optimizer(lib, "sgd")
        opt2.load_state_dict(opt.state_dict())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's: last_epoch given
            sched2 = getattr(L, name)(opt2, last_epoch=12, **kwargs)
        lrs[lib] = []
        for t in range(12, 60):
            advance(opt2, [sched2], t)
            lrs[lib].append(sched2.get_last_lr())
    assert rel_error(np.array(lrs["ours"]), np.array(lrs["torch"])) <= TOL


def test_one_cycle_momentum_reaches_its_bounds():
    """Momentum falls to base_momentum at the lr's peak and is back at max_momentum at
    the end; beta2 is never touched."""
    opt, (sched,) = build("ours", "adam", lambda L, o: L.OneCycleLR(o, 0.1, total_steps=100))
    peak = int(0.3 * 100) - 1
    betas = [None]
    for t in range(100):
        sched.step()
        betas.append(opt.param_groups[0]["betas"])
        if t + 1 == peak:
            assert math.isclose(opt.param_groups[0]["lr"], 0.1)
            assert betas[-1] == (0.85, 0.999)
    assert betas[-2][0] == pytest.approx(0.95) and all(b[1] == 0.999 for b in betas[1:])
    with pytest.raises(ValueError, match="OneCycleLR: stepped 101 times, past total_steps=100"):
        sched.step()
    assert sched.last_epoch == 100  # the failed step changed nothing
