"""Linear (fully connected) and Flatten."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..functional._parallel import matmul
from ..parameter import Parameter
from ._args import positive_int
from .base import DEFAULT_DTYPE, Layer, as_float_dtype


class Linear(Layer):
    """``y = x @ W.T + b``.

    Args:
        in_features, out_features: sizes of the last input and output axis.
        bias: whether to add a learned bias.
        dtype: float32 (default) or float64. rng: Generator or seed for the initial
            weights (Kaiming-uniform, bound 1/sqrt(in_features), as torch).

    Shape: (N, *, in_features) -> (N, *, out_features); weight (out_features, in_features).

    Backward: ``dW = g.T @ x``, ``db = sum(g)``, ``dx = g @ W`` (over all leading axes);
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
        self._reset_own_parameters(np.random.default_rng(rng))

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


class Flatten(Layer):
    """Flatten axes ``start_dim .. end_dim`` into one (torch's defaults: all but the batch).

    Shape: (N, C, H, W) -> (N, C*H*W). Backward reshapes the gradient back.
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        start = self.start_dim % max(x.ndim, 1)
        end = self.end_dim % max(x.ndim, 1)
        if x.ndim == 0 or start > end:
            raise ValueError(f"{self!r}: cannot flatten axes {self.start_dim}..{self.end_dim} of "
                             f"input of shape {x.shape}")
        out = x.reshape(*x.shape[:start], -1, *x.shape[end + 1:])
        if self.keeps_cache:
            self._cache = (x.shape, out.shape, out.dtype)
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        x_shape, out_shape, dtype = self._take_cache()
        return self._check_grad(grad, out_shape, dtype).reshape(x_shape)
