"""export_onnx: write a chainrule model as an ONNX graph for inference.

The graph is built node by node with the ``onnx`` package's helper API, in the standard
domain at opset 17 (IR version 8, read by every ONNX Runtime since 1.12), with one input
``"input"`` of shape (N, *input_shape) whose batch axis N is dynamic and one output
``"output"``. Layers map to operators as follows (inference mode throughout):

============================  ==================================================
chainrule                     ONNX
============================  ==================================================
Conv2d                        Conv (pads, strides, dilations, group)
MaxPool2d                     MaxPool (pads, strides, dilations)
AvgPool2d                     AveragePool (count_include_pad)
AdaptiveAvgPool2d             GlobalAveragePool for output 1x1; AveragePool when the
                              output size divides the input size; otherwise two
                              MatMuls with the pooling matrices, P_h @ x @ P_w.T
Linear                        Gemm on (N, in); MatMul + Add on (N, *, in)
Flatten                       Flatten (axis 1 .. end) or Reshape (other axis ranges)
ReLU, LeakyReLU, Sigmoid,     Relu, LeakyRelu, Sigmoid, Tanh
Tanh
Dropout                       Identity
BatchNorm1d/2d                BatchNormalization with the running statistics; without
                              running statistics (track_running_stats=False, which
                              normalizes with the batch's own statistics even in eval)
                              ReduceMean/Sub/Mul/Sqrt/Div
Residual                      Add of the two branches
Sequential                    the chain of its children
============================  ==================================================

Initializers are named by their state-dict key (``"0.weight"``), so a graph can be read
against ``model.state_dict()``. The ``onnx`` package is imported inside ``export_onnx``
only: ``import chainrule`` does not need it.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np

from .. import layers as L
from ..functional import adaptive_pool_matrix
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

    def _unique(self, name: str) -> str:
        candidate, k = name, 1
        while candidate in self._names:
            candidate, k = f"{name}_{k}", k + 1
        self._names.add(candidate)
        return candidate

    def constant(self, name: str, array: np.ndarray) -> str:
        """Add an initializer (a weight or a constant) and return its name."""
        name = self._unique(name)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

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


def _conv(g: _Graph, c: L.Conv2d, x: str, shape: tuple, path: str) -> str:
    # _pad4 is the (top, bottom, left, right) padding forward uses, "same" already resolved.
    top, bottom, left, right = c._pad4
    inputs = [x, g.weight(child_path(path, "weight"), c.weight.data)]
    if c.bias is not None:
        inputs.append(g.weight(child_path(path, "bias"), c.bias.data))
    return g.node("Conv", inputs, path, kernel_shape=list(c.kernel_size), strides=list(c.stride),
                  pads=[top, left, bottom, right], dilations=list(c.dilation), group=c.groups)


def _max_pool(g: _Graph, c: L.MaxPool2d, x: str, shape: tuple, path: str) -> str:
    ph, pw = c.padding
    return g.node("MaxPool", [x], path, kernel_shape=list(c.kernel_size), strides=list(c.stride),
                  pads=[ph, pw, ph, pw], dilations=list(c.dilation))


def _avg_pool(g: _Graph, c: L.AvgPool2d, x: str, shape: tuple, path: str) -> str:
    ph, pw = c.padding
    return g.node("AveragePool", [x], path, kernel_shape=list(c.kernel_size),
                  strides=list(c.stride), pads=[ph, pw, ph, pw],
                  count_include_pad=int(c.count_include_pad))


def _adaptive_avg_pool(g: _Graph, c: L.AdaptiveAvgPool2d, x: str, shape: tuple, path: str) -> str:
    (h, w), (oh, ow) = shape[-2:], c.output_size
    if (oh, ow) == (1, 1):
        return g.node("GlobalAveragePool", [x], path)
    if h % oh == 0 and w % ow == 0:
        # Even division: adaptive window i spans [i*k, (i+1)*k), a plain average pool.
        kernel = [h // oh, w // ow]
        return g.node("AveragePool", [x], path, kernel_shape=kernel, strides=kernel)
    # Uneven windows overlap or differ in size; pooling is separable, out = P_h @ x @ P_w.T,
    # and MatMul broadcasts the 2-D matrices over (N, C).
    pool_h = g.weight(child_path(path, "pool_h"), adaptive_pool_matrix(h, oh, np.float64))
    pool_wt = g.weight(child_path(path, "pool_w_t"), adaptive_pool_matrix(w, ow, np.float64).T)
    rows = g.node("MatMul", [pool_h, x], path)                      # (N, C, H_out, W)
    return g.node("MatMul", [rows, pool_wt], path)                  # (N, C, H_out, W_out)


def _linear(g: _Graph, c: L.Linear, x: str, shape: tuple, path: str) -> str:
    if len(shape) == 2:
        inputs = [x, g.weight(child_path(path, "weight"), c.weight.data)]
        if c.bias is not None:
            inputs.append(g.weight(child_path(path, "bias"), c.bias.data))
        return g.node("Gemm", inputs, path, transB=1)
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
    return g.node("Reshape", [x, g.constant(child_path(path, "shape"), np.array(target, np.int64))],
                  path)


def _batch_norm(g: _Graph, c: Any, x: str, shape: tuple, path: str) -> str:
    ones, zeros = np.ones(c.num_features), np.zeros(c.num_features)
    weight = c.weight.data if c.affine else ones
    bias = c.bias.data if c.affine else zeros
    if c.track_running_stats:
        inputs = [x, g.weight(child_path(path, "weight"), weight),
                  g.weight(child_path(path, "bias"), bias),
                  g.weight(child_path(path, "running_mean"), c.running_mean),
                  g.weight(child_path(path, "running_var"), c.running_var)]
        return g.node("BatchNormalization", inputs, path, epsilon=c.eps)
    # No running statistics: chainrule (as torch) normalizes with the batch's own mean and
    # biased variance even in eval, which BatchNormalization's inference form cannot do.
    axes = [0] + list(range(2, len(shape)))
    channel = (c.num_features,) + (1,) * (len(shape) - 2)           # broadcasts over (N, C, ...)
    mean = g.node("ReduceMean", [x], path, axes=axes, keepdims=1)
    centered = g.node("Sub", [x, mean], path)
    var = g.node("ReduceMean", [g.node("Mul", [centered, centered], path)], path, axes=axes,
                 keepdims=1)
    eps = g.weight(child_path(path, "eps"), np.array(c.eps))
    out = g.node("Div", [centered, g.node("Sqrt", [g.node("Add", [var, eps], path)], path)], path)
    if c.affine:
        out = g.node("Mul", [out, g.weight(child_path(path, "weight"), weight.reshape(channel))], path)
        out = g.node("Add", [out, g.weight(child_path(path, "bias"), bias.reshape(channel))], path)
    return out


_CONVERTERS: dict[type, Converter] = {
    # convolution
    L.Conv2d: _conv,
    # pooling
    L.MaxPool2d: _max_pool,
    L.AvgPool2d: _avg_pool,
    L.AdaptiveAvgPool2d: _adaptive_avg_pool,
    # linear and shape
    L.Linear: _linear,
    L.Flatten: _flatten,
    # normalization
    L.BatchNorm1d: _batch_norm,
    L.BatchNorm2d: _batch_norm,
    # activations
    L.ReLU: lambda g, c, x, shape, path: g.node("Relu", [x], path),
    L.LeakyReLU: lambda g, c, x, shape, path: g.node("LeakyRelu", [x], path,
                                                     alpha=c.negative_slope),
    L.Sigmoid: lambda g, c, x, shape, path: g.node("Sigmoid", [x], path),
    L.Tanh: lambda g, c, x, shape, path: g.node("Tanh", [x], path),
    # regularization
    L.Dropout: lambda g, c, x, shape, path: g.node("Identity", [x], path),
    # resampling
    # padding
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
    if kind not in _CONVERTERS:
        raise UnsupportedModuleError(
            f"{shown_path(path)}: {kind.__module__}.{kind.__qualname__} has no ONNX export: "
            "export_onnx handles chainrule's own layer classes (Sequential, Residual, "
            + ", ".join(sorted(c.__name__ for c in _CONVERTERS)) + ")")
    # The layer's own forward on a dummy batch gives its output shape and checks that the
    # input shape fits it, with the layer's own error message when it does not.
    out_shape = layer.forward(np.zeros(shape, dtype=g.dtype)).shape
    return _CONVERTERS[kind](g, layer, x, shape, path), tuple(out_shape)


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


def export_onnx(model: L.Layer, path: str | os.PathLike, input_shape: Sequence[int]) -> Any:
    """Write ``model`` in inference mode as an ONNX file and return the ``onnx.ModelProto``.

    Args:
        model: a chainrule layer (usually a Sequential) built from chainrule's layer
            classes, all float32 or all float64. It is not changed: the export works on an
            eval-mode copy, so Dropout is the identity and BatchNorm uses its running stats.
        path: where to write the ``.onnx`` file.
        input_shape: the shape of one sample *without* the batch axis, e.g. (3, 32, 32).

    Shape: the graph's input ``"input"`` is (N, *input_shape) with a dynamic batch size N;
    its output ``"output"`` is (N, *out) as ``model.forward`` gives.

    Raises:
        ImportError: when the ``onnx`` package is missing (``pip install "chainrule[onnx]"``).
        UnsupportedModuleError: for a layer that cannot be exported exactly, naming its path.
        ValueError: when ``input_shape`` does not fit the model, or dtypes are mixed.
    """
    onnx = _import_onnx()
    helper = onnx.helper
    shape = _sample_shape(input_shape)
    frozen = model.copy().eval().gradients_in_eval(False)
    dtype = _model_dtype(frozen)
    g = _Graph(onnx, dtype)
    out, out_shape = _add_layer(g, frozen, INPUT_NAME, (1, *shape), "")
    if g.nodes and g.nodes[-1].output[0] == out:
        g.nodes[-1].output[0] = OUTPUT_NAME      # name the last node's result "output"
    else:                                         # a model that adds no node (empty Sequential)
        g.nodes.append(helper.make_node("Identity", [out], [OUTPUT_NAME], name="/Identity"))

    elem_type = helper.np_dtype_to_tensor_dtype(dtype)
    graph = helper.make_graph(
        g.nodes, "chainrule",
        inputs=[helper.make_tensor_value_info(INPUT_NAME, elem_type, ["N", *shape])],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, elem_type, ["N", *out_shape[1:]])],
        initializer=g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="chainrule",
                              doc_string=repr(model))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, os.fspath(path))
    return proto
