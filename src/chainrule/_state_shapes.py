"""The state (parameters and buffers) an architecture description implies, without
building it: the dtype and shape of every ``state_dict()`` entry.

``load_checkpoint`` compares these with the file's tensor headers *before* it builds the
model, so a hostile header that asks for a ``Linear(30000, 30000)`` beside a few bytes
of tensor data is refused in milliseconds instead of allocating gigabytes: a model is
only ever built when the file holds every tensor it will allocate.

One function per layer type with state, from the same constructor arguments
``serialize.build`` passes (their defaults when left out); the other layer types hold
no state. ``tests/test_checkpoint_untrusted.py`` checks the table against
``build(...).state_dict()`` for every type in ``serialize.LAYER_TYPES``, so a new type
with state fails there until it has its entry here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from .serialize import _LEAVES

# (dtype name as NumPy spells it, shape)
Entry = tuple[str, tuple[int, ...]]


class Unknown(Exception):
    """The description holds something this table cannot tell the state of (a malformed
    entry, which ``build`` refuses by itself without allocating)."""


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise Unknown
    return v


def _ints(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        if len(v) != n:
            raise Unknown
        return tuple(_int(x) for x in v)
    return (_int(v),) * n


def _args(kind: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` completed with the constructor's defaults."""
    cls = _LEAVES[kind][0]
    defaults = {name: p.default for name, p in inspect.signature(cls).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {**defaults, **args}


def _dtype(a: Mapping[str, Any]) -> str:
    dtype = a.get("dtype")
    if dtype is None:
        return "float32"
    if dtype not in ("float32", "float64"):
        raise Unknown
    return dtype


def _conv(a: Mapping[str, Any], dims: int, transposed: bool = False) -> dict[str, Entry]:
    cin, cout, groups = _int(a["in_channels"]), _int(a["out_channels"]), _int(a["groups"])
    if groups < 1 or cin % groups or cout % groups:
        raise Unknown
    rows, grouped = (cin, cout) if transposed else (cout, cin)
    dtype = _dtype(a)
    state = {"weight": (dtype, (rows, grouped // groups) + _ints(a["kernel_size"], dims))}
    if a["bias"]:
        state["bias"] = (dtype, (cout,))
    return state


def _linear(a: Mapping[str, Any]) -> dict[str, Entry]:
    dtype = _dtype(a)
    state = {"weight": (dtype, (_int(a["out_features"]), _int(a["in_features"])))}
    if a["bias"]:
        state["bias"] = (dtype, (_int(a["out_features"]),))
    return state


def _affine(shape: tuple[int, ...], affine: bool, bias: bool, dtype: str) -> dict[str, Entry]:
    state = {}
    if affine:
        state["weight"] = (dtype, shape)
        if bias:
            state["bias"] = (dtype, shape)
    return state


def _batchnorm(a: Mapping[str, Any]) -> dict[str, Entry]:
    c, dtype = (_int(a["num_features"]),), _dtype(a)
    state = _affine(c, a["affine"], a.get("bias", True), dtype)
    if a["track_running_stats"]:
        state.update(running_mean=(dtype, c), running_var=(dtype, c),
                     num_batches_tracked=("int64", ()))
    return state


def _layernorm(a: Mapping[str, Any]) -> dict[str, Entry]:
    shape = a["normalized_shape"]
    shape = (_int(shape),) if not isinstance(shape, (list, tuple)) else tuple(map(_int, shape))
    return _affine(shape, a["elementwise_affine"], a["bias"], _dtype(a))


_STATE: dict[str, Callable[[Mapping[str, Any]], dict[str, Entry]]] = {
    "Conv2d": lambda a: _conv(a, 2),
    "Conv1d": lambda a: _conv(a, 1),
    "ConvTranspose2d": lambda a: _conv(a, 2, transposed=True),
    "Linear": _linear,
    "PReLU": lambda a: {"weight": (_dtype(a), (_int(a["num_parameters"]),))},
    "BatchNorm1d": _batchnorm,
    "BatchNorm2d": _batchnorm,
    "SyncBatchNorm": _batchnorm,
    "InstanceNorm2d": _batchnorm,
    "GroupNorm": lambda a: _affine((_int(a["num_channels"]),), a["affine"], a["bias"],
                                   _dtype(a)),
    "LayerNorm": _layernorm,
    "ConstantArithmetic": lambda a: {"value": (_dtype(a), tuple(map(_int, a["shape"])))},
}
# The layer types known to hold no state. A type in neither table (one added to
# serialize since) makes implied_state answer None: load_checkpoint then builds first,
# as it always did, rather than refuse a file it cannot judge.
_STATELESS = frozenset((
    "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "MaxPool1d", "AvgPool1d",
    "AdaptiveMaxPool2d", "Flatten", "Unflatten", "ReLU", "LeakyReLU", "Sigmoid", "Tanh",
    "ReLU6", "Hardtanh", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Hardswish",
    "Hardsigmoid", "Softplus", "Softmax", "LogSoftmax", "Identity", "Dropout", "Dropout2d",
    "LocalResponseNorm", "Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d",
    "PixelShuffle", "PixelUnshuffle", "ChannelShuffle", "ZeroPad2d", "ConstantPad2d",
    "ReflectionPad2d", "ReplicationPad2d", "Add", "Multiply", "Concat", "Split", "Chunk",
    "Reshape", "Permute", "Mean"))


def implied_state(desc: Any) -> dict[str, Entry] | None:
    """``{state-dict key: (dtype, shape)}`` of the model ``build(desc)`` would make, or
    None when the description is malformed or holds a type this table does not know
    (``build`` then decides, and refuses a malformed one before allocating)."""
    state: dict[str, Entry] = {}
    try:
        _walk(desc, "", state, 0)
    except (Unknown, KeyError, TypeError, ValueError, AttributeError, RecursionError):
        return None
    return state


def _walk(desc: Any, prefix: str, state: dict[str, Entry], depth: int) -> None:
    if depth > 64 or not isinstance(desc, Mapping):
        raise Unknown
    kind = desc.get("type")
    if kind == "Sequential":
        for i, child in enumerate(desc["layers"]):
            _walk(child, f"{prefix}{i}.", state, depth + 1)
    elif kind == "Residual":
        _walk(desc["block"], f"{prefix}block.", state, depth + 1)
        if desc.get("shortcut") is not None:
            _walk(desc["shortcut"], f"{prefix}shortcut.", state, depth + 1)
    elif kind == "Graph":
        layers = desc["layers"]
        if not isinstance(layers, Mapping):
            raise Unknown
        for key, child in layers.items():    # the graph's children, in state_dict order
            _walk(child, f"{prefix}{key}.", state, depth + 1)
    elif kind in _STATE:
        args = desc.get("args", {})
        if not isinstance(args, Mapping):
            raise Unknown
        for name, entry in _STATE[kind](_args(kind, args)).items():
            state[prefix + name] = entry
    elif kind not in _STATELESS:
        raise Unknown
