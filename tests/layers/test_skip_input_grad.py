"""backward(grad, needs_input_grad=False): parameter gradients without dLoss/dx.

A training step never uses the gradient of the data; the layers that can skip it
(Conv2d, Linear, Sequential) must give exactly the parameter gradients of the full
backward pass and return None."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule.inspect import _hooks
from chainrule.layers.base import backward_parameters_only
from chainrule.train import train_step


def _grads(model):
    return {name: p.grad.copy() for name, p in model.named_parameters()}


def _run(model, x, upstream, skip):
    model.zero_grad()
    model.forward(x)
    if skip:
        assert model.backward(upstream, needs_input_grad=False) is None
    else:
        model.backward(upstream)
    return _grads(model)


CASES = {
    "conv": (lambda: cr.Conv2d(3, 4, 3, padding=1, dtype=np.float64, rng=0), (2, 3, 6, 6)),
    "conv-strided-groups": (lambda: cr.Conv2d(4, 6, 3, stride=2, groups=2, dtype=np.float64,
                                              rng=0), (3, 4, 7, 7)),
    # >= 16 input channels, stride 1: the full backward takes the flipped-kernel path
    "conv-wide": (lambda: cr.Conv2d(16, 8, 3, padding=1, dtype=np.float64, rng=0), (2, 16, 5, 5)),
    "linear": (lambda: cr.Linear(5, 3, dtype=np.float64, rng=0), (4, 5)),
    "sequential": (lambda: cr.Sequential(cr.Conv2d(1, 2, 3, dtype=np.float64, rng=0), cr.ReLU(),
                                         cr.Flatten(), cr.Linear(18, 3, dtype=np.float64, rng=1)),
                   (2, 1, 5, 5)),
    "nested": (lambda: cr.Sequential(cr.Sequential(cr.Linear(4, 4, dtype=np.float64, rng=0),
                                                   cr.Tanh()),
                                     cr.Linear(4, 2, dtype=np.float64, rng=1)), (3, 4)),
}


@pytest.mark.parametrize("case", CASES)
def test_skipping_the_input_gradient_keeps_every_parameter_gradient(case):
    make, shape = CASES[case]
    model = make()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    upstream = rng.standard_normal(model.forward(x).shape)
    full = _run(model, x, upstream, skip=False)
    skipped = _run(model, x, upstream, skip=True)
    assert full.keys() == skipped.keys()
    for name in full:
        np.testing.assert_allclose(skipped[name], full[name], rtol=1e-12, atol=1e-14,
                                   err_msg=name)
        assert np.any(full[name] != 0), name


def test_the_skip_releases_every_cache():
    model = CASES["sequential"][0]()
    x = np.ones((2, 1, 5, 5))
    model.forward(x)
    model.backward(np.ones((2, 3)), needs_input_grad=False)
    with pytest.raises(RuntimeError, match="without a cached forward pass"):
        model.backward(np.ones((2, 3)))


def test_a_watched_first_layer_still_computes_its_input_gradient():
    """An inspect hook reads dx: the first layer then runs its full backward."""
    model = CASES["sequential"][0]()
    seen = []
    hook = _hooks.install(model[0], "backward", lambda layer, g, dx: seen.append(dx))
    try:
        x = np.ones((2, 1, 5, 5))
        model.forward(x)
        assert model.backward(np.ones((2, 3)), needs_input_grad=False) is None
    finally:
        _hooks.remove(hook)
    assert len(seen) == 1 and seen[0].shape == x.shape


class Doubler(cr.Layer):
    """A user's layer that knows nothing of needs_input_grad."""

    def forward(self, x):
        return 2 * x

    def backward(self, grad):
        return 2 * grad


def test_layers_without_the_option_get_the_plain_call():
    model = cr.Sequential(Doubler(), cr.Linear(3, 2, dtype=np.float64, rng=0))
    model.forward(np.ones((4, 3)))
    assert model.backward(np.ones((4, 2)), needs_input_grad=False) is None
    layer = Doubler()
    layer.forward(np.ones(3))
    backward_parameters_only(layer, np.ones(3))          # no TypeError


def test_train_step_gives_the_same_update_as_a_full_backward():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 8)

    def model():
        return cr.Sequential(cr.Conv2d(1, 4, 3, rng=0), cr.ReLU(), cr.Flatten(),
                             cr.Linear(64, 3, rng=1))

    a, b = model(), model()
    loss = cr.CrossEntropyLoss()
    opt_a = cr.optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    train_step(a, loss, opt_a, x, y)
    opt_b = cr.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    opt_b.zero_grad()
    loss(b.forward(x), y)
    b.backward(loss.backward())
    opt_b.step()
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa.data, pb.data, err_msg=name)


class LoggedSequential(cr.Sequential):
    """A user's subclass that overrides backward without the option."""

    def backward(self, grad):
        self.calls = getattr(self, "calls", 0) + 1
        return super().backward(grad)


def test_a_subclass_overriding_backward_without_the_option_gets_the_plain_call():
    model = LoggedSequential(cr.Linear(3, 2, dtype=np.float64, rng=0))
    optimizer = cr.optim.SGD(model.parameters(), lr=0.1)
    train_step(model, cr.CrossEntropyLoss(), optimizer, np.ones((4, 3)), np.array([0, 1, 0, 1]))
    assert model.calls == 1


def test_an_empty_sequential_returns_none_when_no_input_gradient_is_asked_for():
    empty = cr.Sequential()
    empty.forward(np.ones(3))
    assert empty.backward(np.ones(3), needs_input_grad=False) is None
    np.testing.assert_array_equal(empty.backward(np.ones(3)), np.ones(3))
