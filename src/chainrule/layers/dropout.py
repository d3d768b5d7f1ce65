"""Dropout: inverted dropout, as in PyTorch."""

from __future__ import annotations

import numbers

import numpy as np

from .base import Layer


class Dropout(Layer):
    """In training, zero each element with probability ``p`` and scale the rest by
    ``1 / (1 - p)`` so the expected output equals the input; in eval, the identity.

    Args:
        p: drop probability in [0, 1].
        rng: Generator or seed for the masks. ``chainrule.fit(seed=...)`` re-seeds it so
            a run is reproducible; the global NumPy random state is never used.

    Shape: any -> same. Backward: ``dL/dx = dL/dy * mask / (1 - p)``, the same mask.
    """

    def __init__(self, p: float = 0.5, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        # numbers.Real also admits NumPy scalars such as np.float32(0.5), as torch does.
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = np.random.default_rng(rng)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        if not self.training or self.p == 0.0:
            if self.keeps_cache:
                self._cache = (None, x.shape, x.dtype)
            return x
        if self.p == 1.0:
            scaled_mask = np.zeros(x.shape, dtype=x.dtype)
        else:
            keep = self.rng.random(x.shape, dtype=np.float64 if x.dtype == np.float64 else np.float32)
            scaled_mask = (keep >= self.p).astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        if self.keeps_cache:
            self._cache = (scaled_mask, x.shape, x.dtype)
        return x * scaled_mask

    def backward(self, grad: np.ndarray) -> np.ndarray:
        scaled_mask, shape, dtype = self._take_cache()
        grad = self._check_grad(grad, shape, dtype)
        return grad if scaled_mask is None else grad * scaled_mask
