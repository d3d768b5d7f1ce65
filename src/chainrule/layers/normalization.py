"""Batch normalization: BatchNorm1d and BatchNorm2d."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from ..parameter import Parameter
from ._args import positive_int
from .base import DEFAULT_DTYPE, Layer, as_float_dtype


def _each_channel_block(fn, v: np.ndarray) -> None:
    """Call ``fn((channels,))`` over blocks of channels of a (C, ...) view, shared among
    the worker threads when ``v`` is a contiguous (C, N*H*W) matrix (a channel-major
    batch): channels are independent, NumPy's reductions and ufuncs run on one core,
    and each row's sums are then the same whatever the split. Other layouts run in one
    block, since NumPy may order a multi-axis sum differently for a different block."""
    if v.ndim == 2 and v.flags.c_contiguous:
        F.parallel_slices(fn, v.shape, 0)
    else:
        fn((slice(None),))


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
        shape = (-1,) + (1,) * (v.ndim - 1)                 # broadcast per channel over v
        use_batch_stats = self.training or not self.track_running_stats
        n = x.size // self.num_features
        if use_batch_stats and n <= 1 and self.training:
            raise ValueError(f"{self!r}: expected more than 1 value per channel when "
                             f"training, got input of shape {x.shape}")
        eps = x.dtype.type(self.eps)
        centered = np.empty_like(v)                         # same memory order as v
        out = (centered if not use_batch_stats and not self.keeps_cache
               else np.empty_like(centered))
        mean = np.empty(self.num_features, x.dtype)
        var = np.empty(self.num_features, x.dtype)
        inv_std = np.empty(self.num_features, x.dtype)

        def channels(ix):
            (c,) = ix[:1]
            vb, cb, ob = v[c], centered[c], out[c]
            if use_batch_stats:
                mean[c] = vb.mean(axis=axes)
                np.subtract(vb, mean[c].reshape(shape), out=cb)
                np.multiply(cb, cb, out=ob)                 # squares, then the output
                var[c] = ob.mean(axis=axes)                 # biased, used to normalize
            elif not self.keeps_cache:
                # Eval without backward, as torch computes it: y = x * alpha + beta with
                # alpha = weight * inv_std and beta = bias - mean * alpha (two passes
                # over the data instead of three; nothing to keep for backward).
                alpha = 1.0 / np.sqrt(self.running_var[c] + eps)
                if self.affine:
                    alpha *= self.weight.data[c]
                beta = -self.running_mean[c] * alpha
                if self.affine:
                    beta += self.bias.data[c]
                np.multiply(vb, alpha.reshape(shape), out=ob)
                ob += beta.reshape(shape)
                return
            else:
                np.subtract(vb, self.running_mean[c].reshape(shape), out=cb)
                var[c] = self.running_var[c]
            inv_std[c] = 1.0 / np.sqrt(var[c] + eps)
            # y = centered * (inv_std * weight) + bias: two passes over the data
            scale = inv_std[c] * self.weight.data[c] if self.affine else inv_std[c]
            np.multiply(cb, scale.reshape(shape), out=ob)
            if self.affine:
                ob += self.bias.data[c].reshape(shape)

        _each_channel_block(channels, v)
        if use_batch_stats and self.training and self.track_running_stats:
            self._update_running_stats(mean, var, n)
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
        shape = (-1,) + (1,) * (g.ndim - 1)
        a = self.weight.data * inv_std if self.affine else inv_std   # dx = a * g in eval
        need_sums = self.affine or used_batch_stats
        sum_g = np.zeros(self.num_features, centered.dtype)
        sum_gc = np.zeros(self.num_features, centered.dtype)   # sum(g * x̂) = inv_std * sum_gc
        n = centered.size // self.num_features
        dx = np.empty_like(g)

        def channels(ix):
            (c,) = ix[:1]
            gb, cb, dxb = g[c], centered[c], dx[c]
            if need_sums:
                sum_g[c] = gb.sum(axis=axes)
                gc = np.multiply(gb, cb)
                sum_gc[c] = gc.sum(axis=axes)
            np.multiply(gb, a[c].reshape(shape), out=dxb)
            if used_batch_stats:
                # dx = a * (g - sum(g)/n - x̂ * sum(g x̂)/n), with x̂ = centered * inv_std
                factor = -a[c] * inv_std[c] * inv_std[c] * sum_gc[c] / n
                np.multiply(cb, factor.reshape(shape), out=gc)
                dxb += gc
                dxb += (-a[c] * sum_g[c] / n).reshape(shape)

        _each_channel_block(channels, g)
        if self.affine:
            self.weight.grad += sum_gc * inv_std
            self.bias.grad += sum_g
        return np.moveaxis(dx.reshape(np.moveaxis(grad, 1, 0).shape), 0, 1)


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) features or (N, C, L) sequences, per channel C.
    See ``_BatchNorm`` for the formulas. Shape: (N, C) or (N, C, L) -> same."""

    _layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) images, per channel C over N, H and W.
    See ``_BatchNorm`` for the formulas. Shape: (N, C, H, W) -> same."""

    _layout = "(N, C, H, W)"
