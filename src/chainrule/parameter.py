"""The trainable array: a value and the gradient that backward accumulates into it."""

from __future__ import annotations

import numpy as np


class Parameter:
    """A trainable array owned by a layer.

    Attributes:
        data: the value, an ndarray of any shape.
        grad: dLoss/d(data), same shape and dtype as ``data``. Layers *add* into it in
            ``backward`` (so gradients from several uses of a parameter sum up, as in
            PyTorch); optimizers read it; ``zero_grad`` resets it to zeros.

    Parameters hash by identity, so optimizers can key their state by the object.
    """

    __slots__ = ("data", "grad", "__weakref__")

    def __init__(self, data: np.ndarray) -> None:
        self.data = np.ascontiguousarray(data)
        self.grad = np.zeros_like(self.data)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def zero_grad(self) -> None:
        self.grad.fill(0)

    def to(self, dtype) -> "Parameter":
        """Cast value and gradient in place (the object stays the same, so optimizer
        state keyed by it stays valid)."""
        dtype = np.dtype(dtype)
        if self.data.dtype != dtype:
            self.data = self.data.astype(dtype)
            self.grad = self.grad.astype(dtype)
        return self

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"
