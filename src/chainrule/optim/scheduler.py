"""Learning-rate schedules that write ``group["lr"]`` of an optimizer's param groups."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

from chainrule.optim.optimizer import Optimizer


class LRScheduler:
    """Base class: sets each param group's ``lr`` as a function of the epoch count.

    Usage (as in PyTorch)::

        for epoch in range(n):
            train_one_epoch(...)   # calls optimizer.step()
            scheduler.step()

    Args:
        optimizer: the optimizer whose ``param_groups[i]["lr"]`` this scheduler sets.
        last_epoch: index of the last epoch seen; -1 (default) for a fresh run. The
            constructor performs one :meth:`step`, so afterwards ``last_epoch`` is 0
            and every group's lr is its base lr.

    Attributes:
        base_lrs: each group's ``"initial_lr"``, stored in the group by the first
            scheduler attached (so a second scheduler starts from the same base).
        last_epoch: number of :meth:`step` calls minus one.

    Subclasses implement :meth:`get_lr` as a closed form of ``last_epoch`` and
    ``base_lrs``. torch's schedulers update ``group["lr"]`` recursively from its
    current value; the closed forms agree with them to ~1e-12 relative, and unlike
    the recursion they make a resumed run (load_state_dict, then step) reproduce an
    uninterrupted one bit for bit.
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
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
        self.step()

    def get_lr(self) -> list[float]:
        """The learning rate of each param group at ``self.last_epoch``."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and write the new lr into every param group."""
        self.last_epoch += 1
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = list(lrs)

    def get_last_lr(self) -> list[float]:
        """The learning rates set by the latest :meth:`step` (a copy)."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """Every attribute except the optimizer, as plain python values (lists copied)."""
        return {
            key: list(value) if isinstance(value, list) else value
            for key, value in self.__dict__.items()
            if key != "optimizer"
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore attributes saved by :meth:`state_dict` of a scheduler of this type.

        Raises:
            ValueError: keys are missing or unexpected (e.g. a StepLR checkpoint
                loaded into a CosineAnnealingLR).
        """
        expected = set(self.state_dict())
        missing, unexpected = expected - set(state_dict), set(state_dict) - expected
        if missing or unexpected:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: missing keys {sorted(missing)}, "
                f"unexpected keys {sorted(unexpected)}"
            )
        self.__dict__.update(
            {k: list(v) if isinstance(v, list) else v for k, v in state_dict.items()}
        )


class StepLR(LRScheduler):
    """Decay each group's lr by ``gamma`` every ``step_size`` epochs::

        lr = base_lr * gamma ** (last_epoch // step_size)

    Args:
        optimizer: the optimizer to schedule.
        step_size: period of the decay in epochs, an integer >= 1.
        gamma: multiplicative factor of the decay.
        last_epoch: see :class:`LRScheduler`.
    """

    def __init__(
        self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        if not isinstance(step_size, Integral) or isinstance(step_size, bool) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be an integer >= 1, got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        decays = self.last_epoch // self.step_size
        return [base_lr * self.gamma**decays for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Anneal each group's lr along a cosine from ``base_lr`` down to ``eta_min``::

        lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * last_epoch / T_max)) / 2

    reaching ``eta_min`` at ``last_epoch == T_max``; past it the cosine climbs back
    (period ``2 * T_max``), as torch's does. No restarts (see SGDR for those).

    Args:
        optimizer: the optimizer to schedule.
        T_max: number of epochs from ``base_lr`` to ``eta_min``, >= 1.
        eta_min: the minimum learning rate.
        last_epoch: see :class:`LRScheduler`.
    """

    def __init__(
        self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1
    ) -> None:
        if not isinstance(T_max, Real) or isinstance(T_max, bool) or not T_max >= 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be >= 1, got {T_max!r}")
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        cosine = 1 + math.cos(math.pi * self.last_epoch / self.T_max)
        return [self.eta_min + (base_lr - self.eta_min) * cosine / 2 for base_lr in self.base_lrs]
