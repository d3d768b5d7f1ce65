"""Find where a NaN or an Inf first appeared, after a training step produced one.

``fit`` checks one number per step, the loss. Only when it is NaN or infinite does it
call ``find_non_finite``, which replays that step one layer at a time and says which
layer turned finite values into non-finite ones, so healthy steps pay nothing.

The replay walks ``Sequential``, ``Residual`` and ``Graph`` containers down to their
leaves, in the order their own ``forward`` runs them (a graph's nodes in order, named
``graph.node``; a shared layer's later calls ``name@k``), and checks in turn:

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
from .layers.graph import Graph
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


def _count(a: Any) -> str:
    """'3 NaN and 1 Inf among 40 values' for a float array (or a list of them)."""
    if isinstance(a, (list, tuple)):
        a = np.concatenate([np.ravel(v) for v in a if v is not None] or [np.zeros(0)])
    nan = int(np.isnan(a).sum())
    inf = int(np.isinf(a).sum())
    parts = [f"{nan} NaN"] * bool(nan) + [f"{inf} Inf"] * bool(inf)
    return f"{' and '.join(parts)} among {a.size} values"


def _finite(a: Any) -> bool:
    if isinstance(a, (list, tuple)):   # several inputs, outputs or gradients; None: none
        return all(_finite(v) for v in a if v is not None)
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
    if isinstance(layer, Graph):
        return _forward_graph(layer, x, name)
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
    if isinstance(layer, Graph):
        return _backward_graph(layer, grad, name)
    dx = layer.backward(grad)
    bad = _bad_parameters(layer, "grad")
    if bad or not _finite(dx):
        what = [f"its input gradient ({_count(dx)})"] * (not _finite(dx))
        what += [f"the gradient of {', '.join(bad)}"] * bool(bad)
        raise _Found(f"in the backward pass, {' and '.join(what)} of {_describe(name, layer)} "
                     "became non-finite from a finite upstream gradient")
    return dx


def _forward_graph(graph: Graph, x: Any, name: str) -> Any:
    """A graph's nodes one at a time; each node's caches are kept for its backward (a
    shared layer's next call would overwrite them), as ``Graph.forward`` keeps them."""
    arrays = [x] if len(graph.input_names) == 1 else list(x)
    values = dict(zip(graph.input_names, arrays))
    caches = []
    for node in graph.nodes:
        layer = graph.get_layer(node.layer_name)
        args = [values[t] for t in node.inputs]
        out = _forward(layer, args if node.packed else args[0], _join(name, node.name))
        values.update(zip(node.outputs, out if node.multi_output else [out]))
        caches.append([(m, m._cache) for m in layer.modules()])
    object.__setattr__(graph, "_cache", ("diagnose", caches,
                                         [(values[t].shape, values[t].dtype)
                                          for t in graph.input_names]))
    outs = [values[t] for t in graph.output_names]
    return outs if not graph.single_output else outs[0]


def _backward_graph(graph: Graph, grad: Any, name: str) -> Any:
    """The nodes in reverse; a tensor read by several nodes gets the sum of their
    gradients, which is checked too (finite terms can overflow)."""
    _, caches, inputs = graph._cache
    grads: dict[str, Any] = {}

    def add(tensor: str, g: Any, reader: str) -> None:
        if g is None:
            return
        total = g if tensor not in grads else grads[tensor] + g
        if tensor in grads and not _finite(total):
            raise _Found(f"the gradient of tensor {tensor!r} of {_describe(name, graph)}, a sum "
                         f"of finite gradients (the last from {reader!r}), became non-finite: "
                         f"{_count(total)}; the sum overflowed")
        grads[tensor] = total

    for tensor, g in zip(graph.output_names, [grad] if graph.single_output else grad):
        add(tensor, g, "the loss")
    for node, saved in zip(reversed(graph.nodes), reversed(caches)):
        g = [grads.pop(t, None) for t in node.outputs]
        if all(v is None for v in g):
            continue          # nothing from the loss came this way
        for module, cache in saved:
            object.__setattr__(module, "_cache", cache)
        dx = _backward(graph.get_layer(node.layer_name), g if node.multi_output else g[0],
                       _join(name, node.name))
        for tensor, d in zip(node.inputs, dx if node.packed else [dx]):
            add(tensor, d, node.name)
    dxs = [grads.get(t, np.zeros(shape, dtype)) for t, (shape, dtype) in
           zip(graph.input_names, inputs)]
    return dxs[0] if len(dxs) == 1 else dxs


def _replay(model: Layer, loss_fn: Loss, xb: Any, yb: np.ndarray) -> str:
    xb = [np.asarray(v) for v in xb] if isinstance(xb, (list, tuple)) else np.asarray(xb)
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
