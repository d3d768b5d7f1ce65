"""Linear (fully connected), Flatten and Unflatten."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..functional._parallel import matmul
from ..parameter import Parameter
from ..random import generator
from ._args import positive_int
from ._movement import MovementLayer
from .base import DEFAULT_DTYPE, Layer, as_float_dtype


class Linear(Layer):
    """``y = x @ W.T + b``.

    Args:
        in_features: size of the input's last axis.
        out_features: size of the output's last axis.
        bias: whether to add a learned bias.
        dtype: float32 (default) or float64.
        rng: Generator or seed for the initial weights (Kaiming-uniform, bound
            1/sqrt(in_features), as torch).

    Shape:
        (N, *, in_features) -> (N, *, out_features); weight (out_features, in_features).

    Backward:
        ``dW = g.T @ x``, ``db = sum(g)``, ``dx = g @ W`` (over all leading axes);
        ``needs_input_grad=False`` skips dx and returns None.
    """

    can_skip_input_grad = True

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: Any = DEFAULT_DTYPE, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        name = f"Linear({in_features}, {out_features})"
        self.in_features = positive_int(in_features, "in_features", name)
        self.out_features = positive_int(out_features, "out_features", name)
        dtype = as_float_dtype(dtype, name)
        self.weight = Parameter(np.zeros((out_features, in_features), dtype))
        self.bias = Parameter(np.zeros(out_features, dtype)) if bias else None
        self._reset_own_parameters(generator(rng))

    def _reset_own_parameters(self, rng: np.random.Generator) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight.data[...] = rng.uniform(-bound, bound, self.weight.shape)
        if self.bias is not None:
            self.bias.data[...] = rng.uniform(-bound, bound, self.bias.shape)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}"
                + (", bias=False" if self.bias is None else ""))

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"{self!r}: expected input of shape (N, *, {self.in_features}), got "
                             f"shape {x.shape}")
        x2 = x.reshape(-1, self.in_features)                             # (M, in)
        out = matmul(x2, self.weight.data.T)                             # (M, out)
        if self.bias is not None:
            out += self.bias.data
        out = out.reshape(*x.shape[:-1], self.out_features)
        if self.keeps_cache:
            self._cache = (x2, x.shape, out.shape)
        return out

    def backward(self, grad: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        x2, x_shape, out_shape = self._take_cache()
        grad = self._check_grad(grad, out_shape, self.weight.dtype)
        g2 = grad.reshape(-1, self.out_features)                         # (M, out)
        self.weight.grad += matmul(g2.T, x2)
        if self.bias is not None:
            self.bias.grad += g2.sum(axis=0)
        if not needs_input_grad:
            return None
        return matmul(g2, self.weight.data).reshape(x_shape)


def _dim_arg(value: Any, name: str, layer: str) -> int:
    """An axis argument: an int (NumPy integers too), never a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{layer}: {name} must be an int, got {value!r}")
    return int(value)


def _axis(dim: int, ndim: int, name: str, layer: Layer, shape: tuple[int, ...]) -> int:
    """``dim`` as a non-negative axis of an ``ndim``-D input, with torch's range rule: a
    0-D input counts as 1-D; anything outside [-ndim, ndim - 1] is an error, not wrapped."""
    rank = max(ndim, 1)
    if not -rank <= dim < rank:
        raise ValueError(f"{layer!r}: {name}={dim} is out of range for input of shape {shape} "
                         f"(expected a dim in [{-rank}, {rank - 1}])")
    return dim % rank


class Flatten(MovementLayer):
    """Flatten axes ``start_dim .. end_dim`` into one (torch's defaults: all but the batch).

    Negative dims count from the end; a dim outside ``[-ndim, ndim - 1]`` or
    ``start_dim`` after ``end_dim`` is a ValueError, as in torch. A 0-D input becomes (1,).

    Shape:
        (N, C, H, W) -> ``(N, C*H*W)``; in general ``(*a, d_start..d_end, *b)`` ->
        ``(*a, d_start*...*d_end, *b)``.

    Backward:
        ``dL/dx = dL/dy.reshape(x.shape)``: the gradient reshaped back, no arithmetic.
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = _dim_arg(start_dim, "start_dim", "Flatten")
        self.end_dim = _dim_arg(end_dim, "end_dim", "Flatten")

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def _move(self, x: np.ndarray) -> np.ndarray:
        start = _axis(self.start_dim, x.ndim, "start_dim", self, x.shape)
        end = _axis(self.end_dim, x.ndim, "end_dim", self, x.shape)
        if start > end:
            raise ValueError(f"{self!r}: start_dim comes after end_dim for input of shape "
                             f"{x.shape} (axes {start} > {end})")
        if x.ndim == 0:
            return x.reshape(1)
        return x.reshape(*x.shape[:start], -1, *x.shape[end + 1:])

    def _move_back(self, grad: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        return grad.reshape(x_shape)


class Unflatten(MovementLayer):
    """Split axis ``dim`` into the axes ``unflattened_size`` (the inverse of Flatten).

    Args:
        dim: the axis to split; negative counts from the end, as in torch.
        unflattened_size: a non-empty tuple (or list) of sizes whose product is the size
            of axis ``dim``; one of them may be -1, inferred from the others.

    Shape:
        ``(*a, d, *b)`` -> ``(*a, *unflattened_size, *b)`` with
        ``prod(unflattened_size) == d``, e.g. ``Unflatten(1, (C, H, W))``: ``(N, C*H*W)`` ->
        (N, C, H, W).

    Backward:
        ``dL/dx = dL/dy.reshape(x.shape)``: the gradient reshaped back, no arithmetic.
    """

    def __init__(self, dim: int, unflattened_size: Any) -> None:
        super().__init__()
        name = f"Unflatten(dim={dim!r}, unflattened_size={unflattened_size!r})"
        self.dim = _dim_arg(dim, "dim", name)
        if not isinstance(unflattened_size, (tuple, list)) or not all(
                isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                for s in unflattened_size):
            raise TypeError(f"{name}: unflattened_size must be a tuple or list of ints, got "
                            f"{unflattened_size!r}")
        sizes = tuple(int(s) for s in unflattened_size)
        if not sizes:
            raise ValueError(f"{name}: unflattened_size must not be empty")
        if any(s < -1 for s in sizes) or sizes.count(-1) > 1:
            raise ValueError(f"{name}: unflattened_size must hold sizes >= 0 and at most one -1 "
                             f"(inferred), got {unflattened_size!r}")
        self.unflattened_size = sizes

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"

    def _sizes(self, d: int, shape: tuple[int, ...]) -> tuple[int, ...]:
        """unflattened_size with its -1 resolved for an axis of size ``d``."""
        known = math.prod(s for s in self.unflattened_size if s != -1)
        if -1 in self.unflattened_size:
            if known == 0 or d % known:
                raise ValueError(f"{self!r}: cannot split an axis of size {d} into "
                                 f"{self.unflattened_size} for input of shape {shape}")
            return tuple(d // known if s == -1 else s for s in self.unflattened_size)
        if known != d:
            raise ValueError(f"{self!r}: the sizes {self.unflattened_size} multiply to {known}, "
                             f"not to the size {d} of axis {self.dim} of input of shape {shape}")
        return self.unflattened_size

    def _move(self, x: np.ndarray) -> np.ndarray:
        if x.ndim == 0:
            raise ValueError(f"{self!r}: expected an input with at least one axis, got shape "
                             f"{x.shape}")
        axis = _axis(self.dim, x.ndim, "dim", self, x.shape)
        sizes = self._sizes(x.shape[axis], x.shape)
        return x.reshape(*x.shape[:axis], *sizes, *x.shape[axis + 1:])

    def _move_back(self, grad: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        return grad.reshape(x_shape)
