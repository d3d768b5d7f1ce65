"""Optimizer state between chainrule and PyTorch: continue a run on the other side.

Both sides use the same layout (``{"state": {index: {name: value}}, "param_groups":
[{...hyper-parameters, "params": [index, ...]}]}``, the same state names and the same
group keys, see ``chainrule.optim.Optimizer.state_dict``); only the values' types
differ, and these two functions convert them:

================  ======================================  ===========================
state entry       chainrule                               torch
================  ======================================  ===========================
``step``          python int                              0-d float tensor
``mu_product``    python float (NAdam)                    0-d float tensor
buffers           ndarray, the parameter's dtype          tensor, the parameter's dtype
================  ======================================  ===========================

The 0-d tensors get torch's scalar dtype (float32, or float64 under
``torch.set_default_dtype(torch.float64)``), as torch's own optimizers create them.

Moving a run (weights with ``to_torch``/``from_torch`` or ``load_state_dict``, the
optimizer with these)::

    topt = torch.optim.Adam(torch_model.parameters())
    topt.load_state_dict(optimizer_state_to_torch(opt.state_dict()))

    opt = cr.optim.Adam(model.parameters())
    opt.load_state_dict(optimizer_state_from_torch(topt.state_dict()))

torch is imported only when one of them is called.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .torch import _import_torch

# State entries that are numbers in chainrule and 0-d tensors in torch. Keyed by name,
# not by ndim: the buffers of a 0-d parameter are 0-d too.
SCALAR_STATE = ("step", "mu_product")


def _check_layout(state_dict: Any, where: str) -> None:
    if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
        raise ValueError(f"{where}: expected a dict with 'state' and 'param_groups', got "
                         f"{type(state_dict).__name__}")


def optimizer_state_to_torch(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``Optimizer.state_dict()`` of a chainrule optimizer as the state dict of its torch
    twin, ready for ``torch.optim.<Same>.load_state_dict``.

    Arrays become tensors (copies, same dtype and shape), ``step`` and NAdam's
    ``mu_product`` 0-d tensors of torch's scalar dtype; the groups are copied as they
    are (they already carry torch's keys). Parameters keep their indices, so the torch
    optimizer must list the same parameters in the same order.

    Raises:
        ValueError: ``state_dict`` is not ``{"state": ..., "param_groups": ...}``.
    """
    torch = _import_torch()
    _check_layout(state_dict, "optimizer_state_to_torch")
    scalar_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    state: dict[Any, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        converted: dict[str, Any] = {}
        for name, value in entries.items():
            if name in SCALAR_STATE:
                converted[name] = torch.tensor(float(value), dtype=scalar_dtype)
            elif isinstance(value, np.ndarray):
                converted[name] = torch.tensor(value)  # a copy, the array's dtype
            else:
                converted[name] = value
        state[index] = converted
    groups = [{k: (list(v) if k == "params" else v) for k, v in group.items()}
              for group in state_dict["param_groups"]]
    return {"state": state, "param_groups": groups}


def _number(value: Any) -> Any:
    """A tensor hyper-parameter (torch allows e.g. ``lr=torch.tensor(0.01)``) as a float."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    if isinstance(value, tuple):
        return tuple(_number(v) for v in value)
    return value


def optimizer_state_from_torch(torch_state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``torch.optim.<X>.state_dict()`` as the state dict of chainrule's twin, ready for
    ``chainrule.optim.<X>.load_state_dict``.

    Tensors become ndarrays (copies, on the CPU, same dtype and shape), ``step`` a
    python int and ``mu_product`` a python float; 0-d tensor hyper-parameters become
    python numbers. torch's implementation switches (``foreach``, ``fused``...) stay in
    the groups; chainrule's ``load_state_dict`` drops them.

    Raises:
        ValueError: not ``{"state": ..., "param_groups": ...}``, or a ``step`` that is
            not a whole number.
        TypeError: a tensor NumPy cannot hold (bfloat16).
    """
    torch = _import_torch()
    where = "optimizer_state_from_torch"
    _check_layout(torch_state_dict, where)
    state: dict[Any, dict[str, Any]] = {}
    for index, entries in torch_state_dict["state"].items():
        converted: dict[str, Any] = {}
        for name, value in entries.items():
            if name == "step":
                step = float(value.item() if torch.is_tensor(value) else value)
                if not step.is_integer():
                    raise ValueError(f"{where}: state[{index!r}]['step'] should be a whole "
                                     f"number, got {step!r}")
                converted[name] = int(step)
            elif name in SCALAR_STATE:
                converted[name] = float(value.item() if torch.is_tensor(value) else value)
            elif torch.is_tensor(value):
                try:
                    converted[name] = value.detach().cpu().numpy().copy()
                except TypeError as err:
                    raise TypeError(f"{where}: state[{index!r}][{name!r}] is a {value.dtype} "
                                    f"tensor, which NumPy cannot hold: {err}") from err
            else:
                converted[name] = value
        state[index] = converted
    groups = [{k: (list(v) if k == "params" else _number(v)) for k, v in group.items()}
              for group in torch_state_dict["param_groups"]]
    return {"state": state, "param_groups": groups}
