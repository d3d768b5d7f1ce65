"""MovementLayer: the shared forward and backward of the layers that only move values.

Flatten, Unflatten, the pads, the shuffles and Identity do no arithmetic on their input:
each output element is an input element (moved, repeated or cropped) or a constant fill
(tinygrad calls these movement operations). The backward is the adjoint of that map, and
it depends on the input's shape alone, so the cache holds shapes and a dtype, never an
array.
"""

from __future__ import annotations

import numpy as np

from .base import Layer


class MovementLayer(Layer):
    """A parameter-free layer whose backward needs only the input's shape.

    Subclasses write the two halves of the map:

    - ``_move(x)``: the output for an input already cast by ``_cast_input``; it checks
      the input and raises ValueError for one it refuses.
    - ``_move_back(grad, x_shape)``: dL/dx of shape ``x_shape`` from dL/dy, whose shape
      and dtype are already checked against the last output's.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        out = self._move(x)
        if self.keeps_cache:
            self._cache = (x.shape, out.shape, out.dtype)
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        x_shape, out_shape, dtype = self._take_cache()
        return self._move_back(self._check_grad(grad, out_shape, dtype), x_shape)

    def _move(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement _move")

    def _move_back(self, grad: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement _move_back")
