"""Graph: any network that is a directed acyclic graph of layers.

Declared once, Keras-style, then run on arrays::

    x = cr.Input((3, 32, 32))
    a = cr.Conv2d(3, 16, 1)(x)
    b = cr.Conv2d(3, 16, 3, padding=1)(x)
    y = cr.ReLU()(cr.Concat(dim=1)([a, b]))
    model = cr.Graph(inputs=x, outputs=y)
    out = model(batch)            # (N, 32, 32, 32)
    dx = model.backward(grad)     # (N, 3, 32, 32)

There is no autograd tape. ``forward`` runs the nodes in topological order, each its
layer's own ``forward``. ``backward`` runs them in reverse, each its layer's own
``backward``, and where a tensor feeds several nodes the gradients coming back from
them are *summed*: the chain rule's sum over paths (Caffe's split layers). A tensor's
gradient is complete once every node that read it has run its backward, which the
reverse topological order guarantees.

A layer object called at two nodes shares its weights: both backward passes add into
the same ``p.grad``. Its forward caches are kept per node (a layer holds one cache, so
the graph stores the first call's cache while the second runs and puts it back before
that node's backward).

Layers become the graph's children under the node names given at the call
(``cr.Conv2d(...)(x, name="stem")`` gives ``state_dict`` keys ``stem.weight``), the
attribute names a subclass assigned before calling ``Graph.__init__``, or otherwise
their lower-case class name with a counter (``conv2d``, ``conv2d_1``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .base import Layer, backward_parameters_only
from .symbolic import Node, SymbolicTensor, _known


@dataclass(frozen=True)
class GraphNode:
    """One node of a built graph, as ``Graph.nodes`` lists them (topological order).

    ``inputs``/``outputs`` name tensors: a node's name, ``name:k`` for its k-th output
    when it has several, or a graph input's name."""

    name: str
    layer_name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    packed: bool
    multi_output: bool


@dataclass(frozen=True)
class _Step:
    """What forward/backward need of one node, precomputed when the graph is built."""

    layer_name: str
    in_slots: tuple[int, ...]
    out_slots: tuple[int, ...]
    packed: bool
    multi_output: bool
    shared: bool            # the layer (or a module inside it) runs at another node too
    inputs_need_grad: bool  # some input depends on a parameter: dLoss/dinput is needed
    has_parameters: bool
    release: tuple[int, ...]  # slots read for the last time here: forward frees them


def _as_tensors(value: Any, what: str) -> tuple[list[SymbolicTensor], bool]:
    single = isinstance(value, SymbolicTensor)
    items = [value] if single else value
    if not isinstance(items, (list, tuple)) or not items:
        raise TypeError(f"Graph: {what} must be a symbolic tensor (from cr.Input or a layer "
                        f"call) or a non-empty list of them, got {type(value).__name__}")
    for i, t in enumerate(items):
        if not isinstance(t, SymbolicTensor):
            raise TypeError(f"Graph: {what}[{i}] must be a symbolic tensor (from cr.Input or a "
                            f"layer call), got {type(t).__name__}")
    return list(items), single


def _topological(outputs: Sequence[SymbolicTensor]) -> list[Node]:
    """The nodes the outputs depend on, each after its inputs; a cycle is an error that
    names a node on it."""
    order: list[Node] = []
    state: dict[int, int] = {}   # node id -> 1 while on the stack, 2 when done
    for out in outputs:
        stack: list[tuple[Node, int]] = [(out.node, 0)]
        while stack:
            node, i = stack.pop()
            if i == 0:
                if state.get(node.id) == 2:
                    continue
                if state.get(node.id) == 1:
                    raise ValueError(f"Graph: the graph has a cycle through node "
                                     f"{node.name or node.default_name()!r}")
                state[node.id] = 1
            if i < len(node.inputs):
                stack.append((node, i + 1))
                child = node.inputs[i].node
                if state.get(child.id) == 1:
                    raise ValueError(f"Graph: the graph has a cycle through node "
                                     f"{child.name or child.default_name()!r}")
                if state.get(child.id) != 2:
                    stack.append((child, 0))
            else:
                state[node.id] = 2
                order.append(node)
    # Declaration order reads best (an Inception block's branches in the order written)
    # and is topological for every graph made by calling layers; a node list made by
    # hand (a loaded description) keeps the depth-first order when it is not.
    by_declaration = sorted(order, key=lambda n: n.id)
    position = {n.id: i for i, n in enumerate(by_declaration)}
    if all(position[t.node.id] < position[n.id] for n in by_declaration for t in n.inputs):
        return by_declaration
    return order


class Graph(Layer):
    """A network whose layers form a directed acyclic graph; itself a ``Layer``.

    Args:
        inputs: a symbolic tensor from ``cr.Input``, or a list of them.
        outputs: a symbolic tensor produced by calling layers on the inputs, or a list.

    Shape:
        ``forward`` takes one array ``(N, *input_shape)`` (a list of arrays for several inputs,
        in the order of ``inputs``) and returns one array (a list for several outputs).
        ``backward`` takes one gradient per output, shaped like that output (a list for several;
        an entry may be None for an output that does not reach the loss), and returns
        dLoss/dinput (a list for several inputs).

    Backward:
        The nodes' ``backward`` in reverse declaration order (a topological order), each on
        the gradient of its output tensor(s). A tensor read by several nodes receives the
        *sum* of their input gradients (Caffe's split), ``dL/dt = sum_k dL/dt_k``, before
        the node that produced it runs; a node none of whose outputs reaches the loss is
        skipped.

    Raises (when declared): TypeError for something that is not a symbolic tensor;
    ValueError for an input no output depends on, an output that depends on an input not
    listed, a repeated input, a cycle, two layers given one name. Each layer call already
    checked its shapes when it was made.
    """

    can_skip_input_grad = True

    def __new__(cls, *args: Any, **kwargs: Any) -> "Graph":
        # Layer's registries exist before __init__ runs, so that a subclass can assign
        # its layers as attributes (their names become state_dict keys) and then call
        # Graph.__init__ with the tensors it made from them.
        self = super().__new__(cls)
        Layer.__init__(self)
        return self

    def __init__(self, inputs: Any, outputs: Any) -> None:
        ins, single_in = _as_tensors(inputs, "inputs")
        outs, single_out = _as_tensors(outputs, "outputs")
        seen: set[int] = set()
        for i, t in enumerate(ins):
            if t.node.layer is not None:
                raise ValueError(f"Graph: inputs[{i}] ({t!r}) is produced by a layer; graph "
                                 "inputs must come from cr.Input")
            if id(t) in seen:
                raise ValueError(f"Graph: inputs[{i}] ({t!r}) is listed twice")
            seen.add(id(t))
        nodes = _topological(outs)
        listed = {id(t.node) for t in ins}
        for node in nodes:
            if node.layer is None and id(node) not in listed:
                raise ValueError(f"Graph: the outputs depend on the input "
                                 f"{node.outputs[0]!r}, which is not among the graph's inputs")
        used = {id(n) for n in nodes}
        for i, t in enumerate(ins):
            if id(t.node) not in used:
                raise ValueError(f"Graph: inputs[{i}] ({t!r}) is not used by any output")
        self._build(ins, outs, [n for n in nodes if n.layer is not None], single_in, single_out)

    # ------------------------------------------------------------------ building
    def _build(self, ins: list[SymbolicTensor], outs: list[SymbolicTensor], nodes: list[Node],
               single_in: bool, single_out: bool) -> None:
        layer_names = self._name_layers(nodes)
        node_names = self._name_nodes(ins, nodes, layer_names)

        slots: dict[int, int] = {}
        tensor_names: list[str] = []

        def new_slot(t: SymbolicTensor, name: str) -> int:
            slots[id(t)] = len(tensor_names)
            tensor_names.append(name)
            return slots[id(t)]

        for t in ins:
            new_slot(t, node_names[id(t.node)])
        for node in nodes:
            for t in node.outputs:
                base = node_names[id(node)]
                new_slot(t, f"{base}:{t.index}" if node.multi_output else base)

        last_read: dict[int, int] = {}
        for step_index, node in enumerate(nodes):
            for t in node.inputs:
                last_read[slots[id(t)]] = step_index
        kept = {slots[id(t)] for t in outs}

        module_users: dict[int, int] = {}
        for node in nodes:
            for module in {id(m) for m in node.layer.modules()}:
                module_users[module] = module_users.get(module, 0) + 1

        requires_grad = [False] * len(tensor_names)
        steps = []
        for step_index, node in enumerate(nodes):
            in_slots = tuple(slots[id(t)] for t in node.inputs)
            has_parameters = any(True for _ in node.layer.parameters())
            inputs_need_grad = any(requires_grad[s] for s in in_slots)
            out_slots = tuple(slots[id(t)] for t in node.outputs)
            for s in out_slots:
                requires_grad[s] = has_parameters or inputs_need_grad
            steps.append(_Step(
                layer_name=layer_names[id(node.layer)], in_slots=in_slots, out_slots=out_slots,
                packed=node.packed, multi_output=node.multi_output,
                shared=any(module_users[id(m)] > 1 for m in node.layer.modules()),
                inputs_need_grad=inputs_need_grad, has_parameters=has_parameters,
                release=tuple(sorted({s for s in in_slots
                                      if last_read[s] == step_index and s not in kept}))))

        object.__setattr__(self, "_steps", tuple(steps))
        object.__setattr__(self, "_input_slots", tuple(slots[id(t)] for t in ins))
        object.__setattr__(self, "_output_slots", tuple(slots[id(t)] for t in outs))
        object.__setattr__(self, "_input_shapes", tuple(t.shape for t in ins))
        object.__setattr__(self, "_tensor_names", tuple(tensor_names))
        object.__setattr__(self, "_single_input", single_in)
        object.__setattr__(self, "_single_output", single_out)
        object.__setattr__(self, "_nodes", tuple(
            GraphNode(name=node_names[id(node)], layer_name=step.layer_name,
                      inputs=tuple(tensor_names[s] for s in step.in_slots),
                      outputs=tuple(tensor_names[s] for s in step.out_slots),
                      packed=step.packed, multi_output=step.multi_output)
            for node, step in zip(nodes, steps)))
        # The declared SymbolicTensors and Nodes are not kept: a built graph holds names
        # and slots only, so copying a deep graph (densenet121) never recurses along them.

    def _name_layers(self, nodes: list[Node]) -> dict[int, str]:
        """Register each distinct layer as a child, in the order of its first node, and
        return id(layer) -> its name."""
        names: dict[int, str] = {id(layer): name for name, layer in self._children.items()}
        taken: dict[str, Layer] = dict(self._children)
        # Names given at calls first, so that an automatic name never takes one of them.
        for node in nodes:
            if node.name is None:
                continue
            layer, current = node.layer, names.get(id(node.layer))
            if current is not None:
                if current != node.name:
                    raise ValueError(f"Graph: one layer ({layer!r}) is named both {current!r} "
                                     f"and {node.name!r}; a shared layer has one name")
                continue
            if node.name in taken:
                raise ValueError(f"Graph: two different layers are named {node.name!r} "
                                 f"({taken[node.name]!r} and {layer!r}); names must be unique")
            self._check_free(node.name, layer)
            names[id(layer)] = node.name
            taken[node.name] = layer
        counters: dict[str, int] = {}
        for node in nodes:
            layer = node.layer
            if id(layer) not in names:
                base = type(layer).__name__.lower()
                name = base
                while name in taken or hasattr(type(self), name) or name in self.__dict__:
                    counters[base] = counters.get(base, 0) + 1
                    name = f"{base}_{counters[base]}"
                names[id(layer)] = name
                taken[name] = layer
            if names[id(layer)] not in self._children:
                setattr(self, names[id(layer)], layer)
        return names

    def _check_free(self, name: str, layer: Layer) -> None:
        if hasattr(type(self), name) or (name in self.__dict__ and name not in self._children):
            raise ValueError(f"Graph: the name {name!r} (given to {layer!r}) is taken by the "
                             "Graph class itself; choose another")

    @staticmethod
    def _name_nodes(ins: list[SymbolicTensor], nodes: list[Node],
                    layer_names: dict[int, str]) -> dict[int, str]:
        """id(node) -> node name: an input's name (or input, input_1, ...); a layer's
        name for its first call and ``name@k`` for its k-th later call."""
        names: dict[int, str] = {}
        used = set(layer_names.values())
        for i, t in enumerate(ins):
            name = t.node.name or ("input" if i == 0 else f"input_{i}")
            if name in used:
                raise ValueError(f"Graph: the input name {name!r} is also a layer's name; "
                                 "give cr.Input another name")
            used.add(name)
            names[id(t.node)] = name
        calls: dict[str, int] = {}
        for node in nodes:
            base = layer_names[id(node.layer)]
            k = calls.get(base, 0)
            calls[base] = k + 1
            names[id(node)] = base if k == 0 else f"{base}@{k}"
        return names

    # ------------------------------------------------------------------ description
    @property
    def nodes(self) -> tuple[GraphNode, ...]:
        """The nodes in the order forward runs them."""
        return self._nodes

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self._tensor_names[s] for s in self._input_slots)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self._tensor_names[s] for s in self._output_slots)

    @property
    def single_input(self) -> bool:
        """Whether the graph was declared with one input tensor (not a list): forward
        then takes an array, else a list of arrays."""
        return self._single_input

    @property
    def single_output(self) -> bool:
        """Whether the graph was declared with one output tensor (not a list): forward
        then returns an array and backward takes one, else lists."""
        return self._single_output

    @property
    def input_shapes(self) -> tuple[Any, ...]:
        """Each input's declared shape (one sample, no batch axis; None where unknown)."""
        return self._input_shapes

    def fan_out(self) -> dict[str, int]:
        """Tensor name -> how many node inputs read it, for tensors read more than once:
        where backward sums gradients (a graph output counts as one more reader)."""
        counts: dict[int, int] = {}
        for step in self._steps:
            for s in step.in_slots:
                counts[s] = counts.get(s, 0) + 1
        for s in self._output_slots:
            counts[s] = counts.get(s, 0) + 1
        return {self._tensor_names[s]: k for s, k in counts.items() if k > 1}

    def extra_repr(self) -> str:
        return f"inputs={list(self.input_names)}, outputs={list(self.output_names)}"

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        for node in self._nodes:
            layer = repr(self._children[node.layer_name]).replace("\n", "\n  ")
            shown = layer if node.name == node.layer_name else f"(shared) {node.layer_name}"
            lines.append(f"  ({node.name}): {shown} <- {', '.join(node.inputs)}")
        lines.append(f"  outputs: {', '.join(self.output_names)}")
        lines.append(")")
        return "\n".join(lines)

    # ------------------------------------------------------------------ running
    def _take_inputs(self, x: Any) -> list[np.ndarray]:
        count = len(self._input_slots)
        if self._single_input:
            arrays = [x]
        elif not isinstance(x, (list, tuple)) or len(x) != count:
            got = f"a list of {len(x)}" if isinstance(x, (list, tuple)) else type(x).__name__
            raise TypeError(f"{type(self).__name__}: forward expects a list of {count} arrays "
                            f"(inputs {list(self.input_names)}), got {got}")
        else:
            arrays = list(x)
        out = []
        for array, shape, name in zip(arrays, self._input_shapes, self.input_names):
            array = self._cast_input(array)
            if shape is not None and (array.ndim != len(shape) + 1 or any(
                    d is not None and d != a for d, a in zip(shape, array.shape[1:]))):
                expected = ", ".join("?" if d is None else str(d) for d in shape)
                raise ValueError(f"{type(self).__name__}: input {name!r} expects arrays of "
                                 f"shape (N, {expected}), got shape {array.shape}")
            out.append(array)
        return out

    def forward(self, x: Any) -> Any:
        arrays = self._take_inputs(x)
        values: list[Any] = [None] * len(self._tensor_names)
        for slot, array in zip(self._input_slots, arrays):
            values[slot] = array
        keep = self.keeps_cache
        saved_caches: dict[int, list[tuple[Layer, Any]]] = {}
        children = self._children
        for index, step in enumerate(self._steps):
            layer = children[step.layer_name]
            args = [values[s] for s in step.in_slots]
            out = layer.forward(args if step.packed else args[0])
            if step.multi_output:
                if not isinstance(out, (list, tuple)) or len(out) != len(step.out_slots):
                    raise ValueError(f"{type(self).__name__}: node {self._nodes[index].name!r} "
                                     f"was declared with {len(step.out_slots)} outputs but its "
                                     f"layer returned {_count(out)}")
                for slot, value in zip(step.out_slots, out):
                    values[slot] = value
            else:
                values[step.out_slots[0]] = out
            if keep and step.shared:
                saved_caches[index] = [(m, m._cache) for m in layer.modules()]
            for slot in step.release:   # inference holds only the tensors still to be read
                values[slot] = None
        outs = [values[s] for s in self._output_slots]
        if keep:
            self._cache = (tuple((o.shape, o.dtype) for o in outs),
                           tuple((a.shape, a.dtype) for a in arrays), saved_caches)
        return outs[0] if self._single_output else outs

    def _output_grads(self, grad: Any, meta: tuple) -> list[np.ndarray | None]:
        if self._single_output:
            grads = [grad]
        elif not isinstance(grad, (list, tuple)) or len(grad) != len(meta):
            got = f"a list of {len(grad)}" if isinstance(grad, (list, tuple)) else \
                type(grad).__name__
            raise TypeError(f"{type(self).__name__}: backward expects a list of {len(meta)} "
                            f"gradients (outputs {list(self.output_names)}), got {got}")
        else:
            grads = list(grad)
        checked: list[np.ndarray | None] = []
        for g, (shape, dtype), name in zip(grads, meta, self.output_names):
            if g is None and not self._single_output:
                checked.append(None)
                continue
            if not isinstance(g, np.ndarray):
                raise TypeError(f"{type(self).__name__}: backward expects an ndarray gradient "
                                f"for output {name!r}, got {type(g).__name__}")
            if g.shape != shape:
                raise ValueError(f"{type(self).__name__}: backward expected a gradient of shape "
                                 f"{shape} for output {name!r} (its forward shape), got "
                                 f"{g.shape}")
            checked.append(g.astype(dtype, copy=False))
        return checked

    def backward(self, grad: Any, needs_input_grad: bool = True) -> Any:
        out_meta, in_meta, saved_caches = self._take_cache()
        grads: list[Any] = [None] * len(self._tensor_names)

        def accumulate(slot: int, g: np.ndarray | None) -> None:
            if g is None:
                return
            # A new array for the sum: the first gradient may be another layer's array.
            grads[slot] = g if grads[slot] is None else grads[slot] + g

        for slot, g in zip(self._output_slots, self._output_grads(grad, out_meta)):
            accumulate(slot, g)
        children = self._children
        for index in range(len(self._steps) - 1, -1, -1):
            step = self._steps[index]
            layer = children[step.layer_name]
            if step.multi_output:
                g = [grads[s] for s in step.out_slots]
                reached = any(v is not None for v in g)
            else:
                g = grads[step.out_slots[0]]
                reached = g is not None
            for slot in step.out_slots:
                grads[slot] = None
            if step.shared:
                for module, cache in saved_caches.get(index, ()):
                    module._cache = cache
            if not reached:   # nothing from the loss came this way: nothing to add
                _release(layer)
                continue
            if needs_input_grad or step.inputs_need_grad:
                dx = layer.backward(g)
                if step.packed:
                    for slot, d in zip(step.in_slots, dx):
                        accumulate(slot, d)
                else:
                    accumulate(step.in_slots[0], dx)
            elif step.has_parameters:
                backward_parameters_only(layer, g)
            else:
                _release(layer)
        if not needs_input_grad:
            return None
        dxs = [grads[s] if grads[s] is not None else np.zeros(shape, dtype=dtype)
               for s, (shape, dtype) in zip(self._input_slots, in_meta)]
        return dxs[0] if self._single_input else dxs

    # ------------------------------------------------------------------ traversal
    def get_layer(self, name: str) -> Layer:
        """The layer named ``name`` (as ``nodes`` and ``state_dict`` name it; a dotted name
        such as ``"layer1.0.conv1"`` from ``from_torch`` too)."""
        if name not in self._children:
            raise KeyError(f"{type(self).__name__}: no layer named {name!r}; the layers are "
                           f"{list(self._children)}")
        return self._children[name]


def _release(layer: Layer) -> None:
    for module in layer.modules():
        module._cache = None


def _count(out: Any) -> str:
    return f"{len(out)} outputs" if isinstance(out, (list, tuple)) else "one array"
