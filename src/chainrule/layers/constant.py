"""ConstantArithmetic: one elementwise operation between the input and a fixed array.

ONNX files hold arithmetic with constant operands (``Add(x, bias)``, ``Mul(x, scale)``,
``Div(x, 255)``, ``Sub(mean, x)``); the catalog's merge layers take only graph tensors,
so ``from_onnx`` puts the constant in this small layer as a buffer: it is saved with the
model (``state_dict`` key ``value``) and never trained. It serves models too that carry
their input scaling inside, e.g. ``(x - mean) / std`` as two layers.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .base import DEFAULT_DTYPE, Layer, as_float_dtype
from .merge import _int_list, _unbroadcast

# op -> the forward formula (x the input, c the constant)
OPS = {"add": "y = x + c", "sub": "y = x - c", "rsub": "y = c - x", "mul": "y = x * c",
       "div": "y = x / c", "rdiv": "y = c / x"}


class ConstantArithmetic(Layer):
    """``y = x op c`` with a constant ``c`` (a buffer), NumPy broadcasting both ways.

    Args:
        op: "add" (x + c), "sub" (x - c), "rsub" (c - x), "mul" (x * c), "div" (x / c)
            or "rdiv" (c / x).
        shape: the shape of ``c``; it broadcasts against the input with the batch axis
            (e.g. (C, 1, 1) for a per-channel constant of an (N, C, H, W) input).
        dtype: float32 (default) or float64. ``c`` starts as zeros: fill ``value``
            (``layer.value[...] = c``) or load a state dict.

    Shape:
        ``x`` (N, *) and ``c`` broadcast together -> the broadcast shape.

    Backward:
        With g = dL/dy, summed back over the axes the input was broadcast along: add, sub:
        ``dL/dx = g``; rsub: ``-g``; mul: ``g * c``; div: ``g / c``; rdiv: ``-g * c / x**2``.
        The constant receives no gradient.
    """

    can_skip_input_grad = False

    def __init__(self, op: str, shape: Sequence[int], dtype: Any = DEFAULT_DTYPE) -> None:
        super().__init__()
        name = f"ConstantArithmetic({op!r})"
        if op not in OPS:
            raise ValueError(f"{name}: op must be one of {', '.join(map(repr, OPS))}, got {op!r}")
        self.op = op
        self.shape = _int_list(list(shape) if isinstance(shape, tuple) else shape, "shape",
                               name, 0)
        self.register_buffer("value", np.zeros(self.shape, as_float_dtype(dtype, name)))

    def extra_repr(self) -> str:
        return f"op={self.op!r}, shape={self.shape}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        c = self.value
        try:
            shape = np.broadcast_shapes(x.shape, c.shape)
        except ValueError:
            raise ValueError(f"{self!r}: the input of shape {x.shape} does not broadcast with "
                             f"the constant of shape {c.shape}") from None
        # ONNX and torch divide by zero silently (inf, nan): so does this layer, and a
        # graph's declaration, which probes the layer on zeros, stays quiet.
        with np.errstate(divide="ignore", invalid="ignore"):
            y = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
                 "rsub": lambda a, b: np.subtract(b, a), "rdiv": lambda a, b: np.divide(b, a)}[
                self.op](x, c)
        if self.keeps_cache:
            self._cache = (x if self.op == "rdiv" else None, x.shape, shape, y.dtype)
        return y

    def backward(self, grad: np.ndarray) -> np.ndarray:
        x, x_shape, shape, dtype = self._take_cache()
        grad = self._check_grad(grad, shape, dtype)
        c = self.value
        local = {"add": lambda: grad, "sub": lambda: grad, "rsub": lambda: -grad,
                 "mul": lambda: grad * c, "div": lambda: grad / c,
                 "rdiv": lambda: -grad * c / (x * x)}[self.op]()
        return _unbroadcast(np.asarray(local, dtype), x_shape)
