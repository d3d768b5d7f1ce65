"""Find where a NaN or an Inf first appeared, after a training step produced one.

``fit`` checks one number per step, the loss. Only when it is NaN or infinite does it
call ``find_non_finite``, which replays that step one layer at a time and says which
layer turned finite values into non-finite ones, so healthy steps pay nothing.

The replay walks ``Sequential`` and ``Residual`` containers down to their leaves, in
the order their own ``forward`` runs them, and checks in turn:

1. the input batch and the targets;
2. each layer's output (and, when it is non-finite, whether the layer's parameters
   already were: a previous update went wrong);
3. the loss, computed from finite outputs;
4. the backward pass in reverse: the loss gradient, then each layer's input gradient
   and parameter gradients.

It reproduces the failed step: the weights are those of that step (``train_step`` does
not update after a non-finite loss), BatchNorm sees the same batch, and each Dropout
layer re-applies the mask of the failed forward (kept in its cache) rather than drawing
a new one. Buffers (BatchNorm's running statistics) and parameter gradients are
restored afterwards, so the replay leaves the model as it found it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .layers.base import Layer
from .layers.container import Residual, Sequential
from .layers.dropout import Dropout
from .losses import Loss

__all__ = ["find_non_finite"]


class _Found(Exception):
    """Carries the diagnosis out of the recursive walk."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _count(a: np.ndarray) -> str:
    """'3 NaN and 1 Inf among 40 values' for a float array."""
    nan = int(np.isnan(a).sum())
    inf = int(np.isinf(a).sum())
    parts = [f"{nan} NaN"] * bool(nan) + [f"{inf} Inf"] * bool(inf)
    return f"{' and '.join(parts)} among {a.size} values"


def _finite(a: Any) -> bool:
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.inexact):
        return True
    return bool(np.isfinite(a).all())


def _describe(name: str, layer: Layer) -> str:
    text = repr(layer)
    if "\n" in text:  # a container that is replayed as one piece: its first line only
        text = text.splitlines()[0] + " ...)"
    return f"layer '{name}' {text}" if name else f"the model itself, {text}"


def _bad_parameters(layer: Layer, attr: str) -> list[str]:
    return [name for name, p in layer.named_parameters() if not _finite(getattr(p, attr))]


def _forward(layer: Layer, x: np.ndarray, name: str) -> np.ndarray:
    """Run ``layer`` on ``x`` one leaf at a time; raise _Found at the first non-finite
    output."""
    if isinstance(layer, Sequential):
        for child_name, child in layer.named_children():
            x = _forward(child, x, _join(name, child_name))
        return x
    if isinstance(layer, Residual):
        x = layer._cast_input(x)
        out = _forward(layer.block, x, _join(name, "block"))
        skip = x if layer.shortcut is None else _forward(layer.shortcut, x, _join(name, "shortcut"))
        y = out + skip
        if not _finite(y):
            raise _Found(f"the output of {_describe(name, layer)} (block + shortcut, each finite) "
                         f"became non-finite: {_count(y)}; the sum overflowed")
        return y
    # A Dropout layer re-applies the failed forward's mask: the same values, no fresh draw.
    y = layer.replay(x) if isinstance(layer, Dropout) else None
    if y is None:
        y = layer.forward(x)
    if not _finite(y):
        message = (f"the output of {_describe(name, layer)} became non-finite ({_count(y)}) "
                   "from a finite input")
        bad = _bad_parameters(layer, "data")
        if bad:
            message += (f"; its parameter(s) {', '.join(bad)} already hold NaN/Inf, so an earlier "
                        "update step produced them (a non-finite gradient; lower the learning rate "
                        "or clip gradients)")
        raise _Found(message)
    return y


def _backward(layer: Layer, grad: np.ndarray, name: str) -> np.ndarray:
    """Backward through ``layer`` one leaf at a time, in reverse; raise _Found at the
    first non-finite input or parameter gradient."""
    if isinstance(layer, Sequential):
        for child_name, child in reversed(list(layer.named_children())):
            grad = _backward(child, grad, _join(name, child_name))
        return grad
    if isinstance(layer, Residual):
        dx = _backward(layer.block, grad, _join(name, "block"))
        dskip = grad if layer.shortcut is None else _backward(layer.shortcut, grad,
                                                              _join(name, "shortcut"))
        dx = dx + dskip
        if not _finite(dx):
            raise _Found(f"the input gradient of {_describe(name, layer)} (block + shortcut "
                         f"gradients, each finite) became non-finite: {_count(dx)}")
        return dx
    dx = layer.backward(grad)
    bad = _bad_parameters(layer, "grad")
    if bad or not _finite(dx):
        what = [f"its input gradient ({_count(dx)})"] * (not _finite(dx))
        what += [f"the gradient of {', '.join(bad)}"] * bool(bad)
        raise _Found(f"in the backward pass, {' and '.join(what)} of {_describe(name, layer)} "
                     "became non-finite from a finite upstream gradient")
    return dx


def _replay(model: Layer, loss_fn: Loss, xb: np.ndarray, yb: np.ndarray) -> str:
    xb = np.asarray(xb)
    yb = np.asarray(yb)
    if not _finite(xb):
        return f"the input batch already holds non-finite values ({_count(xb)}); check the data"
    if not _finite(yb):
        return f"the targets already hold non-finite values ({_count(yb)}); check the data"
    loss_message = ""
    try:
        out = _forward(model, xb, "")
        loss = loss_fn(out, yb)
        if not np.isfinite(loss):
            absmax = float(np.max(np.abs(out), initial=0.0))
            loss_message = (f"the loss {loss_fn!r} became {loss} from finite model outputs "
                            f"(largest |output| {absmax:.3g}, dtype {out.dtype})")
        grad = loss_fn.backward()
        if not _finite(grad):
            raise _Found(f"the gradient of the loss {loss_fn!r} became non-finite ({_count(grad)})")
        _backward(model, grad, "")
    except _Found as found:
        return f"{loss_message}; then {found.message}" if loss_message else found.message
    if loss_message:
        return loss_message + "; the backward pass stays finite"
    return ("replaying the step gave finite values everywhere (the loss was "
            f"{loss}); the non-finite value came from elsewhere")


def find_non_finite(model: Layer, loss_fn: Loss, xb: Any, yb: Any) -> str:
    """Name the first layer whose output or gradient became NaN/Inf on batch (xb, yb).

    Call it after a non-finite loss was seen, with the model's weights and caches as the
    failed forward left them. Layers are named by their dotted path, as in
    ``model.named_modules()`` (``"4"``, ``"2.block.0"``).

    Returns one human-readable sentence (it never raises: a failure of the replay
    itself is reported in the message).
    """
    buffers = [(module, name, np.array(value, copy=True))
               for module in model.modules() for name, value in module._buffer_items()]
    grads = [(p, p.grad.copy()) for p in model.parameters()]
    flags = [(module, module._keep_cache_in_eval) for module in model.modules()]
    model.gradients_in_eval(True)  # so the replayed backward also works on a model in eval mode
    model.zero_grad()              # a non-finite gradient is then this replay's own
    try:
        with np.errstate(all="ignore"):
            return _replay(model, loss_fn, xb, yb)
    except Exception as err:  # the diagnosis must not hide the error it was called for
        return f"the replay of the step failed ({type(err).__name__}: {err})"
    finally:
        for module, name, value in buffers:
            object.__setattr__(module, name, value)
        for p, grad in grads:
            p.grad[...] = grad
        for module, flag in flags:
            object.__setattr__(module, "_keep_cache_in_eval", flag)
            object.__setattr__(module, "_cache", None)
        loss_fn.release()
