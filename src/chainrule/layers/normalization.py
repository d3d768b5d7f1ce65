"""Batch normalization: BatchNorm1d and BatchNorm2d."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..parameter import Parameter
from ._args import positive_int
from .base import DEFAULT_DTYPE, Layer, as_float_dtype


class _BatchNorm(Layer):
    """Normalize each channel over the batch (and spatial axes), then scale and shift.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``. In training, mean and var are
    the batch's (var biased, divided by n), and the running estimates are updated with
    ``running = (1 - momentum) * running + momentum * batch_stat`` where the variance
    uses the *unbiased* estimate (n / (n - 1)), exactly as PyTorch; ``momentum=None``
    makes it a cumulative average. In eval, the running estimates are used.

    Backward, training (n values per channel, x̂ the normalized input, ĝ = g * weight):
    ``dx = (n*ĝ - sum(ĝ) - x̂ * sum(ĝ * x̂)) / (n * sqrt(var + eps))``,
    ``dweight = sum(g * x̂)``, ``dbias = sum(g)``. Eval: ``dx = ĝ / sqrt(running_var + eps)``.
    """

    _layout = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 dtype: Any = DEFAULT_DTYPE) -> None:
        super().__init__()
        name = f"{type(self).__name__}({num_features})"
        self.num_features = positive_int(num_features, "num_features", name)
        if not eps > 0:
            raise ValueError(f"{name}: eps must be > 0, got {eps!r}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{name}: momentum must be in [0, 1] or None, got {momentum!r}")
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        dtype = as_float_dtype(dtype, name)
        if self.affine:
            self.weight = Parameter(np.ones(num_features, dtype))
            self.bias = Parameter(np.zeros(num_features, dtype))
        else:
            self.weight = None
            self.bias = None
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))

    def _reset_own_parameters(self, rng: np.random.Generator) -> None:
        if self.affine:
            self.weight.data.fill(1)
            self.bias.data.fill(0)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")

    @property
    def dtype(self) -> np.dtype | None:
        if self.affine:
            return self.weight.dtype
        if self.track_running_stats:
            return self.running_mean.dtype
        # No parameters and no buffers: like an activation, keep a float input's dtype
        # (float32 here would silently round float64 inputs).
        return None

    def _check_input(self, x: np.ndarray) -> None:
        """Validate x's number of axes and of channels."""
        ndims = (2, 3) if isinstance(self, BatchNorm1d) else (4,)
        self._check_ndim(x, ndims, self._layout)
        if x.shape[1] != self.num_features:
            raise ValueError(f"{self!r}: expected {self.num_features} channels (axis 1), got input "
                             f"of shape {x.shape}")

    @staticmethod
    def _channels_first(a: np.ndarray) -> np.ndarray:
        """A (C, ...) view of ``a`` with the channel axis first: (C, N*H*W) when its
        memory is channel-major (as a convolution's output is), so that every per-channel
        reduction and broadcast runs over one contiguous row."""
        v = np.moveaxis(a, 1, 0)                            # (C, N, ...) view
        return v.reshape(v.shape[0], -1) if v.flags.c_contiguous else v

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        self._check_input(x)
        v = self._channels_first(x)                         # (C, ...) view of x
        axes = tuple(range(1, v.ndim))
        shape = (self.num_features,) + (1,) * (v.ndim - 1)  # broadcast (C,) over v
        use_batch_stats = self.training or not self.track_running_stats
        if use_batch_stats:
            n = x.size // self.num_features
            if n <= 1 and self.training:
                raise ValueError(f"{self!r}: expected more than 1 value per channel when "
                                 f"training, got input of shape {x.shape}")
            mean = v.mean(axis=axes)
            centered = v - mean.reshape(shape)              # same memory order as v
            out = np.multiply(centered, centered)           # squares, then the output
            var = out.mean(axis=axes)                       # biased, used to normalize
            if self.training and self.track_running_stats:
                self._update_running_stats(mean, var, n)
        else:
            centered = v - self.running_mean.reshape(shape)
            var = self.running_var
            out = centered if not self.keeps_cache else np.empty_like(centered)
        inv_std = 1.0 / np.sqrt(var + x.dtype.type(self.eps))
        # y = centered * (inv_std * weight) + bias: two passes over the data
        scale = inv_std * self.weight.data if self.affine else inv_std
        np.multiply(centered, scale.reshape(shape), out=out)
        if self.affine:
            out += self.bias.data.reshape(shape)
        if self.keeps_cache:
            # x - mean rather than x̂ = (x - mean) * inv_std: the forward never needs x̂
            # itself, and backward folds inv_std into its per-channel factors.
            self._cache = (centered, inv_std, use_batch_stats, x.shape)
        return np.moveaxis(out.reshape(np.moveaxis(x, 1, 0).shape), 0, 1)

    def _update_running_stats(self, mean: np.ndarray, var: np.ndarray, n: int) -> None:
        self.num_batches_tracked = np.asarray(self.num_batches_tracked + 1)
        factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                  else self.momentum)
        unbiased = var * (n / (n - 1))
        self.running_mean *= 1 - factor
        self.running_mean += factor * mean
        self.running_var *= 1 - factor
        self.running_var += factor * unbiased

    def backward(self, grad: np.ndarray) -> np.ndarray:
        centered, inv_std, used_batch_stats, x_shape = self._take_cache()
        grad = self._check_grad(grad, x_shape, centered.dtype)
        g = self._channels_first(grad)
        if g.shape != centered.shape:                      # another memory order than x
            g = g.reshape(centered.shape)
        axes = tuple(range(1, g.ndim))
        shape = (self.num_features,) + (1,) * (g.ndim - 1)
        weight = self.weight.data if self.affine else 1
        a = weight * inv_std                                # dx = a * g when not batch stats
        need_sums = self.affine or used_batch_stats
        if need_sums:
            sum_g = g.sum(axis=axes)
            gc = np.multiply(g, centered)
            sum_gc = gc.sum(axis=axes)                      # sum(g * x̂) = inv_std * sum_gc
        if self.affine:
            self.weight.grad += sum_gc * inv_std
            self.bias.grad += sum_g
        dx = np.multiply(g, a.reshape(shape))
        if used_batch_stats:
            # dx = a * (g - sum(g)/n - x̂ * sum(g x̂)/n), with x̂ = centered * inv_std
            n = centered.size // self.num_features
            np.multiply(centered, (-a * inv_std * inv_std * sum_gc / n).reshape(shape), out=gc)
            dx += gc
            dx += (-a * sum_g / n).reshape(shape)
        return np.moveaxis(dx.reshape(np.moveaxis(grad, 1, 0).shape), 0, 1)


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) features or (N, C, L) sequences, per channel C.
    See ``_BatchNorm`` for the formulas. Shape: (N, C) or (N, C, L) -> same."""

    _layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) images, per channel C over N, H and W.
    See ``_BatchNorm`` for the formulas. Shape: (N, C, H, W) -> same."""

    _layout = "(N, C, H, W)"
