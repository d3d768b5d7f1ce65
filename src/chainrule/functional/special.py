"""The error function and its complement, vectorized over NumPy arrays.

NumPy has no ``erf``, and chainrule does not depend on SciPy, so GELU's exact form
needs its own. These are W. J. Cody's rational Chebyshev approximations ("Rational
Chebyshev approximations for the error function", Math. Comp. 23 (1969), 631-637;
the coefficients of his SPECFUN routine CALERF), in three pieces of ``y = |x|``:

- ``y <= 0.46875``: ``erf(x) = x * P(y^2) / Q(y^2)``;
- ``0.46875 < y <= 4``: ``erfc(y) = exp(-y^2) * P(y) / Q(y)``;
- ``y > 4``: ``erfc(y) = exp(-y^2) / y * (1/sqrt(pi) - z * P(z) / Q(z))``, ``z = 1/y^2``;

with ``erfc(-y) = 2 - erfc(y)`` and ``erf = 1 - erfc`` outside the first piece, so
that neither function loses its relative accuracy in the tails (``erfc(10)`` is
2e-45, not ``1 - 1``). ``exp(-y^2)`` is evaluated as ``exp(-r^2) * exp(-(y - r)(y + r))``
with ``r = trunc(16 y) / 16``, whose square is exact, so the rounding of ``y^2`` is
not magnified by the exponential. Relative error: below 1e-15 against ``math.erf``
and ``math.erfc`` (tests/functional/test_special.py).

Both compute in float64 and return the input's floating dtype (float32 stays
float32; integers become float64). No Python loop runs over elements: each piece is
evaluated on the elements that fall in it, selected with a boolean mask.
"""

from __future__ import annotations

import numpy as np

__all__ = ["erf", "erfc"]

_SMALL = 0.46875     # end of the first piece
_MIDDLE = 4.0        # end of the second piece
# erfc(y) underflows to 0 in float64 for y > 27.3 (26.55 with normal numbers only);
# clipping y at 28 keeps y*y finite (no overflow warning for huge or infinite inputs)
# and changes no result.
_CLIP = 28.0
_ONE_OVER_SQRT_PI = 5.6418958354775628695e-1

# erf on [0, 0.46875]: x * (A0 + A1 t + ... ) / (B0 + ... + t^4), t = x^2; stored as Cody
# orders them (the last numerator coefficient first in the Horner loop of _ratio).
_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
      3.20937758913846947e03, 1.85777706184603153e-1)
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
      2.84423683343917062e03)
# erfc * exp(y^2) on (0.46875, 4].
_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
      2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
      2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
      1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
      3.43936767414372164e03, 1.23033935480374942e03)
# erfc * y * exp(y^2) on (4, inf), in powers of z = 1 / y^2.
_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
      1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_Q = (2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1,
      6.05183413124413191e-2, 2.33520497626869185e-3)


def _ratio(t: np.ndarray, p: tuple[float, ...], q: tuple[float, ...]) -> np.ndarray:
    """P(t) / Q(t) by Horner's rule, the coefficients in Cody's order: with n = len(q),
    ``P = p[n] t^n + p[0] t^(n-1) + ... + p[n-1]`` and the monic
    ``Q = t^n + q[0] t^(n-1) + ... + q[n-1]``. Returns a new array.

    The loop works in place: each step is then one pass over memory that is already
    mapped, not a fresh temporary array."""
    n = len(q)
    num, den = p[n] * t, t.copy()
    for i in range(n - 1):
        num += p[i]
        num *= t
        den += q[i]
        den *= t
    num += p[n - 1]
    den += q[n - 1]
    num /= den
    return num


def _erf_small(x: np.ndarray) -> np.ndarray:
    """erf(x) for |x| <= 0.46875."""
    out = _ratio(x * x, _A, _B)
    out *= x
    return out


def _exp_minus_square(y: np.ndarray) -> np.ndarray:
    """exp(-y^2) without the error of rounding y^2 first (see the module docstring)."""
    r = np.trunc(y * 16.0)
    r /= 16.0
    tail = (y - r) * (y + r)
    np.negative(tail, out=tail)
    np.exp(tail, out=tail)
    r *= r
    np.negative(r, out=r)
    np.exp(r, out=r)
    r *= tail
    return r


def _erfc_middle(y: np.ndarray) -> np.ndarray:
    """erfc(y) for 0.46875 < y <= 4."""
    out = _ratio(y, _C, _D)
    out *= _exp_minus_square(y)
    return out


def _erfc_large(y: np.ndarray) -> np.ndarray:
    """erfc(y) for y > 4 (y at most _CLIP)."""
    z = 1.0 / (y * y)
    num = _ratio(z, _P, _Q)
    num *= z
    tail = (_ONE_OVER_SQRT_PI - num) / y
    tail *= _exp_minus_square(y)
    return tail


def _as_flat_float64(x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...], np.dtype]:
    """x as a 1-D float64 array (0-d inputs too: masks then always index an array),
    with the shape and floating dtype the result takes."""
    x = np.asarray(x)
    out_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
    return x.astype(np.float64, copy=False).reshape(-1), x.shape, out_dtype


def _erfc_of_abs(y: np.ndarray, middle: np.ndarray, large: np.ndarray) -> np.ndarray:
    """erfc(y) for y = |x| on the elements selected by ``middle`` and ``large``; zeros
    elsewhere."""
    out = np.zeros_like(y)
    out[middle] = _erfc_middle(y[middle])
    out[large] = _erfc_large(np.minimum(y[large], _CLIP))
    return out


def erf(x: np.ndarray) -> np.ndarray:
    """The error function ``erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt``, element-wise.

    Shape: any -> same. NaN gives NaN, +-inf gives +-1."""
    x, shape, out_dtype = _as_flat_float64(x)
    y = np.abs(x)
    small = y <= _SMALL
    middle = (y > _SMALL) & (y <= _MIDDLE)
    large = y > _MIDDLE
    out = 1.0 - _erfc_of_abs(y, middle, large)
    out[small] = _erf_small(x[small])
    np.copysign(out, x, out=out, where=~small)
    out[np.isnan(x)] = np.nan
    return out.reshape(shape).astype(out_dtype, copy=False)


def erfc(x: np.ndarray) -> np.ndarray:
    """The complementary error function ``erfc(x) = 1 - erf(x)``, element-wise, accurate
    in relative terms where it is tiny (large positive x).

    Shape: any -> same. NaN gives NaN, +inf gives 0, -inf gives 2."""
    x, shape, out_dtype = _as_flat_float64(x)
    y = np.abs(x)
    small = y <= _SMALL
    middle = (y > _SMALL) & (y <= _MIDDLE)
    large = y > _MIDDLE
    out = _erfc_of_abs(y, middle, large)
    out[small] = 1.0 - _erf_small(x[small])
    negative = (x < 0) & ~small
    out[negative] = 2.0 - out[negative]
    out[np.isnan(x)] = np.nan
    return out.reshape(shape).astype(out_dtype, copy=False)
