"""Saliency against central finite differences in float64, the model left as it was, and
max-pool routing against the plain-loop reference."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule.inspect import maxpool_routing, saliency, saliency_map
from tests import reference as ref
from tests.helpers import rel_error
from tests.inspect.conftest import batch, small_convnet


def tiny_model() -> cr.Sequential:
    """float64, with BatchNorm (eval mode must use its running statistics) and max pooling."""
    model = cr.Sequential(cr.Conv2d(2, 3, 3, padding=1), cr.BatchNorm2d(3), cr.ReLU(),
                          cr.MaxPool2d(2), cr.Flatten(), cr.Linear(3 * 3 * 3, 4))
    model.reset_parameters(0).double()
    model.forward(np.random.default_rng(5).standard_normal((8, 2, 6, 6)) * 2 + 1)  # BN stats
    return model


def test_saliency_equals_finite_differences():
    model = tiny_model()
    x = np.random.default_rng(0).standard_normal((2, 6, 6))
    grad = saliency(model, x, target_class=2)
    model.eval()

    def score(image: np.ndarray) -> float:
        return float(model.forward(image[None])[0, 2])
    numeric = np.zeros_like(x)
    h = 1e-6
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += h
        minus[index] -= h
        numeric[index] = (score(plus) - score(minus)) / (2 * h)
    error = rel_error(grad, numeric)
    assert error < 1e-7, f"relative error {error:.2e}"
    assert np.count_nonzero(grad) > 0


def test_saliency_restores_the_model():
    model = tiny_model().train()
    for p in model.parameters():
        p.grad[...] = 0.5  # a gradient accumulated by training so far
    x, _ = batch(n=4, shape=(2, 6, 6), classes=4, dtype=np.float64)
    out = model.forward(x)  # a training forward whose backward is still to come
    bn = model[1]
    running = (bn.running_mean.copy(), bn.running_var.copy())
    upstream = np.random.default_rng(1).standard_normal(out.shape)

    saliency(model, x[0])

    assert all(m.training and not m._keep_cache_in_eval for m in model.modules())
    assert all(np.all(p.grad == 0.5) for p in model.parameters())
    assert np.array_equal(bn.running_mean, running[0]) and np.array_equal(bn.running_var, running[1])
    dx = model.backward(upstream)  # the training forward's cache survived
    twin = tiny_model().train()
    twin.load_state_dict(model.state_dict())
    twin.forward(x)
    assert np.array_equal(dx, twin.backward(upstream))


def test_batch_saliency_matches_single_images_and_predicted_class():
    model = small_convnet(dtype=np.float64)
    x, _ = batch(n=3, dtype=np.float64)
    targets = np.array([0, 2, 1])
    grads = saliency(model, x, targets)
    for i in range(3):
        assert np.allclose(grads[i], saliency(model, x[i], int(targets[i])), rtol=1e-12)
    predicted = cr.predict(model, x).argmax(axis=1)
    assert np.allclose(saliency(model, x), saliency(model, x, predicted), rtol=1e-12)
    assert saliency_map(grads).shape == (3, 8, 8)
    with pytest.raises(ValueError, match="target_class"):
        saliency(model, x[0], 3)


def expected_counts(pool_input: np.ndarray, pool: cr.MaxPool2d) -> np.ndarray:
    _, argmax = ref.max_pool2d(pool_input[None].astype(np.float64), pool.kernel_size,
                               pool.stride, pool.padding)
    counts = np.zeros(pool_input.shape, dtype=np.int64)
    for c, oy, ox in np.ndindex(argmax.shape[1:4]):
        y, x = argmax[0, c, oy, ox]
        counts[c, y, x] += 1
    return counts


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 2)], ids=["k2", "k3-s2-overlapping"])
def test_maxpool_routing_matches_the_reference(kernel, stride):
    model = cr.Sequential(cr.Conv2d(1, 3, 3, padding=1), cr.ReLU(),
                          cr.MaxPool2d(kernel, stride), cr.Flatten())
    model.reset_parameters(0).double()
    n_features = int(np.prod(model.forward(np.zeros((1, 1, 9, 9))).shape[1:]))
    model.append(cr.Linear(n_features, 4, rng=1).double())
    x = np.random.default_rng(2).standard_normal((1, 9, 9))

    (route,) = maxpool_routing(model, x)

    pool = model[2]
    expected_input = model[1].forward(model[0].forward(x[None]))[0]
    assert route.name == "2"
    assert np.array_equal(route.input, expected_input)
    assert np.array_equal(route.count, expected_counts(route.input, pool))
    windows = (route.count.shape[1] - kernel) // stride + 1
    assert np.all(route.count.sum(axis=(1, 2)) == windows ** 2)  # one winner per window
    assert np.all(route.grad[route.count == 0] == 0)  # no route, no gradient
    assert np.count_nonzero(route.grad) > 0
    if kernel > stride:
        assert route.count.max() >= 2  # overlapping windows can share their winner


def test_maxpool_routing_covers_every_pool_in_forward_order():
    model = cr.Sequential(cr.Conv2d(1, 2, 3, padding=1), cr.ReLU(), cr.MaxPool2d(2),
                          cr.Conv2d(2, 2, 3, padding=1), cr.ReLU(), cr.MaxPool2d(2),
                          cr.Flatten(), cr.Linear(8, 3)).reset_parameters(0)
    routes = maxpool_routing(model, batch(n=1)[0][0])
    assert [r.name for r in routes] == ["2", "5"]
    assert [r.count.shape for r in routes] == [(2, 8, 8), (2, 4, 4)]
    with pytest.raises(ValueError, match="one image"):
        maxpool_routing(model, batch(n=2)[0])
