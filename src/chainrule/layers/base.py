"""Layer: the base of every building block.

A layer owns its parameters (``Parameter``), its buffers (arrays that are state but not
trained, such as BatchNorm's running statistics) and its sub-layers, registered by plain
attribute assignment as in ``torch.nn.Module``. Each concrete layer writes two methods:

- ``forward(x)`` computes the output and, in training mode only, keeps in ``self._cache``
  exactly what ``backward`` needs;
- ``backward(grad)`` reads (and releases) the cache, checks the gradient's shape, *adds*
  dLoss/dparam into each ``p.grad`` and returns dLoss/dx.

There is no autograd tape: the chain rule is applied by the containers (``Sequential``,
``Residual``) calling ``backward`` of their children in reverse order.

Skipping an unneeded input gradient. A training step never uses dLoss/dx of the
network's input (torch does not compute it either: the input does not require grad).
Layers whose class sets ``can_skip_input_grad = True`` next to its ``backward`` accept
``backward(grad, needs_input_grad=False)``: they still add their parameter gradients
but return None instead of computing dLoss/dx. ``backward_parameters_only`` uses that
when a layer offers it.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Callable, Iterator

import numpy as np

from ..parameter import Parameter
from ..random import generator
from .symbolic import call_symbolic, is_symbolic

DEFAULT_DTYPE = np.dtype(np.float32)
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_dtype(dtype: Any, where: str) -> np.dtype:
    """Check that ``dtype`` is float32 or float64 and return it as an ``np.dtype``."""
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"{where}: dtype must be float32 or float64, got {dtype!r}") from err
    if dt not in _FLOAT_DTYPES:
        raise TypeError(f"{where}: dtype must be float32 or float64, got {dt}")
    return dt


def backward_parameters_only(layer: "Layer", grad: np.ndarray) -> None:
    """``layer.backward(grad)`` for the parameter gradients alone: the layer may skip
    dLoss/dx when it can (``can_skip_input_grad``). An instance-level hook on
    ``backward`` (``chainrule.inspect``) gets the option too and decides whether its
    watcher needs dx."""
    if _backward_can_skip_input_grad(type(layer)):
        layer.backward(grad, needs_input_grad=False)
    else:
        layer.backward(grad)


def _backward_can_skip_input_grad(cls: type) -> bool:
    """Whether the ``backward`` that ``cls`` runs takes ``needs_input_grad``: the class
    that defines that method must say so itself, so that a subclass overriding
    ``backward(self, grad)`` (of Sequential, say) is never passed the option."""
    for klass in cls.__mro__:
        if "backward" in klass.__dict__:
            return bool(klass.__dict__.get("can_skip_input_grad", False))
    return False


class Layer:
    """Base class of all layers. Subclasses implement ``forward`` and ``backward``.

    Parameters (``Parameter``), buffers (``register_buffer``) and sub-layers are
    registered by plain attribute assignment, as in ``torch.nn.Module``; a new layer
    calls ``super().__init__()`` first. The how-to "Write your own layer" walks through
    one.

    Shape:
        Each subclass states its own: ``forward(x)`` takes the input array and returns the
        output; ``backward(grad)`` takes a gradient of the output's shape and returns one
        of the input's shape.

    Backward:
        The contract every layer keeps, for ``y = f(x; W)`` and ``g = dL/dy``:
        ``backward(g)`` returns ``dL/dx = J_x.T @ g`` (the vector-Jacobian product) and
        *adds* ``dL/dW = J_W.T @ g`` into each ``W.grad`` (so gradients of shared layers
        and of several batches accumulate until ``zero_grad``). It reads the cache that
        ``forward`` kept in training mode and releases it: one backward per forward, and
        a ``RuntimeError`` without a cached forward.
    """

    # Whether backward accepts needs_input_grad=False (see the module docstring).
    can_skip_input_grad: bool = False

    def __init__(self) -> None:
        # object.__setattr__ because our __setattr__ needs these dicts to exist.
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_children", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_cache", None)
        object.__setattr__(self, "_keep_cache_in_eval", False)

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_parameters")
        if params is None:
            raise RuntimeError(
                f"{type(self).__name__}: call super().__init__() before assigning attributes")
        if name in self._buffers and isinstance(value, np.ndarray):
            object.__setattr__(self, name, value)  # a buffer re-assigned stays a buffer
            return
        for registry in (self._parameters, self._buffers, self._children):
            registry.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Layer):
            self._children[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, value: np.ndarray) -> None:
        """Register non-trainable state that belongs in ``state_dict`` (e.g. running stats)."""
        self.__setattr__(name, value)
        self._buffers[name] = True

    def _buffer_items(self) -> Iterator[tuple[str, np.ndarray]]:
        for name in self._buffers:
            yield name, getattr(self, name)

    # ------------------------------------------------------------------ forward / backward
    def forward(self, x: np.ndarray) -> np.ndarray:
        """The output for input ``x``; in training mode, also keep in ``self._cache``
        what ``backward`` needs. ``layer(x)`` calls it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad: np.ndarray) -> np.ndarray:
        """dL/dx for ``grad`` = dL/dy of the last forward's output shape; adds dL/dW into
        each parameter's ``.grad`` and releases the cache."""
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def __call__(self, x: Any, name: str | None = None) -> Any:
        """``forward(x)`` on arrays. On symbolic tensors (``cr.Input``) it records a node
        of a graph being declared instead, named ``name``, and returns its output
        tensor(s); see ``chainrule.layers.graph``."""
        if is_symbolic(x):
            return call_symbolic(self, x, name)
        if name is not None:
            raise TypeError(f"{self!r}: name= names a node of a graph being declared; it "
                            "applies only when the layer is called on symbolic tensors "
                            "(cr.Input)")
        return self.forward(x)

    @property
    def keeps_cache(self) -> bool:
        """Whether ``forward`` should keep what ``backward`` needs: in training mode, or
        in eval mode when gradients were asked for (saliency maps, gradient checks)."""
        return self.training or self._keep_cache_in_eval

    def _take_cache(self) -> Any:
        """Return and release the forward cache; backward without one is an error."""
        cache = self._cache
        if cache is None:
            raise RuntimeError(
                f"{self!r}: backward called without a cached forward pass. Call forward "
                "in training mode (layer.train()) or inside layer.gradients_in_eval() first; "
                "each forward supports one backward.")
        self._cache = None
        return cache

    def _check_grad(self, grad: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Check that an upstream gradient has the shape of this layer's last output."""
        if not isinstance(grad, np.ndarray):
            raise TypeError(f"{self!r}: backward expects an ndarray gradient, got "
                            f"{type(grad).__name__}")
        if grad.shape != shape:
            raise ValueError(f"{self!r}: backward expected a gradient of shape {shape} "
                             f"(the shape of the forward output), got {grad.shape}")
        return grad.astype(dtype, copy=False)

    # ------------------------------------------------------------------ traversal
    def children(self) -> Iterator["Layer"]:
        """The direct sub-layers, in registration order."""
        yield from self._children.values()

    def named_children(self) -> Iterator[tuple[str, "Layer"]]:
        """(name, sub-layer) pairs of the direct sub-layers."""
        yield from self._children.items()

    def modules(self) -> Iterator["Layer"]:
        """This layer and every layer below it, depth first."""
        yield self
        for child in self._children.values():
            yield from child.modules()

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Layer"]]:
        """(dotted name, layer) pairs of this layer (name ``prefix``) and every layer below."""
        yield prefix, self
        for name, child in self._children.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs, named as torch names them (``"0.weight"``)."""
        for name, p in self._parameters.items():
            yield (f"{prefix}.{name}" if prefix else name), p
        for name, child in self._children.items():
            yield from child.named_parameters(f"{prefix}.{name}" if prefix else name)

    def parameters(self) -> list[Parameter]:
        """Every Parameter of this layer and its sub-layers (what an optimizer takes)."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """(dotted name, array) pairs of every buffer (e.g. ``"1.running_mean"``)."""
        for name, value in self._buffer_items():
            yield (f"{prefix}.{name}" if prefix else name), value
        for name, child in self._children.items():
            yield from child.named_buffers(f"{prefix}.{name}" if prefix else name)

    def apply(self, fn: Callable[["Layer"], None]) -> "Layer":
        """Call ``fn`` on this layer and every layer below it; returns this layer."""
        for module in self.modules():
            fn(module)
        return self

    # ------------------------------------------------------------------ modes and dtype
    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero (backward adds into it)."""
        for p in self.parameters():
            p.zero_grad()

    def train(self, mode: bool = True) -> "Layer":
        """Set training mode (``mode=False``: eval mode, which keeps no caches) on this
        layer and every layer below it; returns this layer."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
            if not mode and not module._keep_cache_in_eval:
                # eval mode keeps no caches: inference holds no extra memory.
                object.__setattr__(module, "_cache", None)
        return self

    def eval(self) -> "Layer":
        """Eval (inference) mode: ``train(False)``."""
        return self.train(False)

    def gradients_in_eval(self, enabled: bool = True) -> "Layer":
        """Let forward keep its cache in eval mode too, so that ``backward`` works on a
        model in inference mode (saliency maps, input gradients). Returns the layer."""
        for module in self.modules():
            object.__setattr__(module, "_keep_cache_in_eval", bool(enabled))
            if not enabled and not module.training:
                object.__setattr__(module, "_cache", None)
        return self

    @property
    def dtype(self) -> np.dtype | None:
        """The dtype of this layer's parameters, or None for a layer without any."""
        for _, p in self.named_parameters():   # the first one: no list of them all
            return p.dtype
        for _, b in self.named_buffers():
            if np.issubdtype(b.dtype, np.floating):
                return b.dtype
        return None

    def to(self, dtype: Any) -> "Layer":
        """Cast every parameter and floating-point buffer to ``dtype``; returns self."""
        dt = as_float_dtype(dtype, repr(self))
        for module in self.modules():
            for p in module._parameters.values():
                p.to(dt)
            for name, value in list(module._buffer_items()):
                if np.issubdtype(value.dtype, np.floating):
                    object.__setattr__(module, name, value.astype(dt))
            module._cache = None
        return self

    def double(self) -> "Layer":
        return self.to(np.float64)

    def float(self) -> "Layer":
        return self.to(np.float32)

    def _cast_input(self, x: Any) -> np.ndarray:
        """Bring an input to this layer's dtype (e.g. uint8 images, float64 NumPy data
        into a float32 model), as Keras does; anything not numeric is refused."""
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
                or x.dtype == np.bool_):
            raise TypeError(f"{self!r}: expected a numeric ndarray, got dtype {x.dtype}")
        dtype = self.dtype
        if dtype is None:
            if not np.issubdtype(x.dtype, np.floating):
                return x.astype(DEFAULT_DTYPE)
            return x
        return x.astype(dtype, copy=False)

    def _check_ndim(self, x: np.ndarray, ndims: tuple[int, ...], layout: str) -> None:
        if x.ndim not in ndims:
            raise ValueError(f"{self!r}: expected input of shape {layout} "
                             f"({' or '.join(f'{n}-D' for n in ndims)}), got shape {x.shape}")

    # ------------------------------------------------------------------ initialization
    def reset_parameters(self, rng: np.random.Generator | int | None = None) -> "Layer":
        """Re-draw every parameter of this layer and its children from ``rng`` (a
        Generator or a seed), in the same order each time, so a seed fixes the model."""
        rng = generator(rng)  # None: the library generator (chainrule.manual_seed)
        for module in self.modules():
            own_reset = getattr(module, "_reset_own_parameters", None)
            if own_reset is not None:
                own_reset(rng)
        return self

    # ------------------------------------------------------------------ state dict
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Parameters and buffers by dotted name, as copies; same keys and shapes as the
        equivalent ``torch.nn`` module's state dict."""
        state: OrderedDict[str, np.ndarray] = OrderedDict()
        for name, module in self.named_modules():
            prefix = f"{name}." if name else ""
            for pname, p in module._parameters.items():
                state[prefix + pname] = p.data.copy()
            for bname, value in module._buffer_items():
                state[prefix + bname] = np.array(value, copy=True)
        return state

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> "Layer":
        """Copy arrays from ``state`` into this layer's parameters and buffers, cast to the
        layer's dtype. Keys named ``*.num_batches_tracked`` may be absent. Every missing,
        unexpected or mis-shaped key is named in one ValueError; nothing is changed then."""
        targets: dict[str, tuple[Layer, str, bool]] = {}
        for name, module in self.named_modules():
            prefix = f"{name}." if name else ""
            for pname in module._parameters:
                targets[prefix + pname] = (module, pname, True)
            for bname in module._buffers:
                targets[prefix + bname] = (module, bname, False)

        optional = {k for k in targets if k.endswith("num_batches_tracked")}
        missing = [k for k in targets if k not in state and k not in optional]
        unexpected = [k for k in state if k not in targets]
        mismatched = []
        arrays = {}
        for key, (module, attr, _) in targets.items():
            if key not in state:
                continue
            value = np.asarray(state[key])
            current = getattr(module, attr)
            current = current.data if isinstance(current, Parameter) else current
            if value.shape != current.shape:
                mismatched.append(f"{key}: expected shape {current.shape}, got {value.shape}")
            elif not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
                mismatched.append(f"{key}: expected a numeric array, got dtype {value.dtype}")
            else:
                arrays[key] = value
        problems = []
        if missing and strict:
            problems.append("missing keys: " + ", ".join(missing))
        if unexpected and strict:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if mismatched:
            problems.append("mis-shaped: " + "; ".join(mismatched))
        if problems:
            raise ValueError(f"load_state_dict into {type(self).__name__}: " + " | ".join(problems))

        for key, value in arrays.items():
            module, attr, is_param = targets[key]
            current = getattr(module, attr)
            if is_param:
                current.data[...] = value.astype(current.data.dtype, copy=False)
            else:
                object.__setattr__(module, attr, value.astype(current.dtype, copy=True))
        return self

    # ------------------------------------------------------------------ misc
    def copy(self) -> "Layer":
        """A deep copy (parameters, buffers, optimizer-independent)."""
        return copy.deepcopy(self)

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def summary(self, input_shape: Any, batch_size: int = 1,
                max_depth: int | None = None) -> Any:
        """A Keras/torchinfo-style table of this model on a zero batch of shape
        ``(batch_size, *input_shape)``: a ``ModelSummary`` whose ``str()`` is the table
        (nothing is printed; the model is not changed). See ``chainrule.summary.summary``."""
        from ..summary import summary  # imported here: chainrule.summary imports layers
        return summary(self, input_shape, batch_size=batch_size, max_depth=max_depth)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        if not self._children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in self._children.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        lines.append(")")
        return "\n".join(lines)
