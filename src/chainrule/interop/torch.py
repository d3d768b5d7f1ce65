"""Conversion between chainrule layers and ``torch.nn`` modules, weights included.

``from_torch(module)`` turns a ``torch.nn.Sequential`` (nested ones too) of the layer
types chainrule has into the equivalent chainrule model; ``to_torch(model)`` does the
reverse. Both copy parameters and buffers (BatchNorm's running statistics and
``num_batches_tracked``), each module's train/eval mode and each layer's dtype, and keep
the child names, so the two state dicts have the same keys and values.

chainrule's ``Residual`` has no twin in ``torch.nn``; it becomes ``TorchResidual``
(``block(x) + shortcut(x)``, with the same ``block.*``/``shortcut.*`` keys), a small
``torch.nn.Module`` defined here on first use so that ``import chainrule`` never
imports torch. It is reachable as ``chainrule.interop.torch.TorchResidual``.

Modules are matched by exact type: a subclass may override ``forward``, and converting
it as its base class would silently change the numbers.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .. import layers as L
from ..layers.constant import ConstantArithmetic
from ._common import UnsupportedModuleError, child_path, shown_path

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import torch

_INSTALL_HINT = 'this needs PyTorch: pip install "chainrule[torch]"'


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as err:
        raise ImportError(f"chainrule.interop.torch: {_INSTALL_HINT}") from err
    return torch


@functools.lru_cache(maxsize=None)
def _residual_class() -> type:
    """Define ``TorchResidual`` once, on first use (a class body needs torch.nn.Module)."""
    torch = _import_torch()

    class TorchResidual(torch.nn.Module):
        """``y = block(x) + shortcut(x)``, the shortcut being the identity when None:
        the torch twin of ``chainrule.Residual``, with the same state-dict keys."""

        def __init__(self, block: "torch.nn.Module",
                     shortcut: "torch.nn.Module | None" = None) -> None:
            super().__init__()
            self.block = block
            # register_module accepts None, so "no shortcut" is an entry like torch's own.
            self.register_module("shortcut", shortcut)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            skip = x if self.shortcut is None else self.shortcut(x)
            return self.block(x) + skip

    # So that torch.save / pickle find the class again as chainrule.interop.torch.TorchResidual
    # (resolved by this module's __getattr__).
    TorchResidual.__module__ = __name__
    TorchResidual.__qualname__ = "TorchResidual"
    return TorchResidual


@functools.lru_cache(maxsize=None)
def _merge_classes() -> dict[str, type]:
    """The torch twins of chainrule's merge, split and shape layers (torch.nn has no
    modules for them), defined once on first use: ``TorchAdd``, ``TorchMultiply`` and
    ``TorchConcat`` take the inputs as ``forward(*xs)``; ``TorchSplit`` and ``TorchChunk``
    return a tuple; ``TorchReshape`` keeps the batch axis as chainrule's Reshape does."""
    torch = _import_torch()

    class TorchAdd(torch.nn.Module):
        """``xs[0] + xs[1] + ...`` (broadcasting), the twin of ``chainrule.Add``."""

        def forward(self, *xs: "torch.Tensor") -> "torch.Tensor":
            out = xs[0]
            for x in xs[1:]:
                out = out + x
            return out

    class TorchMultiply(torch.nn.Module):
        """``xs[0] * xs[1] * ...`` (broadcasting), the twin of ``chainrule.Multiply``."""

        def forward(self, *xs: "torch.Tensor") -> "torch.Tensor":
            out = xs[0]
            for x in xs[1:]:
                out = out * x
            return out

    class TorchConcat(torch.nn.Module):
        """``torch.cat(xs, dim)``, the twin of ``chainrule.Concat``."""

        def __init__(self, dim: int = 1) -> None:
            super().__init__()
            self.dim = dim

        def forward(self, *xs: "torch.Tensor") -> "torch.Tensor":
            return torch.cat(xs, self.dim)

        def extra_repr(self) -> str:
            return f"dim={self.dim}"

    class TorchSplit(torch.nn.Module):
        """``torch.split(x, split_size_or_sections, dim)`` as a tuple, the twin of
        ``chainrule.Split``."""

        def __init__(self, split_size_or_sections: Any, dim: int = 1) -> None:
            super().__init__()
            self.split_size_or_sections = split_size_or_sections
            self.dim = dim

        def forward(self, x: "torch.Tensor") -> tuple:
            sections = self.split_size_or_sections
            return tuple(torch.split(x, sections if isinstance(sections, int) else list(sections),
                                     self.dim))

        def extra_repr(self) -> str:
            return f"split_size_or_sections={self.split_size_or_sections}, dim={self.dim}"

    class TorchChunk(torch.nn.Module):
        """``torch.chunk(x, chunks, dim)`` as a tuple, the twin of ``chainrule.Chunk``."""

        def __init__(self, chunks: int, dim: int = 1) -> None:
            super().__init__()
            self.chunks = chunks
            self.dim = dim

        def forward(self, x: "torch.Tensor") -> tuple:
            return tuple(torch.chunk(x, self.chunks, self.dim))

        def extra_repr(self) -> str:
            return f"chunks={self.chunks}, dim={self.dim}"

    class TorchReshape(torch.nn.Module):
        """``x.reshape(N, *shape)``: the batch axis kept, the twin of ``chainrule.Reshape``."""

        def __init__(self, shape: tuple) -> None:
            super().__init__()
            self.shape = tuple(shape)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return x.reshape(x.shape[0], *self.shape)

        def extra_repr(self) -> str:
            return f"shape={self.shape}"

    class TorchPermute(torch.nn.Module):
        """``x.permute(dims)`` (dims over all axes, the batch's included), the twin of
        ``chainrule.Permute``."""

        def __init__(self, dims: tuple) -> None:
            super().__init__()
            self.dims = tuple(dims)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return x.permute(self.dims)

        def extra_repr(self) -> str:
            return f"dims={self.dims}"

    class TorchMean(torch.nn.Module):
        """``x.mean(dims, keepdim)``, the twin of ``chainrule.Mean``."""

        def __init__(self, dims: Any, keepdim: bool = False) -> None:
            super().__init__()
            self.dims = dims
            self.keepdim = keepdim

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return x.mean(dim=self.dims, keepdim=self.keepdim)

        def extra_repr(self) -> str:
            return f"dims={self.dims}" + (", keepdim=True" if self.keepdim else "")

    class TorchConstantArithmetic(torch.nn.Module):
        """``x op value`` with a constant buffer, the twin of chainrule's
        ``ConstantArithmetic`` (from_onnx's constant operands)."""

        def __init__(self, op: str, shape: Any, dtype: Any = None) -> None:
            super().__init__()
            self.op = op
            self.register_buffer("value", torch.zeros(tuple(shape), dtype=dtype))

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            c = self.value
            return {"add": lambda: x + c, "sub": lambda: x - c, "rsub": lambda: c - x,
                    "mul": lambda: x * c, "div": lambda: x / c, "rdiv": lambda: c / x}[self.op]()

        def extra_repr(self) -> str:
            return f"op={self.op!r}, shape={tuple(self.value.shape)}"

    classes = {cls.__name__: cls for cls in (TorchAdd, TorchMultiply, TorchConcat, TorchSplit,
                                             TorchChunk, TorchReshape, TorchPermute, TorchMean,
                                             TorchConstantArithmetic)}
    for name, cls in classes.items():   # found again by pickle through __getattr__
        cls.__module__ = __name__
        cls.__qualname__ = name
    return classes


def __getattr__(name: str) -> Any:
    if name == "TorchResidual":
        return _residual_class()
    if name in ("TorchAdd", "TorchMultiply", "TorchConcat", "TorchSplit", "TorchChunk",
                "TorchReshape", "TorchPermute", "TorchMean", "TorchConstantArithmetic"):
        return _merge_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------- helpers
def _torch_name(module: Any) -> str:
    """``torch.nn.GELU`` rather than ``torch.nn.modules.activation.GELU``: the name users
    write; other classes get their full ``module.qualname``."""
    cls = type(module)
    if cls.__module__.startswith("torch.nn.modules"):
        return f"torch.nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _unsupported(path: str, what: str, why: str) -> UnsupportedModuleError:
    return UnsupportedModuleError(f"{shown_path(path)}: {what} {why}")


def _require_options(module: Any, path: str, unsupported: dict[str, bool]) -> None:
    """Raise for the first option set to something chainrule cannot do; ``unsupported``
    maps the option as shown (``"ceil_mode=True"``) to whether it is set so."""
    for option, bad in unsupported.items():
        if bad:
            raise _unsupported(path, f"{_torch_name(module)}({option})",
                               "is not supported by chainrule")


_NP_DTYPES = {"torch.float32": np.dtype(np.float32), "torch.float64": np.dtype(np.float64)}


def _module_dtype(module: Any, path: str) -> np.dtype | None:
    """The one floating dtype of a module's own parameters and buffers (None if it has
    none); chainrule layers are float32 or float64, so anything else is refused."""
    dtypes = {str(t.dtype) for t in list(module.parameters(recurse=False))
              + list(module.buffers(recurse=False)) if t.is_floating_point()}
    if not dtypes:
        return None
    if len(dtypes) > 1 or not dtypes <= set(_NP_DTYPES):
        raise _unsupported(path, f"{_torch_name(module)} with dtype {', '.join(sorted(dtypes))}",
                           "is not supported (chainrule layers are float32 or float64)")
    return _NP_DTYPES[dtypes.pop()]


def _numpy_state(module: Any) -> dict[str, np.ndarray]:
    # .copy(): numpy() shares memory with the tensor; the chainrule model must not.
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def _set_mode(layer: Any, training: bool) -> None:
    """Set the train/eval flag of this module alone (``train()``/``eval()`` recurse, but a
    model may hold children in a different mode, and the conversion keeps that)."""
    object.__setattr__(layer, "training", bool(training))


def _float_dtype(layer: L.Layer) -> np.dtype:
    return layer.dtype if layer.dtype is not None else np.dtype(np.float32)


# ---------------------------------------------------------------------------- torch -> chainrule
def _upsample_from_torch(cls: type, m: Any, path: str, **options: Any) -> L.Layer:
    """torch's Upsample (or a subclass) as ``cls``; modes chainrule lacks are refused, and
    so is an option set its torch twin would refuse at its first forward."""
    _require_options(m, path, {f"mode={m.mode!r}": m.mode not in ("nearest", "nearest-exact",
                                                                 "linear", "bilinear")})
    size = tuple(m.size) if isinstance(m.size, list) else m.size
    try:
        return cls(size=size, scale_factor=m.scale_factor, **options)
    except (TypeError, ValueError) as err:
        raise _unsupported(path, f"{_torch_name(m)}({m.extra_repr()})",
                           f"cannot be converted: {err}") from err


def _leaf_from_torch(torch: Any) -> dict[type, Callable[[Any, str], L.Layer]]:
    """torch.nn leaf class -> function(module, path) building the chainrule layer
    (weights are loaded afterwards from the module's state dict)."""
    nn = torch.nn
    merge = _merge_classes()

    def conv(cls: type) -> Callable[[Any, str], L.Layer]:
        """Conv2d and Conv1d: the same arguments, as pairs or 1-tuples."""
        def build(m: Any, path: str) -> L.Layer:
            _require_options(m, path,
                             {f"padding_mode={m.padding_mode!r}": m.padding_mode != "zeros"})
            return cls(m.in_channels, m.out_channels, tuple(m.kernel_size), stride=tuple(m.stride),
                       padding=m.padding if isinstance(m.padding, str) else tuple(m.padding),
                       dilation=tuple(m.dilation), groups=m.groups, bias=m.bias is not None,
                       dtype=_module_dtype(m, path), rng=0)
        return build

    def conv_transpose(m: Any, path: str) -> L.Layer:
        # torch builds a ConvTranspose2d with padding="same" but cannot run it
        _require_options(m, path, {f"padding={m.padding!r}": isinstance(m.padding, str),
                                   f"padding_mode={m.padding_mode!r}": m.padding_mode != "zeros"})
        return L.ConvTranspose2d(m.in_channels, m.out_channels, tuple(m.kernel_size),
                                 stride=tuple(m.stride), padding=tuple(m.padding),
                                 output_padding=tuple(m.output_padding), groups=m.groups,
                                 bias=m.bias is not None, dilation=tuple(m.dilation),
                                 dtype=_module_dtype(m, path), rng=0)

    def linear(m: Any, path: str) -> L.Layer:
        return L.Linear(m.in_features, m.out_features, bias=m.bias is not None,
                        dtype=_module_dtype(m, path), rng=0)

    def max_pool(cls: type) -> Callable[[Any, str], L.Layer]:
        def build(m: Any, path: str) -> L.Layer:
            # chainrule layers return one array: no (values, indices) pair.
            _require_options(m, path, {f"return_indices={m.return_indices!r}":
                                       bool(m.return_indices)})
            return cls(m.kernel_size, stride=m.stride or None, padding=m.padding,
                       dilation=m.dilation, ceil_mode=m.ceil_mode)
        return build

    def avg_pool(m: Any, path: str) -> L.Layer:
        divisor = m.divisor_override
        # torch takes any int here; a zero divisor fails in its forward, a negative one
        # flips the sign: chainrule accepts positive divisors only.
        _require_options(m, path, {f"divisor_override={divisor!r}":
                                   divisor is not None and not divisor > 0})
        return L.AvgPool2d(m.kernel_size, stride=m.stride or None, padding=m.padding,
                           ceil_mode=m.ceil_mode, count_include_pad=m.count_include_pad,
                           divisor_override=divisor)

    def avg_pool1d(m: Any, path: str) -> L.Layer:
        return L.AvgPool1d(m.kernel_size, stride=m.stride or None, padding=m.padding,
                           ceil_mode=m.ceil_mode, count_include_pad=m.count_include_pad)

    def adaptive_size(size: Any) -> Any:
        return tuple(size) if isinstance(size, (tuple, list)) else size

    def adaptive_max_pool(m: Any, path: str) -> L.Layer:
        _require_options(m, path, {f"return_indices={m.return_indices!r}": bool(m.return_indices)})
        return L.AdaptiveMaxPool2d(adaptive_size(m.output_size))

    # padding and shape
    def pad4(m: Any, path: str) -> tuple:
        # torch takes any even-length tuple (it then pads fewer or more axes); chainrule's
        # 2-D pads take (left, right, top, bottom).
        _require_options(m, path, {f"padding={m.padding!r}": len(m.padding) != 4})
        return tuple(m.padding)

    def constant_pad(m: Any, path: str) -> L.Layer:
        _require_options(m, path, {f"value={m.value!r}": not np.isfinite(m.value)})
        return L.ConstantPad2d(pad4(m, path), m.value)

    def batch_norm(cls: type) -> Callable[[Any, str], L.Layer]:
        def build(m: Any, path: str) -> L.Layer:
            # torch >= 2.x can drop the shift alone (affine=True, bias=False); chainrule cannot.
            _require_options(m, path, {"bias=False": m.affine and m.bias is None})
            return cls(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                       track_running_stats=m.track_running_stats,
                       dtype=_module_dtype(m, path) or np.float32)
        return build

    return {
        # convolution
        nn.Conv2d: conv(L.Conv2d),
        nn.Conv1d: conv(L.Conv1d),
        nn.ConvTranspose2d: conv_transpose,
        # linear and shape
        nn.Linear: linear,
        nn.Flatten: lambda m, path: L.Flatten(m.start_dim, m.end_dim),
        nn.Unflatten: lambda m, path: L.Unflatten(m.dim, tuple(m.unflattened_size)),
        # pooling
        nn.MaxPool2d: max_pool(L.MaxPool2d),
        nn.AvgPool2d: avg_pool,
        nn.AdaptiveAvgPool2d: lambda m, path: L.AdaptiveAvgPool2d(adaptive_size(m.output_size)),
        nn.MaxPool1d: max_pool(L.MaxPool1d),
        nn.AvgPool1d: avg_pool1d,
        nn.AdaptiveMaxPool2d: adaptive_max_pool,
        # normalization
        nn.BatchNorm1d: batch_norm(L.BatchNorm1d),
        nn.BatchNorm2d: batch_norm(L.BatchNorm2d),
        nn.SyncBatchNorm: batch_norm(L.SyncBatchNorm),
        nn.GroupNorm: lambda m, path: L.GroupNorm(
            m.num_groups, m.num_channels, eps=m.eps, affine=m.affine,
            dtype=_module_dtype(m, path) or np.float32, bias=m.bias is not None),
        nn.LayerNorm: lambda m, path: L.LayerNorm(
            m.normalized_shape, eps=m.eps, elementwise_affine=m.elementwise_affine,
            bias=m.bias is not None, dtype=_module_dtype(m, path) or np.float32),
        nn.InstanceNorm2d: lambda m, path: L.InstanceNorm2d(
            m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
            track_running_stats=m.track_running_stats,
            dtype=_module_dtype(m, path) or np.float32, bias=m.bias is not None),
        nn.LocalResponseNorm: lambda m, path: L.LocalResponseNorm(m.size, alpha=m.alpha,
                                                                  beta=m.beta, k=m.k),
        # activations
        nn.ReLU: lambda m, path: L.ReLU(),
        nn.LeakyReLU: lambda m, path: L.LeakyReLU(m.negative_slope),
        nn.Sigmoid: lambda m, path: L.Sigmoid(),
        nn.Tanh: lambda m, path: L.Tanh(),
        nn.ReLU6: lambda m, path: L.ReLU6(),
        nn.Hardtanh: lambda m, path: L.Hardtanh(m.min_val, m.max_val),
        nn.ELU: lambda m, path: L.ELU(m.alpha),
        nn.SELU: lambda m, path: L.SELU(),
        nn.CELU: lambda m, path: L.CELU(m.alpha),
        nn.GELU: lambda m, path: L.GELU(m.approximate),
        nn.SiLU: lambda m, path: L.SiLU(),
        nn.Mish: lambda m, path: L.Mish(),
        nn.Hardswish: lambda m, path: L.Hardswish(),
        nn.Hardsigmoid: lambda m, path: L.Hardsigmoid(),
        nn.Softplus: lambda m, path: L.Softplus(m.beta, m.threshold),
        nn.PReLU: lambda m, path: L.PReLU(m.num_parameters, init=m.init,
                                          dtype=_module_dtype(m, path) or np.float32),
        nn.Softmax: lambda m, path: L.Softmax(m.dim),
        nn.LogSoftmax: lambda m, path: L.LogSoftmax(m.dim),
        nn.Identity: lambda m, path: L.Identity(),
        # regularization
        nn.Dropout: lambda m, path: L.Dropout(m.p),
        nn.Dropout2d: lambda m, path: L.Dropout2d(m.p, inplace=bool(m.inplace)),
        # resampling
        nn.Upsample: lambda m, path: _upsample_from_torch(
            L.Upsample, m, path, mode=m.mode, align_corners=m.align_corners,
            recompute_scale_factor=m.recompute_scale_factor),
        nn.UpsamplingNearest2d: lambda m, path: _upsample_from_torch(L.UpsamplingNearest2d, m,
                                                                     path),
        nn.UpsamplingBilinear2d: lambda m, path: _upsample_from_torch(L.UpsamplingBilinear2d, m,
                                                                      path),
        nn.PixelShuffle: lambda m, path: L.PixelShuffle(m.upscale_factor),
        nn.PixelUnshuffle: lambda m, path: L.PixelUnshuffle(m.downscale_factor),
        nn.ChannelShuffle: lambda m, path: L.ChannelShuffle(m.groups),
        # padding
        nn.ZeroPad2d: lambda m, path: L.ZeroPad2d(pad4(m, path)),
        nn.ConstantPad2d: constant_pad,
        nn.ReflectionPad2d: lambda m, path: L.ReflectionPad2d(pad4(m, path)),
        nn.ReplicationPad2d: lambda m, path: L.ReplicationPad2d(pad4(m, path)),
        # merge and shape (chainrule's own torch modules: torch.nn has none)
        merge["TorchAdd"]: lambda m, path: L.Add(),
        merge["TorchMultiply"]: lambda m, path: L.Multiply(),
        merge["TorchConcat"]: lambda m, path: L.Concat(m.dim),
        merge["TorchSplit"]: lambda m, path: L.Split(m.split_size_or_sections, m.dim),
        merge["TorchChunk"]: lambda m, path: L.Chunk(m.chunks, m.dim),
        merge["TorchReshape"]: lambda m, path: L.Reshape(m.shape),
        merge["TorchPermute"]: lambda m, path: L.Permute(m.dims),
        merge["TorchMean"]: lambda m, path: L.Mean(m.dims, m.keepdim),
        merge["TorchConstantArithmetic"]: lambda m, path: ConstantArithmetic(
            m.op, tuple(m.value.shape), dtype=str(m.value.dtype).removeprefix("torch.")),
    }


def from_torch(module: "torch.nn.Module", input_shape: Any = None) -> L.Layer:
    """Convert a torch module into the equivalent chainrule layer, weights included.

    A ``torch.nn.Sequential`` or ``TorchResidual`` of supported modules (nested ones
    too), or one supported module, converts structurally into ``Sequential``,
    ``Residual`` or the layer. Any other module (a ResNet, a DenseNet, a
    ``torch.fx.GraphModule``) is traced with ``torch.fx`` into a ``chainrule.Graph``
    whose layers are named by torch's module paths (see ``chainrule.interop.fx`` for the
    functions and methods a trace may contain).

    Args:
        module: a ``torch.nn.Module``; the supported layers are Conv2d and Conv1d (padding_mode="zeros"),
            ConvTranspose2d, MaxPool1d, MaxPool2d and AdaptiveMaxPool2d (no
            return_indices), AvgPool1d, AvgPool2d (divisor_override > 0 if any),
            AdaptiveAvgPool2d, Linear,
            Flatten, ReLU, LeakyReLU, Sigmoid, Tanh, ReLU6, Hardtanh, ELU, SELU, CELU, GELU,
            SiLU, Mish, Hardswish, Hardsigmoid, Softplus, PReLU, Softmax, LogSoftmax, Identity
            (``inplace`` is ignored: same outputs), Dropout, BatchNorm1d, BatchNorm2d,
            GroupNorm, LayerNorm, InstanceNorm2d, LocalResponseNorm;
            ZeroPad2d, ConstantPad2d (a finite value), ReflectionPad2d, ReplicationPad2d
            (padding of four ints), Unflatten, Dropout2d; Upsample (modes nearest,
            nearest-exact, linear, bilinear), UpsamplingNearest2d, UpsamplingBilinear2d,
            PixelShuffle, PixelUnshuffle, ChannelShuffle; this module's TorchAdd,
            TorchMultiply, TorchConcat, TorchSplit, TorchChunk, TorchReshape,
            TorchPermute, TorchMean (what ``to_torch`` makes of the merge and shape layers);
            float32 or float64, on any device.
        input_shape: for a traced module, one sample's shape without the batch axis, e.g.
            ``(3, 224, 224)`` (a list of shapes for several inputs); the graph's input
            shape. Needed where the trace reads sizes (``x.size(1)``) or splits a tensor;
            without it a GraphModule from ``to_torch`` keeps its graph's shapes, and
            other inputs are of unknown shape. Ignored for a structural conversion.

    Returns:
        A chainrule layer with the same child names, state-dict keys and values, per-module
        train/eval mode and per-layer dtype. It shares no memory with ``module``.

    Raises:
        UnsupportedModuleError: naming the first (depth-first) module that cannot be
            converted exactly and its path, e.g. ``"3: torch.nn.LSTM ..."``; for a
            traced module, the fx node, its op and its target.
    """
    torch = _import_torch()
    if isinstance(module, torch.fx.GraphModule) or not _is_leaf_module(module):
        from .fx import graph_from_torch   # imports this module: imported here
        return graph_from_torch(module, input_shape)
    return _convert_from(module, "", torch, _leaf_from_torch(torch), _residual_class())


@functools.lru_cache(maxsize=None)
def _leaf_classes() -> frozenset:
    return frozenset(_leaf_from_torch(_import_torch()))


def _is_leaf_module(module: Any) -> bool:
    """Whether ``module`` converts whole (without tracing): a supported leaf class, a
    ``torch.fx.GraphModule`` (a nested graph), or a Sequential/TorchResidual of such;
    and torch.nn's other modules, refused by name rather than traced into."""
    torch = _import_torch()
    kind = type(module)
    if kind is torch.nn.Sequential or kind is _residual_class():
        return all(_is_leaf_module(child) for child in module.children())
    if kind in _leaf_classes() or isinstance(module, torch.fx.GraphModule):
        return True
    return kind.__module__.startswith("torch.nn.") and not isinstance(
        module, (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict))


def _convert_from(module: Any, path: str, torch: Any, leaves: dict, residual_cls: type) -> L.Layer:
    kind = type(module)
    if kind is torch.nn.Sequential:
        layer: L.Layer = L.Sequential()
        for name, child in module.named_children():
            if hasattr(layer, name):
                raise _unsupported(child_path(path, name), "a child named",
                                   f"{name!r} clashes with a chainrule.Sequential attribute; "
                                   "rename it")
            setattr(layer, name, _convert_from(child, child_path(path, name), torch, leaves,
                                               residual_cls))
    elif kind is residual_cls:
        block = _convert_from(module.block, child_path(path, "block"), torch, leaves, residual_cls)
        shortcut = None if module.shortcut is None else _convert_from(
            module.shortcut, child_path(path, "shortcut"), torch, leaves, residual_cls)
        layer = L.Residual(block, shortcut)
    elif kind in leaves:
        layer = leaves[kind](module, path)
        layer.load_state_dict(_numpy_state(module))
    elif isinstance(module, torch.fx.GraphModule):
        from .fx import _trace   # imports this module: imported here
        layer = _trace(module, None, path)
    else:
        raise _unsupported(path, _torch_name(module),
                           "is not supported: chainrule converts torch.nn.Sequential, "
                           "TorchResidual and " + ", ".join(
                               sorted(_torch_name_of_class(c) for c in leaves)))
    _set_mode(layer, module.training)
    return layer


def _torch_name_of_class(cls: type) -> str:
    if cls.__module__ == __name__:         # chainrule's own torch modules (TorchConcat, ...)
        return f"{cls.__module__}.{cls.__qualname__}"
    return f"torch.nn.{cls.__name__}"


# ---------------------------------------------------------------------------- chainrule -> torch
def _leaf_to_torch(torch: Any) -> dict[type, Callable[[Any, Any], Any]]:
    """chainrule leaf class -> function(layer, torch dtype) building the torch module
    (weights are loaded afterwards from the layer's state dict)."""
    nn = torch.nn
    merge = _merge_classes()

    def conv(cls: type) -> Callable[[Any, Any], Any]:
        """Conv2d and Conv1d: the same arguments, as pairs or 1-tuples."""
        def build(c: Any, dtype: Any) -> Any:
            return cls(c.in_channels, c.out_channels, c.kernel_size, stride=c.stride,
                       padding=c.padding, dilation=c.dilation, groups=c.groups,
                       bias=c.bias is not None, dtype=dtype)
        return build

    def max_pool(cls: type) -> Callable[[Any, Any], Any]:
        def build(c: Any, dtype: Any) -> Any:
            return cls(c.kernel_size, stride=c.stride, padding=c.padding, dilation=c.dilation,
                       ceil_mode=c.ceil_mode)
        return build

    def conv_transpose(c: L.ConvTranspose2d, dtype: Any) -> Any:
        return nn.ConvTranspose2d(c.in_channels, c.out_channels, c.kernel_size, stride=c.stride,
                                  padding=c.padding, output_padding=c.output_padding,
                                  groups=c.groups, bias=c.bias is not None,
                                  dilation=c.dilation, dtype=dtype)

    def batch_norm(cls: type) -> Callable[[Any, Any], Any]:
        def build(c: Any, dtype: Any) -> Any:
            return cls(c.num_features, eps=c.eps, momentum=c.momentum, affine=c.affine,
                       track_running_stats=c.track_running_stats, dtype=dtype)
        return build

    return {
        # convolution
        L.Conv2d: conv(nn.Conv2d),
        L.Conv1d: conv(nn.Conv1d),
        L.ConvTranspose2d: conv_transpose,
        # linear and shape
        L.Linear: lambda c, dtype: nn.Linear(c.in_features, c.out_features,
                                             bias=c.bias is not None, dtype=dtype),
        L.Flatten: lambda c, dtype: nn.Flatten(c.start_dim, c.end_dim),
        L.Unflatten: lambda c, dtype: nn.Unflatten(c.dim, c.unflattened_size),
        # pooling
        L.MaxPool2d: max_pool(nn.MaxPool2d),
        L.AvgPool2d: lambda c, dtype: nn.AvgPool2d(c.kernel_size, stride=c.stride,
                                                   padding=c.padding, ceil_mode=c.ceil_mode,
                                                   count_include_pad=c.count_include_pad,
                                                   divisor_override=c.divisor_override),
        L.AdaptiveAvgPool2d: lambda c, dtype: nn.AdaptiveAvgPool2d(c.output_size),
        L.MaxPool1d: max_pool(nn.MaxPool1d),
        L.AvgPool1d: lambda c, dtype: nn.AvgPool1d(c.kernel_size, stride=c.stride,
                                                   padding=c.padding, ceil_mode=c.ceil_mode,
                                                   count_include_pad=c.count_include_pad),
        L.AdaptiveMaxPool2d: lambda c, dtype: nn.AdaptiveMaxPool2d(c.output_size),
        # normalization
        L.BatchNorm1d: batch_norm(nn.BatchNorm1d),
        L.BatchNorm2d: batch_norm(nn.BatchNorm2d),
        L.SyncBatchNorm: batch_norm(nn.SyncBatchNorm),
        L.GroupNorm: lambda c, dtype: nn.GroupNorm(c.num_groups, c.num_channels, eps=c.eps,
                                                   affine=c.affine, bias=c.bias is not None,
                                                   dtype=dtype),
        L.LayerNorm: lambda c, dtype: nn.LayerNorm(c.normalized_shape, eps=c.eps,
                                                   elementwise_affine=c.elementwise_affine,
                                                   bias=c.bias is not None, dtype=dtype),
        L.InstanceNorm2d: lambda c, dtype: nn.InstanceNorm2d(
            c.num_features, eps=c.eps, momentum=c.momentum, affine=c.affine,
            track_running_stats=c.track_running_stats, bias=c.bias is not None, dtype=dtype),
        L.LocalResponseNorm: lambda c, dtype: nn.LocalResponseNorm(c.size, alpha=c.alpha,
                                                                   beta=c.beta, k=c.k),
        # activations
        L.ReLU: lambda c, dtype: nn.ReLU(),
        L.LeakyReLU: lambda c, dtype: nn.LeakyReLU(c.negative_slope),
        L.Sigmoid: lambda c, dtype: nn.Sigmoid(),
        L.Tanh: lambda c, dtype: nn.Tanh(),
        L.ReLU6: lambda c, dtype: nn.ReLU6(),
        L.Hardtanh: lambda c, dtype: nn.Hardtanh(c.min_val, c.max_val),
        L.ELU: lambda c, dtype: nn.ELU(c.alpha),
        L.SELU: lambda c, dtype: nn.SELU(),
        L.CELU: lambda c, dtype: nn.CELU(c.alpha),
        L.GELU: lambda c, dtype: nn.GELU(approximate=c.approximate),
        L.SiLU: lambda c, dtype: nn.SiLU(),
        L.Mish: lambda c, dtype: nn.Mish(),
        L.Hardswish: lambda c, dtype: nn.Hardswish(),
        L.Hardsigmoid: lambda c, dtype: nn.Hardsigmoid(),
        L.Softplus: lambda c, dtype: nn.Softplus(c.beta, c.threshold),
        L.PReLU: lambda c, dtype: nn.PReLU(c.num_parameters, init=c.init, dtype=dtype),
        L.Softmax: lambda c, dtype: nn.Softmax(c.dim),
        L.LogSoftmax: lambda c, dtype: nn.LogSoftmax(c.dim),
        L.Identity: lambda c, dtype: nn.Identity(),
        # regularization
        L.Dropout: lambda c, dtype: nn.Dropout(c.p),
        L.Dropout2d: lambda c, dtype: nn.Dropout2d(c.p, inplace=c.inplace),
        # resampling
        L.Upsample: lambda c, dtype: nn.Upsample(
            size=c.size, scale_factor=c.scale_factor, mode=c.mode, align_corners=c.align_corners,
            recompute_scale_factor=c.recompute_scale_factor),
        L.UpsamplingNearest2d: lambda c, dtype: nn.UpsamplingNearest2d(c.size, c.scale_factor),
        L.UpsamplingBilinear2d: lambda c, dtype: nn.UpsamplingBilinear2d(c.size, c.scale_factor),
        L.PixelShuffle: lambda c, dtype: nn.PixelShuffle(c.upscale_factor),
        L.PixelUnshuffle: lambda c, dtype: nn.PixelUnshuffle(c.downscale_factor),
        L.ChannelShuffle: lambda c, dtype: nn.ChannelShuffle(c.groups),
        # padding
        L.ZeroPad2d: lambda c, dtype: nn.ZeroPad2d(c.padding),
        L.ConstantPad2d: lambda c, dtype: nn.ConstantPad2d(c.padding, c.value),
        L.ReflectionPad2d: lambda c, dtype: nn.ReflectionPad2d(c.padding),
        L.ReplicationPad2d: lambda c, dtype: nn.ReplicationPad2d(c.padding),
        # merge and shape
        L.Add: lambda c, dtype: merge["TorchAdd"](),
        L.Multiply: lambda c, dtype: merge["TorchMultiply"](),
        L.Concat: lambda c, dtype: merge["TorchConcat"](c.dim),
        L.Split: lambda c, dtype: merge["TorchSplit"](c.split_size_or_sections, c.dim),
        L.Chunk: lambda c, dtype: merge["TorchChunk"](c.chunks, c.dim),
        L.Reshape: lambda c, dtype: merge["TorchReshape"](c.shape),
        L.Permute: lambda c, dtype: merge["TorchPermute"](c.dims),
        L.Mean: lambda c, dtype: merge["TorchMean"](c.dims, c.keepdim),
        ConstantArithmetic: lambda c, dtype: merge["TorchConstantArithmetic"](
            c.op, c.shape, dtype=dtype),
    }


def to_torch(model: L.Layer) -> "torch.nn.Module":
    """Convert a chainrule layer into the equivalent torch module, weights included.

    ``Sequential`` becomes ``torch.nn.Sequential`` (same child names), ``Residual``
    becomes ``TorchResidual``, the merge and shape layers (``Add``, ``Concat``, ...) this
    module's ``TorchAdd``, ``TorchConcat``, ..., and each other layer its ``torch.nn``
    namesake with the same options, dtype, train/eval mode, parameters and buffers, on the
    CPU. The module shares no memory with ``model``.

    Raises:
        UnsupportedModuleError: for a layer class chainrule does not ship (e.g. a user's
            own subclass), naming its path.
    """
    torch = _import_torch()
    return _convert_to(model, "", torch, _leaf_to_torch(torch), _residual_class())


_TORCH_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}


def _convert_to(layer: L.Layer, path: str, torch: Any, leaves: dict, residual_cls: type) -> Any:
    kind = type(layer)
    if kind is L.Sequential:
        module = torch.nn.Sequential()
        for name, child in layer.named_children():
            module.add_module(name, _convert_to(child, child_path(path, name), torch, leaves,
                                                residual_cls))
    elif kind is L.Residual:
        block = _convert_to(layer.block, child_path(path, "block"), torch, leaves, residual_cls)
        shortcut = None if layer.shortcut is None else _convert_to(
            layer.shortcut, child_path(path, "shortcut"), torch, leaves, residual_cls)
        module = residual_cls(block, shortcut)
    elif isinstance(layer, L.Graph) and kind.forward is L.Graph.forward:
        from .fx import graph_to_torch   # imports this module: imported here
        module = graph_to_torch(layer, path)
    elif kind in leaves:
        dtype = getattr(torch, _TORCH_DTYPES[_float_dtype(layer)])
        module = leaves[kind](layer, dtype)
        state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in layer.state_dict().items()}
        module.load_state_dict(state)
    else:
        raise _unsupported(path, f"{kind.__module__}.{kind.__qualname__}",
                           "has no torch counterpart: to_torch converts chainrule's own layer "
                           "classes (Sequential, Residual, " + ", ".join(
                               sorted(c.__name__ for c in leaves)) + ")")
    module.training = layer.training
    return module
