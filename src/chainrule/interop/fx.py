"""Any torch module that ``torch.fx`` can trace, as a chainrule ``Graph``; and back.

``graph_from_torch(module, input_shape)`` traces ``module`` into an fx graph and replays
it on chainrule's symbolic tensors (``cr.Input``), one fx node at a time:

- ``call_module`` nodes go through ``interop.torch``'s leaf table (the one place that
  maps modules), whole ``nn.Sequential``/``TorchResidual`` trees of supported modules
  included (the tracer keeps those as leaves, so they stay one ``Sequential`` child), and
  a ``GraphModule`` inside becomes a nested ``Graph``. A module object called twice is
  one layer called at two nodes: shared weights, as in torch.
- ``call_function``/``call_method`` nodes go through ``_FUNCTIONS``, a table from the
  traced target (``torch.cat``, ``operator.add``, ``F.relu``, ``"Tensor.view"``, ...) to
  a small function that records the equivalent chainrule layer or, for size arithmetic
  (``x.size(0)``, ``x.shape[1] // 2``), computes the number.

Sizes are static: each symbolic tensor knows one sample's shape, and the batch size is
the symbol ``N``, which may only be passed through (``x.view(x.size(0), -1)`` is
``Reshape((-1,))``). The graph's layers are named by torch's module paths, so its
``state_dict`` has the keys of ``module.state_dict()``; layers made from functions are
named by their fx node (``add``, ``cat_3``).

``graph_to_torch(graph)`` writes a ``torch.fx.GraphModule``: a placeholder per graph
input (named as the input), a ``call_module`` per node (named by the layer), ``getitem``
for the pieces of a multi-output node. Each placeholder keeps the input's declared shape
in ``node.meta["chainrule_shape"]``, so converting it back needs no ``input_shape``.
"""

from __future__ import annotations

import functools
import inspect
import math
import operator
from typing import Any, Callable, Sequence

from .. import layers as L
from ..layers.symbolic import SymbolicTensor, call_symbolic
from ._common import UnsupportedModuleError, child_path, shown_path
from .torch import (_convert_from, _convert_to, _import_torch, _is_leaf_module,
                    _leaf_from_torch, _leaf_to_torch, _residual_class, _set_mode, _torch_name)

SHAPE_META = "chainrule_shape"


class _BatchSize:
    """The batch size: unknown when converting, and the same for every tensor."""

    def __repr__(self) -> str:
        return "N"


N = _BatchSize()


def _target_name(target: Any) -> str:
    """``torch.nn.functional.relu``, ``operator.add``, ``torch.cat``: as users write it (a
    string, a method's ``"Tensor.view"`` or a qualified name, stays as it is)."""
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None) or "torch"
    module = {"_operator": "operator", "torch._C._nn": "torch.nn.functional",
              "torch.functional": "torch"}.get(module, module)
    return f"{module}.{getattr(target, '__name__', target)}"


# ---------------------------------------------------------------------------- torch -> chainrule
class _Conversion:
    """The state of one traced module's conversion: each fx node's value (a symbolic
    tensor, a list of them, or a static number/tuple) and the layers made so far."""

    def __init__(self, torch: Any, root: Any, path: str) -> None:
        self.torch = torch
        self.root = root
        self.path = path
        self.training = bool(root.training)
        self.leaves = _leaf_from_torch(torch)
        self.residual_cls = _residual_class()
        self.by_target: dict[str, L.Layer] = {}
        # Names a function's layer must not take: torch's module paths, the Graph's own
        # attributes, and those given out already.
        self.taken = {name for name, _ in root.named_modules()}
        self.node: Any = None

    # ------------------------------------------------------------------ errors
    def error(self, why: str) -> UnsupportedModuleError:
        node = self.node
        where = f" of {shown_path(self.path)}" if self.path else ""
        target = {"call_function": _target_name(node.target),
                  "call_method": f"Tensor.{node.target}"}.get(node.op, repr(node.target))
        return UnsupportedModuleError(
            f"traced node {node.name!r}{where} (op {node.op}, target {target}): {why}")

    def shape(self, x: SymbolicTensor) -> tuple:
        """One sample's shape, every entry known, or an error saying to pass input_shape."""
        if x.shape is None or None in x.shape:
            raise self.error(f"needs the shape of its input {x!r}, which is not known here: "
                             "pass input_shape to from_torch (one sample's shape, no batch axis)")
        return x.shape

    def rank(self, x: SymbolicTensor) -> int:
        """The number of axes of the batched tensor."""
        if x.shape is None:
            raise self.error(f"needs the rank of its input {x!r}, which is not known here: pass "
                             "input_shape to from_torch (one sample's shape, no batch axis)")
        return len(x.shape) + 1

    def tensor(self, x: Any, what: str = "input") -> SymbolicTensor:
        if not isinstance(x, SymbolicTensor):
            raise self.error(f"expected a tensor as its {what}, got {x!r} (a traced number or "
                             "constant): chainrule layers take tensors only")
        return x

    def not_batch(self, dim: Any, what: str = "dim") -> int:
        if dim == 0:
            raise self.error(f"{what}=0 is the batch axis; chainrule layers act on each sample "
                             "and keep the batch axis")
        return dim

    # ------------------------------------------------------------------ recording
    def call(self, layer: L.Layer, x: Any) -> Any:
        """Record a layer made for a function node, named after the node."""
        if isinstance(x, (list, tuple)):
            x = [self.tensor(t, f"input {i}") for i, t in enumerate(x)]
        else:
            x = self.tensor(x)
        if not isinstance(layer, L.Dropout):   # a Dropout is made in training mode only
            layer.train(self.training)
        return self._record(layer, x, self._fresh_name(self.node.name))

    def _fresh_name(self, base: str) -> str:
        name = base
        while name in self.taken or hasattr(L.Graph, name):
            name += "_"
        self.taken.add(name)
        return name

    def _record(self, layer: L.Layer, x: Any, name: str, num_outputs: int | None = None) -> Any:
        try:
            return call_symbolic(layer, x, name=name, num_outputs=num_outputs)
        except (ValueError, TypeError) as err:
            raise self.error(f"chainrule's {repr(layer).splitlines()[0]} refused it: "
                             f"{err}") from err

    def static(self, op: Callable, *values: Any) -> Any:
        """Size arithmetic, done now: numbers only (the batch size passes through untouched)."""
        for v in values:
            if isinstance(v, SymbolicTensor):
                raise self.error(f"mixes the tensor {v!r} with the number(s) "
                                 f"{[x for x in values if x is not v]}: chainrule has no layer "
                                 "for arithmetic between a tensor and a constant")
            if v is N:
                raise self.error("does arithmetic on the batch size N (x.size(0) or "
                                 "x.shape[0]): chainrule keeps the batch axis implicit, so N "
                                 "may only be passed on unchanged, as in x.view(x.size(0), -1)")
        return op(*values)

    def module_call(self, target: str, args: tuple, kwargs: dict) -> Any:
        torch = self.torch
        module = self.root.get_submodule(target)
        if kwargs:
            raise self.error(f"{_torch_name(module)} is called with keyword arguments "
                             f"{sorted(kwargs)}; chainrule layers take tensors only")
        inputs = [self.tensor(a, f"argument {i}") for i, a in enumerate(args)]
        if "." not in target and hasattr(L.Graph, target):
            raise self.error(f"the module name {target!r} is taken by chainrule.Graph itself; "
                             "rename the module")
        layer = self.by_target.get(target)
        if layer is None:
            try:
                if isinstance(module, torch.fx.GraphModule):
                    layer = _trace(module, [t.shape for t in inputs], target)
                else:
                    layer = _convert_from(module, target, torch, self.leaves, self.residual_cls)
            except UnsupportedModuleError as err:
                raise UnsupportedModuleError(
                    f"{err} (traced node {self.node.name!r}, op call_module, target "
                    f"{target!r})") from None
            self.by_target[target] = layer
        # A module of several inputs takes them as forward(*xs) (chainrule's twins of
        # Add, Concat, ...) or as several parameters (a graph of several inputs); its
        # chainrule layer takes them as one list.
        packed = len(inputs) > 1 or _takes_varargs(module)
        num_outputs = None
        if isinstance(layer, L.Graph) and len(layer.output_names) > 1:
            num_outputs = len(layer.output_names)
        return self._record(layer, inputs if packed else inputs[0], target, num_outputs)


def _takes_varargs(module: Any) -> bool:
    return any(p.kind is inspect.Parameter.VAR_POSITIONAL
               for p in inspect.signature(module.forward).parameters.values())


@functools.lru_cache(maxsize=None)
def _tracer_class() -> type:
    torch = _import_torch()

    class _Tracer(torch.fx.Tracer):
        """Keeps as one call_module node every module ``interop.torch`` converts whole
        (its leaf classes, Sequential/TorchResidual trees of them, GraphModules) and
        torch.nn's own modules (so that an unsupported one is named by its class); traces
        through everything else."""

        def is_leaf_module(self, m: Any, module_qualified_name: str) -> bool:
            return _is_leaf_module(m) or super().is_leaf_module(m, module_qualified_name)

    return _Tracer


def _input_shapes(module: Any, placeholders: list, input_shape: Any, path: str) -> list:
    """One shape (or None) per placeholder: ``input_shape`` (one shape, or one per input),
    else the shapes ``graph_to_torch`` kept on a GraphModule's placeholders, else None."""
    if input_shape is None:
        return [p.meta.get(SHAPE_META) for p in placeholders]
    several = isinstance(input_shape, (list, tuple)) and len(input_shape) > 0 and all(
        s is None or isinstance(s, (list, tuple)) for s in input_shape)
    shapes = list(input_shape) if several else [input_shape]
    if len(shapes) != len(placeholders):
        raise ValueError(f"from_torch: {shown_path(path)} takes {len(placeholders)} input(s) "
                         f"({', '.join(str(p.target) for p in placeholders)}), but input_shape "
                         f"gives {len(shapes)} shape(s): {input_shape!r}")
    return shapes


def graph_from_torch(module: Any, input_shape: Any = None) -> L.Graph:
    """Trace ``module`` with torch.fx and convert the trace into a ``cr.Graph``
    (``from_torch`` calls this for anything but a plain Sequential of supported modules)."""
    return _trace(module, input_shape, "")


def _trace(module: Any, input_shape: Any, path: str) -> L.Graph:
    torch = _import_torch()
    try:
        fx_graph = _tracer_class()().trace(module)
    except Exception as err:   # torch.fx raises many kinds (TraceError, TypeError, ...)
        raise UnsupportedModuleError(
            f"{shown_path(path)}: {_torch_name(module)} cannot be traced by torch.fx "
            f"({type(err).__name__}: {err})") from err
    placeholders = [n for n in fx_graph.nodes if n.op == "placeholder"]
    known = module.graph if isinstance(module, torch.fx.GraphModule) else fx_graph
    shapes = _input_shapes(module, [n for n in known.nodes if n.op == "placeholder"],
                           input_shape, path)
    cx = _Conversion(torch, module, path)
    values: dict[Any, Any] = {}
    inputs, outputs = [], None
    for p, shape in zip(placeholders, shapes):
        values[p] = L.Input(None if shape is None else tuple(shape), name=str(p.target))
        cx.taken.add(str(p.target))
        inputs.append(values[p])
    for node in fx_graph.nodes:
        cx.node = node
        if node.op == "placeholder":
            continue
        args = torch.fx.node.map_arg(node.args, values.__getitem__)
        kwargs = torch.fx.node.map_arg(node.kwargs, values.__getitem__)
        if node.op == "output":
            outputs = args[0]
        elif node.op == "call_module":
            values[node] = cx.module_call(node.target, args, kwargs)
        elif node.op in ("call_function", "call_method"):
            key = f"Tensor.{node.target}" if node.op == "call_method" else node.target
            convert = _functions().get(key) or _functions().get(_target_name(key))
            if convert is None:
                raise cx.error("is not supported by from_torch; the functions and methods it "
                               "converts are " + ", ".join(sorted(
                                   {_target_name(k) for k in _functions()})))
            try:
                values[node] = convert(cx, *args, **kwargs)
            except TypeError as err:   # arguments the function's signature does not take
                raise cx.error(f"unexpected arguments: {err}") from err
        else:   # get_attr: a parameter or buffer used directly, not through a module
            raise cx.error("reads a parameter, buffer or attribute directly; chainrule "
                           "converts modules and the functions of its catalog, so wrap it in "
                           "a supported module")
    single = isinstance(outputs, SymbolicTensor)
    outs = [outputs] if single else list(outputs) if isinstance(outputs, (list, tuple)) else None
    if not outs or not all(isinstance(t, SymbolicTensor) for t in outs):
        raise cx.error(f"returns {outputs!r}; from_torch converts modules that return a "
                       "tensor or a tuple/list of tensors")
    graph = L.Graph(inputs[0] if len(inputs) == 1 else inputs, outs[0] if single else outs)
    _set_mode(graph, module.training)
    return graph


# ------------------------------------------------------------------ the function table
def _size(cx: _Conversion, x: Any, dim: Any = None) -> Any:
    """``x.size()``/``x.shape`` as ``(N, *shape)``, an unknown entry None (read later only
    through getitem, which then asks for input_shape); ``x.size(d)`` one entry."""
    x = cx.tensor(x)
    sizes = (N, *((None,) * (cx.rank(x) - 1) if x.shape is None else x.shape))
    if dim is None:
        return sizes
    return _getitem(cx, sizes, dim)


def _getitem(cx: _Conversion, obj: Any, index: Any) -> Any:
    if isinstance(obj, SymbolicTensor):
        raise cx.error(f"indexes the tensor {obj!r} with {index!r}; chainrule has no layer "
                       "for slicing a tensor (torch.split or torch.chunk convert)")
    value = obj[index]
    if value is None or (isinstance(value, tuple) and None in value):
        raise cx.error(f"reads a size that is not known here (index {index!r} of {obj!r}): "
                       "pass input_shape to from_torch (one sample's shape, no batch axis)")
    return value


def _getattr(cx: _Conversion, obj: Any, name: str) -> Any:
    if isinstance(obj, SymbolicTensor) and name == "shape":
        return _size(cx, obj)
    raise cx.error(f"reads the attribute {name!r} of {obj!r}; only a tensor's shape converts")


def _arith(op: Callable, layer: Callable[[], L.Layer] | None) -> Callable:
    """``a op b``: the merge layer when both are tensors, the number when neither is."""
    def convert(cx: _Conversion, a: Any, b: Any, *, alpha: Any = 1) -> Any:
        if layer is not None and isinstance(a, SymbolicTensor) and isinstance(b, SymbolicTensor):
            if alpha != 1:
                raise cx.error(f"alpha={alpha!r}: chainrule's Add adds the inputs as they are")
            return cx.call(layer(), [a, b])
        return cx.static(op, a, b)
    return convert


def _cat(cx: _Conversion, tensors: Sequence[Any], dim: int = 0) -> Any:
    return cx.call(L.Concat(cx.not_batch(dim)), list(tensors))


def _flatten(cx: _Conversion, input: Any, start_dim: int = 0, end_dim: int = -1) -> Any:
    if start_dim == 0:
        raise cx.error("flattens from dim 0, the batch axis; chainrule's Flatten keeps the "
                       "batch axis (torch.flatten(x, 1) converts)")
    return cx.call(L.Flatten(start_dim, end_dim), input)


def _reshape(cx: _Conversion, input: Any, *shape: Any) -> Any:
    """``x.view(N, *rest)`` (N from x.size(0)) or ``x.view(-1, *rest)`` with a per-sample
    ``rest`` of the sample's size: ``Reshape(rest)``."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    first, rest = (shape[0], tuple(shape[1:])) if shape else (None, ())
    if any(d is N for d in rest) or not all(isinstance(d, int) for d in rest):
        raise cx.error(f"reshapes to {shape!r}: the batch size N may only come first")
    if first is N:
        return cx.call(L.Reshape(rest), input)
    if first == -1 and -1 not in rest:
        sample = cx.shape(cx.tensor(input))
        if math.prod(sample) == math.prod(rest):   # -1 is then the batch size
            return cx.call(L.Reshape(rest), input)
    raise cx.error(f"reshapes to {shape!r}: the first size must be the batch size (x.size(0) "
                   "or x.shape[0]), or -1 with the rest holding one whole sample")


def _reshape_function(cx: _Conversion, input: Any, shape: Sequence[Any]) -> Any:
    return _reshape(cx, input, *shape)


def _permute(cx: _Conversion, input: Any, *dims: Any) -> Any:
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    return cx.call(L.Permute(tuple(dims)), input)


def _permute_function(cx: _Conversion, input: Any, dims: Sequence[int]) -> Any:
    return _permute(cx, input, *dims)


def _transpose(cx: _Conversion, input: Any, dim0: int, dim1: int) -> Any:
    rank = cx.rank(cx.tensor(input))
    a, b = (cx.not_batch(d % rank, "a transposed dim") for d in (dim0, dim1))
    dims = list(range(rank))
    dims[a], dims[b] = b, a
    return cx.call(L.Permute(tuple(dims)), input)


def _chunk(cx: _Conversion, input: Any, chunks: int, dim: int = 0) -> Any:
    cx.shape(cx.tensor(input))   # how many pieces torch makes depends on the size
    return cx.call(L.Chunk(chunks, cx.not_batch(dim)), input)


def _split(cx: _Conversion, tensor: Any, split_size_or_sections: Any, dim: int = 0) -> Any:
    cx.shape(cx.tensor(tensor))
    sections = split_size_or_sections
    return cx.call(L.Split(list(sections) if isinstance(sections, (list, tuple)) else sections,
                           cx.not_batch(dim)), tensor)


def _mean(cx: _Conversion, input: Any, dim: Any = None, keepdim: bool = False, *,
          dtype: Any = None) -> Any:
    if dim is None or dtype is not None:
        raise cx.error("averages over every axis (no dim) or casts (dtype=): chainrule's Mean "
                       "takes the axes, never the batch's, and keeps the dtype")
    return cx.call(L.Mean(tuple(dim) if isinstance(dim, (list, tuple)) else dim, keepdim), input)


def _dropout(cx: _Conversion, input: Any, p: float = 0.5, training: bool = True,
             inplace: bool = False) -> Any:
    """F.dropout: the identity in eval (what torch computes), a Dropout layer in training."""
    if not training or p == 0:
        return input
    return cx.call(L.Dropout(p), input)


def _dropout2d(cx: _Conversion, input: Any, p: float = 0.5, training: bool = True,
               inplace: bool = False) -> Any:
    if not training or p == 0:
        return input
    return cx.call(L.Dropout2d(p), input)


def _stochastic_depth(cx: _Conversion, input: Any, p: float, mode: str,
                      training: bool = True) -> Any:
    """torchvision's stochastic depth: the identity in eval or with p = 0."""
    if not training or p == 0:
        return input
    raise cx.error(f"stochastic depth with p={p} in training mode drops whole residual "
                   "branches at random, which no chainrule layer does; convert the module in "
                   "eval mode (module.eval()) or with p=0")


def _max_pool2d(cx: _Conversion, input: Any, kernel_size: Any, stride: Any = None,
                padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False,
                return_indices: bool = False) -> Any:
    if return_indices:
        raise cx.error("return_indices=True: chainrule layers return one array")
    return cx.call(L.MaxPool2d(kernel_size, stride=stride or None, padding=padding,
                               dilation=dilation, ceil_mode=ceil_mode), input)


def _avg_pool2d(cx: _Conversion, input: Any, kernel_size: Any, stride: Any = None,
                padding: Any = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                divisor_override: Any = None) -> Any:
    return cx.call(L.AvgPool2d(kernel_size, stride=stride or None, padding=padding,
                               ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                               divisor_override=divisor_override), input)


def _adaptive_max_pool2d(cx: _Conversion, input: Any, output_size: Any,
                         return_indices: bool = False) -> Any:
    if return_indices:
        raise cx.error("return_indices=True: chainrule layers return one array")
    return cx.call(L.AdaptiveMaxPool2d(tuple(output_size) if isinstance(output_size, list)
                                       else output_size), input)


def _softmax(cls: type) -> Callable:
    def convert(cx: _Conversion, input: Any, dim: Any = None, _stacklevel: int = 3,
                dtype: Any = None) -> Any:
        if dim is None or dtype is not None:
            raise cx.error("needs an explicit dim and no dtype=")
        return cx.call(cls(dim), input)
    return convert


def _identity(cx: _Conversion, input: Any, *args: Any, **kwargs: Any) -> Any:
    """contiguous(): a memory layout, the same values."""
    return input


@functools.lru_cache(maxsize=None)
def _functions() -> dict[Any, Callable]:
    """Traced target -> function(conversion, *args, **kwargs) giving the node's value.
    Methods are keyed ``"Tensor.<name>"``; torchvision's functions by qualified name, so
    that torchvision is never imported here."""
    torch = _import_torch()
    F = torch.nn.functional

    def act(build: Callable[..., L.Layer]) -> Callable:
        """An activation ``f(input, *options, inplace=False)``; ``build(*options)`` makes
        the layer (``inplace`` changes memory, not values)."""
        def convert(cx: _Conversion, input: Any, *options: Any, inplace: bool = False,
                    **named: Any) -> Any:
            return cx.call(build(*options, **named), input)
        return convert

    relu, sigmoid, tanh = act(L.ReLU), act(L.Sigmoid), act(L.Tanh)
    add = _arith(operator.add, L.Add)
    mul = _arith(operator.mul, L.Multiply)
    return {
        # tensors meeting: merge, split and shape
        torch.cat: _cat, torch.concat: _cat,
        operator.add: add, operator.iadd: add, torch.add: add, "Tensor.add": add,
        operator.mul: mul, operator.imul: mul, torch.mul: mul, "Tensor.mul": mul,
        torch.flatten: _flatten, "Tensor.flatten": _flatten,
        "Tensor.view": _reshape, "Tensor.reshape": _reshape, torch.reshape: _reshape_function,
        "Tensor.permute": _permute, torch.permute: _permute_function,
        "Tensor.transpose": _transpose, torch.transpose: _transpose,
        "Tensor.chunk": _chunk, torch.chunk: _chunk,
        "Tensor.split": _split, torch.split: _split,
        "Tensor.mean": _mean, torch.mean: _mean,
        "Tensor.contiguous": _identity,
        # sizes, computed now
        "Tensor.size": _size, getattr: _getattr, operator.getitem: _getitem,
        "Tensor.dim": lambda cx, x: cx.rank(cx.tensor(x)),
        operator.sub: _arith(operator.sub, None),
        operator.floordiv: _arith(operator.floordiv, None),
        operator.mod: _arith(operator.mod, None),
        # the catalog's layers in functional form
        F.relu: relu, torch.relu: relu, "Tensor.relu": relu,
        F.relu6: act(L.ReLU6),
        F.hardtanh: act(L.Hardtanh),
        F.leaky_relu: act(L.LeakyReLU),
        F.elu: act(L.ELU), F.selu: act(L.SELU), F.celu: act(L.CELU),
        F.gelu: lambda cx, input, approximate="none": cx.call(L.GELU(approximate), input),
        F.silu: act(L.SiLU), F.mish: act(L.Mish),
        F.hardswish: act(L.Hardswish), F.hardsigmoid: act(L.Hardsigmoid),
        F.softplus: lambda cx, input, beta=1.0, threshold=20.0: cx.call(
            L.Softplus(beta, threshold), input),
        F.sigmoid: sigmoid, torch.sigmoid: sigmoid, "Tensor.sigmoid": sigmoid,
        F.tanh: tanh, torch.tanh: tanh, "Tensor.tanh": tanh,
        F.softmax: _softmax(L.Softmax), "Tensor.softmax": _softmax(L.Softmax),
        F.log_softmax: _softmax(L.LogSoftmax), "Tensor.log_softmax": _softmax(L.LogSoftmax),
        F.adaptive_avg_pool2d: lambda cx, input, output_size: cx.call(L.AdaptiveAvgPool2d(
            tuple(output_size) if isinstance(output_size, list) else output_size), input),
        F.adaptive_max_pool2d: _adaptive_max_pool2d,
        F.max_pool2d: _max_pool2d,
        F.avg_pool2d: _avg_pool2d,
        F.dropout: _dropout, F.dropout2d: _dropout2d,
        "torchvision.ops.stochastic_depth.stochastic_depth": _stochastic_depth,
    }


# ---------------------------------------------------------------------------- chainrule -> torch
def graph_to_torch(graph: L.Graph, path: str = "") -> Any:
    """A ``torch.fx.GraphModule`` computing what ``graph`` computes, its submodules at the
    graph's layer names (dotted names become nested modules), weights, modes and dtypes
    included; ``to_torch`` calls this for every ``Graph``."""
    torch = _import_torch()
    leaves, residual_cls = _leaf_to_torch(torch), _residual_class()
    modules = {name: _convert_to(layer, child_path(path, name), torch, leaves, residual_cls)
               for name, layer in graph.named_children()}
    fx_graph = torch.fx.Graph()
    values: dict[str, Any] = {}
    for name, shape in zip(graph.input_names, graph.input_shapes):
        values[name] = fx_graph.placeholder(name)
        values[name].meta[SHAPE_META] = shape
    for node in graph.nodes:
        out = fx_graph.call_module(node.layer_name, tuple(values[t] for t in node.inputs))
        if node.multi_output:
            for k, tensor in enumerate(node.outputs):
                values[tensor] = fx_graph.call_function(operator.getitem, (out, k))
        else:
            values[node.outputs[0]] = out
    outs = [values[t] for t in graph.output_names]
    fx_graph.output(outs[0] if len(outs) == 1 and graph.single_output else tuple(outs))
    root = torch.nn.Module()
    for name, module in modules.items():   # in the graph's order: state_dict keeps it
        *parents, leaf = name.split(".")
        owner = root
        for part in parents:
            if not hasattr(owner, part):
                owner.add_module(part, torch.nn.Module())
            owner = getattr(owner, part)
        owner.add_module(leaf, module)
    module = torch.fx.GraphModule(root, fx_graph, class_name="GraphModule")
    converted = {id(sub) for m in modules.values() for sub in m.modules()}
    for m in module.modules():   # the plain modules that hold dotted names' prefixes
        if id(m) not in converted:
            m.training = graph.training
    module.training = graph.training
    return module
