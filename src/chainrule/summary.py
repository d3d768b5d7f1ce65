"""``model.summary(input_shape)``: a Keras/torchinfo-style table of a model.

One row per layer, in registration order (a Sequential's forward order), indented by
depth and named as torch names modules (``"0"``, ``"3.block.1"``; the model itself is
the unnamed first row), with its class, its output shape, its parameters and its
multiply-adds, then the totals and the memory they take.

How the numbers are found. The model is deep-copied, the copy put in eval mode (Dropout
the identity, BatchNorm on its running statistics, no caches) and run once on a batch of
zeros of shape ``(batch_size, *input_shape)`` in the model's dtype, with every layer's
``forward`` watched. The model itself is never touched: its weights, buffers, caches,
dropout generators and the train/eval mode of each of its modules stay as they were.

What each figure counts:

- Output shape: the shape of the layer's output on that batch, batch axis included
  (``(1, 6, 28, 28)`` for ``batch_size=1``), as torchinfo shows it; a list of shapes for
  a layer with several outputs (``Split``, a graph with several). "--" for a layer the
  forward pass never called; ``xK`` after it for a layer called K times (the last shape):
  a layer that a ``Graph`` calls at K nodes (a shared layer) has one row, ``xK``, its
  parameters counted once and its mult-adds and outputs summed over the K calls.
- Params: the elements of the layer's *own* parameters (not its children's), all
  trainable: chainrule has no frozen parameters. "--" for none. The column sums to
  ``trainable_params``, which equals ``sum(p.numel() for p in to_torch(model).parameters())``.
- Non-trainable: the elements of the layer's own floating-point buffers, BatchNorm's
  ``running_mean`` and ``running_var`` (Keras' "non-trainable params"). Integer buffers
  (``num_batches_tracked``, a step counter) are not counted.
- Mult-adds: multiply-accumulates of the forward pass, over the whole batch, of the
  weights of convolutions and linear layers, the usual MACs count:

  - ``Conv2d``/``Conv1d``: ``output elements * (C_in / groups) * prod(kernel_size)``;
  - ``ConvTranspose2d``: ``input elements * (C_out / groups) * prod(kernel_size)``
    (each input element scatters its kernel slice);
  - ``Linear``: ``output elements * in_features``.

  Bias additions, normalizations, poolings, activations, resampling and containers
  count 0 (shown "--"). torchinfo counts in the same spirit but also adds each bias
  (``output elements`` more for a conv, ``N * out_features`` for a linear layer) and
  ``N * parameters`` for a norm layer or PReLU, so its totals run a little higher on the
  same model; compare convolutions and linear layers. A layer class not in
  ``MULT_ADDS`` (walked along its MRO, so a subclass of ``Conv2d`` counts as one) counts 0
  when it owns no parameters and is *unknown* ("?") when it does: unknown layers are
  listed in ``unknown_mult_adds`` and left out of ``total_mult_adds``. Teach the table
  a layer of your own with ``MULT_ADDS[MyLayer] = lambda layer, x_shape, y_shape: ...``.

Memory, in bytes as attributes and in MiB (2**20 bytes) in the table:

- ``input_bytes``: the zero batch, ``batch_size * prod(input_shape) * itemsize`` (summed
  over the inputs of a graph with several);
- ``forward_bytes``: the sum of the output bytes of every call of every *leaf* layer (a
  layer without children; containers only pass their children's outputs on). This is
  the activations a forward pass produces, which training keeps for backward; the
  im2col workspaces and caches of the layers are not counted. torchinfo's
  "forward/backward pass size" differs: it sums only the leaves that own parameters, and
  doubles them for the gradients;
- ``params_bytes``: the bytes of every parameter and every counted buffer at its dtype
  (4 per element in float32, 8 in float64);
- ``total_bytes``: the sum of the three, torchinfo's "estimated total size".

``summary`` prints nothing: it returns a ``ModelSummary`` whose ``str()`` (and ``repr()``,
so a REPL shows it) is the table, and whose attributes hold the numbers.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .layers import (BatchNorm1d, BatchNorm2d, SyncBatchNorm, Conv1d, Conv2d, ConvTranspose2d, Graph,
                     GroupNorm, InstanceNorm2d, Layer, LayerNorm, Linear, PReLU)
from .layers.base import DEFAULT_DTYPE

__all__ = ["summary", "ModelSummary", "SummaryRow", "MULT_ADDS"]

MIB = 1 << 20

Shape = tuple[int, ...]
# A call's shapes: one tuple, or a list of them for several arrays (a merge layer's
# inputs, a Split's outputs, a graph's inputs or outputs).
Shapes = Any
MultAddsFn = Callable[[Layer, Shape, Shape], int]


def _conv_mult_adds(layer: Any, x_shape: Shape, y_shape: Shape) -> int:
    # Each output element is a dot product over (C_in / groups) * kh * kw inputs.
    return math.prod(y_shape) * (layer.in_channels // layer.groups) * math.prod(layer.kernel_size)


def _conv_transpose_mult_adds(layer: Any, x_shape: Shape, y_shape: Shape) -> int:
    # Each input element multiplies a (C_out / groups, kh, kw) slice of the weight.
    return (math.prod(x_shape) * (layer.out_channels // layer.groups)
            * math.prod(layer.kernel_size))


def _linear_mult_adds(layer: Any, x_shape: Shape, y_shape: Shape) -> int:
    return math.prod(y_shape) * layer.in_features


def _none(layer: Any, x_shape: Shape, y_shape: Shape) -> int:
    return 0


# Multiply-adds of one forward call, by layer class: fn(layer, input shape, output shape).
# Classes with parameters whose arithmetic is elementwise are listed with 0 so that they
# are not reported as unknown (see the module docstring).
MULT_ADDS: dict[type, MultAddsFn] = {
    Conv2d: _conv_mult_adds,
    Conv1d: _conv_mult_adds,
    ConvTranspose2d: _conv_transpose_mult_adds,
    Linear: _linear_mult_adds,
    BatchNorm1d: _none, BatchNorm2d: _none, SyncBatchNorm: _none, GroupNorm: _none, LayerNorm: _none,
    InstanceNorm2d: _none, PReLU: _none,
}


@dataclass
class SummaryRow:
    """One layer of the table; the counts are the layer's own, without its children's.

    ``mult_adds`` is None when unknown; ``output_shape`` None when never called;
    ``output_bytes`` sums the outputs of all its calls."""

    name: str
    type: str
    depth: int
    is_leaf: bool
    output_shape: Shapes | None
    calls: int
    params: int
    non_trainable: int
    params_bytes: int
    mult_adds: int | None
    output_bytes: int


@dataclass
class ModelSummary:
    """What ``summary`` found; ``str()`` is the table. Bytes are exact; the table shows MiB.

    Attributes:
        model_type: the model's class name.
        input_shape: the batch that was run, (batch_size, *input_shape); a list of such
            shapes for a graph with several inputs.
        dtype: its dtype (the model's). output_shape: the model's output shape (a list
            for several outputs).
        rows: a ``SummaryRow`` per layer, the model first.
        total_params, trainable_params, non_trainable_params: element counts
            (total = trainable + non-trainable).
        total_mult_adds: the known multiply-adds of the forward pass over the batch.
        unknown_mult_adds: the names of the layers whose multiply-adds are unknown.
        input_bytes, forward_bytes, params_bytes, total_bytes: see the module docstring.
        max_depth: rows deeper than this are folded into their ancestor in the table.
    """

    model_type: str
    input_shape: Shapes
    dtype: np.dtype
    output_shape: Shapes | None
    rows: list[SummaryRow]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    total_mult_adds: int
    unknown_mult_adds: tuple[str, ...]
    input_bytes: int
    forward_bytes: int
    params_bytes: int
    total_bytes: int
    max_depth: int | None = None

    def __str__(self) -> str:
        return _render(self)

    __repr__ = __str__


# ---------------------------------------------------------------------- collecting

@dataclass
class _Call:
    x_shape: Shapes
    y_shape: Shapes
    y_bytes: int


def _shapes(value: Any) -> Shapes:
    """The shape of an array, or the list of shapes of a list of arrays."""
    if isinstance(value, (list, tuple)):
        return [tuple(np.shape(v)) for v in value]
    return tuple(np.shape(value))


def _nbytes(value: Any) -> int:
    items = value if isinstance(value, (list, tuple)) else [value]
    return sum(int(getattr(v, "nbytes", 0)) for v in items)


class _Trace:
    """Every forward call of every watched layer, and the innermost layer that failed."""

    def __init__(self) -> None:
        self.calls: dict[int, list[_Call]] = {}
        self.failure: tuple[str, Layer, Shapes] | None = None


class _Probe:
    """Shadows one layer's ``forward`` (an instance attribute, as chainrule.inspect's
    hooks do) to record its input and output shapes, and, when it raises, which layer
    raised first: the handlers run innermost first, so the first to see the exception
    is the layer that refused its input."""

    def __init__(self, layer: Layer, name: str, trace: _Trace) -> None:
        self.layer, self.name, self.trace = layer, name, trace
        self.inner = layer.forward  # the class method, or a hook already installed
        trace.calls[id(layer)] = []

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        x_shape = _shapes(x)
        try:
            y = self.inner(x, *args, **kwargs)
        except Exception:
            if self.trace.failure is None:
                self.trace.failure = (self.name, self.layer, x_shape)
            raise
        self.trace.calls[id(self.layer)].append(_Call(x_shape, _shapes(y), _nbytes(y)))
        return y


def _walk(layer: Layer, name: str = "", depth: int = 0) -> Iterator[tuple[str, int, Layer]]:
    """(dotted name, depth, layer) of the layer and everything below it, depth first."""
    yield name, depth, layer
    for child_name, child in layer.named_children():
        yield from _walk(child, f"{name}.{child_name}" if name else child_name, depth + 1)


def _mult_adds_fn(layer: Layer) -> MultAddsFn | None:
    for klass in type(layer).__mro__:
        if klass in MULT_ADDS:
            return MULT_ADDS[klass]
    return None


def _layer_name(name: str, layer: Layer) -> str:
    what = type(layer).__name__ if layer._children else repr(layer)
    return f"layer {name!r} ({what})" if name else f"the model ({what})"


def _sample_shape(input_shape: Any) -> Shape:
    shape = (input_shape,) if isinstance(input_shape, (int, np.integer)) else input_shape
    try:
        shape = tuple(shape)
    except TypeError:
        shape = None
    if (not shape or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                             and d > 0 for d in shape)):
        raise ValueError("summary: input_shape must be the shape of one sample without the "
                         f"batch axis, positive ints such as (3, 32, 32) (a list of them for "
                         f"a graph with several inputs), got {input_shape!r}")
    return tuple(int(d) for d in shape)


def _check_args(model: Layer, input_shape: Any, batch_size: Any,
                max_depth: Any) -> list[Shape] | Shape:
    """One sample shape, or a list of them for a model of several inputs (a Graph)."""
    several = isinstance(model, Graph) and len(model.input_names) > 1
    if several:
        if not (isinstance(input_shape, (list, tuple))
                and len(input_shape) == len(model.input_names)
                and all(isinstance(s, (list, tuple)) for s in input_shape)):
            raise ValueError(f"summary: the model takes {len(model.input_names)} inputs "
                             f"{list(model.input_names)}; input_shape must be a list of as "
                             f"many sample shapes, got {input_shape!r}")
        shape: Any = [_sample_shape(s) for s in input_shape]
    else:
        shape = _sample_shape(input_shape)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"summary: batch_size must be a positive int, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"summary: batch_size must be a positive int, got {batch_size!r}")
    if max_depth is not None and (isinstance(max_depth, bool)
                                  or not isinstance(max_depth, (int, np.integer))):
        raise TypeError(f"summary: max_depth must be None or an int >= 0, got {max_depth!r}")
    if max_depth is not None and max_depth < 0:
        raise ValueError(f"summary: max_depth must be None or an int >= 0, got {max_depth!r}")
    return shape


def summary(model: Layer, input_shape: Sequence[int] | int | Sequence[Sequence[int]],
            batch_size: int = 1,
            max_depth: int | None = None) -> ModelSummary:
    """The summary of ``model`` on a zero batch of shape ``(batch_size, *input_shape)``.

    Args:
        model: any chainrule ``Layer`` (a user's own subclass too); it is not changed.
        input_shape: one sample without the batch axis, as ``export_onnx`` takes it,
            e.g. (1, 28, 28); an int stands for a 1-tuple. For a ``Graph`` of several
            inputs, a list of such shapes in the order of its inputs.
        batch_size: the batch axis of the run (1 by default). Output shapes, mult-adds,
            the forward-pass and input bytes are for the whole batch.
        max_depth: show rows down to this depth only (0: the model alone); the shown row
            of a folded subtree gives the subtree's counts. None shows every layer.

    Returns:
        a ``ModelSummary``; nothing is printed (``print(model.summary(...))`` shows it).

    Raises:
        ValueError: for a bad ``input_shape``, ``batch_size`` or ``max_depth``, and when
            the forward pass fails, naming the innermost layer that refused its input
            and that input's shape (the layer's own error is chained).
        TypeError: for a ``batch_size`` or ``max_depth`` that is not an int.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"summary: model must be a chainrule Layer, got {type(model).__name__}")
    sample = _check_args(model, input_shape, batch_size, max_depth)
    dtype = model.dtype or DEFAULT_DTYPE
    x: Any = ([np.zeros((int(batch_size), *s), dtype) for s in sample]
              if isinstance(sample, list)
              else np.zeros((int(batch_size), *sample), dtype))      # (N, *input_shape)

    # A copy in eval mode, so that the model keeps its mode, caches, running statistics
    # and dropout generators; the probes on the copy are dropped with it.
    frozen = copy.deepcopy(model).eval().gradients_in_eval(False)
    trace = _Trace()
    walked = list(_walk(frozen))
    for name, _, layer in walked:
        object.__setattr__(layer, "forward", _Probe(layer, name, trace))
    try:
        with np.errstate(all="ignore"):  # zeros are only for the shapes; 0/0 may occur
            y = frozen.forward(x)
    except Exception as exc:
        where = ("the model" if trace.failure is None
                 else f"{_layer_name(trace.failure[0], trace.failure[1])} on its input of "
                      f"shape {trace.failure[2]}")
        raise ValueError(f"summary: the forward pass of a zero batch of shape {_shapes(x)} failed "
                         f"in {where}: {type(exc).__name__}: {exc}") from exc

    rows = [_row(name, depth, layer, trace.calls[id(layer)]) for name, depth, layer in walked]
    trainable = sum(r.params for r in rows)
    non_trainable = sum(r.non_trainable for r in rows)
    params_bytes = sum(r.params_bytes for r in rows)
    forward_bytes = sum(r.output_bytes for r in rows if r.is_leaf)
    return ModelSummary(
        model_type=type(model).__name__, input_shape=_shapes(x), dtype=np.dtype(dtype),
        output_shape=_shapes(y), rows=rows,
        total_params=trainable + non_trainable, trainable_params=trainable,
        non_trainable_params=non_trainable,
        total_mult_adds=sum(r.mult_adds for r in rows if r.mult_adds is not None),
        unknown_mult_adds=tuple(r.name for r in rows if r.mult_adds is None),
        input_bytes=_nbytes(x), forward_bytes=forward_bytes, params_bytes=params_bytes,
        total_bytes=_nbytes(x) + forward_bytes + params_bytes,
        max_depth=None if max_depth is None else int(max_depth))


def _row(name: str, depth: int, layer: Layer, calls: list[_Call]) -> SummaryRow:
    params = [p.data for p in layer._parameters.values()]
    buffers = [b for _, b in layer._buffer_items() if np.issubdtype(b.dtype, np.floating)]
    fn = _mult_adds_fn(layer)
    if fn is None and params:
        mult_adds = None                 # a layer of the user's with weights: cost unknown
    elif fn is None:
        mult_adds = 0
    else:
        mult_adds = sum(int(fn(layer, c.x_shape, c.y_shape)) for c in calls)
    return SummaryRow(
        name=name, type=type(layer).__name__, depth=depth, is_leaf=not layer._children,
        output_shape=calls[-1].y_shape if calls else None, calls=len(calls),
        params=sum(p.size for p in params), non_trainable=sum(b.size for b in buffers),
        params_bytes=sum(a.nbytes for a in params + buffers), mult_adds=mult_adds,
        output_bytes=sum(c.y_bytes for c in calls))


# ---------------------------------------------------------------------- rendering

def _count(n: int) -> str:
    return f"{n:,}" if n else "--"


def _shown_rows(s: ModelSummary) -> list[tuple[SummaryRow, int, int, int | None, bool]]:
    """(row, params, non-trainable, mult-adds, unknown) of each row the table shows: a
    row at ``max_depth`` takes in the counts of the rows folded below it."""
    shown = []
    for row in s.rows:
        if s.max_depth is not None and row.depth > s.max_depth:
            _, p, b, m, unknown = shown[-1]  # the nearest shown ancestor comes last
            shown[-1] = (shown[-1][0], p + row.params, b + row.non_trainable,
                         m + (row.mult_adds or 0), unknown or row.mult_adds is None)
        else:
            shown.append((row, row.params, row.non_trainable, row.mult_adds or 0,
                          row.mult_adds is None))
    return shown


def _render(s: ModelSummary) -> str:
    header = ("Layer (name: type)", "Output shape", "Params", "Non-trainable", "Mult-adds")
    lines = []
    for row, params, buffers, mult_adds, unknown in _shown_rows(s):
        label = f"{row.name}: {row.type}" if row.name else row.type
        shape = "--" if row.output_shape is None else str(row.output_shape)
        if row.calls > 1:
            shape += f" x{row.calls}"
        madds = _count(mult_adds)
        if unknown:
            madds = "?" if not mult_adds else f"{madds}+?"
        lines.append(("  " * row.depth + label, shape, _count(params), _count(buffers), madds))
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0]), cells[1].ljust(widths[1]),
                          *(c.rjust(w) for c, w in zip(cells[2:], widths[2:]))]).rstrip()

    width = sum(widths) + 2 * (len(widths) - 1)
    thick, thin = "=" * width, "-" * width
    madds = f"{s.total_mult_adds:,}"
    if s.unknown_mult_adds:
        madds += (f" (without {len(s.unknown_mult_adds)} layer(s) of unknown cost: "
                  + ", ".join(repr(n) for n in s.unknown_mult_adds) + ")")

    def size(label: str, n: int) -> str:
        return f"{label}: {n / MIB:,.2f} MiB ({n:,} bytes)"

    return "\n".join([
        f"{s.model_type} on input {s.input_shape} {s.dtype}",
        thick, fmt(header), thick, *(fmt(line) for line in lines), thick,
        f"Total params: {s.total_params:,}",
        f"Trainable params: {s.trainable_params:,}",
        f"Non-trainable params: {s.non_trainable_params:,}",
        f"Total mult-adds: {madds}",
        thin,
        size("Input size", s.input_bytes),
        size("Forward pass size", s.forward_bytes),
        size("Params size", s.params_bytes),
        size("Estimated total size", s.total_bytes),
        thick,
    ])
