"""Gradient clipping, as ``torch.nn.utils.clip_grad``: between backward and the
optimizer's step, scale (``clip_grad_norm_``) or clamp (``clip_grad_value_``) the
gradients in place.

::

    loss = loss_fn(model.forward(x), y)
    backward_parameters_only(model, loss_fn.backward())
    total = clip_grad_norm_(model.parameters(), max_norm=1.0)
    optimizer.step()
"""

from __future__ import annotations

import math
import types
import warnings
from collections.abc import Iterable
from typing import Union

import numpy as np

from ..parameter import Parameter

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm", "clip_grads_with_norm_"]

Parameters = Union[Parameter, Iterable[Parameter]]

# torch adds it to the total norm before dividing, so an all-zero gradient gives no 0/0.
_EPS = 1e-6


def _grads(parameters: Parameters, where: str) -> list[np.ndarray]:
    """The gradients of ``parameters`` (a Parameter or an iterable of them), each
    Parameter once even when it is listed twice (a weight shared by two layers appears
    twice in ``model.parameters()``; torch's ``Module.parameters()`` lists it once)."""
    if isinstance(parameters, Parameter):
        parameters = [parameters]
    else:
        is_generator = isinstance(parameters, types.GeneratorType)
        try:
            parameters = list(parameters)
        except TypeError:
            raise TypeError(f"{where}: expected a Parameter or an iterable of Parameters "
                            f"(e.g. model.parameters()), got {type(parameters).__name__}"
                            ) from None
        if is_generator and not parameters:
            warnings.warn(f"{where}: `parameters` is an empty generator, no gradient "
                          "clipping will occur.", stacklevel=3)
    grads, seen = [], set()
    for p in parameters:
        if not isinstance(p, Parameter):
            raise TypeError(f"{where}: expected Parameters (e.g. model.parameters()), got an "
                            f"item of type {type(p).__name__}")
        if id(p) not in seen and p.grad is not None:
            seen.add(id(p))
            grads.append(p.grad)
    return grads


def _as_float(value, name: str, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: {name} must be a number, got {type(value).__name__} "
                        f"{value!r}") from None


def _vector_norm(x: np.ndarray, p: float) -> float:
    """``torch.linalg.vector_norm(x, p)`` of the flattened ``x``, computed in float64:
    ``max|x|`` (p = inf), ``min|x|`` (p = -inf), the count of non-zeros (p = 0), else
    ``(sum |x|^p)^(1/p)``."""
    a = np.asarray(x, dtype=np.float64).ravel()
    if p == 2:  # the default, on every step of a clipped run: no |x| copy needed
        return math.sqrt(float(np.dot(a, a)))
    a = np.abs(a)
    if p == math.inf:
        return float(a.max(initial=0.0))
    if p == -math.inf:
        return float(a.min(initial=math.inf))
    if p == 0:
        return float(np.count_nonzero(a))
    if p == 1:
        return float(a.sum())
    with np.errstate(divide="ignore", over="ignore"):  # 0 ** -p = inf, as in torch
        return float(np.sum(a ** p) ** (1.0 / p))


def _total_norm(grads: list[np.ndarray], norm_type: float) -> np.floating:
    """The norm of the per-gradient norms, each rounded to its gradient's dtype, in the
    common dtype of the gradients (torch's ``get_total_norm``)."""
    dtype = np.result_type(*grads)
    norms = np.array([g.dtype.type(_vector_norm(g, norm_type)) for g in grads], dtype=dtype)
    return dtype.type(_vector_norm(norms, norm_type))


def get_total_norm(tensors: np.ndarray | Iterable[np.ndarray], norm_type: float = 2.0,
                   error_if_nonfinite: bool = False) -> float:
    """The ``norm_type``-norm of all of ``tensors`` (arrays, e.g. gradients) viewed as one
    vector: the norm of their norms, as ``torch.nn.utils.get_total_norm``. 0.0 for none.
    ``norm_type`` is a float or ``"inf"``; ``error_if_nonfinite`` raises RuntimeError
    for a NaN or infinite result."""
    tensors = [tensors] if isinstance(tensors, np.ndarray) else [np.asarray(t) for t in tensors]
    norm_type = _as_float(norm_type, "norm_type", "get_total_norm")
    if not tensors:
        return 0.0
    total = _total_norm(tensors, norm_type)
    _check_finite(total, norm_type, error_if_nonfinite)
    return float(total)


def _check_finite(total: np.floating, norm_type: float, error_if_nonfinite: bool) -> None:
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. To disable this error and scale the "
            "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")


def _scale(grads: list[np.ndarray], max_norm: float, total: np.floating) -> None:
    # torch: clip_coef = max_norm / (total + 1e-6), which its Tensor.__rtruediv__ computes
    # as reciprocal(total + 1e-6) * max_norm, in total's dtype; each step rounded the same
    # way here. Multiplying by a clamped 1 changes nothing, as in torch.
    t = total.dtype.type
    coef = min(np.reciprocal(total + t(_EPS)) * t(max_norm), t(1.0))
    with np.errstate(invalid="ignore"):  # an infinite entry times 0: NaN, as in torch
        for g in grads:
            g *= g.dtype.type(coef)


def clip_grads_with_norm_(parameters: Parameters, max_norm: float, total_norm: float) -> None:
    """Scale the gradients of ``parameters`` in place by
    ``min(max_norm / (total_norm + 1e-6), 1)``, for a ``total_norm`` computed before
    (``get_total_norm``), as ``torch.nn.utils.clip_grads_with_norm_``."""
    grads = _grads(parameters, "clip_grads_with_norm_")
    max_norm = _as_float(max_norm, "max_norm", "clip_grads_with_norm_")
    if grads:
        _scale(grads, max_norm, np.result_type(*grads).type(total_norm))


def clip_grad_norm_(parameters: Parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    """Scale the gradients of ``parameters`` in place so that their total norm is at
    most ``max_norm``, as ``torch.nn.utils.clip_grad_norm_``.

    ``total_norm`` is the ``norm_type``-norm of every gradient viewed as one vector
    (the norm of the per-parameter norms), and each gradient is multiplied by::

        clip_coef = min(max_norm / (total_norm + 1e-6), 1)

    so gradients are only ever scaled down, and all by the same factor (the direction
    of the update is kept).

    Args:
        parameters: a Parameter or an iterable of them (``model.parameters()``); one
            listed twice counts once. Gradients of any shape; float32 ones are scaled
            in float32, with the norm rounded to float32 as torch does.
        max_norm: the largest total norm allowed.
        norm_type: p of the p-norm: any float (2.0: Euclidean), ``math.inf`` or
            ``"inf"`` for the largest absolute entry.
        error_if_nonfinite: raise RuntimeError when the total norm is NaN or infinite
            (the gradients are then left alone); otherwise they are scaled by it anyway.

    Returns:
        The total norm of the gradients *before* clipping, as a Python float (torch
        returns a 0-d tensor). 0.0 for no parameters.
    """
    grads = _grads(parameters, "clip_grad_norm_")
    max_norm = _as_float(max_norm, "max_norm", "clip_grad_norm_")
    norm_type = _as_float(norm_type, "norm_type", "clip_grad_norm_")
    if not grads:
        return 0.0
    total = _total_norm(grads, norm_type)
    _check_finite(total, norm_type, error_if_nonfinite)
    _scale(grads, max_norm, total)
    return float(total)


def clip_grad_value_(parameters: Parameters, clip_value: float) -> None:
    """Clamp every gradient entry of ``parameters`` into ``[-clip_value, clip_value]``
    in place, as ``torch.nn.utils.clip_grad_value_``."""
    grads = _grads(parameters, "clip_grad_value_")
    clip_value = _as_float(clip_value, "clip_value", "clip_grad_value_")
    for g in grads:
        np.clip(g, -clip_value, clip_value, out=g)
