"""Dropout and Dropout2d: inverted dropout, as in PyTorch."""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from ..random import new_generator
from .base import Layer


class Dropout(Layer):
    """In training, zero each element with probability ``p`` and scale the rest by
    ``1 / (1 - p)`` so the expected output equals the input; in eval, the identity.

    Args:
        p: drop probability in [0, 1].
        rng: Generator or seed for the masks (None: one seeded from the library
            generator, ``chainrule.manual_seed``). ``chainrule.fit(seed=...)`` re-seeds it
            so a run is reproducible; the global NumPy random state is never used.

    Shape:
        Any -> the same shape.

    Backward:
        ``dL/dx = dL/dy * mask / (1 - p)`` with the same mask as forward (0 where an
        element was dropped); the identity in eval.
    """

    def __init__(self, p: float = 0.5, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        # numbers.Real also admits NumPy scalars such as np.float32(0.5), as torch does.
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = new_generator(rng)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        self._check_input(x)
        if not self.training or self.p == 0.0:
            if self.keeps_cache:
                self._cache = (None, x.shape, x.dtype)
            return x
        shape = self._mask_shape(x)
        if self.p == 1.0:
            scaled_mask = np.zeros(shape, dtype=x.dtype)
        else:
            keep = self.rng.random(shape, dtype=np.float64 if x.dtype == np.float64 else np.float32)
            scaled_mask = (keep >= self.p).astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        if self.keeps_cache:
            self._cache = (scaled_mask, x.shape, x.dtype)
        return x * scaled_mask

    def replay(self, x: np.ndarray) -> np.ndarray | None:
        """``x`` through the mask the last training forward drew (kept for backward), with
        no fresh draw; None when no mask for an input of ``x``'s shape is kept. For
        ``chainrule.diagnose``, which replays a failed step exactly."""
        if self._cache is None or self._cache[0] is None or self._cache[1] != np.shape(x):
            return None
        return self._cast_input(x) * self._cache[0]

    def backward(self, grad: np.ndarray) -> np.ndarray:
        scaled_mask, shape, dtype = self._take_cache()
        grad = self._check_grad(grad, shape, dtype)
        return grad if scaled_mask is None else grad * scaled_mask

    # Hooks for Dropout2d: the input check and the mask's shape (it broadcasts over x).
    def _check_input(self, x: np.ndarray) -> None:
        pass

    def _mask_shape(self, x: np.ndarray) -> tuple[int, ...]:
        return x.shape


class Dropout2d(Dropout):
    """Channel dropout: in training, zero each whole channel (one feature map of one
    sample) with probability ``p`` and scale the kept ones by ``1 / (1 - p)``; in eval,
    the identity. As torch.nn.Dropout2d.

    Args:
        p: drop probability of a channel, in [0, 1].
        inplace: accepted and kept (repr, checkpoints, torch conversion) but the output is
            always a new array: the layer before may keep its output for its own backward
            (Sigmoid does), and writing into it would silently corrupt that gradient (torch
            detects it with version counters; chainrule has none). Same numbers either way.
        rng: Generator or seed for the masks; ``chainrule.fit(seed=...)`` re-seeds it as
            it does every Dropout.

    Shape:
        (N, C, H, W) -> same, one mask value per (n, c), of shape (N, C, 1, 1). A 3-D input is
        read as (N, C, L), as torch 2.x does (with a warning): a mask of shape (N, C, 1), not an
        unbatched (C, H, W) image.

    Backward:
        ``dL/dx = dL/dy * mask / (1 - p)``, the forward's mask broadcast over each channel.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False,
                 rng: np.random.Generator | int | None = None) -> None:
        super().__init__(p, rng)
        if not isinstance(inplace, (bool, np.bool_)):
            raise TypeError(f"Dropout2d: inplace must be True or False, got {inplace!r}")
        self.inplace = bool(inplace)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"

    def _check_input(self, x: np.ndarray) -> None:
        self._check_ndim(x, (3, 4), "(N, C, H, W) or (N, C, L)")
        if x.ndim == 3:
            warnings.warn(
                f"{self!r}: received a 3-D input and, as torch 2.x does, reads it as (N, C, L) "
                "with one mask value per (sample, channel), not as an unbatched (C, H, W) image",
                UserWarning, stacklevel=3)

    def _mask_shape(self, x: np.ndarray) -> tuple[int, ...]:
        return (*x.shape[:2], *(1,) * (x.ndim - 2))               # (N, C, 1, 1) or (N, C, 1)
