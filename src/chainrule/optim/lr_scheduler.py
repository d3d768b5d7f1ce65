"""Learning-rate schedulers with ``torch.optim.lr_scheduler``'s names, arguments and
update rules; each writes ``group["lr"]`` (OneCycleLR also ``"momentum"``/``"betas"``)
of an optimizer's param groups.

Usage, as in PyTorch::

    scheduler = SequentialLR(opt, [LinearLR(opt, total_iters=5),
                                   CosineAnnealingLR(opt, T_max=95)], milestones=[5])
    for epoch in range(100):
        train_one_epoch(...)          # calls opt.step()
        scheduler.step()

Every scheduler computes what torch's does, operation for operation, so the learning
rates are the same floats as torch's (not merely close):

- ``StepLR``, ``MultiStepLR``, ``ExponentialLR``, ``LinearLR`` and ``CosineAnnealingLR``
  update ``group["lr"]`` recursively from its current value, as torch's ``step()``
  does. That is what makes them *chainable* (two schedulers stepping one optimizer
  multiply their effects) and what ``SequentialLR`` relies on. Their closed forms
  (``_get_closed_form_lr``) are used where torch uses them: when ``SequentialLR``
  switches to a scheduler at a milestone.
- ``LambdaLR``, ``OneCycleLR`` and ``CosineAnnealingWarmRestarts`` are closed forms of
  ``last_epoch`` in torch itself; ``ReduceLROnPlateau`` reacts to a metric.

Resuming: the recursion continues from the ``lr`` stored in the optimizer's
checkpoint, which round-trips exactly, so a resumed run reproduces an uninterrupted
one bit for bit. Restore in torch's order: build the optimizer and the scheduler,
then ``optimizer.load_state_dict``, then ``scheduler.load_state_dict``. (Building a
scheduler runs its first step, which for ``LinearLR`` scales the current lr: doing
it *after* loading the optimizer would scale the restored lr once more, in torch too.)
"""

from __future__ import annotations

import copy
import math
import types
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from numbers import Integral, Real
from typing import Any

from chainrule.optim.optimizer import Optimizer

__all__ = [
    "LRScheduler",
    "LambdaLR",
    "StepLR",
    "MultiStepLR",
    "LinearLR",
    "ExponentialLR",
    "SequentialLR",
    "CosineAnnealingLR",
    "ReduceLROnPlateau",
    "CosineAnnealingWarmRestarts",
    "OneCycleLR",
]


# ---------------------------------------------------------------------- argument checks

def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _require(owner: str, ok: bool, argument: str, expected: str, got: Any) -> None:
    """``ValueError("<owner>: <argument> must be <expected>, got <got>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{owner}: {argument} must be {expected}, got {got!r}")


def _per_group(owner: str, name: str, optimizer: Optimizer, value: Any) -> list[Any]:
    """``value`` once per param group: a list/tuple of that length, or one value."""
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{owner}: {name} must have one value per param group "
                             f"({n}), got {len(value)} values")
        return list(value)
    return [value] * n


def _lrs(optimizer: Optimizer) -> list[float]:
    return [group["lr"] for group in optimizer.param_groups]


def _cosine(base_lrs: Sequence[float], eta_min: float, t: float, period: float) -> list[float]:
    """``eta_min + (base_lr - eta_min) * (1 + cos(pi * t / period)) / 2`` for each base lr:
    the closed form of both cosine schedules."""
    cosine = 1 + math.cos(math.pi * t / period)
    return [eta_min + (base_lr - eta_min) * cosine / 2 for base_lr in base_lrs]


# ---------------------------------------------------------------------- base class

class LRScheduler:
    """Base class: sets each param group's ``lr`` once per ``step``.

    Args:
        optimizer: the optimizer whose ``param_groups[i]["lr"]`` this scheduler sets.
        last_epoch: index of the last epoch seen; -1 (default) for a fresh run. The
            constructor performs one step (in torch's "initial" mode), so afterwards
            ``last_epoch`` is 0 and every group's lr is the schedule's first value.
            A value >= 0 needs ``"initial_lr"`` in every group (a loaded optimizer).

    Attributes:
        base_lrs: each group's ``"initial_lr"``, stored in the group by the first
            scheduler attached (so a second scheduler starts from the same base).
        last_epoch: number of ``step`` calls since construction.

    Subclasses implement ``get_lr`` (the lrs at ``last_epoch``, from ``base_lrs``
    or recursively from the current ``group["lr"]``) and, where torch has one,
    ``_get_closed_form_lr``.
    """

    # True only during the step the constructor performs (torch's ``_is_initial``):
    # the recursive schedulers then keep the current lr instead of advancing it.
    _is_initial = False

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        _check_optimizer(type(self).__name__, optimizer)
        self.optimizer = optimizer
        for i, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(
                    f"param_groups[{i}] has no 'initial_lr', which resuming with "
                    f"last_epoch={last_epoch} needs: load the optimizer's state_dict first"
                )
        self.base_lrs: list[float] = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._last_lr: list[float] = []
        self._initial_step()

    def _initial_step(self) -> None:
        """Reset the step count and take the constructor's step."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            del self._is_initial  # back to the class default, and out of state_dict()

    def get_lr(self) -> list[float]:
        """The learning rate of each param group at ``self.last_epoch``."""
        raise NotImplementedError

    def _get_closed_form_lr(self) -> list[float] | None:
        """The lrs at ``last_epoch`` from ``base_lrs`` alone; None where torch has no
        closed form (then ``get_lr`` is used)."""
        return None

    def step(self) -> None:
        """Advance one epoch (or batch) and write the new lr into every param group."""
        step_count, last_epoch = self._step_count, self.last_epoch
        self._step_count += 1
        try:
            self._update_lr()
        except Exception:
            # e.g. OneCycleLR stepped past total_steps: leave the state as it was.
            self._step_count, self.last_epoch = step_count, last_epoch
            raise

    def _update_lr(self, epoch: int | None = None) -> None:
        """Next epoch (``epoch`` None) or jump to ``epoch`` through the closed form, as
        ``SequentialLR`` does at a milestone; writes the lrs into the groups."""
        if epoch is None:
            self.last_epoch += 1
            lrs = self.get_lr()
        else:
            self.last_epoch = epoch
            lrs = self._get_closed_form_lr()
            if lrs is None:
                lrs = self.get_lr()
        self._set_lrs(lrs)

    def _set_lrs(self, lrs: Sequence[float]) -> None:
        groups = self.optimizer.param_groups
        if len(lrs) != len(groups):
            raise ValueError(
                f"{type(self).__name__}: the optimizer has {len(groups)} param groups but "
                f"the scheduler computed {len(lrs)} learning rates (a group added after the "
                "scheduler was built?)")
        for group, lr in zip(groups, lrs):
            group["lr"] = lr
        self._last_lr = _lrs(self.optimizer)

    def get_last_lr(self) -> list[float]:
        """The learning rates set by the latest step (a copy)."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """Every attribute except the optimizer, deep-copied (plain python values)."""
        return {key: copy.deepcopy(value) for key, value in self.__dict__.items()
                if key != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore attributes saved by ``state_dict`` of a scheduler of this type.

        The optimizer's lrs are not touched: they come from the optimizer's own
        checkpoint (see the module docstring for the order).

        Raises:
            ValueError: keys are missing or unexpected (e.g. a StepLR checkpoint
                loaded into a CosineAnnealingLR).
        """
        self._check_keys(state_dict)
        self.__dict__.update({k: copy.deepcopy(v) for k, v in state_dict.items()})

    def _check_keys(self, state_dict: dict[str, Any]) -> None:
        expected = set(self.state_dict())
        # Checkpoints of chainrule <= 0.1.0 have no _step_count (its schedulers were
        # closed forms); the one the constructor set is the right one to keep.
        missing = expected - set(state_dict) - {"_step_count"}
        unexpected = set(state_dict) - expected
        if missing or unexpected:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: missing keys {sorted(missing)}, "
                f"unexpected keys {sorted(unexpected)}"
            )


def _check_optimizer(owner: str, optimizer: Any) -> None:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{owner}: optimizer must be an Optimizer, got "
                        f"{type(optimizer).__name__}")


# ---------------------------------------------------------------------- closed forms

class LambdaLR(LRScheduler):
    """Each group's lr is its base lr times a function of the epoch::

        lr = base_lr * lr_lambda(last_epoch)

    Args:
        optimizer: the optimizer to schedule.
        lr_lambda: a function of the epoch (an int) returning a factor, or a list
            with one such function per param group.
        last_epoch: see ``LRScheduler``.

    ``state_dict`` stores, per function, None for a plain function or lambda
    (code is not state) and a copy of ``__dict__`` for a callable object, which
    ``load_state_dict`` restores into the functions given to this instance.
    """

    def __init__(self, optimizer: Optimizer,
                 lr_lambda: Callable[[int], float] | Sequence[Callable[[int], float]],
                 last_epoch: int = -1) -> None:
        _check_optimizer("LambdaLR", optimizer)
        n = len(optimizer.param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n:
                raise ValueError(f"LambdaLR: lr_lambda must be one function or a list of "
                                 f"{n} (one per param group), got {len(lr_lambda)}")
            lambdas = list(lr_lambda)
        else:
            lambdas = [lr_lambda] * n
        for i, fn in enumerate(lambdas):
            if not callable(fn):
                raise TypeError(f"LambdaLR: lr_lambda[{i}] must be callable, got "
                                f"{type(fn).__name__}")
        self.lr_lambdas: list[Callable[[int], float]] = lambdas
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base_lr * fn(self.last_epoch)
                for fn, base_lr in zip(self.lr_lambdas, self.base_lrs)]

    def state_dict(self) -> dict[str, Any]:
        state = {key: copy.deepcopy(value) for key, value in self.__dict__.items()
                 if key not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = [
            None if isinstance(fn, types.FunctionType) else copy.deepcopy(fn.__dict__)
            for fn in self.lr_lambdas
        ]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._check_keys(state_dict)
        saved = state_dict["lr_lambdas"]
        if len(saved) != len(self.lr_lambdas):
            raise ValueError(f"LambdaLR.load_state_dict: {len(saved)} lr_lambdas saved, "
                             f"this scheduler has {len(self.lr_lambdas)}")
        self.__dict__.update({k: copy.deepcopy(v) for k, v in state_dict.items()
                              if k != "lr_lambdas"})
        for fn, attributes in zip(self.lr_lambdas, saved):
            if attributes is not None:
                fn.__dict__.update(copy.deepcopy(attributes))


# ---------------------------------------------------------------------- chainable

class _GammaDecay(LRScheduler):
    """What StepLR, MultiStepLR and ExponentialLR share: each step multiplies the current
    lr by ``gamma ** _decays_now()`` (no decay keeps it as it is), and the closed form is
    ``base_lr * gamma ** _decays_so_far()``. A subclass checks its own arguments, then
    calls this constructor, and defines the two counts."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int) -> None:
        # torch takes any gamma; a negative one flips the sign of the lr every decay and
        # a non-finite one destroys it, so both are refused. gamma > 1 (growth, as in an
        # lr range test) and values in (0, 1) (decay) are fine.
        _require(type(self).__name__, _is_real(gamma) and 0 < gamma < math.inf, "gamma",
                 "a finite number > 0", gamma)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def _decays_now(self) -> int:
        """How many times the step to ``last_epoch`` decays the lr (torch's recursion)."""
        raise NotImplementedError

    def _decays_so_far(self) -> int:
        """How many times the lr has decayed from epoch 0 to ``last_epoch``."""
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        decays = self._decays_now()
        if decays == 0:
            return _lrs(self.optimizer)
        return [lr * self.gamma ** decays for lr in _lrs(self.optimizer)]

    def _get_closed_form_lr(self) -> list[float]:
        decays = self._decays_so_far()
        return [base_lr * self.gamma ** decays for base_lr in self.base_lrs]


class StepLR(_GammaDecay):
    """Decay each group's lr by ``gamma`` every ``step_size`` epochs::

        lr = lr * gamma   when last_epoch > 0 and last_epoch % step_size == 0
        (closed form: base_lr * gamma ** (last_epoch // step_size))

    Args:
        optimizer: the optimizer to schedule.
        step_size: period of the decay in epochs, an integer >= 1.
        gamma: multiplicative factor of the decay, > 0.
        last_epoch: see ``LRScheduler``.
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        _require("StepLR", _is_int(step_size) and step_size >= 1, "step_size",
                 "an integer >= 1", step_size)
        self.step_size = int(step_size)
        super().__init__(optimizer, gamma, last_epoch)

    def _decays_now(self) -> int:
        return int(self.last_epoch != 0 and self.last_epoch % self.step_size == 0)

    def _decays_so_far(self) -> int:
        return self.last_epoch // self.step_size


class MultiStepLR(_GammaDecay):
    """Decay each group's lr by ``gamma`` at each milestone epoch::

        lr = lr * gamma ** milestones.count(last_epoch)
        (closed form: base_lr * gamma ** (number of milestones <= last_epoch))

    Args:
        optimizer: the optimizer to schedule.
        milestones: epoch indices in increasing order (a repeated one decays by
            ``gamma`` once per repeat, as in torch).
        gamma: multiplicative factor of the decay, > 0.
        last_epoch: see ``LRScheduler``.

    ``milestones`` is kept as a sorted list (torch keeps a Counter), so that the
    state_dict is plain JSON.
    """

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        milestones = list(milestones) if isinstance(milestones, Iterable) else milestones
        _require("MultiStepLR", isinstance(milestones, list)
                 and all(_is_int(m) for m in milestones), "milestones",
                 "a list of integers", milestones)
        _require("MultiStepLR", all(a <= b for a, b in zip(milestones, milestones[1:])),
                 "milestones", "increasing", milestones)
        self.milestones: list[int] = [int(m) for m in milestones]
        super().__init__(optimizer, gamma, last_epoch)

    def _decays_now(self) -> int:
        return self.milestones.count(self.last_epoch)

    def _decays_so_far(self) -> int:
        return bisect_right(self.milestones, self.last_epoch)


class LinearLR(LRScheduler):
    """Scale each group's lr by a factor that moves linearly from ``start_factor`` to
    ``end_factor`` over ``total_iters`` steps, then stays (a warm-up, by default)::

        factor(t) = start_factor + (end_factor - start_factor) * min(t, total_iters) / total_iters
        lr(0) = lr * start_factor
        lr(t) = lr(t-1) * factor(t) / factor(t-1)     for 1 <= t <= total_iters

    (torch's recursion, written as ``lr * (1 + (end - start) / (total_iters * start +
    (t - 1) * (end - start)))``.)

    Args:
        optimizer: the optimizer to schedule.
        start_factor: factor of the first epoch, in (0, 1].
        end_factor: factor from ``total_iters`` on, in [0, 1].
        total_iters: length of the ramp in steps, an integer >= 1.
        last_epoch: see ``LRScheduler``.
    """

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5, last_epoch: int = -1) -> None:
        _require("LinearLR", _is_real(start_factor) and 0 < start_factor <= 1,
                 "start_factor", "in (0, 1]", start_factor)
        _require("LinearLR", _is_real(end_factor) and 0 <= end_factor <= 1,
                 "end_factor", "in [0, 1]", end_factor)
        _require("LinearLR", _is_int(total_iters) and total_iters >= 1, "total_iters",
                 "an integer >= 1", total_iters)
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = int(total_iters)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0:
            return [lr * self.start_factor for lr in _lrs(self.optimizer)]
        if self._is_initial or self.last_epoch > self.total_iters:
            return _lrs(self.optimizer)
        change = self.end_factor - self.start_factor
        ratio = 1.0 + change / (self.total_iters * self.start_factor
                                + (self.last_epoch - 1) * change)
        return [lr * ratio for lr in _lrs(self.optimizer)]

    def _get_closed_form_lr(self) -> list[float]:
        factor = (self.start_factor + (self.end_factor - self.start_factor)
                  * min(self.total_iters, self.last_epoch) / self.total_iters)
        return [base_lr * factor for base_lr in self.base_lrs]


class ExponentialLR(_GammaDecay):
    """Decay each group's lr by ``gamma`` every epoch::

        lr = lr * gamma       (closed form: base_lr * gamma ** last_epoch)

    Args:
        optimizer: the optimizer to schedule.
        gamma: multiplicative factor, > 0 (> 1 grows the lr, as an lr range test does).
        last_epoch: see ``LRScheduler``.
    """

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        super().__init__(optimizer, gamma, last_epoch)

    def _decays_now(self) -> int:
        return 0 if self._is_initial else 1

    def _decays_so_far(self) -> int:
        return self.last_epoch


class CosineAnnealingLR(LRScheduler):
    """Anneal each group's lr along a cosine from ``base_lr`` down to ``eta_min``::

        lr(t) = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2

    reaching ``eta_min`` at ``t == T_max``; past it the cosine climbs back (period
    ``2 * T_max``), as torch's does. No restarts (see
    ``CosineAnnealingWarmRestarts``). As in torch, each step computes it
    recursively from the current lr::

        lr(t) = eta_min + (lr(t-1) - eta_min) * (1 + cos(pi*t/T_max)) / (1 + cos(pi*(t-1)/T_max))

    with the closed form on the first step and ``lr(t-1) + (base_lr - eta_min) *
    (1 - cos(pi / T_max)) / 2`` at the bottom of each period (where the ratio is 0/0).

    Args:
        optimizer: the optimizer to schedule.
        T_max: number of epochs from ``base_lr`` to ``eta_min``, >= 1.
        eta_min: the minimum learning rate.
        last_epoch: see ``LRScheduler``.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,
                 last_epoch: int = -1) -> None:
        _require("CosineAnnealingLR", _is_real(T_max) and T_max >= 1, "T_max", ">= 1", T_max)
        _require("CosineAnnealingLR", _is_real(eta_min), "eta_min", "a number", eta_min)
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        t, T, eta_min = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return _lrs(self.optimizer)
        if self._step_count == 1 and t > 0:
            return _cosine(self.base_lrs, eta_min, t, T)
        if (t - 1 - T) % (2 * T) == 0:
            return [lr + (base_lr - eta_min) * (1 - math.cos(math.pi / T)) / 2
                    for base_lr, lr in zip(self.base_lrs, _lrs(self.optimizer))]
        ratio = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
        return [ratio * (lr - eta_min) + eta_min for lr in _lrs(self.optimizer)]

    def _get_closed_form_lr(self) -> list[float]:
        return _cosine(self.base_lrs, self.eta_min, self.last_epoch, self.T_max)


# ---------------------------------------------------------------------- per batch

class CosineAnnealingWarmRestarts(LRScheduler):
    """Cosine annealing with warm restarts (SGDR, Loshchilov & Hutter, 2016)::

        lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2

    where ``T_cur`` counts the epochs since the last restart and ``T_i`` is the
    length of the current period: ``T_0`` at first, multiplied by ``T_mult`` at each
    restart (``T_cur`` reaching ``T_i`` wraps to 0: lr back to ``base_lr``).

    ``step()`` advances one epoch; ``step(epoch)`` jumps to ``epoch``, which may be
    fractional (e.g. ``step(epoch + i / iters)`` after each of ``iters`` batches),
    and then ``T_cur``, ``T_i`` follow from it in closed form, as in torch.

    Args:
        optimizer: the optimizer to schedule.
        T_0: length of the first period, an integer >= 1.
        T_mult: growth factor of the period at each restart, an integer >= 1.
        eta_min: the minimum learning rate.
        last_epoch: see ``LRScheduler``.
    """

    def __init__(self, optimizer: Optimizer, T_0: int, T_mult: int = 1, eta_min: float = 0.0,
                 last_epoch: int = -1) -> None:
        owner = "CosineAnnealingWarmRestarts"
        _require(owner, _is_int(T_0) and T_0 >= 1, "T_0", "an integer >= 1", T_0)
        _require(owner, _is_int(T_mult) and T_mult >= 1, "T_mult", "an integer >= 1", T_mult)
        _require(owner, _is_real(eta_min), "eta_min", "a number", eta_min)
        self.T_0 = int(T_0)
        self.T_i = int(T_0)
        self.T_mult = int(T_mult)
        self.eta_min = eta_min
        self.T_cur: float = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return _cosine(self.base_lrs, self.eta_min, self.T_cur, self.T_i)

    def step(self, epoch: float | None = None) -> None:
        """Advance one epoch, or jump to ``epoch`` (>= 0, may be fractional)."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            _require("CosineAnnealingWarmRestarts.step", _is_real(epoch) and epoch >= 0,
                     "epoch", "a number >= 0", epoch)
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    # Restarts so far: the n with T_0 * (T_mult**n - 1) / (T_mult - 1) <= epoch.
                    n = int(math.log((epoch / self.T_0 * (self.T_mult - 1) + 1), self.T_mult))
                    self.T_cur = epoch - self.T_0 * (self.T_mult**n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult**n
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        self._set_lrs(self.get_lr())


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin, 2017), stepped after every batch.

    The lr rises from ``initial_lr = max_lr / div_factor`` to ``max_lr`` over the first
    ``pct_start`` of ``total_steps``, then falls to ``min_lr = initial_lr /
    final_div_factor``; momentum (SGD, RMSprop: ``group["momentum"]``) or beta1 (Adam
    family: ``group["betas"][0]``) moves the opposite way between ``max_momentum`` and
    ``base_momentum``. Each phase runs from ``start_step`` to ``end_step``::

        pct = (step - start_step) / (end_step - start_step)
        cos:    value = end + (start - end) / 2 * (cos(pi * pct) + 1)
        linear: value = (end - start) * pct + start

    Two phases (fastai's default): steps 0 .. pct_start*total_steps - 1 (initial_lr ->
    max_lr), then .. total_steps - 1 (max_lr -> min_lr). ``three_phase``: up, back
    down to initial_lr symmetrically, then to min_lr. Exactly torch's phase
    boundaries; the schedule allows ``total_steps`` calls of ``step`` after the
    constructor, one more raises ValueError.

    The constructor (with ``last_epoch == -1``) writes ``"initial_lr"``, ``"max_lr"``,
    ``"min_lr"`` and, when cycling momentum, ``"max_momentum"``, ``"base_momentum"``
    into every param group (so the optimizer's checkpoint carries them), and sets the
    momentum (or beta1) to ``max_momentum``.

    Args:
        optimizer: the optimizer to schedule.
        max_lr: peak lr, one number or one per param group.
        total_steps: steps in the cycle; or give ``epochs`` and ``steps_per_epoch``
            (total_steps = epochs * steps_per_epoch). Positive integers.
        pct_start: share of the cycle spent raising the lr, in [0, 1].
        anneal_strategy: "cos" or "linear".
        cycle_momentum: cycle momentum/beta1 (the optimizer must have one).
        base_momentum: the lower momentum bound, a number or one per group.
        max_momentum: the upper momentum bound, a number or one per group.
        div_factor: initial_lr = max_lr / div_factor.
        final_div_factor: min_lr = initial_lr / final_div_factor.
        three_phase: use the three-phase schedule of the paper.
        last_epoch: index of the last *batch*; see ``LRScheduler``.
    """

    def __init__(self, optimizer: Optimizer, max_lr: float | Sequence[float],
                 total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True,
                 base_momentum: float | Sequence[float] = 0.85,
                 max_momentum: float | Sequence[float] = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False,
                 last_epoch: int = -1) -> None:
        owner = "OneCycleLR"
        _check_optimizer(owner, optimizer)
        if total_steps is not None:
            _require(owner, _is_int(total_steps) and total_steps >= 1, "total_steps",
                     "a positive integer", total_steps)
            self.total_steps = int(total_steps)
        elif epochs is not None and steps_per_epoch is not None:
            _require(owner, _is_int(epochs) and epochs >= 1, "epochs", "a positive integer",
                     epochs)
            _require(owner, _is_int(steps_per_epoch) and steps_per_epoch >= 1,
                     "steps_per_epoch", "a positive integer", steps_per_epoch)
            self.total_steps = int(epochs) * int(steps_per_epoch)
        else:
            raise ValueError(f"{owner}: give total_steps, or both epochs and steps_per_epoch "
                             f"(got total_steps={total_steps!r}, epochs={epochs!r}, "
                             f"steps_per_epoch={steps_per_epoch!r})")
        _require(owner, _is_real(pct_start) and 0 <= pct_start <= 1, "pct_start",
                 "a number in [0, 1]", pct_start)
        _require(owner, anneal_strategy in ("cos", "linear"), "anneal_strategy",
                 "'cos' or 'linear'", anneal_strategy)
        _require(owner, _is_real(div_factor) and div_factor > 0, "div_factor", "> 0",
                 div_factor)
        _require(owner, _is_real(final_div_factor) and final_div_factor > 0,
                 "final_div_factor", "> 0", final_div_factor)

        rise_end = float(pct_start * self.total_steps) - 1
        # Each phase: its last step and the group keys of the values it moves between.
        if three_phase:
            self._schedule_phases = [
                {"end_step": rise_end, "start_lr": "initial_lr", "end_lr": "max_lr",
                 "start_momentum": "max_momentum", "end_momentum": "base_momentum"},
                {"end_step": float(2 * pct_start * self.total_steps) - 2,
                 "start_lr": "max_lr", "end_lr": "initial_lr",
                 "start_momentum": "base_momentum", "end_momentum": "max_momentum"},
                {"end_step": self.total_steps - 1, "start_lr": "initial_lr",
                 "end_lr": "min_lr", "start_momentum": "max_momentum",
                 "end_momentum": "max_momentum"},
            ]
        else:
            self._schedule_phases = [
                {"end_step": rise_end, "start_lr": "initial_lr", "end_lr": "max_lr",
                 "start_momentum": "max_momentum", "end_momentum": "base_momentum"},
                {"end_step": self.total_steps - 1, "start_lr": "max_lr", "end_lr": "min_lr",
                 "start_momentum": "base_momentum", "end_momentum": "max_momentum"},
            ]
        self._anneal_func_type = anneal_strategy

        max_lrs = _per_group(owner, "max_lr", optimizer, max_lr)
        self.cycle_momentum = bool(cycle_momentum)
        if self.cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError(f"{owner}: cycle_momentum=True needs an optimizer with "
                                 f"'momentum' or 'betas', and {type(optimizer).__name__} "
                                 "has neither; pass cycle_momentum=False")
            self.use_beta1 = "betas" in optimizer.defaults
            max_momentums = _per_group(owner, "max_momentum", optimizer, max_momentum)
            base_momentums = _per_group(owner, "base_momentum", optimizer, base_momentum)
        if last_epoch == -1:
            for group, peak in zip(optimizer.param_groups, max_lrs):
                group["initial_lr"] = peak / div_factor
                group["max_lr"] = peak
                group["min_lr"] = group["initial_lr"] / final_div_factor
            if self.cycle_momentum:
                for group, high, low in zip(optimizer.param_groups, max_momentums,
                                            base_momentums):
                    self._set_momentum(group, high)
                    group["max_momentum"] = high
                    group["base_momentum"] = low
        super().__init__(optimizer, last_epoch)

    def _set_momentum(self, group: dict[str, Any], value: float) -> None:
        if self.use_beta1:
            group["betas"] = (value, *group["betas"][1:])
        else:
            group["momentum"] = value

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {step} times, past total_steps="
                             f"{self.total_steps}; build it with more total_steps (or epochs)")
        lrs = []
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step <= end_step or i == len(self._schedule_phases) - 1:
                    if end_step == start_step:  # torch: ZeroDivisionError
                        raise ValueError(
                            f"OneCycleLR: phase {i + 1} of the schedule starts and ends at step "
                            f"{end_step:g}, so it has no length; choose another pct_start "
                            f"for total_steps={self.total_steps}")
                    pct = (step - start_step) / (end_step - start_step)
                    lrs.append(self._anneal(group[phase["start_lr"]], group[phase["end_lr"]],
                                            pct))
                    if self.cycle_momentum:
                        self._set_momentum(group, self._anneal(
                            group[phase["start_momentum"]], group[phase["end_momentum"]], pct))
                    break
                start_step = phase["end_step"]
        return lrs


# ---------------------------------------------------------------------- combinators

class SequentialLR(LRScheduler):
    """Run ``schedulers`` one after another, switching at the ``milestones`` epochs.

    Before ``milestones[0]`` the first scheduler steps; at ``milestones[i]`` the
    scheduler ``i + 1`` restarts from its epoch 0 (its closed form at 0, e.g. its
    base lr) and steps from there. The classic warm-up::

        SequentialLR(opt, [LinearLR(opt, start_factor=0.1, total_iters=5),
                           CosineAnnealingLR(opt, T_max=95)], milestones=[5])

    Args:
        optimizer: the optimizer every scheduler in ``schedulers`` schedules.
        schedulers: the schedulers, already built on ``optimizer`` (their
            constructors' steps are undone here, as in torch).
        milestones: ``len(schedulers) - 1`` increasing epoch indices.
        last_epoch: see ``LRScheduler``.
    """

    def __init__(self, optimizer: Optimizer, schedulers: Sequence[LRScheduler],
                 milestones: Sequence[int], last_epoch: int = -1) -> None:
        owner = "SequentialLR"
        _check_optimizer(owner, optimizer)
        schedulers = list(schedulers)
        if not schedulers:
            raise ValueError(f"{owner}: schedulers must hold at least one scheduler, got none")
        for i, scheduler in enumerate(schedulers):
            if not isinstance(scheduler, LRScheduler):
                raise TypeError(f"{owner}: schedulers[{i}] must be an LRScheduler, got "
                                f"{type(scheduler).__name__}")
            if isinstance(scheduler, ReduceLROnPlateau):
                raise ValueError(f"{owner}: schedulers[{i}] is a ReduceLROnPlateau, whose "
                                 "step needs a metric; it cannot be sequenced")
            if scheduler.optimizer is not optimizer:
                raise ValueError(f"{owner}: schedulers[{i}] ({type(scheduler).__name__}) "
                                 "schedules another optimizer than the one given")
        milestones = list(milestones)
        _require(owner, len(milestones) == len(schedulers) - 1, "milestones",
                 f"{len(schedulers) - 1} epoch(s), one fewer than the schedulers", milestones)
        _require(owner, all(_is_int(m) and m >= 0 for m in milestones)
                 and all(a < b for a, b in zip(milestones, milestones[1:])), "milestones",
                 "increasing integers >= 0", milestones)
        self._schedulers = schedulers
        self._milestones = [int(m) for m in milestones]
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for group in optimizer.param_groups:  # back to the start...
            group["lr"] = group["initial_lr"]
        self._undo_steps(self)  # ...and undo the constructors' steps
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    @staticmethod
    def _undo_steps(scheduler: LRScheduler) -> None:
        if isinstance(scheduler, SequentialLR):
            for inner in scheduler._schedulers:
                SequentialLR._undo_steps(inner)
        else:
            scheduler.last_epoch -= 1

    def step(self) -> None:
        """Step the scheduler of the current epoch (restart the next at a milestone)."""
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        """Own attributes plus ``"_schedulers"``: the list of each scheduler's state."""
        state = {key: copy.deepcopy(value) for key, value in self.__dict__.items()
                 if key not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._check_keys(state_dict)
        saved = state_dict["_schedulers"]
        if len(saved) != len(self._schedulers):
            raise ValueError(f"SequentialLR.load_state_dict: {len(saved)} schedulers saved, "
                             f"this one has {len(self._schedulers)}")
        self.__dict__.update({k: copy.deepcopy(v) for k, v in state_dict.items()
                              if k != "_schedulers"})
        for scheduler, state in zip(self._schedulers, saved):
            scheduler.load_state_dict(state)


class ReduceLROnPlateau(LRScheduler):
    """Multiply each group's lr by ``factor`` when a metric stops improving.

    ``step(metric)`` after each evaluation: the metric improves when it beats
    ``best`` by the threshold (``mode="min"``: ``metric < best * (1 - threshold)``
    in "rel" mode, ``metric < best - threshold`` in "abs" mode; mirrored for "max").
    After more than ``patience`` steps in a row without improvement::

        lr = max(lr * factor, min_lr)     (skipped when it would change lr by <= eps)

    and then ``cooldown`` steps pass in which bad epochs are not counted.

    Args:
        optimizer: the optimizer to schedule.
        mode: "min" (e.g. a loss) or "max" (e.g. an accuracy).
        factor: the decay factor, in [0, 1).
        patience: steps without improvement tolerated, an integer >= 0.
        threshold: the least change that counts as an improvement.
        threshold_mode: "rel" or "abs".
        cooldown: steps to wait after a reduction, an integer >= 0.
        min_lr: the floor of the lr, one number or one per param group.
        eps: the least change of lr worth applying.
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float | Sequence[float] = 0,
                 eps: float = 1e-8) -> None:
        owner = "ReduceLROnPlateau"
        _require(owner, _is_real(factor) and 0 <= factor < 1, "factor", "in [0, 1)", factor)
        _check_optimizer(owner, optimizer)
        _require(owner, _is_int(patience) and patience >= 0, "patience", "an integer >= 0",
                 patience)
        _require(owner, _is_int(cooldown) and cooldown >= 0, "cooldown", "an integer >= 0",
                 cooldown)
        self.factor = factor
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            self.default_min_lr = None
            self.min_lrs = _per_group(owner, "min_lr", optimizer, min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(optimizer.param_groups)
        self.patience = int(patience)
        self.cooldown = int(cooldown)
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = _lrs(optimizer)
        self._init_is_better(mode, threshold, threshold_mode)
        self._reset()

    def _reset(self) -> None:
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def _init_is_better(self, mode: str, threshold: float, threshold_mode: str) -> None:
        owner = "ReduceLROnPlateau"
        _require(owner, mode in ("min", "max"), "mode", "'min' or 'max'", mode)
        _require(owner, threshold_mode in ("rel", "abs"), "threshold_mode", "'rel' or 'abs'",
                 threshold_mode)
        _require(owner, _is_real(threshold), "threshold", "a number", threshold)
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def step(self, metrics: float) -> None:  # type: ignore[override]
        """Record one evaluation of the monitored metric (a number or 0-d array)."""
        current = float(metrics)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = _lrs(self.optimizer)

    def _reduce_lr(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(
                    f"ReduceLROnPlateau: the optimizer now has {len(groups)} param groups, "
                    f"min_lr gave {len(self.min_lrs)} values; set .min_lrs to one per group")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, min_lr in zip(groups, self.min_lrs):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._init_is_better(self.mode, self.threshold, self.threshold_mode)
