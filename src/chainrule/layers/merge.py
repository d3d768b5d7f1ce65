"""Merge, split and shape layers: the joints of graph models.

Add, Multiply and Concat take several inputs and return one output; Split and Chunk take
one input and return several; Reshape, Permute and Mean change one tensor's shape. Their
semantics are torch's (``+``, ``*``, ``torch.cat``, ``torch.split``, ``torch.chunk``,
``permute``, ``mean``), and their ``dim`` arguments count the batch axis as torch's do;
Reshape alone takes a per-sample shape, as Keras' Reshape and torch's Unflatten keep the
batch axis.

The conventions a graph relies on:

- a multi-input layer's ``forward(xs)`` takes a list (or tuple) of arrays and returns one
  array; its ``backward(grad)`` returns a list of input gradients, one per input in
  order, each of its input's shape and dtype;
- a multi-output layer's ``forward(x)`` returns a list of arrays; its ``backward(grads)``
  takes one entry per output, where None stands for an output that received no gradient
  (zeros), and returns the input gradient.

None of them has parameters: the cache holds shapes and dtypes, and Multiply's inputs.
"""

from __future__ import annotations

import math
from functools import reduce
from typing import Any, Sequence

import numpy as np

from ._args import positive_int
from ._movement import MovementLayer
from .base import Layer
from .linear import _axis, _dim_arg


def _unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """dL/dx for an ``x`` of ``shape`` that NumPy broadcast to ``grad.shape``: the
    gradient summed over the leading axes broadcasting added and over the axes where
    ``x`` had size 1 (each such element fed every position along them)."""
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, size in enumerate(shape) if size == 1 and grad.shape[lead + i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def _int_list(value: Any, name: str, layer: str, minimum: int | None) -> tuple[int, ...]:
    """A tuple or list of ints (NumPy integers too, never bools), each at least
    ``minimum`` (None: any), as a tuple."""
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        raise TypeError(f"{layer}: {name} must be a tuple or list of ints, got {value!r}")
    if minimum is not None and any(v < minimum for v in value):
        raise ValueError(f"{layer}: {name} must hold ints >= {minimum}, got {value!r}")
    return tuple(int(v) for v in value)


class _MergeLayer(Layer):
    """A layer of several inputs and one output: ``forward(xs)``, ``backward(grad)`` ->
    one gradient per input."""

    min_inputs = 2

    def _cast_inputs(self, xs: Any) -> list[np.ndarray]:
        """Each input cast as a single-input layer casts it; at least ``min_inputs``."""
        if not isinstance(xs, (list, tuple)):
            raise TypeError(f"{self!r}: forward expects a list or tuple of ndarrays (one per "
                            f"input), got {type(xs).__name__}")
        if len(xs) < self.min_inputs:
            raise ValueError(f"{self!r}: forward expects at least {self.min_inputs} "
                             f"input{'s' if self.min_inputs > 1 else ''}, got {len(xs)}")
        return [self._cast_input(x) for x in xs]

    def _input_grads(self, grads: list[np.ndarray], dtypes: list[np.dtype]) -> list[np.ndarray]:
        """Each input's gradient in its own input's dtype (a float32 input beside a
        float64 one gets a float32 gradient, as torch gives it)."""
        return [g.astype(dt, copy=False) for g, dt in zip(grads, dtypes)]


class Add(_MergeLayer):
    """``y = x_0 + x_1 + ... + x_{n-1}`` (n >= 2), with NumPy's (and torch's) broadcasting.

    Shape:
        Inputs that broadcast together, e.g. (N, C, H, W) and (N, C, H, W), or (N, C, H, W) and
        (C, 1, 1) -> the broadcast shape.

    Backward:
        Every input receives dL/dy, summed over the axes it was broadcast along.
    """

    def forward(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        xs = self._cast_inputs(xs)
        out_shape = _broadcast_shape(self, xs)
        out = xs[0] + xs[1]
        for x in xs[2:]:
            out = out + x            # in order, as torch adds a + b + c
        if self.keeps_cache:
            self._cache = ([x.shape for x in xs], [x.dtype for x in xs], out_shape, out.dtype)
        return out

    def backward(self, grad: np.ndarray) -> list[np.ndarray]:
        shapes, dtypes, out_shape, dtype = self._take_cache()
        grad = self._check_grad(grad, out_shape, dtype)
        return self._input_grads([_unbroadcast(grad, s) for s in shapes], dtypes)


class Multiply(_MergeLayer):
    """``y = x_0 * x_1 * ... * x_{n-1}`` elementwise (n >= 2), with broadcasting; e.g.
    squeeze-excitation's (N, C, 1, 1) gate times an (N, C, H, W) map.

    Shape:
        Inputs that broadcast together -> the broadcast shape.

    Backward:
        ``dL/dx_i = dL/dy * prod_{j != i} x_j``, summed over the axes x_i was broadcast along.
        The product of the others is multiplied out, never ``y / x_i``, so inputs holding zeros
        get exact gradients. The cache holds the inputs.
    """

    def forward(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        xs = self._cast_inputs(xs)
        _broadcast_shape(self, xs)
        out = reduce(np.multiply, xs)
        if self.keeps_cache:
            self._cache = (xs, out.shape, out.dtype)
        return out

    def backward(self, grad: np.ndarray) -> list[np.ndarray]:
        xs, out_shape, dtype = self._take_cache()
        grad = self._check_grad(grad, out_shape, dtype)
        grads = []
        for i, x in enumerate(xs):
            others = reduce(np.multiply, xs[:i] + xs[i + 1:])
            grads.append(_unbroadcast(grad * others, x.shape))
        return self._input_grads(grads, [x.dtype for x in xs])


def _broadcast_shape(layer: Layer, xs: list[np.ndarray]) -> tuple[int, ...]:
    """The shape the inputs broadcast to, or a ValueError naming the layer and the first
    input that does not broadcast with those before it."""
    shape: tuple[int, ...] = ()
    for i, x in enumerate(xs):
        try:
            shape = np.broadcast_shapes(shape, x.shape)
        except ValueError:
            before = ", ".join(str(y.shape) for y in xs[:i])
            raise ValueError(
                f"{layer!r}: input {i} of shape {x.shape} does not broadcast with the inputs "
                f"before it (shapes {before}, together {shape}): sizes must be equal or 1 on "
                "each axis, aligned from the right") from None
    return shape


class Concat(_MergeLayer):
    """``torch.cat(xs, dim)``: the inputs joined along axis ``dim`` (n >= 1 inputs).

    Args:
        dim: the axis to join along, counting the batch axis (1: channels of (N, C, H, W));
            negative counts from the end.

    Shape:
        (N, C_0, H, W), (N, C_1, H, W), ... -> (N, C_0 + C_1 + ..., H, W) for dim=1; every axis
        but ``dim`` must agree.

    Backward:
        dL/dy cut along ``dim`` into pieces of the inputs' sizes, one per input.
    """

    min_inputs = 1   # torch.cat of one tensor is a copy (DenseNet's first layer does it)

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = _dim_arg(dim, "dim", "Concat")

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def forward(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        xs = self._cast_inputs(xs)
        first = xs[0]
        if first.ndim == 0:
            raise ValueError(f"{self!r}: input 0 is 0-D (shape ()); concatenation needs at "
                             "least one axis")
        axis = _axis(self.dim, first.ndim, "dim", self, first.shape)
        for i, x in enumerate(xs[1:], start=1):
            if x.ndim != first.ndim or any(a != b for k, (a, b) in
                                           enumerate(zip(x.shape, first.shape)) if k != axis):
                raise ValueError(
                    f"{self!r}: input {i} of shape {x.shape} does not fit input 0 of shape "
                    f"{first.shape}: every axis but dim={self.dim} (axis {axis}) must match")
        out = np.concatenate(xs, axis=axis)
        if self.keeps_cache:
            sizes = [x.shape[axis] for x in xs]
            self._cache = (axis, sizes, [x.dtype for x in xs], out.shape, out.dtype)
        return out

    def backward(self, grad: np.ndarray) -> list[np.ndarray]:
        axis, sizes, dtypes, out_shape, dtype = self._take_cache()
        grad = self._check_grad(grad, out_shape, dtype)
        pieces = np.split(grad, np.cumsum(sizes)[:-1], axis=axis)
        return self._input_grads(pieces, dtypes)


class _SplitLayer(Layer):
    """A layer of one input and several outputs: slices of the input along ``dim``, of
    the sizes ``_sizes`` gives. ``backward(grads)`` takes one gradient (or None) per
    output."""

    dim: int
    # A graph declared on inputs of unknown shape asks how many outputs there will be.
    multi_output = True

    @property
    def known_num_outputs(self) -> int | None:
        """How many outputs any input gives, or None when it depends on the input's size."""
        sections = getattr(self, "split_size_or_sections", None)
        return len(sections) if isinstance(sections, tuple) else None

    def _sizes(self, size: int, shape: tuple[int, ...]) -> list[int]:
        raise NotImplementedError(f"{type(self).__name__} does not implement _sizes")

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        x = self._cast_input(x)
        if x.ndim == 0:
            raise ValueError(f"{self!r}: expected an input with at least one axis, got shape ()")
        axis = _axis(self.dim, x.ndim, "dim", self, x.shape)
        sizes = self._sizes(x.shape[axis], x.shape)
        outs = np.split(x, np.cumsum(sizes)[:-1], axis=axis)    # views, as torch's
        if self.keeps_cache:
            self._cache = (axis, sizes, x.shape, x.dtype)
        return outs

    def backward(self, grads: Sequence[np.ndarray | None]) -> np.ndarray:
        axis, sizes, x_shape, dtype = self._take_cache()
        if not isinstance(grads, (list, tuple)):
            raise TypeError(f"{self!r}: backward expects a list or tuple with one gradient (or "
                            f"None) per output, got {type(grads).__name__}")
        if len(grads) != len(sizes):
            raise ValueError(f"{self!r}: backward expects {len(sizes)} gradients (one per "
                             f"output, None for none), got {len(grads)}")
        dx = np.empty(x_shape, dtype)
        start = 0
        for i, (g, size) in enumerate(zip(grads, sizes)):
            index = (slice(None),) * axis + (slice(start, start + size),)
            start += size
            if g is None:
                dx[index] = 0
                continue
            shape = x_shape[:axis] + (size,) + x_shape[axis + 1:]
            if not isinstance(g, np.ndarray):
                raise TypeError(f"{self!r}: backward expects an ndarray or None for output {i}, "
                                f"got {type(g).__name__}")
            if g.shape != shape:
                raise ValueError(f"{self!r}: backward expected the gradient of output {i} to "
                                 f"have shape {shape} (the shape of that output), got {g.shape}")
            dx[index] = g
        return dx


class Split(_SplitLayer):
    """``torch.split(x, split_size_or_sections, dim)``: the input cut along ``dim``.

    Args:
        split_size_or_sections: an int s (pieces of size s, the last one smaller when s
            does not divide the axis) or a list of sizes that sum to the axis' size.
        dim: the axis to cut, counting the batch axis; negative counts from the end.

    Shape:
        (N, C, H, W) -> [(N, C_0, H, W), (N, C_1, H, W), ...] for dim=1, a list.

    Backward:
        The outputs' gradients concatenated along ``dim``, zeros for an output whose gradient is
        None.
    """

    def __init__(self, split_size_or_sections: int | Sequence[int], dim: int = 1) -> None:
        super().__init__()
        name = f"Split({split_size_or_sections!r})"
        if isinstance(split_size_or_sections, (tuple, list)):
            sections = _int_list(split_size_or_sections, "split_size_or_sections", name, 0)
            if not sections:
                raise ValueError(f"{name}: split_size_or_sections must not be an empty list")
            self.split_size_or_sections: int | tuple[int, ...] = sections
        else:
            if isinstance(split_size_or_sections, np.integer):
                split_size_or_sections = int(split_size_or_sections)
            if isinstance(split_size_or_sections, bool) or not isinstance(split_size_or_sections,
                                                                          int):
                raise TypeError(f"{name}: split_size_or_sections must be a positive int or a list "
                                f"of ints, got {split_size_or_sections!r}")
            self.split_size_or_sections = positive_int(split_size_or_sections,
                                                       "split_size_or_sections", name)
        self.dim = _dim_arg(dim, "dim", name)

    def extra_repr(self) -> str:
        return f"split_size_or_sections={self.split_size_or_sections}, dim={self.dim}"

    def _sizes(self, size: int, shape: tuple[int, ...]) -> list[int]:
        s = self.split_size_or_sections
        if isinstance(s, int):
            if size == 0:
                return [0]                                   # torch: one empty piece
            return [s] * (size // s) + ([size % s] if size % s else [])
        if sum(s) != size:
            raise ValueError(f"{self!r}: the sections {list(s)} sum to {sum(s)}, not to the size "
                             f"{size} of dim={self.dim} of input of shape {shape}")
        return list(s)


class Chunk(_SplitLayer):
    """``torch.chunk(x, chunks, dim)``: the input cut along ``dim`` into pieces of size
    ``ceil(d / chunks)``, the last one smaller; like torch, that can give FEWER than
    ``chunks`` pieces (d = 5 in 4 chunks: sizes 2, 2, 1). An axis of size 0 gives
    ``chunks`` empty pieces.

    Args:
        chunks: the number of pieces asked for (>= 1).
        dim: the axis to cut, counting the batch axis; negative counts from the end.

    Shape:
        (N, C, H, W) -> a list of (N, C_i, H, W) for dim=1.

    Backward:
        The outputs' gradients concatenated along ``dim``, zeros for None.
    """

    def __init__(self, chunks: int, dim: int = 1) -> None:
        super().__init__()
        name = f"Chunk({chunks!r})"
        self.chunks = positive_int(int(chunks) if isinstance(chunks, np.integer) else chunks,
                                   "chunks", name)
        self.dim = _dim_arg(dim, "dim", name)

    def extra_repr(self) -> str:
        return f"chunks={self.chunks}, dim={self.dim}"

    def _sizes(self, size: int, shape: tuple[int, ...]) -> list[int]:
        if size == 0:
            return [0] * self.chunks
        step = -(-size // self.chunks)                       # ceil(size / chunks)
        return [step] * (size // step) + ([size % step] if size % step else [])


class Reshape(MovementLayer):
    """``y = x.reshape(N, *shape)``: each sample reshaped to ``shape``, the batch kept (as
    Keras' Reshape and torch's Unflatten; unlike torch.reshape, ``shape`` leaves the
    batch axis out).

    Args:
        shape: the per-sample target shape, a tuple or list of sizes >= 0; one of them
            may be -1, inferred from the others.

    Shape:
        ``(N, *s)`` -> ``(N, *shape)`` with ``prod(shape) == prod(s)``, e.g.
        ``Reshape((C, H, W))``: ``(N, C*H*W)`` -> (N, C, H, W).

    Backward:
        ``dL/dx = dL/dy.reshape(x.shape)``: the gradient reshaped back, no arithmetic.
    """

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        name = f"Reshape({shape!r})"
        sizes = _int_list(shape, "shape", name, -1)
        if sizes.count(-1) > 1:
            raise ValueError(f"{name}: shape may hold at most one -1 (inferred), got {shape!r}")
        self.shape = sizes

    def extra_repr(self) -> str:
        return f"shape={self.shape}"

    def _target(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``shape`` with its -1 resolved for a sample of shape ``x_shape[1:]``."""
        count = math.prod(x_shape[1:])
        known = math.prod(s for s in self.shape if s != -1)
        if -1 in self.shape:
            if known == 0 or count % known:
                raise ValueError(f"{self!r}: cannot reshape a sample of shape {x_shape[1:]} "
                                 f"({count} elements) into {self.shape} (input shape {x_shape})")
            return tuple(count // known if s == -1 else s for s in self.shape)
        if known != count:
            raise ValueError(f"{self!r}: cannot reshape a sample of shape {x_shape[1:]} ({count} "
                             f"elements) into {self.shape} ({known} elements; input shape "
                             f"{x_shape})")
        return self.shape

    def _move(self, x: np.ndarray) -> np.ndarray:
        if x.ndim == 0:
            raise ValueError(f"{self!r}: expected an input with a batch axis, got shape ()")
        return x.reshape(x.shape[0], *self._target(x.shape))     # (N, *shape)

    def _move_back(self, grad: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        return grad.reshape(x_shape)


class Permute(MovementLayer):
    """``y = x.permute(dims)``: the axes reordered, torch's ``dims`` over ALL axes with the
    batch included; the batch stays first (``dims[0] == 0``).

    Args:
        dims: a permutation of 0 .. ndim-1 (negative entries count from the end), its
            length the input's number of axes, e.g. (0, 2, 3, 1): NCHW -> NHWC.

    Shape:
        (d_0, d_1, ..., d_{n-1}) -> (d_dims[0], ..., d_dims[n-1]).

    Backward:
        ``dL/dx = dL/dy.transpose(inverse)``, ``inverse = argsort(dims)``: the inverse
        permutation applied to the gradient.
    """

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        name = f"Permute({dims!r})"
        given = _int_list(dims, "dims", name,
                          -len(dims) if isinstance(dims, (tuple, list)) else None)
        n = len(given)
        if n == 0:
            raise ValueError(f"{name}: dims must not be empty")
        if any(d >= n for d in given) or sorted(d % n for d in given) != list(range(n)):
            raise ValueError(f"{name}: dims must be a permutation of 0 .. {n - 1} (negative "
                             f"entries count from the end), got {dims!r}")
        if given[0] != 0:
            raise ValueError(f"{name}: dims[0] must be 0, the batch axis staying first, "
                             f"got {given[0]}")
        self.dims = given
        self._perm = tuple(d % n for d in given)
        self._inverse = tuple(int(i) for i in np.argsort(self._perm))

    def extra_repr(self) -> str:
        return f"dims={self.dims}"

    def _move(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != len(self.dims):
            raise ValueError(f"{self!r}: dims has {len(self.dims)} entries but the input has "
                             f"{x.ndim} axes (shape {x.shape}); dims counts the batch axis")
        return x.transpose(self._perm)                          # a view, as torch's

    def _move_back(self, grad: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        return grad.transpose(self._inverse)


class Mean(Layer):
    """``y = x.mean(dims, keepdim)``: the average over the axes ``dims``, which count the
    batch axis as torch's do (dim 0, the batch, is refused: each sample is averaged on
    its own).

    Args:
        dims: an int or a non-empty tuple (or list) of ints; negative counts from the end.
        keepdim: keep the averaged axes with size 1.

    Shape:
        (N, C, H, W) -> (N, C) for dims=(2, 3) (global average pooling), or (N, C, 1, 1) with
        keepdim=True.

    Backward:
        ``dL/dx = dL/dy / count`` spread evenly over the averaged axes, ``count`` being the
        number of elements each mean averaged.
    """

    def __init__(self, dims: int | Sequence[int], keepdim: bool = False) -> None:
        super().__init__()
        name = f"Mean({dims!r})"
        if isinstance(dims, (tuple, list)):
            if not dims:
                raise ValueError(f"{name}: dims must not be empty (torch would average over "
                                 "every axis, the batch included)")
            axes = _int_list(dims, "dims", name, None)
            if len(set(axes)) != len(axes):
                raise ValueError(f"{name}: dims must not repeat an axis, got {dims!r}")
            self.dims: int | tuple[int, ...] = axes
        else:
            if isinstance(dims, bool) or not isinstance(dims, (int, np.integer)):
                raise TypeError(f"{name}: dims must be an int or a tuple of ints, got {dims!r}")
            self.dims = int(dims)
        if not isinstance(keepdim, (bool, np.bool_)):
            raise TypeError(f"{name}: keepdim must be a bool, got {keepdim!r}")
        self.keepdim = bool(keepdim)
        if 0 in ((self.dims,) if isinstance(self.dims, int) else self.dims):
            raise ValueError(f"{name}: dims must not hold 0, the batch axis (each sample is "
                             "averaged on its own)")

    def extra_repr(self) -> str:
        return f"dims={self.dims}" + (", keepdim=True" if self.keepdim else "")

    def _axes(self, x: np.ndarray) -> tuple[int, ...]:
        dims = (self.dims,) if isinstance(self.dims, int) else self.dims
        axes = tuple(sorted(_axis(d, x.ndim, "dims", self, x.shape) for d in dims))
        if x.ndim == 0 or 0 in axes:
            raise ValueError(f"{self!r}: dims {self.dims} reach axis 0, the batch axis, of "
                             f"input of shape {x.shape}")
        if len(set(axes)) != len(axes):
            raise ValueError(f"{self!r}: dims {self.dims} name the same axis twice for input of "
                             f"shape {x.shape}")
        return axes

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        axes = self._axes(x)
        out = x.mean(axis=axes, keepdims=self.keepdim)
        if self.keeps_cache:
            self._cache = (axes, x.shape, out.shape, out.dtype)
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        axes, x_shape, out_shape, dtype = self._take_cache()
        grad = self._check_grad(grad, out_shape, dtype)
        count = math.prod(x_shape[a] for a in axes)
        if not self.keepdim:
            grad = np.expand_dims(grad, axes)                     # size 1 on each averaged axis
        dx = np.empty(x_shape, dtype)
        dx[...] = grad / dtype.type(count) if count else grad    # broadcast over the axes
        return dx
