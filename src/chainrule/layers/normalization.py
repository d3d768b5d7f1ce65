"""Normalization layers: BatchNorm1d and BatchNorm2d (over the batch), SyncBatchNorm
(over the batch of every data-parallel rank), GroupNorm,
LayerNorm and InstanceNorm2d (within each sample), LocalResponseNorm (across channels)."""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Sequence

import numpy as np

from .. import functional as F
from ..parameter import Parameter
from ._args import finite_real, positive_int
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

    Backward:
        In training, with n values per channel, x̂ the normalized input, ĝ = g * weight:
        ``dx = (n*ĝ - sum(ĝ) - x̂ * sum(ĝ * x̂)) / (n * sqrt(var + eps))``,
        ``dweight = sum(g * x̂)``, ``dbias = sum(g)``. Eval:
        ``dx = ĝ / sqrt(running_var + eps)``.
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

        compiled = (F.compiled.ENABLED and use_batch_stats and v.ndim == 2
                    and v.flags.c_contiguous)
        if compiled:
            ones = np.ones(self.num_features, x.dtype)
            weight = self.weight.data if self.affine else ones
            bias = self.bias.data if self.affine else ones - 1

        def channels(ix):
            (c,) = ix[:1]
            vb, cb, ob = v[c], centered[c], out[c]
            if compiled:                                    # three passes instead of six
                F.compiled.batch_norm_forward(vb, cb, ob, mean[c], var[c], inv_std[c],
                                              weight[c], bias[c], eps)
                return
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

        compiled = F.compiled.ENABLED and g.ndim == 2 and g.flags.c_contiguous \
            and centered.flags.c_contiguous

        def channels(ix):
            (c,) = ix[:1]
            gb, cb, dxb = g[c], centered[c], dx[c]
            if compiled:                                    # two passes
                F.compiled.batch_norm_backward(gb, cb, dxb, a[c], inv_std[c], sum_g[c],
                                               sum_gc[c], n, used_batch_stats)
                return
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

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per channel. In training, mean
    and var are the batch's (var biased, divided by n), and the running estimates are
    updated with ``running = (1 - momentum) * running + momentum * batch_stat`` where the
    variance uses the *unbiased* estimate (``n / (n - 1)``), exactly as PyTorch. In eval,
    the running estimates are used.

    Args:
        num_features: C, the number of channels.
        eps: added to the variance before the square root; must be > 0.
        momentum: the weight of the batch statistic in the running estimates, in [0, 1];
            None makes them a cumulative average.
        affine: learn a per-channel scale ``weight`` (initialized to 1) and shift ``bias``
            (initialized to 0).
        track_running_stats: keep ``running_mean`` and ``running_var`` buffers (and
            ``num_batches_tracked``) and use them in eval; False: the batch's statistics
            in eval too.
        dtype: float32 (default) or float64.

    Shape:
        (N, C) or (N, C, L) -> the same shape. ``weight``, ``bias``, ``running_mean``,
        ``running_var``: (C,).

    Backward:
        With n values per channel, ``x̂ = (x - mean) / sqrt(var + eps)`` the normalized
        input and ``a = weight / sqrt(var + eps)``: with the batch's statistics (training,
        or eval without running statistics) ``dx = a * (g - sum(g)/n - x̂ * sum(g * x̂)/n)``;
        with the running statistics (eval) ``dx = a * g``, ``var = running_var``. ``dweight = sum(g * x̂)``,
        ``dbias = sum(g)``, sums over every axis but the channel axis.
    """

    _layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) images, per channel C over N, H and W.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per channel. In training, mean
    and var are the batch's (var biased, divided by n), and the running estimates are
    updated with ``running = (1 - momentum) * running + momentum * batch_stat`` where the
    variance uses the *unbiased* estimate (``n / (n - 1)``), exactly as PyTorch. In eval,
    the running estimates are used.

    Args:
        num_features: C, the number of channels.
        eps: added to the variance before the square root; must be > 0.
        momentum: the weight of the batch statistic in the running estimates, in [0, 1];
            None makes them a cumulative average.
        affine: learn a per-channel scale ``weight`` (initialized to 1) and shift ``bias``
            (initialized to 0).
        track_running_stats: keep ``running_mean`` and ``running_var`` buffers (and
            ``num_batches_tracked``) and use them in eval; False: the batch's statistics
            in eval too.
        dtype: float32 (default) or float64.

    Shape:
        (N, C, H, W) -> the same shape. ``weight``, ``bias``, ``running_mean``,
        ``running_var``: (C,).

    Backward:
        With n values per channel, ``x̂ = (x - mean) / sqrt(var + eps)`` the normalized
        input and ``a = weight / sqrt(var + eps)``: with the batch's statistics (training,
        or eval without running statistics) ``dx = a * (g - sum(g)/n - x̂ * sum(g * x̂)/n)``;
        with the running statistics (eval) ``dx = a * g``, ``var = running_var``. ``dweight = sum(g * x̂)``,
        ``dbias = sum(g)``, sums over every axis but the channel axis.
    """

    _layout = "(N, C, H, W)"


class SyncBatchNorm(_BatchNorm):
    """Batch normalization whose training statistics are those of the *global* batch.

    The global batch is the samples of every rank of a data-parallel run
    (``chainrule.distributed``), as ``torch.nn.SyncBatchNorm``. So K ranks with batches of
    B/K normalize exactly as one process with batch B (and update the same running
    statistics). In a world of one process it is ``BatchNorm``; in eval mode it uses the
    running statistics, as ``BatchNorm`` does.

    Forward (training): one allreduce of the per-channel sums and counts gives the
    global mean; a second one, of the sums of squared deviations, the biased variance
    (two passes, as the single-process layer computes it).

    Args:
        num_features: C, the number of channels.
        eps: added to the variance before the square root; must be > 0.
        momentum: the weight of the batch statistic in the running estimates, in [0, 1];
            None makes them a cumulative average.
        affine: learn a per-channel scale ``weight`` (initialized to 1) and shift ``bias``
            (initialized to 0).
        track_running_stats: keep ``running_mean`` and ``running_var`` buffers (and
            ``num_batches_tracked``) and use them in eval; False: the batch's statistics
            in eval too.
        dtype: float32 (default) or float64.

    Shape:
        (N, C, *) -> the same shape. ``weight``, ``bias``, ``running_mean``,
        ``running_var``: (C,).

    Backward:
        One allreduce of ``sum(g)`` and ``sum(g * x̂)`` per channel; with ``n`` the global
        count, ``dx = a * (g - sum(g)/n - x̂ * sum(g * x̂)/n)``
        (``a = weight / sqrt(var + eps)``), and ``dweight``, ``dbias`` are this rank's own
        sums, averaged with the other gradients by the data-parallel allreduce. (Every
        rank's ``g`` is K times its share of the global batch's loss gradient; dx and the
        parameter gradients scale with it, and the average over K ranks restores the
        single-process gradient.)
    """

    _layout = "(N, C, *)"

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"{self!r}: expected an input (N, {self.num_features}, *), got "
                             f"shape {x.shape}")

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training:
            return super().forward(x)
        from .. import distributed as dist
        x = self._cast_input(x)
        self._check_input(x)
        c = self.num_features
        v = np.moveaxis(x, 1, 0).reshape(c, -1)                     # (C, n_local)
        totals = dist.allreduce_sum(np.append(v.sum(axis=1), v.shape[1]).astype(x.dtype))
        n = int(totals[c])                                          # the global count
        if n <= 1:
            raise ValueError(f"{self!r}: expected more than 1 value per channel when "
                             f"training, got input of shape {x.shape}")
        mean = totals[:c] / x.dtype.type(n)                        # (C,)
        centered = v - mean[:, None]                                # (C, n_local)
        var = dist.allreduce_sum(np.einsum("ij,ij->i", centered, centered)) / x.dtype.type(n)
        inv_std = 1.0 / np.sqrt(var + x.dtype.type(self.eps))       # (C,)
        scale = inv_std * self.weight.data if self.affine else inv_std
        out = centered * scale[:, None]
        if self.affine:
            out += self.bias.data[:, None]
        if self.track_running_stats:
            self._update_running_stats(mean, var, n)
        if self.keeps_cache:
            self._cache = ("sync", centered, inv_std, n, x.shape)
        return np.moveaxis(out.reshape(np.moveaxis(x, 1, 0).shape), 0, 1)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        if self._cache is None or self._cache[0] != "sync":
            return super().backward(grad)
        from .. import distributed as dist
        _, centered, inv_std, n, x_shape = self._take_cache()
        grad = self._check_grad(grad, x_shape, centered.dtype)
        c = self.num_features
        g = np.moveaxis(grad, 1, 0).reshape(c, -1)                  # (C, n_local)
        sum_g = g.sum(axis=1)                                       # (C,) this rank's
        sum_gc = np.einsum("ij,ij->i", g, centered)                 # sum(g * (x - mean))
        total = dist.allreduce_sum(np.concatenate([sum_g, sum_gc]))
        a = self.weight.data * inv_std if self.affine else inv_std
        nn = centered.dtype.type(n)
        dx = g - (total[:c] / nn)[:, None]
        dx -= centered * (inv_std * inv_std * total[c:] / nn)[:, None]
        dx *= a[:, None]
        if self.affine:
            self.weight.grad += sum_gc * inv_std
            self.bias.grad += sum_g
        return np.moveaxis(dx.reshape(np.moveaxis(grad, 1, 0).shape), 0, 1)


# ---------------------------------------------------------------------------- argument checks
def _number(value: Any, name: str, layer: str) -> float:
    """A finite real number (not a bool) as a float."""
    return finite_real(value, name, layer, "a number")


def _positive_number(value: Any, name: str, layer: str) -> float:
    value = _number(value, name, layer)
    if not value > 0:
        raise ValueError(f"{layer}: {name} must be > 0, got {value!r}")
    return value


def _momentum(value: Any, layer: str) -> float | None:
    if value is None:
        return None
    value = _number(value, "momentum", layer)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{layer}: momentum must be in [0, 1] or None, got {value!r}")
    return value


def _normalized_shape(value: Any, layer: str) -> tuple[int, ...]:
    """torch's normalized_shape: an int, or a non-empty sequence of ints, each >= 1."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        shape: Sequence[Any] = (value,)
    elif isinstance(value, (tuple, list)):
        shape = value
    else:
        raise TypeError(f"{layer}: normalized_shape must be an int or a sequence of ints, "
                        f"got {value!r}")
    if not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in shape):
        raise TypeError(f"{layer}: normalized_shape must be an int or a sequence of ints, "
                        f"got {value!r}")
    if not shape or min(shape) < 1:
        raise ValueError(f"{layer}: normalized_shape must hold at least one axis, each of "
                         f"size >= 1, got {value!r}")
    return tuple(int(d) for d in shape)


# ---------------------------------------------------------------------------- within a sample
def _standardize(v: np.ndarray, axes: tuple[int, ...], eps: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardize ``v`` over ``axes`` (one group per index of the other axes).

    Returns ``x̂ = (v - mean) / sqrt(var + eps)`` (shaped like ``v``) and, each with the
    reduced axes kept as size 1, ``inv_std = 1 / sqrt(var + eps)``, ``mean`` and the
    biased variance ``var`` (divided by the group's number of elements)."""
    mean = v.mean(axis=axes, keepdims=True)
    xhat = v - mean
    var = np.mean(np.square(xhat), axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + v.dtype.type(eps))
    xhat *= inv_std
    return xhat, inv_std, mean, var


def _standardize_backward(ghat: np.ndarray, xhat: np.ndarray, inv_std: np.ndarray,
                          axes: tuple[int, ...]) -> np.ndarray:
    """dL/dv of ``_standardize`` given ``ĝ = dL/dx̂``: within each group,
    ``dx = inv_std * (ĝ - mean(ĝ) - x̂ * mean(ĝ * x̂))`` (the two means carry the
    dependence of the group's mean and variance on each of its elements)."""
    mean_g = ghat.mean(axis=axes, keepdims=True)
    dx = ghat * xhat
    mean_gx = dx.mean(axis=axes, keepdims=True)
    np.multiply(xhat, mean_gx, out=dx)
    np.subtract(ghat, dx, out=dx)
    dx -= mean_g
    dx *= inv_std
    return dx


class _SampleNorm(Layer):
    """The shared core of GroupNorm, LayerNorm and InstanceNorm2d: the input, seen as an
    array of shape ``view``, is standardized over ``axes`` (each index of the other axes
    is one group), then scaled by ``weight`` and shifted by ``bias``, which broadcast
    over ``view`` when reshaped to ``param_view`` (its axes of size 1 are those the
    parameter gradients sum over).

    Backward:
        With ĝ = g * weight, x̂ the standardized input, kept from forward with inv_std:
        ``dx = inv_std * (ĝ - mean(ĝ) - x̂ * mean(ĝ x̂))`` over each group,
        ``dweight = sum(g * x̂)``, ``dbias = sum(g)``; with fixed statistics (InstanceNorm2d in
        eval with running statistics) ``dx = ĝ * inv_std``.
    """

    eps: float
    weight: Parameter | None
    bias: Parameter | None

    def _init_affine(self, shape: tuple[int, ...], affine: bool, bias: bool,
                     dtype: np.dtype) -> None:
        self.weight = Parameter(np.ones(shape, dtype)) if affine else None
        self.bias = Parameter(np.zeros(shape, dtype)) if affine and bias else None

    def _reset_own_parameters(self, rng: np.random.Generator) -> None:
        if self.weight is not None:
            self.weight.data.fill(1)
        if self.bias is not None:
            self.bias.data.fill(0)

    @property
    def dtype(self) -> np.dtype | None:
        # Without parameters, keep a float input's dtype (as an activation does).
        return self.weight.dtype if self.weight is not None else None

    def _normalize(self, x: np.ndarray, view: tuple[int, ...], axes: tuple[int, ...],
                   param_view: tuple[int, ...],
                   stats: tuple[np.ndarray, np.ndarray] | None = None
                   ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``y`` (shaped like ``x``) and the input's own mean and biased variance (shaped
        like ``v`` reduced over ``axes``). ``stats = (mean, inv_std)``, broadcasting over
        ``view``, replaces the input's statistics (then mean and var come back None)."""
        v = x.reshape(view)
        mean = var = None
        if stats is None:
            xhat, inv_std, mean, var = _standardize(v, axes, self.eps)
        else:
            xhat = v - stats[0]
            inv_std = stats[1]
            xhat *= inv_std
        if self.weight is not None:
            y = xhat * self.weight.data.reshape(param_view)
            if self.bias is not None:
                y += self.bias.data.reshape(param_view)
        else:
            # y is x̂ itself; a copy when x̂ is kept, so changing y cannot change backward.
            y = xhat.copy() if self.keeps_cache else xhat
        if self.keeps_cache:
            self._cache = (xhat, inv_std, axes, param_view, stats is None, x.shape)
        return y.reshape(x.shape), mean, var

    def backward(self, grad: np.ndarray) -> np.ndarray:
        xhat, inv_std, axes, param_view, batch_stats, x_shape = self._take_cache()
        grad = self._check_grad(grad, x_shape, xhat.dtype)
        g = grad.reshape(xhat.shape)
        sum_axes = tuple(i for i, d in enumerate(param_view) if d == 1)
        if self.bias is not None:
            self.bias.grad += g.sum(axis=sum_axes).reshape(self.bias.shape)
        if self.weight is not None:
            self.weight.grad += np.sum(g * xhat, axis=sum_axes).reshape(self.weight.shape)
            ghat = g * self.weight.data.reshape(param_view)
        else:
            ghat = g
        dx = (_standardize_backward(ghat, xhat, inv_std, axes) if batch_stats
              else ghat * inv_std)
        return dx.reshape(x_shape)


class GroupNorm(_SampleNorm):
    """Group normalization: the C channels of each sample are split into ``num_groups``
    groups of C/G consecutive channels, each group standardized over its channels and
    all spatial positions, then each channel scaled and shifted:

    ``y = (x - mean_g) / sqrt(var_g + eps) * weight_c + bias_c``, mean_g and var_g
    (biased, divided by n = C/G * prod(*)) over the group of channel c in that sample.
    The same in training and eval (no running statistics).

    Backward:
        With x̂ the standardized input, ĝ = g * weight_c, sums and means over each sample's
        group: ``dx = (ĝ - mean(ĝ) - x̂ * mean(ĝ x̂)) / sqrt(var_g + eps)``,
        ``dweight_c = sum over N and * of g * x̂``, ``dbias_c = sum over N and * of g``.

    Shape:
        (N, C, *) -> same, C = num_channels, * any number of axes (none included). Parameters
        (affine=True): weight and bias of shape (C,), initialized to 1 and 0; ``bias=False``
        (keyword) drops the shift, as in torch.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, dtype: Any = DEFAULT_DTYPE, *, bias: bool = True) -> None:
        super().__init__()
        name = f"GroupNorm({num_groups}, {num_channels})"
        self.num_groups = positive_int(num_groups, "num_groups", name)
        self.num_channels = positive_int(num_channels, "num_channels", name)
        if num_channels % num_groups:
            raise ValueError(f"{name}: num_channels ({num_channels}) must be divisible by "
                             f"num_groups ({num_groups})")
        self.eps = _positive_number(eps, "eps", name)
        self.affine = bool(affine)
        self._init_affine((num_channels,), self.affine, bool(bias), as_float_dtype(dtype, name))

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine}, bias={self.bias is not None}")

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        c, groups = self.num_channels, self.num_groups
        if x.ndim < 2 or x.shape[1] != c:
            raise ValueError(f"{self!r}: expected input of shape (N, {c}, *) with {c} channels "
                             f"on axis 1, got shape {x.shape}")
        n, spatial = x.shape[0], math.prod(x.shape[2:])
        if n * (c // groups) * spatial == 1:
            # torch refuses this one shape (N = 1, one channel per group, no spatial size),
            # as its batch-norm check of "more than 1 value per channel" sees it.
            raise ValueError(f"{self!r}: expected more than 1 value per channel, got input of "
                             f"shape {x.shape} (as torch.nn.GroupNorm refuses it)")
        view = (n, groups, c // groups, spatial)              # groups on axis 1
        return self._normalize(x, view, (2, 3), (1, groups, c // groups, 1))[0]


class LayerNorm(_SampleNorm):
    """Layer normalization over the last ``len(normalized_shape)`` axes of each sample:

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, mean and var (biased) over the
    n = prod(normalized_shape) trailing elements, weight and bias elementwise over them.
    The same in training and eval.

    Backward:
        With x̂ the standardized input, ĝ = g * weight, means over each sample's n normalized
        elements: ``dx = (ĝ - mean(ĝ) - x̂ * mean(ĝ x̂)) / sqrt(var + eps)``,
        ``dweight = sum over the leading axes of g * x̂``, ``dbias = sum over them of g``.

    Shape:
        (*, *normalized_shape) -> same; an input of exactly normalized_shape counts as one
        sample. Parameters (elementwise_affine=True): weight and bias of shape normalized_shape,
        initialized to 1 and 0; ``bias=False`` drops the shift.
    """

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True,
                 dtype: Any = DEFAULT_DTYPE) -> None:
        super().__init__()
        name = f"LayerNorm({normalized_shape!r})"
        self.normalized_shape = _normalized_shape(normalized_shape, name)
        self.eps = _positive_number(eps, "eps", name)
        self.elementwise_affine = bool(elementwise_affine)
        self._init_affine(self.normalized_shape, self.elementwise_affine, bool(bias),
                          as_float_dtype(dtype, name))

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        shape = self.normalized_shape
        if x.ndim < len(shape) or x.shape[x.ndim - len(shape):] != shape:
            raise ValueError(f"{self!r}: expected input of shape (*, {', '.join(map(str, shape))}) "
                             f"ending in normalized_shape {shape}, got shape {x.shape}")
        n = math.prod(shape)
        view = (x.size // n, n)                               # one sample per row
        return self._normalize(x, view, (1,), (1, n))[0]


class InstanceNorm2d(_SampleNorm):
    """Instance normalization: each channel of each sample standardized over its H*W
    positions, then (affine=True) scaled and shifted per channel:

    ``y = (x - mean_nc) / sqrt(var_nc + eps) * weight_c + bias_c`` (var biased).

    Running statistics (track_running_stats=True): in training, as torch's
    ``instance_norm`` (batch norm of the (1, N*C, H, W) view with the running statistics
    repeated N times, then averaged over the N copies),
    ``running = (1 - momentum) * running + momentum * mean over n of stat_nc``, the
    variance unbiased (var_nc * HW / (HW - 1)); in eval the running statistics replace
    the input's own. ``momentum=None`` is momentum 0 in torch's InstanceNorm (the
    running statistics never move), and torch never counts ``num_batches_tracked``
    here; both are kept as torch does. Without running statistics (the default), the
    input's own statistics are used in eval too.

    Backward:
        With x̂ the standardized input, ĝ = g * weight_c, means over the H*W positions:
        ``dx = (ĝ - mean(ĝ) - x̂ * mean(ĝ x̂)) / sqrt(var_nc + eps)``, with running statistics
        in eval ``dx = ĝ / sqrt(running_var_c + eps)``;
        ``dweight_c = sum over N, H, W of g * x̂``, ``dbias_c = sum of g``.

    Shape:
        (N, C, H, W) or unbatched (C, H, W) -> same. Parameters (affine=True): weight, bias of
        shape (C,) (``bias=False``, keyword, drops the shift); buffers
        (track_running_stats=True): running_mean (C,) = 0, running_var (C,) = 1,
        num_batches_tracked () = 0. As in torch, with neither affine parameters nor running
        statistics ``num_features`` is not used: another channel count gives a UserWarning.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = False, track_running_stats: bool = False,
                 dtype: Any = DEFAULT_DTYPE, *, bias: bool = True) -> None:
        super().__init__()
        name = f"InstanceNorm2d({num_features})"
        self.num_features = positive_int(num_features, "num_features", name)
        self.eps = _positive_number(eps, "eps", name)
        self.momentum = _momentum(momentum, name)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        dtype = as_float_dtype(dtype, name)
        self._init_affine((num_features,), self.affine, bool(bias), dtype)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")

    @property
    def dtype(self) -> np.dtype | None:
        if self.weight is not None:
            return self.weight.dtype
        return self.running_mean.dtype if self.track_running_stats else None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        self._check_ndim(x, (3, 4), "(N, C, H, W) or (C, H, W)")
        n = x.shape[0] if x.ndim == 4 else 1
        c, h, w = x.shape[-3:]
        if c != self.num_features:
            if self.affine or self.track_running_stats:
                raise ValueError(f"{self!r}: expected {self.num_features} channels (axis "
                                 f"{x.ndim - 3}), got input of shape {x.shape}")
            warnings.warn(f"{self!r}: the input has {c} channels (shape {x.shape}), not "
                          f"num_features={self.num_features}; num_features is not used "
                          "without affine parameters or running statistics", stacklevel=2)
        use_batch_stats = self.training or not self.track_running_stats
        if use_batch_stats and h * w == 1:
            raise ValueError(f"{self!r}: expected more than 1 spatial element (H*W > 1) to "
                             f"normalize with the input's own statistics, got shape {x.shape}")
        view, param_view = (n, c, h * w), (1, c, 1)
        if not use_batch_stats:
            inv_std = 1.0 / np.sqrt(self.running_var + x.dtype.type(self.eps))
            stats = (self.running_mean.reshape(param_view), inv_std.reshape(param_view))
            return self._normalize(x, view, (2,), param_view, stats)[0]
        y, mean, var = self._normalize(x, view, (2,), param_view)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean, var, h * w)
        return y

    def _update_running_stats(self, mean: np.ndarray, var: np.ndarray, hw: int) -> None:
        """mean, var: (N, C, 1), each sample's own (var biased over hw positions)."""
        if self.momentum is None:
            return                              # torch runs instance_norm with momentum 0
        m = self.momentum
        self.running_mean *= 1 - m
        self.running_mean += m * mean.mean(axis=0).reshape(-1)
        self.running_var *= 1 - m
        self.running_var += m * (var * (hw / (hw - 1))).mean(axis=0).reshape(-1)


# ---------------------------------------------------------------------------- across channels
def _channel_window_sum(a: np.ndarray, before: int, after: int) -> np.ndarray:
    """``out[:, c] = sum of a[:, c + d] for d in [-before, after]`` (terms outside the
    channel axis are zeros): one vectorized addition per offset d."""
    out = np.zeros_like(a)
    channels = a.shape[1]
    for d in range(-before, after + 1):
        lo, hi = max(0, -d), min(channels, channels - d)    # c such that c + d is a channel
        if lo < hi:
            out[:, lo:hi] += a[:, lo + d:hi + d]
    return out


class LocalResponseNorm(Layer):
    """Local response normalization across channels (AlexNet), as torch computes it:

    ``y_c = x_c / s_c^beta``, ``s_c = k + alpha / size * sum_{c' in W(c)} x_{c'}^2`` with
    the window ``W(c) = [c - size//2, c + (size-1)//2]`` (channels outside [0, C) count as
    zeros; for an even size the window reaches one channel further back than ahead).

    Backward:
        With the window transposed: c in W(c') iff c' in [c - (size-1)//2, c + size//2]:
        ``dx_c = g_c / s_c^beta - 2*alpha*beta/size * x_c * sum_{c': c in W(c')} g_{c'} x_{c'} s_{c'}^(-beta-1)``.
        Each window sum is one vectorized addition per channel offset.

    Shape:
        (N, C, *) -> same, at least 3-D (torch's rule: (N, C, L), (N, C, H, W), ...). No
        parameters; a float input keeps its dtype.
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75,
                 k: float = 1.0) -> None:
        super().__init__()
        name = f"LocalResponseNorm({size!r})"
        self.size = positive_int(size, "size", name)
        self.alpha = _number(alpha, "alpha", name)
        self.beta = _number(beta, "beta", name)
        self.k = _number(k, "k", name)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        if x.ndim < 3:
            raise ValueError(f"{self!r}: expected input of shape (N, C, *) with at least 3 "
                             f"axes, got shape {x.shape}")
        s = _channel_window_sum(np.square(x), self.size // 2, (self.size - 1) // 2)
        # In torch's order: the window's mean, times alpha, plus k.
        s /= self.size
        s *= self.alpha
        s += self.k
        y = x / s ** self.beta
        if self.keeps_cache:
            self._cache = (x, s)
        return y

    def backward(self, grad: np.ndarray) -> np.ndarray:
        x, s = self._take_cache()
        grad = self._check_grad(grad, x.shape, x.dtype)
        dx = grad / s ** self.beta                          # g_c / s_c^beta
        q = dx * x
        q /= s                                              # g_c x_c s_c^(-beta-1)
        back = _channel_window_sum(q, (self.size - 1) // 2, self.size // 2)
        back *= x
        back *= 2 * self.alpha * self.beta / self.size
        dx -= back
        return dx
