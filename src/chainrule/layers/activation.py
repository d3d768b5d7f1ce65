"""Activations. Each backward multiplies the upstream gradient by the activation's
local derivative, written next to its forward (Softmax and LogSoftmax, which mix the
elements along one axis, apply their Jacobian along it)."""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np

from .. import functional as F
from ..functional.special import erfc
from ..parameter import Parameter
from ._args import finite_real, positive_int
from ._movement import MovementLayer
from .base import DEFAULT_DTYPE, Layer, as_float_dtype


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
    """``y = max(x, 0)``, element by element.

    The output keeps the input's memory layout (a channel-major batch stays
    channel-major), and large arrays are cut into pieces that the worker threads share.

    Shape:
        Any -> the same shape.

    Backward:
        ``dL/dx = dL/dy * (x > 0)``: the gradient passes where the input was positive and
        is 0 elsewhere (0 at exactly ``x = 0``, as in PyTorch). Keeps a boolean mask.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        y = F.empty_with_layout(x)
        keep = self.keeps_cache
        positive = F.empty_with_layout(x, dtype=np.bool_) if keep else None

        def piece(ix):
            flat = F.compiled.memory_flat(x[ix], y[ix], *((positive[ix],) if keep else ()))
            if F.compiled.ENABLED and flat is not None:     # one pass instead of two
                if keep:
                    F.compiled.relu_forward(*flat)
                else:
                    F.compiled.relu_forward_eval(*flat)
                return
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

        zero = dx.dtype.type(0)

        def piece(ix):
            flat = F.compiled.memory_flat(grad[ix], positive[ix], dx[ix])
            if F.compiled.ENABLED and flat is not None:
                F.compiled.relu_backward(*flat, zero)
                return
            np.multiply(grad[ix], positive[ix], out=dx[ix])

        F.parallel_slices(piece, shape, F.outer_axis(dx))
        return dx


class LeakyReLU(_Elementwise):
    """``y = x if x > 0 else negative_slope * x``.

    Args:
        negative_slope: the slope for ``x <= 0``.

    Shape:
        Any -> the same shape.

    Backward:
        ``dL/dx = dL/dy * (1 if x > 0 else negative_slope)`` (``negative_slope`` at exactly
        0). Keeps a boolean mask.
    """

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


def _stable_sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` as ``exp(min(x,0)) / (1 + exp(-|x|))``: no positive
    exponent, so no overflow for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1, e) / (1 + e)


class Sigmoid(_Elementwise):
    """``y = 1 / (1 + exp(-x))``.

    Computed as ``exp(min(x,0)) / (1 + exp(-|x|))`` so that no exponent is positive: no
    overflow for large |x|.

    Shape:
        Any -> the same shape.

    Backward:
        ``dL/dx = dL/dy * y * (1 - y)``, from the output ``y`` kept by forward.
    """

    def _f(self, x):
        return _stable_sigmoid(x)

    def _keep(self, x, y):
        return y

    def _grad(self, grad, y):
        return grad * y * (1 - y)


class Tanh(_Elementwise):
    """``y = tanh(x)``.

    Shape:
        Any -> the same shape.

    Backward:
        ``dL/dx = dL/dy * (1 - y**2)``, from the output ``y`` kept by forward.
    """

    def _f(self, x):
        return np.tanh(x)

    def _keep(self, x, y):
        return y

    def _grad(self, grad, y):
        return grad * (1 - y * y)


# ------------------------------------------------------------------ the torch.nn catalog
# The classes below are twins of torch.nn's, with torch's arguments and defaults. Where a
# torch class takes ``inplace``, ours accepts it and ignores it: chainrule never writes
# into its input, and the outputs are the same either way.
#
# Constants enter each formula as the input's dtype (``t(alpha)``), as torch converts its
# scalars to the tensor's type, so that float32 results round as torch's do and the
# derivatives at the kinks agree bit for bit.

# C's <math.h> constants, which torch's kernels use.
_SQRT2 = 1.41421356237309504880           # M_SQRT2
_SQRT1_2 = 0.70710678118654752440         # M_SQRT1_2
_2_SQRTPI = 1.12837916709551257390        # M_2_SQRTPI
# Past these |x| the sigmoid(2u) of GELU's tanh form is exactly 0 or 1 and the Gaussian
# of its exact form exactly 0, in float64 (and float32); clipping there keeps x**3 and
# x**2 finite for any input.
_GELU_TANH_CLIP = 30.0
_GELU_PDF_CLIP = 40.0
# exp(40) > 2**53: z / (z + 1) is exactly 1 there in float32 and float64, as it is for
# any larger z, so capping the exponent changes no result and avoids overflow.
_SOFTPLUS_EXP_CAP = 40.0


def _stable_softplus(x: np.ndarray) -> np.ndarray:
    """``log(1 + exp(x))`` as ``max(x, 0) + log1p(exp(-|x|))``: no overflow for large x."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


class Hardtanh(_Elementwise):
    """``y = clip(x, min_val, max_val)``.

    Args:
        min_val: the lower bound.
        max_val: the upper bound; must be greater than ``min_val``.
        inplace: accepted for torch compatibility and ignored (chainrule never writes into
            its input).

    Shape:
        Any -> the same shape.

    Backward:
        ``dL/dx = dL/dy * (min_val < x < max_val)``: 0 outside the bounds and at exactly
        ``min_val`` or ``max_val``, as in PyTorch. Keeps a boolean mask.
    """

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        name = type(self).__name__
        self.min_val = finite_real(min_val, "min_val", name)
        self.max_val = finite_real(max_val, "max_val", name)
        if not self.max_val > self.min_val:
            raise ValueError(f"{name}: max_val must be greater than min_val, got "
                             f"min_val={min_val!r}, max_val={max_val!r}")

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}"

    def _f(self, x):
        t = x.dtype.type
        return np.clip(x, t(self.min_val), t(self.max_val))

    def _keep(self, x, y):
        t = x.dtype.type
        return (x > t(self.min_val)) & (x < t(self.max_val))

    def _grad(self, grad, inside):
        # grad * mask into an array of the mask's memory layout (that of x: channel-major
        # after a convolution), as ReLU does: np.where would allocate in C order and walk
        # the channel-major operands against the grain (4x slower in MobileNet's blocks).
        return np.multiply(grad, inside, out=F.empty_with_layout(inside, dtype=grad.dtype))


class ReLU6(Hardtanh):
    """``y = min(max(x, 0), 6)``, which is ``Hardtanh(0, 6)`` (as in torch, a subclass).

    Args:
        inplace: accepted for torch compatibility and ignored (chainrule never writes into
            its input).

    Shape:
        Any -> the same shape.

    Backward:
        ``dL/dx = dL/dy * (0 < x < 6)``: 0 at exactly 0 and at exactly 6, as in PyTorch.
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__(0.0, 6.0)

    def extra_repr(self) -> str:
        return ""


class Hardsigmoid(_Elementwise):
    """``y = min(max(x + 3, 0), 6) / 6``.

    Args:
        inplace: accepted for torch compatibility and ignored (chainrule never writes into
            its input).

    Shape:
        Any -> the same shape.

    Backward:
        ``dL/dx = dL/dy / 6`` where ``-3 < x < 3``, 0 elsewhere (0 at exactly +-3, as in
        PyTorch). The factor 1/6 is torch's CPU constant, the float32 number
        ``0.1666666716...``, in float64 too (5e-9, or 3e-8 relative, above 1/6): chainrule
        uses it so both agree bit for bit. Keeps a boolean mask.
    """

    _ONE_SIXTH = float(np.float32(1.0) / np.float32(6.0))

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def _f(self, x):
        t = x.dtype.type
        return np.minimum(np.maximum(x + t(3), t(0)), t(6)) / t(6)

    def _keep(self, x, y):
        return (x > -3) & (x < 3)

    def _grad(self, grad, inside):
        return np.where(inside, grad * grad.dtype.type(self._ONE_SIXTH), 0)


class Hardswish(_Elementwise):
    """``y = x * min(max(x + 3, 0), 6) / 6``.

    Args:
        inplace: accepted for torch compatibility and ignored (chainrule never writes into
            its input).

    Shape:
        Any -> the same shape.

    Backward:
        ``dL/dx = dL/dy * (0 if x <= -3 else x/3 + 1/2 if x < 3 else 1)``. At the kinks,
        as in PyTorch (2.x): the derivative at exactly -3 is 0 and at exactly 3 is 1 (the
        outer branches include the ends; PyTorch 1.x used the middle line there).
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def _f(self, x):
        t = x.dtype.type
        return x * np.minimum(np.maximum(x + t(3), t(0)), t(6)) / t(6)

    def _keep(self, x, y):
        return x

    def _grad(self, grad, x):
        t = x.dtype.type
        middle = grad * (x / t(3) + t(0.5))
        return np.where(x <= -3, t(0), np.where(x < 3, middle, grad))


class _ExponentialLinear(_Elementwise):
    """The ELU family, torch's ``elu(x, alpha, scale, input_scale)``:
    ``y = scale * x`` for ``x > 0``, ``alpha * scale * (exp(input_scale * x) - 1)`` for
    ``x <= 0``; ``dL/dx = dL/dy * scale`` for ``x > 0``, else
    ``dL/dy * input_scale * alpha * scale * exp(input_scale * x)``.

    The derivative at exactly 0 takes the ``x <= 0`` branch, as in PyTorch. The
    exponentials only ever see ``min(x, 0)``: no overflow for large positive x.
    Subclasses give ``(alpha, scale)`` and, where not 1, the input scales of forward
    and backward.
    """

    _input_scale = 1.0
    _backward_input_scale = 1.0

    @property
    def _alpha_scale(self) -> tuple[float, float]:
        raise NotImplementedError

    def _coefficients(self, dtype: np.dtype):
        """(alpha * scale, scale) in ``dtype``: torch converts alpha and scale to the
        tensor's type before it multiplies them."""
        t = dtype.type
        alpha, scale = self._alpha_scale
        return t(alpha) * t(scale), t(scale)

    def _f(self, x):
        t = x.dtype.type
        negcoef, poscoef = self._coefficients(x.dtype)
        negative = np.expm1(np.minimum(x, 0) * t(self._input_scale)) * negcoef
        return np.where(x <= 0, negative, x * poscoef)

    def _keep(self, x, y):
        return x

    def _grad(self, grad, x):
        t = x.dtype.type
        negcoef, poscoef = self._coefficients(x.dtype)
        scale = t(self._backward_input_scale)
        negative = grad * scale * negcoef * np.exp(np.minimum(x, 0) * scale)
        return np.where(x <= 0, negative, grad * poscoef)


class _AlphaExponentialLinear(_ExponentialLinear):
    """ELU and CELU: the user's ``alpha`` (a finite number), ``scale = 1``."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha = finite_real(alpha, "alpha", type(self).__name__)

    @property
    def _alpha_scale(self) -> tuple[float, float]:
        return self.alpha, 1.0

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class ELU(_AlphaExponentialLinear):
    """``y = x if x > 0 else alpha * (exp(x) - 1)``.

    No overflow for large |x|: the exponential only sees ``min(x, 0)``.

    Args:
        alpha: the scale of the negative branch (a finite number).
        inplace: accepted for torch compatibility and ignored (chainrule never writes into
            its input).

    Shape:
        Any -> the same shape.

    Backward:
        ``dL/dx = dL/dy * (1 if x > 0 else alpha * exp(x))``; the derivative at exactly 0
        is ``alpha``, as in PyTorch.
    """


class SELU(_ExponentialLinear):
    """``y = scale * (x if x > 0 else alpha * (exp(x) - 1))`` with torch's constants.

    ``alpha = 1.6732632423543772848...`` and ``scale = 1.0507009873554804934...``
    (``SELU.ALPHA``, ``SELU.SCALE``). No overflow for large |x|.

    Args:
        inplace: accepted for torch compatibility and ignored (chainrule never writes into
            its input).

    Shape:
        Any -> the same shape.

    Backward:
        ``dL/dx = dL/dy * scale * (1 if x > 0 else alpha * exp(x))``; the derivative at
        exactly 0 is ``alpha * scale``, as in PyTorch.
    """

    ALPHA = 1.6732632423543772848170429916717
    SCALE = 1.0507009873554804934193349852946

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    @property
    def _alpha_scale(self) -> tuple[float, float]:
        return self.ALPHA, self.SCALE


class CELU(_AlphaExponentialLinear):
    """``y = x if x > 0 else alpha * (exp(x / alpha) - 1)``.

    No overflow for large |x| (with alpha > 0).

    Args:
        alpha: the scale of the negative branch; must not be 0.
        inplace: accepted for torch compatibility and ignored (chainrule never writes into
            its input).

    Shape:
        Any -> the same shape.

    Backward:
        ``dL/dx = dL/dy * (1 if x > 0 else exp(x / alpha))``; at exactly 0 the ``exp``
        branch is taken, as in PyTorch. Like torch's autograd formula, the backward divides
        by alpha *rounded to float32* (``1 / float32(alpha)``; the forward divides by alpha
        itself): for an alpha that float32 cannot hold (0.1), that is what torch computes,
        and chainrule agrees with it.
    """

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__(alpha)
        if self.alpha == 0:
            raise ValueError("CELU: alpha must not be 0 (the input is divided by it), got "
                             f"{alpha!r}")
        self._input_scale = 1.0 / self.alpha
        self._backward_input_scale = 1.0 / float(np.float32(self.alpha))


class GELU(_Elementwise):
    """The Gaussian error linear unit ``y = x * Phi(x)``, Phi the standard normal CDF.

    ``approximate="none"`` (exact): ``y = x/2 * (1 + erf(x / sqrt(2)))``, computed as
    ``x/2 * erfc(-x / sqrt(2))``. erf and erfc are ``chainrule.functional.special``'s
    (W. J. Cody's approximations).

    ``approximate="tanh"``: ``y = x/2 * (1 + tanh(u))``,
    ``u = sqrt(2/pi) * (x + 0.044715 x^3)``.

    Both forms are free of the cancellation in ``1 + erf`` and ``1 + tanh`` for x << 0
    that costs torch's GELU its relative accuracy there (3e-4 in float32 at x = -4, every
    digit in float64 from x = -8.5 on). No overflow for large |x|.

    Args:
        approximate: ``"none"`` (the exact form) or ``"tanh"``.

    Shape:
        Any -> the same shape.

    Backward:
        Exact form: ``dL/dx = dL/dy * (Phi(x) + x * phi(x))`` with
        ``Phi(x) = erfc(-x / sqrt(2)) / 2`` and ``phi(x) = exp(-x^2/2) / sqrt(2 pi)``.
        Tanh form: ``dL/dx = dL/dy * (1/2 (1 + tanh(u)) + x/2 (1 - tanh(u)^2) * du/dx)``,
        ``du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)``, computed with
        ``s = 1/2 (1 + tanh(u)) = sigmoid(2u)`` and ``1 - tanh(u)^2 = 4 s (1 - s)``.
    """

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"

    def _f(self, x):
        t = x.dtype.type
        if self.approximate == "tanh":
            return x * self._tanh_parts(x)[0]
        return x * t(0.5) * self._twice_cdf(x)

    @staticmethod
    def _twice_cdf(x):
        """``2 Phi(x) = erfc(-x / sqrt(2))`` in x's dtype. The argument is scaled in
        float64 (erfc computes in float64 anyway): erfc magnifies its argument's relative
        rounding error by about x^2, which float32 would make visible."""
        return erfc(x.astype(np.float64) * -_SQRT1_2).astype(x.dtype, copy=False)

    @staticmethod
    def _tanh_parts(x):
        """(s, du/dx): s = (1 + tanh(u)) / 2 = sigmoid(2u), on x clipped where s is
        already exactly 0 or 1, so that x**3 stays finite."""
        t = x.dtype.type
        clipped = np.clip(x, t(-_GELU_TANH_CLIP), t(_GELU_TANH_CLIP))
        beta, kappa = t(_SQRT2 * _2_SQRTPI * 0.5), t(0.044715)
        square = clipped * clipped
        u = beta * (clipped + kappa * (square * clipped))
        return _stable_sigmoid(t(2) * u), beta * (t(1) + t(3) * kappa * square)

    def _keep(self, x, y):
        return x

    def _grad(self, grad, x):
        t = x.dtype.type
        if self.approximate == "tanh":
            s, du = self._tanh_parts(x)
            # 1/2 x (1 - tanh(u)^2) du/dx = 2 x s (1 - s) du/dx
            return grad * (s + t(2) * x * s * (t(1) - s) * du)
        cdf = t(0.5) * self._twice_cdf(x)
        clipped = np.clip(x, t(-_GELU_PDF_CLIP), t(_GELU_PDF_CLIP))
        pdf = t(_2_SQRTPI * _SQRT1_2 * 0.5) * np.exp(clipped * clipped * t(-0.5))
        return grad * (cdf + x * pdf)


class SiLU(_Elementwise):
    """The sigmoid linear unit (swish) ``y = x * sigmoid(x)``.

    The sigmoid is ``Sigmoid``'s overflow-free form.

    Args:
        inplace: accepted for torch compatibility and ignored (chainrule never writes into
            its input).

    Shape:
        Any -> the same shape.

    Backward:
        ``dL/dx = dL/dy * s * (1 + x * (1 - s))`` with ``s = sigmoid(x)``.
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def _f(self, x):
        return x * _stable_sigmoid(x)

    def _keep(self, x, y):
        return x

    def _grad(self, grad, x):
        s = _stable_sigmoid(x)
        return grad * s * (1 + x * (1 - s))


class Mish(_Elementwise):
    """``y = x * tanh(softplus(x))``, ``softplus(x) = log(1 + exp(x))``.

    softplus is computed as ``max(x, 0) + log1p(exp(-|x|))`` and the sigmoid in its
    overflow-free form: no overflow for large |x|.

    Args:
        inplace: accepted for torch compatibility and ignored (chainrule never writes into
            its input).

    Shape:
        Any -> the same shape.

    Backward:
        ``dL/dx = dL/dy * (T + x * sigmoid(x) * (1 - T^2))`` with ``T = tanh(softplus(x))``.
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def _f(self, x):
        return x * np.tanh(_stable_softplus(x))

    def _keep(self, x, y):
        return x

    def _grad(self, grad, x):
        tanh_softplus = np.tanh(_stable_softplus(x))
        return grad * (tanh_softplus + x * _stable_sigmoid(x) * (1 - tanh_softplus * tanh_softplus))


class Softplus(_Elementwise):
    """``y = log(1 + exp(beta * x)) / beta``, and ``y = x`` where ``beta * x > threshold``.

    The linear regime above ``threshold`` is PyTorch's. ``log(1 + exp(z))`` is computed as
    ``max(z, 0) + log1p(exp(-|z|))``: no overflow for large |x| or a large threshold.

    Args:
        beta: the sharpness; must not be 0.
        threshold: where ``beta * x > threshold`` the output is ``x`` itself.

    Shape:
        Any -> the same shape.

    Backward:
        ``dL/dx = dL/dy * sigmoid(beta * x)``, and ``dL/dy`` itself where
        ``beta * x > threshold``. At exactly ``beta * x == threshold`` the smooth branch is
        taken, as in PyTorch; the sigmoid is computed as ``z / (z + 1)``,
        ``z = exp(beta * x)``, as torch does.
    """

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = finite_real(beta, "beta", "Softplus")
        self.threshold = finite_real(threshold, "threshold", "Softplus")
        if self.beta == 0:
            raise ValueError("Softplus: beta must not be 0 (the output is divided by it), got "
                             f"{beta!r}")

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"

    def _f(self, x):
        t = x.dtype.type
        scaled = x * t(self.beta)
        return np.where(scaled > t(self.threshold), x, _stable_softplus(scaled) / t(self.beta))

    def _keep(self, x, y):
        return x

    def _grad(self, grad, x):
        t = x.dtype.type
        scaled = x * t(self.beta)
        z = np.exp(np.minimum(scaled, t(_SOFTPLUS_EXP_CAP)))
        return np.where(scaled > t(self.threshold), grad, grad * z / (z + t(1)))


class PReLU(Layer):
    """``y = x if x > 0 else a * x`` with a learned slope ``a``.

    Args:
        num_parameters: 1 (one slope shared by every element) or the number of channels
            C (one slope per channel, on axis 1, torch's rule).
        init: the initial value of every slope (``reset_parameters`` fills it again).
        dtype: float32 (default) or float64.

    Shape:
        Any -> same with ``num_parameters=1``; (N, C, *) -> same with
        ``num_parameters=C`` (an input with fewer than 2 axes has no channel axis and is
        refused then, as torch does). ``weight``: (num_parameters,).

    Backward:
        ``dL/dx = dL/dy * (1 if x > 0 else a)``; ``dL/da = sum(dL/dy * x)`` over the
        elements with ``x <= 0`` (of a's channel). At exactly 0 the ``a`` branch is taken,
        as in PyTorch. ``needs_input_grad=False`` skips dL/dx and returns None.
    """

    can_skip_input_grad = True

    def __init__(self, num_parameters: int = 1, init: float = 0.25, dtype: Any = DEFAULT_DTYPE) -> None:
        super().__init__()
        name = f"PReLU(num_parameters={num_parameters!r})"
        self.num_parameters = positive_int(num_parameters, "num_parameters", name)
        self.init = finite_real(init, "init", name)
        self.weight = Parameter(np.full(self.num_parameters, self.init, as_float_dtype(dtype, name)))

    def _reset_own_parameters(self, rng: np.random.Generator) -> None:
        self.weight.data.fill(self.init)     # a constant: the generator is not drawn from

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"

    def _slope(self, x: np.ndarray) -> np.ndarray:
        """The weight shaped to broadcast against ``x``: () or (C, 1, ..., 1)."""
        c = self.num_parameters
        if c == 1:
            return self.weight.data.reshape(())
        if x.ndim < 2 or x.shape[1] != c:
            raise ValueError(f"{self!r}: expected input of shape (N, {c}, *) (one slope per "
                             f"channel, channels on axis 1), got shape {x.shape}")
        return self.weight.data.reshape((c,) + (1,) * (x.ndim - 2))

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        slope = self._slope(x)
        y = np.where(x > 0, x, slope * x)
        if self.keeps_cache:
            self._cache = (x, y.shape, y.dtype)
        return y

    def backward(self, grad: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        x, shape, dtype = self._take_cache()
        grad = self._check_grad(grad, shape, dtype)
        positive = x > 0
        # Sum over every axis but the channel axis (every axis for one shared slope).
        axes = tuple(a for a in range(x.ndim) if self.num_parameters == 1 or a != 1)
        self.weight.grad += np.sum(np.where(positive, 0, x * grad), axis=axes).reshape(-1)
        if not needs_input_grad:
            return None
        return np.where(positive, grad, self._slope(x) * grad)


class _SoftmaxBase(Layer):
    """Shared by Softmax and LogSoftmax: the ``dim`` argument and its resolution."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, numbers.Integral)):
            raise TypeError(f"{type(self).__name__}: dim must be an int or None, got {dim!r}")
        self.dim = None if dim is None else int(dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def _axis(self, x: np.ndarray) -> int:
        """The axis to normalize over; ``dim=None`` chooses it as torch does, with
        torch's deprecation warning."""
        dim = self.dim
        if dim is None:
            dim = 0 if x.ndim in (0, 1, 3) else 1
            warnings.warn(f"{self!r}: implicit dimension choice for {type(self).__name__.lower()} "
                          f"has been deprecated (as in torch): dim={dim} was chosen for a "
                          f"{x.ndim}-D input; pass dim explicitly", UserWarning, stacklevel=3)
        rank = max(x.ndim, 1)           # a 0-d input normalizes as one element, as in torch
        if not -rank <= dim < rank:
            raise ValueError(f"{self!r}: dim {dim} is out of range for input of shape "
                             f"{x.shape}; expected an input with at least "
                             f"{dim + 1 if dim >= 0 else -dim} axes")
        return dim % rank

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        axis = self._axis(x)
        flat = x.reshape(1) if x.ndim == 0 else x
        y = self._normalize(flat, axis).reshape(x.shape)
        if self.keeps_cache:
            self._cache = (y, axis)
        return y

    def backward(self, grad: np.ndarray) -> np.ndarray:
        y, axis = self._take_cache()
        grad = self._check_grad(grad, y.shape, y.dtype)
        if y.ndim == 0:
            return self._input_grad(grad.reshape(1), y.reshape(1), axis).reshape(())
        return self._input_grad(grad, y, axis)

    def _normalize(self, x: np.ndarray, axis: int) -> np.ndarray:
        raise NotImplementedError

    def _input_grad(self, grad: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
        raise NotImplementedError


class Softmax(_SoftmaxBase):
    """``y = exp(x) / sum(exp(x), dim)`` along one axis.

    Computed as ``exp(x - max) / sum(exp(x - max))`` (the max over ``dim`` subtracted
    first: no overflow for large x).

    Args:
        dim: the axis normalized over (negative counts from the end). ``None`` is torch's
            deprecated implicit choice, kept for compatibility: axis 0 for 0-, 1- and 3-D
            inputs, axis 1 otherwise, with a warning on each call.

    Shape:
        Any -> the same shape.

    Backward:
        The Jacobian-vector product along ``dim``:
        ``dL/dx = y * (dL/dy - sum(dL/dy * y, dim))``, from the output ``y``.
    """

    def _normalize(self, x, axis):
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        return e / np.sum(e, axis=axis, keepdims=True)

    def _input_grad(self, grad, y, axis):
        return y * (grad - np.sum(grad * y, axis=axis, keepdims=True))


class LogSoftmax(_SoftmaxBase):
    """``y = x - log(sum(exp(x), dim))`` along one axis.

    Computed as ``s - log(sum(exp(s)))`` with ``s = x - max(x, dim)``: no overflow for
    large x.

    Args:
        dim: as for ``Softmax`` (``None``: torch's deprecated implicit choice, axis 0 for
            0-, 1- and 3-D inputs, axis 1 otherwise, with a warning).

    Shape:
        Any -> the same shape.

    Backward:
        ``dL/dx = dL/dy - exp(y) * sum(dL/dy, dim)`` (``exp(y)`` is the softmax).
    """

    def _normalize(self, x, axis):
        shifted = x - np.max(x, axis=axis, keepdims=True)
        return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))

    def _input_grad(self, grad, y, axis):
        return grad - np.exp(y) * np.sum(grad, axis=axis, keepdims=True)


class Identity(MovementLayer):
    """``y = x``. Like torch's, it accepts any arguments and ignores them.

    Shape:
        Any -> the same shape.

    Backward:
        ``dL/dx = dL/dy``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def _move(self, x: np.ndarray) -> np.ndarray:
        return x

    def _move_back(self, grad: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        return grad
