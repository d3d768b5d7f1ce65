"""erf and erfc (W. J. Cody's rational approximations) against the C library's, through
Python's math module, on a dense grid with the tails and the piece boundaries, and
against torch."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from chainrule.functional.special import erf, erfc

# Relative error allowed against math.erf/erfc (glibc's, correctly rounded to within
# about an ulp): a few float64 ulps (2.2e-16 each).
RELATIVE = 1e-15
# Below the smallest normal number a relative error means nothing (subnormals carry
# fewer digits); there both must agree to within a few subnormal steps.
TINY = np.finfo(np.float64).tiny


def _grid() -> np.ndarray:
    boundaries = np.array([0.46875, 4.0, 26.55, 27.3, 28.0])
    near = np.concatenate([np.nextafter(boundaries, -np.inf), boundaries,
                           np.nextafter(boundaries, np.inf)])
    positive = np.concatenate([np.linspace(0.0, 30.0, 60_001), np.geomspace(1e-310, 1e-2, 2_000),
                               near])
    return np.concatenate([positive, -positive])


def _reference(fn, x: np.ndarray) -> np.ndarray:
    return np.array([fn(float(v)) for v in x])


def _check_relative(ours: np.ndarray, reference: np.ndarray, x: np.ndarray, name: str) -> None:
    normal = np.abs(reference) >= TINY
    rel = np.abs(ours[normal] - reference[normal]) / np.abs(reference[normal])
    worst = int(np.argmax(rel))
    assert rel[worst] <= RELATIVE, (
        f"{name}: relative error {rel[worst]:.3g} at x = {x[normal][worst]!r}")
    # Subnormal results: agree to within a few of the smallest steps (5e-324 each).
    assert np.all(np.abs(ours[~normal] - reference[~normal]) <= 1e-320), name


def test_erf_matches_math_erf_on_a_dense_grid():
    x = _grid()
    _check_relative(erf(x), _reference(math.erf, x), x, "erf")


def test_erfc_matches_math_erfc_including_the_tails():
    x = _grid()
    _check_relative(erfc(x), _reference(math.erfc, x), x, "erfc")


def test_erfc_keeps_its_relative_accuracy_where_one_minus_erf_cannot():
    # erfc(10) = 2.088e-45: 1 - erf(10) is exactly 0 in float64.
    x = np.array([5.0, 10.0, 20.0, 26.0])
    _check_relative(erfc(x), _reference(math.erfc, x), x, "erfc tail")
    assert np.all(erfc(x) > 0)


def test_special_values_and_no_floating_point_warnings():
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e308, -1e308, 5e-324])
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        e, c = erf(x), erfc(x)
    np.testing.assert_array_equal(e[[0, 1, 3, 5, 6]], [1.0, -1.0, 0.0, 1.0, -1.0])
    np.testing.assert_array_equal(c[[0, 1, 3, 5, 6]], [0.0, 2.0, 1.0, 0.0, 2.0])
    assert np.isnan(e[2]) and np.isnan(c[2])
    assert math.copysign(1.0, e[4]) == -1.0          # erf is odd: erf(-0) = -0
    assert e[7] > 0                                  # erf(x) ~ 2x/sqrt(pi) for tiny x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_and_shape_are_kept(dtype):
    x = np.linspace(-5, 5, 24, dtype=dtype).reshape(2, 3, 4)[:, ::2]  # not contiguous
    for fn, ref in ((erf, math.erf), (erfc, math.erfc)):
        out = fn(x)
        assert out.dtype == dtype and out.shape == x.shape
        # float32: computed in float64 and rounded once.
        expected = _reference(ref, x.ravel()).astype(dtype).reshape(x.shape)
        rtol = RELATIVE if dtype == np.float64 else np.finfo(dtype).eps
        np.testing.assert_allclose(out, expected, rtol=rtol, atol=0)
    for scalar in (np.array(0.3), 0.3, 2):
        assert np.ndim(erf(scalar)) == 0
        assert erf(scalar) == pytest.approx(math.erf(float(scalar)), rel=RELATIVE)
    assert erf(np.array([1, 2])).dtype == np.float64


def test_erf_and_erfc_match_torch():
    torch = pytest.importorskip("torch")
    x = np.linspace(-12.0, 12.0, 24_001)
    t = torch.from_numpy(x)
    np.testing.assert_allclose(erf(x), torch.erf(t).numpy(), rtol=RELATIVE, atol=2.3e-16)
    _check_relative(erfc(x), torch.erfc(t).numpy(), x, "erfc vs torch")
