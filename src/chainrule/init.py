"""Weight initialization, as ``torch.nn.init``: the same functions, arguments, defaults
and formulas.

Each function fills its ``tensor`` in place and returns it: a ``Parameter`` (its
``data`` is overwritten, the object stays the same, so optimizer state keyed by it
stays valid) or a floating-point ndarray. Random ones take ``generator``: a
``numpy.random.Generator`` or an int seed; None draws from the library generator
(``chainrule.manual_seed``; fresh OS entropy when it was never called). Values are
drawn in float64 and rounded to the tensor's dtype.

Fans (``_calculate_fan_in_and_fan_out``): a weight of shape (out, in, *kernel) has
``fan_in = in * prod(kernel)`` and ``fan_out = out * prod(kernel)``, torch's layout of
Linear (out_features, in_features) and Conv (C_out, C_in/groups, kH, kW) weights.

::

    layer = cr.Linear(256, 128)
    cr.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    cr.init.zeros_(layer.bias)
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, TypeVar

import numpy as np

from .parameter import Parameter
from .random import RandomState, generator as _generator

__all__ = ["calculate_gain", "uniform_", "normal_", "trunc_normal_", "constant_", "ones_",
           "zeros_", "eye_", "dirac_", "xavier_uniform_", "xavier_normal_",
           "kaiming_uniform_", "kaiming_normal_", "orthogonal_"]

T = TypeVar("T", Parameter, np.ndarray)

_LINEAR_FNS = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
               "conv_transpose3d")


def _array(tensor: Any, where: str) -> np.ndarray:
    """The array to fill: a Parameter's data or the ndarray itself (floating point)."""
    data = tensor.data if isinstance(tensor, Parameter) else tensor
    if not isinstance(data, np.ndarray) or not np.issubdtype(data.dtype, np.floating):
        what = (f"ndarray of dtype {data.dtype}" if isinstance(data, np.ndarray)
                else type(tensor).__name__)
        raise TypeError(f"chainrule.init.{where}: expected a Parameter or a floating-point "
                        f"ndarray, got {what}")
    return data


def _fill(tensor: T, values: np.ndarray | float, where: str) -> T:
    _array(tensor, where)[...] = values
    return tensor


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity, as ``torch.nn.init.calculate_gain``:

    ================================ ==================================
    linear, conv*, conv_transpose*   1
    sigmoid                          1
    tanh                             5/3
    relu                             sqrt(2)
    leaky_relu                       sqrt(2 / (1 + negative_slope^2))
    selu                             3/4
    ================================ ==================================

    ``param`` is leaky_relu's negative slope (default 0.01; an int or a float).
    """
    if nonlinearity in _LINEAR_FNS or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            negative_slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            negative_slope = param
        else:
            raise ValueError(f"calculate_gain: negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + negative_slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4  # found empirically by torch (pytorch/pytorch#50664)
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}; expected "
                     f"one of {', '.join(_LINEAR_FNS)}, sigmoid, tanh, relu, leaky_relu, selu")


def _calculate_fan_in_and_fan_out(tensor: Parameter | np.ndarray) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of shape (out, in, *receptive field): ``in`` and
    ``out`` times the receptive field's size. Fewer than 2 dimensions: ValueError."""
    shape = np.shape(tensor.data if isinstance(tensor, Parameter) else tensor)
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than "
                         f"2 dimensions (got shape {shape})")
    receptive_field_size = math.prod(shape[2:])
    return shape[1] * receptive_field_size, shape[0] * receptive_field_size


def _calculate_correct_fan(tensor: Parameter | np.ndarray, mode: str) -> int:
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of ['fan_in', 'fan_out']")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor: T, a: float = 0.0, b: float = 1.0, generator: RandomState = None) -> T:
    """Fill with U(a, b)."""
    data = _array(tensor, "uniform_")
    return _fill(tensor, _generator(generator).uniform(a, b, data.shape), "uniform_")


def normal_(tensor: T, mean: float = 0.0, std: float = 1.0, generator: RandomState = None) -> T:
    """Fill with N(mean, std^2)."""
    data = _array(tensor, "normal_")
    return _fill(tensor, _generator(generator).normal(mean, std, data.shape), "normal_")


def trunc_normal_(tensor: T, mean: float = 0.0, std: float = 1.0, a: float = -2.0,
                  b: float = 2.0, generator: RandomState = None) -> T:
    """Fill with N(mean, std^2) truncated to [a, b] (``a`` and ``b`` are values, not
    multiples of ``std``), by torch's rejection sampling: when the interval holds more
    than 30% of the normal's mass, normal draws outside it are redrawn; otherwise
    U(a, b) proposals are accepted with probability ``pdf(x) / pdf(mode)``. Warns, as
    torch does, when ``mean`` is more than 2 std outside [a, b]."""
    data = _array(tensor, "trunc_normal_")
    if mean < a - 2 * std or mean > b + 2 * std:
        warnings.warn("mean is more than 2 std from [a, b] in nn.init.trunc_normal_. The "
                      "distribution of values may be incorrect.", stacklevel=2)
    rng = _generator(generator)
    # Bounds rounded to the tensor's dtype, so that no value rounds out of [a, b].
    lo, hi = float(data.dtype.type(a)), float(data.dtype.type(b))

    def norm_cdf(x: float) -> float:
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    mass = norm_cdf((b - mean) / std) - norm_cdf((a - mean) / std)
    out = np.empty(data.shape)
    pending = np.ones(data.shape, dtype=bool)
    if mass > 0.3:
        while pending.any():
            draws = rng.normal(mean, std, int(pending.sum()))
            out[pending] = draws
            pending[pending] = (draws < lo) | (draws > hi)
    else:
        mode = max(a, min(mean, b))
        log_peak = -0.5 * ((mode - mean) / std) ** 2
        while pending.any():
            n = int(pending.sum())
            proposals = rng.uniform(a, b, n)
            log_pdf = -0.5 * ((proposals - mean) / std) ** 2 - log_peak
            with np.errstate(divide="ignore"):  # log(0) = -inf: accepted
                accepted = np.log(rng.random(n)) <= log_pdf
            out[pending] = proposals
            pending[pending] = ~accepted
        out = np.clip(out, lo, hi)  # a U(a, b) draw may round to b
    return _fill(tensor, out, "trunc_normal_")


def constant_(tensor: T, val: float) -> T:
    """Fill with ``val``."""
    return _fill(tensor, val, "constant_")


def ones_(tensor: T) -> T:
    """Fill with 1."""
    return _fill(tensor, 1.0, "ones_")


def zeros_(tensor: T) -> T:
    """Fill with 0."""
    return _fill(tensor, 0.0, "zeros_")


def eye_(tensor: T) -> T:
    """Fill a 2-D tensor with the identity (ones on the diagonal of a non-square one)."""
    data = _array(tensor, "eye_")
    if data.ndim != 2:
        raise ValueError(f"eye_: only tensors with 2 dimensions are supported, got shape "
                         f"{data.shape}")
    return _fill(tensor, np.eye(*data.shape), "eye_")


def dirac_(tensor: T, groups: int = 1) -> T:
    """Fill a 3-, 4- or 5-D convolution weight (C_out, C_in, *k) with the Dirac delta:
    in each of ``groups`` groups of C_out/groups output channels, channel ``d`` copies
    input channel ``d`` at the kernel's centre (``k // 2``), for ``d < min(C_out/groups,
    C_in)``; everything else is 0."""
    data = _array(tensor, "dirac_")
    if data.ndim not in (3, 4, 5):
        raise ValueError(f"dirac_: only tensors with 3, 4, or 5 dimensions are supported, "
                         f"got shape {data.shape}")
    if not isinstance(groups, numbers.Integral) or groups < 1 or data.shape[0] % groups:
        raise ValueError(f"dirac_: dim 0 must be divisible by groups, got shape {data.shape} "
                         f"and groups={groups!r}")
    per_group = data.shape[0] // groups
    d = np.arange(min(per_group, data.shape[1]))
    out = np.zeros(data.shape)
    rows = (np.arange(groups)[:, None] * per_group + d).ravel()    # (groups * min_dim,)
    centre = tuple(k // 2 for k in data.shape[2:])
    out[(rows, np.tile(d, groups)) + centre] = 1.0
    return _fill(tensor, out, "dirac_")


def xavier_uniform_(tensor: T, gain: float = 1.0, generator: RandomState = None) -> T:
    """Glorot & Bengio (2010): U(-bound, bound) with
    ``bound = gain * sqrt(6 / (fan_in + fan_out))``."""
    _array(tensor, "xavier_uniform_")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor: T, gain: float = 1.0, generator: RandomState = None) -> T:
    """Glorot & Bengio (2010): N(0, std^2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    _array(tensor, "xavier_normal_")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return normal_(tensor, 0.0, std, generator)


def _kaiming_std(tensor: Parameter | np.ndarray, a: float, mode: str, nonlinearity: str,
                 where: str) -> float | None:
    """``gain / sqrt(fan)``, or None (after torch's warning) for a zero-element tensor."""
    if 0 in np.shape(_array(tensor, where)):
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=3)
        return None
    fan = _calculate_correct_fan(tensor, mode)
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor: T, a: float = 0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", generator: RandomState = None) -> T:
    """He et al. (2015): U(-bound, bound) with ``bound = gain * sqrt(3 / fan)``, ``gain =
    calculate_gain(nonlinearity, a)`` (``a``: leaky_relu's negative slope) and ``fan``
    the weight's fan_in or fan_out (``mode``). torch's Linear and Conv layers use
    ``a=sqrt(5)``: bound ``1 / sqrt(fan_in)``."""
    std = _kaiming_std(tensor, a, mode, nonlinearity, "kaiming_uniform_")
    if std is None:
        return tensor
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor: T, a: float = 0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", generator: RandomState = None) -> T:
    """He et al. (2015): N(0, std^2) with ``std = gain / sqrt(fan)`` (see
    ``kaiming_uniform_``)."""
    std = _kaiming_std(tensor, a, mode, nonlinearity, "kaiming_normal_")
    if std is None:
        return tensor
    return normal_(tensor, 0.0, std, generator)


def orthogonal_(tensor: T, gain: float = 1.0, generator: RandomState = None) -> T:
    """Saxe et al. (2013): a (semi-)orthogonal matrix times ``gain``. The tensor is
    viewed as (rows, cols) = (shape[0], size // shape[0]); a Gaussian matrix of that
    shape (transposed when rows < cols) is QR-factorized and Q's columns are multiplied
    by the signs of R's diagonal (so Q is Haar-distributed). Then ``W @ W.T = gain^2 I``
    when rows <= cols, ``W.T @ W = gain^2 I`` when rows >= cols."""
    data = _array(tensor, "orthogonal_")
    if data.ndim < 2:
        raise ValueError(f"orthogonal_: only tensors with 2 or more dimensions are supported, "
                         f"got shape {data.shape}")
    if data.size == 0:
        return tensor
    rows = data.shape[0]
    cols = data.size // rows
    flat = _generator(generator).normal(0.0, 1.0, (rows, cols))
    if rows < cols:
        flat = flat.T                                                   # (cols, rows)
    q, r = np.linalg.qr(flat)                                           # q: (max, min)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T                                                         # (rows, cols)
    return _fill(tensor, (q * gain).reshape(data.shape), "orthogonal_")
