"""Architecture <-> JSON: describe a model as plain data, and build it back.

``describe(model)`` turns a model made of chainrule's built-in layers into a dict of
JSON types only (str, int, float, bool, None, list, dict)::

    {"type": "Conv2d", "args": {"in_channels": 3, "out_channels": 8, "kernel_size": [3, 3],
                                "stride": [1, 1], "padding": "same", "dilation": [1, 1],
                                "groups": 1, "bias": false, "dtype": "float32"}}
    {"type": "Sequential", "args": {}, "layers": [<entry>, <entry>, ...]}
    {"type": "Residual", "args": {}, "block": <entry>, "shortcut": <entry> or null}
    {"type": "Graph", "args": {},
     "inputs": {"name": "input", "shape": [3, 32, 32]} or a list of them,
     "layers": {"stem": <entry>, ...},
     "nodes": [{"name": "stem", "layer": "stem", "inputs": ["input"], "packed": false,
                "outputs": ["stem"]}, ...],
     "outputs": "head" or a list of tensor names}

A graph is described by its declaration (see ``chainrule.layers.graph``): its inputs
(names and per-sample shapes, null where unknown), each distinct layer once under its
name (a shared layer too; nested graphs and containers recursively), the nodes in
forward order (``GraphNode``: which layer, on which tensors, ``packed`` for a list
input, the names of its output tensors: ``split:0``, ``split:1`` for several) and its
outputs. A single input or output is written bare, a list as a list, as the graph
was declared (its ``forward`` takes and returns the same). ``build`` replays the calls:
``cr.Input`` per input, then each node's layer called on its input tensors.

``args`` are the layer's constructor keyword arguments, so ``build(describe(model))``
makes a model with the same structure, the same state-dict keys, shapes and dtypes, and
freshly initialized weights (a checkpoint then loads the weights into it).

What is *not* described: weights (they go in the checkpoint's tensors), train/eval
mode (a built model is in training mode, like any new one) and the random generator of
``Dropout`` (a built Dropout draws fresh entropy; ``fit(seed=...)`` re-seeds it).

``build`` only ever constructs the classes in its allow-list below, by their name in
the description; it never imports or evaluates anything named by the data, so a
description read from an untrusted file can at worst be refused with a ValueError.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .layers import Graph, Input, Layer, Residual, Sequential
# layer families, one import each (see the matching sections of _LEAVES)
from .layers import Conv1d, Conv2d, ConvTranspose2d
from .layers import AvgPool1d, AvgPool2d, AdaptiveAvgPool2d, AdaptiveMaxPool2d, MaxPool1d, MaxPool2d
from .layers import Flatten, Linear, Unflatten
from .layers import (CELU, ELU, GELU, SELU, Hardsigmoid, Hardswish, Hardtanh, Identity, LeakyReLU,
                     LogSoftmax, Mish, PReLU, ReLU, ReLU6, Sigmoid, SiLU, Softmax, Softplus, Tanh)
from .layers import Dropout, Dropout2d
from .layers import (ChannelShuffle, PixelShuffle, PixelUnshuffle, Upsample,
                     UpsamplingBilinear2d, UpsamplingNearest2d)
from .layers import ConstantPad2d, ReflectionPad2d, ReplicationPad2d, ZeroPad2d
from .layers import (BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm2d, LayerNorm,
                     LocalResponseNorm, SyncBatchNorm)
from .layers import Add, Chunk, Concat, Mean, Multiply, Permute, Reshape, Split
from .layers.constant import OPS as _CONSTANT_OPS, ConstantArithmetic
from .layers.symbolic import call_symbolic

__all__ = ["describe", "build", "LAYER_TYPES"]

# Deeper descriptions are refused rather than risking a RecursionError half-way.
MAX_DEPTH = 64


# ---------------------------------------------------------------------- argument checks
# build() checks the JSON *types* of arguments before calling a constructor: the
# constructors check ranges, but some coerce silently (bool("false") is True).

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_pair(v: Any) -> bool:
    return _is_int(v) or (isinstance(v, (list, tuple)) and len(v) == 2 and all(map(_is_int, v)))


def _is_float(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (_is_int, "an int"),
    "pair": (_is_pair, "an int or a list of two ints"),
    "padding": (lambda v: v in ("same", "valid") if isinstance(v, str) else _is_pair(v),
                'an int, a list of two ints, "same" or "valid"'),
    "float": (_is_float, "a finite number"),
    "float_or_none": (lambda v: v is None or _is_float(v), "a finite number or null"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "dtype": (lambda v: v in ("float32", "float64"), '"float32" or "float64"'),
    # checks that new layer families need go below, one section per family
    # pooling
    "pool_divisor": (lambda v: v is None or _is_int(v), "an int or null"),
    "pool_output_size": (lambda v: _is_int(v) or (
        isinstance(v, (list, tuple)) and len(v) == 2 and all(d is None or _is_int(d) for d in v)),
                         "an int or a list of two ints or nulls"),
    # padding and shape
    "pad4": (lambda v: _is_int(v) or (isinstance(v, (list, tuple)) and len(v) == 4
                                      and all(map(_is_int, v))),
             "an int or a list of four ints (left, right, top, bottom)"),
    "sizes": (lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(map(_is_int, v)),
              "a non-empty list of ints"),
    # activations
    "softmax_dim": (lambda v: v is None or _is_int(v), "an int or null"),
    "gelu_approximate": (lambda v: v in ("none", "tanh"), '"none" or "tanh"'),
    # convolution
    "padding1d": (lambda v: v in ("same", "valid") if isinstance(v, str) else _is_int(v),
                  'an int, "same" or "valid"'),
    # normalization
    "int_or_list": (lambda v: (_is_int(v) and v > 0) or (
        isinstance(v, (list, tuple)) and len(v) > 0 and all(_is_int(d) and d > 0 for d in v)),
                    "a positive int or a non-empty list of positive ints"),
    # resampling
    "upsample_size": (lambda v: v is None or _is_int(v) or (
        isinstance(v, (list, tuple)) and 1 <= len(v) <= 2 and all(map(_is_int, v))),
                      "null, an int or a list of one or two ints"),
    "upsample_scale": (lambda v: v is None or _is_float(v) or (
        isinstance(v, (list, tuple)) and 1 <= len(v) <= 2 and all(map(_is_float, v))),
                       "null, a finite number or a list of one or two"),
    "upsample_mode": (lambda v: v in ("nearest", "nearest-exact", "linear", "bilinear"),
                      '"nearest", "nearest-exact", "linear" or "bilinear"'),
    "bool_or_none": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    # merge and shape
    "int_or_sizes": (lambda v: _is_int(v) or (isinstance(v, (list, tuple)) and len(v) > 0
                                             and all(map(_is_int, v))),
                     "an int or a non-empty list of ints"),
    "shape": (lambda v: isinstance(v, (list, tuple)) and all(map(_is_int, v)), "a list of ints"),
    "constant_op": (lambda v: v in _CONSTANT_OPS, " or ".join(map(repr, _CONSTANT_OPS))),
}


# ---------------------------------------------------------------------- describing leaves

def _pair(value: tuple[int, int]) -> list[int]:
    return [int(value[0]), int(value[1])]


def _conv_args(m: Conv2d | Conv1d) -> dict[str, Any]:
    # Conv2d takes pairs; Conv1d takes ints (the one entry of its 1-tuples).
    size = _pair if isinstance(m, Conv2d) else (lambda value: int(value[0]))
    return {"in_channels": m.in_channels, "out_channels": m.out_channels,
            "kernel_size": size(m.kernel_size), "stride": size(m.stride),
            "padding": m.padding if isinstance(m.padding, str) else size(m.padding),
            "dilation": size(m.dilation), "groups": m.groups, "bias": m.bias is not None,
            "dtype": m.weight.dtype.name}


def _conv_transpose_args(m: ConvTranspose2d) -> dict[str, Any]:
    return {"in_channels": m.in_channels, "out_channels": m.out_channels,
            "kernel_size": _pair(m.kernel_size), "stride": _pair(m.stride),
            "padding": _pair(m.padding), "output_padding": _pair(m.output_padding),
            "groups": m.groups, "bias": m.bias is not None, "dilation": _pair(m.dilation),
            "dtype": m.weight.dtype.name}


def _linear_args(m: Linear) -> dict[str, Any]:
    return {"in_features": m.in_features, "out_features": m.out_features,
            "bias": m.bias is not None, "dtype": m.weight.dtype.name}


def _with_dtype(m: Layer, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` plus the layer's dtype when it has one (a layer without parameters or
    buffers has none to store)."""
    if m.dtype is not None:
        args["dtype"] = m.dtype.name
    return args


def _batchnorm_args(m: BatchNorm1d | BatchNorm2d) -> dict[str, Any]:
    return _with_dtype(m, {"num_features": m.num_features, "eps": m.eps,
                           "momentum": None if m.momentum is None else float(m.momentum),
                           "affine": m.affine, "track_running_stats": m.track_running_stats})


def _groupnorm_args(m: GroupNorm) -> dict[str, Any]:
    return _with_dtype(m, {"num_groups": m.num_groups, "num_channels": m.num_channels,
                           "eps": m.eps, "affine": m.affine, "bias": m.bias is not None})


def _layernorm_args(m: LayerNorm) -> dict[str, Any]:
    return _with_dtype(m, {"normalized_shape": list(m.normalized_shape), "eps": m.eps,
                           "elementwise_affine": m.elementwise_affine,
                           "bias": m.bias is not None})


def _instancenorm_args(m: InstanceNorm2d) -> dict[str, Any]:
    return _with_dtype(m, {"num_features": m.num_features, "eps": m.eps,
                           "momentum": m.momentum, "affine": m.affine,
                           "track_running_stats": m.track_running_stats,
                           "bias": m.bias is not None})


def _maxpool_args(m: MaxPool2d) -> dict[str, Any]:
    return {"kernel_size": _pair(m.kernel_size), "stride": _pair(m.stride),
            "padding": _pair(m.padding), "dilation": _pair(m.dilation),
            "ceil_mode": m.ceil_mode}


def _avgpool_args(m: AvgPool2d) -> dict[str, Any]:
    return {"kernel_size": _pair(m.kernel_size), "stride": _pair(m.stride),
            "padding": _pair(m.padding), "ceil_mode": m.ceil_mode,
            "count_include_pad": m.count_include_pad, "divisor_override": m.divisor_override}


def _adaptive_size_arg(m: AdaptiveAvgPool2d | AdaptiveMaxPool2d) -> dict[str, Any]:
    # A pair whose None entries keep the input's size on that axis.
    return {"output_size": [None if v is None else int(v) for v in m.output_size]}


def _attributes(m: Layer, schema: Mapping[str, str]) -> dict[str, Any]:
    """The arguments of a layer that keeps each one as the attribute of the same name,
    tuples as lists (JSON): the describe-args of the entries that give None."""
    values = {arg: getattr(m, arg) for arg in schema}
    return {arg: list(v) if isinstance(v, tuple) else v for arg, v in values.items()}


def _upsample_args(m: Upsample) -> dict[str, Any]:
    # Tuples become lists (JSON); the subclasses fix mode and align_corners themselves.
    args = {"size": list(m.size) if isinstance(m.size, tuple) else m.size,
            "scale_factor": (list(m.scale_factor) if isinstance(m.scale_factor, tuple)
                             else m.scale_factor)}
    if type(m) is Upsample:
        args.update(mode=m.mode, align_corners=m.align_corners,
                    recompute_scale_factor=m.recompute_scale_factor)
    return args


_BATCHNORM_SCHEMA = {"num_features": "int", "eps": "float", "momentum": "float_or_none",
                     "affine": "bool", "track_running_stats": "bool", "dtype": "dtype"}

# The allow-list: type name -> (class, {constructor argument: check}, describe-args), the
# describe-args None for a layer that keeps its arguments as attributes (``_attributes``).
# Exact classes only: a subclass may compute something else, so it is not described.
_LEAVES: dict[str, tuple[type[Layer], dict[str, str],
                         Callable[[Any], dict[str, Any]] | None]] = {
    # convolution
    "Conv2d": (Conv2d, {"in_channels": "int", "out_channels": "int", "kernel_size": "pair",
                        "stride": "pair", "padding": "padding", "dilation": "pair",
                        "groups": "int", "bias": "bool", "dtype": "dtype"}, _conv_args),
    "Conv1d": (Conv1d, {"in_channels": "int", "out_channels": "int", "kernel_size": "int",
                        "stride": "int", "padding": "padding1d", "dilation": "int",
                        "groups": "int", "bias": "bool", "dtype": "dtype"}, _conv_args),
    "ConvTranspose2d": (ConvTranspose2d, {"in_channels": "int", "out_channels": "int",
                                          "kernel_size": "pair", "stride": "pair",
                                          "padding": "pair", "output_padding": "pair",
                                          "groups": "int", "bias": "bool", "dilation": "pair",
                                          "dtype": "dtype"}, _conv_transpose_args),
    # pooling
    "MaxPool2d": (MaxPool2d, {"kernel_size": "pair", "stride": "pair", "padding": "pair",
                              "dilation": "pair", "ceil_mode": "bool"}, _maxpool_args),
    "AvgPool2d": (AvgPool2d, {"kernel_size": "pair", "stride": "pair", "padding": "pair",
                              "ceil_mode": "bool", "count_include_pad": "bool",
                              "divisor_override": "pool_divisor"}, _avgpool_args),
    "AdaptiveAvgPool2d": (AdaptiveAvgPool2d, {"output_size": "pool_output_size"},
                          _adaptive_size_arg),
    "MaxPool1d": (MaxPool1d, {"kernel_size": "int", "stride": "int", "padding": "int",
                              "dilation": "int", "ceil_mode": "bool"}, None),
    "AvgPool1d": (AvgPool1d, {"kernel_size": "int", "stride": "int", "padding": "int",
                              "ceil_mode": "bool", "count_include_pad": "bool"}, None),
    "AdaptiveMaxPool2d": (AdaptiveMaxPool2d, {"output_size": "pool_output_size"},
                          _adaptive_size_arg),
    # linear and shape
    "Linear": (Linear, {"in_features": "int", "out_features": "int", "bias": "bool",
                        "dtype": "dtype"}, _linear_args),
    "Flatten": (Flatten, {"start_dim": "int", "end_dim": "int"}, None),
    "Unflatten": (Unflatten, {"dim": "int", "unflattened_size": "sizes"}, None),
    # activations
    "ReLU": (ReLU, {}, None),
    "LeakyReLU": (LeakyReLU, {"negative_slope": "float"}, None),
    "Sigmoid": (Sigmoid, {}, None),
    "Tanh": (Tanh, {}, None),
    "ReLU6": (ReLU6, {}, None),
    "Hardtanh": (Hardtanh, {"min_val": "float", "max_val": "float"}, None),
    "ELU": (ELU, {"alpha": "float"}, None),
    "SELU": (SELU, {}, None),
    "CELU": (CELU, {"alpha": "float"}, None),
    "GELU": (GELU, {"approximate": "gelu_approximate"}, None),
    "SiLU": (SiLU, {}, None),
    "Mish": (Mish, {}, None),
    "Hardswish": (Hardswish, {}, None),
    "Hardsigmoid": (Hardsigmoid, {}, None),
    "Softplus": (Softplus, {"beta": "float", "threshold": "float"}, None),
    "PReLU": (PReLU, {"num_parameters": "int", "init": "float", "dtype": "dtype"},
              lambda m: {"num_parameters": m.num_parameters, "init": m.init,
                         "dtype": m.weight.dtype.name}),
    "Softmax": (Softmax, {"dim": "softmax_dim"}, None),
    "LogSoftmax": (LogSoftmax, {"dim": "softmax_dim"}, None),
    "Identity": (Identity, {}, None),
    # regularization
    "Dropout": (Dropout, {"p": "float"}, None),
    "Dropout2d": (Dropout2d, {"p": "float", "inplace": "bool"}, None),
    # normalization
    "BatchNorm1d": (BatchNorm1d, _BATCHNORM_SCHEMA, _batchnorm_args),
    "BatchNorm2d": (BatchNorm2d, _BATCHNORM_SCHEMA, _batchnorm_args),
    "SyncBatchNorm": (SyncBatchNorm, _BATCHNORM_SCHEMA, _batchnorm_args),
    "GroupNorm": (GroupNorm, {"num_groups": "int", "num_channels": "int", "eps": "float",
                              "affine": "bool", "bias": "bool", "dtype": "dtype"}, _groupnorm_args),
    "LayerNorm": (LayerNorm, {"normalized_shape": "int_or_list", "eps": "float",
                              "elementwise_affine": "bool", "bias": "bool", "dtype": "dtype"},
                  _layernorm_args),
    "InstanceNorm2d": (InstanceNorm2d, {**_BATCHNORM_SCHEMA, "bias": "bool"}, _instancenorm_args),
    "LocalResponseNorm": (LocalResponseNorm, {"size": "int", "alpha": "float", "beta": "float",
                                              "k": "float"}, None),
    # resampling
    "Upsample": (Upsample, {"size": "upsample_size", "scale_factor": "upsample_scale",
                            "mode": "upsample_mode", "align_corners": "bool_or_none",
                            "recompute_scale_factor": "bool_or_none"}, _upsample_args),
    "UpsamplingNearest2d": (UpsamplingNearest2d, {"size": "upsample_size",
                                                  "scale_factor": "upsample_scale"},
                            _upsample_args),
    "UpsamplingBilinear2d": (UpsamplingBilinear2d, {"size": "upsample_size",
                                                    "scale_factor": "upsample_scale"},
                             _upsample_args),
    "PixelShuffle": (PixelShuffle, {"upscale_factor": "int"}, None),
    "PixelUnshuffle": (PixelUnshuffle, {"downscale_factor": "int"}, None),
    "ChannelShuffle": (ChannelShuffle, {"groups": "int"}, None),
    # padding
    "ZeroPad2d": (ZeroPad2d, {"padding": "pad4"}, None),
    "ConstantPad2d": (ConstantPad2d, {"padding": "pad4", "value": "float"}, None),
    "ReflectionPad2d": (ReflectionPad2d, {"padding": "pad4"}, None),
    "ReplicationPad2d": (ReplicationPad2d, {"padding": "pad4"}, None),
    # merge and shape
    "Add": (Add, {}, None),
    "Multiply": (Multiply, {}, None),
    "Concat": (Concat, {"dim": "int"}, None),
    "Split": (Split, {"split_size_or_sections": "int_or_sizes", "dim": "int"}, None),
    "Chunk": (Chunk, {"chunks": "int", "dim": "int"}, None),
    "Reshape": (Reshape, {"shape": "shape"}, None),
    "Permute": (Permute, {"dims": "sizes"}, None),
    "Mean": (Mean, {"dims": "int_or_sizes", "keepdim": "bool"}, None),
    # a constant operand (from_onnx), its value a buffer of the state dict
    "ConstantArithmetic": (ConstantArithmetic, {"op": "constant_op", "shape": "shape",
                                                "dtype": "dtype"},
                           lambda m: {"op": m.op, "shape": list(m.shape),
                                      "dtype": m.value.dtype.name}),
}
_CONTAINERS: dict[str, type[Layer]] = {"Sequential": Sequential, "Residual": Residual,
                                       "Graph": Graph}
# Keys an entry may hold besides "type" and "args".
_CHILD_KEYS = {"Sequential": {"layers"}, "Residual": {"block", "shortcut"},
               "Graph": {"inputs", "layers", "nodes", "outputs"}}

LAYER_TYPES: tuple[str, ...] = tuple(_LEAVES) + tuple(_CONTAINERS)
_NAME_OF_CLASS = {cls: name for name, (cls, _, _) in _LEAVES.items()}
_NAME_OF_CLASS.update({cls: name for name, cls in _CONTAINERS.items()})


# ---------------------------------------------------------------------- describe

def describe(layer: Layer) -> dict[str, Any]:
    """The architecture of ``layer`` as a JSON-serializable dict (see the module doc).

    Raises:
        TypeError: ``layer`` or a layer inside it is not one of chainrule's built-in
            layer types (``LAYER_TYPES``; subclasses included), named with its path.
    """
    return _describe(layer, "model")


def _describe(layer: Any, where: str) -> dict[str, Any]:
    name = _NAME_OF_CLASS.get(type(layer))
    if name is None:
        cls = type(layer)
        raise TypeError(
            f"describe: {where} is a {cls.__module__}.{cls.__qualname__}, which is not one of "
            f"chainrule's built-in layer types ({', '.join(LAYER_TYPES)}); only those can be "
            "described and rebuilt from a file. Save its state_dict() instead.")
    if isinstance(layer, Sequential):
        return {"type": name, "args": {},
                "layers": [_describe(child, f"{where}.{key}")
                           for key, child in layer.named_children()]}
    if isinstance(layer, Residual):
        shortcut = (None if layer.shortcut is None
                    else _describe(layer.shortcut, f"{where}.shortcut"))
        return {"type": name, "args": {}, "block": _describe(layer.block, f"{where}.block"),
                "shortcut": shortcut}
    if isinstance(layer, Graph):
        return _describe_graph(layer, where)
    _, schema, describe_args = _LEAVES[name]
    return {"type": name,
            "args": describe_args(layer) if describe_args else _attributes(layer, schema)}


def _describe_graph(graph: Graph, where: str) -> dict[str, Any]:
    inputs = [{"name": name, "shape": None if shape is None else list(shape)}
              for name, shape in zip(graph.input_names, graph.input_shapes)]
    outputs = list(graph.output_names)
    return {
        "type": "Graph", "args": {},
        "inputs": inputs[0] if graph.single_input else inputs,
        "layers": {key: _describe(child, f"{where}.{key}")
                   for key, child in graph.named_children()},
        "nodes": [{"name": n.name, "layer": n.layer_name, "inputs": list(n.inputs),
                   "packed": n.packed, "outputs": list(n.outputs)} for n in graph.nodes],
        "outputs": outputs[0] if graph.single_output else outputs,
    }


# ---------------------------------------------------------------------- build

def build(desc: Mapping[str, Any]) -> Layer:
    """Construct the model that ``desc`` (from ``describe``, maybe via JSON) describes.

    Only the classes of ``LAYER_TYPES`` are ever constructed. ``"args"`` may be left out
    for a layer without arguments (``{"type": "ReLU"}``); pairs may be lists or tuples.
    The model is in training mode with freshly initialized weights.

    Raises:
        ValueError: an unknown type, an unknown, missing or ill-typed argument, a value
            the layer refuses, or a malformed entry; the message names the entry by its
            state-dict path (``model.3.block.0``).
    """
    return _build(desc, "model", 0)


def _build(desc: Any, where: str, depth: int) -> Layer:
    if depth > MAX_DEPTH:
        raise ValueError(f"build: {where}: nested deeper than {MAX_DEPTH} levels")
    if not isinstance(desc, Mapping):
        raise ValueError(f"build: {where}: expected a dict with a 'type', got "
                         f"{type(desc).__name__}")
    kind = desc.get("type")
    if not isinstance(kind, str) or kind not in LAYER_TYPES:
        raise ValueError(f"build: {where}: unknown layer type {kind!r}; known types: "
                         f"{', '.join(LAYER_TYPES)}")
    extra = set(desc) - {"type", "args"} - _CHILD_KEYS.get(kind, set())
    if extra:
        raise ValueError(f"build: {where} ({kind}): unexpected key(s) {sorted(map(str, extra))}")
    args = desc.get("args", {})
    if not isinstance(args, Mapping):
        raise ValueError(f"build: {where} ({kind}): 'args' must be a dict, got "
                         f"{type(args).__name__}")

    if kind in _CONTAINERS:
        if args:
            raise ValueError(f"build: {where} ({kind}): takes no args, got {sorted(args)}")
        if kind == "Sequential":
            layers = desc.get("layers")
            if not isinstance(layers, list):
                raise ValueError(f"build: {where} (Sequential): 'layers' must be a list, got "
                                 f"{type(layers).__name__}")
            return Sequential(*(_build(d, f"{where}.{i}", depth + 1) for i, d in enumerate(layers)))
        if kind == "Graph":
            return _build_graph(desc, where, depth)
        if "block" not in desc:
            raise ValueError(f"build: {where} (Residual): missing 'block'")
        block = _build(desc["block"], f"{where}.block", depth + 1)
        shortcut = desc.get("shortcut")
        if shortcut is not None:
            shortcut = _build(shortcut, f"{where}.shortcut", depth + 1)
        return Residual(block, shortcut)

    cls, schema, _ = _LEAVES[kind]
    for arg, value in args.items():
        if arg not in schema:
            raise ValueError(f"build: {where} ({kind}): unknown argument {arg!r}; {kind} takes "
                             f"{', '.join(schema) or 'no arguments'}")
        check, expected = _CHECKS[schema[arg]]
        if not check(value):
            raise ValueError(f"build: {where} ({kind}): argument {arg!r} must be {expected}, "
                             f"got {value!r}")
    try:
        return cls(**args)
    except (TypeError, ValueError) as err:  # e.g. a missing argument, groups not dividing
        raise ValueError(f"build: {where} ({kind}): {err}") from err


# ---------------------------------------------------------------------- build a graph
# A graph's description is checked piece by piece before anything is called, so a
# malformed one (read from an untrusted file) is refused with a ValueError that names
# the node, never an IndexError or KeyError from inside the replay.

def _names_list(value: Any, what: str, where: str, single_ok: bool) -> tuple[list[Any], bool]:
    """``value`` as a list and whether it was written bare (a single input/output)."""
    if single_ok and not isinstance(value, list):
        return [value], True
    if not isinstance(value, list) or not value:
        raise ValueError(f"build: {where} (Graph): {what} must be a non-empty list, got "
                         f"{value!r}"[:300])
    return value, False


def _graph_inputs(desc: Mapping[str, Any], where: str) -> tuple[list[Any], bool]:
    entries, single = _names_list(desc.get("inputs"), "'inputs'", where, single_ok=True)
    tensors = []
    for i, entry in enumerate(entries):
        at = f"build: {where} (Graph): inputs[{i}]"
        if not isinstance(entry, Mapping) or set(entry) != {"name", "shape"}:
            raise ValueError(f"{at} must be a dict with exactly 'name' and 'shape', got "
                             f"{entry!r}"[:300])
        shape = entry["shape"]
        if shape is not None and not (isinstance(shape, list) and all(
                d is None or (_is_int(d) and d > 0) for d in shape)):
            raise ValueError(f"{at} ({entry['name']!r}): 'shape' must be null or a list of "
                             f"positive ints and nulls, got {shape!r}")
        if not isinstance(entry["name"], str):
            raise ValueError(f"{at}: 'name' must be a string, got {entry['name']!r}")
        if any(t.node.name == entry["name"] for t in tensors):
            raise ValueError(f"{at}: the input name {entry['name']!r} is used twice")
        try:
            tensors.append(Input(shape, name=entry["name"]))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{at} ({entry['name']!r}): {err}") from err
    return tensors, single


_NODE_KEYS = {"name", "layer", "inputs", "packed", "outputs"}


def _check_node(node: Any, i: int, where: str) -> str:
    """The node's name, once its entry has the right keys and JSON types."""
    at = f"build: {where} (Graph): nodes[{i}]"
    if not isinstance(node, Mapping) or set(node) != _NODE_KEYS:
        raise ValueError(f"{at} must be a dict with the keys {sorted(_NODE_KEYS)}, got "
                         f"{node!r}"[:300])
    name = node["name"]
    if not isinstance(name, str):
        raise ValueError(f"{at}: 'name' must be a string, got {name!r}")
    at = f"build: {where} (Graph): node {name!r}"
    if not isinstance(node["layer"], str):
        raise ValueError(f"{at}: 'layer' must be a layer's name (a string), got "
                         f"{node['layer']!r}")
    for key in ("inputs", "outputs"):
        if not (isinstance(node[key], list) and node[key]
                and all(isinstance(t, str) for t in node[key])):
            raise ValueError(f"{at}: {key!r} must be a non-empty list of tensor names, got "
                             f"{node[key]!r}")
    if not isinstance(node["packed"], bool):
        raise ValueError(f"{at}: 'packed' must be true or false, got {node['packed']!r}")
    if not node["packed"] and len(node["inputs"]) != 1:
        raise ValueError(f"{at}: a node that is not packed reads one tensor, got "
                         f"{node['inputs']}")
    return name


def _build_graph(desc: Mapping[str, Any], where: str, depth: int) -> Graph:
    """Replay the calls a graph description records (see the module docstring)."""
    layer_descs = desc.get("layers")
    if not isinstance(layer_descs, Mapping):
        raise ValueError(f"build: {where} (Graph): 'layers' must be a dict of layer name -> "
                         f"entry, got {type(layer_descs).__name__}")
    nodes = desc.get("nodes")
    if not isinstance(nodes, list):
        raise ValueError(f"build: {where} (Graph): 'nodes' must be a list, got "
                         f"{type(nodes).__name__}")
    node_names = [_check_node(node, i, where) for i, node in enumerate(nodes)]
    output_names, single_out = _names_list(desc.get("outputs"), "'outputs'", where,
                                           single_ok=True)
    if not all(isinstance(t, str) for t in output_names):
        raise ValueError(f"build: {where} (Graph): 'outputs' must be tensor names (strings), "
                         f"got {desc.get('outputs')!r}"[:300])
    for key in layer_descs:
        if not isinstance(key, str):
            raise ValueError(f"build: {where} (Graph): layer names must be strings, got "
                             f"{key!r}")
    for name, node in zip(node_names, nodes):
        if node["layer"] not in layer_descs:
            raise ValueError(f"build: {where} (Graph): node {name!r}: calls the layer "
                             f"{node['layer']!r}, which 'layers' does not hold (it holds "
                             f"{list(layer_descs)})")
    used = {node["layer"] for node in nodes}
    unused = [key for key in layer_descs if key not in used]
    if unused:
        raise ValueError(f"build: {where} (Graph): layer(s) {unused} are called by no node")
    layers = {key: _build(entry, f"{where}.{key}", depth + 1)
              for key, entry in layer_descs.items()}

    ins, single_in = _graph_inputs(desc, where)
    tensors: dict[str, Any] = {t.node.name: t for t in ins}
    produced_later = {t: name for name, node in zip(node_names, nodes) for t in node["outputs"]}
    calls: dict[str, int] = {}
    for name, node in zip(node_names, nodes):
        at = f"build: {where} (Graph): node {name!r}"
        key = node["layer"]
        k = calls.get(key, 0)
        calls[key] = k + 1
        expected = key if k == 0 else f"{key}@{k}"
        if name != expected:
            raise ValueError(f"{at}: call {k + 1} of layer {key!r} is named {expected!r}, "
                             f"not {name!r}")
        args = []
        for t in node["inputs"]:
            if t not in tensors:
                later = produced_later.get(t)
                why = (f"made by node {later!r}, which comes later (nodes must be listed in "
                       "forward order)" if later is not None else "which no input or earlier "
                       "node makes")
                raise ValueError(f"{at}: reads tensor {t!r}, {why}")
            args.append(tensors[t])
        multi = node["outputs"] != [name]
        if multi and node["outputs"] != [f"{name}:{j}" for j in range(len(node["outputs"]))]:
            raise ValueError(f"{at}: 'outputs' must be [{name!r}] or [{name + ':0'!r}, "
                             f"{name + ':1'!r}, ...], got {node['outputs']}")
        try:
            out = call_symbolic(layers[key], args if node["packed"] else args[0], name=key,
                                num_outputs=len(node["outputs"]) if multi else None)
        except (TypeError, ValueError, IndexError, NotImplementedError) as err:
            raise ValueError(f"{at}: {err}") from err
        outs = out if isinstance(out, list) else [out]
        if isinstance(out, list) != multi or len(outs) != len(node["outputs"]):
            raise ValueError(f"{at}: the description gives it the outputs {node['outputs']}, "
                             f"but its layer returns {len(outs)} "
                             f"{'list entries' if isinstance(out, list) else 'array'}")
        for t_name, t in zip(node["outputs"], outs):
            if t_name in tensors:
                raise ValueError(f"{at}: makes tensor {t_name!r}, which already exists")
            tensors[t_name] = t
    for t in output_names:
        if t not in tensors:
            raise ValueError(f"build: {where} (Graph): output {t!r} is no input's or node's "
                             "tensor")
    try:
        outs = [tensors[t] for t in output_names]
        graph = Graph(ins[0] if single_in else ins, outs[0] if single_out else outs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"build: {where} (Graph): {err}") from err
    if [n.name for n in graph.nodes] != node_names:
        # Nodes no output depends on are dropped by Graph; a description must not hold them.
        dropped = [n for n in node_names if n not in {g.name for g in graph.nodes}]
        raise ValueError(f"build: {where} (Graph): node(s) {dropped} do not lead to any output")
    return graph
