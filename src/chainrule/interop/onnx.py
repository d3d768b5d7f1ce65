"""export_onnx: write a chainrule model as an ONNX graph for inference.

The graph is built node by node with the ``onnx`` package's helper API, in the standard
domain at opset 17 (IR version 8, read by every ONNX Runtime since 1.12), with one input
``"input"`` of shape (N, *input_shape) whose batch axis N is dynamic and one output
``"output"``. Layers map to operators as follows (inference mode throughout):

============================  ==================================================
chainrule                     ONNX
============================  ==================================================
Conv2d                        Conv (pads, strides, dilations, group)
Conv1d                        Conv with 1-D kernel_shape, pads, strides, dilations
ConvTranspose2d               ConvTranspose (pads, strides, output_padding,
                              dilations, group); an output_padding not below the
                              stride (legal with a larger dilation; ONNX Runtime
                              refuses it) becomes smaller end pads, then a Pad with
                              zeros and an Add of the bias where the pads run out
MaxPool2d, MaxPool1d          MaxPool (pads, strides, dilations); with ceil_mode
                              windows hanging past the padded input, a Pad with -inf
                              first (explicit end padding in place of ceil_mode)
AvgPool2d, AvgPool1d          AveragePool (count_include_pad); ceil_mode as explicit
                              end pads, count_include_pad=1 then as a Pad with zeros
                              and AveragePool count_include_pad=0 over the overhang
                              (torch's divisor); divisor_override: Pad with zeros,
                              AveragePool, Mul by kh*kw/divisor
AdaptiveMaxPool2d             GlobalMaxPool for output 1x1; MaxPool when the output
                              size divides the input size; otherwise per axis a Gather
                              of the windows (padded by repeating their last element)
                              and a ReduceMax
AdaptiveAvgPool2d             GlobalAveragePool for output 1x1; AveragePool when the
                              output size divides the input size; otherwise two
                              MatMuls with the pooling matrices, P_h @ x @ P_w.T
Linear                        Gemm on (N, in); MatMul + Add on (N, *, in)
Flatten                       Flatten (axis 1 .. end) or Reshape (other axis ranges)
Unflatten                     Reshape (0 keeps the dynamic batch; not on the batch axis)
ReLU, LeakyReLU, Sigmoid,     Relu, LeakyRelu, Sigmoid, Tanh
Tanh
ReLU6, Hardtanh               Clip (min and max as inputs)
ELU, SELU, CELU               Elu, Selu (torch's alpha and scale), Celu (float32;
                              Celu's formula with Where/Exp for float64)
Hardswish, Hardsigmoid        HardSwish, HardSigmoid (alpha 1/6, beta 1/2)
GELU                          0.5 x (1 + Erf(x / sqrt 2)); with approximate="tanh"
                              0.5 x (1 + Tanh(sqrt(2/pi) (x + 0.044715 x^3))) (no Gelu
                              operator before opset 20)
SiLU, Mish                    x * Sigmoid(x), x * Tanh(Softplus(x)) (no Mish before
                              opset 18)
Softplus                      Where(beta x > threshold, x, Softplus(beta x) / beta)
PReLU                         PRelu, the slope shaped (C, 1, ..., 1)
Softmax, LogSoftmax           Softmax, LogSoftmax (axis dim, the implicit one for
                              dim=None)
Identity                      Identity
Dropout                       Identity
Dropout2d                     Identity
BatchNorm1d/2d, SyncBatchNorm BatchNormalization with the running statistics; without
                              running statistics (track_running_stats=False, which
                              normalizes with the batch's own statistics even in eval)
                              ReduceMean/Sub/Mul/Sqrt/Div
GroupNorm                     Reshape (N, G, -1), InstanceNormalization (scale 1,
                              shift 0), Reshape back, Mul/Add per channel
LayerNorm                     LayerNormalization (axis -len(normalized_shape); scale
                              1 and shift 0 where the layer has none)
InstanceNorm2d                InstanceNormalization (the input's own statistics);
                              BatchNormalization with track_running_stats=True
LocalResponseNorm             LRN for an odd size and a 4-D input; otherwise Mul,
                              AveragePool of the squares over a (size, 1) window of
                              (N, 1, C, -1) padded size//2 before and (size-1)//2
                              after (ONNX's LRN window is torch's mirrored for an
                              even size), Mul/Add/Pow/Div
Upsample, UpsamplingNearest2d, Resize: nearest as asymmetric + floor, linear as
UpsamplingBilinear2d          half_pixel or align_corners; the scale from sizes
                              (size given, recompute_scale_factor) or scales (torch's
                              1/scale_factor), checked to give torch's source pixels
                              (refused where Resize's float32 arithmetic would not,
                              and for mode nearest-exact)
PixelShuffle                  DepthToSpace, mode CRD (4-D input)
PixelUnshuffle, ChannelShuffle  Reshape, Transpose, Reshape (0 keeps the batch)
ZeroPad2d, ConstantPad2d      Pad, mode constant with the value; a negative amount
                              crops with a Slice after the Pad
ReflectionPad2d               Pad, mode reflect; negative amounts: Slice after the Pad
ReplicationPad2d              Pad, mode edge; negative amounts: Slice after the Pad
Add, Multiply                 Add, Mul: one node per further input, in order (ONNX
                              broadcasts as NumPy does)
Concat                        Concat (axis dim)
Split, Chunk                  Split with the pieces' sizes as its split input, one
                              output per piece
Reshape                       Reshape to (0, *shape) (0 keeps the dynamic batch)
Permute                       Transpose (perm dims)
Mean                          ReduceMean (axes dims, keepdims)
ConstantArithmetic            Add, Sub, Mul or Div with the constant as an initializer
Residual                      Add of the two branches
Sequential                    the chain of its children
Graph                         its nodes in forward order (a shared layer's weights
                              are one initializer read by each call); a top-level
                              graph's inputs and outputs keep its names when it has
                              several
============================  ==================================================

Initializers are named by their state-dict key (``"0.weight"``), so a graph can be read
against ``model.state_dict()``. The ``onnx`` package is imported inside ``export_onnx``
only: ``import chainrule`` does not need it.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Sequence

import numpy as np

from .. import layers as L
from ..functional import adaptive_pool_matrix
from ..functional import adaptive_windows, pool_output_size, pool_overhang
from ..layers.constant import ConstantArithmetic
from ._common import UnsupportedModuleError, child_path, shown_path

OPSET = 17
IR_VERSION = 8
INPUT_NAME = "input"
OUTPUT_NAME = "output"
_INSTALL_HINT = 'export_onnx needs the onnx package: pip install "chainrule[onnx]"'


def _import_onnx() -> Any:
    try:
        import onnx
        import onnx.checker
        import onnx.helper
        import onnx.numpy_helper
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    return onnx


class _Graph:
    """Collects nodes and initializers while the model is walked; hands out unique names."""

    def __init__(self, onnx: Any, dtype: np.dtype) -> None:
        self.onnx = onnx
        self.dtype = dtype
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._names: set[str] = {INPUT_NAME}
        self._arrays: dict[str, np.ndarray] = {}   # initializer name -> its values

    def _unique(self, name: str) -> str:
        candidate, k = name, 1
        while candidate in self._names:
            candidate, k = f"{name}_{k}", k + 1
        self._names.add(candidate)
        return candidate

    def constant(self, name: str, array: np.ndarray) -> str:
        """Add an initializer (a weight or a constant) and return its name; the same
        name and values again (a layer a graph calls at two nodes) reuse the first."""
        array = np.ascontiguousarray(array)
        same = self._arrays.get(name)
        if same is not None and same.dtype == array.dtype and np.array_equal(same, array):
            return name
        unique = self._unique(name)
        self._arrays.setdefault(unique, array)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, unique))
        return unique

    def weight(self, name: str, array: np.ndarray) -> str:
        """An initializer in the model's floating dtype."""
        return self.constant(name, np.asarray(array, dtype=self.dtype))

    def node(self, op: str, inputs: Sequence[str], path: str, **attributes: Any) -> str:
        """Add one node with a single output; return the output's name."""
        name = self._unique(f"/{path}/{op}" if path else f"/{op}")
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [name], name=name,
                                                     **attributes))
        return name


# A converter adds the nodes of one layer: (graph, layer, input name, input shape with a
# batch of 1, path) -> output name.
Converter = Callable[[_Graph, Any, str, tuple, str], str]


# helpers shared by the converters --------------------------------------------------------
def _scalar(g: _Graph, path: str, name: str, value: float) -> str:
    """A 0-d constant in the model's dtype (broadcasts against any input)."""
    return g.weight(child_path(path, name), np.array(value))


def _reshape(g: _Graph, x: str, target: list[int], path: str, name: str) -> str:
    """Reshape to ``target`` (a 0 copies that axis of the input: the dynamic batch)."""
    return g.node("Reshape", [x, g.constant(child_path(path, name), np.array(target, np.int64))],
                  path)


def _weight_and_bias(g: _Graph, c: Any, x: str, path: str) -> list[str]:
    """The inputs of a Conv or Gemm: x, the weight and, if the layer has one, the bias."""
    inputs = [x, g.weight(child_path(path, "weight"), c.weight.data)]
    if c.bias is not None:
        inputs.append(g.weight(child_path(path, "bias"), c.bias.data))
    return inputs


def _pad(g: _Graph, x: str, begin: list[int], end: list[int], value: float, path: str) -> str:
    """Pad the spatial axes of (N, C, *spatial) with a constant (no node for no padding)."""
    if not any(begin) and not any(end):
        return x
    pads = np.array([0, 0, *begin, 0, 0, *end], dtype=np.int64)
    return g.node("Pad", [x, g.constant(child_path(path, "pads"), pads),
                          _scalar(g, path, "pad_value", value)], path, mode="constant")


# convolution -----------------------------------------------------------------------------
def _conv(g: _Graph, c: L.Conv2d | L.Conv1d, x: str, shape: tuple, path: str) -> str:
    # _pad4 is the (top, bottom, left, right) padding forward uses, "same" already
    # resolved; a 1-D layer's are its last two. ONNX wants the begins, then the ends.
    sides = c._pad4[4 - 2 * c._spatial_dims:]               # (before, after) per spatial axis
    return g.node("Conv", _weight_and_bias(g, c, x, path), path,
                  kernel_shape=list(c.kernel_size), strides=list(c.stride),
                  pads=[*sides[0::2], *sides[1::2]], dilations=list(c.dilation), group=c.groups)


def _conv_transpose(g: _Graph, c: L.ConvTranspose2d, x: str, shape: tuple, path: str) -> str:
    # ONNX's output size formula has torch's output_padding, but ONNX Runtime refuses an
    # output_padding >= stride (torch allows it below the dilation). Such a dimension
    # crops fewer rows at the end instead (output = full[p : full - (p - extra)]) and,
    # where the padding is smaller than the extra rows, gets zeros appended: rows no
    # kernel reaches, which hold the bias alone.
    kept = [extra if extra < s else 0 for extra, s in zip(c.output_padding, c.stride)]
    moved = [extra - k for extra, k in zip(c.output_padding, kept)]
    end_pads = [max(p - m, 0) for p, m in zip(c.padding, moved)]
    tails = [max(m - p, 0) for p, m in zip(c.padding, moved)]
    inputs = [x, g.weight(child_path(path, "weight"), c.weight.data)]
    bias_inside = c.bias is not None and not any(tails)
    if bias_inside:
        inputs.append(g.weight(child_path(path, "bias"), c.bias.data))
    out = g.node("ConvTranspose", inputs, path, kernel_shape=list(c.kernel_size),
                 strides=list(c.stride), pads=[*c.padding, *end_pads], output_padding=kept,
                 dilations=list(c.dilation), group=c.groups)
    if any(tails):
        out = _pad(g, out, [0, 0], tails, 0.0, path)
        if c.bias is not None:
            out = g.node("Add", [out, g.weight(child_path(path, "bias"),
                                               c.bias.data.reshape(-1, 1, 1))], path)
    return out


def _pool_axes(c: Any, shape: tuple) -> tuple[list[int], ...]:
    """Kernel, stride, padding, dilation and ceil_mode overhang (the extra end padding
    its last windows hang into, 0 without ceil_mode) per spatial axis of a windowed pool
    (MaxPool1d/2d, AvgPool1d/2d) on an input of ``shape``; a 1-D pool has one axis."""
    n = len(shape) - 2
    kernel, stride, padding, dilation = (list(pair[-n:]) for pair in c._pairs())
    extra = [pool_overhang(size, k, s, p, d, pool_output_size(size, k, s, p, d, c.ceil_mode))
             for size, k, s, p, d in zip(shape[2:], kernel, stride, padding, dilation)]
    return kernel, stride, padding, dilation, extra


# ceil_mode is exported as explicit end padding, not as ONNX's ceil_mode attribute: ONNX
# Runtime computes torch's output size and numbers with that attribute, but onnx's shape
# inference (onnx 1.23) does not drop a last window that would start in the padding, so
# the checker would find a graph whose declared shapes contradict its inferred ones.

def _max_pool(g: _Graph, c: Any, x: str, shape: tuple, path: str) -> str:
    kernel, stride, padding, dilation, extra = _pool_axes(c, shape)
    end = padding
    if any(extra):
        # Pad with -inf by a Pad node (MaxPool's pads must stay below the kernel size, which
        # padding plus a dilated overhang can exceed): the max of what each window covers.
        x = _pad(g, x, padding, [p + e for p, e in zip(padding, extra)], -np.inf, path)
        padding = end = [0] * len(kernel)
    return g.node("MaxPool", [x], path, kernel_shape=kernel, strides=stride, pads=padding + end,
                  dilations=dilation)


def _avg_pool(g: _Graph, c: Any, x: str, shape: tuple, path: str) -> str:
    kernel, stride, padding, _, extra = _pool_axes(c, shape)
    end = [p + e for p, e in zip(padding, extra)]
    divisor = getattr(c, "divisor_override", None)
    if divisor is not None:
        # AveragePool has no divisor_override. Zero-padded by a Pad node (overhang
        # included), every window is whole: AveragePool divides each sum by kh*kw, and a
        # Mul by kh*kw/divisor makes that sum/divisor.
        x = _pad(g, x, padding, end, 0.0, path)
        mean = g.node("AveragePool", [x], path, kernel_shape=kernel, strides=stride)
        scale = _scalar(g, path, "divisor_scale", math.prod(kernel) / divisor)
        return g.node("Mul", [mean, scale], path)
    if not any(extra) or not c.count_include_pad:
        # Without overhang the divisors agree; count_include_pad=0 leaves the overhang out
        # of the divisor as torch does (it counts real elements only).
        return g.node("AveragePool", [x], path, kernel_shape=kernel, strides=stride,
                      pads=padding + end, count_include_pad=int(c.count_include_pad))
    # count_include_pad with overhang: torch's divisor counts the padding but not the
    # overhang past it. Padding made real by a Pad node, then count_include_pad=0 with
    # the overhang as pads divides by exactly that.
    x = _pad(g, x, padding, padding, 0.0, path)
    return g.node("AveragePool", [x], path, kernel_shape=kernel, strides=stride,
                  pads=[0] * len(kernel) + extra, count_include_pad=0)


def _adaptive_pool(op: str, uneven: Callable[[_Graph, str, int, int, int, int, str], str]
                   ) -> Converter:
    """AdaptiveMaxPool2d or AdaptiveAvgPool2d: ONNX's Global``op`` for a 1x1 output, a
    plain ``op`` (MaxPool, AveragePool) when the output size divides the input size
    (adaptive window i then spans [i*k, (i+1)*k)), else ``uneven(g, x, h, w, oh, ow,
    path)`` for windows of different sizes."""
    def convert(g: _Graph, c: Any, x: str, shape: tuple, path: str) -> str:
        h, w = shape[-2:]
        oh, ow = c._output_hw(h, w)
        if (oh, ow) == (1, 1):
            return g.node(f"Global{op}", [x], path)
        if h % oh == 0 and w % ow == 0:
            kernel = [h // oh, w // ow]
            return g.node(op, [x], path, kernel_shape=kernel, strides=kernel)
        return uneven(g, x, h, w, oh, ow, path)
    return convert


def _uneven_max_pool(g: _Graph, x: str, h: int, w: int, oh: int, ow: int, path: str) -> str:
    # Windows of different sizes. A max is separable (columns, then rows); along each
    # axis a Gather reads every window padded to the longest by repeating its last
    # element, which changes no max, and a ReduceMax takes the window's max.
    out = x
    for axis, size, n in ((3, w, ow), (2, h, oh)):
        if n == size:
            continue                                            # windows of one element
        starts, ends = adaptive_windows(size, n)
        length = int((ends - starts).max())
        index = np.minimum(starts[:, None] + np.arange(length), ends[:, None] - 1)  # (n, length)
        windows = g.node("Gather", [out, g.constant(child_path(path, f"windows_{axis}"), index)],
                         path, axis=axis)                       # (n, length) at ``axis``
        out = g.node("ReduceMax", [windows], path, axes=[axis + 1], keepdims=0)
    return out


def _uneven_avg_pool(g: _Graph, x: str, h: int, w: int, oh: int, ow: int, path: str) -> str:
    # Uneven windows overlap or differ in size; pooling is separable, out = P_h @ x @ P_w.T,
    # and MatMul broadcasts the 2-D matrices over (N, C).
    pool_h = g.weight(child_path(path, "pool_h"), adaptive_pool_matrix(h, oh, np.float64))
    pool_wt = g.weight(child_path(path, "pool_w_t"), adaptive_pool_matrix(w, ow, np.float64).T)
    rows = g.node("MatMul", [pool_h, x], path)                      # (N, C, H_out, W)
    return g.node("MatMul", [rows, pool_wt], path)                  # (N, C, H_out, W_out)


def _linear(g: _Graph, c: L.Linear, x: str, shape: tuple, path: str) -> str:
    if len(shape) == 2:
        return g.node("Gemm", _weight_and_bias(g, c, x, path), path, transB=1)
    # Gemm is 2-D only; MatMul broadcasts over the leading axes (N, *).
    out = g.node("MatMul", [x, g.weight(child_path(path, "weight_t"), c.weight.data.T)], path)
    if c.bias is not None:
        out = g.node("Add", [out, g.weight(child_path(path, "bias"), c.bias.data)], path)
    return out


def _flatten(g: _Graph, c: L.Flatten, x: str, shape: tuple, path: str) -> str:
    ndim = len(shape)
    start, end = c.start_dim % ndim, c.end_dim % ndim
    if start == 0:
        raise UnsupportedModuleError(
            f"{shown_path(path)}: {c!r} merges the batch axis into the others, so the exported "
            "graph could not keep its dynamic batch dimension")
    if start == 1 and end == ndim - 1:
        return g.node("Flatten", [x], path, axis=1)
    out_shape = list(shape[:start]) + [int(np.prod(shape[start:end + 1]))] + list(shape[end + 1:])
    target = [0] + out_shape[1:]      # Reshape: 0 copies the (dynamic) batch size
    target[start] = -1
    return _reshape(g, x, target, path, "shape")


def _unflatten(g: _Graph, c: L.Unflatten, x: str, shape: tuple, path: str) -> str:
    axis = c.dim % len(shape)
    if axis == 0:
        raise UnsupportedModuleError(
            f"{shown_path(path)}: {c!r} splits the batch axis, so the exported graph could not "
            "keep its dynamic batch dimension")
    sizes = c._sizes(shape[axis], shape)                    # -1 resolved on the sample shape
    target = [0, *shape[1:axis], *sizes, *shape[axis + 1:]]  # Reshape: 0 copies the batch size
    return _reshape(g, x, target, path, "shape")


_PAD_MODES = {L.ConstantPad2d: "constant", L.ZeroPad2d: "constant",
              L.ReflectionPad2d: "reflect", L.ReplicationPad2d: "edge"}


def _pad2d(g: _Graph, c: Any, x: str, shape: tuple, path: str) -> str:
    # torch pads first and crops after (for reflection and replication the crop may cut
    # into the padded border); ONNX Runtime crops first for a negative pad. So the Pad gets
    # the positive amounts alone and a Slice crops the negative ones off its result.
    left, right, top, bottom = c.padding
    lead = [0] * (len(shape) - 2)                           # the axes before (H, W)
    grow = [max(v, 0) for v in (top, left, bottom, right)]
    pads = np.array([*lead, *grow[:2], *lead, *grow[2:]], np.int64)  # begins, then ends
    inputs = [x, g.constant(child_path(path, "pads"), pads)]
    if isinstance(c, L.ConstantPad2d):
        inputs.append(_scalar(g, path, "value", c.value))
    out = g.node("Pad", inputs, path, mode=_PAD_MODES[type(c)])
    if min(c.padding) >= 0:
        return out
    h, w = shape[-2] + grow[0] + grow[2], shape[-1] + grow[1] + grow[3]   # the padded size
    starts = np.array([max(-top, 0), max(-left, 0)], np.int64)
    ends = np.array([h - max(-bottom, 0), w - max(-right, 0)], np.int64)
    return g.node("Slice", [out, g.constant(child_path(path, "starts"), starts),
                            g.constant(child_path(path, "ends"), ends),
                            g.constant(child_path(path, "axes"), np.array([-2, -1], np.int64))],
                  path)


def _channel_affine(g: _Graph, c: Any, out: str, shape: tuple, path: str) -> str:
    """``out * weight + bias`` with the layer's per-channel weight and bias (each left out
    where the layer has none), shaped (C, 1, ..., 1) to broadcast over (N, C, *)."""
    channel = (shape[1],) + (1,) * (len(shape) - 2)
    if c.weight is not None:
        out = g.node("Mul", [out, g.weight(child_path(path, "weight"),
                                           c.weight.data.reshape(channel))], path)
    if c.bias is not None:
        out = g.node("Add", [out, g.weight(child_path(path, "bias"),
                                           c.bias.data.reshape(channel))], path)
    return out


def _batch_norm(g: _Graph, c: Any, x: str, shape: tuple, path: str) -> str:
    if c.track_running_stats:
        weight = c.weight.data if c.affine else np.ones(c.num_features)
        bias = c.bias.data if c.affine else np.zeros(c.num_features)
        inputs = [x, g.weight(child_path(path, "weight"), weight),
                  g.weight(child_path(path, "bias"), bias),
                  g.weight(child_path(path, "running_mean"), c.running_mean),
                  g.weight(child_path(path, "running_var"), c.running_var)]
        return g.node("BatchNormalization", inputs, path, epsilon=c.eps)
    # No running statistics: chainrule (as torch) normalizes with the batch's own mean and
    # biased variance even in eval, which BatchNormalization's inference form cannot do.
    axes = [0] + list(range(2, len(shape)))
    mean = g.node("ReduceMean", [x], path, axes=axes, keepdims=1)
    centered = g.node("Sub", [x, mean], path)
    var = g.node("ReduceMean", [g.node("Mul", [centered, centered], path)], path, axes=axes,
                 keepdims=1)
    eps = _scalar(g, path, "eps", c.eps)
    out = g.node("Div", [centered, g.node("Sqrt", [g.node("Add", [var, eps], path)], path)], path)
    return _channel_affine(g, c, out, shape, path)


def _group_norm(g: _Graph, c: L.GroupNorm, x: str, shape: tuple, path: str) -> str:
    # Standardizing each (sample, group) is InstanceNormalization of the (N, G, -1) view
    # with a unit scale and no shift; the per-channel affine follows on the (N, C, *) shape.
    groups = c.num_groups
    grouped = _reshape(g, x, [0, groups, -1], path, "group_shape")
    out = g.node("InstanceNormalization",
                 [grouped, g.weight(child_path(path, "group_scale"), np.ones(groups)),
                  g.weight(child_path(path, "group_shift"), np.zeros(groups))],
                 path, epsilon=c.eps)
    out = _reshape(g, out, [0, *shape[1:]], path, "shape")
    return _channel_affine(g, c, out, shape, path)


def _layer_norm(g: _Graph, c: L.LayerNorm, x: str, shape: tuple, path: str) -> str:
    ns = c.normalized_shape
    weight = c.weight.data if c.weight is not None else np.ones(ns)
    bias = c.bias.data if c.bias is not None else np.zeros(ns)
    return g.node("LayerNormalization", [x, g.weight(child_path(path, "weight"), weight),
                                         g.weight(child_path(path, "bias"), bias)],
                  path, axis=-len(ns), epsilon=c.eps)


def _instance_norm(g: _Graph, c: L.InstanceNorm2d, x: str, shape: tuple, path: str) -> str:
    channels = shape[1]      # num_features, or (affine=False, no running stats) any count
    weight = c.weight.data if c.weight is not None else np.ones(channels)
    bias = c.bias.data if c.bias is not None else np.zeros(channels)
    inputs = [x, g.weight(child_path(path, "weight"), weight),
              g.weight(child_path(path, "bias"), bias)]
    if c.track_running_stats:  # the export is in eval mode: the running statistics are used
        inputs += [g.weight(child_path(path, "running_mean"), c.running_mean),
                   g.weight(child_path(path, "running_var"), c.running_var)]
        return g.node("BatchNormalization", inputs, path, epsilon=c.eps)
    return g.node("InstanceNormalization", inputs, path, epsilon=c.eps)


def _local_response_norm(g: _Graph, c: L.LocalResponseNorm, x: str, shape: tuple,
                         path: str) -> str:
    size = c.size
    if size % 2 == 1 and len(shape) == 4:
        # ONNX's window is [c - (size-1)//2, c + ceil((size-1)/2)], torch's for an odd size.
        return g.node("LRN", [x], path, size=size, alpha=c.alpha, beta=c.beta, bias=c.k)
    # An even size (the windows mirror each other) or another rank (ONNX Runtime's LRN is
    # 4-D only): average the squares over torch's window on an (N, 1, C, -1) view.
    squares = g.node("Mul", [x, x], path)
    squares = _reshape(g, squares, [0, 1, shape[1], -1], path, "window_shape")
    mean = g.node("AveragePool", [squares], path, kernel_shape=[size, 1], strides=[1, 1],
                  pads=[size // 2, 0, (size - 1) // 2, 0], count_include_pad=1)
    mean = _reshape(g, mean, [0, *shape[1:]], path, "shape")
    s = g.node("Add", [g.node("Mul", [mean, _scalar(g, path, "alpha", c.alpha)], path),
                       _scalar(g, path, "k", c.k)], path)
    div = g.node("Pow", [s, _scalar(g, path, "beta", c.beta)], path)
    return g.node("Div", [x, div], path)


# activations
def _clip(g: _Graph, c: L.Hardtanh, x: str, shape: tuple, path: str) -> str:
    # ReLU6 and Hardtanh: Clip takes its bounds as inputs since opset 11.
    return g.node("Clip", [x, _scalar(g, path, "min_val", c.min_val),
                           _scalar(g, path, "max_val", c.max_val)], path)


def _celu(g: _Graph, c: L.CELU, x: str, shape: tuple, path: str) -> str:
    if g.dtype == np.float32:
        return g.node("Celu", [x], path, alpha=c.alpha)
    # ONNX's Celu is float32 only: other dtypes get its definition,
    # Where(x > 0, x, alpha * (Exp(x / alpha) - 1)) (an Exp that overflows is not chosen).
    alpha = _scalar(g, path, "alpha", c.alpha)
    negative = g.node("Mul", [g.node("Sub", [g.node("Exp", [g.node("Div", [x, alpha], path)], path),
                                             _scalar(g, path, "one", 1.0)], path), alpha], path)
    positive = g.node("Greater", [x, _scalar(g, path, "zero", 0.0)], path)
    return g.node("Where", [positive, x, negative], path)


def _gelu(g: _Graph, c: L.GELU, x: str, shape: tuple, path: str) -> str:
    # No Gelu operator before opset 20: the formula, node by node.
    if c.approximate == "tanh":
        cube = g.node("Mul", [g.node("Mul", [x, x], path), x], path)
        inner = g.node("Add", [x, g.node("Mul", [cube, _scalar(g, path, "kappa", 0.044715)],
                                         path)], path)
        inner = g.node("Mul", [inner, _scalar(g, path, "sqrt_2_over_pi",
                                              math.sqrt(2.0 / math.pi))], path)
        smooth = g.node("Tanh", [inner], path)                      # 0.5 x (1 + tanh(u))
    else:
        smooth = g.node("Erf", [g.node("Mul", [x, _scalar(g, path, "sqrt1_2", math.sqrt(0.5))],
                                       path)], path)               # 0.5 x (1 + erf(x/sqrt 2))
    one_plus = g.node("Add", [smooth, _scalar(g, path, "one", 1.0)], path)
    return g.node("Mul", [g.node("Mul", [x, one_plus], path), _scalar(g, path, "half", 0.5)], path)


def _softplus(g: _Graph, c: L.Softplus, x: str, shape: tuple, path: str) -> str:
    # Where(beta x > threshold, x, Softplus(beta x) / beta): torch's linear regime.
    scaled = g.node("Mul", [x, _scalar(g, path, "beta", c.beta)], path)
    smooth = g.node("Div", [g.node("Softplus", [scaled], path), _scalar(g, path, "beta", c.beta)],
                    path)
    linear = g.node("Greater", [scaled, _scalar(g, path, "threshold", c.threshold)], path)
    return g.node("Where", [linear, x, smooth], path)


def _prelu(g: _Graph, c: L.PReLU, x: str, shape: tuple, path: str) -> str:
    # The slope broadcasts from the right: (C, 1, ..., 1) puts C on axis 1 of (N, C, *).
    slope = c.weight.data if c.num_parameters == 1 else \
        c.weight.data.reshape((c.num_parameters,) + (1,) * (len(shape) - 2))
    return g.node("PRelu", [x, g.weight(child_path(path, "weight"), slope)], path)


def _identity(g: _Graph, c: Any, x: str, shape: tuple, path: str) -> str:
    return g.node("Identity", [x], path)


def _softmax(op: str) -> Converter:
    def convert(g: _Graph, c: Any, x: str, shape: tuple, path: str) -> str:
        # opset 13+ semantics: normalize along the one axis (not the flattened tail).
        dim = c.dim if c.dim is not None else (0 if len(shape) in (0, 1, 3) else 1)
        return g.node(op, [x], path, axis=dim % len(shape))
    return convert


# resampling ------------------------------------------------------------------------------
_F32 = np.float32
# Resize's coordinate_transformation_mode for each interpolation kind of Upsample.
_RESIZE_MODES = {"nearest": ("nearest", "asymmetric"), "linear": ("linear", "half_pixel"),
                 "align_corners": ("linear", "align_corners")}


def _resize_matrix(size: int, out: int, scale: np.float32, kind: str, copy: bool) -> np.ndarray:
    """The (out, size) matrix ONNX Resize applies along one axis of ``kind`` (see
    ``_RESIZE_MODES``; nearest_mode "floor"), computed as ONNX Runtime's CPU kernel
    computes it: float32 coordinates, ``scale`` = out/size or the given scale; ``copy``
    (a scale of exactly 1, or an output shape equal to the input's) copies the axis."""
    a = np.zeros((out, size))
    rows = np.arange(out)
    if copy:
        a[rows, rows] = 1
        return a
    x = np.arange(out, dtype=np.float32)
    if kind == "nearest":
        a[rows, np.clip(np.floor(x / scale).astype(np.int64), 0, size - 1)] = 1
        return a
    if kind == "align_corners":
        src = np.zeros(out, np.float32) if out == 1 else x * _F32(size - 1) / _F32(out - 1)
    else:
        src = (x + _F32(0.5)) / scale - _F32(0.5)
    src = np.clip(src, _F32(0), _F32(size - 1))
    i1 = src.astype(np.int64)
    i2 = np.minimum(i1 + 1, size - 1)
    same = i1 == i2                                       # clamped at the last pixel
    np.add.at(a, (rows, i1), np.where(same, 0.5, np.abs(src - i2.astype(np.float32))))
    np.add.at(a, (rows, i2), np.where(same, 0.5, np.abs(src - i1.astype(np.float32))))
    return a


def _upsample(g: _Graph, c: L.Upsample, x: str, shape: tuple, path: str) -> str:
    """Resize with torch's coordinates: nearest as asymmetric + floor, linear as half_pixel
    (torch's clamp of negative coordinates included; half_pixel, unlike pytorch_half_pixel,
    keeps torch's coordinate for an output of length 1) or align_corners. The scale comes
    from ``sizes`` (out/size, torch's rule with ``size`` or recompute_scale_factor) or from
    ``scales`` (torch's 1/scale_factor otherwise); the export checks, axis by axis, that
    Resize's float32 arithmetic lands on torch's pixels, and refuses where it does not."""
    where = f"{shown_path(path)}: {c!r}"
    if c.mode == "nearest-exact":
        raise UnsupportedModuleError(
            f"{where} has no exact ONNX export: Resize's half-pixel nearest rounds its float32 "
            "coordinates to other pixels than torch's nearest-exact next to ties")
    plans = c.plans(shape, g.dtype)
    spatial, outs = shape[2:], [p.out_size for p in plans]
    kind = "nearest" if c.mode == "nearest" else "align_corners" if c.align_corners else "linear"
    options = [("sizes", [_F32(o) / _F32(n) for n, o in zip(spatial, outs)])]
    if c.scale_factor is not None:
        factors = c.scale_factor if isinstance(c.scale_factor, tuple) else (c.scale_factor,) * len(
            spatial)
        scales = [_F32(f) for f in factors]
        # With scales, ONNX Runtime sizes an axis as trunc(float32(size) * scale) and ONNX's
        # shape inference as floor(size * scale) in double: both must be torch's length.
        if all(int(_F32(n) * s) == o == math.floor(n * float(s))
               for n, o, s in zip(spatial, outs, scales)):
            options.append(("scales", scales))
    # Resize rounds the source coordinate (numbers up to max(size, out)) up to three times
    # in float32, torch once: weights may differ by a few units of that rounding; another
    # pixel or coordinate rule differs by far more. (A float64 model gets the same check:
    # ONNX Runtime has no float64 Resize to compare with; the file is valid ONNX.)
    tol = 4 * float(np.finfo(np.float32).eps) / 2 * max(*spatial, *outs)
    unchanged = tuple(outs) == tuple(spatial)               # ONNX Runtime copies the input
    for via, axis_scales in options:
        if all(np.abs(plan.matrix(np.float64)
                      - _resize_matrix(n, o, s, kind, unchanged or s == 1)).max() <= tol
               for plan, n, o, s in zip(plans, spatial, outs, axis_scales)):
            break
    else:
        raise UnsupportedModuleError(
            f"{where} has no exact ONNX export for input shape {tuple(shape[1:])}: Resize's "
            "float32 coordinates (ONNX Runtime) pick other source pixels or weights than "
            "torch's for this size")
    mode, transform = _RESIZE_MODES[kind]
    attributes = {"nearest_mode": "floor"} if mode == "nearest" else {}
    if via == "scales":
        inputs = [x, "", g.constant(child_path(path, "scales"),
                                    np.array([1, 1, *axis_scales], np.float32))]
    else:
        lead = g.node("Shape", [x], path, start=0, end=2)              # (N, C), N dynamic
        sizes = g.node("Concat", [lead, g.constant(child_path(path, "sizes"),
                                                   np.array(outs, np.int64))], path, axis=0)
        inputs = [x, "", "", sizes]
    return g.node("Resize", inputs, path, mode=mode, coordinate_transformation_mode=transform,
                  **attributes)


def _require_batched(c: Any, shape: tuple, path: str) -> None:
    """PixelShuffle and PixelUnshuffle read a 3-D input as one (C, H, W) image."""
    if len(shape) != 4:
        raise UnsupportedModuleError(
            f"{shown_path(path)}: {c!r} reads a 3-D input as one unbatched (C, H, W) image, so "
            "the exported graph's batch axis would be its channels")


def _pixel_shuffle(g: _Graph, c: L.PixelShuffle, x: str, shape: tuple, path: str) -> str:
    _require_batched(c, shape, path)
    # CRD: channel c*r*r + i*r + j goes to (c, h*r + i, w*r + j), torch's order.
    return g.node("DepthToSpace", [x], path, blocksize=c.upscale_factor, mode="CRD")


def _pixel_unshuffle(g: _Graph, c: L.PixelUnshuffle, x: str, shape: tuple, path: str) -> str:
    _require_batched(c, shape, path)
    # SpaceToDepth orders the new channels (i, j, c) (DCR); torch orders them (c, i, j).
    _, channels, h, w = shape
    r = c.downscale_factor
    t = _reshape(g, x, [0, channels, h // r, r, w // r, r], path, "shape")  # (N, C, H, i, W, j)
    t = g.node("Transpose", [t], path, perm=[0, 1, 3, 5, 2, 4])            # (N, C, i, j, H, W)
    return _reshape(g, t, [0, channels * r * r, h // r, w // r], path, "shape_out")


def _channel_shuffle(g: _Graph, c: L.ChannelShuffle, x: str, shape: tuple, path: str) -> str:
    channels = shape[1]
    t = _reshape(g, x, [0, c.groups, channels // c.groups, -1], path, "shape")  # (N, g, C/g, *)
    t = g.node("Transpose", [t], path, perm=[0, 2, 1, 3])                       # (N, C/g, g, *)
    return _reshape(g, t, [0, *shape[1:]], path, "shape_out")


# merge and shape: a multi-input layer gets a list of input names and a list of shapes;
# a multi-output layer returns a list of output names.
def _chain(op: str) -> Callable[[_Graph, Any, list, list, str], str]:
    """Add or Multiply: ``op`` applied to the inputs in order, ((x0 op x1) op x2) ..., the
    order chainrule and torch compute them in."""
    def convert(g: _Graph, c: Any, xs: list[str], shapes: list[tuple], path: str) -> str:
        out = xs[0]
        for x in xs[1:]:
            out = g.node(op, [out, x], path)
        return out
    return convert


def _concat(g: _Graph, c: L.Concat, xs: list[str], shapes: list[tuple], path: str) -> str:
    return g.node("Concat", list(xs), path, axis=c.dim % len(shapes[0]))


def _split(g: _Graph, c: L.Split | L.Chunk, x: str, shape: tuple, path: str) -> list[str]:
    axis = c.dim % len(shape)
    if axis == 0:
        raise UnsupportedModuleError(
            f"{shown_path(path)}: {c!r} cuts the batch axis, so the exported graph could not "
            "keep its dynamic batch dimension")
    sizes = c._sizes(shape[axis], shape)
    split = g.constant(child_path(path, "split"), np.array(sizes, np.int64))
    base = g._unique(f"/{path}/Split" if path else "/Split")
    outputs = [g._unique(f"{base}_output_{i}") for i in range(len(sizes))]
    g.nodes.append(g.onnx.helper.make_node("Split", [x, split], outputs, name=base, axis=axis))
    return outputs


def _reshape_layer(g: _Graph, c: L.Reshape, x: str, shape: tuple, path: str) -> str:
    return _reshape(g, x, [0, *c._target(shape)], path, "shape")   # 0 keeps the batch size


def _constant_arithmetic(g: _Graph, c: ConstantArithmetic, x: str, shape: tuple,
                         path: str) -> str:
    value = g.weight(child_path(path, "value"), c.value)
    op, reverse = {"add": ("Add", False), "sub": ("Sub", False), "rsub": ("Sub", True),
                   "mul": ("Mul", False), "div": ("Div", False), "rdiv": ("Div", True)}[c.op]
    return g.node(op, [value, x] if reverse else [x, value], path)


def _mean(g: _Graph, c: L.Mean, x: str, shape: tuple, path: str) -> str:
    dims = (c.dims,) if isinstance(c.dims, int) else c.dims
    # opset 17's ReduceMean takes its axes as an attribute (an input from opset 18 on).
    return g.node("ReduceMean", [x], path, axes=[d % len(shape) for d in dims],
                  keepdims=int(c.keepdim))


_CONVERTERS: dict[type, Converter] = {
    # convolution
    L.Conv2d: _conv,
    L.Conv1d: _conv,
    L.ConvTranspose2d: _conv_transpose,
    # pooling
    L.MaxPool2d: _max_pool,
    L.AvgPool2d: _avg_pool,
    L.AdaptiveAvgPool2d: _adaptive_pool("AveragePool", _uneven_avg_pool),
    L.MaxPool1d: _max_pool,
    L.AvgPool1d: _avg_pool,
    L.AdaptiveMaxPool2d: _adaptive_pool("MaxPool", _uneven_max_pool),
    # linear and shape
    L.Linear: _linear,
    L.Flatten: _flatten,
    L.Unflatten: _unflatten,
    # normalization
    L.BatchNorm1d: _batch_norm,
    L.BatchNorm2d: _batch_norm,
    L.SyncBatchNorm: _batch_norm,
    L.GroupNorm: _group_norm,
    L.LayerNorm: _layer_norm,
    L.InstanceNorm2d: _instance_norm,
    L.LocalResponseNorm: _local_response_norm,
    # activations
    L.ReLU: lambda g, c, x, shape, path: g.node("Relu", [x], path),
    L.LeakyReLU: lambda g, c, x, shape, path: g.node("LeakyRelu", [x], path,
                                                     alpha=c.negative_slope),
    L.Sigmoid: lambda g, c, x, shape, path: g.node("Sigmoid", [x], path),
    L.Tanh: lambda g, c, x, shape, path: g.node("Tanh", [x], path),
    L.ReLU6: _clip,
    L.Hardtanh: _clip,
    L.ELU: lambda g, c, x, shape, path: g.node("Elu", [x], path, alpha=c.alpha),
    L.SELU: lambda g, c, x, shape, path: g.node("Selu", [x], path, alpha=L.SELU.ALPHA,
                                                gamma=L.SELU.SCALE),
    L.CELU: _celu,
    L.GELU: _gelu,
    L.SiLU: lambda g, c, x, shape, path: g.node("Mul", [x, g.node("Sigmoid", [x], path)], path),
    L.Mish: lambda g, c, x, shape, path: g.node(
        "Mul", [x, g.node("Tanh", [g.node("Softplus", [x], path)], path)], path),
    L.Hardswish: lambda g, c, x, shape, path: g.node("HardSwish", [x], path),
    L.Hardsigmoid: lambda g, c, x, shape, path: g.node("HardSigmoid", [x], path,
                                                       alpha=1.0 / 6.0, beta=0.5),
    L.Softplus: _softplus,
    L.PReLU: _prelu,
    L.Softmax: _softmax("Softmax"),
    L.LogSoftmax: _softmax("LogSoftmax"),
    L.Identity: _identity,
    # regularization (inference: the identity)
    L.Dropout: _identity,
    L.Dropout2d: _identity,
    # resampling
    L.Upsample: _upsample,
    L.UpsamplingNearest2d: _upsample,
    L.UpsamplingBilinear2d: _upsample,
    L.PixelShuffle: _pixel_shuffle,
    L.PixelUnshuffle: _pixel_unshuffle,
    L.ChannelShuffle: _channel_shuffle,
    # padding
    L.ZeroPad2d: _pad2d,
    L.ConstantPad2d: _pad2d,
    L.ReflectionPad2d: _pad2d,
    L.ReplicationPad2d: _pad2d,
    # merge and shape
    L.Add: _chain("Add"),
    L.Multiply: _chain("Mul"),
    L.Concat: _concat,
    L.Split: _split,
    L.Chunk: _split,
    L.Reshape: _reshape_layer,
    L.Permute: lambda g, c, x, shape, path: g.node("Transpose", [x], path, perm=list(c._perm)),
    L.Mean: _mean,
    ConstantArithmetic: _constant_arithmetic,
}


def _add_layer(g: _Graph, layer: L.Layer, x: str, shape: tuple, path: str) -> tuple[str, tuple]:
    """Add the nodes of ``layer`` (recursing into containers); return the output's name and
    its shape with a batch of 1."""
    kind = type(layer)
    if kind is L.Sequential:
        for name, child in layer.named_children():
            x, shape = _add_layer(g, child, x, shape, child_path(path, name))
        return x, shape
    if kind is L.Residual:
        out, out_shape = _add_layer(g, layer.block, x, shape, child_path(path, "block"))
        skip, skip_shape = (x, shape) if layer.shortcut is None else _add_layer(
            g, layer.shortcut, x, shape, child_path(path, "shortcut"))
        if out_shape != skip_shape:
            raise ValueError(f"export_onnx: {shown_path(path)}: Residual block output shape "
                             f"{out_shape} does not match shortcut output shape {skip_shape}")
        return g.node("Add", [out, skip], path), out_shape
    if kind is L.Graph:
        return _add_graph(g, layer, x, shape, path)
    if kind not in _CONVERTERS:
        raise UnsupportedModuleError(
            f"{shown_path(path)}: {kind.__module__}.{kind.__qualname__} has no ONNX export: "
            "export_onnx handles chainrule's own layer classes (Sequential, Residual, Graph, "
            + ", ".join(sorted(c.__name__ for c in _CONVERTERS)) + ")")
    # The layer's own forward on a dummy batch gives its output shape(s) and checks that
    # the input shape fits it, with the layer's own error message when it does not. A
    # multi-input layer gets lists of names and shapes; a multi-output one returns lists.
    zeros = ([np.zeros(s, dtype=g.dtype) for s in shape] if isinstance(shape, list)
             else np.zeros(shape, dtype=g.dtype))
    out = layer.forward(zeros)
    out_shape = [a.shape for a in out] if isinstance(out, list) else tuple(out.shape)
    return _CONVERTERS[kind](g, layer, x, shape, path), out_shape


def _add_graph(g: _Graph, graph: L.Graph, x: str | list[str], shape: tuple | list[tuple],
               path: str) -> tuple[Any, Any]:
    """A Graph's nodes in forward order, each through ``_add_layer`` under the path of its
    layer (a shared layer's calls read the same initializers, see ``_Graph.constant``).
    ``x``/``shape`` are lists for several inputs; the result is a list for several
    outputs."""
    names = [x] if not isinstance(x, list) else x
    shapes = [shape] if not isinstance(x, list) else shape
    if len(names) != len(graph.input_names):
        raise ValueError(f"export_onnx: {shown_path(path)}: the graph takes "
                         f"{len(graph.input_names)} inputs {list(graph.input_names)}, got "
                         f"{len(names)}")
    values = dict(zip(graph.input_names, zip(names, shapes)))   # tensor -> (ONNX name, shape)
    for node in graph.nodes:
        args = [values[t] for t in node.inputs]
        arg_names = [a[0] for a in args] if node.packed else args[0][0]
        arg_shapes = [a[1] for a in args] if node.packed else args[0][1]
        try:
            out, out_shape = _add_layer(g, graph.get_layer(node.layer_name), arg_names,
                                        arg_shapes, child_path(path, node.layer_name))
        except UnsupportedModuleError:
            raise
        except ValueError as err:
            raise ValueError(f"export_onnx: {shown_path(path)}: node {node.name!r}: "
                             f"{err}") from err
        if node.multi_output:
            values.update(zip(node.outputs, zip(out, out_shape)))
        else:
            values[node.outputs[0]] = (out, tuple(out_shape))
    outs = [values[t] for t in graph.output_names]
    if len(outs) == 1 and not _several_outputs(graph):
        return outs[0]
    return [o[0] for o in outs], [o[1] for o in outs]


def _several_outputs(graph: L.Graph) -> bool:
    """Whether ``graph.forward`` returns a list (it was declared with a list of outputs)."""
    return not graph.single_output


def _model_dtype(model: L.Layer) -> np.dtype:
    dtypes = {p.dtype for p in model.parameters()}
    dtypes |= {b.dtype for _, b in model.named_buffers() if np.issubdtype(b.dtype, np.floating)}
    if len(dtypes) > 1:
        raise ValueError(f"export_onnx: the model mixes dtypes {sorted(map(str, dtypes))}; cast it "
                         "to one first (model.to(np.float32))")
    return dtypes.pop() if dtypes else np.dtype(np.float32)


def _sample_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0
                            for d in shape):
        raise ValueError("export_onnx: input_shape must be the shape of one sample without the "
                         f"batch axis, positive ints such as (3, 32, 32), got {input_shape!r}")
    return tuple(int(d) for d in shape)


def _input_shapes(model: L.Layer, input_shape: Any) -> list[tuple[int, ...]]:
    """One sample shape per model input: ``input_shape`` is one shape, or a list of
    shapes (one per input of a graph with several); None takes a Graph's declared ones."""
    count = len(model.input_names) if isinstance(model, L.Graph) else 1
    if input_shape is None:
        declared = model.input_shapes if isinstance(model, L.Graph) else (None,)
        if any(s is None or None in s for s in declared):
            raise ValueError("export_onnx: input_shape is needed: the model "
                             + ("declares unknown input dimensions " + repr(list(declared))
                                if isinstance(model, L.Graph) else "is not a Graph"))
        return [tuple(s) for s in declared]
    several = (isinstance(input_shape, (list, tuple)) and len(input_shape) > 0
               and all(isinstance(s, (list, tuple)) for s in input_shape))
    shapes = [_sample_shape(s) for s in input_shape] if several else [_sample_shape(input_shape)]
    if len(shapes) != count:
        names = f" {list(model.input_names)}" if isinstance(model, L.Graph) else ""
        raise ValueError(f"export_onnx: the model takes {count} input(s){names}, but "
                         f"input_shape gives {len(shapes)} shape(s): {input_shape!r}")
    return shapes


def export_onnx(model: L.Layer, path: str | os.PathLike,
                input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None) -> Any:
    """Write ``model`` in inference mode as an ONNX file and return the ``onnx.ModelProto``.

    Args:
        model: a chainrule layer (a Sequential, a Graph, ...) built from chainrule's layer
            classes, all float32 or all float64. It is not changed: the export works on an
            eval-mode copy, so Dropout is the identity and BatchNorm uses its running stats.
        path: where to write the ``.onnx`` file.
        input_shape: the shape of one sample *without* the batch axis, e.g. (3, 32, 32);
            for a Graph with several inputs, a list of such shapes in the order of its
            inputs. None: a Graph's declared input shapes (when fully known).

    Shape: the graph's input ``"input"`` is (N, *input_shape) with a dynamic batch size N;
    its output ``"output"`` is (N, *out) as ``model.forward`` gives. A Graph with several
    inputs or outputs keeps its own names for them (``model.input_names``,
    ``model.output_names``), each with the dynamic batch N.

    Raises:
        ImportError: when the ``onnx`` package is missing (``pip install "chainrule[onnx]"``).
        UnsupportedModuleError: for a layer that cannot be exported exactly, naming its path.
        ValueError: when ``input_shape`` does not fit the model, or dtypes are mixed.
    """
    onnx = _import_onnx()
    helper = onnx.helper
    shapes = _input_shapes(model, input_shape)
    frozen = model.copy().eval().gradients_in_eval(False)
    dtype = _model_dtype(frozen)
    g = _Graph(onnx, dtype)
    several_in = len(shapes) > 1
    in_names = list(frozen.input_names) if several_in else [INPUT_NAME]
    g._names.update(in_names)   # reserved, with a graph's output names, before any node
    g._names.update(frozen.output_names if isinstance(frozen, L.Graph) else ())
    batched = [(1, *s) for s in shapes]
    try:
        out, out_shape = _add_layer(g, frozen, in_names if several_in else in_names[0],
                                    batched if several_in else batched[0], "")
    except ValueError as err:
        shape = shapes[0]
        if (several_in or len(shape) < 2 or shape[0] != 1
                or isinstance(err, UnsupportedModuleError)):
            raise
        # A torch user's habit (torch.onnx.export takes a batch): say what input_shape is.
        raise ValueError(
            f"export_onnx: input_shape {tuple(input_shape)} does not fit the model ({err}). "
            f"input_shape is the shape of one sample without the batch axis (the graph adds a "
            f"dynamic one): for a batch of shape {tuple(input_shape)} pass {shape[1:]}") from err
    if isinstance(out, list):      # several outputs: a Graph's own names for them
        out_names = (list(frozen.output_names) if isinstance(frozen, L.Graph)
                     else [f"{OUTPUT_NAME}_{k}" for k in range(len(out))])
        outs, out_shapes = out, out_shape
        # ONNX names each value once: an output that is a graph input, or a tensor
        # returned twice, gets a name of its own (its values pass through an Identity).
        taken = set(in_names)
        for k, name in enumerate(out_names):
            if name in taken:
                out_names[k] = name = f"{name}_output{k}"
            taken.add(name)
    else:
        out_names, outs, out_shapes = [OUTPUT_NAME], [out], [out_shape]
    if len(outs) == 1 and g.nodes and g.nodes[-1].output[0] == outs[0]:
        g.nodes[-1].output[0] = out_names[0]     # name the last node's result "output"
    else:   # several outputs, or a model that adds no node (empty Sequential)
        for name, internal in zip(out_names, outs):
            g.nodes.append(helper.make_node("Identity", [internal], [name],
                                            name=g._unique(f"/Identity_{name}")))

    elem_type = helper.np_dtype_to_tensor_dtype(dtype)
    graph = helper.make_graph(
        g.nodes, "chainrule",
        inputs=[helper.make_tensor_value_info(name, elem_type, ["N", *s])
                for name, s in zip(in_names, shapes)],
        outputs=[helper.make_tensor_value_info(name, elem_type, ["N", *s[1:]])
                 for name, s in zip(out_names, out_shapes)],
        initializer=g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="chainrule",
                              doc_string=repr(model))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, os.fspath(path))
    return proto
