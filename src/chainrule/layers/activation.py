"""Element-wise activations. Each backward multiplies the upstream gradient by the
activation's local derivative, written next to its forward."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .base import Layer


class _Elementwise(Layer):
    """An activation y = f(x) whose derivative is computed from what ``_keep`` saves."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        y = self._f(x)
        if self.keeps_cache:
            self._cache = (self._keep(x, y), y.shape, y.dtype)
        return y

    def backward(self, grad: np.ndarray) -> np.ndarray:
        kept, shape, dtype = self._take_cache()
        grad = self._check_grad(grad, shape, dtype)
        return self._grad(grad, kept)

    def _f(self, x):
        raise NotImplementedError

    def _keep(self, x, y):
        raise NotImplementedError

    def _grad(self, grad, kept):
        raise NotImplementedError


class ReLU(_Elementwise):
    """``y = max(x, 0)``; ``dL/dx = dL/dy * [x > 0]`` (the derivative at exactly 0 is 0,
    as in PyTorch). Shape: any -> same.

    The output keeps the input's memory layout (a channel-major batch stays channel-
    major), and large arrays are cut into pieces that the worker threads share."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        y = F.empty_with_layout(x)
        keep = self.keeps_cache
        positive = F.empty_with_layout(x, dtype=np.bool_) if keep else None

        def piece(ix):
            np.maximum(x[ix], 0, out=y[ix])
            if keep:
                np.greater(x[ix], 0, out=positive[ix])

        F.parallel_slices(piece, x.shape, F.outer_axis(y))
        if keep:
            self._cache = (positive, y.shape, y.dtype)
        return y

    def backward(self, grad: np.ndarray) -> np.ndarray:
        positive, shape, dtype = self._take_cache()
        grad = self._check_grad(grad, shape, dtype)
        dx = F.empty_with_layout(positive, dtype=dtype)

        def piece(ix):
            np.multiply(grad[ix], positive[ix], out=dx[ix])

        F.parallel_slices(piece, shape, F.outer_axis(dx))
        return dx


class LeakyReLU(_Elementwise):
    """``y = x if x > 0 else negative_slope * x``;
    ``dL/dx = dL/dy * (1 if x > 0 else negative_slope)``. Shape: any -> same."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"

    def _f(self, x):
        return np.where(x > 0, x, x * x.dtype.type(self.negative_slope))

    def _keep(self, x, y):
        return x > 0

    def _grad(self, grad, positive):
        return np.where(positive, grad, grad * grad.dtype.type(self.negative_slope))


class Sigmoid(_Elementwise):
    """``y = 1 / (1 + exp(-x))``; ``dL/dx = dL/dy * y * (1 - y)``.

    Computed as ``exp(min(x,0)) / (1 + exp(-|x|))`` so that no exponent is positive: no
    overflow for large |x|. Shape: any -> same."""

    def _f(self, x):
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1, e) / (1 + e)

    def _keep(self, x, y):
        return y

    def _grad(self, grad, y):
        return grad * y * (1 - y)


class Tanh(_Elementwise):
    """``y = tanh(x)``; ``dL/dx = dL/dy * (1 - y**2)``. Shape: any -> same."""

    def _f(self, x):
        return np.tanh(x)

    def _keep(self, x, y):
        return y

    def _grad(self, grad, y):
        return grad * (1 - y * y)
