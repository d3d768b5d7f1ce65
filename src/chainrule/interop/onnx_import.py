"""from_onnx: read an ONNX model into a trainable ``cr.Graph``.

The file's nodes are read in their (topological) order, each through one small converter
looked up by op type in ``_CONVERTERS``; the converter reads the opset's attribute rules
and defaults itself (``ctx.opset``) and calls catalog layers on the symbolic tensors of
its inputs, so the result is an ordinary graph (``cr.Input`` -> layer calls ->
``cr.Graph``) that saves, loads, explains and trains like any other.

Opsets: 7 to 21 with each opset's attribute rules (``axes`` as an attribute before 13,
an input from 13; Softmax's 2-D coercion before 13; Clip's bounds as inputs from 11;
...). Later opsets (to 28, onnx 1.23's) are read with the same rules: from 22 on these
operators' schemas changed only in the element types they accept (and Cast gained a
rounding mode for 8-bit floats; a Cast of a graph tensor is taken only when it keeps the
dtype), and ONNX's operator tests generated at opsets 22 and 25 pass alike
(tests/interop/test_onnx_import_node.py).

Before any layer is made:

1. Every node is checked: its op type has a converter, or all its inputs are constants
   (initializers, ``Constant`` nodes, or results of other such nodes) and onnx's
   reference evaluator can compute it. Anything else is gathered into ONE
   ``UnsupportedOnnxError`` naming each node (name, op type, opset).
2. Constant sub-graphs are folded, node by node, with ``onnx.reference``: weights a
   file computes (``Constant``, ``ConstantOfShape``, ``Cast``, ``Unsqueeze``, ``Concat``,
   arithmetic over constants, ...) become plain arrays. ``Shape`` of a graph tensor folds
   too, from the tensor's declared shape; its batch entry is the input's static batch
   size, or ``BATCH`` (a marker) where the batch is dynamic, which a ``Reshape`` target
   may start with (torch's ``x.view(x.size(0), -1)``).

Mapping (inference semantics; layers built in the input's float dtype):

==========================  ==========================================================
ONNX                        chainrule
==========================  ==========================================================
Conv (1-D, 2-D)             Conv1d / Conv2d (weights and bias as Parameters); pads or
                            auto_pad SAME_* that are not symmetric: a ZeroPad2d first
ConvTranspose (2-D)         ConvTranspose2d; pads it cannot express: padding 0, then a
                            ZeroPad2d with negative amounts (a crop)
Gemm                        Linear with alpha * B (transB read) and beta * C; a C that
                            is not one row: Linear without bias + ConstantArithmetic
MatMul (constant 2-D B)     Linear without bias, weight B.T
Add, Sub, Mul, Div, Sum     Add / Multiply of graph tensors; a constant operand:
                            ConstantArithmetic (its value a buffer); Sub and Div of two
                            graph tensors through a negation / reciprocal
Relu, LeakyRelu, PRelu,     ReLU, LeakyReLU, PReLU (per-channel or shared slope),
Sigmoid, Tanh, Elu, Selu,   Sigmoid, Tanh, ELU, SELU (other alpha/gamma: ELU then a
HardSwish, Softplus         ConstantArithmetic), Hardswish, Softplus
HardSigmoid                 Hardsigmoid for alpha 1/6, beta 1/2; else x*alpha+beta
                            (ConstantArithmetic) clipped by Hardtanh(0, 1)
Clip                        ReLU6 (0, 6), ReLU (0, none), Hardtanh (two bounds),
                            nothing (no bounds)
Softmax, LogSoftmax         Softmax / LogSoftmax(dim=axis); before opset 13 the input
                            coerced to 2-D at axis: Reshape, softmax, Reshape back
MaxPool, AveragePool        MaxPool1d/2d, AvgPool1d/2d (ceil_mode, count_include_pad,
                            dilations); pads a torch pool cannot take: a pad layer first
                            (count_include_pad=0: then a ConstantArithmetic dividing by
                            each window's share of input cells)
GlobalAveragePool           AdaptiveAvgPool2d(1) (4-D), Mean(keepdim) otherwise
GlobalMaxPool               AdaptiveMaxPool2d(1) (4-D)
BatchNormalization          BatchNorm1d/2d with the running statistics (momentum 1 - m)
InstanceNormalization       InstanceNorm2d(affine) (4-D), GroupNorm(C, C) otherwise
LRN                         LocalResponseNorm (odd size)
LayerNormalization          LayerNorm over the axes from axis on
Celu, ReduceMean,           CELU, Mean (not over the batch axis), PixelShuffle
DepthToSpace (CRD)          (beyond the issue's list: what export_onnx writes)
Dropout                     Dropout(ratio) (the identity in eval); a mask output that
                            nothing reads is left out
Flatten (axis 1)            Flatten
Reshape, Squeeze,           Reshape of the per-sample shape (the batch axis kept)
Unsqueeze
Transpose                   Permute (the batch axis first)
Concat, Split               Concat, Split (not along the batch axis)
Pad                         ZeroPad2d / ConstantPad2d / ReflectionPad2d /
                            ReplicationPad2d on the last two axes
Resize, Upsample            Upsample (nearest, nearest-exact, linear, bilinear), the
                            mode chosen by comparing with onnx's reference on a probe
Identity, Cast (same type)  the input itself
==========================  ==========================================================

The batch axis: a chainrule graph's tensors are (N, *sample). An ONNX graph input's first
axis is taken as the batch; an operator that would move, merge or cut it (a Transpose
with perm[0] != 0, Flatten(axis=0), a Concat along axis 0, ...) is refused. The returned
graph is in eval mode (``.train()`` before fine-tuning).
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .. import layers as L
from ..layers.constant import ConstantArithmetic
from ..layers.symbolic import SymbolicTensor, call_symbolic
from ._common import UnsupportedModuleError

MIN_OPSET = 7
# The batch entry of a folded Shape when the batch size is dynamic: a value no real
# dimension has, which only a Reshape target may carry (it keeps the batch axis there).
BATCH = 2**62 + 1
_RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Bernoulli", "Multinomial"}
# What a max pool's explicit padding holds: finite (a checkpoint's JSON has no -inf) and
# float32's lowest, so that a float32 layer does not overflow on it.
_LOWEST = float(np.finfo(np.float32).min)
_INSTALL_HINT = 'from_onnx needs the onnx package: pip install "chainrule[onnx]"'


class UnsupportedOnnxError(UnsupportedModuleError):
    """ONNX nodes that ``from_onnx`` cannot convert exactly; ``nodes`` lists them as
    ``(node name, op type, opset, reason)``, every one of the model at once."""

    def __init__(self, nodes: list[tuple[str, str, int, str]]) -> None:
        self.nodes = nodes
        lines = [f"  {name!r}: {op} (opset {opset}){': ' + why if why else ''}"
                 for name, op, opset, why in nodes]
        super().__init__(f"from_onnx: {len(nodes)} node(s) cannot be converted:\n"
                         + "\n".join(lines))


class _Refused(Exception):
    """A converter's refusal of one node (an attribute or operand it cannot express)."""


def _import_onnx() -> Any:
    try:
        import onnx
        import onnx.numpy_helper
        import onnx.reference
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    return onnx


# ---------------------------------------------------------------------------- context
@dataclass
class _Ctx:
    """What a converter sees: the node, its attributes, its inputs (a SymbolicTensor for
    a graph tensor, an ndarray for a constant, None for an absent optional input), the
    opset, the model's dtype, and a way to call layers with the node's name."""

    onnx: Any
    opset: int
    dtype: np.dtype
    batch: int | None                       # the graph inputs' static batch size
    node: Any = None
    attrs: dict | None = None
    inputs: list | None = None
    base_name: str = ""
    names: set | None = None
    readers: dict | None = None             # tensor name -> op types of the nodes reading
    #                                         it, and "(graph output)" for a graph output

    # -- inputs
    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def value(self, i: int) -> Any:
        return self.inputs[i] if i < len(self.inputs) else None

    def data(self, i: int = 0) -> SymbolicTensor:
        v = self.value(i)
        if not isinstance(v, SymbolicTensor):
            raise _Refused(f"input {i} must be a graph tensor, got "
                           + ("nothing" if v is None else "a constant"))
        return v

    def const(self, i: int, what: str) -> np.ndarray:
        v = self.value(i)
        if isinstance(v, SymbolicTensor):
            raise _Refused(f"{what} (input {i}) must be a constant (an initializer or a "
                           "folded sub-graph), got a graph tensor")
        if v is None:
            raise _Refused(f"{what} (input {i}) is missing")
        return v

    def optional_const(self, i: int, what: str) -> np.ndarray | None:
        v = self.value(i)
        return None if v is None else self.const(i, what)

    def weight(self, array: np.ndarray) -> np.ndarray:
        return np.asarray(array, dtype=self.dtype)

    # -- shapes
    def rank(self, x: SymbolicTensor) -> int:
        if x.shape is None:
            raise _Refused("the input's rank is unknown (give the graph input a shape)")
        return 1 + len(x.shape)

    def sample(self, x: SymbolicTensor, what: str = "the input") -> tuple[int, ...]:
        """One sample's shape, every entry known."""
        if x.shape is None or None in x.shape:
            raise _Refused(f"needs {what}'s full shape, got {x!r} (declare the ONNX graph "
                           "input with static dimensions after the batch)")
        return tuple(x.shape)

    def axis(self, axis: int, rank: int, what: str = "axis") -> int:
        if not -rank <= axis < rank:
            raise _Refused(f"{what} {axis} is out of range for a rank-{rank} input")
        axis %= rank
        if axis == 0:
            raise _Refused(f"{what} 0 is the batch axis (chainrule keeps each sample apart)")
        return axis

    # -- layers
    def call(self, layer: L.Layer, x: Any, part: str = "", num_outputs: int | None = None) -> Any:
        """``layer(x)`` as a node named after the ONNX node (``part`` tells the helper
        layers of one node apart); the layer is built in the model's dtype."""
        if any(True for _ in layer.parameters()) or any(True for _ in layer.named_buffers()):
            layer.to(self.dtype)
        name = self.base_name if not part else f"{self.base_name}_{part}"
        name = _unique(name, self.names)
        return call_symbolic(layer, x, name=name, num_outputs=num_outputs)


def _unique(name: str, taken: set) -> str:
    candidate, k = name, 1
    while candidate in taken or hasattr(L.Graph, candidate):
        candidate, k = f"{name}_{k}", k + 1
    taken.add(candidate)
    return candidate


def _clean(name: str) -> str:
    """An ONNX name as a chainrule node name: no '/', ':', quotes or spaces."""
    text = re.sub(r"[/:\s\"']+", ".", name).strip(".")
    return re.sub(r"\.+", ".", text)


def _layer_name(node: Any, initializers: set) -> str:
    """A weight's name without ``.weight`` (torch's module path, so state-dict keys read
    like torch's), else the node's name without the op suffix, else the op type."""
    if len(node.input) > 1 and node.input[1] in initializers and \
            node.input[1].endswith(".weight"):
        return _clean(node.input[1][:-len(".weight")]) or node.op_type.lower()
    parts = [p for p in node.name.split("/") if p]
    if len(parts) > 1 and re.fullmatch(re.escape(node.op_type) + r"(_\d+)?", parts[-1]):
        parts = parts[:-1]
    # torch's scopes ("/layer1/layer1.0/conv1/Conv"): a part that extends the one
    # before it ("layer1" -> "layer1.0") replaces it, so the path reads "layer1.0.conv1"
    path: list[str] = []
    for part in parts:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    return _clean("/".join(path)) or node.op_type.lower()


# ---------------------------------------------------------------------------- helpers
def _spatial_pads(ctx: _Ctx, x: SymbolicTensor, kernel: list[int], strides: list[int],
                  dilations: list[int]) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial axis from ``pads`` or ``auto_pad``."""
    dims = len(kernel)
    auto = ctx.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = list(ctx.attr("pads", [0] * 2 * dims))
        return [(pads[i], pads[i + dims]) for i in range(dims)]
    if auto == "VALID":
        return [(0, 0)] * dims
    sizes = ctx.sample(x)[-dims:]
    out = []
    for n, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        small, big = total // 2, total - total // 2
        out.append((small, big) if auto == "SAME_UPPER" else (big, small))
    return out


def _pad_layer(pads: list[tuple[int, int]], value: float = 0.0) -> L.Layer:
    """A pad layer for (begin, end) pads of the last one or two axes."""
    (top, bottom), (left, right) = pads if len(pads) == 2 else [(0, 0), pads[0]]
    padding = (left, right, top, bottom)
    return L.ZeroPad2d(padding) if value == 0 else L.ConstantPad2d(padding, value)


def _spatial_rank(ctx: _Ctx, x: SymbolicTensor, what: str) -> int:
    dims = ctx.rank(x) - 2
    if dims not in (1, 2):
        raise _Refused(f"{dims}-D {what} (the catalog has 1-D and 2-D ones)")
    return dims


# ---------------------------------------------------------------------------- convolution
def _conv(ctx: _Ctx) -> list:
    x, w = ctx.data(0), ctx.const(1, "the weight")
    b = ctx.optional_const(2, "the bias")
    dims = _spatial_rank(ctx, x, "convolution")
    kernel = list(ctx.attr("kernel_shape", w.shape[2:]))
    strides = list(ctx.attr("strides", [1] * dims))
    dilations = list(ctx.attr("dilations", [1] * dims))
    group = ctx.attr("group", 1)
    pads = _spatial_pads(ctx, x, kernel, strides, dilations)
    if all(p == q for p, q in pads):
        padding = [p for p, _ in pads]
    else:   # asymmetric: explicit zeros first (Conv2d pads both sides alike)
        x = ctx.call(_pad_layer(pads), x, "pad")
        padding = [0] * dims
    cls = L.Conv2d if dims == 2 else L.Conv1d
    single = (lambda v: v[0]) if dims == 1 else tuple
    conv = cls(w.shape[1] * group, w.shape[0], single(kernel), stride=single(strides),
               padding=single(padding), dilation=single(dilations), groups=group,
               bias=b is not None, dtype=ctx.dtype)
    conv.weight.data[...] = ctx.weight(w)
    if b is not None:
        conv.bias.data[...] = ctx.weight(b)
    return [ctx.call(conv, x)]


def _conv_transpose(ctx: _Ctx) -> list:
    x, w = ctx.data(0), ctx.const(1, "the weight")
    b = ctx.optional_const(2, "the bias")
    if _spatial_rank(ctx, x, "transposed convolution") != 2:
        raise _Refused("1-D transposed convolution (the catalog has ConvTranspose2d only)")
    kernel = list(ctx.attr("kernel_shape", w.shape[2:]))
    strides = list(ctx.attr("strides", [1, 1]))
    dilations = list(ctx.attr("dilations", [1, 1]))
    group = ctx.attr("group", 1)
    out_pad = list(ctx.attr("output_padding", [0, 0]))
    full = [s * (n - 1) + op + (k - 1) * d + 1 for n, s, op, k, d in
            zip(ctx.sample(x)[-2:], strides, out_pad, kernel, dilations)]
    auto = ctx.attr("auto_pad", "NOTSET")
    if ctx.attr("output_shape") is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        target = (list(ctx.attr("output_shape"))[-2:] if ctx.attr("output_shape") is not None
                  else [n * s for n, s in zip(ctx.sample(x)[-2:], strides)])
        totals = [f - t for f, t in zip(full, target)]
        # the spec's split: SAME_UPPER puts the odd one at the end, else at the start
        pads = [(t // 2, t - t // 2) if auto == "SAME_UPPER" else (t - t // 2, t // 2)
                for t in totals]
    elif auto == "VALID":
        pads = [(0, 0), (0, 0)]
    else:
        p = list(ctx.attr("pads", [0, 0, 0, 0]))
        pads = [(p[0], p[2]), (p[1], p[3])]
    # a negative end pad (an output_shape past the full output) is more output padding:
    # rows of bias only, as torch's output_padding adds them
    out_pad = [op - min(end, 0) for op, (_, end) in zip(out_pad, pads)]
    pads = [(begin, max(end, 0)) for begin, end in pads]
    if min(begin for begin, _ in pads) < 0:
        raise _Refused(f"a negative start pad in {pads} (output before the first row)")
    limit_ok = all(op < max(s, d) for op, s, d in zip(out_pad, strides, dilations))
    if all(p == q for p, q in pads) and limit_ok:
        padding, crop = [p for p, _ in pads], None
    else:   # the full output, then the pads cropped away
        padding, crop = [0, 0], pads
        if not limit_ok:
            raise _Refused(f"output_padding {out_pad} not below the stride or dilation")
    conv = L.ConvTranspose2d(w.shape[0], w.shape[1] * group, tuple(kernel), stride=tuple(strides),
                             padding=tuple(padding), output_padding=tuple(out_pad), groups=group,
                             bias=b is not None, dilation=tuple(dilations), dtype=ctx.dtype)
    conv.weight.data[...] = ctx.weight(w)
    if b is not None:
        conv.bias.data[...] = ctx.weight(b)
    y = ctx.call(conv, x)
    if crop is not None and any(p or q for p, q in crop):
        (top, bottom), (left, right) = crop
        y = ctx.call(L.ZeroPad2d((-left, -right, -top, -bottom)), y, "crop")
    return [y]


# ---------------------------------------------------------------------------- linear
def _linear(ctx: _Ctx, x: SymbolicTensor, weight: np.ndarray, bias: np.ndarray | None,
            part: str = "") -> SymbolicTensor:
    """Linear with ``weight`` (out, in) and ``bias`` (out,) or None."""
    layer = L.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=ctx.dtype)
    layer.weight.data[...] = ctx.weight(weight)
    if bias is not None:
        layer.bias.data[...] = ctx.weight(bias)
    return ctx.call(layer, x, part)


def _gemm(ctx: _Ctx) -> list:
    if ctx.attr("transA", 0):
        raise _Refused("transA=1 transposes the data operand, moving its batch axis")
    x, b = ctx.data(0), ctx.const(1, "B")
    c = ctx.optional_const(2, "C")
    if ctx.rank(x) != 2:
        raise _Refused(f"A must be 2-D, got rank {ctx.rank(x)}")
    b = b.T if ctx.attr("transB", 0) else b                         # (K, M)
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    weight = (ctx.weight(b) * ctx.dtype.type(alpha)).T if alpha != 1 else ctx.weight(b).T
    m = weight.shape[0]
    bias = None
    if c is not None:
        scaled = ctx.weight(c) * ctx.dtype.type(beta) if beta != 1 else ctx.weight(c)
        if scaled.ndim <= 1 or (scaled.ndim == 2 and scaled.shape[0] == 1):
            bias = np.broadcast_to(scaled.reshape(-1), (m,)).copy()
        else:   # C differs per row: added after the product
            y = _linear(ctx, x, weight, None)
            return [_constant_op(ctx, "add", y, scaled, "c")]
    return [_linear(ctx, x, weight, bias)]


def _matmul(ctx: _Ctx) -> list:
    a, b = ctx.value(0), ctx.value(1)
    if not isinstance(a, SymbolicTensor):
        raise _Refused("a constant first operand (only x @ W, with W constant, is a Linear)")
    w = ctx.const(1, "B")
    if w.ndim != 2:
        raise _Refused(f"a {w.ndim}-D constant operand (a 2-D one is a Linear)")
    if ctx.rank(a) < 2:
        raise _Refused("a 1-D data operand")
    return [_linear(ctx, a, w.T, None)]


# ---------------------------------------------------------------------------- arithmetic
def _constant_op(ctx: _Ctx, op: str, x: SymbolicTensor, c: np.ndarray, part: str = "") -> Any:
    c = ctx.weight(c)
    rank = ctx.rank(x)
    if c.ndim > rank:
        raise _Refused(f"a constant of shape {c.shape} broadcasts over the batch axis of a "
                       f"rank-{rank} input, adding axes before it")
    if c.ndim == rank and c.shape[0] != 1 and c.shape[0] != ctx.batch:
        raise _Refused(f"a constant of shape {c.shape} varies along the batch axis")
    if c.ndim == rank and c.shape[0] == 1:
        c = c[0]        # one value per sample position: the batch broadcasts
    layer = ConstantArithmetic(op, c.shape, dtype=ctx.dtype)
    layer.value[...] = c
    return ctx.call(layer, x, part)


def _binary(kind: str) -> Callable[[_Ctx], list]:
    """Add, Sub, Mul, Div: graph tensors through Add / Multiply; a constant operand
    through ConstantArithmetic (Sub x - c as x + (-c), exact in floating point)."""
    const_ops = {"Add": ("add", "add"), "Sub": ("sub", "rsub"), "Mul": ("mul", "mul"),
                 "Div": ("div", "rdiv")}[kind]

    def convert(ctx: _Ctx) -> list:
        a, b = ctx.value(0), ctx.value(1)
        if isinstance(a, SymbolicTensor) and isinstance(b, SymbolicTensor):
            if kind == "Sub":
                b = _constant_op(ctx, "mul", b, np.array(-1.0), "neg")
            elif kind == "Div":
                b = _constant_op(ctx, "rdiv", b, np.array(1.0), "reciprocal")
            if ctx.rank(a) != ctx.rank(b):
                raise _Refused("graph tensors of different ranks would not share a batch axis")
            merge = L.Add() if kind in ("Add", "Sub") else L.Multiply()
            return [ctx.call(merge, [a, b])]
        if isinstance(a, SymbolicTensor):
            return [_constant_op(ctx, const_ops[0], a, ctx.const(1, "B"))]
        return [_constant_op(ctx, const_ops[1], ctx.data(1), ctx.const(0, "A"))]
    return convert


def _sum(ctx: _Ctx) -> list:
    data = [v for v in ctx.inputs if isinstance(v, SymbolicTensor)]
    consts = [v for v in ctx.inputs if v is not None and not isinstance(v, SymbolicTensor)]
    if not data:
        raise _Refused("no graph tensor among the inputs")
    y = data[0] if len(data) == 1 else ctx.call(L.Add(), data)
    if consts:
        y = _constant_op(ctx, "add", y, sum(ctx.weight(c) for c in consts), "const")
    return [y]


# ---------------------------------------------------------------------------- activations
def _simple(factory: Callable[[_Ctx], L.Layer]) -> Callable[[_Ctx], list]:
    return lambda ctx: [ctx.call(factory(ctx), ctx.data(0))]


def _prelu(ctx: _Ctx) -> list:
    x, slope = ctx.data(0), ctx.const(1, "the slope")
    rank = ctx.rank(x)
    if slope.ndim > rank:
        raise _Refused(f"a slope of shape {slope.shape} for a rank-{rank} input")
    aligned = (1,) * (rank - slope.ndim) + slope.shape
    others = [s for i, s in enumerate(aligned) if i != 1]
    if any(s != 1 for s in others):
        raise _Refused(f"a slope of shape {slope.shape} is neither shared nor per channel "
                       "(axis 1)")
    layer = L.PReLU(num_parameters=aligned[1] if rank > 1 else 1, dtype=ctx.dtype)
    layer.weight.data[...] = ctx.weight(slope).reshape(-1)
    return [ctx.call(layer, x)]


def _clip(ctx: _Ctx) -> list:
    x = ctx.data(0)
    if ctx.opset < 11:
        low, high = ctx.attr("min"), ctx.attr("max")
    else:
        lo, hi = ctx.optional_const(1, "min"), ctx.optional_const(2, "max")
        low = None if lo is None or lo.size == 0 else float(lo.reshape(-1)[0])
        high = None if hi is None or hi.size == 0 else float(hi.reshape(-1)[0])
    big = float(np.finfo(np.float32).max)
    low = None if low is None or low <= -big else low
    high = None if high is None or high >= big else high
    if low is None and high is None:
        return [x]
    if low == 0 and high == 6:
        return [ctx.call(L.ReLU6(), x)]
    if low == 0 and high is None:
        return [ctx.call(L.ReLU(), x)]
    if low is None or high is None:
        raise _Refused(f"one bound only (min={low}, max={high}); ReLU covers min 0, "
                       "Hardtanh two bounds")
    if not high > low:
        raise _Refused(f"min {low} not below max {high}")
    return [ctx.call(L.Hardtanh(low, high), x)]


def _hard_sigmoid(ctx: _Ctx) -> list:
    x = ctx.data(0)
    alpha, beta = ctx.attr("alpha", 0.2), ctx.attr("beta", 0.5)
    if np.float32(alpha) == np.float32(1 / 6) and beta == 0.5:
        return [ctx.call(L.Hardsigmoid(), x)]
    y = _constant_op(ctx, "mul", x, np.array(alpha), "alpha")
    y = _constant_op(ctx, "add", y, np.array(beta), "beta")
    return [ctx.call(L.Hardtanh(0.0, 1.0), y)]


def _selu(ctx: _Ctx) -> list:
    x = ctx.data(0)
    alpha = ctx.attr("alpha", 1.67326319217681884765625)
    gamma = ctx.attr("gamma", 1.05070102214813232421875)
    if np.float32(alpha) == np.float32(L.SELU.ALPHA) and \
            np.float32(gamma) == np.float32(L.SELU.SCALE):
        return [ctx.call(L.SELU(), x)]
    y = ctx.call(L.ELU(alpha), x)
    return [_constant_op(ctx, "mul", y, np.array(gamma), "gamma")]


def _softmax(cls: type) -> Callable[[_Ctx], list]:
    def convert(ctx: _Ctx) -> list:
        x = ctx.data(0)
        rank = ctx.rank(x)
        axis = ctx.axis(ctx.attr("axis", -1 if ctx.opset >= 13 else 1), rank)
        if ctx.opset >= 13 or axis == rank - 1:
            return [ctx.call(cls(dim=axis), x)]
        # Before opset 13: softmax over all axes from `axis` on, as one flattened axis.
        sample = ctx.sample(x)
        flat = ctx.call(L.Reshape((*sample[:axis - 1], -1)), x, "flatten")
        y = ctx.call(cls(dim=-1), flat)
        return [ctx.call(L.Reshape(sample), y, "unflatten")]
    return convert


# ---------------------------------------------------------------------------- pooling
def _pool(kind: str) -> Callable[[_Ctx], list]:
    def convert(ctx: _Ctx) -> list:
        x = ctx.data(0)
        if len(ctx.node.output) > 1 and ctx.node.output[1]:
            raise _Refused("the Indices output")
        dims = _spatial_rank(ctx, x, "pooling")
        kernel = list(ctx.attr("kernel_shape"))
        strides = list(ctx.attr("strides", [1] * dims))
        dilations = list(ctx.attr("dilations", [1] * dims))
        ceil = bool(ctx.attr("ceil_mode", 0))
        include = bool(ctx.attr("count_include_pad", 0))
        pads = _spatial_pads(ctx, x, kernel, strides, dilations)
        if kind == "avg" and dilations != [1] * dims:
            raise _Refused(f"dilations {dilations} (AvgPool has none)")
        fits = all(p == q and p <= k // 2 for (p, q), k in zip(pads, kernel))
        explicit = None if fits else pads
        if not fits:
            fill = 0.0 if kind == "avg" else _LOWEST
            x = ctx.call(_pad_layer(pads, fill), x, "pad")
            pads = [(0, 0)] * dims
        single = (lambda v: v[0]) if dims == 1 else tuple
        padding = single([p for p, _ in pads])
        if kind == "max":
            cls = L.MaxPool2d if dims == 2 else L.MaxPool1d
            layer = cls(single(kernel), stride=single(strides), padding=padding,
                        dilation=single(dilations), ceil_mode=ceil)
        else:
            cls = L.AvgPool2d if dims == 2 else L.AvgPool1d
            layer = cls(single(kernel), stride=single(strides), padding=padding,
                        ceil_mode=ceil, count_include_pad=include)
        y = ctx.call(layer, x)
        if kind == "avg" and not include and explicit and any(p != (0, 0) for p in explicit):
            y = _exclude_pads(ctx, layer, y, explicit)
        return [y]
    return convert


def _exclude_pads(ctx: _Ctx, pool: L.Layer, y: SymbolicTensor,
                  pads: list[tuple[int, int]]) -> SymbolicTensor:
    """An average pool of zero-padded input (``pool`` after a pad layer) as ONNX's
    count_include_pad=0 takes it: each mean over the input's cells only. The pool of
    the padded input's indicator (1 inside, 0 in the pads) is each window's share of
    input cells; ``y`` divided by it (a constant map over the positions) is the mean."""
    sample = ctx.sample(ctx.data(0))
    inside = np.pad(np.ones((1, 1, *sample[1:])), [(0, 0), (0, 0), *pads])
    share = np.asarray(pool.forward(inside.astype(ctx.dtype)), np.float64)[0]
    if not np.all(share > 0):
        raise _Refused(f"pads {pads} with count_include_pad=0: a window holds only pads")
    layer = ConstantArithmetic("div", share.shape, dtype=ctx.dtype)
    layer.value[...] = share
    return ctx.call(layer, y, "exclude_pads")


def _global_pool(kind: str) -> Callable[[_Ctx], list]:
    def convert(ctx: _Ctx) -> list:
        x = ctx.data(0)
        rank = ctx.rank(x)
        if rank == 4:
            layer = L.AdaptiveAvgPool2d(1) if kind == "avg" else L.AdaptiveMaxPool2d(1)
        elif kind == "avg" and rank >= 3:
            layer = L.Mean(tuple(range(2, rank)), keepdim=True)
        else:
            raise _Refused(f"a rank-{rank} input (4-D only for the max pool)")
        return [ctx.call(layer, x)]
    return convert


# ---------------------------------------------------------------------------- normalization
def _batch_norm(ctx: _Ctx) -> list:
    x = ctx.data(0)
    if ctx.attr("training_mode", 0):
        raise _Refused("training_mode=1 (inference only)")
    if any(o for o in ctx.node.output[1:]):
        raise _Refused("the running-statistics outputs (training)")
    if ctx.opset < 9 and not ctx.attr("spatial", 1):
        raise _Refused("spatial=0 (statistics per position)")
    scale, bias, mean, var = (ctx.const(i, w) for i, w in
                              enumerate(["scale", "B", "mean", "var"], start=1))
    rank = ctx.rank(x)
    if rank not in (2, 3, 4):
        raise _Refused(f"a rank-{rank} input")
    cls = L.BatchNorm2d if rank == 4 else L.BatchNorm1d
    layer = cls(scale.shape[0], eps=ctx.attr("epsilon", 1e-5),
                momentum=1.0 - ctx.attr("momentum", 0.9), dtype=ctx.dtype)
    layer.weight.data[...] = ctx.weight(scale)
    layer.bias.data[...] = ctx.weight(bias)
    layer.running_mean[...] = ctx.weight(mean)
    layer.running_var[...] = ctx.weight(var)
    return [ctx.call(layer, x)]


def _instance_norm(ctx: _Ctx) -> list:
    x = ctx.data(0)
    scale, bias = ctx.const(1, "scale"), ctx.const(2, "B")
    eps = ctx.attr("epsilon", 1e-5)
    c = scale.shape[0]
    layer = (L.InstanceNorm2d(c, eps=eps, affine=True, dtype=ctx.dtype) if ctx.rank(x) == 4
             else L.GroupNorm(c, c, eps=eps, dtype=ctx.dtype))
    layer.weight.data[...] = ctx.weight(scale)
    layer.bias.data[...] = ctx.weight(bias)
    return [ctx.call(layer, x)]


def _lrn(ctx: _Ctx) -> list:
    size = ctx.attr("size")
    if size % 2 == 0:
        raise _Refused(f"an even size {size} (ONNX's window is torch's mirrored)")
    return [ctx.call(L.LocalResponseNorm(size, alpha=ctx.attr("alpha", 1e-4),
                                         beta=ctx.attr("beta", 0.75), k=ctx.attr("bias", 1.0)),
                     ctx.data(0))]


def _dropout(ctx: _Ctx) -> list:
    if len(ctx.node.output) > 1 and ctx.readers.get(ctx.node.output[1]):
        # an unread mask (Caffe2's exports name one) is left out; a read one is refused
        raise _Refused("the mask output (read by another node or a graph output)")
    ratio = ctx.attr("ratio", 0.5)
    if ctx.opset >= 12:
        given = ctx.optional_const(1, "ratio")
        ratio = 0.5 if given is None else float(given)
        mode = ctx.optional_const(2, "training_mode")
        if mode is not None and bool(mode):
            raise _Refused("training_mode=True (inference only)")
    return [ctx.call(L.Dropout(ratio), ctx.data(0))]


def _layer_norm(ctx: _Ctx) -> list:
    x, scale = ctx.data(0), ctx.const(1, "scale")
    bias = ctx.optional_const(2, "B")
    if ctx.attr("stash_type", 1) != 1 or any(o for o in ctx.node.output[1:]):
        raise _Refused("the Mean / InvStdDev outputs or a stash_type other than float")
    rank = ctx.rank(x)
    axis = ctx.axis(ctx.attr("axis", -1), rank)
    shape = ctx.sample(x)[axis - 1:]
    layer = L.LayerNorm(shape, eps=ctx.attr("epsilon", 1e-5), bias=bias is not None,
                        dtype=ctx.dtype)
    layer.weight.data[...] = np.broadcast_to(ctx.weight(scale), shape)
    if bias is not None:
        layer.bias.data[...] = np.broadcast_to(ctx.weight(bias), shape)
    return [ctx.call(layer, x)]


# ---------------------------------------------------------------------------- shape
def _reduce_mean(ctx: _Ctx) -> list:
    x = ctx.data(0)
    rank = ctx.rank(x)
    axes = _axes_arg(ctx, 1, since=18)
    if axes is None or len(axes) == 0:
        if ctx.attr("noop_with_empty_axes", 0):
            return [x]
        raise _Refused("no axes: the mean over every axis mixes the samples")
    dims = tuple(ctx.axis(a, rank, "axes entry") for a in axes)
    return [ctx.call(L.Mean(dims, keepdim=bool(ctx.attr("keepdims", 1))), x)]


def _depth_to_space(ctx: _Ctx) -> list:
    if ctx.attr("mode", "DCR") != "CRD":
        raise _Refused("mode DCR (PixelShuffle is mode CRD)")
    return [ctx.call(L.PixelShuffle(ctx.attr("blocksize")), ctx.data(0))]


def _flatten(ctx: _Ctx) -> list:
    x = ctx.data(0)
    rank = ctx.rank(x)
    axis = ctx.attr("axis", 1)
    if (axis + rank if axis < 0 else axis) != 1:
        raise _Refused(f"axis {ctx.attr('axis', 1)} merges the batch axis with others (axis 1 "
                       "keeps it)")
    if rank == 1:   # (N,) -> (N, 1): a sample of no axes becomes one of one element
        return [_reshape_to(ctx, x, [1])]
    return [ctx.call(L.Flatten(1, -1), x)]


def _reshape_to(ctx: _Ctx, x: SymbolicTensor, target: list[int], part: str = "") -> Any:
    """A Reshape of each sample to ``target`` (per-sample, -1 allowed)."""
    return ctx.call(L.Reshape(tuple(int(t) for t in target)), x, part)


def _reshape(ctx: _Ctx) -> list:
    x, shape = ctx.data(0), [int(v) for v in ctx.const(1, "the shape")]
    allowzero = ctx.attr("allowzero", 0)
    if not shape:
        raise _Refused("a 0-D target has no batch axis")
    sample = x.shape
    first, rest = shape[0], shape[1:]
    if not allowzero:
        if 0 in rest and sample is None:
            raise _Refused("0 (copy a dimension) needs the input's shape")
        rest = [sample[i] if (v == 0 and i < len(sample)) else v for i, v in enumerate(rest)]
        if None in rest:
            raise _Refused("0 copies a dimension whose size is unknown")
    keeps_batch = first == BATCH or (first == 0 and not allowzero) or \
        (ctx.batch is not None and first == ctx.batch and first != -1)
    if first == -1:
        if -1 in rest or sample is None or None in sample or \
                math.prod(rest) != math.prod(sample):
            raise _Refused(f"target {shape}: -1 on the batch axis must leave one sample's size "
                           "to the other axes")
        keeps_batch = True
    if not keeps_batch:
        raise _Refused(f"target {shape} changes the batch axis")
    if any(v >= BATCH // 2 for v in rest):
        raise _Refused(f"target {shape} uses the batch size on another axis")
    return [_reshape_to(ctx, x, rest)]


def _axes_arg(ctx: _Ctx, index: int, since: int = 13) -> list[int] | None:
    """``axes`` as an attribute (before opset ``since``) or an input (from it on)."""
    if ctx.opset < since:
        return ctx.attr("axes")
    given = ctx.optional_const(index, "axes")
    return None if given is None else [int(a) for a in given.reshape(-1)]


def _squeeze(ctx: _Ctx) -> list:
    x = ctx.data(0)
    sample, rank = ctx.sample(x), ctx.rank(x)
    axes = _axes_arg(ctx, 1)
    if axes is None:
        keep = [d for d in sample if d != 1]
    else:
        drop = {ctx.axis(a, rank, "axes entry") for a in axes}
        if any(sample[a - 1] != 1 for a in drop):
            raise _Refused(f"axes {axes} include an axis whose size is not 1 (shape {sample})")
        keep = [d for i, d in enumerate(sample, start=1) if i not in drop]
    return [_reshape_to(ctx, x, keep)]


def _unsqueeze(ctx: _Ctx) -> list:
    x = ctx.data(0)
    sample = list(ctx.sample(x))
    axes = _axes_arg(ctx, 1)
    if axes is None:
        raise _Refused("no axes")
    rank = ctx.rank(x) + len(axes)
    out: list[int | None] = [None] * rank
    for a in axes:
        out[ctx.axis(a, rank, "axes entry")] = 1
    if out[0] is not None:
        raise _Refused("a new axis 0 would move the batch axis")
    it = iter([-2] + sample)    # -2 stands for the batch
    out = [next(it) if v is None else v for v in out]
    return [_reshape_to(ctx, x, out[1:])]


def _transpose(ctx: _Ctx) -> list:
    x = ctx.data(0)
    rank = ctx.rank(x)
    perm = list(ctx.attr("perm", list(range(rank))[::-1]))
    if perm[0] != 0:
        raise _Refused(f"perm {perm} moves the batch axis")
    return [ctx.call(L.Permute(perm), x)]


def _concat(ctx: _Ctx) -> list:
    present = [v for v in ctx.inputs if v is not None]
    if not all(isinstance(v, SymbolicTensor) for v in present):
        raise _Refused("a constant among the inputs (only graph tensors are joined)")
    axis = ctx.axis(ctx.attr("axis"), ctx.rank(present[0]))
    return [ctx.call(L.Concat(axis), present)]


def _split(ctx: _Ctx) -> list:
    x = ctx.data(0)
    axis = ctx.axis(ctx.attr("axis", 0), ctx.rank(x))
    size = ctx.sample(x)[axis - 1]
    count = len(ctx.node.output)
    if ctx.opset < 13:
        split = ctx.attr("split")
    else:
        given = ctx.optional_const(1, "split")
        split = None if given is None else [int(s) for s in given]
    if split is None:
        pieces = ctx.attr("num_outputs", count)
        step = -(-size // pieces)                       # the last piece may be smaller
        split = [min(step, size - i * step) for i in range(pieces)]
    outs = ctx.call(L.Split(list(split), dim=axis), x, num_outputs=len(split))
    return list(outs) if isinstance(outs, list) else [outs]


def _pad(ctx: _Ctx) -> list:
    x = ctx.data(0)
    rank = ctx.rank(x)
    mode = ctx.attr("mode", "constant")
    if ctx.opset < 11:
        pads, value = list(ctx.attr("pads")), ctx.attr("value", 0.0)
    else:
        pads = [int(p) for p in ctx.const(1, "pads")]
        given = ctx.optional_const(2, "constant_value")
        value = 0.0 if given is None or given.size == 0 else float(given.reshape(-1)[0])
        axes = ctx.optional_const(3, "axes") if ctx.opset >= 18 else None
        if axes is not None:    # pads for the listed axes only: spread to all
            full = [0] * (2 * rank)
            k = len(axes)
            for j, a in enumerate(int(a) % rank for a in axes):
                full[a], full[a + rank] = pads[j], pads[j + k]
            pads = full
    amounts = [(pads[i], pads[i + rank]) for i in range(rank)]
    # The pad layers pad the last two axes of a 3-D or 4-D array (a 3-D one's first axis
    # is then the batch): axes 0 (and 1 for 4-D) must stay as they are.
    fixed = amounts[:rank - 2] if rank == 4 else amounts[:1]
    if rank not in (3, 4) or any(a != (0, 0) for a in fixed):
        raise _Refused(f"pads {pads} on a rank-{rank} input (the pad layers pad the last two "
                       "axes of 3-D and 4-D arrays)")
    (top, bottom), (left, right) = amounts[-2:]
    padding = (left, right, top, bottom)
    if mode == "constant" and value == -np.inf and \
            set(ctx.readers.get(ctx.node.output[0], ())) == {"MaxPool"}:
        # export_onnx's ceil_mode pads with -inf before a MaxPool; the lowest finite value
        # gives the same maxima (every window holds an input element) and can be saved
        value = _LOWEST
    if mode == "constant":
        if not np.isfinite(value):
            raise _Refused(f"constant_value {value} (a checkpoint holds finite values; -inf "
                           "is taken only before a MaxPool)")
        layer = L.ZeroPad2d(padding) if value == 0 else L.ConstantPad2d(padding, value)
    elif mode == "reflect":
        layer = L.ReflectionPad2d(padding)
    elif mode == "edge":
        layer = L.ReplicationPad2d(padding)
    else:
        raise _Refused(f"mode {mode!r} (constant, reflect and edge are supported)")
    return [ctx.call(layer, x)]


# ---------------------------------------------------------------------------- resize
def _resize(ctx: _Ctx) -> list:
    """Resize and Upsample as catalog Upsample: the candidates that fit the attributes are
    compared with onnx's reference evaluator on a random probe of the input's shape, and
    the first that reproduces it is taken (so a coordinate rule chainrule does not have
    is refused rather than approximated)."""
    x = ctx.data(0)
    rank = ctx.rank(x)
    sample = ctx.sample(x)
    if rank not in (3, 4):
        raise _Refused(f"a rank-{rank} input (Upsample resizes 1 or 2 spatial axes)")
    op = ctx.node.op_type
    mode = ctx.attr("mode", "nearest")
    if op == "Resize":
        if ctx.attr("antialias", 0) or ctx.attr("axes") is not None:
            raise _Refused("antialias or axes")
        if ctx.attr("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
            raise _Refused("coordinate_transformation_mode tf_crop_and_resize")
        if ctx.opset == 10:
            scales, sizes = ctx.const(1, "scales"), None
        else:
            scales, sizes = ctx.optional_const(2, "scales"), ctx.optional_const(3, "sizes")
    else:
        scales = (np.array(ctx.attr("scales"), np.float32) if ctx.opset < 9
                  else ctx.const(1, "scales"))
        sizes = None
    if sizes is not None and sizes.size:
        sizes = [int(s) for s in sizes]
        if sizes[1] != sample[0]:
            raise _Refused(f"sizes {sizes} resize the channel axis")
        spatial = {"size": tuple(sizes[2:])}
        if ctx.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
            raise _Refused("keep_aspect_ratio_policy other than stretch")
    elif scales is not None and scales.size:
        s = [float(v) for v in scales]
        if s[0] != 1 or s[1] != 1:
            raise _Refused(f"scales {s} resize the batch or channel axis")
        spatial = {"scale_factor": tuple(s[2:])}
    else:
        raise _Refused("neither scales nor sizes")
    linear = "bilinear" if rank == 4 else "linear"
    candidates = {"nearest": [{"mode": "nearest"}, {"mode": "nearest-exact"}],
                  "linear": [{"mode": linear, "align_corners": False},
                             {"mode": linear, "align_corners": True}],
                  "bilinear": [{"mode": linear, "align_corners": False},
                               {"mode": linear, "align_corners": True}]}.get(mode)
    if candidates is None:
        raise _Refused(f"mode {mode!r} (nearest and linear are supported)")
    if len(spatial.get("size", spatial.get("scale_factor"))) == 1:
        spatial = {k: v[0] for k, v in spatial.items()}
    probe = np.random.default_rng(0).standard_normal((1, 1, *sample[1:])).astype(ctx.dtype)
    expected = _reference(ctx, probe, scales, sizes)
    for options in candidates:
        for recompute in ([None, True] if "scale_factor" in spatial else [None]):
            try:
                layer = L.Upsample(**spatial, **options, recompute_scale_factor=recompute)
                got = layer.forward(probe)
            except ValueError:
                continue
            if got.shape == expected.shape and np.allclose(got, expected, rtol=1e-4, atol=1e-5):
                return [ctx.call(layer, x)]
    specified = op == "Upsample" or ctx.opset == 10     # asymmetric + floor by the spec
    rule = "asymmetric" if specified else ctx.attr("coordinate_transformation_mode",
                                                   "half_pixel")
    rounding = "floor" if specified else ctx.attr("nearest_mode", "round_prefer_floor")
    raise _Refused(f"mode {mode!r} with coordinate_transformation_mode {rule!r} and "
                   f"nearest_mode {rounding!r} matches none of Upsample's modes")


def _reference(ctx: _Ctx, probe: np.ndarray, scales: Any, sizes: Any) -> np.ndarray:
    """What onnx's reference evaluator makes of the node on ``probe`` (one sample of one
    channel). The node is run as a Resize of opset 13: Upsample (opsets 7 to 9) and
    Resize of opset 10 as the asymmetric, floor-rounding Resize they are specified as,
    ``sizes`` with the probe's batch and channel (a folded Shape's batch is BATCH)."""
    helper = ctx.onnx.helper
    attrs = dict(ctx.attrs)
    if ctx.node.op_type == "Upsample" or ctx.opset == 10:
        attrs = {"mode": attrs.get("mode", "nearest"), "nearest_mode": "floor",
                 "coordinate_transformation_mode": "asymmetric"}
    attrs["mode"] = "linear" if attrs.get("mode") == "bilinear" else attrs.get("mode", "nearest")
    if sizes is not None and len(sizes):
        feeds = {"x": probe, "sizes": np.array([1, 1, *list(sizes)[2:]], np.int64)}
        node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], **attrs)
    else:
        feeds = {"x": probe, "scales": np.asarray(scales, np.float32)}
        node = helper.make_node("Resize", ["x", "", "scales"], ["y"], **attrs)
    try:
        return _evaluate(ctx.onnx, node, max(ctx.opset, 13), feeds)[0]
    except Exception as err:   # noqa: BLE001 - the evaluator's own refusal, whatever its type
        raise _Refused(f"onnx's reference evaluator does not run it ({type(err).__name__}: "
                       f"{err})") from err


def _evaluate(onnx: Any, node: Any, opset: int, feeds: dict) -> list[np.ndarray]:
    """Run one node with onnx's reference evaluator at ``opset``. The node is wrapped in
    a graph: given a bare NodeProto, the evaluator ignores ``opsets`` and runs the
    latest opset's implementation (an Unsqueeze-1 with its ``axes`` attribute then
    fails as an Unsqueeze-13)."""
    info = onnx.ValueInfoProto
    graph = onnx.helper.make_graph([node], "fold", [info(name=i) for i in node.input if i],
                                   [info(name=o) for o in node.output if o])
    evaluator = onnx.reference.ReferenceEvaluator(graph, opsets={"": opset})
    results = iter(evaluator.run(None, feeds))
    return [np.asarray(next(results)) if o else None for o in node.output]


# ---------------------------------------------------------------------------- plumbing ops
def _identity(ctx: _Ctx) -> list:
    return [ctx.data(0)]


def _cast(ctx: _Ctx) -> list:
    to = ctx.onnx.helper.tensor_dtype_to_np_dtype(ctx.attr("to"))
    if np.dtype(to) != ctx.dtype:
        raise _Refused(f"a cast of a graph tensor to {np.dtype(to)} (the model is {ctx.dtype})")
    return [ctx.data(0)]


def _shape(ctx: _Ctx) -> list:
    """Shape of a graph tensor, folded from its declared shape (the batch: see BATCH)."""
    x = ctx.data(0)
    dims = np.array([ctx.batch if ctx.batch is not None else BATCH, *ctx.sample(x)], np.int64)
    rank = len(dims)
    start = ctx.attr("start", 0)
    end = ctx.attr("end", rank)
    return [dims[start:end]]


_CONVERTERS: dict[str, Callable[[_Ctx], list]] = {
    # convolution and linear
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    # arithmetic
    "Add": _binary("Add"),
    "Sub": _binary("Sub"),
    "Mul": _binary("Mul"),
    "Div": _binary("Div"),
    "Sum": _sum,
    # activations
    "Relu": _simple(lambda ctx: L.ReLU()),
    "LeakyRelu": _simple(lambda ctx: L.LeakyReLU(ctx.attr("alpha", 0.01))),
    "PRelu": _prelu,
    "Sigmoid": _simple(lambda ctx: L.Sigmoid()),
    "Tanh": _simple(lambda ctx: L.Tanh()),
    "Clip": _clip,
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _simple(lambda ctx: L.Hardswish()),
    "Elu": _simple(lambda ctx: L.ELU(ctx.attr("alpha", 1.0))),
    "Celu": _simple(lambda ctx: L.CELU(ctx.attr("alpha", 1.0))),
    "Selu": _selu,
    "Softplus": _simple(lambda ctx: L.Softplus()),
    "Softmax": _softmax(L.Softmax),
    "LogSoftmax": _softmax(L.LogSoftmax),
    # pooling
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "GlobalAveragePool": _global_pool("avg"),
    "GlobalMaxPool": _global_pool("max"),
    # normalization and regularization
    "BatchNormalization": _batch_norm,
    "InstanceNormalization": _instance_norm,
    "LRN": _lrn,
    "LayerNormalization": _layer_norm,
    "Dropout": _dropout,
    # shape
    "Flatten": _flatten,
    "ReduceMean": _reduce_mean,
    "DepthToSpace": _depth_to_space,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Concat": _concat,
    "Split": _split,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Pad": _pad,
    "Resize": _resize,
    "Upsample": _resize,
    "Identity": _identity,
    # graph tensors that fold or pass through
    "Cast": _cast,
    "Shape": _shape,
}


# ---------------------------------------------------------------------------- the import
def _load(onnx: Any, model: Any) -> Any:
    if isinstance(model, (str, os.PathLike)):
        return onnx.load(os.fspath(model))
    if isinstance(model, onnx.ModelProto):
        return model
    raise TypeError(f"from_onnx: expected a path or an onnx.ModelProto, got "
                    f"{type(model).__name__}")


def _opset(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise UnsupportedOnnxError([("(model)", "(opset_import)", 0,
                                 "no opset of the default domain")])


@functools.lru_cache(maxsize=None)
def _foldable(op: str, opset: int) -> bool:
    """Whether onnx's reference evaluator computes ``op`` (random ops excluded)."""
    if op in _RANDOM_OPS:
        return False
    try:
        from onnx.reference.ops import load_op
        load_op("", op, opset)
    except Exception:   # noqa: BLE001 - any failure means the evaluator lacks the op
        return False
    return True


def _check_nodes(onnx: Any, graph: Any, opset: int, constants: set) -> None:
    """Every node converts or folds: else ONE error naming all that do not. Runs before
    anything is computed (constness is propagated by names only)."""
    known = set(constants)
    bad = []
    for node in graph.node:
        inputs = [i for i in node.input if i]
        constant = all(i in known for i in inputs)
        if node.domain not in ("", "ai.onnx"):
            bad.append((node.name, f"{node.domain}.{node.op_type}", opset, "a custom domain"))
        elif constant and _foldable(node.op_type, opset) or node.op_type == "Shape":
            known.update(o for o in node.output if o)      # folded at import
        elif node.op_type not in _CONVERTERS:
            bad.append((node.name, node.op_type, opset, "no converter" if constant else
                        "no converter, and a graph tensor among its inputs (no folding)"))
    if opset < MIN_OPSET:
        bad.insert(0, ("(model)", "(opset_import)", opset, f"opsets below {MIN_OPSET}"))
    if bad:
        raise UnsupportedOnnxError(bad)


def _value_shape(info: Any) -> tuple[Any, ...] | None:
    if not info.type.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None
                 for d in info.type.tensor_type.shape.dim)


def from_onnx(model: str | os.PathLike | Any) -> L.Graph:
    """Read an ONNX model (a path or an ``onnx.ModelProto``) as a trainable ``cr.Graph``.

    Weights owned by a layer (convolution, linear, batch-norm scale and shift, PReLU
    slopes) become its Parameters and batch-norm statistics its buffers; other constants
    are folded or held by ``ConstantArithmetic`` buffers. The graph's inputs are the ONNX
    graph's inputs that are not initializers (initializers listed as inputs, as older
    exporters write them, are weights), each ``(N, *sample)`` with its first axis as the
    batch; its outputs are the ONNX graph's outputs, in order.

    Returns: a ``cr.Graph`` in eval mode, float32 or float64 as the model's inputs.

    Raises:
        ImportError: without the ``onnx`` package.
        UnsupportedOnnxError: listing every node that cannot be converted (its name, op
            type, opset and why), raised before anything is computed where the op type
            alone decides it, else before the graph is returned.
        ValueError: an input that is not a float tensor with a shape.
    """
    onnx = _import_onnx()
    proto = _load(onnx, model)
    graph = proto.graph
    opset = _opset(proto)
    initializers = {t.name for t in graph.initializer}
    _check_nodes(onnx, graph, opset, initializers)      # before anything is computed

    values: dict[str, Any] = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    names: set[str] = set()
    inputs, dtype, batch = _declare_inputs(onnx, graph, initializers, names)
    values.update(zip([i.name for i in graph.input if i.name not in initializers], inputs))
    readers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.op_type)
    for info in graph.output:
        readers.setdefault(info.name, []).append("(graph output)")
    ctx = _Ctx(onnx=onnx, opset=opset, dtype=dtype, batch=batch, names=names, readers=readers)
    _convert_nodes(ctx, graph, values, initializers)
    outputs = _declare_outputs(graph, values, opset, names)
    result = L.Graph(inputs if len(inputs) > 1 else inputs[0],
                     outputs if len(outputs) > 1 else outputs[0])
    return result.eval()


def _declare_inputs(onnx: Any, graph: Any, initializers: set, names: set
                    ) -> tuple[list[SymbolicTensor], np.dtype, int | None]:
    """A ``cr.Input`` per graph input that is not an initializer; the model's dtype and
    the inputs' static batch size (None when dynamic or when they disagree)."""
    inputs, dtypes, batches = [], set(), set()
    for info in graph.input:
        if info.name in initializers:
            continue
        shape = _value_shape(info)
        elem = info.type.tensor_type.elem_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)) if elem else None
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"from_onnx: input {info.name!r} is {dtype}; chainrule models take "
                             "float32 or float64")
        if not shape:
            raise ValueError(f"from_onnx: input {info.name!r} has no shape or is 0-D; the first "
                             "axis is the batch")
        dtypes.add(dtype)
        batches.add(shape[0])
        inputs.append(L.Input(shape[1:], name=_unique(_clean(info.name) or "input", names)))
    if len(dtypes) > 1:
        raise ValueError(f"from_onnx: the inputs mix dtypes {sorted(map(str, dtypes))}")
    batch = batches.pop() if len(batches) == 1 else None
    return inputs, dtypes.pop() if dtypes else np.dtype(np.float32), batch


def _convert_nodes(ctx: _Ctx, graph: Any, values: dict, initializers: set) -> None:
    """Fold or convert each node in order, filling ``values`` (tensor name -> ndarray or
    SymbolicTensor). A refused node does not stop the walk (the nodes reading its
    outputs are passed over): the error at the end lists every refusal."""
    onnx, opset = ctx.onnx, ctx.opset
    refused: list[tuple[str, str, int, str]] = []
    poisoned: set[str] = set()
    for node in graph.node:
        present = [i for i in node.input if i]
        if any(i in poisoned for i in present):
            poisoned.update(node.output)
            continue
        missing = [i for i in present if i not in values]
        args = [values.get(i) if i else None for i in node.input]
        try:
            if missing:
                raise _Refused(f"inputs {missing} are not produced by any node")
            if all(not isinstance(a, SymbolicTensor) for a in args) and \
                    _foldable(node.op_type, opset):
                outs = _evaluate(onnx, node, opset, {i: values[i] for i in present})
            else:
                ctx.node, ctx.inputs = node, args
                ctx.attrs = {a.name: _attribute(onnx, a) for a in node.attribute}
                ctx.base_name = _layer_name(node, initializers)
                outs = _CONVERTERS[node.op_type](ctx)
        except (_Refused, ValueError, TypeError) as err:
            why = str(err) if isinstance(err, _Refused) else f"{type(err).__name__}: {err}"
            refused.append((node.name, node.op_type, opset, why))
            poisoned.update(node.output)
            continue
        for name, out in zip(node.output, outs):
            if name:
                values[name] = out
    if refused:
        raise UnsupportedOnnxError(refused)


def _declare_outputs(graph: Any, values: dict, opset: int, names: set) -> list[SymbolicTensor]:
    outputs: list[SymbolicTensor] = []
    for info in graph.output:
        out = values.get(info.name)
        if not isinstance(out, SymbolicTensor):
            raise UnsupportedOnnxError([(info.name, "(graph output)", opset,
                                         "a constant output (it depends on no input)")])
        if out.node.layer is None or any(out is o for o in outputs):
            # a graph input given back as it is, or one tensor listed twice
            out = call_symbolic(L.Identity(), out, name=_unique(_clean(info.name) or
                                                                "identity", names))
        outputs.append(out)
    return outputs


def _attribute(onnx: Any, attribute: Any) -> Any:
    value = onnx.helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    return value
