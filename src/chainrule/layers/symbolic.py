"""Symbolic tensors: declaring a graph by calling layers on placeholders.

``cr.Input((3, 32, 32))`` returns a ``SymbolicTensor``: no data, only the shape of one
sample (the batch axis is implicit). Calling any layer on symbolic tensors records a
``Node`` (which layer, on which tensors) and returns the node's output tensor(s);
``cr.Graph(inputs, outputs)`` then collects the nodes between them. This is Keras'
functional API; nothing here runs a forward pass on real data.

Shapes are checked as the graph is declared: the layer's own ``forward`` runs once, in
eval mode, on a zero batch of one sample, so a mismatch (a ``Concat`` of maps of
different sizes, a ``Linear`` of the wrong width) fails at the line that made it, with
the layer's own message and the node's name. A dimension given as ``None`` (a fully
convolutional net's height and width) is unknown: the nodes that depend on it are
checked when the graph runs instead.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np

# Nodes are numbered in creation order: a node's inputs always exist before it, so
# this order is topological for every graph declared through symbolic calls.
_NODE_IDS = itertools.count()

Shape = tuple  # one sample's shape, entries int or None (unknown)


class SymbolicTensor:
    """A placeholder for an array of shape ``(N, *shape)`` in a graph being declared.

    Attributes:
        shape: one sample's shape (no batch axis); an entry is None where unknown, and
            the whole shape is None when not even the rank is known.
        node: the ``Node`` that produces this tensor (an input node for ``cr.Input``).
        index: which of the node's outputs this is (0 unless the layer splits).
    """

    __slots__ = ("shape", "node", "index")

    def __init__(self, shape: Shape | None, node: "Node", index: int = 0) -> None:
        self.shape = shape
        self.node = node
        self.index = index

    @property
    def name(self) -> str:
        """The producing node's name, with ``:k`` for output k of a multi-output node."""
        base = self.node.name or self.node.default_name()
        return base if len(self.node.outputs) == 1 else f"{base}:{self.index}"

    def __repr__(self) -> str:
        shape = "?" if self.shape is None else ", ".join(
            "?" if d is None else str(d) for d in self.shape)
        return f"SymbolicTensor(shape=(N, {shape}), from {self.name!r})"

    # Arrays-like operations would silently build nothing: say how to do it instead.
    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError(f"{self!r} has no values: it is a placeholder for declaring a graph. "
                        "Call layers on it, then build cr.Graph(inputs, outputs) and call the "
                        "graph on arrays")

    def __bool__(self) -> bool:
        raise TypeError(f"{self!r} has no truth value: it is a placeholder for declaring a "
                        "graph")


class Node:
    """One call of a layer (or one graph input) in a declared graph.

    Attributes:
        layer: the layer called, or None for a graph input.
        inputs: the symbolic tensors it was called on.
        packed: True when the layer was called on a list (merge layers: ``Add()([a, b])``),
            so its ``forward`` takes a list and its ``backward`` returns one.
        outputs: the tensors it produces; ``multi_output`` when the layer returns a list
            (``Split``, ``Chunk``, a graph with several outputs).
        name: the name given at the call (``layer(x, name="stem")``) or to ``cr.Input``.
    """

    __slots__ = ("id", "layer", "inputs", "packed", "outputs", "multi_output", "name")

    def __init__(self, layer: Any, inputs: Sequence[SymbolicTensor], packed: bool,
                 name: str | None) -> None:
        self.id = next(_NODE_IDS)
        self.layer = layer
        self.inputs = tuple(inputs)
        self.packed = packed
        self.outputs: tuple[SymbolicTensor, ...] = ()
        self.multi_output = False
        self.name = name

    def default_name(self) -> str:
        return "input" if self.layer is None else type(self.layer).__name__.lower()

    def __repr__(self) -> str:
        what = "Input" if self.layer is None else repr(self.layer).split("\n")[0]
        return f"Node({self.name or self.default_name()!r}: {what})"


def _check_name(name: Any, where: str) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str) or not name or any(c in name for c in " \t\n\"'/"):
        raise ValueError(f"{where}: a name must be a non-empty string without spaces, quotes "
                         f"or '/', got {name!r}")
    return name


def _check_shape(shape: Any) -> Shape | None:
    if shape is None:
        return None
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if dims is None or not all(d is None or (isinstance(d, (int, np.integer))
                                             and not isinstance(d, bool) and d > 0)
                               for d in dims):
        raise ValueError("Input: shape must be one sample's shape without the batch axis, "
                         f"positive ints or None for unknown, such as (3, 32, 32), got {shape!r}")
    return tuple(None if d is None else int(d) for d in dims)


def Input(shape: Sequence[int | None] | int | None, name: str | None = None) -> SymbolicTensor:
    """A graph input: a placeholder for arrays of shape ``(N, *shape)``.

    Args:
        shape: one sample's shape without the batch axis, e.g. ``(3, 32, 32)``; an entry
            may be None (unknown until the graph runs, e.g. ``(1, None, None)`` for a
            fully convolutional net), or the whole shape None.
        name: the input's name in ``repr``, errors, ``summary`` and ONNX export.
    """
    node = Node(None, (), False, _check_name(name, "Input"))
    node.outputs = (SymbolicTensor(_check_shape(shape), node, 0),)
    return node.outputs[0]


def is_symbolic(x: Any) -> bool:
    """Whether ``x`` is a symbolic tensor or a list/tuple holding one."""
    if isinstance(x, SymbolicTensor):
        return True
    return isinstance(x, (list, tuple)) and any(isinstance(t, SymbolicTensor) for t in x)


def _known(shape: Shape | None) -> bool:
    return shape is not None and all(d is not None for d in shape)


def _describe_call(layer: Any, name: str | None, inputs: Sequence[SymbolicTensor]) -> str:
    shapes = ", ".join(repr(t) for t in inputs)
    where = f"node {name!r} " if name else ""
    return f"{where}{repr(layer).splitlines()[0]} called on {shapes}"


def _probe(layer: Any, arrays: Any) -> Any:
    """Run ``layer.forward`` on ``arrays`` in eval mode without changing the layer: every
    module's mode, cache and eval-gradient switch are put back afterwards."""
    saved = [(m, m.training, m._cache, m._keep_cache_in_eval) for m in layer.modules()]
    try:
        for m, *_ in saved:
            object.__setattr__(m, "training", False)
            object.__setattr__(m, "_keep_cache_in_eval", False)
        return layer.forward(arrays)
    finally:
        for m, training, cache, keep in saved:
            object.__setattr__(m, "training", training)
            object.__setattr__(m, "_cache", cache)
            object.__setattr__(m, "_keep_cache_in_eval", keep)


def call_symbolic(layer: Any, x: Any, name: str | None = None,
                  num_outputs: int | None = None) -> SymbolicTensor | list[SymbolicTensor]:
    """Record ``layer(x)`` on symbolic tensors and return its output tensor(s).

    ``num_outputs`` says how many outputs the layer returns where the shapes are not
    known and the declaration cannot find out by running the layer (``from_torch``
    knows it from the traced graph)."""
    name = _check_name(name, repr(layer).splitlines()[0])
    packed = isinstance(x, (list, tuple))
    inputs = list(x) if packed else [x]
    for i, t in enumerate(inputs):
        if not isinstance(t, SymbolicTensor):
            raise TypeError(f"{repr(layer).splitlines()[0]}: input {i} is a "
                            f"{type(t).__name__}, not a symbolic tensor; a layer called on "
                            "symbolic tensors takes only symbolic tensors (constants must be "
                            "layers or parameters)")
    node = Node(layer, inputs, packed, name)
    if all(_known(t.shape) for t in inputs):
        dtype = layer.dtype or np.dtype(np.float32)
        arrays = [np.zeros((1, *t.shape), dtype=dtype) for t in inputs]
        try:
            result = _probe(layer, arrays if packed else arrays[0])
        except (ValueError, TypeError, IndexError, NotImplementedError) as err:
            raise type(err)(f"{_describe_call(layer, name, inputs)}: {err}") from err
        if isinstance(result, (list, tuple)):
            node.multi_output = True
            shapes = [tuple(r.shape[1:]) for r in result]
        else:
            shapes = [tuple(result.shape[1:])]
    else:
        # Shapes unknown until the graph runs: a layer that splits must say how many
        # pieces it makes without seeing its input (Split with explicit sections does).
        multi = num_outputs is not None or getattr(layer, "multi_output", False)
        count = num_outputs if num_outputs is not None else getattr(layer, "known_num_outputs",
                                                                     None)
        if multi and count is None:
            raise ValueError(f"{_describe_call(layer, name, inputs)}: the number of outputs "
                             "depends on the input's shape, which is not known here; give "
                             "cr.Input the full shape")
        node.multi_output = multi
        shapes = [None] * (count if multi else 1)
    node.outputs = tuple(SymbolicTensor(s, node, i) for i, s in enumerate(shapes))
    return list(node.outputs) if node.multi_output else node.outputs[0]
