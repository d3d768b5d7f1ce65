"""Instance-level method hooks: watch a layer's ``forward``/``backward`` from the outside.

A hook is installed as an *instance* attribute that shadows the class method, so the
layer's own code and every other layer stay untouched, and removing the attribute
restores the layer exactly. Nothing is installed while nobody watches: a model that
is not being inspected runs the plain class methods, with no wrapper to pay for.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..layers.base import Layer

# after(layer, argument, result) is called with the method's argument and return value.
AfterFn = Callable[[Layer, np.ndarray, np.ndarray], None]

_MISSING = object()


class MethodHook:
    """Calls the method it shadows, then ``after(layer, argument, result)``.

    Hooks stack: installing a second hook on the same method wraps the first, and
    ``remove`` puts back whatever was there before (the class method, or the first hook).

    A backward hook passes ``needs_input_grad=False`` through (the layer then returns
    None and ``after`` is not called), except while ``wants_result()`` says the watcher
    reads the input gradient: then the layer computes it anyway.
    """

    def __init__(self, layer: Layer, method: str, after: AfterFn | None,
                 wants_result: Callable[[], bool] | None = None) -> None:
        self.layer = layer
        self.method = method
        self.after = after
        self.wants_result = wants_result
        self.previous = layer.__dict__.get(method, _MISSING)

    def __call__(self, arg: np.ndarray, **kwargs: Any) -> np.ndarray | None:
        if (kwargs.get("needs_input_grad") is False and self.after is not None
                and (self.wants_result is None or self.wants_result())):
            kwargs = {}
        if self.previous is _MISSING:
            result = getattr(type(self.layer), self.method)(self.layer, arg, **kwargs)
        else:
            result = self.previous(arg, **kwargs)
        if self.after is not None and result is not None:
            self.after(self.layer, arg, result)
        return result

    def __deepcopy__(self, memo: dict[int, Any]) -> "MethodHook":
        # A copy of a watched model (layer.copy()) must compute with its own weights and
        # must not report into the original's recorder: it gets an inert hook bound to
        # the copied layer.
        clone = MethodHook.__new__(MethodHook)
        clone.layer = copy.deepcopy(self.layer, memo)
        clone.method = self.method
        clone.after = None
        clone.wants_result = None
        clone.previous = (_MISSING if self.previous is _MISSING
                          else copy.deepcopy(self.previous, memo))
        return clone


def install(layer: Layer, method: str, after: AfterFn,
            wants_result: Callable[[], bool] | None = None) -> MethodHook:
    """Shadow ``layer.<method>`` with a hook that calls ``after`` once it returns
    (``wants_result``: see ``MethodHook``)."""
    hook = MethodHook(layer, method, after, wants_result)
    # object.__setattr__: Layer.__setattr__ would do the same for a plain callable, but
    # this says plainly that nothing is registered.
    object.__setattr__(layer, method, hook)
    return hook


def remove(hook: MethodHook) -> None:
    """Undo ``install``: put back what ``hook`` shadowed."""
    layer = hook.layer
    if layer.__dict__.get(hook.method) is not hook:
        raise RuntimeError(f"{layer!r}: {hook.method} hooks must be removed in the reverse "
                           "order of installation")
    if hook.previous is _MISSING:
        object.__delattr__(layer, hook.method)
    else:
        object.__setattr__(layer, hook.method, hook.previous)


def leaf_layers(model: Layer) -> list[tuple[str, Layer]]:
    """(dotted name, layer) of every layer without children, in registration order,
    which for a Sequential is the order of the forward pass. The model itself is named
    ``"model"`` when it is a leaf (a bare layer)."""
    leaves = [(name, m) for name, m in model.named_modules() if not m._children]
    return [(name or "model", m) for name, m in leaves]


def call_counts(model: Layer) -> dict[int, int]:
    """id(module) -> how many times one forward pass of ``model`` calls it: once per
    call of its parent, times the number of nodes that call it where the parent is a
    ``Graph`` (a shared layer, a graph called twice and everything inside it)."""
    from ..layers.graph import Graph   # graph imports the layers this module watches

    counts: dict[int, int] = {}

    def visit(layer: Layer, times: int) -> None:
        counts[id(layer)] = counts.get(id(layer), 0) + times
        if isinstance(layer, Graph):
            nodes: dict[str, int] = {}
            for node in layer.nodes:
                nodes[node.layer_name] = nodes.get(node.layer_name, 0) + 1
            for name, child in layer.named_children():
                visit(child, times * nodes.get(name, 0))
        else:
            for child in layer.children():
                visit(child, times)

    visit(model, 1)
    return counts


def call_names(name: str, calls: int) -> list[str]:
    """The names of the ``calls`` calls of the layer ``name`` in one forward pass:
    ``name``, then ``name@1``, ``name@2``, ... as a graph names a shared layer's nodes."""
    return [name] + [f"{name}@{k}" for k in range(1, calls)]


def joined(value: Any) -> np.ndarray:
    """An array, or the elements of a list of arrays (a multi-input layer's inputs, a
    Split's outputs; None entries left out) as one flat array, for statistics taken
    over all of them."""
    if not isinstance(value, (list, tuple)):
        return value
    parts = [np.ravel(v) for v in value if v is not None]
    return np.concatenate(parts) if parts else np.zeros(0)


@contextmanager
def capture_outputs(layers: list[tuple[str, Layer]],
                    reduce: Callable[[np.ndarray], np.ndarray] | None = None
                    ) -> Iterator[dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Within the block, ``captured[name] = (input, output)`` of each given layer's last
    forward call, or ``(None, reduce(output))`` when ``reduce`` is given (to keep a
    sample of large activations instead of holding on to all of them). Hooks are
    removed on exit."""
    captured: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    hooks = []
    for name, layer in layers:
        def keep(_layer: Layer, x: np.ndarray, y: np.ndarray, name: str = name) -> None:
            captured[name] = (x, y) if reduce is None else (None, reduce(joined(y)))
        hooks.append(install(layer, "forward", keep))
    try:
        yield captured
    finally:
        for hook in reversed(hooks):
            remove(hook)


@contextmanager
def eval_mode(model: Layer, gradients: bool = False) -> Iterator[Layer]:
    """Put ``model`` in eval mode for the block (with ``gradients_in_eval`` when
    ``gradients``), then restore every module's mode, forward cache and, since backward
    *adds* into ``p.grad``, every parameter gradient.

    Eval mode, because inspecting a prediction must not update BatchNorm's running
    statistics or draw dropout masks; the restoring, because an inspection in the middle
    of training must leave no trace in it.
    """
    modules = list(model.modules())
    saved = [(m, m.training, m._keep_cache_in_eval, m._cache) for m in modules]
    grads = [(p, p.grad.copy()) for p in model.parameters()] if gradients else []
    model.eval()
    model.gradients_in_eval(gradients)
    try:
        yield model
    finally:
        for module, training, keep, cache in saved:
            object.__setattr__(module, "training", training)
            object.__setattr__(module, "_keep_cache_in_eval", keep)
            object.__setattr__(module, "_cache", cache)
        for p, grad in grads:
            p.grad[...] = grad  # in place: an optimizer may hold the array
