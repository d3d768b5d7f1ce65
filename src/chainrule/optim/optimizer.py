"""The optimizer base class: parameter groups, per-parameter state and checkpoints.

Modelled on ``torch.optim.Optimizer`` so that the vocabulary (``param_groups``,
``state``, ``zero_grad``, ``step``, ``state_dict``) and the checkpoint layout are
the ones PyTorch users already know.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from numbers import Number, Real
from typing import Any

import numpy as np

from chainrule.parameter import Parameter

ParamsT = Iterable[Parameter] | Iterable[Mapping[str, Any]]


class Optimizer:
    """Base class of all optimizers.

    Args:
        params: an iterable of ``Parameter``, or of dicts ("parameter groups")
            each holding ``"params"`` (an iterable of Parameters) and any
            hyper-parameters that should differ from ``defaults`` for that group,
            e.g. ``[{"params": body, "lr": 1e-3}, {"params": head}]``.
        defaults: the hyper-parameters used for a group that does not set them.

    Attributes:
        param_groups: list of dicts, each with ``"params"`` (a list of Parameters)
            and every hyper-parameter, exactly as in PyTorch: learning-rate
            schedulers write ``group["lr"]`` directly.
        state: dict keyed by the Parameter object (not by a name) holding the
            per-parameter buffers; its arrays always have the parameter's dtype.

    Subclasses implement ``step`` and may override ``_validate`` (check one
    group's hyper-parameters), ``_scalar_state`` (state entries that are python
    numbers rather than arrays, e.g. ``"step"``) and ``_torch_group_extras``. The
    pieces that most update rules share are the functions at the end of this module
    (``hyper_floats``, ``prepared_gradient``, ``lerp_``,
    ``ema_square_``) and ``_state_for_step``.

    ``_torch_group_extras``: the group entries torch's twin of the optimizer has that
    only pick one of its implementations (``foreach``, ``fused``, ``capturable``,
    ``differentiable``), with torch's defaults. They do not change the update rule, so
    they are not hyper-parameters here: ``state_dict`` writes them, so that its
    groups have exactly torch's keys, and ``load_state_dict`` drops them.
    """

    _scalar_state: tuple[str, ...] = ()
    _torch_group_extras: Mapping[str, Any] = {}

    def __init__(self, params: ParamsT, defaults: Mapping[str, Any]) -> None:
        self.defaults: dict[str, Any] = dict(defaults)
        self.state: dict[Parameter, dict[str, Any]] = {}
        self.param_groups: list[dict[str, Any]] = []
        self._validate(self.defaults)

        if isinstance(params, (Parameter, np.ndarray)):
            raise TypeError(
                f"{self._name}: params should be an iterable of Parameters or dicts, "
                f"got a single {type(params).__name__}"
            )
        if isinstance(params, set):
            raise TypeError(self._set_message())
        groups = list(params)
        if not groups:
            raise TypeError(f"{self._name} got an empty parameter list")
        if all(isinstance(g, Mapping) for g in groups):
            for group in groups:
                self.add_param_group(group)
        elif any(isinstance(g, Mapping) for g in groups):
            raise TypeError(f"{self._name}: params mixes Parameters and parameter-group dicts")
        else:
            self.add_param_group({"params": groups})

    @property
    def _name(self) -> str:
        return type(self).__name__

    def _set_message(self) -> str:
        # A set's iteration order changes between runs, so the state_dict indices
        # (which are positional) would not be reproducible.
        return f"{self._name}: parameters must be an ordered collection (list/tuple), not a set"

    def _validate(self, hyper: Mapping[str, Any]) -> None:
        """Raise ValueError if a hyper-parameter in ``hyper`` is out of range."""

    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a group: fills unset hyper-parameters from ``defaults`` and validates it."""
        if not isinstance(param_group, Mapping):
            raise TypeError(
                f"{self._name}: a parameter group must be a dict, got {type(param_group).__name__}"
            )
        if "params" not in param_group:
            raise TypeError(f"{self._name}: a parameter group needs a 'params' entry")
        # Copy, so that later edits to the caller's dict do not reach the optimizer.
        group = dict(param_group)
        params = group["params"]
        if isinstance(params, Parameter):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(self._set_message())
        params = list(params)
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(
                    f"{self._name} can only optimize Parameters, but one of the params is "
                    f"{type(p).__name__}"
                )
        # torch only warns here; a duplicate would be stepped twice per step(), which
        # is never intended, so it is an error.
        seen = {p for g in self.param_groups for p in g["params"]}
        for p in params:
            if p in seen:
                raise ValueError(f"{self._name}: {p!r} is given more than once")
            seen.add(p)
        group["params"] = params
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        self._validate(group)
        self.param_groups.append(group)

    def zero_grad(self) -> None:
        """Fill every parameter's gradient with zeros (in place: the arrays stay the same)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.zero_grad()

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Update every parameter from its ``grad``; returns ``closure()`` if given."""
        raise NotImplementedError

    def _param_state(self, p: Parameter) -> dict[str, Any]:
        """The state dict of ``p``, its arrays re-cast if ``p`` changed dtype since."""
        state = self.state.setdefault(p, {})
        for key, value in state.items():
            # Parameter.to() casts in place, keeping the object (and so this key);
            # in-place updates on a buffer of the old dtype would silently keep it.
            if isinstance(value, np.ndarray) and value.dtype != p.dtype:
                state[key] = value.astype(p.dtype)
        return state

    def _state_for_step(self, p: Parameter, *zeros: str, **scalars: Any) -> dict[str, Any]:
        """The state of ``p`` with its ``"step"`` counted (1 on the first step).

        On the first step the state is created as ``{"step": 0, **scalars}`` followed by
        a zero array of ``p``'s shape and dtype for each name in ``zeros``, in that order
        (the order of the entries in ``state_dict``).
        """
        state = self._param_state(p)
        if not state:
            state["step"] = 0
            state.update(scalars)
            for name in zeros:
                state[name] = np.zeros_like(p.data)
        state["step"] += 1
        return state

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """A checkpoint in PyTorch's layout, with copies of every array.

        Returns:
            ``{"state": {index: {name: ndarray or number}},
            "param_groups": [{hyper-parameters..., "params": [index, ...]}]}`` where
            parameters are numbered 0, 1, ... in order across the groups. The state
            names and the group keys are torch's for the same optimizer (its
            implementation switches ``foreach``... included, see the class docstring);
            ``step`` is a python int where torch holds a 0-d float tensor
            (``chainrule.interop.optimizer_state_to_torch`` converts).
        """
        index: dict[Parameter, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for key, default in self._torch_group_extras.items():
                packed.setdefault(key, default)
            packed["params"] = [index.setdefault(p, len(index)) for p in group["params"]]
            groups.append(packed)
        state = {
            index[p]: {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in s.items()}
            for p, s in sorted(self.state.items(), key=lambda item: index.get(item[0], -1))
            if p in index
        }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a checkpoint made by ``state_dict`` of an optimizer of this type.

        Parameters are matched by position (group by group), hyper-parameters are
        taken from the checkpoint, and arrays are copied and cast to the dtype of the
        parameter they belong to. Everything is checked before anything is changed.
        torch's implementation switches (``_torch_group_extras``) are dropped, so the
        state dict of torch's twin loads too once its tensors are arrays
        (``chainrule.interop.optimizer_state_from_torch``).

        Raises:
            ValueError: the group count, a group's size, a state index or an array's
                shape does not match this optimizer's parameters.
        """
        name = f"{self._name}.load_state_dict"
        if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError(f"{name}: expected a dict with 'state' and 'param_groups'")
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{name}: expected {len(self.param_groups)} parameter group(s), "
                f"got {len(saved_groups)}"
            )
        id_map: dict[Any, Parameter] = {}
        new_groups = []
        for g, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"{name}: parameter group {g} expected {len(group['params'])} "
                    f"parameter(s), got {len(saved['params'])}"
                )
            id_map.update(zip(saved["params"], group["params"]))
            # Hyper-parameters come from the checkpoint (as in torch); ones it lacks,
            # e.g. added in a later version, fall back to this optimizer's defaults.
            skip = {"params", *self._torch_group_extras}
            new_group = {**self.defaults, **{k: v for k, v in saved.items() if k not in skip}}
            new_group["params"] = group["params"]
            self._validate(new_group)
            new_groups.append(new_group)

        new_state: dict[Parameter, dict[str, Any]] = {}
        for idx, saved_state in state_dict["state"].items():
            if idx not in id_map:
                raise ValueError(f"{name}: state for parameter index {idx!r}, which no group lists")
            p = id_map[idx]
            new_state[p] = {k: self._load_value(name, idx, k, v, p) for k, v in saved_state.items()}

        self.param_groups = new_groups
        self.state = new_state

    def _load_value(self, name: str, idx: Any, key: str, value: Any, p: Parameter) -> Any:
        if key in self._scalar_state:
            if isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0:
                value = value.item()  # e.g. after a round trip through np.savez
            if not isinstance(value, Number):
                raise ValueError(
                    f"{name}: state[{idx!r}][{key!r}] should be a number, got {value!r}"
                )
            return value
        if isinstance(value, np.ndarray):
            if value.shape != p.shape:
                raise ValueError(
                    f"{name}: state[{idx!r}][{key!r}] has shape {value.shape}, "
                    f"expected {p.shape} (the parameter's shape)"
                )
            return np.array(value, dtype=p.dtype, copy=True, order="C")
        return value

    def __repr__(self) -> str:
        lines = [f"{self._name} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines + [")"])


def check_hyper(optimizer: str, ok: bool, what: str, value: Any) -> None:
    """Raise ``ValueError("<optimizer>: invalid <what>: <value>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{optimizer}: invalid {what}: {value!r}")


def _is_real(value: Any) -> bool:
    if isinstance(value, np.ndarray):  # a 0-d array works wherever a float does
        return value.ndim == 0 and value.dtype.kind in "biuf"
    return isinstance(value, Real)


def check_range(optimizer: str, arg: str, what: str, value: Any, low: float = 0.0,
                high: float | None = None, high_inclusive: bool = False) -> None:
    """Check ``low <= value`` and, with ``high``, ``value < high`` (``<=`` when
    ``high_inclusive``), the ranges torch checks in its optimizers' constructors.

    Raises:
        TypeError: ``value`` is not a real number.
        ValueError: ``"<optimizer>: invalid <what>: <value> (expected <range>)"``;
            the prefix is torch's message, so it reads the same; NaN fails too.
    """
    if not _is_real(value):
        raise TypeError(f"{optimizer}: {arg} must be a real number, got "
                        f"{type(value).__name__} {value!r}")
    ok = low <= value
    if high is not None:
        ok = ok and (value <= high if high_inclusive else value < high)
    if not ok:
        expected = f"{arg} >= {low:g}" if high is None else (
            f"{low:g} <= {arg} {'<=' if high_inclusive else '<'} {high:g}")
        raise ValueError(f"{optimizer}: invalid {what}: {value!r} (expected {expected})")


# How torch's messages name a hyper-parameter: "<name> value" unless listed here.
_HYPER_WORDS = {"lr": "learning rate", "eps": "epsilon value"}


def check_nonnegative(optimizer: str, hyper: Mapping[str, Any], *names: str) -> None:
    """``check_range`` ``hyper[name] >= 0`` for each of ``names``, in that order,
    with torch's words for it ("learning rate", "epsilon value", "<name> value")."""
    for name in names:
        check_range(optimizer, name, _HYPER_WORDS.get(name, f"{name} value"), hyper[name])


def as_tuple(betas: Any) -> Any:
    """A list (e.g. from JSON) as a tuple; anything else as it is, for the checks."""
    return tuple(betas) if isinstance(betas, (list, tuple)) else betas


def check_betas(optimizer: str, betas: Any) -> None:
    """``betas`` must be a pair ``(beta1, beta2)``, each in [0, 1) (Adam and its kin)."""
    if isinstance(betas, (str, bytes, Mapping)) or not hasattr(betas, "__len__"):
        raise TypeError(f"{optimizer}: betas must be a pair (beta1, beta2), got "
                        f"{type(betas).__name__} {betas!r}")
    check_hyper(optimizer, len(betas) == 2, "betas (expected a pair)", betas)
    for i, beta in enumerate(betas):
        check_range(optimizer, f"betas[{i}]", f"beta parameter at index {i}", beta, 0.0, 1.0)


def hyper_floats(group: Mapping[str, Any], *names: str) -> tuple[float, ...]:
    """``group[name]`` as a python float for each of ``names``; a pair (``"betas"``)
    gives its two floats, so ``lr, beta1, beta2 = hyper_floats(group, "lr", "betas")``.

    Python floats, so float32 parameters are not promoted by a numpy scalar (say a
    ``np.float64`` learning rate that a scheduler or a checkpoint put in the group).
    """
    floats: list[float] = []
    for name in names:
        value = group[name]
        if np.ndim(value) == 1:
            floats.extend(float(v) for v in value)
        else:
            floats.append(float(value))
    return tuple(floats)


def prepared_gradient(p: Parameter, group: Mapping[str, Any], *,
                      decoupled: bool = False) -> np.ndarray:
    """The gradient ``g`` that the update rule of ``group`` uses for ``p``::

        g = p.grad
        if maximize:  g = -g
        if weight_decay != 0:
            if decoupled:  p = p * (1 - lr * weight_decay)   # in place, as AdamW
            else:          g = g + weight_decay * p         # L2, coupled

    ``p.grad`` itself is never changed: a flipped or decayed gradient is a new array.
    ``decoupled`` is the group's ``decoupled_weight_decay`` in the optimizers that
    have the option; the others always couple the decay.
    """
    grad = np.negative(p.grad) if group["maximize"] else p.grad
    weight_decay = float(group["weight_decay"])
    if weight_decay != 0:
        if decoupled:
            p.data *= 1 - float(group["lr"]) * weight_decay
        else:
            grad = grad + weight_decay * p.data
    return grad


def lerp_(start: np.ndarray, end: np.ndarray, weight: float) -> None:
    """``start += weight * (end - start)`` in place, rounded the way torch's lerp is.

    torch switches formulas at weight 0.5 (``end - (end - start) * (1 - weight)``
    above it) so that weight 1 gives ``end`` exactly; we follow it so that Adam and
    RMSprop match torch to the last few ulps for any beta, not only beta > 0.5.
    """
    w = start.dtype.type(weight)  # torch casts the scalar weight to the tensor dtype
    if abs(w) < 0.5:
        start += w * (end - start)
    else:
        np.subtract(end, (end - start) * (1 - w), out=start)


def ema_square_(avg: np.ndarray, x: np.ndarray, decay: float) -> None:
    """``avg = decay * avg + (1 - decay) * x * x`` in place, in torch's order of
    operations (``avg.mul_(decay).addcmul_(x, x, value=1 - decay)``)."""
    avg *= decay
    avg += (1 - decay) * x * x
