"""gradcheck itself: it passes correct layers, fails broken ones, and has no side effects."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr


class ForgetsBiasGrad(cr.Linear):
    """A Linear whose backward never fills the bias gradient."""

    def backward(self, grad):
        bias_grad = self.bias.grad.copy()
        dx = super().backward(grad)
        self.bias.grad[...] = bias_grad
        return dx


class DoublesInputGrad(cr.Linear):
    """A Linear whose input gradient is twice too large."""

    def backward(self, grad):
        return 2 * super().backward(grad)


class TransposedWeightGrad(cr.Linear):
    """A square Linear that writes dW.T instead of dW."""

    def backward(self, grad):
        before = self.weight.grad.copy()
        dx = super().backward(grad)
        self.weight.grad[...] = before + (self.weight.grad - before).T
        return dx


class SignFlippedTanh(cr.Tanh):
    """Tanh with the derivative's sign flipped: -(1 - y**2)."""

    def _grad(self, grad, y):
        return -super()._grad(grad, y)


def data(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("layer, shape", [
    (cr.Linear(4, 3, rng=0), (2, 4)),
    (cr.Conv2d(2, 3, 3, padding=1, rng=0), (1, 2, 4, 4)),
    (cr.Sequential(cr.Linear(3, 3, rng=0), cr.Tanh(), cr.BatchNorm1d(3)), (4, 3)),
], ids=["Linear", "Conv2d", "Sequential"])
def test_a_correct_layer_has_a_tiny_error(layer, shape):
    err = cr.gradcheck(layer, data(shape))
    assert 0 <= err < 1e-7, f"{err:.3g}"


@pytest.mark.parametrize("broken", [
    ForgetsBiasGrad(3, 3, rng=0), DoublesInputGrad(3, 3, rng=0), TransposedWeightGrad(3, 3, rng=0),
    SignFlippedTanh(), cr.Sequential(cr.Linear(3, 3, rng=1), DoublesInputGrad(3, 3, rng=2)),
], ids=["forgets_bias_grad", "doubles_dx", "transposed_dW", "sign_flipped_tanh", "nested"])
def test_a_broken_layer_has_a_large_error(broken):
    err = cr.gradcheck(broken, data((4, 3), seed=1))
    assert err > 1e-2, f"gradcheck missed a wrong backward: error {err:.3g}"


def test_max_elements_still_catches_a_broken_layer_and_passes_a_correct_one():
    x = data((5, 6), seed=2)
    assert cr.gradcheck(cr.Linear(6, 6, rng=0), x, max_elements=4) < 1e-7
    assert cr.gradcheck(DoublesInputGrad(6, 6, rng=0), x, max_elements=4) > 1e-2


def test_gradcheck_leaves_the_callers_layer_untouched():
    model = cr.Sequential(cr.Linear(4, 3, rng=0), cr.BatchNorm1d(3), cr.Dropout(0.5, rng=3))
    model.forward(data((5, 4)))
    model.backward(np.ones((5, 3), np.float32))       # grads and running stats are non-trivial
    model.eval()
    state = model.state_dict()
    grads = [p.grad.copy() for p in model.parameters()]
    data_arrays = [p.data for p in model.parameters()]
    rng_state = model[2].rng.bit_generator.state
    x = data((5, 4), seed=1)
    x_before = x.copy()

    assert cr.gradcheck(model, x) < 1e-6

    assert model.dtype == np.float32
    assert all(p.dtype == np.float32 and p.grad.dtype == np.float32 for p in model.parameters())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
        assert value.dtype == state[key].dtype, key
    for p, g, d in zip(model.parameters(), grads, data_arrays):
        np.testing.assert_array_equal(p.grad, g)
        assert p.data is d
    assert model[2].rng.bit_generator.state == rng_state
    assert not any(m.training for m in model.modules()), "mode changed"
    assert not any(m._keep_cache_in_eval for m in model.modules()), "gradients_in_eval leaked"
    assert all(m._cache is None for m in model.modules())
    np.testing.assert_array_equal(x, x_before)


def test_gradcheck_works_on_a_float32_layer_and_a_float32_input():
    # it casts a copy to float64, so the float32 rounding does not drown the check
    layer = cr.Linear(5, 4, rng=0)
    err = cr.gradcheck(layer, data((3, 5)).astype(np.float32))
    assert err < 1e-7


def test_gradcheck_is_deterministic_for_a_seed():
    # A layer whose error depends on the upstream gradient and the sampled entries (a
    # doubled input gradient gives 0.5 for every seed, so it could not tell them apart).
    layer, x = TransposedWeightGrad(3, 3, rng=0), data((2, 3))
    first = cr.gradcheck(layer, x, seed=4, max_elements=4)
    assert first == cr.gradcheck(layer, x, seed=4, max_elements=4)
    assert first != cr.gradcheck(layer, x, seed=5, max_elements=4), "the seed is not used"


def test_a_truly_zero_gradient_is_not_judged_on_rounding_noise():
    # BatchNorm cancels the conv bias: its exact gradient is 0 and the numeric one is
    # rounding noise. A correct layer must still pass.
    rng = np.random.default_rng(3)
    layer = cr.Sequential(cr.Conv2d(2, 3, 3, rng=0), cr.BatchNorm2d(3))
    assert cr.gradcheck(layer, rng.standard_normal((3, 2, 5, 5))) < 1e-6


@pytest.mark.parametrize("layout", ["channel-major", "transposed", "strided"])
def test_a_non_contiguous_input_or_parameter_is_nudged_in_place(layout):
    # A convolution's output is channel-major; checking the next layer on it once
    # nudged a copy (reshape(-1) of a non-contiguous array) and reported an error of 1.0.
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 2, 5, 5))
    x = {"channel-major": base.transpose(1, 0, 2, 3).copy().transpose(1, 0, 2, 3),
         "transposed": base.T.copy().T,
         "strided": rng.normal(size=(4, 2, 10, 5))[:, :, ::2]}[layout]
    assert not x.flags["C_CONTIGUOUS"]
    assert cr.gradcheck(cr.Tanh(), x) < 1e-7
    linear = cr.Linear(5, 3, dtype=np.float64)
    linear.weight.data = np.asfortranarray(linear.weight.data)
    assert not linear.weight.data.flags["C_CONTIGUOUS"]
    assert cr.gradcheck(linear, x) < 1e-7
